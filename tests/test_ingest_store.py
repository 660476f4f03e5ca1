"""Batch writes: COPY straight into the table, falling back to the staging table on a duplicate."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.contract import Reading
from ingest.store import write_batch


def _batch(n: int, offset: int = 0) -> list[Reading]:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [Reading("st", "level", start + timedelta(minutes=10 * (i + offset)), float(i + offset)) for i in range(n)]


async def test_duplicates_in_and_across_batches_are_stored_once(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        first = await write_batch(conn, _batch(100))
        assert (first.inserted, first.duplicates) == (100, 0)
        # half new, half already stored, and one reading twice in the same batch
        mixed = _batch(100, offset=50) + _batch(1, offset=120)
        second = await write_batch(conn, mixed)
        assert (second.inserted, second.duplicates) == (50, 51)
        staged_only = await write_batch(conn, _batch(10, offset=200), try_direct=False)
        assert staged_only.inserted == 10
        assert await conn.fetchval("SELECT count(*) FROM readings") == 160
        assert await conn.fetchval("SELECT count(DISTINCT ts) FROM readings") == 160
