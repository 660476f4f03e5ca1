"""Open alerts follow their station through the registry (found by a reviewer: the silent-station fix moved
only ``silent`` alerts; a station moved to another municipality left its river-level, unconfirmed, battery
and fault alerts in the old one: its staff kept them, the new one's never saw them).

Expected (what staff and residents rely on): an open alert belongs to the municipality where its station is
now. After a move the new municipality's staff see and acknowledge it and the old one's do not
(``api.authorization.in_scope``), ``?municipality=`` lists, the Atom feed, CAP and the event stream carry
the new code (answers cached per event version included), the history records the move (event ``moved``),
and cleared alerts keep the municipality they had. A deleted station's open alerts are cleared; a gauge
switched to exercise has its real alerts cleared (its real stream ended; more in
``test_alerting_registry_streams``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_cap
from alerting.cap_identity import CapProfile
from alerting.rules import RIVER, SILENT, UNCONFIRMED, Transition
from alerting.texts import ENDED_EXERCISE
from alerting.worker import RulesWorker, alert_topic_root
from api.app import create_app
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from notify import store as notify_store
from sonae.config import Settings
from sonae.mqtt import Message, MqttClient
from tests.alerting.support import read_event, running_worker
from tests.api_support import bearer, signed_in, start_client
from tests.ingest_support import wait_until

OLD, NEW = "072036", "072044"  # two municipalities of the same prefecture
RISING = [4.90, 5.00, 5.05, 5.20, 5.25]  # m every 10 min: 警戒レベル4 (past 避難判断), plausible
Key = tuple[str, str, bool]  # (station, condition, exercise)


def _stations(municipality: str) -> list[Station]:
    ff = Station(id="ff", name="ff", municipality_code=municipality, th_standby=3.80, th_caution=5.00,
                 th_evacuation=5.10, th_danger=5.50)  # a flood-forecast gauge's thresholds, m
    return [replace(ff, id="gauge", name="Gauge", river="厚東川", lat=34.02, lon=131.22),
            replace(ff, id="spiky", name="Spiky", max_rate_m_per_h=0.5),
            Station(id="dev", name="Device", municipality_code=municipality),
            Station(id="quiet", name="Quiet", municipality_code=municipality)]


async def _seed(conn: asyncpg.Connection) -> datetime:
    """Every station-bound condition open in OLD, and a cleared alert there. Returns the database's now."""
    await upsert_stations(conn, _stations(OLD))
    now: datetime = await conn.fetchval("SELECT now()")
    await conn.execute("UPDATE stations SET created_at = now() - interval '1 day' WHERE id = 'quiet'")
    t0 = now - timedelta(minutes=50)

    def at(i: int) -> datetime:
        return t0 + timedelta(minutes=10 * i)

    await write_batch(conn, [Reading("gauge", "level", at(i), v) for i, v in enumerate(RISING)]
                      + [Reading("gauge", "level", at(i), v, exercise=True) for i, v in enumerate(RISING)]
                      + [Reading("spiky", "level", at(i + 2), v) for i, v in enumerate([1.0, 1.0, 5.6])]
                      + [Reading("dev", "battery_pct", at(i + 3), v) for i, v in enumerate([15.0, 14.0])]
                      + [Reading("dev", "status", at(i + 3), 2.0) for i in range(2)])
    async with conn.transaction():  # a fault of the gauge, raised and cleared before the move
        for old, new in ((None, 0), (0, None)):
            await store.apply_transition(conn, station_id="gauge", municipality_code=OLD, exercise=False,
                                         t=Transition("fault", old, new, (now - timedelta(hours=2)).timestamp(),
                                                      None, None, "earlier"))
    return now


async def _open(conn: asyncpg.Connection) -> dict[Key, asyncpg.Record]:
    return {(r["station_id"], r["condition"], r["exercise"]): r for r in await conn.fetch(
        "SELECT * FROM alerts WHERE cleared_at IS NULL AND station_id IS NOT NULL")}


async def _moved_events(resp: ClientResponse, n: int, timeout: float = 30) -> list[dict[str, Any]]:
    """The next ``n`` alert events of a stream that are moves (others before them are skipped); fails after
    ``timeout`` s in all (keep-alive comments come every 15 s, so a missing event would not time a read out)."""
    out: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            event = await read_event(resp)
            body = json.loads(event["data"])
            if event.get("event") == "alert" and body["kind"] == "moved":
                out.append(body)
    return out



async def _ids(client: TestClient, params: dict[str, str], headers: dict[str, str] | None = None) -> set[int]:
    r = await client.get("/api/v1/alerts", params=params, headers=headers or {})
    assert r.status == 200, await r.text()
    return {a["id"] for a in (await r.json())["alerts"]}


async def test_open_alerts_of_every_condition_follow_a_moved_station(pool: asyncpg.Pool, settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await _seed(conn)
        tokens = await signed_in(conn, (("old-staff", "staff", OLD), ("new-staff", "staff", NEW)),
                                 "correct horse battery")
        hook = await notify_store.add_webhook(conn, url="https://hooks.invalid/new", created_by="t",
                                              municipality_code=NEW, include_staff=True, drills=True)
        await worker.step(conn)
        await worker.check_silent(conn)
        before = await _open(conn)
        historic = await conn.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND condition = 'fault'")
        await notify_store.fan_out(conn, base_url="https://sonae.test")  # OLD's alerts: nothing for NEW's hook
        assert not await conn.fetchval("SELECT count(*) FROM notify_queue WHERE target_id = $1", hook["id"])
    expected: set[Key] = {("gauge", RIVER, False), ("gauge", RIVER, True), ("spiky", UNCONFIRMED, False),
                          ("dev", "low_battery", False), ("dev", "fault", False), ("quiet", SILENT, False)}
    assert set(before) == expected and {a["municipality_code"] for a in before.values()} == {OLD}
    public = {a["id"] for a in before.values() if a["audience"] == "public"}
    assert public == {before[("gauge", RIVER, False)]["id"], before[("gauge", RIVER, True)]["id"]}

    client = await start_client(create_app(pool=pool, settings=settings))
    try:
        old_staff, new_staff = bearer(tokens["old-staff"]), bearer(tokens["new-staff"])
        # answers made (and cached per event version) before the move
        assert await _ids(client, {"municipality": OLD}) == public
        assert await _ids(client, {"municipality": NEW}) == set()
        assert await _ids(client, {"audience": "all"}, old_staff) == {a["id"] for a in before.values()}
        assert await _ids(client, {"audience": "all"}, new_staff) == set()
        new_stream = await client.get("/api/v1/events", params={"audience": "all"}, headers=new_staff)
        old_stream = await client.get("/api/v1/events", params={"municipality": OLD})
        assert new_stream.status == old_stream.status == 200

        async with pool.acquire() as conn:
            await upsert_stations(conn, _stations(NEW))  # a registry import moves all four stations
            assert await worker.follow_registry(conn) == len(expected)
            assert await worker.follow_registry(conn) == 0  # once
            await worker.check_silent(conn)
            after = await _open(conn)
            moves = await conn.fetch("SELECT * FROM alert_events WHERE kind = 'moved' ORDER BY id")
            historic_after = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", historic["id"])
        # the same alerts (identity, level, acknowledgement kept), one version more, in NEW
        assert {k: (a["id"], a["level"], a["version"] + 1) for k, a in before.items()} == \
               {k: (a["id"], a["level"], a["version"]) for k, a in after.items()}
        assert {a["municipality_code"] for a in after.values()} == {NEW}
        assert sorted((e["alert_id"], e["municipality_code"], e["old_municipality_code"], e["version"])
                      for e in moves) == sorted((a["id"], NEW, OLD, a["version"]) for a in after.values())
        assert (historic_after["municipality_code"], historic_after["version"]) == (OLD, historic["version"])

        # the event streams: the new municipality's staff get every move, the old one's readers the public ones
        got_new = await _moved_events(new_stream, len(expected))
        assert {e["alert"]["id"] for e in got_new} == {a["id"] for a in after.values()}
        assert {(e["alert"]["municipality_code"], e["old_municipality_code"]) for e in got_new} == {(NEW, OLD)}
        got_old = await _moved_events(old_stream, len(public))
        assert {e["alert"]["id"] for e in got_old} == public
        assert {e["alert"]["municipality_code"] for e in got_old} == {NEW}
        new_stream.close()
        old_stream.close()

        # lists (the cached answers were made again), scope, acknowledgement
        assert await _ids(client, {"municipality": OLD}) == set()
        assert await _ids(client, {"municipality": NEW}) == public
        assert await _ids(client, {"audience": "all"}, old_staff) == set()
        assert await _ids(client, {"audience": "all"}, new_staff) == {a["id"] for a in after.values()}
        river = after[("gauge", RIVER, False)]["id"]
        assert (await client.post(f"/api/v1/alerts/{river}/acknowledge", headers=old_staff)).status == 404
        assert (await client.post(f"/api/v1/alerts/{river}/acknowledge", headers=new_staff)).status == 200
        staff_only = after[("dev", "fault", False)]["id"]
        assert (await client.get(f"/api/v1/alerts/{staff_only}", headers=old_staff)).status == 404
        assert (await client.get(f"/api/v1/alerts/{staff_only}", headers=new_staff)).status == 200

        # CAP and Atom carry the new code
        r = await client.get(f"/api/v1/alerts/{river}.cap")
        doc = etree.fromstring(await r.read())
        ns = {"c": CAP_NS}
        assert doc.findtext("c:msgType", namespaces=ns) == "Update"
        assert set(doc.xpath("//c:geocode/c:value/text()", namespaces=ns)) == {NEW}
        for code, ids in ((NEW, public), (OLD, set())):
            atom = etree.fromstring(await (await client.get("/api/v1/alerts/feed.atom",
                                                            params={"municipality": code})).read())
            links = atom.xpath("//a:entry/a:link/@href", namespaces={"a": "http://www.w3.org/2005/Atom"})
            assert {int(h.rsplit("/", 1)[1].removesuffix(".cap")) for h in links} == ids

        # the history: the move is recorded, and shown to both municipalities; earlier events keep OLD
        for code in (OLD, NEW):
            r = await client.get("/api/v1/alerts/history", params={"municipality": code})
            kinds = [e["kind"] for e in (await r.json())["events"] if e["alert_id"] == river]  # newest first
            if code == NEW:
                assert kinds == ["acknowledged", "moved"]
            else:
                # (the public history: the raise at the staff-only 警戒レベル1 stays out of it, as it was then)
                assert kinds[0] == "moved" and set(kinds[1:]) == {"escalated"}
    finally:
        await client.close()

    async with pool.acquire() as conn:
        # CAP references name each earlier message by the sender it was sent with
        profile = CapProfile("moves", "bousai@{municipality}.example")
        alert = await store.get_alert(conn, river)
        assert alert is not None
        xml = etree.fromstring(render_cap(alert, await store.messages_of(conn, river), profile=profile))
        assert xml.findtext(f"{{{CAP_NS}}}sender") == f"bousai@{NEW}.example"
        refs = xml.findtext(f"{{{CAP_NS}}}references").split()
        # (every version before the move's: the current one is the move's; but not the first, its Restricted
        # raise at 水防団待機 before it was public)
        assert [ref.split(",")[0] for ref in refs] == [f"bousai@{OLD}.example"] * (alert["version"] - 2)
        # the new municipality's webhook hears of the moved alerts (drills and staff-only included; an
        # unconfirmed reading never leaves the staff console) and of the acknowledgement's nothing
        await notify_store.fan_out(conn, base_url="https://sonae.test")
        queued = {r["alert_event_id"] for r in await conn.fetch(
            "SELECT alert_event_id FROM notify_queue WHERE kind = 'webhook' AND target_id = $1", hook["id"])}
    assert queued == {e["id"] for e in moves if e["alert_id"] != after[("spiky", UNCONFIRMED, False)]["id"]}


async def _next(messages: AsyncIterator[Message], topic: str) -> Message:
    """The next message on ``topic`` (others are skipped)."""
    async with asyncio.timeout(60):
        while True:
            message = await messages.__anext__()
            if message.topic == topic:
                return message


async def test_the_worker_follows_a_registry_change_when_it_is_announced(pool: asyncpg.Pool,
                                                                         settings: Settings) -> None:
    """The move reaches the retained MQTT alert topics too: the copy under the old municipality is removed."""
    root = alert_topic_root(settings["mqtt.topic_prefix"])
    async with pool.acquire() as conn:
        await _seed(conn)
    async with MqttClient(settings["mqtt.url"], client_id=f"sub-{uuid.uuid4().hex[:6]}",
                          protocol=settings["mqtt.protocol"]) as sub:
        await sub.subscribe(f"{root}/#")
        messages = sub.messages()
        # the silent check (and its follow_registry) every hour only: the move must come from the notification
        async with running_worker(pool, mqtt_url=settings["mqtt.url"], mqtt_protocol=settings["mqtt.protocol"],
                                  topic_root=root):

            async def raised() -> bool:
                async with pool.acquire() as conn:
                    return ("gauge", RIVER, False) in await _open(conn)

            await wait_until(raised, what="the river-level alert")
            async with pool.acquire() as conn:
                alert_id = (await _open(conn))[("gauge", RIVER, False)]["id"]
            first = await _next(messages, f"{root}/{OLD}/{alert_id}")
            assert first.payload and json.loads(first.payload)["municipality_code"] == OLD
            async with pool.acquire() as conn:
                await upsert_stations(conn, [replace(_stations(OLD)[0], municipality_code=NEW)])

            async def moved() -> bool:
                async with pool.acquire() as conn:
                    return (await _open(conn))[("gauge", RIVER, False)]["municipality_code"] == NEW

            await wait_until(moved, what="the alert to follow the station")
            removed = await _next(messages, f"{root}/{OLD}/{alert_id}")
            assert removed.payload == b""  # the retained copy removed (a live subscriber sees retain=False)
            now_there = await _next(messages, f"{root}/{NEW}/{alert_id}")
            assert json.loads(now_there.payload)["municipality_code"] == NEW


async def test_deleted_station_alerts_clear_and_a_toggled_flag_ends_the_real_stream(
        pool: asyncpg.Pool, settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool, exercise_grace_s=0)
    async with pool.acquire() as conn:
        await _seed(conn)
        await worker.step(conn)
        await worker.check_silent(conn)
        before = await _open(conn)
        # the gauge becomes a drill station; the spiky one and the device leave the registry
        await upsert_stations(conn, [replace(_stations(OLD)[0], exercise=True)])
        await conn.execute("DELETE FROM stations WHERE id IN ('spiky', 'dev')")
        changes = await worker.follow_registry(conn)
        await worker.check_silent(conn)
        await worker.tick(conn)
        after = await _open(conn)
        gone = await conn.fetch("SELECT * FROM alerts WHERE id = ANY($1::bigint[]) ORDER BY id",
                                [before[k]["id"] for k in before if k[0] in ("spiky", "dev")])
        real = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", before[("gauge", RIVER, False)]["id"])
        level = await conn.fetchval("SELECT max(level) FROM alerts WHERE cleared_at IS NULL AND municipality_code = $1 "
                                    "AND NOT exercise AND condition = $2", OLD, RIVER)
    assert changes == 4
    assert [(a["state"], a["cleared_at"] is not None, a["reason"]) for a in gone] == \
           [("cleared", True, "station removed from the registry")] * 3
    # the real stream of a drill station ended: its real alert is cleared; the drill stream goes on
    assert (real["state"], real["reason"]) == ("cleared", ENDED_EXERCISE)
    assert {k: a["version"] for k, a in after.items()} == {k: before[k]["version"] for k in
                                                           (("gauge", RIVER, True), ("quiet", SILENT, False))}
    assert level is None
