"""The resident page in real headless Chromium behind an address over the API's general per-client rate limit
(api/ratelimit.py: 429 with Retry-After), for its reads besides the route and the level: the landmark search, the
reads done once at start, the shelters of the map's view, the road lines, the event stream.

Found: a landmark search refused by the rate limit said "Nothing found. Try another name." (false: it was not
searched), with no retry. Now it says, in the page's language, that the search is not complete because the server
is busy and that it searches again by itself, shows what it found among the gauges meanwhile, and asks once more
after Retry-After while the box holds the same text.

Found too: the reads done once at start (``/api/v1/service``: the service area, so the map's view, its shelters, and
whether a place is inside; ``/api/v1/stations``: the gauges' names) refused were taken as empty answers, and the page
went on without them for the whole session, saying nothing (and the hazards read at start refused left the hazards'
version unknown: no poll followed it). Now #start-busy says what is missing and that the page tries again, each read
is asked again after Retry-After (then a backoff up to a minute) until answered, and the page works fully then,
without a reload. And the shelters of the map's view and its road lines refused are asked again after Retry-After
(found: the shelters stayed missing until the map was moved, a cell of roads was kept empty for the session), and
an event stream refused (EventSource gives up for good on a 429 or a 503) is opened again after a while; a push
sign-up refused for now says the server is busy and signs up again after Retry-After; hazards refused after an
event are drawn once a poll reads them.

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
from tests.pages.test_resident_route_busy_browser import HOME, Served, _pause

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


#: a page's answers to its fetch() calls, in order, as [url, status] in window.__answers (0: no answer), and the
#: number of calls not answered yet (window.__waiting)
ANSWERS = """(() => { const f = window.fetch; window.__answers = []; window.__waiting = 0;
    const done = (u, s) => { window.__waiting--; window.__answers.push([u, s]); };
    window.fetch = (...a) => { window.__waiting++;
        return f(...a).then(r => { done(r.url, r.status); return r; }, e => { done(String(a[0]), 0); throw e; }); };
    })();"""


def _answers(page: Page, having: str) -> list[tuple[str, int]]:
    return [(u, s) for u, s in page.evaluate("window.__answers") if having in u]


def _open(browser: Browser, served: Served, lang: str) -> tuple[BrowserContext, Watched]:
    """The page in ``lang``, no place chosen, with a full budget; its clock Playwright's, its answers recorded
    (ANSWERS)."""
    served.refill()
    ctx = _context(browser, geolocation=False)
    ctx.add_init_script(ANSWERS)
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


#: resident.js's texts: what #start-busy says while the reads of start are not answered, by language
START_BUSY = {
    "ja": "サーバーが混み合っているため、サービス区域の地図、水位観測所の情報をまだ読み込めていません。"
          " しばらくすると自動でもう一度読み込みます。",
    "en": "The server is busy, so part of this page could not be loaded yet: the map of the service area, the river "
          "gauges. It will try again automatically shortly.",
    "ja-easy": "いま こんで いて、この サービスの ちず、かわの みずを はかる ところの じょうほうを まだ よみこめて いません。"
               " すこし たったら、じどうで もう いちど よみこみます。",
}
GAUGE_BUSY = {"ja": "サーバーが混み合っているため、水位観測所の情報をまだ読み込めていません。 しばらくすると自動でもう一度読み込みます。"}
#: the gauge as each language names it in the landmark search
GAUGE_SHOWN = {"ja": GAUGE["name"], "en": GAUGE["name_en"], "ja-easy": f"{GAUGE['name']}（{GAUGE['kana']}）"}
POLL_MS = 8000


def _start(page: Page) -> dict[str, Any]:
    return page.evaluate("""() => { const s = window.sonaeResident, b = document.getElementById('start-busy');
        return {hidden: b.hidden, text: b.textContent, role: b.getAttribute('role'), pending: s.startPending,
                info: s.info, stations: s.stations.length, view: !!window.sonaeMap.view, hazardVersion: s.hazardVersion,
                stale: document.getElementById('stale').hidden ? null : document.getElementById('stale').textContent,
                shelters: document.querySelectorAll('.layer-points [data-id]').length, now: Date.now()}; }""")


@pytest.mark.parametrize(("lang", "switch"), [("ja", None), ("en", "ja-easy")])
def test_a_page_opened_over_the_rate_limit_says_it_waits_and_works_fully_once_its_reads_are_answered(
        browser: Browser, served: Served, lang: str, switch: str | None) -> None:
    """The page itself loads (``/`` and ``/static/`` are not counted), its reads of start are all refused: it says
    so, in its language, and asks them again after Retry-After; the budget back, the service area, its shelters
    and the gauges come without a reload."""
    served.refill()
    ctx = _context(browser, geolocation=False)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        service = Requests(page, "/api/v1/service")
        page.clock.install()
        page.clock.pause_at(1_900_000_000)  # (no timer of the page's runs but when the test moves its clock)
        retry_after, _ = served.over_limit()
        page.goto(f"{served.url}/?lang={lang}")
        page.wait_for_function("() => document.body.getAttribute('data-ready') === 'true'", timeout=WAIT_MS)
        waiting = _start(page)
        # not silently broken: it says what it waits for and that it tries again (and the level box that nothing
        # could be fetched yet); no service area, no map yet
        assert not waiting["hidden"] and waiting["text"] == START_BUSY[lang] and waiting["role"] == "status", waiting
        assert waiting["stale"] and waiting["info"] is None and not waiting["stations"] and not waiting["view"], waiting
        assert service.statuses == [429], service.statuses
        pending = waiting["pending"]
        assert set(pending) == {"info", "stations"}, pending
        for p in pending.values():
            assert p["busy"] is True and p["tries"] == 1, pending
            assert 1000 * retry_after <= p["retryAt"] - p["since"] <= 1200 * retry_after, pending
        if switch:
            page.click(f"button[data-lang={switch}]")
            assert _start(page)["text"] == START_BUSY[switch], _start(page)
            lang = switch
        # refused again while the budget is spent: asked again later each time (a backoff, at most a minute)
        first = max(p["retryAt"] for p in pending.values())
        page.clock.fast_forward(int(first - waiting["now"]) + 50)
        page.wait_for_function("() => Object.values(window.sonaeResident.startPending).every(p => p.tries === 2)",
                               timeout=WAIT_MS)
        again = _start(page)
        assert service.statuses == [429, 429] and again["text"] == START_BUSY[lang], (service.statuses, again)
        for p in again["pending"].values():
            assert 2000 <= p["retryAt"] - again["now"] <= 2400, again["pending"]
        # the budget back: the next retries answer; the page works without a reload
        served.refill()
        with page.expect_response(lambda r: "/api/v1/service" in r.url, timeout=WAIT_MS) as answered:
            page.clock.fast_forward(2500)
        assert answered.value.status == 200
        page.wait_for_function("() => !Object.keys(window.sonaeResident.startPending).length", timeout=WAIT_MS)
        page.clock.fast_forward(300)  # (the view's shelters are asked once the view rests)
        page.wait_for_function("() => document.querySelectorAll('.layer-points [data-id]').length", timeout=WAIT_MS)
        done = _start(page)
        assert done["hidden"] and not done["text"] and done["info"]["service_area"] and done["view"], done
        assert done["stations"] == 1 and done["shelters"], done
        assert page.evaluate("window.__sonaeNotReloaded = true")
        # the gauge is found by name, named in the page's language
        page.fill("#landmark", "訓練川")
        page.clock.fast_forward(300)
        page.wait_for_function("() => document.querySelector('#landmark-results [data-pick]')", timeout=WAIT_MS)
        assert page.inner_text(f"[data-pick='g:{GAUGE['id']}']").split("\n")[0] == GAUGE_SHOWN[lang]
        # the alerts and hazards refused at start: the next polls read them, the level box is current again and the
        # hazards' version is followed
        page.clock.fast_forward(POLL_MS)
        page.clock.fast_forward(300)  # (its reads go together a moment after)
        page.wait_for_function("() => document.getElementById('stale').hidden", timeout=WAIT_MS)
        page.clock.fast_forward(POLL_MS)
        page.wait_for_function("() => window.sonaeResident.hazardVersion !== null", timeout=WAIT_MS)
        assert page.evaluate("window.__sonaeNotReloaded") is True
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


def test_until_the_gauges_are_read_a_search_is_not_complete_and_runs_again_once_they_are(
        browser: Browser, served: Served) -> None:
    """The gauges are searched in the page, in the registry read at start: with that read refused (a 503 with
    Retry-After here: the database away), a search finding no shelter is not "nothing found"; the registry read,
    the search runs again and finds the gauge."""
    served.refill()
    ctx = _context(browser, geolocation=False)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        body = '{"title": "Service Unavailable", "status": 503, "detail": "test: database away"}'
        page.route("**/api/v1/stations", lambda route: route.fulfill(
            status=503, headers={"Content-Type": "application/problem+json", "Retry-After": "5"}, body=body))
        page.clock.install()
        page.clock.pause_at(1_900_000_000)
        page.goto(f"{served.url}/?lang=ja")
        page.wait_for_function("() => document.body.getAttribute('data-ready') === 'true'", timeout=WAIT_MS)
        waiting = _start(page)
        assert waiting["text"] == GAUGE_BUSY["ja"] and waiting["info"]["service_area"], waiting
        page.fill("#landmark", "訓練川")  # a gauge's name: no shelter has it
        with page.expect_response(lambda r: "/api/v1/shelters?" in r.url and "q=" in r.url, timeout=WAIT_MS) as a:
            page.clock.fast_forward(300)
        assert a.value.status == 200
        page.wait_for_function("() => document.getElementById('landmark-status').textContent", timeout=WAIT_MS)
        shown = _search(page)
        assert shown["status"] == SEARCH_BUSY["ja"] and not shown["picks"], shown
        page.unroute("**/api/v1/stations")
        with page.expect_response(lambda r: "/api/v1/stations" in r.url, timeout=WAIT_MS) as read:
            page.clock.fast_forward(int(waiting["pending"]["stations"]["retryAt"] - waiting["now"]) + 50)
        assert read.value.status == 200
        page.wait_for_function("() => document.querySelector('#landmark-results [data-pick]')", timeout=WAIT_MS)
        after = _search(page)
        assert after["picks"] == [f"g:{GAUGE['id']}"] and after["status"] == FOUND["ja"].format(n=1), after
        assert _start(page)["hidden"], _start(page)
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


def test_the_shelters_and_roads_of_a_view_refused_are_asked_again_without_moving_the_map(
        browser: Browser, served: Served) -> None:
    """Found: the shelters of a view refused stayed missing until the map was moved, and a cell of road lines
    refused was kept as a cell with no roads for the whole session. Both are now asked again after Retry-After."""
    ctx, w = _open(browser, served, "en")
    try:
        page = w.page
        page.wait_for_function("() => document.querySelectorAll('.layer-points [data-id]').length", timeout=WAIT_MS)
        _pause(page)
        retry_after, _ = served.over_limit()
        lat, lon = DRILL_TOWN_CENTER
        # a view inside the town, small enough for its roads to be drawn, in another grid cell of shelters
        page.evaluate("([w, s, e, n]) => window.sonaeMap.setView([w, s, e, n], 0)",
                      [lon + 0.001, lat - 0.005, lon + 0.011, lat + 0.004])
        page.clock.fast_forward(200)  # (the view's shelters are asked once the view rests)
        page.wait_for_function("() => window.__answers.some(([u, s]) => u.includes('/api/v1/shelters?bbox='))"
                               " && window.__answers.some(([u, s]) => u.includes('/api/v1/network.geojson?'))"
                               " && !window.__waiting", timeout=WAIT_MS)
        page.wait_for_function("() => !document.querySelector('.layer-roads path')", timeout=WAIT_MS)
        before = page.evaluate("window.__answers.length")
        refused_roads = sorted(u for u, s in _answers(page, "/api/v1/network.geojson?"))
        refused_shelters = [u for u, s in _answers(page, "/api/v1/shelters?bbox=")]
        assert {s for _, s in _answers(page, "/api/v1/network.geojson?")} == {429}, _answers(page, "network")
        assert _answers(page, "/api/v1/shelters?bbox=")[-1][1] == 429, _answers(page, "shelters")
        # nothing asked again before Retry-After (then a road cell and the view's shelters each once); the roads
        # were refused up to 200 ms before the shelters (asked with the view; the shelters once the view rests)
        page.evaluate("window.sonaeMap.redraw()")  # (as the page's own drawing does: its view's shelters asked)
        page.clock.fast_forward(1000 * retry_after - 300)
        assert page.evaluate("window.__answers.length") == before, page.evaluate("window.__answers")[before:]
        served.refill()
        page.clock.fast_forward(1200 * retry_after)
        page.wait_for_function("() => document.querySelectorAll('.layer-roads path').length", timeout=WAIT_MS)
        page.wait_for_function("(n) => window.__answers.length >= n && !window.__waiting",
                               arg=before + len(refused_roads) + 1, timeout=WAIT_MS)
        again = page.evaluate("window.__answers").__getitem__(slice(before, None))
        assert sorted(u for u, s in again if "/api/v1/network.geojson?" in u) == refused_roads, again
        assert [u for u, s in again if "/api/v1/shelters?bbox=" in u] == refused_shelters[-1:], again
        assert {s for _, s in again} == {200}, again
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


#: the hazard_state events a page's event streams hear (window.__heard)
HEARD = """(() => { const E = window.EventSource; window.__heard = 0;
    window.EventSource = class extends E { constructor(...a) { super(...a);
        this.addEventListener('hazard_state', () => { window.__heard++; }); } }; })();"""


def test_an_event_stream_refused_is_opened_again_and_the_page_hears_events_then(
        browser: Browser, served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found: EventSource gives up for good on an answer other than 200: the server's bound of open streams per
    address (api.alerts.SSE_PER_CLIENT, a 429 with Retry-After 30), which the pages behind a shelter's Wi-Fi
    exceed, left a page without live events for the whole session. Now it is opened again after 30 s (up to a
    minute after more tries) and, once open, the page reads everything again and hears events."""
    import api.alerts

    served.refill()
    monkeypatch.setattr(api.alerts, "SSE_PER_CLIENT", 0)  # this address holds as many streams as it may
    ctx = _context(browser, geolocation=False)
    ctx.add_init_script(HEARD)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        streams = Requests(page, "/api/v1/events")
        page.clock.install()
        page.clock.pause_at(1_900_000_000)
        with page.expect_response(lambda r: "/api/v1/events" in r.url, timeout=WAIT_MS) as first:
            page.goto(f"{served.url}/?lang=ja")
        assert first.value.status == 429
        page.wait_for_function("() => { const s = window.sonaeResident; return s && s.streamRefused !== null; }",
                               timeout=WAIT_MS)  # (set once the refusal is handled; a page without it: undefined)
        refused = page.evaluate("window.sonaeResident.streamRefused")
        assert refused and refused["tries"] == 1 and len(streams.asked) == 1, (streams.asked, refused)
        wait_ms = refused["retryAt"] - refused["since"]
        assert 30_000 <= wait_ms <= 36_000, refused
        page.clock.fast_forward(int(wait_ms) - 1000)
        assert len(streams.asked) == 1, streams.asked  # (not before)
        monkeypatch.setattr(api.alerts, "SSE_PER_CLIENT", 16)  # a stream of this address closed meanwhile
        with page.expect_response(lambda r: "/api/v1/events" in r.url, timeout=WAIT_MS) as opened:
            page.clock.fast_forward(2000)
        assert opened.value.status == 200
        page.wait_for_function("() => !window.sonaeResident.streamRefused", timeout=WAIT_MS)
        # open again: everything is read again (events may have been missed), and events are heard
        with page.expect_response(lambda r: "/api/v1/alerts" in r.url, timeout=WAIT_MS) as reread:
            page.clock.fast_forward(300)
        assert reread.value.status == 200
        changed = page.evaluate("window.sonaeResident.hazardsChangedAt")
        served.add_area()  # a change of the hazard state: an event
        page.wait_for_function("() => window.__heard", timeout=WAIT_MS)
        with page.expect_response(lambda r: "/api/v1/hazards" in r.url, timeout=WAIT_MS):
            page.clock.fast_forward(300)  # (the page reads a moment after an event)
        page.wait_for_function("(at) => window.sonaeResident.hazardsChangedAt !== at", arg=changed, timeout=WAIT_MS)
        assert len(streams.asked) == 2, streams.asked
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


PUSH_BUSY = "The server is busy, so signing up is not done yet. It will try again automatically shortly."


def test_a_push_sign_up_refused_for_now_says_the_server_is_busy_and_tries_again(
        browser: Browser, served: Served) -> None:
    """Found: a sign-up refused by the rate limit said only "Could not sign up. Please try again." Now it says the
    server is busy and signs up again by itself after Retry-After. (Headless Chromium has no push service: the
    sign-up is followed up to the server's key, read again and answered.)"""
    served.refill()
    ctx = _context(browser, geolocation=HOME)
    ctx.grant_permissions(["geolocation", "notifications"])
    try:
        w = Watched(ctx.new_page())
        page = w.page
        keys = Requests(page, "/api/v1/push/vapid-public-key")
        page.clock.install()
        page.goto(f"{served.url}/?lang=en")
        page.wait_for_function("() => { const s = window.sonaeResident; return s && s.route && s.level !== null }",
                               timeout=WAIT_MS)
        assert page.evaluate("'PushManager' in window && 'serviceWorker' in navigator")
        page.select_option("#push-area", "1000")
        _pause(page)
        retry_after, _ = served.over_limit()
        with page.expect_response(lambda r: "/api/v1/push/vapid-public-key" in r.url, timeout=WAIT_MS) as answer:
            page.click("#push-on")
        assert answer.value.status == 429
        page.wait_for_function("() => !['', 'Signing up…'].includes(document.getElementById('push-status').textContent)",
                               timeout=WAIT_MS)
        assert page.inner_text("#push-status") == PUSH_BUSY
        page.clock.fast_forward(1000 * retry_after - 100)
        assert len(keys.asked) == 1, keys.asked
        served.refill()
        with page.expect_response(lambda r: "/api/v1/push/vapid-public-key" in r.url, timeout=WAIT_MS) as again:
            page.clock.fast_forward(400 * retry_after)
        assert again.value.status == 200 and len(keys.asked) == 2, keys.asked
        # (then the browser's push service: none here, so the sign-up ends as failed, not as busy)
        page.wait_for_function("(t) => !['Signing up…', t].includes(document.getElementById('push-status')"
                               ".textContent)", arg=PUSH_BUSY, timeout=WAIT_MS)
        assert page.inner_text("#push-status") == "Could not sign up. Please try again."
    finally:
        ctx.close()


def test_hazards_refused_after_an_event_are_drawn_once_a_poll_reads_them(browser: Browser, served: Served) -> None:
    """Found: the hazards read after an event refused (a 429 here) while the level and the route were answered: the
    route took the new hazards' version, so the poll saw no change, and the map kept the old areas, without the new
    one, until the next event. Now the next hazards answered are drawn."""
    served.refill()
    ctx = _context(browser, geolocation=HOME)
    ctx.add_init_script(HEARD)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        page.clock.install()
        page.goto(f"{served.url}/?lang=ja")
        page.wait_for_function("() => { const s = window.sonaeResident; return s && s.route && s.level !== null"
                               " && document.querySelector('.layer-route [data-id=route-line]') }", timeout=WAIT_MS)
        _pause(page)
        areas = page.locator(".layer-areas path").count()
        body = '{"title": "Too Many Requests", "status": 429, "detail": "test"}'
        page.route("**/api/v1/hazards", lambda route: route.fulfill(
            status=429, headers={"Content-Type": "application/problem+json", "Retry-After": "1"}, body=body))
        version = page.evaluate("window.sonaeResident.hazardVersion")
        served.add_area()
        page.wait_for_function("() => window.__heard", timeout=WAIT_MS)
        with page.expect_response(lambda r: "/api/v1/route?" in r.url, timeout=WAIT_MS) as routed:
            page.clock.fast_forward(300)
        assert routed.value.status == 200
        page.wait_for_function("(v) => window.sonaeResident.hazardVersion !== v", arg=version, timeout=WAIT_MS)
        assert page.locator(".layer-areas path").count() == areas  # (the new area not read yet)
        page.unroute("**/api/v1/hazards")
        with page.expect_response(lambda r: "/api/v1/hazards" in r.url, timeout=WAIT_MS) as polled:
            page.clock.fast_forward(8000)
        assert polled.value.status == 200
        page.wait_for_function("(n) => document.querySelectorAll('.layer-areas path').length > n", arg=areas,
                               timeout=WAIT_MS)
    finally:
        ctx.close()
