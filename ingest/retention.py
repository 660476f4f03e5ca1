"""Retention of raw readings (``database.retention_days``; 0 keeps everything).

TimescaleDB drops whole chunks through a retention policy; plain PostgreSQL deletes old rows in the
housekeeping loop. Rollups are kept either way.
"""

from __future__ import annotations

import asyncpg

from sonae.migrations import uses_timescale


async def apply_retention_policy(conn: asyncpg.Connection, *, days: int) -> None:
    """Make the TimescaleDB retention policy match the setting (no-op on plain PostgreSQL)."""
    if not await uses_timescale(conn):
        return
    await conn.execute("SELECT remove_retention_policy('readings', if_exists => true)")
    if days > 0:
        await conn.execute(
            "SELECT add_retention_policy('readings', make_interval(days => $1::int))", days)


async def delete_expired(conn: asyncpg.Connection, *, days: int, batch: int = 50000) -> int:
    """Plain PostgreSQL: delete raw readings older than ``days`` (a bounded batch per call)."""
    if days <= 0 or await uses_timescale(conn):
        return 0
    status = await conn.execute(
        """DELETE FROM readings WHERE ctid = ANY (ARRAY(
               SELECT ctid FROM readings WHERE ts < now() - make_interval(days => $1::int) LIMIT $2))""",
        days, batch)
    return int(status.rsplit(" ", 1)[-1])
