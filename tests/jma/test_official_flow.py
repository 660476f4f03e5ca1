"""A 土砂災害警戒情報 for 郡山市 through the local JMA feed, the reader, the store and the API.

The 2025 神奈川県 sample sequence (発表 → 継続 → 解除) with 小田原市 (1420600) replaced by 郡山市
(0720300 = 団体コード 07203 + 00): the level of 072036 becomes 4 once the reader has polled, names its
source, asks routes to avoid landslides, and clears on 解除. Real PostgreSQL; no sleeps as
synchronisation (conditions are polled with deadlines) and no timed assertions: the deadlines are
generous, since a poll returns as soon as its condition holds, and how fast a telegram goes through
is for ``bench/``, not for a test on a loaded machine.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp.test_utils import TestServer

from jma.reader import FeedReader, read_files
from jma.store import store_telegram
from jma.telegram import parse
from simulators.jma_feed import JmaFeed
from sonae.config import Settings
from tests.api.test_api_staff import KORIYAMA, make_client
from tests.jma.support import LANDSLIDE, sample, substitute

INTERVAL_S = 0.3
WAIT_S = 120  # a deadline for work that takes well under a second on an idle machine


def koriyama(name: str, *, status: str | None = None) -> bytes:
    return substitute(sample(name), code7="1420600", name="小田原市", as_code7="0720300", as_name="郡山市",
                      status=status)


async def until(check: Callable[[], Awaitable[Any]], *, within_s: float, what: str) -> Any:
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {within_s}s: {what}"
        await asyncio.sleep(0.05)


async def _serve(feed: JmaFeed) -> TestServer:
    server = TestServer(feed.app(), host="127.0.0.1")
    await server.start_server()
    return server


async def test_landslide_warning_raises_names_routes_and_clears(pool: asyncpg.Pool, settings: Settings) -> None:
    feed = JmaFeed([koriyama(n) for n in LANDSLIDE])
    server = await _serve(feed)
    client = await make_client(pool, settings)
    reader = FeedReader(pool, feeds=[str(server.make_url("/feed.xml"))], interval_s=INTERVAL_S, retry_base_s=0.05)
    task = asyncio.create_task(reader.run())
    try:
        async def level(lang: str = "ja") -> dict[str, Any]:
            response = await client.get("/api/v1/level", params={"municipality": KORIYAMA, "lang": lang})
            assert response.status == 200
            return await response.json()

        assert (await level())["level"] is None
        feed.publish_next()
        body = await until(lambda: _at(level, 4), within_s=WAIT_S, what="level 4 from 発表")
        official = [s for s in body["sources"] if s["kind"] == "official"]
        # the sample's Head/Title is 神奈川県レベル４土砂災害危険警報 (2024 review): new name beside the former
        assert official and official[0]["name"] == "気象庁: レベル４土砂災害危険警報（土砂災害警戒情報）"
        assert official[0]["suggested_order"] == "避難指示" and official[0]["hazard"] == "landslide"
        assert body["hazard"] == "landslide" and body["exercise"] is False
        english = await level("en")
        name_en = english["sources"][0]["name"]
        assert name_en.startswith("JMA: level 4 landslide danger warning (landslide alert information")
        assert not re.search(r"[\u3000-\u30ff\u4e00-\u9fff]", name_en), name_en  # English only
        # never re-issued as the municipality's own alert
        alerts = await (await client.get("/api/v1/alerts", params={"municipality": KORIYAMA})).json()
        assert not [a for a in (alerts if isinstance(alerts, list) else alerts.get("alerts", []))
                    if a.get("municipality_code") == KORIYAMA]
        # a neighbour the telegram did not name stays calm
        other = await client.get("/api/v1/level", params={"municipality": "072010"})
        assert (await other.json())["level"] is None

        feed.publish_next()  # 継続
        await until(lambda: _stored(pool, 2), within_s=WAIT_S, what="継続 stored")
        assert (await level())["level"] == 4
        feed.publish_next()  # 解除
        await until(lambda: _at(level, None), within_s=WAIT_S, what="cleared by 解除")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()
        await server.close()


async def _at(level: Callable[[], Awaitable[dict[str, Any]]], want: int | None) -> dict[str, Any] | None:
    body = await level()
    return body if body["level"] == want else None


async def _stored(pool: asyncpg.Pool, n: int) -> bool:
    async with pool.acquire() as conn:
        return bool(await conn.fetchval("SELECT count(*) FROM jma_telegrams") >= n)


async def test_reader_restarted_mid_sequence_loses_and_doubles_nothing(pool: asyncpg.Pool) -> None:
    feed = JmaFeed([koriyama(n) for n in LANDSLIDE])
    server = await _serve(feed)
    url = str(server.make_url("/feed.xml"))
    try:
        feed.publish_next()
        first = await FeedReader(pool, feeds=[url]).poll_once()
        assert first == {"applied": 1}
        feed.publish_next()
        feed.publish_next()  # both published while the reader is down
        again = FeedReader(pool, feeds=[url])  # a new process: only the database remembers
        assert await again.poll_once() == {"applied": 2}
        assert await again.poll_once() == {"not_modified": 1}
        assert feed.not_modified == 1
        async with pool.acquire() as conn:
            rows = await conn.fetch("SELECT link, outcome FROM jma_telegrams ORDER BY id")
            in_force = await conn.fetchval("SELECT count(*) FROM jma_official_info")
        assert [r["link"].rsplit("/", 1)[1] for r in rows] == ["0.xml", "1.xml", "2.xml"]
        assert {r["outcome"] for r in rows} == {"applied"} and in_force == 0
    finally:
        await server.close()


async def test_drill_telegram_never_shows_as_real(pool: asyncpg.Pool, settings: Settings) -> None:
    client = await make_client(pool, settings)
    try:
        outcomes = []
        async with pool.acquire() as conn:
            outcomes.append(await store_telegram(conn, link="drill-1", data=koriyama(LANDSLIDE[0], status="訓練")))
        body = await (await client.get("/api/v1/level", params={"municipality": KORIYAMA})).json()
        assert body["level"] == 4 and body["exercise"] is True
        assert all(s["exercise"] for s in body["sources"])
        # a real telegram for the same area is a separate event: the drill's 解除 cannot clear it
        async with pool.acquire() as conn:
            outcomes.append(await store_telegram(conn, link="real-1", data=koriyama(LANDSLIDE[0])))
            outcomes.append(await store_telegram(conn, link="drill-2", data=koriyama(LANDSLIDE[2], status="訓練")))
        body = await (await client.get("/api/v1/level", params={"municipality": KORIYAMA})).json()
        assert body["level"] == 4 and body["exercise"] is False
        assert outcomes == ["applied", "applied", "applied"]
    finally:
        await client.close()


async def test_test_telegrams_are_ignored_and_counted(pool: asyncpg.Pool, tmp_path) -> None:
    (tmp_path / "a.xml").write_bytes(koriyama(LANDSLIDE[0], status="試験"))
    (tmp_path / "b.xml").write_bytes(b"<not a telegram")
    async with pool.acquire() as conn:
        outcomes = await read_files(conn, [tmp_path])
        assert outcomes == ["ignored_test", "failed:not_xml"]
        assert await read_files(conn, [tmp_path]) == ["duplicate", "duplicate"]
    async with pool.acquire() as conn:
        kept = await conn.fetch("SELECT outcome, error_reason, length(raw) AS n FROM jma_telegrams ORDER BY id")
        in_force = await conn.fetchval("SELECT count(*) FROM jma_official_info")
    assert [(r["outcome"], r["error_reason"]) for r in kept] == [("ignored_test", None), ("failed", "not_xml")]
    assert all(r["n"] > 0 for r in kept) and in_force == 0


async def test_cancellation_retracts_the_event(pool: asyncpg.Pool) -> None:
    data = koriyama(LANDSLIDE[0])
    cancel = data.replace("<InfoType>発表</InfoType>".encode(), "<InfoType>取消</InfoType>".encode())
    cancel = cancel.replace(b"<Serial>1</Serial>", b"<Serial>2</Serial>")
    async with pool.acquire() as conn:
        assert await store_telegram(conn, link="a", data=data) == "applied"
        assert await conn.fetchval("SELECT count(*) FROM jma_official_info WHERE municipality_code = $1",
                                   KORIYAMA) == 1
        assert await store_telegram(conn, link="b", data=cancel) == "applied"
        assert await conn.fetchval("SELECT count(*) FROM jma_official_info") == 0
        # an older serial arriving late changes nothing
        assert await store_telegram(conn, link="c", data=data) == "stale"
        assert await conn.fetchval("SELECT count(*) FROM jma_official_info") == 0


async def test_readyz_says_when_a_configured_feed_is_unreachable(pool: asyncpg.Pool, database_url: str,
                                                                 mqtt_url: str, tmp_path,
                                                                 refusing_port: int) -> None:
    from sonae.config import load_settings

    settings = load_settings(environ={
        "SONAE_DATABASE_URL": database_url, "SONAE_MQTT_URL": mqtt_url, "SONAE_STATE_DIR": str(tmp_path),
        "SONAE_JMA_FEEDS": f"http://127.0.0.1:{refusing_port}/feed.xml", "SONAE_JMA_POLL_INTERVAL_S": "0.1"})
    client = await make_client(pool, settings)
    try:
        async def not_ready() -> dict[str, Any] | None:
            response = await client.get("/readyz")
            body = await response.json()
            return body if response.status == 503 else None

        body = await until(not_ready, within_s=WAIT_S, what="/readyz not ready")
        assert body["checks"]["jma feed"] == "not ready" and body["checks"]["database"] == "ok"
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT error FROM jma_feeds") == "unreachable"
    finally:
        await client.close()


async def test_sonae_simulate_jma_serves_a_directory_the_reader_stores(pool: asyncpg.Pool, tmp_path) -> None:
    import os
    import subprocess
    import sys

    for n, name in enumerate(LANDSLIDE):
        (tmp_path / f"{n:02d}.xml").write_bytes(koriyama(name))
    # port 0: the simulator binds a port of the system's choosing and prints its URL (a port probed
    # free here could be taken before the simulator binds it)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "simulate", "--jma", str(tmp_path), "--jma-port", "0",
        "--jma-interval-s", "0.2", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        env={**os.environ, "SONAE_LOG_FORMAT": "text"})
    try:
        assert process.stdout is not None
        first = (await asyncio.wait_for(process.stdout.readline(), WAIT_S)).decode()
        found = re.search(r"http://127\.0\.0\.1:(\d+)/feed\.xml", first)
        assert found and int(found[1]) > 0, first
        reader = FeedReader(pool, feeds=[found[0]], retry_base_s=0.1, attempts=30)

        async def all_stored() -> bool:
            await reader.poll_once()
            return await _stored(pool, len(LANDSLIDE))

        await until(all_stored, within_s=WAIT_S, what="every telegram of the directory stored")
        async with pool.acquire() as conn:
            outcomes = [r["outcome"] for r in await conn.fetch("SELECT outcome FROM jma_telegrams ORDER BY id")]
            in_force = await conn.fetchval("SELECT count(*) FROM jma_official_info")
        assert outcomes == ["applied"] * len(LANDSLIDE) and in_force == 0  # the last one is the 解除
    finally:
        process.terminate()
        await asyncio.wait_for(process.communicate(), WAIT_S)


async def test_sse_tells_clients_when_official_information_changes(pool: asyncpg.Pool, settings: Settings) -> None:
    import json

    client = await make_client(pool, settings)
    try:
        response = await client.get("/api/v1/events")
        assert response.status == 200
        async with pool.acquire() as conn:
            assert await store_telegram(conn, link="sse-1", data=koriyama(LANDSLIDE[0])) == "applied"

        async def official_event() -> dict[str, Any] | None:
            line = await asyncio.wait_for(response.content.readline(), WAIT_S)
            if line.startswith(b"event: official"):
                data = await response.content.readline()
                return json.loads(data.decode().removeprefix("data: "))
            return None

        event = await until(official_event, within_s=WAIT_S, what="event: official")
        assert event["municipalities"] == [KORIYAMA] and event["exercise"] is False
        assert event["title"] == parse(koriyama(LANDSLIDE[0])).title
        response.close()
    finally:
        await client.close()


async def test_feed_entries_on_another_host_are_not_fetched(pool: asyncpg.Pool) -> None:
    from aiohttp import web

    feed = ('<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><entry><id>x</id>'
            '<link href="http://192.0.2.1/data/x.xml"/></entry></feed>')

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text=feed, content_type="application/atom+xml")

    app = web.Application()
    app.router.add_get("/feed.xml", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        counts = await FeedReader(pool, feeds=[str(server.make_url("/feed.xml"))]).poll_once()
        assert counts == {"foreign_link": 1}
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM jma_telegrams") == 0
    finally:
        await server.close()
