"""The public alert endpoints and the SSE stream, on a real database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from lxml import etree

from alerting import store
from alerting.rules import Transition
from api.app import create_app
from api.auth import create_account, login
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.alerting.cap_support import assert_valid_cap
from tests.alerting.support import read_event
from tests.api_support import start_client

RING = [[140.35, 37.39], [140.40, 37.39], [140.40, 37.42], [140.35, 37.42], [140.35, 37.39]]


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    app = create_app(pool=pool, settings=settings)
    c = await start_client(app)
    try:
        yield c
    finally:
        await c.close()


async def _raise(pool: asyncpg.Pool, station: str, level: int | None, old: int | None, *, exercise: bool = False,
                 condition: str = "river_level") -> store.AlertChange | None:
    async with pool.acquire() as conn, conn.transaction():
        return await store.apply_transition(
            conn, station_id=station, municipality_code="072036", exercise=exercise,
            t=Transition(condition, old, level, datetime.now(UTC).timestamp(), 5.6, 5.5, "threshold"))


async def _seed(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="akutsu", name="阿久津", river="阿武隈川", municipality_code="072036",
                                             lat=37.41, lon=140.38, th_standby=4.0, th_caution=5.5,
                                             th_evacuation=5.7, th_danger=6.8)])


async def test_active_history_one_cap_and_feed(client: TestClient, pool: asyncpg.Pool) -> None:
    await _seed(pool)
    await _raise(pool, "akutsu", 3, None)
    change = await _raise(pool, "akutsu", 4, 3)
    await _raise(pool, "akutsu", 2, None, exercise=True)
    await _raise(pool, "akutsu", 0, None, condition="fault")
    assert change is not None
    r = await client.get("/api/v1/alerts")
    assert r.status == 200
    alerts = (await r.json())["alerts"]
    assert [(a["level"], a["exercise"]) for a in alerts] == [(4, False), (2, True)]  # staff-only hidden
    r = await client.get("/api/v1/alerts", params={"exercise": "false"})
    assert [a["level"] for a in (await r.json())["alerts"]] == [4]
    assert (await client.get("/api/v1/alerts", params={"audience": "staff"})).status == 401  # staff only
    async with pool.acquire() as conn:
        await create_account(conn, username="duty", password="duty-password-1", role="staff")
        token, _, _ = await login(conn, "duty", "duty-password-1") or ("", None, None)
    r = await client.get("/api/v1/alerts", params={"audience": "staff"}, headers={"Authorization": f"Bearer {token}"})
    assert [a["condition"] for a in (await r.json())["alerts"]] == ["fault"]
    r = await client.get("/api/v1/alerts", params={"municipality": "07x"})
    assert r.status == 400 and r.content_type == "application/problem+json"
    r = await client.get(f"/api/v1/alerts/{change.alert_id}")
    assert (await r.json())["version"] == 2
    assert (await client.get("/api/v1/alerts/999999")).status == 404
    r = await client.get(f"/api/v1/alerts/{change.alert_id}.cap")
    assert r.status == 200 and r.content_type == "application/cap+xml"
    xml = await r.read()
    assert_valid_cap(xml)
    assert b"-alert-%d-v1," % change.alert_id in xml  # references the first message
    r = await client.get("/api/v1/alerts/history", params={"exercise": "false"})
    events = (await r.json())["events"]
    assert [(e["kind"], e["level"]) for e in events] == [("escalated", 4), ("raised", 3)]
    r = await client.get("/api/v1/alerts/feed.atom")
    assert r.status == 200 and r.content_type == "application/atom+xml"
    feed = etree.fromstring(await r.read())
    links = feed.findall("{http://www.w3.org/2005/Atom}entry/{http://www.w3.org/2005/Atom}link")
    for link in links:
        cap = await client.get(link.get("href").split(str(client.make_url("")).rstrip("/"), 1)[-1])
        assert_valid_cap(await cap.read())
    assert len(links) == 2


async def test_sse_live_and_resume(client: TestClient, pool: asyncpg.Pool) -> None:
    await _seed(pool)
    resp = await client.get("/api/v1/events")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    async with pool.acquire() as conn:
        order_id, change = await store.issue_order(conn, municipality_code="072036", level=3, issued_by="tanaka",
                                                   area={"type": "Polygon", "coordinates": [RING]}, exercise=True)
    event = await read_event(resp)
    assert event["event"] == "alert"
    body = json.loads(event["data"])
    assert body["kind"] == "raised" and body["alert"]["id"] == change.alert_id and body["alert"]["exercise"]
    first_id = int(event["id"])
    await _raise(pool, "akutsu", 4, None)
    second = await read_event(resp)
    assert json.loads(second["data"])["alert"]["level"] == 4
    resp.close()
    # resume: everything after the first event, replayed from the history table
    async with pool.acquire() as conn:
        await store.cancel_order(conn, order_id, cancelled_by="tanaka")
    resp = await client.get("/api/v1/events", headers={"Last-Event-ID": str(first_id)})
    replayed = [await read_event(resp), await read_event(resp)]
    assert [int(e["id"]) for e in replayed] == [first_id + 1, first_id + 2]
    assert json.loads(replayed[1]["data"])["kind"] == "cleared"
    resp.close()
    # filters: exercise=false never sees a drill
    resp = await client.get("/api/v1/events", params={"exercise": "false"},
                            headers={"Last-Event-ID": str(first_id - 1)})
    only = await read_event(resp)
    assert json.loads(only["data"])["alert"]["exercise"] is False
    resp.close()


async def test_slow_clients_are_dropped(pool: asyncpg.Pool) -> None:
    from api.events import Event, EventHub, load_alert_events

    hub = EventHub(pool, "sonae_alerts", load_alert_events, queue_size=2)
    sub = hub.subscribe()
    for i in range(3):
        sub.offer(Event(i + 1, "alert", "{}"))
    assert sub.dropped and sub.queue.qsize() == 2
