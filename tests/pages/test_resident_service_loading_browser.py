"""The resident page in real headless Chromium opened while the server's road network is still loading.

Found: ``/api/v1/service`` answered ``service_area: null`` while the network loaded (the evacuation service not
ready), with a minute of max-age, and the page took that as the answer: it never asked again, so its map never had
an area to show (no view, no roads, no shelters to tap on) for the whole session. The API now says the null is for
now (``loading``, Retry-After, not to be cached); the page says in its language that the map is being prepared and
that it tries again, asks again after Retry-After (one retry pending), and shows the area when it comes, with no
reload.

The API runs in this process (a thread of its own) on a real PostgreSQL database and a small generated drill town
whose network load waits for the test (a gate before the real load): so the page loads first, the network is ready
after. The page's clock is Playwright's, so the retries' moments are checked exactly.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from sonae.embedded import free_port
from tests.conftest import with_database
from tests.pages.chromium import CHROMIUM, sync_playwright
from tests.pages.test_pages_browser import WAIT_MS, Watched, _context, _database

if sync_playwright is not None:
    from playwright.sync_api import Browser, Page

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(600),
]

T = TypeVar("T")


class Loading:
    """The API on its own event loop in a thread, its road network's load held at a gate until :meth:`ready`."""

    def __init__(self, database_url: str, mqtt_url: str, tmp: Path) -> None:
        import evac.service
        from evac.network import load_network

        self.gate = threading.Event()
        gate = self.gate

        def gated(*args: Any, **kwargs: Any) -> Any:  # (runs in an executor thread of the API's loop)
            if not gate.wait(300):
                raise TimeoutError("the test never opened the gate")
            return load_network(*args, **kwargs)

        self.patch = pytest.MonkeyPatch()
        self.patch.setattr(evac.service, "load_network", gated)
        self.database_url = database_url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run(self._start(mqtt_url, tmp))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=180)

    async def _start(self, mqtt_url: str, tmp: Path) -> None:
        from aiohttp import web

        from api.app import create_app
        from api.evacuation import EVAC
        from evac import store
        from evac.drilltown import generate
        from sonae.config import load_settings
        from sonae.migrations import migrate

        town = generate(tmp / "town", rows=10, cols=10, seed=7)
        conn = await asyncpg.connect(self.database_url)
        try:
            await migrate(conn)
            await store.import_shelters_file(conn, town.shelters, actor="test")
        finally:
            await conn.close()
        settings = load_settings(environ={
            "SONAE_DATABASE_URL": self.database_url, "SONAE_MQTT_URL": mqtt_url, "SONAE_STATE_DIR": str(tmp / "state"),
            "SONAE_LOG_FORMAT": "text", "SONAE_API_RATE_LIMIT_PER_MINUTE": "0", "SONAE_EVAC_NETWORK": str(town.osm),
            "SONAE_EVAC_SEARCH_WORKER": "false"})
        self.pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=8)
        app = create_app(pool=self.pool, settings=settings)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.service = app[EVAC]

    def ready(self) -> list[float]:
        """Let the network load; returns the service area once the engine is ready."""
        self.gate.set()

        async def loaded() -> None:
            await asyncio.wait_for(self.service.loaded.wait(), 180)

        self.run(loaded())
        assert self.service.engine is not None and self.service.service_area is not None
        return [round(v, 6) for v in self.service.service_area]

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.pool.close()

    def stop(self) -> None:
        self.gate.set()
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.patch.undo()


@pytest.fixture
def loading(pg_server_url: str, mqtt_url: str, tmp_path: Path) -> Iterator[Loading]:
    name = f"sonae_test_loading_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    server = None
    try:
        server = Loading(with_database(pg_server_url, name), mqtt_url, tmp_path)
        yield server
    finally:
        if server is not None:
            server.stop()
        _database(pg_server_url, name, create=False)


class Answers:
    """The page's requests of ``/api/v1/service`` and their answers (status, headers, body), in order."""

    def __init__(self, page: Page) -> None:
        self.asked = 0
        self.answers: list[tuple[int, dict[str, str], Any]] = []
        page.on("request", self._request)
        page.on("response", self._response)

    def _request(self, r: Any) -> None:
        if r.url.endswith("/api/v1/service"):
            self.asked += 1

    def _response(self, r: Any) -> None:
        if r.url.endswith("/api/v1/service"):
            self.answers.append((r.status, r.headers, r.json()))


def _shown(page: Page) -> dict[str, Any]:
    return page.evaluate("""() => { const s = window.sonaeResident, b = document.getElementById('start-busy');
        return {area: s.info && s.info.service_area, pending: s.startPending.info || null, hidden: b.hidden,
                text: b.textContent, view: !!window.sonaeMap.view, hazards: document.querySelectorAll('#hazard option').length,
                now: Date.now()}; }""")


LOADING_TEXT = {
    "en": "Still preparing the map of the service area. It will try again automatically shortly.",
    "ja": "サービス区域の地図を準備しています。 しばらくすると自動でもう一度読み込みます。",
    "ja-easy": "この サービスの ちずを じゅんびして います。 すこし たったら、じどうで もう いちど よみこみます。",
}


def test_a_page_opened_while_the_network_loads_asks_again_and_shows_the_area_when_it_is_ready(
        browser: Browser, loading: Loading) -> None:
    ctx = _context(browser, geolocation=False)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        answers = Answers(page)
        page.clock.install()
        page.goto(f"{loading.url}/?lang=en")
        page.wait_for_function("() => document.body.getAttribute('data-ready') === 'true'", timeout=WAIT_MS)
        page.wait_for_function("() => !document.getElementById('start-busy').hidden", timeout=WAIT_MS)
        first = _shown(page)
        # the service answered, for now: no area, the hazards offered, the notice says the map is being prepared
        status, headers, body = answers.answers[0]
        assert status == 200 and body["service_area"] is None and body["loading"] is True, answers.answers
        assert headers["retry-after"] == "5" and headers["cache-control"] == "no-store", headers
        assert first["area"] is None and not first["view"] and first["hazards"] == len(body["hazards"]), first
        assert first["text"] == LOADING_TEXT["en"] and first["pending"]["loading"], first
        wait_ms = first["pending"]["retryAt"] - first["pending"]["since"]
        assert 5000 <= wait_ms <= 60_000, first["pending"]
        # in the page's language whichever it is
        for lang in ("ja-easy", "ja"):
            page.click(f"button[data-lang={lang}]")
            assert _shown(page)["text"] == LOADING_TEXT[lang], lang

        # the page's clock stops: nothing asked before Retry-After, then once; still loading, so asked again later
        now = float(page.evaluate("Date.now()")) + 2000
        page.clock.pause_at(now / 1000)
        page.clock.fast_forward(int(first["pending"]["retryAt"] - now) - 500)
        assert answers.asked == 1, answers.answers
        with page.expect_response(lambda r: r.url.endswith("/api/v1/service"), timeout=WAIT_MS) as again:
            page.clock.fast_forward(1000)
        assert again.value.status == 200 and again.value.json()["service_area"] is None
        page.wait_for_function("(t) => { const p = window.sonaeResident.startPending.info; return p && p.tries > t }",
                               arg=first["pending"]["tries"], timeout=WAIT_MS)
        second = _shown(page)
        assert answers.asked == 2 and not second["view"] and not second["hidden"], second
        assert second["pending"]["retryAt"] - second["pending"]["since"] > wait_ms - 1000, second["pending"]

        # the network is ready: the next retry gets the area, the map shows it, the notice goes
        area = loading.ready()
        with page.expect_response(lambda r: r.url.endswith("/api/v1/service"), timeout=WAIT_MS) as answered:
            page.clock.fast_forward(int(second["pending"]["retryAt"] - float(page.evaluate("Date.now()"))) + 1000)
        assert answered.value.status == 200 and answered.value.json()["service_area"] == area
        assert "loading" not in answered.value.json() and "retry-after" not in answered.value.headers
        page.wait_for_function("() => { const s = window.sonaeResident; return !s.startPending.info"
                               " && s.info.service_area && window.sonaeMap.view }", timeout=WAIT_MS)
        after = _shown(page)
        assert after["area"] == area and after["hidden"] and not after["text"], after
        # the map's view is the area (fitted to it: it holds the whole area)
        w_, s_, e_, n_ = page.evaluate("() => window.sonaeMap.bounds()")
        assert w_ <= area[0] + 1e-6 and s_ <= area[1] + 1e-6 and e_ >= area[2] - 1e-6 and n_ >= area[3] - 1e-6, area
        assert answers.asked == 3, answers.answers
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()
