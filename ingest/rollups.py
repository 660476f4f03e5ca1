"""Rollups of readings (10 minutes, 1 hour, 1 day: min, max, avg, last, count).

With TimescaleDB they are continuous aggregates refreshed by its own policies. On plain PostgreSQL
they are tables of the same names and columns, refreshed here: every bucket touched by readings
received since the last refresh is recomputed from the raw rows (idempotent, so the refresh window
overlaps the previous one by :data:`OVERLAP` to catch transactions that committed late).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg

from sonae.migrations import uses_timescale

log = logging.getLogger("sonae.ingest.rollups")

BUCKETS = {"10m": ("readings_10m", "10 minutes"), "1h": ("readings_1h", "1 hour"), "1d": ("readings_1d", "1 day")}
OVERLAP = timedelta(seconds=60)
_LOCK = 0x524F4C4C  # "ROLL"


def _refresh_sql(table: str, width: str) -> str:
    return f"""
WITH touched AS (
    SELECT DISTINCT station_id, kind, exercise, date_bin(INTERVAL '{width}', ts, TIMESTAMPTZ 'epoch') AS bucket
    FROM readings WHERE received_at > $1 AND received_at <= $2)
INSERT INTO {table} AS t (station_id, kind, exercise, bucket, min, max, avg, last, n)
SELECT r.station_id, r.kind, r.exercise, b.bucket, min(r.value), max(r.value), avg(r.value),
       (array_agg(r.value ORDER BY r.ts DESC))[1], count(*)
FROM touched b JOIN readings r
  ON r.station_id = b.station_id AND r.kind = b.kind AND r.exercise = b.exercise
 AND r.ts >= b.bucket AND r.ts < b.bucket + INTERVAL '{width}'
GROUP BY r.station_id, r.kind, r.exercise, b.bucket
ON CONFLICT (station_id, kind, exercise, bucket) DO UPDATE
SET min = EXCLUDED.min, max = EXCLUDED.max, avg = EXCLUDED.avg, last = EXCLUDED.last, n = EXCLUDED.n
"""


async def refresh_rollups(conn: asyncpg.Connection) -> bool:
    """Bring the plain-PostgreSQL rollup tables up to date. Returns False when another process holds
    the refresh (or TimescaleDB does it)."""
    if await uses_timescale(conn):
        return False
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
        return False
    try:
        async with conn.transaction():
            now: datetime = await conn.fetchval("SELECT now()")
            since = await conn.fetchval("SELECT refreshed_to FROM rollup_watermark")
            since = (since - OVERLAP) if since else datetime.fromtimestamp(0, tz=now.tzinfo)
            for table, width in BUCKETS.values():
                await conn.execute(_refresh_sql(table, width), since, now)
            await conn.execute(
                "INSERT INTO rollup_watermark (id, refreshed_to) VALUES (true, $1) "
                "ON CONFLICT (id) DO UPDATE SET refreshed_to = EXCLUDED.refreshed_to", now)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    return True
