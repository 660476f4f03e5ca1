"""The staff console in real headless Chromium when the server refuses its reads for now: a 429 (the rate limit,
api/ratelimit.py, which every desk behind one office address shares: the map's roads are asked for without the
console's token, so it applies to them), or a 503 with Retry-After (the database unreachable, api/edge.py; the road
network still loading, for the hazard areas).

Found: the map took a refused roads request as "no roads" and blanked them; the lists said "Could not load: Too
Many Requests" and the poll asked again at its own pace, whatever Retry-After said; a refused chart drew "no
data". Each read refused now keeps what the console shows, #busy-status says the server is busy and what could
not be updated (ja with its English gloss, or en), and the read is asked again once, after Retry-After (one helper,
staff.js waitOut); the answer clears the notice.

The API runs in this process (tests/pages/test_resident_route_busy_browser.py ``Served``) on a real PostgreSQL
database and a small generated drill town, its real rate limit on a clock of the test's that stands still until the
test refills it; the page's clock is Playwright's, so the retries' moments are checked exactly. The console's own
reads carry its token, which passes the rate limit: their refusal here is the 503 with Retry-After the API answers
when its database is unreachable (api/edge.py), given by the browser in the server's place.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sonae.municipality_code import DRILL_TOWN_CENTER
from tests.conftest import with_database
from tests.pages.chromium import CHROMIUM, sync_playwright
from tests.pages.test_pages_browser import WAIT_MS, Watched, _context, _database
from tests.pages.test_resident_route_busy_browser import Served, _pause

if sync_playwright is not None:
    from playwright.sync_api import Browser, Page

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(600),
]

PASSWORD = "busy-desk-" + uuid.uuid4().hex[:8]
POLL_MS = 15_000  # staff.js POLL_MS
UNREACHABLE_S = 7  # the Retry-After of the 503s given in the server's place


@pytest.fixture(scope="module")
def served(pg_server_url: str, mqtt_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = f"sonae_test_staff_busy_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    server = None
    try:
        # 600 a minute: a burst of 100 for the console's start (its reads, the roads, the charts)
        server = Served(with_database(pg_server_url, name), mqtt_url, tmp_path_factory.mktemp("staffbusy"),
                        rate_limit_per_minute=600)

        async def seed() -> None:
            from api.auth import create_account
            from ingest.registry import Station, upsert_stations

            async with server.pool.acquire() as conn:
                await create_account(conn, username="busydesk", password=PASSWORD, role="staff")
                await upsert_stations(conn, [Station(
                    id="busy-gauge", name="混雑橋", name_en="Busy Bridge", river="試験川", lat=DRILL_TOWN_CENTER[0],
                    lon=DRILL_TOWN_CENTER[1], th_standby=1.0, th_caution=2.0, th_evacuation=2.5, th_danger=3.0)])

        server.run(seed())
        yield server
    finally:
        if server is not None:
            server.stop()
        _database(pg_server_url, name, create=False)


class Asked:
    """The console's API requests and answers, in order: ``(path, status or None for a request)``."""

    def __init__(self, page: Page) -> None:
        self.events: list[tuple[str, int | None]] = []
        self.bboxes: list[tuple[str, int]] = []  # the roads' answers: (bbox, status)
        page.on("request", lambda r: self._add(r.url, None))
        page.on("response", lambda r: self._add(r.url, r.status))

    def _add(self, url: str, status: int | None) -> None:
        if "/api/v1/network.geojson?bbox=" in url and status is not None:
            self.bboxes.append((url.split("bbox=", 1)[1], status))
        if "/api/v1/" in url:
            self.events.append((url.split("/api/v1/", 1)[1].split("?", 1)[0], status))

    def count(self, path: str, status: int | None = None) -> int:
        return sum(1 for p, s in self.events if p == path and s == status)


def _console(page: Page) -> dict[str, Any]:
    return page.evaluate("""() => { const b = document.getElementById('busy-status'), s = window.sonaeStaff;
        return {hidden: b ? b.hidden : null, text: b ? b.textContent : null, role: b && b.getAttribute('role'),
                busy: s.busy || {},
                load: document.getElementById('load-status').textContent,
                roads: document.querySelectorAll('.layer-roads path').length,
                shelters: document.querySelectorAll('#shelters tr').length,
                station: document.getElementById('station-now').textContent,
                chart: document.getElementById('chart-24h').dataset.points,
                chartText: document.getElementById('chart-24h').textContent, now: Date.now()}; }""")


EN_LOAD = ("The server is busy, so the alerts, orders, hazard areas, shelters and stations could not be updated. "
           "What is shown stays; it will try again automatically shortly.")
EN_LOAD_ROADS = ("The server is busy, so the alerts, orders, hazard areas, shelters and stations, the roads on the "
                 "map could not be updated. What is shown stays; it will try again automatically shortly.")


def test_refused_reads_keep_what_the_console_shows_say_so_and_are_asked_again_after_retry_after(
        browser: Browser, served: Served) -> None:
    served.refill()
    ctx = _context(browser, geolocation=False, viewport={"width": 1280, "height": 1000})
    try:
        w = Watched(ctx.new_page())
        page = w.page
        asked = Asked(page)
        page.clock.install()
        page.goto(f"{served.url}/staff?lang=en")
        page.fill("#username", "busydesk")
        page.fill("#password", PASSWORD)
        page.click("#login button[type=submit]")
        page.wait_for_function("() => document.body.dataset.loaded", timeout=WAIT_MS)
        page.wait_for_function("() => document.querySelectorAll('.layer-roads path').length > 10"
                               " && document.getElementById('chart-7d').dataset.points !== undefined", timeout=WAIT_MS)
        before = _console(page)
        assert before["hidden"] and before["shelters"] > 0 and before["chart"] == "0", before
        retry_after, problem = served.over_limit()  # this address is over the rate limit from now on
        assert problem["status"] == 429 and 1 <= retry_after <= 60, problem
        # the console's own reads (with its token: past the rate limit) answered as with the database unreachable
        away = json.dumps({"type": "about:blank", "title": "Service Unavailable", "status": 503,
                           "detail": "the database cannot be reached just now; retry after the given time"})
        for pattern in ("**/api/v1/alerts?*", "**/api/v1/stations/*/readings?*"):
            page.route(pattern, lambda route: route.fulfill(status=503, body=away, headers={
                "Content-Type": "application/problem+json", "Retry-After": str(UNREACHABLE_S)}))
        now = _pause(page)

        # the poll: refused; the lists stay, the console says it is busy (not "Could not load"), no retry yet
        with page.expect_response(lambda r: "/api/v1/alerts" in r.url, timeout=WAIT_MS) as polled:
            page.clock.fast_forward(int(now + POLL_MS - float(page.evaluate("Date.now()"))) + 100)
        assert polled.value.status == 503
        page.wait_for_function("() => !!(window.sonaeStaff.busy || {}).load"
                               " || !!document.getElementById('load-status').textContent", timeout=WAIT_MS)
        load = _console(page)
        assert load["text"] == EN_LOAD and not load["hidden"] and load["role"] == "status", load
        assert load["load"] == "" and load["shelters"] == before["shelters"] and load["roads"] == before["roads"], load
        wait_ms = load["busy"]["load"]["retryAt"] - load["busy"]["load"]["since"]
        assert 1000 * UNREACHABLE_S <= wait_ms <= 60_000, load["busy"]

        # the roads of a view staff move to: refused; the roads shown stay
        with page.expect_response(lambda r: "/api/v1/network.geojson" in r.url, timeout=WAIT_MS) as road:
            page.click("#zoom-in")
        assert road.value.status == 429
        page.wait_for_function("() => !!window.sonaeStaff.busy.roads", timeout=WAIT_MS)
        both = _console(page)
        assert both["roads"] == before["roads"] and both["text"] == EN_LOAD_ROADS, both
        roads_at = both["busy"]["roads"]["retryAt"]
        assert 1000 * retry_after <= roads_at - both["busy"]["roads"]["since"] <= 60_000, both["busy"]

        # the console in Japanese: the notice too (with its English gloss); the charts read again, refused: kept
        page.click("button[data-lang=ja]")
        page.wait_for_function("() => !!window.sonaeStaff.busy['chart-24h']", timeout=WAIT_MS)
        ja = _console(page)
        assert ja["text"].startswith("サーバーが混み合っているため、警報・避難情報・危険区域・避難所・観測所の一覧・地図の道路・"
                                     "水位グラフを更新できませんでした。表示中の内容はそのままです。"), ja
        assert ja["text"].endswith(" / The server is busy, so the alerts, orders, hazard areas, shelters and "
                                   "stations, the roads on the map, the river level charts could not be updated. "
                                   "What is shown stays; it will try again automatically shortly."), ja
        assert ja["chart"] == "0" and "データなし" not in ja["chartText"] and ja["roads"] == before["roads"], ja

        # nothing asked again before its Retry-After: not the lists (another poll comes and goes), not the roads
        alerts, roads = asked.count("alerts"), asked.count("network.geojson")
        first = min(b["retryAt"] for b in ja["busy"].values())
        page.clock.fast_forward(int(first - float(page.evaluate("Date.now()"))) - 200)
        assert (asked.count("alerts"), asked.count("network.geojson")) == (alerts, roads), asked.events

        # the budget is there again, the database too: each read's one retry is answered, the notice goes, the zoomed view's roads come
        served.refill()
        page.unroute_all()
        last = max(b["retryAt"] for b in ja["busy"].values())
        page.clock.fast_forward(int(last - float(page.evaluate("Date.now()"))) + 1000)
        page.wait_for_function("() => !Object.keys(window.sonaeStaff.busy).length", timeout=WAIT_MS)
        after = _console(page)
        # the roads drawn are the zoomed view's, answered on the retry
        key = page.evaluate("() => window.sonaeStaffMap.roadKey")
        assert asked.bboxes[-1] == (key, 200) and asked.bboxes[-2] == (key, 429), asked.bboxes
        assert after["roads"] > 10, after
        assert after["hidden"] and after["text"] == "" and after["load"] == "", after
        assert asked.count("alerts", 200) >= 2 and asked.count("network.geojson", 200) >= 2, asked.events
        # one retry each: the lists were refused once (the poll) and asked once more
        assert asked.count("alerts", 503) == 1 and asked.count("network.geojson", 429) == 1, asked.events
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()
