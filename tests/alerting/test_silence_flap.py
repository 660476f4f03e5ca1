"""A silent real station flapped to exercise and back within the grace keeps its silent alert and its clock
(found by a new user: DT-G01, real since 16:52:59 and never sending a real reading, raised ``silent`` alert 5 at
16:56:18; ``PATCH {"exercise": true}`` then, 2 s later, ``{"exercise": false}`` cleared alert 5 at 16:56:50 with
reason "data again" though no data had come, ``/api/v1/sensors/health`` showed no problem, and a new silent alert
9 came at 16:59:50: the silence clock restarted at the switch back).

The rule (:func:`alerting.rules.stream_start`): a switch back within ``alerting.exercise_grace_s`` after a short
excursion begins no new stream, so the same alert goes on, with its acknowledgement and nothing sent, as a real
river alert does; an excursion of the grace or longer ends it with a reason saying the switch did, never "data
again" without a reading."""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from alerting import store
from alerting.rules import stream_start
from alerting.texts import DATA_AGAIN, ENDED_EXERCISE
from alerting.worker import RulesWorker
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.alerting.silence_support import console_silent
from tests.api_support import signed_in

TOWN = "072036"
DT_G01 = Station(id="DT-G01", name="DT-G01", municipality_code=TOWN, expected_interval_s=60)


async def _silent_real(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT id, version, cleared_at, reason, acknowledged_by FROM alerts "
                            "WHERE condition = 'silent' AND station_id = 'DT-G01' AND NOT exercise ORDER BY id")


async def _pass(worker: RulesWorker, conn: asyncpg.Connection) -> None:
    """One pass of the leader's loop: registry followed, readings judged, silence checked."""
    await worker.follow_registry(conn)
    await worker.step(conn)
    await worker.check_silent(conn)


async def _back_date(conn: asyncpg.Connection, seconds: int) -> None:
    """Move the station's last switch ``seconds`` into the past (the trigger stamps now(): bypass it)."""
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute(
            "UPDATE stations SET exercise_since = exercise_since - make_interval(secs => $1), "
            "exercise_switches[cardinality(exercise_switches)] = exercise_since - make_interval(secs => $1)",
            seconds)


async def _silent_real_station(conn: asyncpg.Connection) -> None:
    """DT-G01: a drill station registered a day ago, real for 4 minutes (> 3 × 60 s) without a real reading."""
    await upsert_stations(conn, [replace(DT_G01, exercise=True)])
    await upsert_stations(conn, [DT_G01])
    async with conn.transaction():
        await conn.execute("SET LOCAL session_replication_role = replica")
        await conn.execute("UPDATE stations SET created_at = now() - interval '1 day'")
    await _back_date(conn, 240)


async def _raised(conn: asyncpg.Connection, settings: Settings,
                  pool: asyncpg.Pool) -> tuple[RulesWorker, asyncpg.Record]:
    """:func:`_silent_real_station`, a worker, and the real silent alert its first pass raised."""
    await _silent_real_station(conn)
    worker = RulesWorker.from_settings(settings, pool)
    await _pass(worker, conn)
    [raised] = await _silent_real(conn)
    return worker, raised


async def test_a_flap_within_the_grace_keeps_the_same_silent_alert(pool: asyncpg.Pool, settings: Settings) -> None:
    async with pool.acquire() as conn:
        worker, raised = await _raised(conn, settings, pool)
        tokens = await signed_in(conn, (("staff", "staff", TOWN),), "correct horse battery")
        assert raised["cleared_at"] is None
        await store.acknowledge_alert(conn, raised["id"], user="staff")
        [raised] = await _silent_real(conn)

        # PATCH {"exercise": true}, a pass, then 2 s later {"exercise": false}, a pass
        await upsert_stations(conn, [replace(DT_G01, exercise=True)])
        await _pass(worker, conn)
        await _back_date(conn, 2)
        await upsert_stations(conn, [DT_G01])
        await _pass(worker, conn)
        assert await _silent_real(conn) == [raised]  # the same alert, same version, acknowledged, open
    assert await console_silent(settings, pool, tokens["staff"]) == {("DT-G01", False)}


async def test_an_excursion_beyond_the_grace_ends_it_with_a_switch_reason(pool: asyncpg.Pool,
                                                                          settings: Settings) -> None:
    async with pool.acquire() as conn:
        worker, raised = await _raised(conn, settings, pool)

        await upsert_stations(conn, [replace(DT_G01, exercise=True)])
        await _pass(worker, conn)
        assert [r["cleared_at"] for r in await _silent_real(conn)] == [None]  # within the grace
        await _back_date(conn, int(worker.exercise_grace_s) + 1)
        await _pass(worker, conn)
        [ended] = await _silent_real(conn)
        assert (ended["id"], ended["reason"]) == (raised["id"], ENDED_EXERCISE)
        assert ended["cleared_at"] is not None

        # real again after it: a stream afresh, not silent at once, and nothing said "data again"
        await upsert_stations(conn, [DT_G01])
        await _pass(worker, conn)
        assert [r["id"] for r in await _silent_real(conn)] == [raised["id"]]
        reasons = await conn.fetch("SELECT e.reason FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
                                   "WHERE a.condition = 'silent' AND e.reason IS NOT NULL")
        assert DATA_AGAIN not in {r["reason"] for r in reasons}


async def test_a_long_excursion_unseen_by_the_worker_ends_it_with_the_switch(pool: asyncpg.Pool,
                                                                             settings: Settings) -> None:
    """Switched to exercise and back after the grace without a pass in between: the stream began afresh at
    the switch back, so the alert ends, saying so, not "data again"."""
    async with pool.acquire() as conn:
        worker, raised = await _raised(conn, settings, pool)
        await upsert_stations(conn, [replace(DT_G01, exercise=True)])
        await _back_date(conn, int(worker.exercise_grace_s) + 1)
        await upsert_stations(conn, [DT_G01])
        await _pass(worker, conn)
        [ended] = await _silent_real(conn)
    assert ended["id"] == raised["id"] and ended["cleared_at"] is not None
    assert ended["reason"].startswith("station registered as a real station at "), ended["reason"]


def test_the_stream_start_walks_back_over_flaps_shorter_than_the_grace() -> None:
    g = 600.0
    assert stream_start([], grace_s=g) is None  # never switched: registration
    assert stream_start([100.0], grace_s=g) == 100.0  # a stream it never had: from the switch
    assert stream_start([100.0, 102.0], grace_s=g) is None  # real, flapped to exercise: from registration
    assert stream_start([100.0, 1000.0, 1002.0], grace_s=g) == 100.0  # DT-G01
    assert stream_start([100.0, 1000.0, 1002.0, 1500.0, 1510.0], grace_s=g) == 100.0  # two flaps
    assert stream_start([100.0, 1000.0, 1600.0], grace_s=g) == 1600.0  # exercise for the grace: afresh
