"""The resident page in real headless Chromium behind an address over the API's general per-client rate limit
(api/ratelimit.py: 429 with Retry-After), for its reads besides the route and the level: the landmark search, the
reads done once at start, the shelters of the map's view, the road lines, the event stream.

Found: a landmark search refused by the rate limit said "Nothing found. Try another name." (false: it was not
searched), with no retry. Now it says, in the page's language, that the search is not complete because the server
is busy and that it searches again by itself, shows what it found among the gauges meanwhile, and asks once more
after Retry-After while the box holds the same text.

The API runs in this process (:class:`tests.pages.test_resident_route_busy_browser.Served`) on a real PostgreSQL
database and a small generated drill town, with one of the town's gauges registered, and the real rate limit on a
clock of the test's that stands still until the test moves it (:meth:`Served.refill`); the page's clock is
Playwright's, stopped before the budget is spent, so each retry's moment is checked exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from evac.drilltown import gauge_names
from sonae.municipality_code import DRILL_TOWN_CENTER
from tests.conftest import with_database
from tests.pages.chromium import CHROMIUM, sync_playwright
from tests.pages.test_pages_browser import WAIT_MS, Watched, _context, _database
from tests.pages.test_resident_route_busy_browser import Served, _pause

if sync_playwright is not None:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(600),
]

#: the API's general rate limit here: requests a minute per client (as tests/pages/test_resident_rate_limited_browser.py)
RATE_LIMIT_PER_MINUTE = 240
#: resident.js: the longest wait of a retry (ms)
RETRY_MAX_MS = 60000
#: the drill town's first gauge, registered with its names
GAUGE = {"id": "DT-G01", **gauge_names(1)}


async def _gauge(database_url: str) -> None:
    from ingest.registry import Station, upsert_stations

    conn = await asyncpg.connect(database_url)
    try:
        await upsert_stations(conn, [Station(**GAUGE, river="訓練川", municipality_code="072036",
                                             lat=DRILL_TOWN_CENTER[0] + 0.0003, lon=DRILL_TOWN_CENTER[1] + 0.0004)])
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def served(pg_server_url: str, mqtt_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = f"sonae_test_reads_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    server = None
    try:
        server = Served(with_database(pg_server_url, name), mqtt_url, tmp_path_factory.mktemp("reads"),
                        rate_limit_per_minute=RATE_LIMIT_PER_MINUTE)
        server.run(_gauge(server.database_url))
        yield server
    finally:
        if server is not None:
            server.stop()
        _database(pg_server_url, name, create=False)


class Requests:
    """The requests a page made to paths starting with ``prefix`` (and containing ``having``), and their answers'
    statuses, in order."""

    def __init__(self, page: Page, prefix: str, having: str = "") -> None:
        self.match = lambda url: f"{prefix}" in url and having in url
        self.asked: list[str] = []
        self.statuses: list[int] = []
        page.on("request", lambda r: self.asked.append(r.url) if self.match(r.url) else None)
        page.on("response", lambda r: self.statuses.append(r.status) if self.match(r.url) else None)


def _open(browser: Browser, served: Served, lang: str) -> tuple[BrowserContext, Watched]:
    """The page in ``lang``, no place chosen, with a full budget; its clock Playwright's."""
    served.refill()
    ctx = _context(browser, geolocation=False)
    w = Watched(ctx.new_page())
    w.page.clock.install()
    w.page.goto(f"{served.url}/?lang={lang}")
    w.page.wait_for_function("() => document.body.getAttribute('data-ready') === 'true'"
                             " && window.sonaeResident.stations.length", timeout=WAIT_MS)
    return ctx, w


def _search(page: Page) -> dict[str, Any]:
    return page.evaluate("""() => { const s = window.sonaeResident;
        return {status: document.getElementById('landmark-status').textContent,
                picks: [...document.querySelectorAll('#landmark-results [data-pick]')].map(b => b.getAttribute('data-pick')),
                busy: s.pickBusy, query: s.pickQuery}; }""")


#: resident.js's texts, by language
FOUND = {"ja": "{n}件見つかりました。", "en": "{n} found.", "ja-easy": "{n}こ みつかりました。"}
NOTHING = ("見つかりませんでした", "Nothing found", "みつかりませんでした")
SEARCH_BUSY = {
    "ja": "サーバーが混み合っているため、まだすべてを探せていません。 しばらくすると自動でもう一度探します。",
    "en": "The server is busy, so the search is not complete yet. It will search again automatically shortly.",
    "ja-easy": "いま こんで いて、まだ ぜんぶ さがせて いません。 すこし たったら、じどうで もう いちど さがします。",
}


@pytest.mark.parametrize(("lang", "text", "gauges"), [("ja", "避難所", 0), ("en", "訓練", 1), ("ja-easy", "避難所", 0)])
def test_a_landmark_search_refused_by_the_rate_limit_says_it_is_busy_and_the_retry_shows_the_results(
        browser: Browser, served: Served, lang: str, text: str, gauges: int) -> None:
    ctx, w = _open(browser, served, lang)
    try:
        page = w.page
        searches = Requests(page, "/api/v1/shelters?", "q=")
        _pause(page)
        retry_after, _ = served.over_limit()  # this address has spent its budget
        page.fill("#landmark", text)
        with page.expect_response(lambda r: "/api/v1/shelters?" in r.url and "q=" in r.url,
                                  timeout=WAIT_MS) as answer:
            page.clock.fast_forward(300)  # (the search waits for typing to pause)
        assert answer.value.status == 429 and int(answer.value.headers["retry-after"]) == retry_after
        page.wait_for_function("() => document.getElementById('landmark-status').textContent", timeout=WAIT_MS)
        shown = _search(page)
        # not "nothing found": the search is not complete, the server is busy, it searches again by itself; what
        # was found among the gauges (searched here) is shown meanwhile
        found = FOUND[lang].format(n=gauges) + " " if gauges else ""
        assert shown["status"] == found + SEARCH_BUSY[lang], shown
        assert not [n for n in NOTHING if n in shown["status"]], shown
        assert shown["picks"] == ([f"g:{GAUGE['id']}"] if gauges else []), shown
        # one retry, set for Retry-After from now (at most a fifth later)
        busy = shown["busy"]
        wait_ms = busy["retryAt"] - busy["since"]
        assert busy["busy"] is True and 1000 * retry_after <= wait_ms <= min(RETRY_MAX_MS, 1200 * retry_after), busy
        assert len(searches.asked) == 1, searches.asked
        page.clock.fast_forward(int(wait_ms) - 100)
        assert len(searches.asked) == 1 and _search(page)["busy"] == busy, searches.asked
        # the budget back, the retry answers: the shelters found are shown with the gauges, the notice goes
        served.refill()
        with page.expect_response(lambda r: "/api/v1/shelters?" in r.url and "q=" in r.url,
                                  timeout=WAIT_MS) as retried:
            page.clock.fast_forward(200)
        assert retried.value.status == 200, retried.value.status
        page.wait_for_function("() => !window.sonaeResident.pickBusy", timeout=WAIT_MS)
        after = _search(page)
        shelters = [p for p in after["picks"] if p.startswith("s:")]
        assert shelters and len(after["picks"]) == len(shelters) + gauges, after
        assert after["status"] == FOUND[lang].format(n=len(after["picks"])), after
        assert searches.statuses == [429, 200] and len(set(searches.asked)) == 1, searches.asked
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


def test_a_refused_search_whose_text_was_erased_is_not_asked_again(browser: Browser, served: Served) -> None:
    ctx, w = _open(browser, served, "ja")
    try:
        page = w.page
        searches = Requests(page, "/api/v1/shelters?", "q=")
        _pause(page)
        served.over_limit()
        page.fill("#landmark", "避難所")
        with page.expect_response(lambda r: "/api/v1/shelters?" in r.url and "q=" in r.url, timeout=WAIT_MS):
            page.clock.fast_forward(300)
        page.wait_for_function("() => document.getElementById('landmark-status').textContent", timeout=WAIT_MS)
        busy = _search(page)["busy"]
        assert busy, _search(page)
        page.fill("#landmark", "")
        page.clock.fast_forward(300)
        page.wait_for_function("() => !window.sonaeResident.pickBusy", timeout=WAIT_MS)
        assert _search(page)["status"] == "", _search(page)
        served.refill()
        page.clock.fast_forward(int(busy["retryAt"] - busy["since"]) + 1000)
        page.fill("#landmark", "x")  # (a search of one character is no request: the page has run its timers by now)
        page.clock.fast_forward(300)
        page.wait_for_function("() => window.sonaeResident.pickQuery === 'x'", timeout=WAIT_MS)
        assert searches.asked and len(searches.asked) == 1, searches.asked
    finally:
        ctx.close()
