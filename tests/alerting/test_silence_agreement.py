"""The staff console and the rules worker name the same stations silent (review: they decided by different
rules — the worker only river-level stations with a rule_state row, from level/battery/status readings,
with its own factor; the console every station from level/rain readings of either stream, on the API
host's clock with the default factor). Both are checked against a recomputation from the raw rows."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import alerting
from alerting.worker import RulesWorker
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.alerting.silence_support import console_silent
from tests.api_support import signed_in

MUNI = "072036"
INTERVAL = 600  # s
MARGIN = 120  # s either side of the limit: far more than the test takes


def _stations() -> list[Station]:
    s = lambda id_, **kw: Station(id=id_, name=id_, municipality_code=MUNI, expected_interval_s=INTERVAL, **kw)  # noqa: E731
    return [s("recent"), s("just-over"), s("just-under"), s("never-old"), s("never-new"),
            s("rain-old", kind="rainfall", gauge_type="none"), s("rain-recent", kind="rainfall", gauge_type="none"),
            s("telemetry-only"), s("between-factors"), s("real-with-drill"), s("drill-old", exercise=True),
            s("drill-recent", exercise=True), s("gateway-never", kind="gateway", gauge_type="none"),
            s("device-old", kind="device", gauge_type="none")]


def _readings(now: datetime, limit: float) -> list[tuple[str, str, datetime, float, bool]]:
    ago = lambda seconds: now - timedelta(seconds=seconds)  # noqa: E731
    return [
        ("recent", "level", ago(60), 1.0, False),
        ("just-over", "level", ago(limit + MARGIN), 1.0, False),
        ("just-under", "level", ago(limit - MARGIN), 1.0, False),
        ("rain-old", "rain", ago(2 * limit + 600), 0.5, False),
        ("rain-recent", "rain", ago(60), 0.0, False),
        ("telemetry-only", "battery_pct", ago(60), 80.0, False),  # a sign of life without a level
        ("telemetry-only", "rssi_dbm", ago(30), -80.0, False),
        ("between-factors", "level", ago(3.5 * INTERVAL), 1.0, False),  # silent by 3 intervals, not by 4
        ("real-with-drill", "level", ago(2 * limit + 600), 1.0, False),
        ("real-with-drill", "level", ago(60), 1.0, True),  # a drill on a real gauge is not its data
        ("drill-old", "level", ago(2 * limit + 600), 1.0, True),
        ("drill-recent", "level", ago(60), 1.0, True),
        ("device-old", "status", ago(2 * limit + 600), 0.0, False),
    ]


async def _oracle(conn: asyncpg.Connection, factor: float) -> set[tuple[str, bool]]:
    """Silent (station, exercise) from the raw rows: the newest reading of any kind in the station's own
    stream, else its registration, more than factor × interval before the database's now(); gateways
    (which may relay only other stations' readings) are never silent."""
    now = await conn.fetchval("SELECT now()")
    newest = {(r["station_id"], r["exercise"]): r["ts"] for r in await conn.fetch(
        "SELECT station_id, exercise, max(ts) AS ts FROM readings GROUP BY 1, 2")}
    out = set()
    for st in await conn.fetch("SELECT id, exercise, expected_interval_s, created_at FROM stations "
                               "WHERE kind <> 'gateway'"):
        since = newest.get((st["id"], st["exercise"]), st["created_at"])
        if (now - since).total_seconds() > factor * st["expected_interval_s"]:
            out.add((st["id"], st["exercise"]))
    return out


async def _worker_alerts(conn: asyncpg.Connection) -> set[tuple[str, bool]]:
    return {(r["station_id"], r["exercise"]) for r in await conn.fetch(
        "SELECT station_id, exercise FROM alerts WHERE condition = 'silent' AND cleared_at IS NULL")}


@pytest.mark.parametrize("factor", [None, 4.0])
async def test_console_and_worker_name_the_same_stations_silent(pool: asyncpg.Pool, settings: Settings,
                                                                factor: float | None) -> None:
    if factor is not None:  # a configured factor reaches both
        settings = settings.replace(alerting__silent_factor=factor)
    used = factor or 3.0
    async with pool.acquire() as conn:
        await upsert_stations(conn, _stations())
        await conn.execute("UPDATE stations SET created_at = now() - interval '1 day' WHERE id <> 'never-new'")
        now = await conn.fetchval("SELECT now()")
        await conn.executemany(
            "INSERT INTO readings (station_id, kind, ts, value, exercise) VALUES ($1, $2, $3, $4, $5)",
            _readings(now, used * INTERVAL))
        token = (await signed_in(conn, (("silence-staff", "staff", MUNI),), "correct horse battery"))["silence-staff"]
        worker = RulesWorker.from_settings(settings, pool)
        await worker.step(conn)
        await worker.check_silent(conn)
        by_worker = await _worker_alerts(conn)
        expected = await _oracle(conn, used)
    by_console = await console_silent(settings, pool, token)
    assert expected == {("just-over", False), ("never-old", False), ("rain-old", False), ("real-with-drill", False),
                        ("drill-old", True), ("device-old", False)} | ({("between-factors", False)} if used < 3.5 else set())
    assert (by_worker, by_console) == (expected, expected), (
        f"differ from the raw rows: worker {sorted(by_worker ^ expected)}, console {sorted(by_console ^ expected)}")

    # data again: both clear at once, by the same rows
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO readings (station_id, kind, ts, value) VALUES ('rain-old', 'rain', now(), 0)")
        await worker.step(conn)
        await worker.check_silent(conn)
        assert await _worker_alerts(conn) == await _oracle(conn, used) == expected - {("rain-old", False)}
    assert await console_silent(settings, pool, token) == expected - {("rain-old", False)}


async def test_upgrade_fills_the_newest_reading_of_every_stream_once(pool: asyncpg.Pool, settings: Settings) -> None:
    """Migration 041 gives stations the worker never recorded (rain gauges, telemetry, before it ran) their
    newest reading, so an upgrade raises no silent alert for a station that reports."""
    sql = (Path(alerting.__file__).parent / "migrations" / "041_rule_state_any_reading.sql").read_text()
    async with pool.acquire() as conn:
        await upsert_stations(conn, _stations())
        await conn.execute("UPDATE stations SET created_at = now() - interval '1 day'")
        now = await conn.fetchval("SELECT now()")
        await conn.executemany(
            "INSERT INTO readings (station_id, kind, ts, value, exercise) VALUES ($1, $2, $3, $4, $5)",
            _readings(now, 3 * INTERVAL))
        newer = now + timedelta(seconds=5)  # a row the worker wrote is never moved back
        await conn.execute("INSERT INTO rule_state (station_id, exercise, state, last_ts) VALUES ('recent', false, "
                           "'{}', $1)", newer)
        await conn.execute(sql)
        filled = {(r["station_id"], r["exercise"]): r["last_ts"] for r in await conn.fetch(
            "SELECT station_id, exercise, last_ts FROM rule_state")}
        newest = {(r["station_id"], r["exercise"]): r["ts"] for r in await conn.fetch(
            """SELECT r.station_id, r.exercise, max(r.ts) AS ts FROM readings r
               JOIN stations s ON s.id = r.station_id AND s.exercise = r.exercise GROUP BY 1, 2""")}
        await RulesWorker.from_settings(settings, pool).check_silent(conn)
        silent = await _worker_alerts(conn)
        expected = await _oracle(conn, 3.0)
    assert filled == {**newest, ("recent", False): newer}
    assert silent == expected and ("rain-recent", False) not in silent and ("telemetry-only", False) not in silent
