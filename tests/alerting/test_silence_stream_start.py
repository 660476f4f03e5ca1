"""A station's stream is watched for silence from when it began, not from registration (found by a new user:
drill station DT-G01, registered at 16:10:55 and sending drill readings every 2 s, was switched to real at
16:16:24 and 3 s later raised a staff ``silent`` alert "no data since registration at 16:10:55", sent to
webhooks, cleared 30 s later; alerting.silence counted a stream that never reported from ``created_at``).

The rule (:func:`alerting.rules.is_silent`, :func:`alerting.silence.station_silence`): a stream without data
since it began is silent ``factor`` × ``expected_interval_s`` after the later of registration and the last
change of the exercise flag (``stations.exercise_since``), both ways; the worker and the console agree."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
import pytest

from alerting.worker import RulesWorker
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.config import Settings
from tests.alerting.silence_support import console_silent
from tests.api_support import signed_in

TOWN = "072036"
DT_G01 = Station(id="DT-G01", name="DT-G01", municipality_code=TOWN, expected_interval_s=2)


async def _silent(conn: asyncpg.Connection) -> list[tuple[str, bool, str]]:
    return [(r["station_id"], r["exercise"], r["reason"]) for r in await conn.fetch(
        "SELECT station_id, exercise, reason FROM alerts WHERE condition = 'silent' AND cleared_at IS NULL")]


@pytest.mark.parametrize("was_exercise", [True, False], ids=["drill to real", "real to drill"])
async def test_a_switched_station_is_watched_from_the_switch(pool: asyncpg.Pool, settings: Settings,
                                                             was_exercise: bool) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [replace(DT_G01, exercise=was_exercise)])
        await conn.execute("UPDATE stations SET created_at = now() - interval '6 minutes'")
        now: datetime = await conn.fetchval("SELECT now()")
        await write_batch(conn, [Reading("DT-G01", "level", now - timedelta(seconds=2 * i), 1.0 + i / 100,
                                         exercise=was_exercise) for i in range(10)])
        tokens = await signed_in(conn, (("staff", "staff", TOWN),), "correct horse battery")
        worker = RulesWorker.from_settings(settings, pool)
        await worker.step(conn)
        await worker.check_silent(conn)
        assert await _silent(conn) == []

        # the switch: the new stream has no data yet, and was registered 6 min ago
        await upsert_stations(conn, [replace(DT_G01, exercise=not was_exercise)])
        await worker.step(conn)
        await worker.check_silent(conn)
        assert await _silent(conn) == []
    assert await console_silent(settings, pool, tokens["staff"]) == set()


async def test_a_stream_without_data_since_the_switch_is_silent_with_its_reason(pool: asyncpg.Pool,
                                                                                settings: Settings) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [replace(DT_G01, exercise=True)])
        await upsert_stations(conn, [DT_G01])
        # registered a day ago, switched to real 10 s ago (> 3 × 2 s): the trigger stamps now(), so bypass it
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("UPDATE stations SET created_at = now() - interval '1 day', "
                               "exercise_since = now() - interval '10 seconds', "
                               "exercise_switches = ARRAY[now() - interval '1 hour', now() - interval '10 seconds']")
        worker = RulesWorker.from_settings(settings, pool)
        await worker.step(conn)
        await worker.check_silent(conn)
        [(station, exercise, reason)] = await _silent(conn)
    assert (station, exercise) == ("DT-G01", False)
    assert reason.startswith("no data since it became a real station at "), reason
