"""Rollups of readings: 10 minutes, 1 hour and 1 day (min, max, avg, sum, last, count).

Buckets are aligned to Japan time (Asia/Tokyo, UTC+9 all year, no daylight saving): a day bucket runs
from 00:00 to 24:00 JST, so daily rainfall is the ``sum`` of one Japanese day. The 10-minute and hourly
buckets use the same origin (2000-01-01 00:00 JST; 9 hours is a whole number of both widths, so they
equal UTC-aligned ones).

The rollups are tables of their own on both backends (plain PostgreSQL and TimescaleDB), refreshed
here. A refresh recomputes, from the raw rows, exactly the buckets that readings received since the
previous refresh fall in, whatever their age: backfilled history and late readings reach the rollups
like live ones. (TimescaleDB's continuous aggregates were dropped: their policies refresh fixed windows,
so history and late data outside a window never arrived, and a window reaching past the retention
horizon emptied buckets whose raw rows were gone.)

Commit order: ``received_at`` is the writing transaction's *start* time, so a batch may commit after
a later-started one. The watermark advances only to the start of the oldest transaction still open
in this database (``pg_stat_activity``) and each refresh re-reads :data:`OVERLAP` before it, so a slow
commit is never skipped (an idle-in-transaction session holds the watermark back; refreshes then
re-read more but stay correct).

Retention: with ``retention_days`` > 0, raw readings before the *retention horizon* (the start of the
Japanese day ``retention_days`` ago, :func:`horizon`) may be gone, so buckets that begin before the
horizon are final and never recomputed: they keep what the raw rows said while they were kept. Buckets
from the horizon on are whole, since retention never removes rows after it (:mod:`ingest.retention`).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import asyncpg

log = logging.getLogger("sonae.ingest.rollups")

#: Bucket origin: midnight Japan time (any JST midnight gives the same buckets).
ORIGIN = "2000-01-01 00:00:00+09"
BUCKETS = {"10m": ("readings_10m", "10 minutes"), "1h": ("readings_1h", "1 hour"), "1d": ("readings_1d", "1 day")}
OVERLAP = timedelta(seconds=60)
_LOCK = 0x524F4C4C  # "ROLL"


def bucket_sql(width: str, column: str = "ts") -> str:
    """SQL for the bucket of ``column`` (``width`` e.g. ``'1 day'``), the same on both backends."""
    return f"date_bin(INTERVAL '{width}', {column}, TIMESTAMPTZ '{ORIGIN}')"


async def horizon(conn: asyncpg.Connection, *, days: int) -> datetime | None:
    """The retention horizon: 00:00 JST of the day ``days`` before now (None when ``days`` <= 0)."""
    if days <= 0:
        return None
    value: datetime = await conn.fetchval(
        f"SELECT {bucket_sql('1 day', 'now() - make_interval(days => $1::int)')}", days)
    return value


def _refresh_sql(table: str, width: str) -> str:
    return f"""
WITH touched AS (
    SELECT DISTINCT station_id, kind, exercise, {bucket_sql(width)} AS bucket
    FROM readings WHERE received_at > $1 AND received_at <= $2)
INSERT INTO {table} AS t (station_id, kind, exercise, bucket, min, max, avg, sum, last, n)
SELECT r.station_id, r.kind, r.exercise, b.bucket, min(r.value), max(r.value), avg(r.value), sum(r.value),
       (array_agg(r.value ORDER BY r.ts DESC))[1], count(*)
FROM touched b JOIN readings r
  ON r.station_id = b.station_id AND r.kind = b.kind AND r.exercise = b.exercise
 AND r.ts >= b.bucket AND r.ts < b.bucket + INTERVAL '{width}'
WHERE $3::timestamptz IS NULL OR b.bucket >= $3
GROUP BY r.station_id, r.kind, r.exercise, b.bucket
ON CONFLICT (station_id, kind, exercise, bucket) DO UPDATE
SET min = EXCLUDED.min, max = EXCLUDED.max, avg = EXCLUDED.avg, sum = EXCLUDED.sum, last = EXCLUDED.last,
    n = EXCLUDED.n
"""


_OPEN_WRITERS = """
SELECT clock_timestamp() AS at,
       (SELECT min(xact_start) FROM pg_stat_activity
        WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid()
          AND datname = current_database() AND backend_type = 'client backend') AS oldest
"""


async def refresh_rollups(conn: asyncpg.Connection, *, retention_days: int = 0,
                          overlap: timedelta = OVERLAP) -> bool:
    """Bring the rollup tables up to date with every reading committed since the last refresh.

    Parameters
    ----------
    retention_days
        ``database.retention_days``: buckets starting before the retention horizon are left as they
        are (0: none is).
    overlap
        How far before the watermark to re-read (:data:`OVERLAP`; tests set 0 to prove the watermark).

    Returns False when another process holds the refresh (it is serialised by an advisory lock).
    """
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
        return False
    try:
        # Open transactions are read *before* the snapshot: a writer missing from this list had either
        # committed (so the snapshot sees its rows) or had not started (so its rows are newer than
        # ``open["at"]``). The watermark never passes ``open["at"]`` or the oldest open transaction.
        open_ = await conn.fetchrow(_OPEN_WRITERS)
        async with conn.transaction(isolation="repeatable_read"):
            now: datetime = await conn.fetchval("SELECT now()")
            since = await conn.fetchval("SELECT refreshed_to FROM rollup_watermark")
            since = (since - overlap) if since else datetime.fromtimestamp(0, tz=now.tzinfo)
            keep_from = await horizon(conn, days=retention_days)
            for table, width in BUCKETS.values():
                await conn.execute(_refresh_sql(table, width), since, now, keep_from)
            # Never past a transaction that is still open: its rows carry its start time.
            mark = min(now, open_["at"], open_["oldest"] or open_["at"])
            await conn.execute(
                "INSERT INTO rollup_watermark (id, refreshed_to) VALUES (true, $1) "
                "ON CONFLICT (id) DO UPDATE SET refreshed_to = greatest(rollup_watermark.refreshed_to, "
                "EXCLUDED.refreshed_to)", mark)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
    return True
