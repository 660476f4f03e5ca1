"""Names that are shown to people: the characters a name may not hold, one rule for every entry.

A station's name (and its English name, reading and river) is put into alert headlines: CAP, the Atom
feed, Web Push, webhooks and the pages. Characters that show nothing or change how text around them is
shown would reach every one of them: controls (Unicode category Cc: NUL, tab, line breaks, escape…),
format characters (Cf: zero-width space/joiner U+200B–U+200D, byte-order mark U+FEFF, soft hyphen U+00AD,
and the bidirectional controls U+202A–U+202E and U+2066–U+2069, with which "ABC\\u202eDEF" shows as "ABCFED"
and a headline can be made to read as another place), line and paragraph separators (Zl, Zp), and
private-use or unassigned code points (Co, Cn), which show as boxes or nothing, and the letters and marks
that Unicode lists as default-ignorable or that show as a blank (the Hangul fillers U+115F, U+1160, U+3164,
U+FFA0, the combining grapheme joiner U+034F, the Khmer inherent vowels U+17B4–U+17B5, the Mongolian
variation selectors U+180B–U+180D and U+180F, the blank braille pattern U+2800; Unicode's
DerivedCoreProperties.txt, Default_Ignorable_Code_Point). A name must also show something: one made only of
spaces and combining marks (a variation selector alone, U+FE0F) is refused; variation selectors after a
character they modify (ideographic variation sequences of place-name kanji) are kept. A name holding one is
refused where it enters (the registry's load rules, :meth:`ingest.registry.Station.validate`, which the
staff edit applies too), naming the character, so that it is corrected at its source rather than shown.

Names stored before the rule (or written by SQL) may still hold them; where names are put into what people
read, :func:`shown_text` gives what such a name shows (``alerting.store``, for every alert output).

The same rule holds for every text staff write that the public or other staff read (found: an order's
``area_desc`` "abc\\u202edef" reached the CAP ``<headline>`` and ``<areaDesc>`` reversed; a display name "Bob\\n"
and a hazard area label with U+202E were accepted): an order's area description and notes, an account's display
name, a hazard area's label, a webhook's description — through :func:`refused_text`, which the API
(:func:`api.bodies.shown_field`, a 400 naming the field and the character) and the command line
(``app.cli``) both call. A text that is multi-line by design (``line_breaks=True``: an area description, a
staff note) may keep line feeds (U+000A) and nothing else of the kind: no carriage return, tab, U+2028/U+2029.
"""

from __future__ import annotations

import unicodedata

__all__ = ["HIDDEN_BMP_CLASS", "hidden_character", "refused_text", "shown_text"]

_BLANK_LETTERS = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0")

_HIDDEN_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible formatting character",
                      "Zl": "a line separator", "Zp": "a paragraph separator", "Co": "a private-use character",
                      "Cn": "an unassigned code point", "Cs": "a lone surrogate"}


def hidden_character(text: str, *, line_breaks: bool = False) -> str | None:
    """The first character of ``text`` a shown name may not hold, described (``"U+202E RIGHT-TO-LEFT
    OVERRIDE (an invisible formatting character) at position 3"``), or None. ``line_breaks``: a multi-line
    text, whose line feeds (U+000A, and only those) are kept."""
    shows = False
    for i, ch in enumerate(text):
        if line_breaks and ch == "\n":
            continue
        category = unicodedata.category(ch)
        kind = "a character that shows as a blank" if ch in _BLANK_LETTERS else _HIDDEN_CATEGORIES.get(category)
        if kind is not None:
            name = unicodedata.name(ch, "")
            return f"U+{ord(ch):04X}{' ' + name if name else ''} ({kind}) at position {i + 1}"
        shows = shows or category[0] not in "ZM"
    if text and not shows:
        return "no character that shows (only spaces and combining marks)"
    return None


def _hidden_bmp_class() -> str:
    ranges: list[list[int]] = []
    for cp in range(0x10000):
        ch = chr(cp)
        if (ch in _BLANK_LETTERS or unicodedata.category(ch) in _HIDDEN_CATEGORIES) and unicodedata.category(ch) not in {"Cn", "Cs"}:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
    return "".join(f"\\u{a:04x}" + (f"-\\u{b:04x}" if b > a else "") for a, b in ranges)


#: the characters of the rule (:func:`hidden_character`) up to U+FFFF, as the body of a regular-expression character
#: class (``"[^" + HIDDEN_BMP_CLASS + "]"``) that ECMA-262 (an OpenAPI ``pattern``) and Python's ``re`` read alike:
#: controls, format characters (bidirectional U+202A-U+202E, U+2066-U+2069, zero-width U+200B-U+200F…), line and
#: paragraph separators, private use, the letters that show as a blank. Unassigned code points (which differ between
#: Unicode versions), lone surrogates (no UTF-8 text holds one; a range of them is a pattern test generators cannot
#: use) and the characters above U+FFFF (``\\u{…}`` is ECMA-262's only, ``\\U…`` Python's
#: only) are left to :func:`refused_text`, which whoever stores the text applies.
HIDDEN_BMP_CLASS = _hidden_bmp_class()


#: categories whose characters break a line or the text (replaced by a space by :func:`shown_text`)
_SPACED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})


def refused_text(what: str, text: str, *, line_breaks: bool = False) -> str | None:
    """Why ``text``, the value of ``what`` (a field or option name), may not be shown, in one sentence naming
    the character (``"area_desc holds U+202E RIGHT-TO-LEFT OVERRIDE (an invisible formatting character) at
    position 4: remove it"``), or None when it may. ``""`` is accepted (a field left empty)."""
    hidden = hidden_character(text, line_breaks=line_breaks)
    if hidden is None:
        return None
    if hidden.startswith("U+"):
        allowed = " (line breaks are kept)" if line_breaks else ""
        return f"{what} holds {hidden}: remove it{allowed}"
    return f"{what} has {hidden}"


def shown_text(text: str, *, line_breaks: bool = False) -> str:
    """``text`` as it shows: every character :func:`hidden_character` refuses dropped (controls, line and
    paragraph separators, each run of them with the spaces around it made one space; invisible formatting
    characters such as bidirectional overrides and zero-width spaces, private-use and unassigned code points,
    letters that show as a blank, removed), variation selectors after a character kept; ``""`` when nothing
    that shows is left. For names stored before the rule; a name that passes the rule is returned unchanged
    (``shown_text(t) == t`` whenever ``hidden_character(t)`` is None).

    Examples: ``"持世\u202e寺\u200b"`` → ``"持世寺"``; ``"a\tb"`` → ``"a b"``; ``"\u3164\ufe0f"`` → ``""``.
    ``line_breaks``: a multi-line text, each of its lines made to show so, its line feeds kept (empty lines
    too), ``"a\u202e\nb"`` → ``"a\nb"``."""
    if hidden_character(text, line_breaks=line_breaks) is None:
        return text
    if line_breaks:
        lines = [shown_text(line) for line in text.split("\n")]
        shown = "\n".join(lines).strip("\n")
        return shown if hidden_character(shown, line_breaks=True) is None else ""
    out: list[str] = []
    for ch in text:
        category = unicodedata.category(ch)
        if category in _SPACED_CATEGORIES:
            out.append(" ")
        elif ch not in _BLANK_LETTERS and category not in _HIDDEN_CATEGORIES:
            out.append(ch)
    shown = " ".join(part for part in "".join(out).split(" ") if part)  # runs of spaces one, none at the ends
    return shown if hidden_character(shown) is None else ""
