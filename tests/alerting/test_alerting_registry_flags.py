"""Switching a station between real and exercise, whatever the worker's state knows of it (found by the
registry review: a drill alert of an exercise station stayed open on the station switched to real when the
worker's rule state predated the switch — restored, lost, or written before the station became an exercise
station — since only the registry stamp in that state said the drill was the exercise registration's).

The rule (``RulesWorker.follow_registry`` step 1): a drill alert raised before the station's exercise flag last
changed (``alerts.created_at`` < ``stations.exercise_since``) on a station that is real now is of the exercise
registration, and ends (:data:`alerting.texts.ENDED_REAL`), in the municipality it was told in."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
import pytest

from alerting.rules import RIVER
from alerting.texts import ENDED_REAL
from alerting.worker import RulesWorker
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.config import Settings

GAUGE = Station(id="gauge", name="Gauge", river="厚東川", municipality_code="072036", th_standby=3.80,
                th_caution=5.00, th_evacuation=5.10, th_danger=5.50)  # m, every 600 s


async def _drill_at_level_3(conn: asyncpg.Connection, worker: RulesWorker) -> asyncpg.Record:
    await upsert_stations(conn, [replace(GAUGE, exercise=True)])
    now: datetime = await conn.fetchval("SELECT now()")
    await write_batch(conn, [Reading("gauge", "level", now - timedelta(minutes=30 - 10 * i), v, exercise=True)
                             for i, v in enumerate([5.20, 5.22, 5.25])])
    await worker.step(conn)
    drill = await conn.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND exercise AND condition = $1 "
                                "AND cleared_at IS NULL", RIVER)
    assert drill is not None and drill["level"] == 3
    return drill


@pytest.mark.parametrize("state", ["lost", "stamped before the switch to exercise", "without a stamp"])
async def test_a_drill_alert_ends_on_a_station_real_again_whatever_the_worker_state_knows(
        pool: asyncpg.Pool, settings: Settings, state: str) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        drill = await _drill_at_level_3(conn, worker)
        await upsert_stations(conn, [GAUGE])  # real again; the worker is restarted from a state of before
        if state == "lost":
            await conn.execute("DELETE FROM rule_state WHERE station_id = 'gauge'")
        else:
            stored = json.loads(await conn.fetchval(
                "SELECT state FROM rule_state WHERE station_id = 'gauge' AND exercise"))
            if state == "without a stamp":
                stored.pop("registry")
            else:
                stored["registry"]["exercise"] = False
            await conn.execute("UPDATE rule_state SET state = $1::jsonb WHERE station_id = 'gauge' AND exercise",
                               json.dumps(stored))
        await RulesWorker.from_settings(settings, pool).follow_registry(conn)
        ended = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", drill["id"])
        events = [r["kind"] for r in await conn.fetch(
            "SELECT kind FROM alert_events WHERE alert_id = $1 ORDER BY id", drill["id"])]
    assert (ended["state"], ended["reason"], ended["municipality_code"]) == ("cleared", ENDED_REAL, "072036")
    assert events[-1] == "cleared"


async def test_a_drill_on_the_real_gauge_is_not_ended(pool: asyncpg.Pool, settings: Settings) -> None:
    """A drill raised on the gauge after it became real is a drill on the real gauge: it stays."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [replace(GAUGE, exercise=True)])
        await upsert_stations(conn, [GAUGE])
        await worker.follow_registry(conn)
        now: datetime = await conn.fetchval("SELECT now()")
        await write_batch(conn, [Reading("gauge", "level", now - timedelta(minutes=30 - 10 * i), v, exercise=True)
                                 for i, v in enumerate([5.20, 5.22, 5.25])])
        await worker.step(conn)
        await conn.execute("DELETE FROM rule_state WHERE station_id = 'gauge'")
        await worker.follow_registry(conn)
        drill = await conn.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND exercise AND condition = $1",
                                    RIVER)
    assert drill is not None and drill["cleared_at"] is None


async def _real_at_level_3(conn: asyncpg.Connection, worker: RulesWorker) -> asyncpg.Record:
    await upsert_stations(conn, [GAUGE])
    now: datetime = await conn.fetchval("SELECT now()")
    await write_batch(conn, [Reading("gauge", "level", now - timedelta(minutes=30 - 10 * i), v)
                             for i, v in enumerate([5.20, 5.22, 5.25])])
    await worker.step(conn)
    real = await conn.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND NOT exercise AND condition = $1 "
                               "AND cleared_at IS NULL", RIVER)
    assert real is not None and real["level"] == 3
    await conn.execute("UPDATE alerts SET acknowledged_at = now(), acknowledged_by = 'duty officer' WHERE id = $1",
                       real["id"])
    return real


async def test_flapping_between_exercise_and_real_keeps_the_real_alert(pool: asyncpg.Pool,
                                                                      settings: Settings) -> None:
    """Switched to exercise and back three times within the grace: the real alert is the same alert throughout,
    acknowledged, never cancelled nor raised again (found: each switch ended it and the next raised a new one,
    with a new id and no acknowledgement, and residents were sent a withdrawal of a flood still there)."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        real = await _real_at_level_3(conn, worker)
        for _ in range(3):
            await upsert_stations(conn, [replace(GAUGE, exercise=True)])
            await worker.follow_registry(conn)
            await upsert_stations(conn, [GAUGE])
            await worker.follow_registry(conn)
        after = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", real["id"])
        alerts = await conn.fetchval("SELECT count(*) FROM alerts WHERE station_id = 'gauge' AND NOT exercise")
        events = [r["kind"] for r in await conn.fetch(
            "SELECT kind FROM alert_events WHERE alert_id = $1 ORDER BY id", real["id"])]
        # and the stream goes on judging: a reading over 氾濫危険水位 escalates the same alert
        now: datetime = await conn.fetchval("SELECT now()")
        await write_batch(conn, [Reading("gauge", "level", now - timedelta(seconds=30), 5.55)])
        await worker.step(conn)
        escalated = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", real["id"])
    assert (after["state"], after["version"], after["acknowledged_by"]) == ("raised", real["version"], "duty officer")
    assert (alerts, events) == (1, ["raised"])
    assert (escalated["level"], escalated["cleared_at"]) == (4, None)


async def test_a_real_alert_ends_once_the_grace_after_a_switch_to_exercise_has_passed(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """Within the grace it stays open; a worker whose grace has passed (here: a grace of 0 s) ends it."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        real = await _real_at_level_3(conn, worker)
        await upsert_stations(conn, [replace(GAUGE, exercise=True)])
        await worker.follow_registry(conn)
        held = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", real["id"])
        await RulesWorker.from_settings(settings, pool, exercise_grace_s=0).follow_registry(conn)
        ended = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", real["id"])
    assert held["cleared_at"] is None
    assert ended["state"] == "cleared"
