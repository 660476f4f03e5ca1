"""Scale-out without shared subscriptions: the topic space partitioned by municipality.

Why not ``$share/…``: Mosquitto (2.0) and EMQX do not queue for a shared subscription whose members
are all offline, so every reading published while the ingestors reconnect (a broker restart, a
deploy) is answered PUBACK 0x10 "no matching subscribers" and lost for good (issue #23). A *plain*
persistent subscription is queued by the broker while its ingestor is away, so partitions use plain
subscriptions only.

An MQTT topic filter cannot say "stations whose hash is i mod n", so the partition is drawn at a
topic level a filter can name: the municipality (the 団体コード level of
``{prefix}/{municipality}/{station}/{kind}``). Ingestor ``i`` of ``n`` (setting ``ingest.partition =
"i/n"``) subscribes to ``{prefix}/{code}/#`` for every municipality of the registry (the
``municipalities`` table and the stations' ``municipality_code``) whose stable hash (CRC-32 of the
code, the same on every host and Python run) is ``i`` mod ``n``. So every registered municipality
has exactly one subscriber, whichever ingestors are up, and each partition's queue survives its
ingestor's absence.

A municipality registered later is picked up by its ingestor within :data:`REFRESH_S`; subscriptions
are only ever added, never removed. Readings on topics of municipalities that are not registered
find no subscriber in partitioned mode (the broker answers 0x10): register a municipality before
provisioning its devices. Without a partition (the default, one ingestor) the whole tree
``{prefix}/#`` is subscribed and nothing depends on the registry.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import asyncpg

#: seconds between two looks at the registry for new municipalities
REFRESH_S = 10.0

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*\Z")


@dataclass(frozen=True)
class Partition:
    """Ingestor ``index`` of ``count``."""

    index: int
    count: int

    @classmethod
    def parse(cls, spec: str) -> Partition | None:
        """``"i/n"`` → a partition; ``""`` → ``None`` (the whole topic tree)."""
        if not spec:
            return None
        m = _SPEC.match(spec)
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise ValueError(f"ingest.partition={spec!r}: expected i/n with 0 <= i < n")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, municipality: str) -> bool:
        """Whether this partition takes the municipality's topics (CRC-32 of the code mod n)."""
        return zlib.crc32(municipality.encode()) % self.count == self.index

    def filters(self, prefix: str, municipalities: set[str]) -> list[str]:
        """The plain topic filters of this partition, sorted."""
        return sorted(f"{prefix}/{code}/#" for code in municipalities if self.owns(code))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


async def registered_municipalities(conn: asyncpg.Connection) -> set[str]:
    """Codes of every municipality known to the registry (its table and its stations)."""
    rows = await conn.fetch("""SELECT code FROM municipalities
                               UNION SELECT municipality_code FROM stations WHERE municipality_code IS NOT NULL""")
    return {r[0] for r in rows if r[0]}
