"""Preparing the database for Sonae: migrations, the retention policy, and the shipped municipality
data on an empty database (issue #14)."""

from __future__ import annotations

import logging

import asyncpg

from sonae.config import Settings
from sonae.migrations import migrate

log = logging.getLogger("sonae.runtime")


async def prepare_schema(pool: asyncpg.Pool, settings: Settings) -> list[str]:
    """Apply pending migrations and the retention setting; returns the names of the migrations applied."""
    async with pool.acquire() as conn:
        applied = await migrate(conn)
        from ingest.retention import apply_retention_policy

        await apply_retention_policy(conn, days=settings["database.retention_days"])
        from ingest.boundaries import seed_if_empty as seed_boundaries
        from ingest.municipalities import seed_if_empty as seed_municipalities

        # an empty database gets the shipped municipality list and boundaries (issue #14)
        seeded = {"municipalities": await seed_municipalities(conn), "boundaries": await seed_boundaries(conn)}
    if any(seeded.values()):
        log.info("municipality data loaded from the package", extra=seeded)
    if applied:
        log.info("schema migrated", extra={"applied": len(applied)})
    return applied
