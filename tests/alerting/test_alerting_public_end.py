"""Two faults of a river alert's texts and audience, through the rules worker, the store and every channel.

F1: a public alert (氾濫注意, 警戒レベル2相当) lowered to 水防団待機 (STANDBY, staff only) stayed public at level
1: the public API, Atom, CAP (scope Public, event 水防団待機水位到達), the level answer (with the staff
instruction 水防団・職員は出動に備えてください。), MQTT and push showed a staff level. Residents must get the end
of the public alert; staff keep a standby alert; a rise again is public again and told.

F2: late readings re-evaluated a gauge to level 3 by the trend rule, recorded as reason ``re-evaluated`` without
a stage, so CAP, Atom and push said 避難判断水位 was reached with "水位 1.00 m / 基準 1.00 m".
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_atom, render_cap
from alerting.cap_identity import CapProfile
from alerting.rules import RIVER
from alerting.worker import RulesWorker, publish_alert
from ingest.contract import Reading, encode_reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from notify import store as notify_store
from sonae.config import Settings
from tests.alerting.cap_support import assert_valid_cap
from tests.alerting.support import running_worker
from tests.api.test_api_level import INSIDE
from tests.api.test_api_level import _seed as seed_shelters
from tests.api.test_api_staff import KORIYAMA, auth, make_client, tokens  # noqa: F401  (tokens: a fixture)
from tests.ingest_support import publish_all, running_ingestor, wait_until

NS = {"c": CAP_NS}
STATION = "f-gauge"
THRESHOLDS = {"th_standby": 1.0, "th_caution": 1.2, "th_evacuation": 3.0, "th_danger": 4.0}  # m
STAFF_TEXT = "水防団・職員は出動に備えてください。"
STANDBY_TEXT = "水防団待機水位"


def _station() -> Station:
    return Station(id=STATION, name="試験観測所", river="阿武隈川", municipality_code=KORIYAMA,
                   lat=float(INSIDE["lat"]), lon=float(INSIDE["lon"]) + 0.001, expected_interval_s=600, **THRESHOLDS)


async def _readings(conn: asyncpg.Connection, start: datetime, values: list[tuple[int, float]]) -> None:
    """Level readings at ``start`` + minutes."""
    await write_batch(conn, [Reading(STATION, "level", start + timedelta(minutes=m), v) for m, v in values])


async def _alerts(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM alerts WHERE station_id = $1 AND condition = $2 ORDER BY id",
                                 STATION, RIVER))


async def _push(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    return [json.loads(r["payload"]) for r in await conn.fetch(
        "SELECT payload FROM notify_queue WHERE kind = 'push' ORDER BY id")]


async def _webhook(conn: asyncpg.Connection, target: int) -> list[dict[str, Any]]:
    return [json.loads(r["payload"]) for r in await conn.fetch(
        "SELECT payload FROM notify_queue WHERE kind = 'webhook' AND target_id = $1 ORDER BY id", target)]


class _Broker:
    """What :func:`publish_alert` sends, as (topic, payload, retain)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bool]] = []

    async def publish(self, topic: str, payload: str | bytes, *, qos: int = 0, retain: bool = False) -> None:
        self.sent.append((topic, payload.encode() if isinstance(payload, str) else payload, retain))

    def retained(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for topic, payload, retain in self.sent:
            if retain:
                out[topic] = payload
        return {t: p for t, p in out.items() if p}


async def test_a_public_alert_lowered_to_standby_ends_for_residents_and_stays_for_staff(
        pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:  # noqa: F811
    await seed_shelters(pool)
    worker = RulesWorker.from_settings(settings, pool)
    client = await make_client(pool, settings)
    staff = auth(tokens["kori-staff"])
    broker = _Broker()
    try:
        async with pool.acquire() as conn:
            await upsert_stations(conn, [_station()])
            hook = (await notify_store.add_webhook(conn, url="https://hooks.invalid/public", created_by="t"))["id"]
            await notify_store.add_subscription(conn, endpoint="https://push.invalid/1", p256dh=b"\x04" + b"k" * 64,
                                                auth=b"a" * 16, lang="ja-JP", drills=False,
                                                areas=[notify_store.Area(KORIYAMA, None, None, None)])
            start = await conn.fetchval("SELECT date_trunc('minute', now()) - interval '3 hours'")

            async def judge(values: list[tuple[int, float]]) -> None:
                await _readings(conn, start, values)
                await worker.step(conn)
                await notify_store.fan_out(conn, base_url="https://sonae.test")
                for a in await _alerts(conn):
                    got = await store.get_alert(conn, a["id"])
                    assert got is not None
                    await publish_alert(broker, "sonae/alerts", got)  # type: ignore[arg-type]

            await judge([(0, 1.0), (10, 1.1)])  # 水防団待機: staff only
            await judge([(20, 1.2), (30, 1.2)])  # 氾濫注意: 警戒レベル2相当, public
            (public,) = await _alerts(conn)
            assert (public["level"], public["audience"]) == (2, "public")
            # 30 minutes below 氾濫注意水位 − 0.1 m: down to 水防団待機 at +70 min
            await judge([(40, 1.05), (50, 1.0), (60, 1.0), (70, 1.0), (80, 1.0), (90, 1.0)])
            ended, standby = await _alerts(conn)
            assert ended["id"] == public["id"]
            # residents' alert ended, as an all-clear; staff keep a staff-only standby alert
            assert (ended["state"], ended["audience"], ended["level"]) == ("cleared", "public", 2)
            assert ended["cleared_at"] == start + timedelta(minutes=70)
            assert (standby["state"], standby["audience"], standby["level"]) == ("raised", "staff", 1)
            assert standby["cleared_at"] is None and standby["raised_at"] == ended["cleared_at"]
            events = [(e["alert_id"], e["kind"], e["level"], e["old_level"]) for e in await conn.fetch(
                """SELECT * FROM alert_events WHERE alert_id = ANY($1::bigint[]) ORDER BY id""",
                [ended["id"], standby["id"]])]
            assert events[-2:] == [(ended["id"], "cleared", None, 2), (standby["id"], "raised", 1, None)]

        # the public API lists nothing; staff see the standby alert
        assert (await (await client.get("/api/v1/alerts")).json())["alerts"] == []
        listed = (await (await client.get("/api/v1/alerts", params={"audience": "staff"}, headers=staff)).json())
        assert [(a["id"], a["level"]) for a in listed["alerts"]] == [(standby["id"], 1)]
        # the level answer: no level, no staff instruction
        answer = await client.get("/api/v1/level", params=INSIDE)
        text = await answer.text()
        assert (await answer.json())["level"] is None and STAFF_TEXT not in text and STANDBY_TEXT not in text
        # Atom: the Cancel of the public alert, never the standby level
        atom = await (await client.get("/api/v1/alerts/feed.atom")).text()
        assert f"/api/v1/alerts/{ended['id']}.cap" in atom and f"/api/v1/alerts/{standby['id']}.cap" not in atom
        assert "解除" in atom and STANDBY_TEXT not in atom
        # CAP: the public alert's Cancel (AllClear, 警戒レベル2相当 ended); the standby alert is not public
        xml = await (await client.get(f"/api/v1/alerts/{ended['id']}.cap")).read()
        assert_valid_cap(xml)
        doc = etree.fromstring(xml)
        assert (doc.findtext("c:msgType", namespaces=NS), doc.findtext("c:scope", namespaces=NS)) == ("Cancel", "Public")
        for info in doc.findall("c:info", namespaces=NS):
            assert info.findtext("c:responseType", namespaces=NS) == "AllClear"
            assert info.findtext("c:eventCode/c:value", namespaces=NS) == "2"
        assert STANDBY_TEXT not in xml.decode() and STAFF_TEXT not in xml.decode()
        assert (await client.get(f"/api/v1/alerts/{standby['id']}.cap")).status == 404
        # MQTT: the public alert's retained copy removed; the alerts tree (devices and viewers of the municipality
        # read it) never carries the staff-only standby alert
        assert broker.retained() == {}
        assert not [t for t, p, _ in broker.sent if p and json.loads(p)["audience"] != "public"]
        async with pool.acquire() as conn:
            # push: told of 警戒レベル2 and of its end, never of level 1 or the staff instruction
            pushed = await _push(conn)
            assert [(p["alert_id"], p["kind"]) for p in pushed] == [(ended["id"], "escalated"), (ended["id"], "cleared")]
            assert "解除" in pushed[-1]["title"] and all(STAFF_TEXT not in p["body"] for p in pushed)
            # a webhook without staff alerts: the public alert's end, nothing of the standby alert
            told = await _webhook(conn, hook)
            assert told[-1]["event"]["kind"] == "cleared" and told[-1]["alert"]["id"] == ended["id"]
            assert all(p["alert"]["id"] != standby["id"] for p in told)

            # the river rises again to 氾濫注意: public again, and told
            await judge([(100, 1.2), (110, 1.25)])
            *_, again = await _alerts(conn)
            assert (again["id"], again["level"], again["audience"]) == (standby["id"], 2, "public")
            pushed = await _push(conn)
            assert (pushed[-1]["alert_id"], pushed[-1]["kind"], pushed[-1]["level"]) == (standby["id"], "escalated", 2)
        listed = (await (await client.get("/api/v1/alerts")).json())["alerts"]
        assert [(a["id"], a["level"]) for a in listed] == [(standby["id"], 2)]
        assert (await (await client.get("/api/v1/level", params=INSIDE)).json())["level"] == 2
    finally:
        await client.close()


async def test_a_re_evaluated_level_says_what_decided_it(pool: asyncpg.Pool, settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [_station()])
        await notify_store.add_subscription(conn, endpoint="https://push.invalid/2", p256dh=b"\x04" + b"k" * 64,
                                            auth=b"a" * 16, lang="ja-JP-x-easy", drills=False,
                                            areas=[notify_store.Area(KORIYAMA, None, None, None)])
        now = await conn.fetchval("SELECT date_trunc('minute', now())")
        start = now - timedelta(minutes=60)
        await _readings(conn, start, [(0, 1.0), (10, 1.1), (60, 1.2)])
        await worker.step(conn)
        # the readings between arrive late: the river rose fast and the trend forecast 氾濫危険水位 within the hour
        await _readings(conn, start, [(20, 1.6), (30, 2.1), (40, 2.5), (50, 1.8)])
        await worker.step(conn)
        await notify_store.fan_out(conn, base_url="https://sonae.test")
        (row,) = await _alerts(conn)
        assert (row["level"], row["reason"], row["value"], row["threshold"]) == (3, "trend", 2.1, 4.0)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1", row["id"])
        assert (event["kind"], event["level"], event["reason"], event["value"]) == ("escalated", 3, "trend", 2.1)
        assert event["note"] == store.RE_EVALUATED_NOTE
        alert = await store.get_alert(conn, row["id"])
        assert alert is not None
        profile = CapProfile("late-test", "sonae@sonae.test")
        cap = render_cap(alert, await store.messages_of(conn, row["id"]), profile=profile)
        assert_valid_cap(cap)
        infos = {i.findtext("c:language", namespaces=NS): i for i in etree.fromstring(cap).findall("c:info", namespaces=NS)}
        ja = infos["ja-JP"]
        assert "見込み" in ja.findtext("c:headline", namespaces=NS)
        assert "避難判断水位に達しました" not in cap.decode()
        assert ja.findtext("c:description", namespaces=NS) == "水位 2.10 m / 基準 4.00 m / 氾濫危険水位への到達が見込まれます"
        assert infos["en-US"].findtext("c:certainty", namespaces=NS) == "Likely"
        assert "どんどん" in infos["ja-JP-x-easy"].findtext("c:headline", namespaces=NS)
        atom = render_atom([alert], base_url="https://sonae.test", profile=profile).decode()
        assert "氾濫危険水位に達する見込み" in atom
        pushed = await _push(conn)
        assert pushed[-1]["level"] == 3 and "どんどん" in pushed[-1]["body"]


async def test_the_standby_events_of_an_alert_that_became_public_stay_staffs(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """The same kind the other way up: an alert raised at 水防団待機 and raised to 警戒レベル2相当 before the channels
    came to its events (one rules pass over a backlog) had its ``raised`` at level 1 sent to a webhook without
    staff alerts with the staff instruction, listed in the public history and the public event stream, because
    each read the alert's audience now (public) instead of the event's."""
    worker = RulesWorker.from_settings(settings, pool)
    client = await make_client(pool, settings)
    try:
        async with pool.acquire() as conn:
            await upsert_stations(conn, [_station()])
            hook = (await notify_store.add_webhook(conn, url="https://hooks.invalid/public", created_by="t"))["id"]
            staff_hook = (await notify_store.add_webhook(conn, url="https://hooks.invalid/staff", created_by="t",
                                                         include_staff=True))["id"]
            start = await conn.fetchval("SELECT date_trunc('minute', now()) - interval '3 hours'")
            await _readings(conn, start, [(0, 1.0), (10, 1.1), (20, 1.2)])
            await worker.step(conn)
            await notify_store.fan_out(conn, base_url="https://sonae.test")
            (alert,) = await _alerts(conn)
            assert (alert["level"], alert["audience"]) == (2, "public")
            told = await _webhook(conn, hook)
            assert [(p["event"]["kind"], p["event"]["level"]) for p in told] == [("escalated", 2)]
            assert all(STAFF_TEXT not in json.dumps(p, ensure_ascii=False) for p in told)
            assert [(p["event"]["kind"], p["event"]["level"]) for p in await _webhook(conn, staff_hook)] == [
                ("raised", 1), ("escalated", 2)]  # staff hear both
            streamed = [(e["event_kind"], e["audience"]) for e in await store.events_after(conn, 0)]
            assert streamed == [("raised", "staff"), ("escalated", "public")]
        history = (await (await client.get("/api/v1/alerts/history")).json())["events"]
        assert [(e["kind"], e["level"]) for e in history] == [("escalated", 2)]
        # its first public CAP message is an Alert naming none of the Restricted messages before it
        xml = await (await client.get(f"/api/v1/alerts/{alert['id']}.cap")).read()
        assert_valid_cap(xml)
        doc = etree.fromstring(xml)
        assert (doc.findtext("c:msgType", namespaces=NS), doc.find("c:references", namespaces=NS)) == ("Alert", None)
    finally:
        await client.close()


async def test_late_readings_through_ingest_raise_the_trend_level_with_its_stage(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """F2 end to end: the readings over MQTT → ingestor → rules worker, the late ones published after the rest."""
    async with pool.acquire() as conn:
        await upsert_stations(conn, [_station()])
        now = await conn.fetchval("SELECT date_trunc('minute', now())")
    start = now - timedelta(minutes=60)

    def message(seq: int, minutes: int, value: float) -> tuple[str, str, bytes]:
        return STATION, "level", encode_reading(value=value, ts=start + timedelta(minutes=minutes), seq=seq)

    async def level() -> int | None:
        async with pool.acquire() as conn:
            rows = [r for r in await _alerts(conn) if r["cleared_at"] is None]
        return rows[0]["level"] if rows else None

    async with running_ingestor(settings, pool), running_worker(pool):
        await publish_all(settings, [message(i, m, v) for i, (m, v) in enumerate([(0, 1.0), (10, 1.1), (60, 1.2)])])

        async def public() -> bool:
            return await level() == 2

        await wait_until(public, what="氾濫注意 from the in-order readings")
        await publish_all(settings, [message(3 + i, m, v)
                                     for i, (m, v) in enumerate([(20, 1.6), (30, 2.1), (40, 2.5), (50, 1.8)])])

        async def trend() -> bool:
            return await level() == 3

        await wait_until(trend, what="level 3 after the late readings")
    async with pool.acquire() as conn:
        (row,) = await _alerts(conn)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1", row["id"])
    assert (row["reason"], row["value"], row["threshold"]) == ("trend", 2.1, 4.0)
    assert (event["kind"], event["reason"], event["value"], event["note"]) == (
        "escalated", "trend", 2.1, store.RE_EVALUATED_NOTE)


async def test_an_alert_of_no_municipality_is_never_on_the_alerts_tree() -> None:
    """Found: a real level-4 alert of a station registered in no municipality retained at
    ``sonae/alerts/none/17``; only an empty retained message (removing such a copy) is sent there."""
    broker = _Broker()
    alert = {"id": 17, "audience": "public", "condition": "level", "municipality_code": None,
             "cleared_at": None, "level": 4}
    await publish_alert(broker, "sonae/alerts", alert)  # type: ignore[arg-type]
    assert broker.sent == [("sonae/alerts/none/17", b"", True)]
