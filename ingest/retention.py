"""Retention of raw readings (``database.retention_days``) and of dead letters
(``ingest.dead_letter_retention_days``); 0 keeps everything. Rollups are kept.

Both backends keep every raw reading from the *retention horizon* on: the start (00:00 JST) of the
Japanese day ``retention_days`` before now. Aligning the horizon to the day buckets means a bucket is
either whole or before the horizon, so rollups are never recomputed from partly deleted raw data (see
:mod:`ingest.rollups`). Plain PostgreSQL deletes the rows before it; TimescaleDB drops the chunks that
end before it (``drop_chunks``; a chunk straddling the horizon stays whole). Both run in the
housekeeping loop, after the rollup refresh, rather than as a TimescaleDB retention policy, whose
``now() - interval`` cut-off would split a Japanese day. Dead letters are deleted by the housekeeping
loop on both backends.
"""

from __future__ import annotations

import asyncpg

from ingest.rollups import horizon
from sonae.migrations import uses_timescale


async def apply_retention_policy(conn: asyncpg.Connection, *, days: int) -> None:
    """TimescaleDB: remove any retention policy (housekeeping applies retention on both backends)."""
    if await uses_timescale(conn):
        await conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")


async def delete_expired(conn: asyncpg.Connection, *, days: int, batch: int = 50000) -> int:
    """Remove raw readings before the retention horizon; returns the rows (plain) or chunks (TimescaleDB)
    removed. Plain PostgreSQL deletes a bounded batch per call."""
    keep_from = await horizon(conn, days=days)
    if keep_from is None:
        return 0
    if await uses_timescale(conn):
        dropped = await conn.fetch("SELECT drop_chunks('readings', older_than => $1::timestamptz)", keep_from)
        return len(dropped)
    status = await conn.execute(
        """DELETE FROM readings WHERE ctid = ANY (ARRAY(
               SELECT ctid FROM readings WHERE ts < $1 LIMIT $2))""", keep_from, batch)
    return int(status.rsplit(" ", 1)[-1])


async def delete_expired_dead_letters(conn: asyncpg.Connection, *, days: int, batch: int = 10000) -> int:
    """Delete dead letters last received more than ``days`` ago (``ingest.dead_letter_retention_days``).

    Plain PostgreSQL and TimescaleDB alike (``dead_letters`` is an ordinary table in both); a bounded
    batch per call, so the housekeeping loop never holds a long transaction. 0 keeps everything.
    """
    if days <= 0:
        return 0
    status = await conn.execute(
        """DELETE FROM dead_letters WHERE id = ANY (ARRAY(
               SELECT id FROM dead_letters WHERE last_received_at < now() - make_interval(days => $1::int)
               LIMIT $2))""",
        days, batch)
    return int(status.rsplit(" ", 1)[-1])
