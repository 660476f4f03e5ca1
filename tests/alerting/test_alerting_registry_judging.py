"""Judging a stream again after a registry change (found breaking the station edit: a gauge switched back
from exercise to real showed no level until its next real reading; re-judging after new thresholds replayed
the readings table, so a spike the rules had rejected as staff-only became a public level 4; a drill reading
of the exercise registration judged after the switch to real raised a drill alert on the real gauge that
nothing ended; a gauge registered as another kind kept its river-level alert).

The rule (``alerting.worker.RulesWorker._judge_again``): a stream is judged again only from readings that
were eligible to be judged when they arrived (those its rules accepted, and the suspect awaiting
confirmation) — a changed ladder whatever their age (a silent gauge's held level is the judgement of those
stages), a stream resumed after a drill only while the newest is fresh by the silent-gauge rule; a reading is
judged only under the registration it arrived under (``stations.exercise_since``)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
import pytest
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_cap
from alerting.cap_identity import CapProfile
from alerting.rules import RIVER, UNCONFIRMED
from alerting.texts import REJUDGED, RESUMED
from alerting.worker import RulesWorker
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.config import Settings

GAUGE = Station(id="gauge", name="Gauge", river="厚東川", municipality_code="072036", th_standby=3.80,
                th_caution=5.00, th_evacuation=5.10, th_danger=5.50)  # m, every 600 s: fresh for 30 min (×3)


async def _write(conn: asyncpg.Connection, points: list[tuple[datetime, float]], *, exercise: bool = False) -> None:
    await write_batch(conn, [Reading("gauge", "level", ts, v, exercise=exercise) for ts, v in points])


async def _open(conn: asyncpg.Connection, *, exercise: bool = False, condition: str = RIVER) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND condition = $1 AND exercise = $2 "
                               "AND cleared_at IS NULL", condition, exercise)


async def _rising_to_level_3(conn: asyncpg.Connection, worker: RulesWorker, *, minutes_ago: int = 30) -> None:
    """The gauge registered and three rising real readings over 避難判断水位 judged: 10 minutes apart, the
    first ``minutes_ago`` minutes old (level 3 while they are fresh)."""
    await upsert_stations(conn, [GAUGE])
    now: datetime = await conn.fetchval("SELECT now()")
    await _write(conn, [(now - timedelta(minutes=minutes_ago - 10 * i), v) for i, v in enumerate([5.20, 5.22, 5.25])])
    await worker.step(conn)


async def _switch(conn: asyncpg.Connection, worker: RulesWorker, station: Station) -> None:
    await upsert_stations(conn, [station])
    await worker.follow_registry(conn)


async def test_a_gauge_real_again_is_judged_from_its_fresh_real_readings(pool: asyncpg.Pool,
                                                                       settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool, exercise_grace_s=0)
    async with pool.acquire() as conn:
        await _rising_to_level_3(conn, worker)
        assert (await _open(conn))["level"] == 3
        await _switch(conn, worker, replace(GAUGE, exercise=True))  # for longer than the grace: the real alert ends
        assert await _open(conn) is None
        await _switch(conn, worker, GAUGE)  # real again: the river is as high as 10 minutes ago
        again = await _open(conn)
    assert again is not None, "no level until the next real reading"
    assert (again["level"], again["reason"], again["value"], again["audience"]) == (3, "threshold", 5.25, "public")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT note FROM alert_events WHERE alert_id = $1", again["id"]) == RESUMED


async def test_readings_of_another_registration_are_never_judged(pool: asyncpg.Pool, settings: Settings) -> None:
    """Real readings that arrived while the station was an exercise station were drills; drill readings of
    the exercise registration judged after the switch to real are not a drill on the real gauge."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        await _write(conn, [(now - timedelta(minutes=25 - 5 * i), 3.0) for i in range(3)])
        await worker.step(conn)
        await _switch(conn, worker, replace(GAUGE, exercise=True))
        high = [(now - timedelta(minutes=9 - 3 * i), v) for i, v in enumerate([5.20, 5.22, 5.25])]
        await _write(conn, high)  # real-marked drill readings on the exercise station ...
        await _write(conn, high, exercise=True)  # ... and the drill's own, neither judged before the switch
        await _switch(conn, worker, GAUGE)
        await worker.step(conn)
        real, drill = await _open(conn), await _open(conn, exercise=True)
    assert (real, drill) == (None, None), (real and dict(real), drill and dict(drill))


async def test_new_thresholds_never_publish_a_rejected_spike(pool: asyncpg.Pool, settings: Settings) -> None:
    """A 5.6 m spike 6 minutes after 3.0 m was an unconfirmed, staff-only alert, withdrawn by the next
    reading; replayed from the stored readings after new thresholds it was the first reading of the replay,
    accepted as the river, and level 4 went to residents."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        last = now - timedelta(minutes=5)
        start = last - timedelta(hours=3)
        await _write(conn, [(start - timedelta(minutes=5), 3.0), (start + timedelta(minutes=1), 5.6),
                            (start + timedelta(minutes=11), 3.05), (last, 3.0)])
        await worker.step(conn)
        unconfirmed = await conn.fetchval("SELECT count(*) FROM alerts WHERE station_id = 'gauge' AND condition = $1",
                                          UNCONFIRMED)
        assert unconfirmed == 1 and await _open(conn, condition=UNCONFIRMED) is None and await _open(conn) is None
        await _switch(conn, worker, replace(GAUGE, th_danger=5.45))
        river = await conn.fetch("SELECT * FROM alerts WHERE station_id = 'gauge' AND condition = $1", RIVER)
    assert river == [], [dict(r) for r in river]


async def test_new_thresholds_of_a_silent_gauge_judge_its_old_stages_again(pool: asyncpg.Pool,
                                                                           settings: Settings) -> None:
    """Its last reading is older than the silent-gauge rule allows: the level it holds is the judgement of that
    stage (5.25 m), judged again under the new ladder (避難判断水位 5.30 m: level 2, withdrawn by the edit). It
    used to stay level 3 of the old ladder, and the stream was stamped with the new one unjudged, so the next
    reading left it too (tests/alerting/test_silent_gauge_rejudged.py)."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await _rising_to_level_3(conn, worker, minutes_ago=80)
        before = await _open(conn)
        await _switch(conn, worker, replace(GAUGE, th_evacuation=5.30))
        after = await _open(conn)
    assert (after["id"], after["level"], after["threshold"], after["reason"]) == (before["id"], 2, 5.00, REJUDGED)


async def test_a_station_registered_as_another_kind_ends_its_river_level(pool: asyncpg.Pool,
                                                                       settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await _rising_to_level_3(conn, worker)
        alert = await _open(conn)
        await _switch(conn, worker, replace(GAUGE, kind="rainfall"))
        ended = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", alert["id"])
    assert (ended["state"], ended["reason"]) == ("cleared", REJUDGED)


@pytest.mark.parametrize("grace_s", [0.0, 600.0])
async def test_real_readings_that_arrived_before_a_switch_to_exercise_are_judged_as_real(
        pool: asyncpg.Pool, settings: Settings, grace_s: float) -> None:
    """Three rising real readings arrive while the station is real; the station is switched to exercise before
    the worker judges them. Seen in that order they were skipped (an exercise station's real readings are drills),
    so the real alert was never raised and switching back to real had nothing to resume from. Judged, the alert
    ends with the switch once the grace has passed (0 s here), and within it goes on when the station is real
    again."""
    worker = RulesWorker.from_settings(settings, pool, exercise_grace_s=grace_s)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        await _write(conn, [(now - timedelta(minutes=30 - 10 * i), v) for i, v in enumerate([5.20, 5.22, 5.25])])
        await upsert_stations(conn, [replace(GAUGE, exercise=True)])  # before the worker's pass
        await worker.step(conn)
        raised = await conn.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND condition = $1 "
                                     "AND NOT exercise", RIVER)
        await worker.follow_registry(conn)
        ended = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", raised["id"]) if raised else None
        await _switch(conn, worker, GAUGE)
        again = await _open(conn)
    assert raised is not None and raised["level"] == 3, "the real readings were not judged"
    if grace_s:
        assert ended["state"] == "raised" and again is not None and again["id"] == raised["id"]
    else:
        assert ended["state"] == "cleared"
        assert again is not None and (again["level"], again["reason"]) == (3, "threshold")  # note RESUMED


async def test_real_readings_judged_after_the_stream_was_parked_count_as_real(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """The same, with the switch followed (the real stream parked) before the pass that reads the readings:
    they are judged as real all the same (raised, and ended as the switch ends the real alerts), and a switch
    back to real resumes from them. (A stream is parked only once the grace after the switch has passed.)"""
    worker = RulesWorker.from_settings(settings, pool, exercise_grace_s=0)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        await _write(conn, [(now - timedelta(minutes=40), 3.0)])
        await worker.step(conn)
        await _write(conn, [(now - timedelta(minutes=30 - 10 * i), v) for i, v in enumerate([5.20, 5.22, 5.25])])
        await _switch(conn, worker, replace(GAUGE, exercise=True))  # parked before the readings are read
        await worker.step(conn)
        told = await conn.fetch("SELECT state, level, reason FROM alerts WHERE station_id = 'gauge' AND NOT exercise "
                                "AND condition = $1", RIVER)
        await _switch(conn, worker, GAUGE)
        again = await _open(conn)
    assert [(r["level"], r["state"]) for r in told] == [(3, "cleared")], [dict(r) for r in told]
    assert again is not None and (again["level"], again["reason"], again["value"]) == (3, "threshold", 5.25)


async def test_new_thresholds_that_keep_a_level_by_another_rule_update_its_wording_and_threshold(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """F4: a level 3 reached at 避難判断水位 5.40 m, kept by the trend rule once 避難判断 is 6.10 m (never reached):
    the alert says so (forecast, with the 氾濫危険水位 6.20 m it is forecast to reach), as a CAP Update."""
    worker = RulesWorker.from_settings(settings, pool)
    bk = Station(id="gauge", name="BK-E", river="厚東川", municipality_code="072036", th_standby=3.0,
                 th_caution=4.5, th_evacuation=5.4, th_danger=6.4)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [bk])
        now: datetime = await conn.fetchval("SELECT now()")
        # 0.8 m/h: 6.40 m not forecast within the hour, 6.20 m is
        await _write(conn, [(now - timedelta(minutes=40 - 10 * i), v)
                            for i, v in enumerate([4.97, 5.10, 5.23, 5.37, 5.50])])
        await worker.step(conn)
        before = await _open(conn)
        assert (before["level"], before["reason"], before["threshold"]) == (3, "threshold", 5.4)
        await _switch(conn, worker, replace(bk, th_caution=6.0, th_evacuation=6.1, th_danger=6.2))
        after = await _open(conn)
        assert after["id"] == before["id"] and after["level"] == 3
        assert (after["reason"], after["threshold"], after["version"]) == ("trend", 6.2, before["version"] + 1)
        alert = await store.get_alert(conn, after["id"])
        assert alert is not None
        cap = etree.fromstring(render_cap(alert, await store.messages_of(conn, alert["id"]),
                                          profile=CapProfile("judging-test", "sonae@sonae.test")))
    assert cap.findtext(f"{{{CAP_NS}}}msgType") == "Update"
    infos = {i.findtext(f"{{{CAP_NS}}}language"): i for i in cap.iter(f"{{{CAP_NS}}}info")}
    assert "見込み" in (infos["ja-JP"].findtext(f"{{{CAP_NS}}}headline") or "")
    assert "避難判断水位に達しました" not in (infos["ja-JP"].findtext(f"{{{CAP_NS}}}headline") or "")
    assert "forecast" in (infos["en-US"].findtext(f"{{{CAP_NS}}}headline") or "")
    for info in infos.values():
        assert "6.20" in (info.findtext(f"{{{CAP_NS}}}description") or "")
        assert "5.40" not in (info.findtext(f"{{{CAP_NS}}}description") or "")
