"""The municipality code: the 6-digit 全国地方公共団体コード (JIS X 0402 + check digit), one form everywhere.

Sonae stores and compares every municipality by its 6-digit code, e.g. ``072036`` for 郡山市. Many
sources give the 5-digit JIS X 0402 code without the check digit (MLIT's ``town_code``, N03's
``N03_007``: ``07203``); :func:`normalise` accepts both and returns the 6-digit form, and refuses a
6-digit code whose check digit is wrong, naming the code it should have been.

The check digit (総務省「全国地方公共団体コード」仕様): weights 6, 5, 4, 3, 2 on the five digits,
``r`` = the weighted sum mod 11, check digit = ``(11 - r) mod 10`` (so r = 0 gives 1 and r = 1 gives 0).
Verified on all 1,916 codes of the 総務省 list and the J-LIS list (``shared/data/municipalities``).
"""

from __future__ import annotations

__all__ = ["DRILL_TOWN_CENTER", "DRILL_TOWN_CODE", "DRILL_TOWN_NAMES", "DRILL_TOWN_RULE", "MunicipalityCodeError",
           "check_digit", "drill_town_refusal", "is_valid", "not_a_municipality", "normalise", "normalise_municipality",
           "normalise_optional"]

_WEIGHTS = (6, 5, 4, 3, 2)

#: The drill town's 団体コード (``evac.drilltown``, where the choice of 079995 is explained): a code no real
#: municipality has, so no list of municipalities names it.
DRILL_TOWN_CODE = "079995"
#: Where the drill town lies, (lat, lon) in degrees (WGS 84): the centre of the town ``evac.drilltown.generate``
#: writes by default, inside real 郡山市 by the Abukuma; its river runs west to east through this point (about
#: 1.1 km either side), so a gauge placed on this latitude within ±0.012° of longitude stands on the river.
DRILL_TOWN_CENTER = (37.40, 140.36)
#: What residents read where the drill town's name is due, in each language of Sonae's texts
#: (``alerting.texts.LANGUAGES``), and its reading (``name_kana`` of the municipalities table): never
#: the bare code (found on the resident page, in /api/v1/level and in alert texts of ``run --simulate``).
DRILL_TOWN_NAMES = {"ja-JP": "訓練町", "en-US": "Kunren Town (drill)", "ja-JP-x-easy": "くんれんまち（くんれんの まち）",
                    "kana": "くんれんまち"}
#: What the drill town is for, told where a real thing names it (:func:`drill_town_refusal`).
#: (in English, as every API error detail is: the town by its English name)
DRILL_TOWN_RULE = (f"municipality {DRILL_TOWN_CODE!r} is the drill town, {DRILL_TOWN_NAMES['en-US']}: a fictional "
                   "town for exercises only: nothing real is in it; mark an order, hazard area or station \"exercise\": true, and a "
                   "webhook or push subscription naming it \"drills\": true")


def drill_town_refusal(code: str | None, *, exercise: bool, staff: bool = False) -> str | None:
    """:data:`DRILL_TOWN_RULE` when ``code`` (6-digit) is the drill town's and the entry naming it is not for it,
    else None. The one place of the rule; ``ingest.municipalities.uncovered`` (every entry's coverage check)
    and ``alerting.store.issue_order`` (an order issued by any caller) both ask here.

    ``exercise``: the entry is for exercises (an exercise order, hazard area or station; a webhook or push
    subscription taking drills). ``staff``: the entry names the people who run them (an account, a roster
    entry): the drill town's staff are real people, and their accounts and roster may name it. Anything
    else naming it (a real order, area or station; a webhook or push area without drills) is refused.
    """
    if code == DRILL_TOWN_CODE and not (exercise or staff):
        return DRILL_TOWN_RULE
    return None


class MunicipalityCodeError(ValueError):
    """A value that is not a municipality code; the message says what to send instead."""


def check_digit(code5: str) -> str:
    """The JIS X 0402 check digit of a 5-digit code, as one character.

    Raises
    ------
    MunicipalityCodeError
        When ``code5`` is not exactly five ASCII digits.
    """
    if not (len(code5) == 5 and code5.isascii() and code5.isdigit()):
        raise MunicipalityCodeError(f"{code5[:20]!r} is not a 5-digit municipality code")
    remainder = sum(int(d) * w for d, w in zip(code5, _WEIGHTS, strict=True)) % 11
    return str((11 - remainder) % 10)


def normalise(value: str) -> str:
    """The 6-digit 団体コード for a 5-digit code or a 6-digit one, taken exactly as written.

    ``normalise("07203") == normalise("072036") == "072036"``. Surrounding blanks, line breaks or other
    control characters are refused, not trimmed (found: ``?municipality=07203%0A`` was taken as 07203): a
    file format whose cells may carry blanks (the municipality list's CSV) trims them itself.

    Raises
    ------
    MunicipalityCodeError
        When ``value`` is not 5 or 6 ASCII digits, or is 6 digits with a wrong check digit (the message
        names the code with the right check digit).
    """
    code = value
    if not isinstance(code, str) or not (code.isascii() and code.isdigit() and len(code) in (5, 6)):
        shown = repr(code[:20]) if isinstance(code, str) else type(code).__name__
        raise MunicipalityCodeError(
            f"{shown} is not a municipality code (団体コード): give the 5-digit JIS X 0402 code "
            "(e.g. 07203) or the 6-digit code with its check digit (e.g. 072036), digits only, "
            "without spaces or line breaks")
    expected = code[:5] + check_digit(code[:5])
    if len(code) == 6 and code != expected:
        raise MunicipalityCodeError(
            f"municipality code {code!r} has a wrong check digit: the JIS X 0402 check digit of "
            f"{code[:5]} is {expected[5]}, so the code is {expected!r}")
    return expected


def normalise_optional(value: str | None) -> str | None:
    """:func:`normalise` for an optional code: ``None`` and the empty string stay ``None`` (a code of
    blanks or line breaks is refused, as :func:`normalise` refuses them around a code)."""
    if value is None or value == "":
        return None
    return normalise(value)


def is_valid(value: str) -> bool:
    """True when ``value`` is a 6-digit code with the right check digit (already normal)."""
    try:
        return normalise(value) == value
    except MunicipalityCodeError:
        return False


def not_a_municipality(code: str) -> str | None:
    """Why a normal 6-digit code (:func:`normalise`'s) names no municipality (市区町村), or None.

    The first two digits are the prefecture (01 北海道 … 47 沖縄県); a prefecture's own code has ``000`` in
    digits 3-5 (``070009`` is 福島県). Both pass the check digit, and neither is a municipality: whether a
    code is one of a real municipality is the municipality list's (``ingest.municipalities``) to say.
    """
    if not 1 <= int(code[:2]) <= 47:
        return (f"{code!r} is not a municipality code: its first two digits, {code[:2]}, are no prefecture "
                "(01 北海道 to 47 沖縄県)")
    if code[2:5] == "000":
        return f"{code!r} is the code of a prefecture (都道府県), not of a municipality (市区町村)"
    return None


def normalise_municipality(value: str) -> str:
    """:func:`normalise`, refusing a code that names no municipality (:func:`not_a_municipality`).

    For a code that is to name a 市区町村 (an order's, an area's, an account's, a filter's): ``000001``
    and a prefecture's own code (``070009``) pass the check digit but name none.

    Raises
    ------
    MunicipalityCodeError
        As :func:`normalise`, and when the code is no municipality's (the message says why).
    """
    code = normalise(value)
    problem = not_a_municipality(code)
    if problem is not None:
        raise MunicipalityCodeError(problem)
    return code
