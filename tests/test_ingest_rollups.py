"""Plain-PostgreSQL rollups (10m/1h/1d) and retention, behind the same queries as TimescaleDB's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from ingest import queries
from ingest.contract import Reading
from ingest.retention import delete_expired
from ingest.rollups import refresh_rollups
from ingest.store import write_batch


async def test_rollups_match_the_raw_readings_and_follow_late_data(pool: asyncpg.Pool) -> None:
    start = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    values = [1.0 + i / 10 for i in range(36)]  # 6 hours of 10-minute data
    async with pool.acquire() as conn:
        await write_batch(conn, [Reading("g", "level", start + timedelta(minutes=10 * i), v) for i, v in enumerate(values)])
        assert await refresh_rollups(conn)
        hourly = await queries.rollup(conn, "g", bucket="1h", start=start, end=start + timedelta(hours=6))
        assert len(hourly) == 6
        first = hourly[0]
        assert (first["min"], first["max"], first["last"], first["n"]) == (1.0, 1.5, 1.5, 6)
        assert abs(first["avg"] - sum(values[:6]) / 6) < 1e-9
        ten = await queries.rollup(conn, "g", bucket="10m", start=start, end=start + timedelta(hours=6))
        assert [r["last"] for r in ten] == values
        daily = await queries.rollup(conn, "g", bucket="1d", start=start, end=start + timedelta(days=1))
        assert daily[0]["n"] == 36 and daily[0]["max"] == max(values)
        # a late reading inside the first hour changes that hour's rollup at the next refresh
        await write_batch(conn, [Reading("g", "level", start + timedelta(minutes=5), 9.0)])
        assert await refresh_rollups(conn)
        hourly = await queries.rollup(conn, "g", bucket="1h", start=start, end=start + timedelta(hours=1))
        assert (hourly[0]["max"], hourly[0]["n"]) == (9.0, 7)


async def test_retention_drops_old_raw_readings_and_keeps_rollups(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with pool.acquire() as conn:
        await write_batch(conn, [Reading("g", "level", now - timedelta(days=d), float(d)) for d in (1, 10, 40, 400)])
        await refresh_rollups(conn)
        assert await delete_expired(conn, days=0) == 0  # 0 keeps everything
        assert await delete_expired(conn, days=30) == 2
        assert await conn.fetchval("SELECT count(*) FROM readings") == 2
        assert await conn.fetchval("SELECT count(*) FROM readings_1d") == 4
