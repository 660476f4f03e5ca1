"""The one check every value written into a generated configuration file passes through.

Sonae writes other programs' configuration: Mosquitto password and ACL files, EMQX REST bodies,
Compose/Kubernetes secrets. Those formats are line-based (Mosquitto reads an ACL line by line; a
newline inside a note becomes a ``topic readwrite #`` line of its own), so a value that can carry a
line break or another control character is an injection. :func:`config_value` refuses them all:
C0/C1 controls (``\\n``, ``\\r``, NUL, DEL, ``\\x85``…), Unicode line and paragraph separators
(U+2028/U+2029, which :meth:`str.splitlines` also splits on when a file is read back) and format
characters such as bidirectional overrides (which hide what a line really says from whoever reviews
the file).
"""

from __future__ import annotations

import re
import unicodedata

#: Unicode categories refused anywhere: controls, line/paragraph separators, format characters
_REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp", "Cf", "Cs"})


class ConfigValueError(ValueError):
    """A value that may not be written into a configuration file; the message says why."""


def config_value(what: str, value: str, *, pattern: re.Pattern[str] | None = None, max_length: int = 512,
                 allow_empty: bool = False) -> str:
    """Return ``value`` unchanged when it is safe to write into a line-based configuration file.

    Parameters
    ----------
    what
        The value's name for the error message (``"note"``, ``"username"``…).
    value
        The text to check; never echoed back when it holds a refused character.
    pattern
        A regular expression the whole value must match (e.g. a username's alphabet).
    max_length
        Longest value accepted, in characters.
    allow_empty
        Accept ``""``.

    Raises
    ------
    ConfigValueError
        For a non-string, an empty or too long value, a refused character or a pattern mismatch.
    """
    if not isinstance(value, str):
        raise ConfigValueError(f"{what}: expected text, got {type(value).__name__}")
    if not value and not allow_empty:
        raise ConfigValueError(f"{what}: must not be empty")
    if len(value) > max_length:
        raise ConfigValueError(f"{what}: longer than {max_length} characters")
    for i, ch in enumerate(value):
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise ConfigValueError(f"{what}: character {i + 1} is a control character, line break or invisible "
                                   f"format character (U+{ord(ch):04X}); remove it")
    if pattern is not None and not pattern.fullmatch(value):
        raise ConfigValueError(f"{what} {value!r}: expected {pattern.pattern}")
    return value
