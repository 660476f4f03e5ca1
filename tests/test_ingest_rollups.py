"""Rollups (10m/1h/1d, Japan-time buckets) against recomputation from the raw readings, on whichever
backend the session runs (``--backend``): live, backfilled, late and retention-trimmed data."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import queries
from ingest.contract import Reading
from ingest.retention import delete_expired
from ingest.rollups import BUCKETS, horizon, refresh_rollups
from ingest.store import write_batch
from sonae.japantime import JST
from sonae.migrations import migrate

WIDTHS = {"10m": timedelta(minutes=10), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
ORIGIN = datetime(2000, 1, 1, tzinfo=JST)
Key = tuple[str, str, bool, datetime]


def bucket_of(ts: datetime, width: timedelta) -> datetime:
    """The oracle's bucket: whole widths from midnight JST (independent of the SQL's date_bin)."""
    return (ORIGIN + ((ts - ORIGIN) // width) * width).astimezone(UTC)


def recompute(readings: list[Reading], width: timedelta) -> dict[Key, dict[str, Any]]:
    """Rollups computed in Python from raw readings (the first stored reading of a key wins)."""
    groups: dict[Key, list[Reading]] = defaultdict(list)
    for r in readings:
        groups[(r.station_id, r.kind, r.exercise, bucket_of(r.ts, width))].append(r)
    out = {}
    for key, rs in groups.items():
        values = [r.value for r in rs]
        out[key] = {"min": min(values), "max": max(values), "sum": sum(values), "avg": sum(values) / len(values),
                    "last": max(rs, key=lambda r: r.ts).value, "n": len(values)}
    return out


async def stored_rollups(conn: asyncpg.Connection, table: str) -> dict[Key, dict[str, Any]]:
    rows = await conn.fetch(f"SELECT * FROM {table}")
    return {(r["station_id"], r["kind"], r["exercise"], r["bucket"]):
            {k: r[k] for k in ("min", "max", "sum", "avg", "last", "n")} for r in rows}


def assert_same(stored: dict[Key, dict[str, Any]], expected: dict[Key, dict[str, Any]], what: str) -> None:
    assert stored.keys() == expected.keys(), f"{what}: buckets differ"
    for key, want in expected.items():
        got = stored[key]
        assert got["n"] == want["n"] and got["last"] == want["last"], (what, key, got, want)
        for col in ("min", "max", "sum", "avg"):
            assert got[col] == pytest.approx(want[col], rel=1e-9, abs=1e-9), (what, key, col, got, want)


async def test_rollups_match_the_raw_readings_and_follow_late_data(pool: asyncpg.Pool) -> None:
    start = datetime(2026, 7, 1, 0, 0, tzinfo=JST)  # a Japanese day
    values = [1.0 + i / 10 for i in range(36)]  # 6 hours of 10-minute data
    async with pool.acquire() as conn:
        await write_batch(conn, [Reading("g", "level", start + timedelta(minutes=10 * i), v) for i, v in enumerate(values)])
        assert await refresh_rollups(conn)
        hourly = await queries.rollup(conn, "g", bucket="1h", start=start, end=start + timedelta(hours=6))
        assert len(hourly) == 6
        first = hourly[0]
        assert (first["min"], first["max"], first["last"], first["n"]) == (1.0, 1.5, 1.5, 6)
        assert first["sum"] == pytest.approx(sum(values[:6]))
        assert abs(first["avg"] - sum(values[:6]) / 6) < 1e-9
        ten = await queries.rollup(conn, "g", bucket="10m", start=start, end=start + timedelta(hours=6))
        assert [r["last"] for r in ten] == values
        daily = await queries.rollup(conn, "g", bucket="1d", start=start, end=start + timedelta(days=1))
        assert daily[0]["bucket"] == start and daily[0]["n"] == 36 and daily[0]["max"] == max(values)
        # a late reading inside the first hour changes that hour's rollup at the next refresh
        await write_batch(conn, [Reading("g", "level", start + timedelta(minutes=5), 9.0)])
        assert await refresh_rollups(conn)
        hourly = await queries.rollup(conn, "g", bucket="1h", start=start, end=start + timedelta(hours=1))
        assert (hourly[0]["max"], hourly[0]["n"]) == (9.0, 7)


async def test_a_japanese_day_holds_its_rain(pool: asyncpg.Pool) -> None:
    """Rain at 08:00 and 20:00 JST on the 12th and 07:00 JST on the 13th: two days, sums 3 and 5 mm
    (UTC days would put 08:00 JST in the 11th's bucket)."""
    day = datetime(2026, 7, 12, tzinfo=JST)
    rain = [(day + timedelta(hours=8), 1.0), (day + timedelta(hours=20), 2.0), (day + timedelta(hours=31), 5.0)]
    async with pool.acquire() as conn:
        await write_batch(conn, [Reading("r1", "rain", ts, mm) for ts, mm in rain])
        await refresh_rollups(conn)
        daily = await queries.rollup(conn, "r1", kind="rain", bucket="1d", start=day - timedelta(days=2),
                                     end=day + timedelta(days=3))
    assert [(r["bucket"], r["sum"], r["n"]) for r in daily] == [(day, 3.0, 2), (day + timedelta(days=1), 5.0, 1)]
    assert daily[0]["bucket"].astimezone(JST).hour == 0


async def test_backfilled_history_and_late_readings_of_any_age_reach_every_rollup(pool: asyncpg.Pool) -> None:
    """The cases TimescaleDB's continuous aggregates lost: history loaded after start-up, and readings
    3, 10 and 35 days late."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    history = [Reading("h", "level", now - timedelta(days=60) + timedelta(minutes=30 * i), float(i % 17))
               for i in range(60 * 48)]
    async with pool.acquire() as conn:
        await write_batch(conn, history[-100:])  # live data first
        await refresh_rollups(conn)
        await write_batch(conn, history[:-100])  # then the backfill
        assert await refresh_rollups(conn)
        late = [Reading("h", "level", now - timedelta(days=d, minutes=7), 99.0) for d in (3, 10, 35)]
        await write_batch(conn, late)
        assert await refresh_rollups(conn)
        for name, (table, _) in BUCKETS.items():
            assert_same(await stored_rollups(conn, table), recompute(history + late, WIDTHS[name]), name)


async def test_a_slow_commit_is_not_skipped_by_the_watermark(pool: asyncpg.Pool) -> None:
    """received_at is the writer's start time: a batch that commits after a later-started one (and
    after a refresh) must still reach the rollups, with no re-read overlap to hide it."""
    ts = datetime(2026, 7, 1, tzinfo=JST)
    async with pool.acquire() as slow, pool.acquire() as fast, pool.acquire() as house:
        # a committed reading first: on TimescaleDB the first row of a chunk creates it, and the slow
        # writer would then hold that lock against the fast one
        await write_batch(house, [Reading("other", "level", ts, 0.0)])
        tx = slow.transaction()
        await tx.start()
        await slow.execute("INSERT INTO readings (station_id, kind, ts, value) VALUES ('s', 'level', $1, 1.0)", ts)
        await write_batch(fast, [Reading("s", "level", ts + timedelta(minutes=1), 2.0)])
        assert await refresh_rollups(house, overlap=timedelta(0))
        await tx.commit()
        assert await refresh_rollups(house, overlap=timedelta(0))
        row = await house.fetchrow("SELECT n, sum FROM readings_10m WHERE station_id = 's'")
    assert (row["n"], row["sum"]) == (2, 3.0)


async def test_retention_drops_old_raw_readings_and_keeps_rollups(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with pool.acquire() as conn:
        await write_batch(conn, [Reading("g", "level", now - timedelta(days=d), float(d)) for d in (1, 10, 40, 400)])
        await refresh_rollups(conn)  # rolled up while young (retention 0 keeps everything)
        assert await delete_expired(conn, days=0) == 0
        keep_from = await horizon(conn, days=30)
        assert keep_from is not None and keep_from.astimezone(JST).hour == 0
        await delete_expired(conn, days=30)
        left = await conn.fetch("SELECT ts FROM readings ORDER BY ts")
        assert [r["ts"] for r in left][-2:] == [now - timedelta(days=10), now - timedelta(days=1)]
        assert all(r["ts"] >= now - timedelta(days=60) for r in left)  # 400 days old is gone on both backends
        assert await conn.fetchval("SELECT count(*) FROM readings_1d") == 4
        before = await stored_rollups(conn, "readings_1d")
        # a reading for a day before the horizon cannot be recomputed honestly (its raw rows are gone):
        # that day's rollup stays as it was; one inside retention still counts
        await write_batch(conn, [Reading("g", "level", now - timedelta(days=400, minutes=1), 7.0),
                                 Reading("g", "level", now - timedelta(days=10, minutes=1), 7.0)])
        await refresh_rollups(conn, retention_days=30)
        after = await stored_rollups(conn, "readings_1d")
        old_day = ("g", "level", False, bucket_of(now - timedelta(days=400), WIDTHS["1d"]))
        assert after[old_day] == before[old_day]
        young_day = ("g", "level", False, bucket_of(now - timedelta(days=10), WIDTHS["1d"]))
        assert after[young_day]["n"] == before[young_day]["n"] + 1


# -- property: any arrival order, any retention --------------------------------------------------------
async def _scenario(url: str, base: datetime, days: int, batches: list[list[Reading]], ops: list[str]) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE readings, readings_10m, readings_1h, readings_1d, rollup_watermark")
        for batch, op in zip(batches, ops, strict=True):
            await write_batch(conn, batch)
            if op in ("refresh", "both"):
                await refresh_rollups(conn, retention_days=days)
            if op in ("expire", "both"):
                await delete_expired(conn, days=days)
        await refresh_rollups(conn, retention_days=days)
        await delete_expired(conn, days=days)
        keep_from = await horizon(conn, days=days)
        first: dict[tuple[str, str, bool, datetime], Reading] = {}
        for r in (r for b in batches for r in b):
            first.setdefault((r.station_id, r.kind, r.exercise, r.ts), r)
        kept = [r for r in first.values() if keep_from is None or r.ts >= keep_from]
        stored_raw = await conn.fetchval("SELECT count(*) FROM readings WHERE $1::timestamptz IS NULL OR ts >= $1",
                                         keep_from)
        assert stored_raw == len(kept), "retention removed readings inside the horizon"
        for name, (table, _) in BUCKETS.items():
            expected = {k: v for k, v in recompute(kept, WIDTHS[name]).items() if keep_from is None or k[3] >= keep_from}
            assert_same(await stored_rollups(conn, table), expected, name)
    finally:
        await conn.close()


def test_rollups_equal_raw_readings_whatever_the_arrival_order(database_url: str) -> None:
    """Random readings (up to 40 days old, duplicates included) in random batches and order, with
    refreshes and retention runs in between: every rollup equals a recomputation from the readings as
    written, for every bucket inside retention (none is made up before the retention horizon)."""

    async def prepare() -> datetime:
        conn = await asyncpg.connect(database_url)
        try:
            await migrate(conn)
            now: datetime = await conn.fetchval("SELECT date_trunc('minute', now())")
        finally:
            await conn.close()
        return now

    base = asyncio.run(prepare())
    reading = st.builds(
        lambda station, kind, minutes, value: Reading(station, kind, base - timedelta(minutes=5 * minutes), value / 4),
        st.sampled_from(["a", "b"]), st.sampled_from(["level", "rain"]),
        st.integers(0, 40 * 288), st.integers(0, 400))

    @settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(days=st.sampled_from([0, 2, 9, 30]),
           batches=st.lists(st.lists(reading, min_size=1, max_size=25), min_size=1, max_size=6),
           data=st.data())
    def check(days: int, batches: list[list[Reading]], data: st.DataObject) -> None:
        ops = data.draw(st.lists(st.sampled_from(["none", "refresh", "expire", "both"]),
                                 min_size=len(batches), max_size=len(batches)))
        asyncio.run(_scenario(database_url, base, days, batches, ops))

    check()
