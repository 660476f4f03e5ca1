"""The resident page in real headless Chromium when the server refuses a route as busy (evac/coldfields.py: 429 or
503, ``status_code`` ``route_busy``, Retry-After).

Found: the page treated that refusal like any route error: it dropped the route it showed and said only
"The route could not be found just now", with no retry. It now keeps the route shown (marked when the hazard state
changed since), says the server is busy and that it will try again, in the page's language, and asks again once,
after Retry-After; the answer clears the notice.

The API runs in this process (a thread of its own) on a real PostgreSQL database and a small generated drill
town, with the real cold field budget set to one field a minute per client. Its clock is the test's: the
page's clock too (Playwright's), so a wait of 60 s takes no time and the retry's moment is checked exactly.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from sonae.embedded import free_port
from sonae.municipality_code import DRILL_TOWN_CENTER
from sonae.ratelimit import TokenBuckets
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

#: a position inside the generated town (its centre, off the grid's nodes)
HOME = {"latitude": DRILL_TOWN_CENTER[0] + 0.0001, "longitude": DRILL_TOWN_CENTER[1] + 0.0002}
T = TypeVar("T")


class Served:
    """The API on its own event loop in a thread; its cold field budget reads :meth:`clock`, which the test moves.

    ``rate_limit_per_minute``: the API's general per-client rate limit (``api.rate_limit_per_minute``, 0: none),
    the real one (api/ratelimit.py) on a clock of the test's that stands still until the test moves it
    (:meth:`refill`): so its refusals come exactly when the test has spent the budget (:meth:`over_limit`)."""

    def __init__(self, database_url: str, mqtt_url: str, tmp: Path, *, rate_limit_per_minute: int = 0) -> None:
        self.database_url = database_url
        self.offset = 0.0  # s added to the budget's clock
        self.rate_limit_per_minute = rate_limit_per_minute
        self.limit_at = 0.0  # the rate limit's clock (s)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run(self._start(mqtt_url, tmp))

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=180)

    def clock(self) -> float:
        return time.monotonic() + self.offset

    async def _start(self, mqtt_url: str, tmp: Path) -> None:
        from aiohttp import web

        import api.ratelimit
        from api.app import create_app
        from api.evacuation import EVAC
        from evac import store
        from evac.drilltown import generate
        from sonae.config import load_settings
        from sonae.migrations import migrate

        town = generate(tmp / "town", rows=12, cols=12, seed=5)
        conn = await asyncpg.connect(self.database_url)
        try:
            await migrate(conn)
            await store.import_shelters_file(conn, town.shelters, actor="test")
        finally:
            await conn.close()
        settings = load_settings(environ={
            "SONAE_DATABASE_URL": self.database_url, "SONAE_MQTT_URL": mqtt_url, "SONAE_STATE_DIR": str(tmp / "state"),
            "SONAE_LOG_FORMAT": "text", "SONAE_API_RATE_LIMIT_PER_MINUTE": str(self.rate_limit_per_minute),
            "SONAE_EVAC_NETWORK": str(town.osm),
            "SONAE_EVAC_SEARCH_WORKER": "false",
            # one cold route field a minute for a client (the browser and this test are one: 127.0.0.1)
            "SONAE_EVAC_COLD_FIELDS_PER_CLIENT_PER_MINUTE": "1", "SONAE_EVAC_COLD_FIELDS_PER_MINUTE": "0"})
        self.pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=8)
        served = self

        class Clocked(TokenBuckets):
            """The rate limit's buckets on the test's clock (``limit_at``)."""

            def take(self, client: str, now: float | None = None) -> float:
                return super().take(client, served.limit_at if now is None else now)

            def wait(self, client: str, now: float | None = None) -> float:
                return super().wait(client, served.limit_at if now is None else now)

        with pytest.MonkeyPatch.context() as patch:  # the middleware made here keeps the buckets it made
            patch.setattr(api.ratelimit, "TokenBuckets", Clocked)
            app = create_app(pool=self.pool, settings=settings)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        service = app[EVAC]
        await asyncio.wait_for(service.loaded.wait(), 180)
        assert service.engine is not None, "the drill town's network was not loaded"
        service.cold.clock = self.clock

    def spend(self, hazard: str, profile: str = "walk") -> None:
        """Use up this minute's cold field of 127.0.0.1 (the browser's address too): a route for ``hazard``
        (and ``profile``) a minute later on the budget's clock than anything before, so the bucket was full."""
        self.offset += 120
        q = urllib.parse.urlencode({"lat": HOME["latitude"], "lon": HOME["longitude"], "hazard": hazard,
                                    "profile": profile})
        with urllib.request.urlopen(f"{self.url}/api/v1/route?{q}", timeout=60) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:  # the next cold one is refused
            urllib.request.urlopen(f"{self.url}/api/v1/route?{q.replace(hazard, 'volcano')}", timeout=60)
        assert refused.value.code == 429

    def refill(self) -> None:
        """The rate limit's budget of every client full again (its clock an hour on)."""
        self.limit_at += 3600

    def over_limit(self) -> tuple[int, dict[str, Any]]:
        """Spend what is left of the rate limit's budget of 127.0.0.1 (the browser's address too) with plain
        requests, up to the first refused; returns its Retry-After (s) and its problem."""
        for _ in range(max(10, self.rate_limit_per_minute // 6) + 1):  # (its burst: sonae.ratelimit.TokenBuckets)
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/service", timeout=60) as resp:
                    assert resp.status == 200
            except urllib.error.HTTPError as refused:
                assert refused.code == 429, refused.code
                return int(refused.headers["Retry-After"]), json.loads(refused.read())
        raise AssertionError("the rate limit refused nothing")

    def add_area(self) -> None:
        """A new hazard area (a corner of the town): the hazard state changes, pages hear of it."""
        from evac import store

        lat, lon = DRILL_TOWN_CENTER
        ring = [[lon + 0.004, lat + 0.003], [lon + 0.005, lat + 0.003], [lon + 0.005, lat + 0.004],
                [lon + 0.004, lat + 0.004], [lon + 0.004, lat + 0.003]]

        async def add() -> None:
            conn = await asyncpg.connect(self.database_url)
            try:
                area = store.hazard_area(hazard="landslide", geometry={"type": "Polygon", "coordinates": [ring]})
                await store.add_hazard_area(conn, area, actor="test")
            finally:
                await conn.close()

        self.run(add())

    async def _stop(self) -> None:
        await self.runner.cleanup()
        await self.pool.close()

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def served(pg_server_url: str, mqtt_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = f"sonae_test_busy_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    server = None
    try:
        server = Served(with_database(pg_server_url, name), mqtt_url, tmp_path_factory.mktemp("busy"))
        yield server
    finally:
        if server is not None:
            server.stop()
        _database(pg_server_url, name, create=False)


#: the busy notice is shown (a page without one: False)
SHOWN = "(document.getElementById('route-busy') || {hidden: true}).hidden === false"


def _busy(page: Page) -> dict[str, Any]:
    return page.evaluate("""() => { const b = document.getElementById('route-busy'), s = window.sonaeResident;
        return {hidden: b ? b.hidden : null, text: b ? b.textContent : null, role: b ? b.getAttribute('role') : null,
                card: document.getElementById('route-card').getAttribute('data-busy'),
                guidance: document.getElementById('guidance').textContent, seq: s.seq, busy: s.routeBusy,
                route: s.route && s.route.properties, line: !!document.querySelector('.layer-route [data-id=route-line]'),
                now: Date.now()}; }""")


class Routes:
    """The route requests a page made and the answers it got, each list in order, and both in one (``events``:
    a request's URL, or an answer's status)."""

    def __init__(self, page: Page) -> None:
        self.asked: list[str] = []
        self.answers: list[tuple[int, dict[str, str]]] = []
        self.events: list[str | int] = []
        page.on("request", self._request)
        page.on("response", self._response)

    def _request(self, r: Any) -> None:
        if "/api/v1/route?" in r.url:
            self.asked.append(r.url)
            self.events.append(r.url)

    def _response(self, r: Any) -> None:
        if "/api/v1/route?" in r.url:
            self.answers.append((r.status, r.headers))
            self.events.append(r.status)

    def after_refusal(self) -> list[str | int]:
        """What happened after the last refusal up to the next route answered."""
        last = max(i for i, e in enumerate(self.events) if e in (429, 503))
        rest = self.events[last + 1:]
        return rest[:rest.index(200) + 1] if 200 in rest else rest


def _pause(page: Page) -> float:
    """Stop the page's clock (it ran as real time since it was installed); returns its time then (ms)."""
    now = float(page.evaluate("Date.now()")) + 2000  # (later than the page's time when the call arrives)
    page.clock.pause_at(now / 1000)
    return now


def test_a_route_refused_as_busy_stays_shown_is_marked_and_asked_again_after_retry_after(
        browser: Browser, served: Served) -> None:
    ctx = _context(browser, geolocation=HOME)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        routes = Routes(page)
        page.clock.install()
        page.goto(f"{served.url}/?lang=en")
        page.wait_for_function("() => { const s = window.sonaeResident;"
                               " return s && s.route && s.route.properties.status === 'ok' }", timeout=WAIT_MS)
        shown = _busy(page)
        assert shown["hidden"] and shown["route"]["hazard"] == "flood" and shown["line"], shown  # (warm: never refused)
        served.spend("storm_surge")
        asked = len(routes.asked)
        page.select_option("#hazard", "landslide")  # a field not computed yet: the budget refuses it
        page.wait_for_function(f"() => {SHOWN} || !window.sonaeResident.route", timeout=WAIT_MS)
        busy = _busy(page)
        status, headers = routes.answers[-1]
        assert status == 429 and len(routes.asked) == asked + 1, routes.answers
        retry_after = int(headers["retry-after"])
        # the route shown stays, with its guidance; the notice says why and that the page will ask again
        assert busy["route"] == shown["route"] and busy["line"] and busy["guidance"] == shown["guidance"], busy
        assert "could not be found" not in busy["guidance"]
        assert busy["text"] == ("The server is busy, so the route could not be updated. The route found earlier is "
                                "shown. It will try again automatically shortly."), busy
        assert busy["role"] == "status" and busy["card"] == "kept", busy
        wait_ms = busy["busy"]["retryAt"] - busy["busy"]["since"]
        assert 1000 * retry_after <= wait_ms <= 60_000, (retry_after, busy["busy"])

        # the hazard state changes: the page hears it but does not ask the busy server again; the route shown
        # is now marked as possibly out of date
        served.add_area()
        page.wait_for_function("() => document.getElementById('route-card').getAttribute('data-busy') === 'outdated'",
                               timeout=WAIT_MS)
        busy = _busy(page)
        assert "The hazard situation has changed since, so this route may be out of date." in busy["text"], busy
        assert busy["route"] == shown["route"] and len(routes.asked) == asked + 1, routes.asked

        # no request until Retry-After has passed (the page's clock jumps: its poll runs meanwhile)
        now = _pause(page)
        page.clock.fast_forward(int(busy["busy"]["retryAt"] - now) - 1000)
        before = _busy(page)
        assert before["seq"] == busy["seq"] and not before["hidden"] and len(routes.asked) == asked + 1, before
        # then one: the server's budget has a field again by now, the route is answered, the notice goes
        served.offset += 60
        page.clock.fast_forward(2000)
        page.wait_for_function("() => { const s = window.sonaeResident; return !s.routeBusy && s.route"
                               " && s.route.properties.hazard === 'landslide' }", timeout=WAIT_MS)
        after = _busy(page)
        assert after["hidden"] and not after["text"] and after["card"] is None, after
        # one retry, answered (the page may ask again after that: its level is a minute old by its clock)
        retried = routes.after_refusal()
        assert len(retried) == 2 and "hazard=landslide" in str(retried[0]) and retried[1] == 200, routes.events
        assert after["route"]["hazard_version"] > shown["route"]["hazard_version"], after
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


NO_ROUTE_YET = {
    "ja": "サーバーが混み合っているため、まだ経路を表示できません。 しばらくすると自動でもう一度調べます。",
    "ja-easy": "いま こんで いて、まだ みちを だせません。 すこし たったら、じどうで もう いちど しらべます。",
}


@pytest.mark.parametrize(("lang", "hazard", "spent"), [("ja", "earthquake", "tsunami"),
                                                       ("ja-easy", "large_fire", "inland_flooding")])
def test_with_no_route_shown_yet_a_busy_answer_says_so_and_the_retry_shows_the_route(
        browser: Browser, served: Served, lang: str, hazard: str, spent: str) -> None:
    ctx = _context(browser, geolocation=False)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        routes = Routes(page)
        page.clock.install()
        page.goto(f"{served.url}/?lang={lang}")
        page.wait_for_function("() => document.body.getAttribute('data-ready') === 'true'", timeout=WAIT_MS)
        page.select_option("#hazard", hazard)  # no place yet: nothing asked
        served.spend(spent)
        ctx.grant_permissions(["geolocation"])
        ctx.set_geolocation(HOME)
        page.click("#locate")
        page.wait_for_function(f"() => {SHOWN} || document.getElementById('guidance').classList.contains('bad')",
                               timeout=WAIT_MS)
        busy = _busy(page)
        assert routes.answers[-1][0] == 429 and len(routes.asked) == 1, routes.answers
        assert busy["route"] is None and busy["card"] == "none" and busy["text"] == NO_ROUTE_YET[lang], busy
        now = _pause(page)
        served.offset += 60
        page.clock.fast_forward(int(busy["busy"]["retryAt"] - now) + 1000)
        page.wait_for_function("() => { const s = window.sonaeResident; return !s.routeBusy && s.route }",
                               timeout=WAIT_MS)
        after = _busy(page)
        assert after["hidden"] and after["route"]["hazard"] == hazard, after
        retried = routes.after_refusal()
        assert len(retried) == 2 and f"hazard={hazard}" in str(retried[0]) and retried[1] == 200, routes.events
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


#: words of three Latin letters or more: English (the drill town's shelters and streets have Japanese names only,
#: and a Japanese distance's unit is m or km)
ENGLISH_WORD = re.compile(r"[A-Za-z]{3,}")


def _shown_texts(page: Page) -> dict[str, Any]:
    """What the route and level cards show (innerText: hidden elements are not shown), and the route's own texts."""
    return page.evaluate("""() => { const s = window.sonaeResident;
        return {route_card: document.getElementById('route-card').innerText,
                level_card: document.getElementById('level-card').innerText,
                guidance: document.getElementById('guidance').textContent,
                busy: document.getElementById('route-busy').textContent,
                steps: [...document.querySelectorAll('#steps li')].map(li => li.textContent),
                lang: document.documentElement.lang, line: !!document.querySelector('.layer-route [data-id=route-line]'),
                route: s.route && s.route.properties}; }""")


def test_a_language_switch_while_the_route_is_refused_as_busy_leaves_no_text_in_the_old_language(
        browser: Browser, served: Served) -> None:
    """Found: with the route refused as busy, a switch of language asked the route again in the new language, was
    refused again, and the route kept on screen went on showing its guidance and its steps in the old language
    (English directions under a Japanese heading and busy notice). The route's own texts are written by the server
    in the language asked, one language an answer (api/evacuation.py): the page now shows them only when they are
    in its language; until the route is answered in it, the kept route's line, shelter, distance and time stay,
    and the page says, in its language, that the directions follow when the server answers (the busy notice: that
    it asks again by itself); the retry answers them in the new language."""
    ctx = _context(browser, geolocation=HOME)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        routes = Routes(page)
        page.clock.install()
        page.goto(f"{served.url}/?lang=en")
        page.wait_for_function("() => { const s = window.sonaeResident;"
                               " return s && s.route && s.route.properties.status === 'ok' }", timeout=WAIT_MS)
        english = _shown_texts(page)
        assert english["steps"] and english["guidance"] and english["lang"] == "en", english
        # a profile whose field is not computed yet, with this minute's budget used up: refused as busy, the
        # route shown (on foot) is kept, in English
        served.spend("flood", profile="reduced_mobility")
        page.select_option("#profile", "car")
        page.wait_for_function(f"() => {SHOWN}", timeout=WAIT_MS)
        first = _busy(page)
        assert routes.answers[-1][0] == 429 and first["guidance"] == english["guidance"], (routes.answers, first)

        # the page's clock stops: the refusal below is known handled when the retry's moment it sets has changed
        now = _pause(page)
        with page.expect_response(lambda r: "/api/v1/route?" in r.url and "lang=ja&" in r.url,
                                  timeout=WAIT_MS) as answer:
            page.click("button[data-lang=ja]")
        assert answer.value.status == 429, answer.value.status
        page.wait_for_function("(at) => { const b = window.sonaeResident.routeBusy; return b && b.retryAt !== at }",
                               arg=first["busy"]["retryAt"], timeout=WAIT_MS)
        shown = _shown_texts(page)
        busy = _busy(page)
        assert shown["lang"] == "ja" and shown["line"] and shown["route"] == english["route"], shown
        # every text of both cards in Japanese: none of the kept route's English directions, no English word
        assert not ENGLISH_WORD.findall(shown["route_card"]), shown["route_card"]
        assert not ENGLISH_WORD.findall(shown["level_card"]), shown["level_card"]
        assert english["guidance"] not in shown["route_card"], shown
        assert not [s for s in english["steps"] if s in shown["route_card"]], shown
        assert busy["text"] == ("サーバーが混み合っているため、経路を更新できませんでした。前に調べた経路を表示しています。"
                                " しばらくすると自動でもう一度調べます。"), busy
        assert shown["guidance"] == "日本語の道順は、サーバーから届きしだい表示します。", shown

        # the retry, after Retry-After: the route in Japanese, with its directions
        served.offset += 60
        page.clock.fast_forward(int(busy["busy"]["retryAt"] - now) + 1000)
        page.wait_for_function("() => { const s = window.sonaeResident; return !s.routeBusy && s.route"
                               " && s.route.properties.profile === 'car' }", timeout=WAIT_MS)
        after = _shown_texts(page)
        assert "lang=ja&" in routes.asked[-1] and routes.answers[-1][0] == 200, routes.events
        assert after["steps"] and after["guidance"] == after["route"]["guidance"], after
        assert not ENGLISH_WORD.findall(after["route_card"]), after["route_card"]
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()
