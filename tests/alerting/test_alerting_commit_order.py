"""Readers of committed rows under concurrent commits (issue #15 item 4).

Each test holds a writer's transaction open on a connection it controls, lets a second writer take a
higher id and commit, and only then commits the first: the row with the lower id becomes visible
last. Every reader must still deliver it — the SSE hub to every live client, Last-Event-ID replay to a
client that reconnects, the rules worker's reading watermark, and the notification fan-out. No sleeps:
the held transaction is the synchronisation.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from alerting import store
from alerting.worker import RulesWorker
from api.app import create_app
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from notify import store as notify_store
from sonae.config import Settings
from tests.alerting.support import read_event
from tests.api_support import start_client

KORIYAMA = "072036"
FF = {"th_standby": 3.80, "th_caution": 5.00, "th_evacuation": 5.10, "th_danger": 5.50}


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    c = await start_client(create_app(pool=pool, settings=settings))
    try:
        yield c
    finally:
        await c.close()


async def _order(conn: asyncpg.Connection, note: str) -> store.AlertChange:
    _, change = await store.issue_order(conn, municipality_code=KORIYAMA, level=3, issued_by="duty", note=note)
    return change


async def test_late_committed_lower_id_reaches_every_sse_client_and_replay(
        client: TestClient, pool: asyncpg.Pool) -> None:
    live = [await client.get("/api/v1/events") for _ in range(2)]
    leaving = await client.get("/api/v1/events")
    async with pool.acquire() as held:
        tx = held.transaction()
        await tx.start()
        first = await _order(held, "first, committed last")  # takes the lower event id, stays open
        async with pool.acquire() as other:
            second = await _order(other, "second, committed first")
        assert first.event_id < second.event_id
        seen_second = [await read_event(resp) for resp in (*live, leaving)]
        assert {json.loads(e["data"])["event_id"] for e in seen_second} == {second.event_id}
        leaving.close()  # this client goes away before the first order commits
        await tx.commit()
    for resp in live:
        event = json.loads((await read_event(resp))["data"])
        # the public stream names the event, never the staff's internal note (#16)
        assert event["event_id"] == first.event_id and "note" not in event
        resp.close()
    # the client that left resumes from the last id it saw and gets the one committed late
    last_seen = seen_second[-1]["id"]
    resumed = await client.get("/api/v1/events", headers={"Last-Event-ID": last_seen})
    replayed = await read_event(resumed)
    assert json.loads(replayed["data"])["event_id"] == first.event_id
    assert int(replayed["id"]) > int(last_seen)
    resumed.close()
    # and a client resuming from before both gets both, in commit order
    async with pool.acquire() as conn:
        before = int(await conn.fetchval("SELECT min(pos) FROM alert_events")) - 1
    resumed = await client.get("/api/v1/events", headers={"Last-Event-ID": str(before)})
    both = [json.loads((await read_event(resumed))["data"])["event_id"] for _ in range(2)]
    assert both == [second.event_id, first.event_id]
    resumed.close()


async def test_rules_watermark_waits_for_a_transaction_that_commits_late(pool: asyncpg.Pool) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    def rising(station: str, value: float = 5.2) -> list[Reading]:
        return [Reading(station, "level", t0 + timedelta(minutes=10 * i), value) for i in range(4)]

    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="held", name="Held", municipality_code=KORIYAMA, **FF),
                                     Station(id="quick", name="Quick", municipality_code=KORIYAMA, **FF),
                                     Station(id="calm", name="Calm", municipality_code=KORIYAMA, **FF)])
        # TimescaleDB: the first writer into a new chunk blocks others until it commits, so the
        # chunks of these times exist before the two writers below (ingest meets the same, briefly)
        await write_batch(conn, rising("calm", 1.0))

    # max_lag_s=0: the transaction below is "older than the lag" from the start; the watermark must
    # still not pass it (before the fix, the horizon was capped at max_lag_s and its rows were skipped)
    worker = RulesWorker(pool, max_lag_s=0.0)

    async def level(conn: asyncpg.Connection, station: str) -> int | None:
        return await conn.fetchval("SELECT level FROM alerts WHERE station_id = $1 AND cleared_at IS NULL",
                                   station)

    async with pool.acquire() as held, pool.acquire() as rules:
        tx = held.transaction()
        await tx.start()
        await write_batch(held, rising("held"))  # received_at = this transaction's start
        async with pool.acquire() as other:
            await write_batch(other, rising("quick"))
        await worker.step(rules)
        assert await level(rules, "quick") == 3 and await level(rules, "held") is None
        await tx.commit()
        await worker.step(rules)
        assert await level(rules, "held") == 3


async def test_fan_out_queues_a_late_committed_event_exactly_once(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await notify_store.add_webhook(conn, url="http://127.0.0.1:9/hook", created_by="test", allow_loopback=True)

    async def queued(conn: asyncpg.Connection, event_id: int) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM notify_queue WHERE alert_event_id = $1", event_id))

    async with pool.acquire() as held, pool.acquire() as fan:
        tx = held.transaction()
        await tx.start()
        first = await _order(held, "held")
        async with pool.acquire() as other:
            second = await _order(other, "quick")
        assert first.event_id < second.event_id
        done = await notify_store.fan_out(fan, base_url="https://sonae.test")
        assert done["events"] == 1 and await queued(fan, second.event_id) == 1
        await tx.commit()
        done = await notify_store.fan_out(fan, base_url="https://sonae.test")
        assert done["events"] == 1 and await queued(fan, first.event_id) == 1
        again = await notify_store.fan_out(fan, base_url="https://sonae.test")
        assert again["events"] == 0 and await queued(fan, second.event_id) == 1


async def test_positions_follow_commit_order_not_insert_order(pool: asyncpg.Pool) -> None:
    """The position is given at commit: an event inserted first but committed last gets the higher one,
    and a rolled-back event leaves nothing behind."""
    async with pool.acquire() as a, pool.acquire() as b, pool.acquire() as c:
        ta, tc = a.transaction(), c.transaction()
        await ta.start()
        await tc.start()
        first = await _order(a, "a")
        gone = await _order(c, "rolled back")
        second = await _order(b, "b")
        await tc.rollback()
        await ta.commit()
        rows = {r["id"]: r["pos"] for r in await b.fetch("SELECT id, pos FROM alert_events")}
    assert gone.event_id not in rows
    assert rows[second.event_id] < rows[first.event_id]
    assert all(p is not None for p in rows.values())


async def test_a_last_event_id_beyond_every_position_does_not_hide_new_events(
        client: TestClient, pool: asyncpg.Pool) -> None:
    """A client that last listened to a database since rebuilt sends an id no event has yet."""
    async with pool.acquire() as conn:
        await _order(conn, "before")
    resp = await client.get("/api/v1/events", headers={"Last-Event-ID": str(10**12)})
    async with pool.acquire() as conn:
        change = await _order(conn, "after")
    assert json.loads((await read_event(resp))["data"])["event_id"] == change.event_id
    resp.close()


async def test_a_replay_longer_than_the_limit_ends_so_the_client_resumes_without_a_gap(
        client: TestClient, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    from api import alerts as alerts_api

    monkeypatch.setattr(alerts_api, "REPLAY_LIMIT", 1)  # the limit is per connection; any size shows it
    monkeypatch.setattr(alerts_api, "REPLAY_BATCH", 1)
    async with pool.acquire() as conn:
        for i in range(3):
            await _order(conn, f"order {i}")
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM alert_events ORDER BY pos")]
    got: list[int] = []
    last = "0"
    for _ in range(10):
        resp = await client.get("/api/v1/events", headers={"Last-Event-ID": last})
        body = (await asyncio.wait_for(resp.read(), 60)).decode()  # the stream ends after the limit
        for block in filter(None, body.split("\n\n")):
            fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
            if "data" in fields:
                got.append(json.loads(fields["data"])["event_id"])
                last = fields["id"]
        if len(got) >= len(ids):
            break
    assert got == ids
