"""Text that XML 1.0 can carry: the one sanitiser every XML writer of Sonae uses.

XML 1.0 (§2.2, production ``Char``) allows only tab, line feed, carriage return, U+0020–U+D7FF,
U+E000–U+FFFD and U+10000–U+10FFFF. Anything else in an element's text or an attribute — a C0
control such as U+000B (Excel's line break inside a cell), U+FFFE/U+FFFF, or a lone surrogate left by
a ``\\ud800`` JSON escape — makes the whole document unparseable ("PCDATA invalid Char value 11"), so
one bad order note would break every alert in the Atom feed.

Why at output, not only at input: names and notes reach XML from many entries (staff forms, order
notes, shelter/station/municipality imports from CSV or GeoJSON, hazard labels), and rows stored before
a check existed stay stored. So every writer passes its text through :func:`xml_text` (or a whole
tree through :func:`sanitize_tree` / :func:`to_xml_bytes`) instead of each entry point guessing. Input
still refuses NUL (``api.bodies``); other characters are accepted, because refusing an evacuation
order over a pasted control character would do more harm than showing a replacement character.

What is replaced: vertical tab and form feed become a line feed (they separate lines where they come
from); every other character XML cannot carry becomes U+FFFD (the Unicode replacement character), so a
reader sees that something was there instead of words silently running together.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

#: characters XML 1.0 cannot carry (complement of the ``Char`` production), including lone surrogates
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LINE_BREAKS = {"\v": "\n", "\f": "\n"}
REPLACEMENT = "\ufffd"


def _replace(match: re.Match[str]) -> str:
    return _LINE_BREAKS.get(match.group(), REPLACEMENT)


def xml_text(value: str) -> str:
    """``value`` with every character XML 1.0 cannot carry replaced (see the module docstring).

    Returns the same object when nothing needs replacing (the common case costs one regex search).
    """
    if _NOT_XML.search(value) is None:
        return value
    return _NOT_XML.sub(_replace, value)


def is_xml_text(value: str) -> bool:
    """True when ``value`` can be written into XML 1.0 as it is."""
    return _NOT_XML.search(value) is None


def sanitize_tree(root: ET.Element) -> ET.Element:
    """Pass the text, tail and attribute values of every element of ``root`` through :func:`xml_text`
    (in place); returns ``root``."""
    for el in root.iter():
        if el.text:
            el.text = xml_text(el.text)
        if el.tail:
            el.tail = xml_text(el.tail)
        for key, value in el.attrib.items():
            el.attrib[key] = xml_text(value)
    return root


def to_xml_bytes(root: ET.Element, *, default_namespace: str | None = None) -> bytes:
    """Serialise ``root`` as a UTF-8 document with an XML declaration, after :func:`sanitize_tree`."""
    return ET.tostring(sanitize_tree(root), encoding="utf-8", xml_declaration=True,
                       default_namespace=default_namespace)
