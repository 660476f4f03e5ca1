"""Writing readings, dead letters and quarantined readings: one transaction per batch.

Readings are COPYed (binary protocol) straight into ``readings`` inside a savepoint. When the batch
holds a reading already stored (a redelivered message), the primary key (station, kind, exercise, ts)
stops the COPY; the savepoint is rolled back and the batch is COPYed into a per-connection temporary
staging table and moved with ``INSERT … SELECT … ON CONFLICT DO NOTHING``, so the duplicate is skipped
instead of stored twice. The ingestor stays on the staged path for a while after a conflict, since
redeliveries come in runs (after a restart).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ingest.contract import Reading

NOTIFY_CHANNEL = "sonae_readings"

_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS readings_stage (
    station_id text, kind text, ts timestamptz, value float8, exercise bool, seq int8
) ON COMMIT DELETE ROWS
"""
_STAGE_COLUMNS = ["station_id", "kind", "ts", "value", "exercise", "seq"]
_MOVE_STAGED = """
INSERT INTO readings (station_id, kind, ts, value, exercise, seq)
SELECT station_id, kind, ts, value, exercise, seq FROM readings_stage
ON CONFLICT DO NOTHING
"""
_INSERT_QUARANTINE = """
INSERT INTO quarantined_readings (station_id, kind, ts, value, exercise, seq, topic)
SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::float8[], $5::bool[], $6::int8[], $7::text[])
ON CONFLICT DO NOTHING
"""
_INSERT_DEAD = """
INSERT INTO dead_letters (topic, payload, reason, detail)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::text[], $4::text[])
"""


@dataclass(frozen=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str
    detail: str


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int
    quarantined: int
    dead_letters: int


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
) -> WriteResult:
    """Store one batch atomically and tell listeners which stations got new readings."""
    inserted = 0
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
            if not direct:
                await conn.execute(_STAGE)
                await conn.copy_records_to_table("readings_stage", columns=_STAGE_COLUMNS, records=records)
                inserted = _count(await conn.execute(_MOVE_STAGED))
        if quarantine:
            rows = [r for r, _ in quarantine]
            await conn.execute(_INSERT_QUARANTINE, *_columns(rows), [t for _, t in quarantine])
        if dead_letters:
            await conn.execute(
                _INSERT_DEAD, [d.topic for d in dead_letters], [d.payload for d in dead_letters],
                [d.reason for d in dead_letters], [d.detail[:2000] for d in dead_letters],
            )
        if notify and inserted:
            stations = sorted({r.station_id for r in readings})
            body = json.dumps({"stations": stations}, separators=(",", ":"))
            if len(body) > 7000:  # NOTIFY payloads are limited to 8000 bytes
                body = json.dumps({"stations": None})
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, body)
    return WriteResult(inserted, len(readings) - inserted, len(quarantine), len(dead_letters))
