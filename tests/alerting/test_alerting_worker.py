"""The rules worker on a real database and broker: real data through the real ingest path, exercise
isolation, late readings, device health, silent gauges, orders and acknowledgements, MQTT, election."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_cap
from alerting.cap_identity import CapProfile
from alerting.rules import UNCONFIRMED
from alerting.worker import alert_topic_root
from ingest.contract import Reading as IngestReading
from ingest.contract import encode_reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.config import Settings
from sonae.mqtt import MqttClient
from tests.alerting.cap_support import assert_valid_cap
from tests.alerting.replay_data import JST, jiseiji_series, jiseiji_thresholds, mlit_rows, mlit_thresholds
from tests.alerting.support import events_of, running_worker
from tests.ingest_support import publish_all, running_ingestor, wait_until

PROFILE = CapProfile("worker-test", "sonae@sonae.test")
FF = {"th_standby": 3.80, "th_caution": 5.00, "th_evacuation": 5.10, "th_danger": 5.50}


async def register(pool: asyncpg.Pool, *stations: Station) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, list(stations))


async def test_real_flood_through_ingest_raises_and_clears_in_reading_time(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """持世寺, 2023-06-30 12:00 to 07-02 00:00: MQTT → ingestor → NOTIFY → rules worker → alerts."""
    await register(pool, Station(id="jiseiji", name="持世寺", river="厚東川", municipality_code="072036",
                                 lat=34.02, lon=131.22, expected_interval_s=600, **jiseiji_thresholds()))
    window = [(ts, v) for ts, v in jiseiji_series()
              if datetime(2023, 6, 30, 12, tzinfo=JST) <= ts < datetime(2023, 7, 2, tzinfo=JST)]
    assert len(window) == 216
    async with running_ingestor(settings, pool), running_worker(pool, mqtt_url=settings["mqtt.url"],
                                                                mqtt_protocol=settings["mqtt.protocol"]):
        await publish_all(settings, [("jiseiji", "level", encode_reading(value=v, ts=ts, seq=i))
                                     for i, (ts, v) in enumerate(window)])

        async def cleared() -> bool:  # the public alert's end at standby, then the standby alert's
            return [e["kind"] for e in await events_of(pool, "jiseiji")].count("cleared") == 2

        await wait_until(cleared, timeout=120, what="the flood alert to clear")
    got = [(e["reading_ts"].astimezone(JST).strftime("%m/%d %H:%M"), e["kind"], e["level"])
           for e in await events_of(pool, "jiseiji")]
    assert got == [
        ("06/30 18:10", "raised", 1),
        ("07/01 01:00", "escalated", 3),       # trend: 5.50 forecast within the hour
        ("07/01 01:10", "re-evaluated", 3),    # 避難判断水位 reached: level 3 held by its threshold now
        ("07/01 01:20", "escalated", 4),       # the first reading ≥ 氾濫危険水位
        ("07/01 11:00", "de-escalated", 3),
        ("07/01 11:50", "de-escalated", 2),
        ("07/01 12:30", "cleared", None),      # below 氾濫注意水位: the public alert ends (AllClear)…
        ("07/01 12:30", "raised", 1),          # …and a staff-only 水防団待機 alert goes on
        ("07/01 23:00", "cleared", None),
    ]
    async with pool.acquire() as conn:
        alert_id, standby_id = [r["id"] for r in await conn.fetch(
            "SELECT id FROM alerts WHERE station_id = 'jiseiji' ORDER BY id")]
        alert = await store.get_alert(conn, alert_id)
        standby = await store.get_alert(conn, standby_id)
        previous = await store.messages_of(conn, alert_id)
        audit = await conn.fetchval("SELECT count(*) FROM audit_log WHERE object_type = 'alert'")
    assert alert is not None and alert["max_level"] == 4 and alert["version"] == 7 and not alert["exercise"]
    assert alert["audience"] == "public" and alert["level"] == 2
    assert standby is not None and (standby["audience"], standby["max_level"], standby["version"]) == ("staff", 1, 2)
    assert audit == 9  # with the update at 01:10 (alert.re-evaluated)
    xml = render_cap(alert, previous, profile=PROFILE)
    assert_valid_cap(xml)
    doc = etree.fromstring(xml)
    assert doc.findtext(f"{{{CAP_NS}}}status") == "Actual"
    assert doc.findtext(f"{{{CAP_NS}}}msgType") == "Cancel"
    assert len(doc.findtext(f"{{{CAP_NS}}}references").split()) == 5  # not the Restricted raise at 水防団待機


async def test_exercise_readings_make_exercise_alerts_only(pool: asyncpg.Pool, settings: Settings) -> None:
    await register(pool, Station(id="drill", name="訓練観測所", municipality_code="072036", **FF))
    start = datetime.now(UTC) - timedelta(hours=3)
    values = [4.0 + 0.15 * i for i in range(14)] + [6.0] * 3
    async with running_ingestor(settings, pool), running_worker(pool):
        await publish_all(settings, [("drill", "level", encode_reading(value=v, ts=start + timedelta(minutes=10 * i),
                                                                       exercise=True))
                                     for i, v in enumerate(values)])

        async def level4() -> bool:
            return any(e["level"] == 4 for e in await events_of(pool, "drill"))

        await wait_until(level4, timeout=120, what="the drill to reach level 4")
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT * FROM alerts")
        assert rows and all(r["exercise"] for r in rows)
        for r in rows:
            alert = await store.get_alert(conn, r["id"])
            assert alert is not None
            xml = render_cap(alert, await store.messages_of(conn, r["id"]), profile=PROFILE)
            assert_valid_cap(xml)
            assert etree.fromstring(xml).findtext(f"{{{CAP_NS}}}status") == "Exercise"
        assert await store.list_active(conn, exercise=False) == []


async def _write(pool: asyncpg.Pool, station: str, t0: datetime, pairs: list[tuple[float, float]],
                 kind: str = "level") -> None:
    async with pool.acquire() as conn:
        await write_batch(conn, [IngestReading(station, kind, t0 + timedelta(minutes=10 * i), v) for i, v in pairs])


async def _state_ts(pool: asyncpg.Pool, station: str) -> float | None:
    async with pool.acquire() as conn:
        raw = await conn.fetchval("SELECT state FROM rule_state WHERE station_id = $1", station)
    return None if raw is None else json.loads(raw)["machine"]["last_ts"]


async def test_late_readings_re_evaluate_without_flapping(pool: asyncpg.Pool) -> None:
    # a slow river: 0.5 m/h is the fastest plausible change of this gauge
    await register(pool, Station(id="late", name="Late", municipality_code="072036", max_rate_m_per_h=0.5, **FF))
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=4)
    async with running_worker(pool):
        await _write(pool, "late", t0, [(i, 5.2) for i in range(4)])
        await wait_until(lambda: _is(pool, "late", 3), what="level 3")
        await _write(pool, "late", t0, [(8, 5.7)])  # +0.5 m in 50 minutes: beyond this gauge's rate

        async def seen_t8() -> bool:
            return await _state_ts(pool, "late") == (t0 + timedelta(minutes=80)).timestamp()

        await wait_until(seen_t8, what="t8 evaluated")
        assert [e["level"] for e in await events_of(pool, "late")] == [3]
        assert [(e["kind"], e["level"]) for e in await events_of(pool, "late", condition=UNCONFIRMED)] == [
            ("raised", 4)]
        # the readings between arrive late: in reading time the river rose steadily to 5.7
        await _write(pool, "late", t0, [(4, 5.3), (5, 5.4), (6, 5.5), (7, 5.6)])
        await wait_until(lambda: _is(pool, "late", 4), what="level 4 after re-evaluation")
        events = await events_of(pool, "late")
        assert [(e["kind"], e["level"], e["reason"]) for e in events] == [
            ("raised", 3, "threshold"), ("escalated", 4, "threshold")]  # re-evaluated: the rule that decided it
        assert events[-1]["note"] == store.RE_EVALUATED_NOTE and events[-1]["value"] is not None
        assert [(e["kind"], e["level"]) for e in await events_of(pool, "late", condition=UNCONFIRMED)] == [
            ("raised", 4), ("cleared", None)]
        # a late duplicate-free reading that changes nothing makes no event
        await _write(pool, "late", t0, [(9, 5.7)])
        await wait_until(lambda: _state_is(pool, "late", (t0 + timedelta(minutes=90)).timestamp()), what="t9")
        await _write(pool, "late", t0, [(-1, 5.2)])  # older than everything, same outcome
        earliest = (t0 - timedelta(minutes=10)).timestamp()
        await wait_until(lambda: _in_buffer(pool, "late", earliest), what="re-evaluation from before t0")
    assert len(await events_of(pool, "late")) == 2


async def _in_buffer(pool: asyncpg.Pool, station: str, ts: float) -> bool:
    async with pool.acquire() as conn:
        raw = await conn.fetchval("SELECT state FROM rule_state WHERE station_id = $1", station)
    return any(t == ts for t, _ in json.loads(raw)["machine"]["buffer"])


async def _state_is(pool: asyncpg.Pool, station: str, ts: float) -> bool:
    return await _state_ts(pool, station) == ts


async def _is(pool: asyncpg.Pool, station: str, level: int) -> bool:
    async with pool.acquire() as conn:
        return await conn.fetchval(
            "SELECT level FROM alerts WHERE station_id = $1 AND condition = 'river_level' AND cleared_at IS NULL",
            station) == level


async def test_device_health_and_silent_gauge(pool: asyncpg.Pool) -> None:
    await register(pool, Station(id="dev", name="Device", municipality_code="072036", expected_interval_s=600, **FF))
    old = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    async with running_worker(pool, silent_check_s=0.2, sweep_s=0.2):
        await _write(pool, "dev", old, [(0, 15.0), (1, 14.0)], kind="battery_pct")
        await _write(pool, "dev", old, [(0, 2.0), (1, 2.0)], kind="status")

        async def conditions() -> set[str]:
            async with pool.acquire() as conn:
                return {r["condition"] for r in await conn.fetch(
                    "SELECT condition FROM alerts WHERE station_id = 'dev' AND cleared_at IS NULL")}

        async def all_three() -> bool:
            return await conditions() == {"low_battery", "fault", "silent"}

        await wait_until(all_three, what="low battery, fault and silent alerts")
        now = datetime.now(UTC).replace(microsecond=0)
        await _write(pool, "dev", now - timedelta(minutes=20), [(0, 90.0), (1, 91.0)], kind="battery_pct")
        await _write(pool, "dev", now - timedelta(minutes=20), [(0, 0.0), (1, 0.0)], kind="status")

        async def none_left() -> bool:
            return await conditions() == set()

        await wait_until(none_left, what="all device alerts to clear")
    async with pool.acquire() as conn:
        audiences = {r["audience"] for r in await conn.fetch("SELECT audience FROM alerts")}
    assert audiences == {"staff"}


async def test_orders_acknowledgements_audit_and_mqtt(pool: asyncpg.Pool, settings: Settings) -> None:
    root = alert_topic_root(settings["mqtt.topic_prefix"])
    assert not root.startswith(settings["mqtt.topic_prefix"] + "/")
    ring = [[140.35, 37.39], [140.40, 37.39], [140.40, 37.42], [140.35, 37.42], [140.35, 37.39]]
    async with MqttClient(settings["mqtt.url"], client_id=f"sub-{uuid.uuid4().hex[:6]}",
                          protocol=settings["mqtt.protocol"]) as sub:
        await sub.subscribe(f"{root}/#")
        async with running_worker(pool, mqtt_url=settings["mqtt.url"], mqtt_protocol=settings["mqtt.protocol"],
                                  topic_root=root):
            async with pool.acquire() as conn:
                order_id, change = await store.issue_order(
                    conn, municipality_code="072036", level=4, issued_by="tanaka", area_desc="阿久津地区",
                    area={"type": "Polygon", "coordinates": [ring]}, note="阿武隈川増水のため")
                await store.acknowledge_alert(conn, change.alert_id, user="sato", note="確認")
            messages = sub.messages()
            first = await asyncio.wait_for(messages.__anext__(), 60)
            assert first.topic == f"{root}/072036/{change.alert_id}"
            body = json.loads(first.payload)
            assert body["condition"] == "evacuation_order" and body["level"] == 4 and body["active"]
            # a client connecting later gets the current state, retained
            async with MqttClient(settings["mqtt.url"], client_id=f"late-{uuid.uuid4().hex[:6]}",
                                  protocol=settings["mqtt.protocol"]) as late:
                await late.subscribe(f"{root}/072036/{change.alert_id}")
                retained = await asyncio.wait_for(late.messages().__anext__(), 60)
                assert retained.retain and json.loads(retained.payload)["id"] == change.alert_id
            async with pool.acquire() as conn:
                await store.cancel_order(conn, order_id, cancelled_by="tanaka", note="水位低下")
            seen = []
            while not any(not m.payload for m in seen):  # the cleared state, then the retained copy removed
                seen.append(await asyncio.wait_for(messages.__anext__(), 60))
            states = [json.loads(m.payload) for m in seen if m.payload]
            assert states[-1]["active"] is False
    async with pool.acquire() as conn:
        actions = [r["action"] for r in await conn.fetch("SELECT action FROM audit_log ORDER BY id")]
        acks = await conn.fetch("SELECT * FROM alert_acknowledgements")
        alert = await store.get_alert(conn, change.alert_id)
        kinds = [r["kind"] for r in await conn.fetch("SELECT kind FROM alert_events ORDER BY id")]
    assert actions == ["order.issued", "alert.acknowledged", "order.cancelled"]
    assert [(a["user_name"], a["note"]) for a in acks] == [("sato", "確認")]
    assert kinds == ["raised", "acknowledged", "cleared"]
    assert alert is not None and alert["acknowledged_by"] == "sato" and alert["cleared_at"] is not None
    xml = render_cap(alert, [], profile=PROFILE)
    assert_valid_cap(xml)


async def test_orders_are_checked(pool: asyncpg.Pool) -> None:
    import pytest

    async with pool.acquire() as conn:
        with pytest.raises(store.AlertError):
            await store.issue_order(conn, municipality_code="072036", level=2, issued_by="x")
        with pytest.raises(store.AlertError):
            await store.issue_order(conn, municipality_code="072036", level=4, issued_by="x",
                                    area={"type": "Polygon", "coordinates": [[[140, 37], [141, 37]]]})
        with pytest.raises(store.AlertError):
            await store.cancel_order(conn, 999, cancelled_by="x")
        with pytest.raises(store.AlertError):
            await store.acknowledge_alert(conn, 999, user="x")


async def test_one_leader_and_failover(pool: asyncpg.Pool) -> None:
    await register(pool, Station(id="fo", name="Failover", municipality_code="072036", **FF))
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    async with running_worker(pool, lock_retry_s=0.1) as first:
        from alerting.worker import RulesWorker

        second = RulesWorker(pool, lock_retry_s=0.1, silent_check_s=3600)
        task = asyncio.create_task(second.run())
        await _write(pool, "fo", t0, [(i, 5.2) for i in range(3)])
        await wait_until(lambda: _is(pool, "fo", 3), what="level 3 by the first worker")
        assert first.is_leader.is_set() and not second.is_leader.is_set()
    try:
        await asyncio.wait_for(second.is_leader.wait(), 60)
        await _write(pool, "fo", t0, [(3, 5.3), (4, 5.4), (5, 5.5)])  # continues from the stored state
        await wait_until(lambda: _is(pool, "fo", 4), what="level 4 by the second worker")
    finally:
        second.stop()
        await asyncio.wait_for(task, 60)


async def test_silent_report_by_exception_gauge_steps_down_on_the_tick(pool: asyncpg.Pool) -> None:
    """川田橋 (0700000235, 危機管理型) on 2025-11-01, moved to today: level 4, two readings back at
    standby, then silence. The worker's tick (driven here with an explicit 'now') lowers the level once
    the dwell has passed and the next reading is overdue; a late reading replays without flapping."""
    rows = mlit_rows()["0700000235"]
    await register(pool, Station(id="kawada", name="川田橋", municipality_code="072036", gauge_type="crisis",
                                 expected_interval_s=600, **mlit_thresholds(rows[0])))
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    levels = [float(r["level_m"]) for r in rows[:3]]  # 19.92 (≥ 危険水位 19.55), then 19.31 and 19.07
    async with running_worker(pool) as worker:
        await _write(pool, "kawada", t0, [(0, levels[0]), (6, levels[1]), (7, levels[2])])
        await wait_until(lambda: _state_is(pool, "kawada", (t0 + timedelta(minutes=70)).timestamp()),
                         what="the three readings evaluated")
        assert await _is(pool, "kawada", 4)  # two readings below: held
        due = t0 + timedelta(minutes=60 + 30 + 10)  # 30 min from the first reading below, then one interval
        async with pool.acquire() as conn:
            assert await worker.tick(conn, now=due - timedelta(seconds=1)) == 0
            assert await _is(pool, "kawada", 4)
            assert await worker.tick(conn, now=due) == 1
            assert await worker.tick(conn, now=due + timedelta(minutes=5)) == 0  # once
        assert await _is(pool, "kawada", 1)
        # a late reading (between the two below the line) is replayed: the step-down stays
        await _write(pool, "kawada", t0, [(6.5, 19.2)])
        late = (t0 + timedelta(minutes=65)).timestamp()
        await wait_until(lambda: _in_buffer(pool, "kawada", late), what="the late reading re-evaluated")
        assert await _is(pool, "kawada", 1)
    assert [(e["kind"], e["level"], e["reading_ts"]) for e in await events_of(pool, "kawada")] == [
        ("raised", 4, t0), ("cleared", None, due), ("raised", 1, due)]  # the public alert ends; standby goes on
