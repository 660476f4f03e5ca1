"""A reading beyond the gauge's plausible rate, end to end: MQTT → ingestor → rules worker → API, MQTT
alert topics, and the notification fan-out. A single injected spike (+3 m for one 10-minute reading of
the real 持世寺 series, then back) must raise only an unconfirmed, staff-only alert that is withdrawn at
the next reading and never reaches residents, CAP/Atom, MQTT, push or webhooks."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime

import asyncpg

from alerting import store as alerts_store
from alerting.rules import IMPLAUSIBLE, SPIKE, UNCONFIRMED
from alerting.worker import alert_topic_root
from ingest.contract import encode_reading
from ingest.registry import Station, upsert_stations
from notify import store as notify_store
from notify.store import Area
from sonae.config import Settings
from sonae.mqtt import Message, MqttClient
from tests.alerting.replay_data import JST, jiseiji_series, jiseiji_thresholds
from tests.alerting.support import running_worker
from tests.api.test_api_level import INSIDE
from tests.api.test_api_level import _seed as seed_shelters
from tests.api.test_api_staff import KORIYAMA, auth, make_client, tokens  # noqa: F401  (tokens: a fixture)
from tests.ingest_support import publish_all, running_ingestor, wait_until

STATION = "jiseiji-spike"


async def _alerts(pool: asyncpg.Pool, condition: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch("SELECT * FROM alerts WHERE station_id = $1 AND condition = $2 ORDER BY id",
                                     STATION, condition))


async def test_a_single_spike_stays_with_staff_and_is_withdrawn(
        pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:  # noqa: F811
    th = jiseiji_thresholds()
    window = [(ts, v) for ts, v in jiseiji_series()
              if datetime(2023, 6, 30, 12, tzinfo=JST) <= ts <= datetime(2023, 6, 30, 18, 20, tzinfo=JST)]
    spike_at = 6  # 13:00, 2.78 m in the record
    assert window[spike_at][0].strftime("%H:%M") == "13:00"
    spiked = [(ts, v + 3.0 if i == spike_at else v) for i, (ts, v) in enumerate(window)]
    assert spiked[spike_at][1] >= th["th_danger"] and max(v for _, v in window) < th["th_caution"]
    await seed_shelters(pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id=STATION, name="持世寺（試験）", river="厚東川", municipality_code=KORIYAMA,
                                             lat=float(INSIDE["lat"]), lon=float(INSIDE["lon"]) + 0.001,
                                             expected_interval_s=600, **th)])
        # targets that would hear of the alert if anything let it through: a staff-inclusive webhook
        # and a resident's push subscription for Koriyama
        hook = await notify_store.add_webhook(conn, url="https://hooks.invalid/x", created_by="t", include_staff=True)
        await notify_store.add_subscription(conn, endpoint="https://push.invalid/1", p256dh=b"\x04" + b"k" * 64,
                                            auth=b"a" * 16, lang="ja-JP", drills=False,
                                            areas=[Area(KORIYAMA, None, None, None)])
    root = alert_topic_root(settings["mqtt.topic_prefix"])
    client = await make_client(pool, settings)
    staff = auth(tokens["kori-staff"])
    try:
        async with MqttClient(settings["mqtt.url"], client_id=f"sub-{uuid.uuid4().hex[:6]}",
                              protocol=settings["mqtt.protocol"]) as sub:
            await sub.subscribe(f"{root}/#")
            async with running_ingestor(settings, pool), running_worker(
                    pool, mqtt_url=settings["mqtt.url"], mqtt_protocol=settings["mqtt.protocol"], topic_root=root):
                await publish_all(settings, [(STATION, "level", encode_reading(value=v, ts=ts, seq=i))
                                             for i, (ts, v) in enumerate(spiked[:spike_at + 1])])

                async def unconfirmed_open() -> bool:
                    return any(a["cleared_at"] is None for a in await _alerts(pool, UNCONFIRMED))

                await wait_until(unconfirmed_open, what="the unconfirmed alert")
                (alert,) = await _alerts(pool, UNCONFIRMED)
                assert (alert["level"], alert["audience"], alert["reason"]) == (4, "staff", IMPLAUSIBLE)
                assert alert["raised_at"] == spiked[spike_at][0]  # at the reading itself, not held
                # staff see it at once, marked; residents do not
                listed = await (await client.get("/api/v1/alerts", params={"audience": "staff"},
                                                 headers=staff)).json()
                mine = [a for a in listed["alerts"] if a["id"] == alert["id"]]
                assert mine and mine[0]["unconfirmed"] is True and mine[0]["level"] == 4
                level = await (await client.get("/api/v1/level", params=INSIDE)).json()
                assert level["level"] is None and level["municipality_code"] == KORIYAMA
                public = await (await client.get("/api/v1/alerts")).json()
                assert public["alerts"] == []
                cap = await client.get(f"/api/v1/alerts/{alert['id']}.cap", headers=staff)
                assert cap.status == 404 and "unconfirmed" in (await cap.json())["detail"]
                atom = await (await client.get("/api/v1/alerts/feed.atom")).text()
                assert f"/api/v1/alerts/{alert['id']}" not in atom

                # the next reading is back at 2.79 m: a spike, withdrawn with an audit entry
                await publish_all(settings, [(STATION, "level", encode_reading(value=v, ts=ts, seq=spike_at + 1))
                                             for ts, v in spiked[spike_at + 1:spike_at + 2]])

                async def withdrawn() -> bool:
                    return all(a["cleared_at"] is not None for a in await _alerts(pool, UNCONFIRMED))

                await wait_until(withdrawn, what="the spike withdrawn")
                (alert,) = await _alerts(pool, UNCONFIRMED)
                assert alert["reason"] == SPIKE and alert["cleared_at"] == spiked[spike_at + 1][0]
                async with pool.acquire() as conn:
                    actions = [r["action"] for r in await conn.fetch(
                        "SELECT action FROM audit_log WHERE object_type = 'alert' AND object_id = $1 ORDER BY id",
                        str(alert["id"]))]
                assert actions == ["alert.raised", "alert.withdrawn"]
                assert await _alerts(pool, "river_level") == []

                # the rest of the real record, up to 水防団待機水位 at 18:10: a staff-only standby alert, which the
                # public alerts tree never carries either
                await publish_all(settings, [(STATION, "level", encode_reading(value=v, ts=ts, seq=spike_at + 2 + i))
                                             for i, (ts, v) in enumerate(spiked[spike_at + 2:])])

                async def standby_raised() -> bool:
                    return bool(await _alerts(pool, "river_level"))

                await wait_until(standby_raised, what="the standby alert")
                # then a public alert (an evacuation order): the worker publishes changes in order, so whatever
                # it published of the staff alerts came before this one
                async with pool.acquire() as conn:
                    _, order = await alerts_store.issue_order(conn, municipality_code=KORIYAMA, level=3,
                                                              issued_by="t")
                seen: list[Message] = []
                messages = sub.messages()
                while not any(json.loads(m.payload or b"{}").get("id") == order.alert_id for m in seen):
                    seen.append(await asyncio.wait_for(messages.__anext__(), 60))
            (standby,) = await _alerts(pool, "river_level")
            assert standby["level"] == 1 and standby["raised_at"].astimezone(JST).strftime("%H:%M") == "18:10"
            assert standby["audience"] == "staff"
            published = {json.loads(m.payload)["id"] for m in seen if m.payload}
            assert alert["id"] not in published and standby["id"] not in published
            assert not [m for m in seen if m.topic.endswith((f"/{alert['id']}", f"/{standby['id']}"))]
        async with pool.acquire() as conn:
            await notify_store.fan_out(conn, base_url="https://sonae.test")
            queued = await conn.fetch("SELECT kind, target_id, alert_id FROM notify_queue")
        # the staff-inclusive webhook got the standby alert, so it was listening; nothing of the spike
        assert {(q["kind"], q["alert_id"]) for q in queued if q["alert_id"] != order.alert_id} == {
            ("webhook", standby["id"])}
        assert all(q["target_id"] == hook["id"] for q in queued if q["alert_id"] != order.alert_id)
    finally:
        await client.close()
