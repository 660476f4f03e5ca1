"""Registry changes that end a stream or change its ladder (found by the last session's review: a gauge
switched to an exercise station kept its real alert open for ever when its real readings stopped above the
line — no reading could clear it, and residents kept being told of a flood; an exercise station switched to
a real one kept its drill alerts; a station deleted and registered again under its id, or a stream that
came back, inherited the old level in its rule state and never raised again; changed thresholds left a
report-by-exception gauge at the level of the old ones).

Expected: whatever makes a (station, exercise) stream stop existing — the exercise flag switched either
way, the station deleted — clears its open alerts through the clear path (new version, CAP ``Cancel``,
event ``cleared``, audit, notification fan-out) with a reason saying why, and the stream starts afresh if
it exists again; changed thresholds re-judge the level at once. An exercise station's real readings raise
nothing. Which municipality a change is recorded in: where the station is registered when the worker
applies it; cleared alerts stay where they were told (``RulesWorker.follow_registry``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_cap
from alerting.cap_identity import CapProfile
from alerting.rules import RIVER
from alerting.texts import ENDED_EXERCISE, ENDED_REAL, REJUDGED, REMOVED
from alerting.worker import RulesWorker
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from notify import store as notify_store
from sonae.config import Settings
from tests.alerting.support import running_worker
from tests.ingest_support import wait_until

OLD, NEW = "072036", "072044"  # two municipalities of the same prefecture
HIGH = [5.20, 5.22, 5.25]  # m every 10 min: at or above 避難判断水位 5.10 (警戒レベル3), plausible
LOW = [4.40, 4.00, 3.80, 3.70]  # m every 10 min after HIGH: plausible falls below 氾濫注意水位 − 0.1 m for 30 min
GAUGE = Station(id="gauge", name="Gauge", river="厚東川", municipality_code=OLD, th_standby=3.80,
                th_caution=5.00, th_evacuation=5.10, th_danger=5.50)  # a flood-forecast gauge, m


async def _readings(conn: asyncpg.Connection, station: str, values: list[float], *, start: datetime,
                    exercise: bool = False) -> None:
    await write_batch(conn, [Reading(station, "level", start + timedelta(minutes=10 * i), v, exercise=exercise)
                             for i, v in enumerate(values)])


async def _river(conn: asyncpg.Connection, station: str = "gauge") -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM alerts WHERE station_id = $1 AND condition = $2 ORDER BY id",
                                 station, RIVER))


def _open(alerts: list[asyncpg.Record]) -> dict[bool, asyncpg.Record]:
    return {a["exercise"]: a for a in alerts if a["cleared_at"] is None}


async def test_a_gauge_switched_to_exercise_ends_its_real_alerts_and_starts_afresh_when_real_again(
        pool: asyncpg.Pool, settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool, exercise_grace_s=0)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        hook = await notify_store.add_webhook(conn, url="https://hooks.invalid/old", created_by="t",
                                              municipality_code=OLD)
        # real readings stop above the line; a drill on the same gauge raises its exercise alert
        await _readings(conn, "gauge", HIGH, start=now - timedelta(hours=2))
        await _readings(conn, "gauge", HIGH, start=now - timedelta(hours=2), exercise=True)
        await worker.step(conn)
        before = _open(await _river(conn))
        assert set(before) == {False, True} and before[False]["level"] == 3 and before[False]["audience"] == "public"
        await notify_store.fan_out(conn, base_url="https://sonae.test")
        queued = await conn.fetchval("SELECT count(*) FROM notify_queue WHERE target_id = $1", hook["id"])

        await upsert_stations(conn, [replace(GAUGE, exercise=True)])
        assert await worker.follow_registry(conn) == 1
        assert await worker.follow_registry(conn) == 0  # once
        await worker.check_silent(conn)
        await worker.tick(conn)
        real = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", before[False]["id"])
        events = await conn.fetch("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id", real["id"])
        audit = await conn.fetch("SELECT * FROM audit_log WHERE object_type = 'alert' AND object_id = $1 "
                                 "AND action = 'alert.cleared'", str(real["id"]))
        alert = await store.get_alert(conn, real["id"])
        assert alert is not None
        cap = etree.fromstring(render_cap(alert, await store.messages_of(conn, real["id"]),
                                          profile=CapProfile("t", "bousai@{municipality}.example")))
        await notify_store.fan_out(conn, base_url="https://sonae.test")
        queued_after = await conn.fetchval("SELECT count(*) FROM notify_queue WHERE target_id = $1", hook["id"])
        assert (real["state"], real["reason"], real["version"], real["municipality_code"]) == \
               ("cleared", ENDED_EXERCISE, before[False]["version"] + 1, OLD)
        assert events[-1]["kind"] == "cleared" and events[-1]["reason"] == ENDED_EXERCISE and len(audit) == 1
        assert cap.findtext(f"{{{CAP_NS}}}msgType") == "Cancel"
        # withdrawn, never an all-clear: the river is as high as it was (a resident must not read 解除)
        infos = cap.findall(f"{{{CAP_NS}}}info")
        assert {i.findtext(f"{{{CAP_NS}}}responseType") for i in infos} == {"Monitor"}
        heads = {i.findtext(f"{{{CAP_NS}}}language"): i.findtext(f"{{{CAP_NS}}}headline") for i in infos}
        assert "取り消されました" in heads["ja-JP"] and "解除" not in heads["ja-JP"], heads
        assert "withdrawn" in heads["en-US"] and "ended" not in heads["en-US"], heads
        assert "とりけしました" in heads["ja-JP-x-easy"] and "おわりました" not in heads["ja-JP-x-easy"], heads
        sent = await conn.fetchval("SELECT payload::text FROM notify_queue WHERE target_id = $1 ORDER BY id DESC "
                                   "LIMIT 1", hook["id"])
        assert "取り消されました" in sent and "解除されました" not in sent, sent[:2000]
        assert queued_after == queued + 1  # the old municipality's webhook hears the clearing
        # the drill stream goes on: an exercise station's exercise alert stays as it was
        assert _open(await _river(conn)) == {True: await conn.fetchrow("SELECT * FROM alerts WHERE id = $1",
                                                                       before[True]["id"])}

        # real readings of an exercise station are drills: no real alert
        await _readings(conn, "gauge", HIGH, start=now - timedelta(minutes=30))
        await worker.step(conn)
        assert set(_open(await _river(conn))) == {True}

        # real again: the real stream starts afresh, so the same stage raises its level again
        await upsert_stations(conn, [GAUGE])
        await worker.follow_registry(conn)
        await _readings(conn, "gauge", [5.24, 5.25], start=now + timedelta(minutes=5))
        await worker.step(conn)
        again = _open(await _river(conn))
    assert set(again) == {False} and again[False]["level"] == 3 and again[False]["id"] != real["id"]
    drill = await pool.fetchrow("SELECT * FROM alerts WHERE id = $1", before[True]["id"])
    assert (drill["state"], drill["reason"]) == ("cleared", ENDED_REAL)


async def test_an_exercise_station_switched_to_real_ends_its_drill_alerts_but_a_real_gauges_drill_stays(
        pool: asyncpg.Pool, settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    drill_town = replace(GAUGE, id="drill", name="Drill", exercise=True)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [drill_town, GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        for station in ("drill", "gauge"):
            await _readings(conn, station, HIGH, start=now - timedelta(hours=1), exercise=True)
        await worker.step(conn)
        drill, gauge = _open(await _river(conn, "drill"))[True], _open(await _river(conn, "gauge"))[True]
        await upsert_stations(conn, [replace(drill_town, exercise=False)])
        assert await worker.follow_registry(conn) == 1
        drill_after = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", drill["id"])
        gauge_after = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", gauge["id"])
    assert (drill_after["state"], drill_after["reason"]) == ("cleared", ENDED_REAL)
    assert (gauge_after["cleared_at"], gauge_after["version"]) == (None, gauge["version"])


async def test_a_station_deleted_and_registered_again_starts_afresh(pool: asyncpg.Pool, settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        await _readings(conn, "gauge", HIGH, start=now - timedelta(hours=1))
        await worker.step(conn)
        first = _open(await _river(conn))[False]
        await conn.execute("DELETE FROM stations WHERE id = 'gauge'")
        assert await worker.follow_registry(conn) == 1
        assert (await conn.fetchrow("SELECT reason FROM alerts WHERE id = $1", first["id"]))["reason"] == REMOVED
        await upsert_stations(conn, [GAUGE])
        await worker.follow_registry(conn)
        await _readings(conn, "gauge", [5.24, 5.25], start=now + timedelta(minutes=5))
        await worker.step(conn)
        again = _open(await _river(conn))
    assert set(again) == {False} and again[False]["id"] != first["id"] and again[False]["level"] == 3


async def test_changed_thresholds_judge_the_level_again_at_once(pool: asyncpg.Pool, settings: Settings) -> None:
    """A report-by-exception gauge that sent its last reading at 5.25 m: no reading will come to apply new
    thresholds, so the registry change itself does."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        await _readings(conn, "gauge", HIGH, start=now - timedelta(minutes=30))
        await worker.step(conn)
        alert = _open(await _river(conn))[False]
        assert alert["level"] == 3
        # 氾濫危険水位 lowered below the stage: 警戒レベル4 at once
        await upsert_stations(conn, [replace(GAUGE, th_danger=5.20)])
        assert await worker.follow_registry(conn) == 1
        up = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", alert["id"])
        assert (up["level"], up["state"], up["reason"], up["threshold"], up["value"]) == \
               (4, "escalated", "threshold", 5.20, 5.25)  # worded by its rule, the registry change its note
        assert await conn.fetchval("SELECT note FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1",
                                   alert["id"]) == REJUDGED
        assert await worker.follow_registry(conn) == 0  # once
        # every threshold raised above the stage: the readings never reached the new line, cleared at once
        await upsert_stations(conn, [replace(GAUGE, th_standby=5.30, th_caution=5.40, th_evacuation=5.60,
                                             th_danger=5.80)])
        assert await worker.follow_registry(conn) == 1
        down = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", alert["id"])
        assert (down["state"], down["reason"]) == ("cleared", REJUDGED)
        # and the stream goes on under the new ladder: a reading above the new 避難判断水位 raises level 3
        await _readings(conn, "gauge", [5.65], start=now + timedelta(minutes=5))
        await worker.step(conn)
        assert _open(await _river(conn))[False]["level"] == 3


async def test_an_alert_raised_and_cleared_before_a_move_stays_where_it_was_told(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """The rule (``RulesWorker.follow_registry``, step 2): an alert change is recorded in the station's
    municipality when the worker applies it, and a cleared alert keeps it — its Alert and Cancel went to
    that municipality's residents. Readings judged after the move are the new municipality's."""
    worker = RulesWorker.from_settings(settings, pool)
    gauge = replace(GAUGE, th_standby=None)  # (no standby rung to stop at on the way down)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [gauge])
        now: datetime = await conn.fetchval("SELECT now()")
        await _readings(conn, "gauge", HIGH + LOW, start=now - timedelta(hours=2))  # raised and cleared
        await worker.step(conn)
        [told] = await _river(conn)
        assert told["cleared_at"] is not None
        await upsert_stations(conn, [replace(gauge, municipality_code=NEW)])
        assert await worker.follow_registry(conn) == 0
        kept = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", told["id"])
        kinds = [r["kind"] for r in await conn.fetch("SELECT kind FROM alert_events WHERE alert_id = $1 ORDER BY id",
                                                     told["id"])]
        old_history = {e["alert_id"] for e in await store.list_history(conn, municipality=OLD)}
        new_history = {e["alert_id"] for e in await store.list_history(conn, municipality=NEW)}
        # a new rise after the move is the new municipality's
        await _readings(conn, "gauge", HIGH, start=now)
        await worker.step(conn)
        later = _open(await _river(conn))[False]
    assert (kept["municipality_code"], kept["version"]) == (OLD, told["version"]) and "moved" not in kinds
    assert told["id"] in old_history and told["id"] not in new_history
    assert later["municipality_code"] == NEW


async def test_the_running_worker_ends_a_real_alert_when_the_switch_is_announced(
        pool: asyncpg.Pool, settings: Settings) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        await _readings(conn, "gauge", HIGH, start=now - timedelta(minutes=30))
    # the silent check (and its follow_registry) every hour only: the switch must come from the notification
    async with running_worker(pool, exercise_grace_s=0):

        async def state() -> dict[bool, asyncpg.Record]:
            async with pool.acquire() as conn:
                return _open(await _river(conn))

        async def raised() -> bool:
            return False in await state()

        async def ended() -> bool:
            return not await state()

        await wait_until(raised, what="the real river-level alert")
        async with pool.acquire() as conn:
            await upsert_stations(conn, [replace(GAUGE, exercise=True)])
        await wait_until(ended, what="the real alert to end with the real stream")
