"""The language of an answer or a page, chosen one way for every endpoint and page.

``lang`` (``ja``, ``en``, ``ja-easy``) when the request gives it, else the ``Accept-Language`` header read
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

from api.params import choice, one
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
    """The request's language (one of ``evac.guidance.LANGS``): ``lang`` when given (a 400 problem when it
    is not one of them), else :func:`negotiate` of its ``Accept-Language`` (which the answer then varies by:
    :func:`api.vary.vary`)."""
    if one(request, "lang") is not None:
        return choice(request, "lang", LANGS, DEFAULT)
    vary(request, "Accept-Language")  # the header chose the answer: caches must key on it (RFC 9110 §12.5.5)
    return negotiate(request.headers.get("Accept-Language"))


def language_tag(request: web.Request) -> str:
    """The request's language as the BCP 47 tag Sonae's texts carry (``ja-JP``, ``en-US``, ``ja-JP-x-easy``)."""
    return BCP47[language(request)]
