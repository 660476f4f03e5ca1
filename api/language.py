"""The language of an answer or a page, chosen one way for every endpoint and page.

``lang`` when the request gives it (``ja``, ``en``, ``ja-easy``, or any tag the lookup below reads as one of
them: ``ja-JP-x-easy``, ``EN``; the same rule for a body's ``lang``, :func:`tag_of`), else the ``Accept-Language`` header read
by RFC 4647 §3.4 *lookup* with RFC 9110 §12.5.4 weights, else Japanese:

* the header's ranges are taken in descending ``q`` (ties keep the header's order); a range with
  ``q=0`` is "not acceptable" and skipped, as is a range or weight that is not well formed; parameters
  other than ``q`` (``en;level=1``) are ignored, the range read;
* each range is looked up by truncating it from the end (``ja-JP-x-easy`` → ``ja-JP-x`` → ``ja-JP``
  → ``ja``; a single-letter subtag left at the end goes with the subtag before it) until it names a
  language Sonae writes (:data:`TAGS`, compared without regard to case); ``*`` names the default;
* やさしい日本語 has no registered subtag: it is named by the private-use subtags ``x-easy`` (the tag
  Sonae's own texts carry, ``ja-JP-x-easy``) or ``x-yasashii``, after ``ja`` and an optional script
  (``Jpan``, ``Hrkt``, ``Hira``) and region (``JP``), or by the older ``ja-easy``.

The header is the client's: any text is read without an exception (at most :data:`MAX_RANGES` ranges; empty
list elements, RFC 9110 §5.6.1, are not counted).
"""

from __future__ import annotations

import re

from aiohttp import web

from api.params import bad, one
from api.problems import Problem
from api.vary import vary
from evac.guidance import LANGS

#: the language when nothing else is asked for
DEFAULT = "ja"
#: Sonae's language codes → the BCP 47 tags its texts carry (alerting.texts.LANGUAGES)
BCP47 = {"ja": "ja-JP", "en": "en-US", "ja-easy": "ja-JP-x-easy"}
#: at most this many ranges of a header are read (a longer list is cut there, not refused; empty elements
#: are not ranges)
MAX_RANGES = 32


def _tags() -> dict[str, str]:
    tags = {"ja": "ja", "en": "en", "ja-easy": "ja-easy"}
    for script in ("", "-jpan", "-hrkt", "-hira"):
        for region in ("", "-jp"):
            for private in ("easy", "yasashii"):
                tags[f"ja{script}{region}-x-{private}"] = "ja-easy"
    return tags


#: language tags (lower case) → the language Sonae writes for them (one of ``evac.guidance.LANGS``)
TAGS: dict[str, str] = _tags()
assert set(TAGS.values()) == set(LANGS)

#: a basic language range (RFC 4647 §2.1), with optional whitespace
_RANGE = re.compile(r"[ \t]*(\*|[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*)[ \t]*")
#: a parameter after it: its name, and the rest; the weight ``q=`` qvalue (RFC 9110 §12.4.2)
_PARAMETER = re.compile(r"[ \t]*([^=; \t]*)(.*)", re.S)
_WEIGHT = re.compile(r"=(0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)[ \t]*")


def _weighed(part: str) -> tuple[str, float] | None:
    """One element of the header: its range and weight, or None when the range or its weight is not well
    formed. Parameters other than ``q`` (``en;level=1``) are not part of a language range's grammar; a
    robust reader ignores them and reads the range (found: ``en;level=1`` was dropped as malformed)."""
    language_range, *parameters = part.split(";")
    m = _RANGE.fullmatch(language_range)
    if m is None:
        return None
    q = None
    for parameter in parameters:
        name, rest = _PARAMETER.fullmatch(parameter).groups()  # type: ignore[union-attr]  # (matches any text)
        if name.lower() != "q" or q is not None:
            continue  # another parameter, or a second weight: ignored
        weight = _WEIGHT.fullmatch(rest)
        if weight is None:
            return None  # a weight that is not one: the range is skipped, as before
        q = float(weight[1])
    return m[1], 1.0 if q is None else q


def lookup(language_range: str) -> str | None:
    """The language Sonae writes for one basic language range (RFC 4647 §3.4 lookup), or None.

    ``*`` gives :data:`DEFAULT`.
    """
    if language_range == "*":
        return DEFAULT
    subtags = language_range.lower().split("-")
    while subtags:
        found = TAGS.get("-".join(subtags))
        if found is not None:
            return found
        subtags.pop()
        if subtags and len(subtags[-1]) == 1:
            subtags.pop()
    return None


#: a language named as a value (a body's or a parameter's ``lang``): one language tag (RFC 5646's well-formed
#: subtags, any case), no weight, no ``*``
_TAG = re.compile(r"[A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*")
#: the tags :func:`language_of` reads as a language Sonae writes, exactly: lookup truncates every well-formed
#: tag down to its primary subtag, so those whose primary subtag is ``ja`` or ``en`` (any case), and no other
#: (the OpenAPI document's pattern, api.openapi, so its check and the handlers' agree; tested against each other)
TAG_PATTERN = r"^(?:[Jj][Aa]|[Ee][Nn])(?:-[A-Za-z0-9]{1,8})*$"
#: what such a value may be, in words (problems and the OpenAPI document's description)
ACCEPTED = ("a language tag Sonae writes, in any case: ja-JP, en-US or ja-JP-x-easy (also ja, en, ja-easy, "
            "ja-x-easy, ja-x-yasashii, or a longer tag of one of them such as en-GB)")


def language_of(value: str) -> str | None:
    """The language Sonae writes for a language tag given as a value (one of ``evac.guidance.LANGS``), by the
    rule of ``Accept-Language`` (:func:`lookup`: ``ja-JP-x-easy``, ``JA-x-Easy``, ``ja-easy`` → ``ja-easy``;
    ``EN``, ``en-GB`` → ``en``), or None when it is not one tag (:data:`TAG_PATTERN`) or names no language
    Sonae writes (``fr``)."""
    if len(value) > 64 or not _TAG.fullmatch(value):
        return None
    return lookup(value)


def tag_of(value: str, *, field: str = "lang") -> str:
    """The BCP 47 tag Sonae's texts carry (``ja-JP``, ``en-US``, ``ja-JP-x-easy``: what is stored) for the
    value of a body's ``field``.

    Raises
    ------
    api.problems.Problem
        400, naming the accepted values (:data:`ACCEPTED`), when :func:`language_of` finds none.
    """
    found = language_of(value)
    if found is None:
        raise Problem(400, "Bad Request", f"{field} must be {ACCEPTED}", field=field)
    return BCP47[found]


def query_language(request: web.Request) -> str | None:
    """The request's ``lang`` parameter as one of ``evac.guidance.LANGS`` (:func:`language_of`), None when
    absent; a 400 problem naming the accepted values when it names none."""
    raw = one(request, "lang")
    if raw is None:
        return None
    found = language_of(raw)
    if found is None:
        raise bad("lang", f"parameter 'lang' must be {ACCEPTED}")
    return found


def negotiate(header: str | None) -> str:
    """The language for an ``Accept-Language`` header (any text, or None): one of ``evac.guidance.LANGS``.

    Ranges in descending weight, each by :func:`lookup`; the first that names a language wins, else
    :data:`DEFAULT`. Never raises.
    """
    ranked: list[tuple[float, int, str]] = []
    # empty list elements are ignored, not counted (RFC 9110 §5.6.1: found, ",,,…,en" gave ja)
    parts = [part for part in (header or "").split(",") if part.strip(" \t")]
    for i, part in enumerate(parts[:MAX_RANGES]):
        weighed = _weighed(part)
        if weighed is None:
            continue
        language_range, q = weighed
        if q > 0:
            ranked.append((-q, i, language_range))
    for _, _, language_range in sorted(ranked):
        found = lookup(language_range)
        if found is not None:
            return found
    return DEFAULT


def language(request: web.Request) -> str:
    """The request's language (one of ``evac.guidance.LANGS``): ``lang`` when given (:func:`query_language`,
    the spellings ``Accept-Language`` takes; a 400 problem when it names none of them), else :func:`negotiate` of its ``Accept-Language`` (which the answer then varies by:
    :func:`api.vary.vary`)."""
    asked = query_language(request)
    if asked is not None:
        return asked
    vary(request, "Accept-Language")  # the header chose the answer: caches must key on it (RFC 9110 §12.5.5)
    return negotiate(request.headers.get("Accept-Language"))


def language_tag(request: web.Request) -> str:
    """The request's language as the BCP 47 tag Sonae's texts carry (``ja-JP``, ``en-US``, ``ja-JP-x-easy``)."""
    return BCP47[language(request)]
