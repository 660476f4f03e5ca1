"""Periodic work beside the ingest stream: rollups, then retention of readings (both backends) and of dead letters."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from ingest.retention import delete_expired, delete_expired_dead_letters
from ingest.rollups import refresh_rollups
from sonae.db import DATABASE_ERRORS

log = logging.getLogger("sonae.ingest.housekeeping")


async def housekeeping_loop(pool: asyncpg.Pool, *, retention_days: int, dead_letter_retention_days: int = 0,
                            every_s: float = 10.0) -> None:
    """Every ``every_s`` seconds refresh rollups, then remove raw readings past retention (in that order,
    so readings are rolled up before they go), and delete expired dead letters.

    Errors are logged, not fatal; a failing rollup does not hold up dead-letter retention.
    """
    while True:
        try:
            async with pool.acquire() as conn:
                await refresh_rollups(conn, retention_days=retention_days)
                await delete_expired(conn, days=retention_days)
        except DATABASE_ERRORS as exc:
            log.warning("housekeeping failed; will retry", extra={"error": str(exc)[:200]})
        try:
            async with pool.acquire() as conn:
                await delete_expired_dead_letters(conn, days=dead_letter_retention_days)
        except DATABASE_ERRORS as exc:
            log.warning("dead-letter retention failed; will retry", extra={"error": str(exc)[:200]})
        await asyncio.sleep(every_s)
