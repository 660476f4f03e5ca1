"""Fleet → real broker → real Ingestor → PostgreSQL: faults show up where they should."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncpg

from alerting.worker import RulesWorker
from ingest.registry import get_station
from simulators.fleet import Fleet
from simulators.manager import SimulationManager, register_stations
from simulators.replay import JISEIJI_ID
from simulators.scenario import ReplaySpec, Scenario, load_scenario
from simulators.transport import FastPublisher
from sonae.config import Settings
from tests.ingest_support import count, running_ingestor, wait_until
from tests.simulators.support import SCENARIOS, jiseiji_file

JST = timezone(timedelta(hours=9))


def _publisher(settings: Settings) -> FastPublisher:
    return FastPublisher(settings["mqtt.url"], client_id=f"sim-{uuid.uuid4().hex[:8]}")


async def _drain(ingestor, published: int) -> None:  # type: ignore[no-untyped-def]
    async def all_in() -> bool:
        return ingestor.totals["messages"] >= published

    await wait_until(all_in, timeout=120, what=f"ingest of {published} messages")


async def test_fault_drill_effects_reach_the_database(settings: Settings, pool: asyncpg.Pool) -> None:
    scenario = load_scenario(SCENARIOS / "faults-drill.toml").with_overrides(accel=math.inf)
    fleet = Fleet(scenario, prefix=settings["mqtt.topic_prefix"])
    plan = Fleet(scenario, prefix=settings["mqtt.topic_prefix"], origin=datetime.fromtimestamp(fleet.origin_epoch, UTC))
    samples = list(plan.samples())
    await register_stations(pool, fleet.stations)
    async with running_ingestor(settings, pool) as ingestor:
        async with _publisher(settings) as pub:
            stats = await fleet.run(pub)
        await _drain(ingestor, stats.published)
        totals = dict(ingestor.totals)
    expected = stats.expected
    assert stats.state == "finished" and stats.published > len(samples)
    # every kind of fault was injected
    assert set(stats.injected) == {"dropout", "stuck", "spike", "duplicate", "out_of_order", "late", "clock_skew",
                                   "malformed", "flood"}
    rows = await count(pool, "SELECT count(*) FROM readings")
    assert rows == len(samples) - expected["missing_rows"]
    assert await count(pool, "SELECT count(*) FROM readings WHERE NOT exercise") == 0
    assert totals["dead_letters"] == expected["dead_letters"] == await count(
        pool, "SELECT coalesce(sum(deliveries), 0) FROM dead_letters")  # a copy of a malformed message is a delivery
    assert totals["duplicates"] == expected["duplicate_rows"]
    assert totals["quarantined"] == 0
    async with pool.acquire() as conn:
        reasons = {r["reason"] for r in await conn.fetch("SELECT DISTINCT reason FROM dead_letters")}
        origin = datetime.fromtimestamp(fleet.origin_epoch, UTC)
        # dropout: the gauge is silent from 4 h 30 min to the end of the run
        silent = await conn.fetchval(
            "SELECT count(*) FROM readings WHERE station_id = 'sim-f-dropout' AND ts >= $1",
            origin + timedelta(hours=4, minutes=30))
        around = await conn.fetchval("SELECT count(*) FROM readings WHERE station_id = 'sim-f-dropout'")
        stuck = await conn.fetch(
            "SELECT DISTINCT value FROM readings WHERE station_id = 'sim-f-stuck' AND ts >= $1 AND ts < $2",
            origin + timedelta(hours=1), origin + timedelta(hours=2))
        moving = await conn.fetchval(
            "SELECT count(DISTINCT value) FROM readings WHERE station_id = 'sim-f-stuck' AND ts >= $1",
            origin + timedelta(hours=2))
        skewed = await conn.fetchval(
            "SELECT count(*) FROM readings WHERE station_id = 'sim-f-skew' AND ts >= $1 AND ts < $2",
            origin + timedelta(hours=3), origin + timedelta(hours=4))
        late_order = await conn.fetchval(
            "SELECT count(*) FROM readings WHERE station_id IN ('sim-f-late', 'sim-f-order')")
    assert reasons >= {"bad_json", "bad_shape", "bad_value", "bad_unit", "not_utf8", "bad_topic", "future_timestamp"}
    assert silent == 0 and around > 0
    assert len(stuck) == 1 and moving > 3
    assert skewed == 0  # their readings were a day in the future: dead letters, not rows
    per_station = len(samples) // len(fleet.stations)
    assert late_order == 2 * per_station  # late and out-of-order readings all stored, none lost
    # the silent-gauge alert the drill promises: the rules worker reads what ingest stored, and its silent
    # check (the wall clock, as for a real gauge) finds the dropout gauge's newest reading 90 min old
    worker = RulesWorker(pool)
    async with pool.acquire() as conn:
        await worker.step(conn)
        await worker.check_silent(conn)
        alerts = await conn.fetch("SELECT station_id, exercise, level, cleared_at FROM alerts WHERE condition = 'silent'")
    assert [(a["station_id"], a["exercise"], a["cleared_at"]) for a in alerts] == [("sim-f-dropout", True, None)]


async def test_jiseiji_replay_crosses_thresholds_in_order_as_an_exercise(settings: Settings,
                                                                       pool: asyncpg.Pool) -> None:
    start, end = datetime(2023, 6, 30, 18, 0, tzinfo=JST), datetime(2023, 7, 1, 6, 0, tzinfo=JST)
    accel = 12 * 3600 / 2.0  # 12 hours of river in 2 seconds
    scenario = Scenario(name="jiseiji", accel=accel, replay=ReplaySpec("jiseiji", jiseiji_file(), start, end))
    fleet = Fleet(scenario, prefix=settings["mqtt.topic_prefix"])
    await register_stations(pool, fleet.stations)
    loop = asyncio.get_running_loop()
    async with running_ingestor(settings, pool) as ingestor:
        began = loop.time()
        async with _publisher(settings) as pub:
            stats = await fleet.run(pub)
        took = loop.time() - began
        await _drain(ingestor, stats.published)
    assert took >= 2.0 * 0.95  # paced by the acceleration, not as fast as possible
    assert stats.published == 73
    async with pool.acquire() as conn:
        station = await get_station(conn, JISEIJI_ID)
        rows = await conn.fetch("SELECT ts, value, exercise, received_at FROM readings "
                                "WHERE station_id = $1 ORDER BY ts", JISEIJI_ID)
    assert station is not None and station.exercise
    assert len(rows) == 73 and all(r["exercise"] for r in rows)
    assert all(r["ts"] <= r["received_at"] + timedelta(seconds=1) for r in rows)  # never from the future
    assert max(r["value"] for r in rows) == 7.47
    order = []
    for name in ("th_standby", "th_caution", "th_evacuation", "th_danger"):
        level = getattr(station, name)
        order.append((next(r["ts"] for r in rows if r["value"] >= level), name))
    assert [n for _, n in sorted(order)] == ["th_standby", "th_caution", "th_evacuation", "th_danger"]
    assert len({t for t, _ in order}) == 4
    # 10-minute spacing of the original is kept
    assert {b["ts"] - a["ts"] for a, b in zip(rows, rows[1:], strict=False)} == {timedelta(minutes=10)}


async def test_exercise_and_real_runs_are_kept_apart(settings: Settings, pool: asyncpg.Pool) -> None:
    base = load_scenario(SCENARIOS / "abukuma-flood.toml").with_overrides(accel=math.inf, duration_s=6 * 3600.0)
    origin = datetime.now(UTC) - timedelta(hours=7)
    drill = Fleet(base, prefix=settings["mqtt.topic_prefix"], origin=origin)
    real = Fleet(base.with_overrides(exercise=False), prefix=settings["mqtt.topic_prefix"], origin=origin)
    await register_stations(pool, drill.stations)
    async with running_ingestor(settings, pool) as ingestor:
        async with _publisher(settings) as pub:
            a = await drill.run(pub)
            b = await real.run(pub)
        await _drain(ingestor, a.published + b.published)
    async with pool.acquire() as conn:
        by_flag = dict(await conn.fetch("SELECT exercise, count(*) FROM readings GROUP BY exercise"))
    # same stations, same times, same values: the exercise flag keeps the two apart, row for row
    assert by_flag[True] == by_flag[False] > 0


async def test_manager_start_status_stop(settings: Settings, pool: asyncpg.Pool) -> None:
    manager = SimulationManager.from_settings(settings, pool)
    assert manager.status()["state"] == "idle"
    status = await manager.start(SCENARIOS / "abukuma-flood.toml", accel=3600.0)
    assert status["state"] == "running" and status["exercise"] is True and status["devices"] == 6
    try:
        await manager.start(SCENARIOS / "abukuma-flood.toml")
    except RuntimeError as exc:
        assert "running" in str(exc)
    else:
        raise AssertionError("a second run was allowed")

    async def some_published() -> bool:
        return manager.status()["published"] > 20

    await wait_until(some_published, timeout=120, what="messages published")
    final = await manager.stop()
    assert final["state"] == "stopped" and 20 < final["published"] < 1798
    assert await count(pool, "SELECT count(*) FROM stations WHERE exercise") == 6


async def test_concurrent_starts_make_one_run_that_stop_ends(settings: Settings, pool: asyncpg.Pool) -> None:
    """Two starts at once (two operators pressing start together): one run, one SimulationBusy. Found: both
    passed the busy check while the first registered its stations, the second's task replaced the first's,
    and the first run went on publishing out of reach of stop()."""
    manager = SimulationManager.from_settings(settings, pool)
    results = await asyncio.gather(*(manager.start(SCENARIOS / "abukuma-flood.toml", accel=3600.0)
                                     for _ in range(3)), return_exceptions=True)
    started = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(started) == 1, results
    assert len(refused) == 2 and all(type(r).__name__ == "SimulationBusy" for r in refused), refused
    tasks_before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    final = await manager.stop()
    assert final["state"] == "stopped" and final["run"] == started[0]["run"]
    # no run task is left going once the one run is stopped
    runs_left = [t for t in tasks_before if not t.done() and "body" in repr(t.get_coro())]
    assert not runs_left, runs_left


def test_cli_simulate_runs_a_scenario(settings: Settings, tmp_path: Path) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": settings["database.url"], "SONAE_MQTT_URL": settings["mqtt.url"],
           "SONAE_MQTT_TOPIC_PREFIX": settings["mqtt.topic_prefix"], "SONAE_STATE_DIR": str(tmp_path / "state")}
    cmd = [sys.executable, "-m", "app.cli", "simulate", "--scenario", str(SCENARIOS / "faults-drill.toml"),
           "--accel", "max", "--no-progress", "--register-stations"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "simulation 'faults-drill' finished" in done.stdout
    assert "published 420 messages" in done.stdout and "dead letters 18" in done.stdout
    assert "registered 9 of 9" in done.stderr and "dropout" not in done.stderr  # its alert is due
    bad = subprocess.run([*cmd[:4], "--replay", "nope"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--replay" in bad.stderr
    assert not (tmp_path / "state" / "postgres").exists()
