"""Writing readings, dead letters and quarantined readings: one transaction per batch.

Readings are COPYed (binary protocol) straight into ``readings`` inside a savepoint. When the batch
holds a reading already stored (a redelivered message), the primary key (station, kind, exercise, ts)
stops the COPY; the savepoint is rolled back and the batch is COPYed into a per-connection temporary
staging table and moved with ``INSERT … SELECT … ON CONFLICT DO NOTHING``, so the duplicate is skipped
instead of stored twice; a skipped reading whose stored value differs is a :class:`Conflict`, returned for
the caller to keep as a dead letter. The ingestor stays on the staged path for a while after a conflict, since
redeliveries come in runs (after a restart).

Dead letters keep the first ``dead_letter_bytes`` of the raw payload (``ingest.dead_letter_max_bytes``)
with its full length and SHA-256, so a device sending megabyte payloads cannot fill the disk, and the
payload can still be matched against the device's own log. A dead letter is stored once however often
the broker delivers its message: ``message_key`` (SHA-256 of topic, a NUL and the payload) with the
reason is unique, and a redelivery adds to ``deliveries`` (migration 005).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ingest.contract import Reading, storable_text

NOTIFY_CHANNEL = "sonae_readings"

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS readings_staged (
    station_id text, kind text, ts timestamptz, value float8, exercise bool, seq int8, idx int4
) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ["station_id", "kind", "ts", "value", "exercise", "seq"]
_MOVE_STAGED = """
INSERT INTO readings (station_id, kind, ts, value, exercise, seq)
SELECT station_id, kind, ts, value, exercise, seq FROM readings_staged ORDER BY idx
ON CONFLICT DO NOTHING
"""
#: staged readings whose key holds another value after the move: a conflict, not a redelivery
_STAGED_CONFLICTS = """
SELECT s.idx, r.value FROM readings_staged s
JOIN readings r ON r.station_id = s.station_id AND r.kind = s.kind AND r.exercise = s.exercise AND r.ts = s.ts
WHERE r.value <> s.value ORDER BY s.idx
"""
_INSERT_QUARANTINE = """
INSERT INTO quarantined_readings (station_id, kind, ts, value, exercise, seq, topic)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::bool[], $6::int8[], $7::text[])
ON CONFLICT DO NOTHING
"""
#: quarantined readings (of the batch just written) whose key holds another value
_QUARANTINE_CONFLICTS = """
SELECT u.i - 1 AS idx, q.value
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::bool[]) WITH ORDINALITY
     AS u(station_id, kind, ts, value, exercise, i)
JOIN quarantined_readings q ON q.station_id = u.station_id AND q.kind = u.kind AND q.exercise = u.exercise
     AND q.ts = u.ts
WHERE q.value <> u.value ORDER BY u.i
"""
_INSERT_DEAD = """
INSERT INTO dead_letters AS d (topic, payload, payload_length, payload_sha256, message_key, reason, detail, deliveries)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::int[], $4::bytea[], $5::bytea[], $6::text[], $7::text[], $8::int[])
ON CONFLICT (message_key, reason) DO UPDATE
SET deliveries = d.deliveries + EXCLUDED.deliveries, last_received_at = now()
"""
#: default of ``ingest.dead_letter_max_bytes``: raw bytes kept of a dead letter's payload
DEAD_LETTER_BYTES = 4096
#: longest topic kept (MQTT allows 65,535 bytes; Sonae's are under 100)
_TOPIC_CHARS = 1024


@dataclass(frozen=True)
class DeadLetter:
    """A message (or part of one) that could not be stored, with the whole raw payload and why."""

    topic: str
    payload: bytes
    reason: str
    detail: str

    @property
    def message_key(self) -> bytes:
        """SHA-256 of topic, NUL, payload: the same for every delivery of one message (MQTT topics hold no NUL)."""
        return hashlib.sha256(self.topic.encode("utf-8", "surrogatepass") + b"\x00" + self.payload).digest()


def _dead_letter_columns(dead_letters: Sequence[DeadLetter], keep_bytes: int) -> tuple[list[Any], ...]:
    """The unnest() columns of :data:`_INSERT_DEAD`: one row per (message, reason), deliveries counted."""
    first: dict[tuple[bytes, str], DeadLetter] = {}
    deliveries: Counter[tuple[bytes, str]] = Counter()
    for d in dead_letters:  # the same message twice in one batch: ON CONFLICT may touch a row only once
        key = (d.message_key, storable_text(d.reason, 100))
        first.setdefault(key, d)
        deliveries[key] += 1
    items = sorted(first.items(), key=lambda item: item[0])  # one lock order across ingestors
    return ([storable_text(d.topic, _TOPIC_CHARS) for _, d in items], [d.payload[:keep_bytes] for _, d in items],
            [len(d.payload) for _, d in items], [hashlib.sha256(d.payload).digest() for _, d in items],
            [k for (k, _), _ in items], [r for (_, r), _ in items], [storable_text(d.detail) for _, d in items],
            [deliveries[key] for key, _ in items])


@dataclass(frozen=True)
class Conflict:
    """A reading not stored because its key (station, kind, exercise, ts) already holds another value.

    ``index`` is its position in the readings (or, ``quarantined``, the quarantine) handed to
    :func:`write_batch`; ``stored`` the value kept. A redelivery carries the same value and is only a
    duplicate; a different value for the same instant is the device's (or a gateway's) contradiction, kept
    as a dead letter ``conflicting_value`` by the caller so that it is seen, not silently dropped.
    """

    index: int
    stored: float
    quarantined: bool = False


@dataclass(frozen=True)
class WriteResult:
    """What a batch did. ``duplicates`` counts identical redeliveries only; ``conflicts`` the others."""

    inserted: int
    duplicates: int
    quarantined: int
    dead_letters: int
    conflicts: tuple[Conflict, ...] = ()


def _columns(readings: Sequence[Reading]) -> tuple[list[str], list[str], list[datetime], list[float], list[bool], list[int | None]]:
    return (
        [r.station_id for r in readings], [r.kind for r in readings], [r.ts for r in readings],
        [r.value for r in readings], [r.exercise for r in readings], [r.seq for r in readings],
    )


def _count(status: str) -> int:
    # "INSERT 0 123"
    return int(status.rsplit(" ", 1)[-1])


async def write_batch(
    conn: asyncpg.Connection,
    readings: Sequence[Reading],
    *,
    quarantine: Sequence[tuple[Reading, str]] = (),
    dead_letters: Sequence[DeadLetter] = (),
    notify: bool = True,
    try_direct: bool = True,
    dead_letter_bytes: int = DEAD_LETTER_BYTES,
) -> WriteResult:
    """Store one batch atomically and tell listeners which stations got new readings.

    ``dead_letter_bytes``: raw bytes kept of each dead letter's payload (its length and SHA-256 are
    kept whole). ``WriteResult.dead_letters`` counts the dead letters handed in, new or redelivered.
    """
    inserted = 0
    conflicts: list[Conflict] = []
    async with conn.transaction():
        if readings:
            records = [(r.station_id, r.kind, r.ts, r.value, r.exercise, r.seq) for r in readings]
            direct = False
            if try_direct:
                # The common case has no duplicate: COPY straight into the table (about 1.9x the
                # staged path here). A duplicate aborts it; the savepoint rolls back and the batch
                # goes through the staging table instead.
                try:
                    async with conn.transaction():
                        await conn.copy_records_to_table("readings", columns=_STAGE_COLUMNS, records=records)
                    inserted, direct = len(records), True
                except asyncpg.UniqueViolationError:
                    pass
            if not direct:  # a key met twice (stored, or twice in the batch): the first value kept
                await conn.execute(_STAGE)
                await conn.copy_records_to_table("readings_staged", columns=[*_STAGE_COLUMNS, "idx"],
                                                 records=[(*rec, i) for i, rec in enumerate(records)])
                inserted = _count(await conn.execute(_MOVE_STAGED))
                if inserted < len(records):
                    conflicts += [Conflict(r["idx"], r["value"]) for r in await conn.fetch(_STAGED_CONFLICTS)]
        if quarantine:
            rows = [r for r, _ in quarantine]
            held = _count(await conn.execute(_INSERT_QUARANTINE, *_columns(rows), [t for _, t in quarantine]))
            if held < len(rows):
                conflicts += [Conflict(r["idx"], r["value"], quarantined=True)
                              for r in await conn.fetch(_QUARANTINE_CONFLICTS, *_columns(rows)[:5])]
        if dead_letters:
            await conn.execute(_INSERT_DEAD, *_dead_letter_columns(dead_letters, dead_letter_bytes))
        if notify and inserted:
            stations = sorted({r.station_id for r in readings})
            body = json.dumps({"stations": stations}, separators=(",", ":"))
            if len(body) > 7000:  # NOTIFY payloads are limited to 8000 bytes
                body = json.dumps({"stations": None})
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, body)
    duplicates = len(readings) - inserted - sum(1 for c in conflicts if not c.quarantined)
    return WriteResult(inserted, duplicates, len(quarantine), len(dead_letters), tuple(conflicts))
