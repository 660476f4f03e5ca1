"""The resident page in real headless Chromium: a gauge's level is named as the gauge's information, never as
an order, and the page says when what it shows may be out of date (offline, or the database down).

Found (breakit6, resident_live.py / resident_browser.py): with the network dropped, a level-5 order issued and
the page still showed "Level 3 … Updated 22:25" as current with no sign it was offline; during a database
outage ``/api/v1/level`` answered 500 and the page silently kept its old level. And a gauge at 氾濫危険水位 was
shown as "警戒レベル4相当 避難指示" / "Level 4 (equivalent) Evacuation order" when no 避難指示 was issued.

The API runs in this process (a thread of its own) on a real PostgreSQL database reached through a relay that
a test cuts (:class:`tests.db_outage.DatabaseLink`), so the database really becomes unreachable.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from sonae.embedded import free_port
from tests.conftest import with_database
from tests.db_outage import DatabaseLink
from tests.pages.chromium import CHROMIUM, sync_playwright
from tests.pages.test_pages_browser import (
    WAIT_MS,
    Watched,
    _context,
    _database,
    shot,
)

if sync_playwright is not None:
    from playwright.sync_api import Browser, Page

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(600),
]

KORIYAMA = "072036"
#: the resident's position (Koriyama), 300 m from the gauge
POINT = {"latitude": 37.3950, "longitude": 140.3650}
#: an order area around POINT
AREA = {"type": "Polygon", "coordinates": [[[140.35, 37.38], [140.38, 37.38], [140.38, 37.41], [140.35, 37.41],
                                             [140.35, 37.38]]]}
T = TypeVar("T")


class Served:
    """The API on its own event loop in a thread, its pool through a relay to the real server."""

    def __init__(self, database_url: str, mqtt_url: str, state_dir: Path) -> None:
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.link = DatabaseLink(database_url)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run(self._start(mqtt_url, state_dir))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=120)

    async def _start(self, mqtt_url: str, state_dir: Path) -> None:
        from aiohttp import web

        from alerting.rules import Transition
        from alerting.store import apply_transition
        from api.app import create_app
        from ingest.registry import Station, upsert_stations
        from ingest.schema import migrate
        from sonae.config import load_settings

        await self.link.start()
        conn = await asyncpg.connect(self.database_url)
        try:
            await migrate(conn)
            await upsert_stations(conn, [Station(id="arai", name="荒井", kana="あらい", river="阿武隈川",
                                                 municipality_code=KORIYAMA, lat=37.3960, lon=140.3680,
                                                 th_evacuation=4.0, th_danger=5.5)])
            async with conn.transaction():
                await apply_transition(conn, station_id="arai", municipality_code=KORIYAMA, exercise=False,
                                       t=Transition("river_level", None, 4, datetime.now(UTC).timestamp(), 5.6, 5.5,
                                                    "threshold"))
        finally:
            await conn.close()
        settings = load_settings(environ={
            "SONAE_DATABASE_URL": self.link.url, "SONAE_MQTT_URL": mqtt_url, "SONAE_STATE_DIR": str(state_dir),
            "SONAE_LOG_FORMAT": "text", "SONAE_API_RATE_LIMIT_PER_MINUTE": "0"})
        self.pool = await asyncpg.create_pool(self.link.url, min_size=1, max_size=8)
        self.runner = web.AppRunner(create_app(pool=self.pool, settings=settings))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def _order(self, level: int) -> int:
        from alerting.store import issue_order

        conn = await asyncpg.connect(self.database_url)
        try:
            order_id, _ = await issue_order(conn, municipality_code=KORIYAMA, level=level, issued_by="test", area=AREA)
            return order_id
        finally:
            await conn.close()

    async def _cancel(self, order_id: int) -> None:
        from alerting.store import cancel_order

        conn = await asyncpg.connect(self.database_url)
        try:
            await cancel_order(conn, order_id, cancelled_by="test")
        finally:
            await conn.close()

    def order(self, level: int) -> int:
        return self.run(self._order(level))

    def cancel(self, order_id: int) -> None:
        self.run(self._cancel(order_id))

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.link.cut()
        self.pool.terminate()

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def served(pg_server_url: str, mqtt_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = f"sonae_test_stale_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    server = Served(with_database(pg_server_url, name), mqtt_url, tmp_path_factory.mktemp("stale") / "state")
    try:
        yield server
    finally:
        server.stop()
        _database(pg_server_url, name, create=False)


#: resident.js: its poll period and the age at which it asks the level again with no event (ms)
POLL_MS, LEVEL_MAX_AGE_MS = 8000, 60000


def _open(browser: Browser, served: Served, lang: str, *, clock: bool = False) -> tuple[Any, Watched]:
    """The page in ``lang``, its level shown; ``clock``: with Playwright's clock (time flows as usual until a
    test moves it forward), installed before the page's first script runs."""
    ctx = _context(browser, geolocation=POINT)
    if clock:
        ctx.clock.install()
    w = Watched(ctx.new_page())
    w.page.goto(f"{served.url}/?lang={lang}")
    w.page.wait_for_function("() => window.sonaeResident && window.sonaeResident.level !== null"
                             " && document.getElementById('level-action').textContent.trim()", timeout=WAIT_MS)
    return ctx, w


def _level(page: Page) -> dict[str, str]:
    return page.evaluate("""() => Object.fromEntries(['level-num', 'level-name', 'level-action', 'level-source']
        .map(i => [i, document.getElementById(i).textContent]))""")


#: per language: what a gauge at 氾濫危険水位 says (相当 and the gauge information's name, the action) and what it
#: must never say (an order's name, which only a municipality issues)
GAUGE_4 = {
    "ja": (["警戒レベル4相当", "氾濫危険情報", "危険な場所から全員避難"], ["避難指示"]),
    "en": (["Level 4 (equivalent)", "River flood danger", "evacuate now"], ["Evacuation order", "order"]),
    "ja-easy": (["けいかいレベル4ぐらい", "かわが あふれる かもしれない", "みんな にげて"], ["みんな にげる"]),
}
ORDER_4 = {"ja": ("警戒レベル4 避難指示", "相当"), "en": ("Level 4 Evacuation order", "equivalent"),
           "ja-easy": ("けいかいレベル4 みんな にげる", "ぐらい")}


@pytest.mark.parametrize("lang", ["ja", "en", "ja-easy"])
def test_a_gauge_level_is_named_as_the_gauges_information_and_an_issued_order_by_its_name(
        browser: Browser, served: Served, lang: str) -> None:
    ctx, w = _open(browser, served, lang)
    try:
        shown = _level(w.page)
        said, never = GAUGE_4[lang]
        title_and_action = shown["level-name"] + " " + shown["level-action"]
        assert shown["level-num"] == "4"
        assert all(s in title_and_action for s in said), shown
        assert not any(n in shown["level-name"] for n in never), shown
        if lang == "ja-easy":  # the gauge's name with its reading, from the registry's kana
            assert "荒井（あらい）" in shown["level-source"], shown
        shot(w.page, f"resident-gauge-level4-{lang}")
        order_id = served.order(4)
        try:
            w.page.reload()
            title, not_said = ORDER_4[lang]
            w.page.wait_for_function("(t) => document.getElementById('level-name').textContent === t", arg=title,
                                     timeout=WAIT_MS)
            assert not_said not in w.page.inner_text("#level-name")
        finally:
            served.cancel(order_id)
        # (routes and hazards answer 503 here: this server has no road network; scripts must not fail)
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


STALE = {"en": ("Connection lost.", "What is shown dates from {time}", "as of {time}"),
         "ja": ("接続が切れています。", "表示は{time}（日本時間）時点の情報", "{time}（日本時間）時点"),
         "ja-easy": ("インターネットに つながって いません。", "{time}（にほんの じかん）の ものです",
                     "{time}（にほんの じかん）の じょうほう")}


def _stale_box(page: Page) -> dict[str, Any]:
    return page.evaluate("""() => { const b = document.getElementById('stale');
        return {hidden: b.hidden, text: b.textContent, role: b.getAttribute('role'), live: b.getAttribute('aria-live'),
                asof: document.getElementById('level-asof').textContent,
                card: document.getElementById('level-card').getAttribute('data-stale'),
                updated: document.getElementById('updated').textContent}; }""")


@pytest.mark.parametrize("lang", ["en", "ja", "ja-easy"])
def test_offline_the_page_says_its_level_may_be_out_of_date_and_catches_up_when_back(
        browser: Browser, served: Served, lang: str) -> None:
    """resident_live.py offline: the network drops, a level-5 order is issued; the page must say the connection
    is lost and when its information dates from (accessibly), keep retrying, and show level 5 once back."""
    ctx, w = _open(browser, served, lang)
    order_id = None
    try:
        page = w.page
        assert _stale_box(page)["hidden"]
        ctx.set_offline(True)
        order_id = served.order(5)
        page.wait_for_function("() => !document.getElementById('stale').hidden", timeout=WAIT_MS)
        box = _stale_box(page)
        lost, since, asof = STALE[lang]
        time = re.search(r"\d{1,2}:\d{2}", box["text"])
        assert time, box
        assert lost in box["text"] and since.format(time=time.group()) in box["text"], box
        assert asof.format(time=time.group()) in box["asof"], box
        assert box["role"] == "status" and box["live"] == "polite" and box["card"] == "offline", box
        assert _level(page)["level-num"] == "4"  # the old level, now marked as such
        shot(page, f"resident-offline-{lang}")
        ctx.set_offline(False)
        page.wait_for_function("() => document.getElementById('stale').hidden"
                               " && document.getElementById('level-num').textContent === '5'", timeout=WAIT_MS)
        box = _stale_box(page)
        assert box["card"] is None and not box["asof"], box
    finally:
        if order_id is not None:
            served.cancel(order_id)
        ctx.close()


def test_with_the_database_down_the_page_says_so_and_clears_it_when_answers_are_fresh(
        browser: Browser, served: Served) -> None:
    ctx, w = _open(browser, served, "ja", clock=True)
    try:
        page = w.page
        served.run(served.link.cut())
        try:
            # nothing the page reads every poll needs the database (the hazards are the engine's): it learns
            # of the outage when it asks the level again, a minute after the last answer; the clock moves
            # there at once (the page's timers and Date.now(), not the server's)
            page.clock.fast_forward(LEVEL_MAX_AGE_MS + POLL_MS)
            page.wait_for_function("() => !document.getElementById('stale').hidden", timeout=WAIT_MS)
            box = _stale_box(page)
            assert "サーバーから最新の情報を取得できません" in box["text"] and re.search(r"\d{1,2}:\d{2}（日本時間）時点", box["text"]), box
            assert box["card"] == "server", box
            shot(page, "resident-database-down-ja")
        finally:
            served.run(served.link.restore())
        page.clock.fast_forward(POLL_MS)  # the next poll retries while out of date
        page.wait_for_function("() => document.getElementById('stale').hidden", timeout=WAIT_MS)
        assert _stale_box(page)["card"] is None
    finally:
        ctx.close()


def test_once_the_hazards_in_force_end_the_route_no_longer_asks_for_all_of_them(
        browser: Browser, served: Served) -> None:
    """review7: a gauge's flood and a 土砂災害 warning in force at once make the page ask routes for
    ``hazard=flood,landslide`` (a site rated for both). When both ended, the page kept asking for the pair: it
    only followed the hazards in force while some were (``route_hazard`` null was ignored), so a resident with
    nothing in force kept being routed (or told no_shelter_for_all_hazards, with 屋内安全確保 guidance) as if a
    landslide and a flood were both under way, until a reload."""
    from alerting.rules import Transition
    from alerting.store import apply_transition
    from jma.store import store_telegram
    from tests.jma.support import LANDSLIDE
    from tests.jma.test_official_flow import koriyama

    async def landslide() -> None:
        conn = await asyncpg.connect(served.database_url)
        try:
            await store_telegram(conn, link="review7:landslide", data=koriyama(LANDSLIDE[0]))
        finally:
            await conn.close()

    async def end_both() -> None:
        conn = await asyncpg.connect(served.database_url)
        try:
            await conn.execute("UPDATE jma_official_info SET valid_until = now() WHERE phenomenon = '土砂災害'")
            async with conn.transaction():  # the gauge falls back: its alert ends, and the page hears of it
                await apply_transition(conn, station_id="arai", municipality_code=KORIYAMA, exercise=False,
                                       t=Transition("river_level", 4, None, datetime.now(UTC).timestamp(), 3.0, 4.0,
                                                    "threshold"))
        finally:
            await conn.close()

    async def raise_gauge_again() -> None:  # as the module's other tests found it
        conn = await asyncpg.connect(served.database_url)
        try:
            async with conn.transaction():
                await apply_transition(conn, station_id="arai", municipality_code=KORIYAMA, exercise=False,
                                       t=Transition("river_level", None, 4, datetime.now(UTC).timestamp(), 5.6, 5.5,
                                                    "threshold"))
        finally:
            await conn.close()

    served.run(landslide())
    ctx = _context(browser, geolocation=POINT)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        with page.expect_request(lambda r: "/api/v1/route?" in r.url and "hazard=flood%2Clandslide" in r.url,
                                 timeout=WAIT_MS):
            page.goto(f"{served.url}/?lang=ja")
        # nothing in force any more: the next route asked is for one hazard, not the pair
        with page.expect_request(lambda r: "/api/v1/route?" in r.url and "hazard=flood&" in r.url, timeout=WAIT_MS):
            served.run(end_both())
        page.wait_for_function("() => window.sonaeResident.routeHazard === null", timeout=WAIT_MS)
    finally:
        ctx.close()
        served.run(raise_gauge_again())
