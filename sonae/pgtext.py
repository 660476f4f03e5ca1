"""Text PostgreSQL can store: the check every importer applies to the strings it reads from files.

A PostgreSQL ``text`` value cannot hold NUL (``invalid byte sequence for encoding "UTF8": 0x00``), and
UTF-8 cannot encode a lone surrogate, which a JSON escape such as ``"\\ud800"`` produces
(asyncpg: ``DataError … surrogates not allowed``). Found only at the upsert, either one stops a whole
import with a raw database error; found when the file is read, it is an error naming the record and
field. (Device payloads are not refused for this: ``ingest.contract.storable_text`` escapes what it
keeps of them; API bodies refuse both with a 400, see ``api.bodies``.)
"""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def unstorable(text: str) -> str | None:
    """What PostgreSQL cannot store in ``text`` (``"a NUL character"``, ``"a lone surrogate …"``), or None."""
    found = unstorable_at(text)
    return None if found is None else found[1]


def unstorable_at(text: str) -> tuple[int, str] | None:
    """(index, description) of the first character PostgreSQL cannot store in ``text``, or None."""
    m = _UNSTORABLE.search(text)
    if m is None:
        return None
    if m.group() == "\x00":
        return m.start(), "a NUL character"
    return m.start(), f"a lone surrogate (U+{ord(m.group()):04X}, from a JSON \\u escape that is not half of a pair)"
