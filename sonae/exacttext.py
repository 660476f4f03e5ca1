"""Values from the public are taken exactly as sent, or refused: nothing around them is trimmed.

Found: parsers that ``strip()`` what a request, a command line or the environment sends took
``?municipality=07203%0A``, ``from=2026-12-02%0A``, ``bbox=…%0A``, ``type=WaterObserved%0A`` or
``SONAE_API_PORT=$'2\\n'`` as if clean. A value is what it is; a blank, line break or other control character
around it makes it another text, refused with a rule that says so (:data:`EXACT_RULE`). Only a file format that
defines surrounding blanks as insignificant (the cells of a CSV municipality list) trims them, in its reader.
"""

from __future__ import annotations

import unicodedata

#: the rule a refusal states
EXACT_RULE = "taken exactly as sent: no spaces, line breaks, tabs or other control characters before or after it"

#: categories that are never the first or last character of a value: controls, format characters, separators
_LOOSE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs"})


def _loose(char: str) -> bool:
    return char.isspace() or unicodedata.category(char) in _LOOSE_CATEGORIES


def loose_end(text: str) -> str | None:
    """What lies at an end of ``text`` that cannot be part of a value (``"U+000A at its end"``), or None.

    A space, a line break (``\\n``, ``\\r``, NEL U+0085, U+2028, U+2029), a tab, ``\\v``, ``\\f``, any other
    control (Cc) or format (Cf) character, or another separator (Zs) at either end.
    """
    if text and _loose(text[0]):
        return f"U+{ord(text[0]):04X} at its start"
    if text and _loose(text[-1]):
        return f"U+{ord(text[-1]):04X} at its end"
    return None
