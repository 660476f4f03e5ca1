"""Periodic work beside the ingest stream: rollups, then retention (both backends)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from ingest.retention import delete_expired
from ingest.rollups import refresh_rollups

log = logging.getLogger("sonae.ingest.housekeeping")


async def housekeeping_loop(pool: asyncpg.Pool, *, retention_days: int, every_s: float = 10.0) -> None:
    """Refresh rollups every ``every_s`` seconds, then remove raw readings past retention (in that order,
    so readings are rolled up before they go); errors are logged, not fatal."""
    while True:
        try:
            async with pool.acquire() as conn:
                await refresh_rollups(conn, retention_days=retention_days)
                await delete_expired(conn, days=retention_days)
        except (asyncpg.PostgresError, OSError) as exc:
            log.warning("housekeeping failed; will retry", extra={"error": str(exc)[:200]})
        await asyncio.sleep(every_s)
