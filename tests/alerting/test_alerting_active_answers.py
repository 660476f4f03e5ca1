"""``/api/v1/alerts`` is made once per alert-state version (``api.answers``), on a real database.

Every kind of alert change (raised, escalated, acknowledged, order issued, order cancelled, cleared)
makes the next answer new, checked against the alerts table read directly (the oracle); a burst of
requests after a change costs one answer; a client holding the answer gets 304; a change the hub could
have missed (its LISTEN connection lost) is never hidden behind an answer made before.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from alerting import store
from alerting.rules import Transition
from api.alerts import ACTIVE_CACHE
from api.app import create_app
from api.events import ALERT_HUB, EventHub, Subscription
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.api_support import start_client
from tests.ingest_support import wait_until


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="akutsu", name="阿久津", river="阿武隈川", municipality_code="072036",
                                             lat=37.41, lon=140.38, th_caution=5.5, th_danger=6.8)])
    app = create_app(pool=pool, settings=settings)
    c = await start_client(app)
    await asyncio.wait_for(app[ALERT_HUB].connected.wait(), 120)
    try:
        yield c
    finally:
        await c.close()


def _hub(client: TestClient) -> EventHub:
    return client.server.app[ALERT_HUB]


async def _transition(pool: asyncpg.Pool, level: int | None, old: int | None) -> store.AlertChange | None:
    async with pool.acquire() as conn, conn.transaction():
        return await store.apply_transition(
            conn, station_id="akutsu", municipality_code="072036", exercise=False,
            t=Transition("river_level", old, level, datetime.now(UTC).timestamp(), 5.6, 5.5, "threshold"))


async def _oracle(pool: asyncpg.Pool) -> list[tuple[int, int, str, bool]]:
    """(id, level, state, acknowledged) of the active public alerts, from the table itself."""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT id, level, state, acknowledged_at IS NOT NULL AS ack FROM alerts "
                                "WHERE cleared_at IS NULL AND audience = 'public'")
    return sorted((r["id"], r["level"], r["state"], r["ack"]) for r in rows)


async def _answer(client: TestClient) -> list[tuple[int, int, str, bool]]:
    resp = await client.get("/api/v1/alerts")
    assert resp.status == 200
    return sorted((a["id"], a["level"], a["state"], a["acknowledged_at"] is not None)
                  for a in (await resp.json())["alerts"])


async def _delivered(sub: Subscription) -> None:
    """Wait until the hub has delivered the change's event (it counts the change before offering it)."""
    event = await asyncio.wait_for(sub.queue.get(), 120)
    assert event.type == "alert"


async def test_every_kind_of_alert_change_makes_a_new_answer(client: TestClient, pool: asyncpg.Pool) -> None:
    sub = _hub(client).subscribe()
    assert await _answer(client) == await _oracle(pool) == []
    raised = await _transition(pool, 3, None)
    assert raised is not None
    changes = [
        lambda conn: store.apply_transition(  # escalated
            conn, station_id="akutsu", municipality_code="072036", exercise=False,
            t=Transition("river_level", 3, 4, datetime.now(UTC).timestamp(), 6.0, 5.7, "threshold")),
        lambda conn: store.acknowledge_alert(conn, raised.alert_id, user="duty"),
        lambda conn: store.issue_order(conn, municipality_code="072036", level=4, issued_by="tanaka"),
    ]
    await _delivered(sub)
    seen = [await _answer(client)]
    assert seen[-1] == await _oracle(pool) and len(seen[-1]) == 1
    for change in changes:
        async with pool.acquire() as conn, conn.transaction():
            await change(conn)
        await _delivered(sub)
        seen.append(await _answer(client))
        assert seen[-1] == await _oracle(pool)
        assert seen[-1] != seen[-2]
    async with pool.acquire() as conn:
        order_id = await conn.fetchval("SELECT id FROM evacuation_orders")
        await store.cancel_order(conn, order_id, cancelled_by="tanaka")
    await _delivered(sub)
    assert await _answer(client) == await _oracle(pool) == seen[2]  # the order's alert is gone
    await _transition(pool, None, 4)  # the gauge falls back: cleared
    await _delivered(sub)
    assert await _answer(client) == await _oracle(pool) == []


async def test_a_burst_after_a_change_costs_one_answer(client: TestClient, pool: asyncpg.Pool) -> None:
    cache = client.server.app[ACTIVE_CACHE]
    sub = _hub(client).subscribe()
    await _transition(pool, 3, None)
    await _delivered(sub)
    made = cache.made
    bodies = await asyncio.gather(*(client.get("/api/v1/alerts") for _ in range(50)))
    texts = {await r.text() for r in bodies}
    assert len(texts) == 1 and [a["level"] for a in json.loads(texts.pop())["alerts"]] == [3]
    assert cache.made == made + 1
    other = await client.get("/api/v1/alerts", params={"exercise": "false"})  # another key: its own answer
    assert other.status == 200 and cache.made == made + 2


async def test_etag_and_gzip(client: TestClient, pool: asyncpg.Pool) -> None:
    sub = _hub(client).subscribe()
    await _transition(pool, 5, None)
    await _delivered(sub)
    async with pool.acquire() as conn:  # enough text to be worth compressing
        for level in (3, 4):
            await store.issue_order(conn, municipality_code="072036", level=level, issued_by="tanaka")
            await _delivered(sub)
    plain = {"Accept-Encoding": "identity"}
    first = await client.get("/api/v1/alerts", headers=plain)
    etag, body = first.headers["ETag"], await first.read()
    assert "Content-Encoding" not in first.headers
    assert first.headers["Cache-Control"] == "no-cache" and "Accept-Encoding" in first.headers["Vary"]
    again = await client.get("/api/v1/alerts", headers={**plain, "If-None-Match": f'"other", {etag}'})
    assert again.status == 304 and await again.read() == b"" and again.headers["ETag"] == etag
    weak = await client.get("/api/v1/alerts", headers={**plain, "If-None-Match": "W/" + etag})
    assert weak.status == 304
    zipped = await client.get("/api/v1/alerts", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip" and zipped.headers["ETag"] != etag
    assert gzip.decompress(await zipped.read()) == body
    await _transition(pool, 2, 5)
    await _delivered(sub)
    changed = await client.get("/api/v1/alerts", headers={**plain, "If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag
    assert [a["level"] for a in (await changed.json())["alerts"]] == [4, 3, 2]


async def test_a_change_the_hub_may_have_missed_is_not_hidden(client: TestClient, pool: asyncpg.Pool) -> None:
    """A row written without an event (as a restore or a hand fix would) is seen after the hub reconnects:
    answers made before the LISTEN connection was lost are not served after it."""
    hub = _hub(client)
    assert await _answer(client) == []
    before = hub.version
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO alerts (station_id, condition, exercise, audience, municipality_code, level, max_level,
                                   state, raised_at, changed_at)
               VALUES ('akutsu', 'river_level', false, 'public', '072036', 4, 4, 'raised', now(), now())""")
        assert await _answer(client) == []  # no event: this process cannot know yet (as before)
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                           "AND (query LIKE 'LISTEN%sonae_alerts%' OR query LIKE 'SELECT e.pos AS event_pos%')")

    async def reconnected() -> bool:
        return hub.version is not None and hub.version != before

    await wait_until(reconnected, what="the alert hub to reconnect")
    assert [a[1] for a in await _answer(client)] == [4]


async def test_a_station_renamed_or_moved_makes_a_new_answer(client: TestClient, pool: asyncpg.Pool) -> None:
    """The answer shows the gauge's name, river and place, which live in ``stations``: changing them writes
    no alert event, but the next answer shows them (alerting migration 025 announces the change)."""
    hub, sub = _hub(client), _hub(client).subscribe()
    await _transition(pool, 3, None)
    await _delivered(sub)

    async def shown() -> tuple[str, str, dict[str, float]]:
        resp = await client.get("/api/v1/alerts")
        (alert,) = (await resp.json())["alerts"]
        return alert["station_name"], alert["river"], alert["location"]

    async def stored() -> tuple[str, str, dict[str, float]]:
        async with pool.acquire() as conn:
            r = await conn.fetchrow("SELECT name, river, lat, lon FROM stations WHERE id = 'akutsu'")
        return r["name"], r["river"], {"lat": r["lat"], "lon": r["lon"]}

    assert await shown() == await stored() == ("阿久津", "阿武隈川", {"lat": 37.41, "lon": 140.38})
    for name, river, lat in (("阿久津橋", "阿武隈川", 37.41), ("阿久津橋", "逢瀬川", 37.42)):
        before = hub.version
        async with pool.acquire() as conn:
            await upsert_stations(conn, [Station(id="akutsu", name=name, river=river, municipality_code="072036",
                                                 lat=lat, lon=140.38, th_caution=5.5, th_danger=6.8)])

        async def noticed(before: tuple[int, int] | None = before) -> bool:
            return hub.version is not None and hub.version != before

        await wait_until(noticed, what="the alert hub to notice the changed station")
        assert await shown() == await stored() == (name, river, {"lat": lat, "lon": 140.38})
