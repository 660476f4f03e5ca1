"""The push to a context broker, against an in-process aiohttp stub that checks every request: an alert
raised through the real rules worker is upserted once, failures are retried with backoff, and a broker
that keeps failing (or refuses) puts the entities on the dead-letter list."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from alerting.cap_identity import installation_id
from alerting.store import cancel_order, issue_order
from ingest.contract import Reading
from ingest.store import write_batch
from ngsi import context as ctx
from ngsi.push import PushWorker, backoff, run_push_worker
from sonae.config import load_settings
from tests.alerting.support import running_worker
from tests.ingest_support import wait_until
from tests.ngsi.support import seed

BASE = "http://sonae.test"
KINDS = {"Property", "GeoProperty", "Relationship"}


class StubBroker:
    """An NGSI-LD broker stub: checks content type, @context and the normalized shape of each entity."""

    def __init__(self, *, fail: list[int] | None = None) -> None:
        self.fail = list(fail or [])  # statuses to answer, one per request, before succeeding
        self.requests: list[list[dict[str, Any]]] = []
        self.deletes: list[list[str]] = []
        self.problems: list[str] = []

    async def upsert(self, request: web.Request) -> web.Response:
        if request.content_type != "application/ld+json":
            self.problems.append(f"content type {request.content_type}")
        body = await request.json()
        if not isinstance(body, list) or not body:
            self.problems.append("body is not a non-empty array")
            body = []
        for e in body:
            if e.get("@context") != ctx.context_url(BASE) and ctx.context_url(BASE) not in request.headers.get("Link", ""):
                self.problems.append(f"{e.get('id')}: no @context")
            if not str(e.get("id", "")).startswith("urn:ngsi-ld:") or not e.get("type"):
                self.problems.append(f"bad id/type {e.get('id')}")
            for name, attr in e.items():
                if name in ("id", "type", "@context"):
                    continue
                if not isinstance(attr, dict) or attr.get("type") not in KINDS or not (
                        "value" in attr or "object" in attr):
                    self.problems.append(f"{e.get('id')}.{name} is not a normalized attribute")
        self.requests.append(body)
        if self.fail:
            return web.Response(status=self.fail.pop(0), text="busy")
        return web.Response(status=204)

    async def delete(self, request: web.Request) -> web.Response:
        self.deletes.append(await request.json())
        return web.Response(status=204)

    def upserted(self, eid: str) -> list[dict[str, Any]]:
        return [e for batch in self.requests for e in batch if e["id"] == eid]


@contextlib.asynccontextmanager
async def _serving(app: web.Application) -> AsyncIterator[str]:
    """``app`` served on a free local port: its base URL, while the context lasts."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def broker() -> AsyncIterator[tuple[StubBroker, str]]:
    stub = StubBroker()
    app = web.Application()
    app.router.add_post("/ngsi-ld/v1/entityOperations/upsert", stub.upsert)
    app.router.add_post("/ngsi-ld/v1/entityOperations/delete", stub.delete)
    async with _serving(app) as url:
        yield stub, url


async def _running(worker: PushWorker) -> asyncio.Task[None]:
    return asyncio.create_task(worker.run())


async def _alert_entity_id(pool: asyncpg.Pool, alert_id: int) -> str:
    """An alert's entity id: its CAP incident, which names this installation."""
    async with pool.acquire() as conn:
        return f"urn:ngsi-ld:Alert:sonae-{await installation_id(conn)}-alert-{alert_id}"


async def _state(pool: asyncpg.Pool, eid: str) -> asyncpg.Record | None:
    async with pool.acquire() as conn:
        return await conn.fetchrow("SELECT state, attempts, op FROM ngsi_push_queue WHERE entity_id = $1", eid)


async def test_alert_from_the_rules_worker_is_pushed_once(pool: asyncpg.Pool, broker: tuple[StubBroker, str]) -> None:
    stub, url = broker
    stub.fail = [503]  # the broker is busy at first: the batch is retried
    now = await seed(pool)
    async with running_worker(pool):
        async with pool.acquire() as conn:
            await write_batch(conn, [Reading("g2", "level", now + timedelta(minutes=1 + 10 * k), 2.2 + 0.9 * k)
                                     for k in range(7)])

        async def level_4() -> Any:
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT id FROM alerts WHERE station_id = 'g2' AND audience = 'public' "
                                           "AND cleared_at IS NULL AND level = 4")

        await wait_until(level_4, timeout=120, what="a public level-4 alert for g2")
        alert_id = await level_4()
        eid = await _alert_entity_id(pool, alert_id)
        worker = PushWorker(pool, broker_url=url, base=BASE, retry_base_s=0.05, retry_max_s=0.2, debounce_s=0.05)
        task = await _running(worker)
        try:
            async def sent() -> bool:
                row = await _state(pool, eid)
                return row is not None and row["state"] == "sent"

            await wait_until(sent, timeout=120, what="the alert pushed")
            # a later change elsewhere (a new reading of g0) is pushed too, and the alert is not sent again
            async with pool.acquire() as conn:
                await write_batch(conn, [Reading("g0", "level", now + timedelta(minutes=2), 2.5)])

            async def g0_pushed() -> bool:
                return any(e.get("riverLevel", {}).get("value") == 2.5
                           for e in stub.upserted("urn:ngsi-ld:WaterObserved:g0"))

            await wait_until(g0_pushed, timeout=120, what="the new g0 reading pushed")
        finally:
            worker.stop()
            await asyncio.wait_for(task, 60)
    assert stub.problems == []
    pushes = stub.upserted(eid)
    assert len(pushes) == 2  # the first try (answered 503) and its retry; then never again
    assert pushes[0] == pushes[1]
    alert = pushes[-1]
    assert alert["type"] == "Alert" and alert["warningLevel"]["value"] == 4
    assert alert["alertSource"] == {"type": "Relationship", "object": "urn:ngsi-ld:WaterObserved:g2"}
    assert alert["capDocument"]["value"] == f"{BASE}/api/v1/alerts/{alert_id}.cap"
    row = await _state(pool, eid)
    assert row is not None and row["attempts"] == 2
    assert not any(e["type"] == "Device" for batch in stub.requests for e in batch)  # staff data stays home
    assert len(stub.requests[0]) == len({e["id"] for e in stub.requests[0]})


@pytest.mark.parametrize(("fail", "tries"), [([503] * 10, 3), ([400], 1)])
async def test_failing_broker_dead_letters(pool: asyncpg.Pool, broker: tuple[StubBroker, str],
                                           fail: list[int], tries: int) -> None:
    stub, url = broker
    stub.fail = list(fail)
    await seed(pool)
    worker = PushWorker(pool, broker_url=url, base=BASE, max_attempts=3, retry_base_s=0.02, retry_max_s=0.1,
                        debounce_s=0.02, batch=1000)
    task = await _running(worker)
    try:
        async def all_dead() -> bool:
            async with pool.acquire() as conn:
                states = {r["state"] for r in await conn.fetch("SELECT state FROM ngsi_push_queue")}
            return states == {"dead"}

        await wait_until(all_dead, timeout=120, what="every entity dead-lettered")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
    assert [len(r) for r in stub.requests] == [12] * tries and stub.problems == []
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT attempts, last_status, last_error FROM ngsi_push_queue")
    assert {r["attempts"] for r in rows} == {tries} and {r["last_status"] for r in rows} == {fail[0]}
    assert all(json.dumps(r["last_error"]).startswith(f'"HTTP {fail[0]}') for r in rows)


async def test_a_cancelled_order_is_deleted_from_the_broker(pool: asyncpg.Pool,
                                                           broker: tuple[StubBroker, str]) -> None:
    stub, url = broker
    await seed(pool)
    worker = PushWorker(pool, broker_url=url, base=BASE, retry_base_s=0.05, retry_max_s=0.2, debounce_s=0.05)
    task = await _running(worker)
    try:
        async def town_sent() -> bool:
            row = await _state(pool, "urn:ngsi-ld:MunicipalityWarningLevel:072036")
            return row is not None and row["state"] == "sent"

        await wait_until(town_sent, timeout=120, what="the first push")
        async with pool.acquire() as conn:
            order_id, change = await issue_order(conn, municipality_code="072036", level=3, issued_by="kawa")
        eid = await _alert_entity_id(pool, change.alert_id)

        async def state_is(op: str) -> bool:
            row = await _state(pool, eid)
            return row is not None and row["op"] == op and row["state"] == "sent"

        await wait_until(lambda: state_is("upsert"), timeout=120, what="the order pushed")
        async with pool.acquire() as conn:
            await cancel_order(conn, order_id, cancelled_by="kawa")
        await wait_until(lambda: state_is("delete"), timeout=120, what="the cancelled order deleted")
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
    assert stub.problems == [] and stub.deletes == [[eid]]
    town = stub.upserted("urn:ngsi-ld:MunicipalityWarningLevel:072036")
    assert [t.get("warningLevel", {}).get("value") for t in town] == [None, 3, None]  # before, during, after
    assert "kawa" not in json.dumps(stub.requests, ensure_ascii=False)


def test_backoff_doubles_to_its_ceiling() -> None:
    delays = [backoff(n, base_s=2.0, max_s=600.0) for n in range(1, 11)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 600.0]
    assert backoff(3, base_s=2.0, max_s=600.0, jitter=0.25) == 10.0


async def test_run_push_worker_follows_its_settings(pool: asyncpg.Pool, database_url: str,
                                                    broker: tuple[StubBroker, str]) -> None:
    stub, url = broker
    await seed(pool)
    stop = asyncio.Event()
    off = load_settings(environ={"SONAE_DATABASE_URL": database_url})
    await asyncio.wait_for(run_push_worker(off, pool, stop), 60)  # no broker configured: returns at once
    on = load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_NGSI_BROKER_URL": url,
                                "SONAE_API_PUBLIC_URL": BASE})
    task = asyncio.create_task(run_push_worker(on, pool, stop))
    try:
        await wait_until(lambda: asyncio.sleep(0, result=bool(stub.requests)), timeout=120, what="a push")
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)
    assert stub.problems == [] and len(stub.requests[0]) == 12


async def test_a_207_answer_nested_deeper_than_json_reads_is_unreadable_not_a_crash() -> None:
    """Found: the broker's 207 body was read with json.loads catching ValueError and the like, not
    RecursionError: a body of 5,000 nested brackets escaped the push round as an exception."""
    async def deep(request: web.Request) -> web.Response:
        return web.Response(status=207, text="[" * 5000 + "]" * 5000, content_type="application/json")

    app = web.Application()
    app.router.add_post("/ngsi-ld/v1/entityOperations/delete", deep)
    async with _serving(app) as url:
        worker = PushWorker(None, broker_url=url, base=BASE)
        async with aiohttp.ClientSession() as session:
            got = await worker._send(session, "delete", [{"entity_id": "urn:ngsi-ld:Alert:x"}])  # type: ignore[list-item]
    assert got == (set(), {}, 207, "unreadable 207 body")
