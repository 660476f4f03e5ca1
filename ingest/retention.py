"""Retention of raw readings (``database.retention_days``) and of dead letters
(``ingest.dead_letter_retention_days``); 0 keeps everything.

TimescaleDB drops whole chunks of readings through a retention policy; plain PostgreSQL deletes old
rows in the housekeeping loop. Rollups are kept either way. Dead letters are deleted by the
housekeeping loop on both.
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
