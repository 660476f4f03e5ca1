"""The resident page in real headless Chromium when the API's general per-client rate limit refuses it
(api/ratelimit.py: 429 with Retry-After, a problem with no ``status_code``).

Found: only the route budget's refusal (``status_code`` route_busy) was taken as "busy, try again". The rate limit's
429, which every resident behind one address meets when many share it (a shelter's or a school's Wi-Fi, a carrier's
NAT), dropped the route shown and said "The route could not be found just now", with no retry; and a level asked
again under the limit was taken as an answer: the level kept was shown as current, unmarked, and not asked again
until it was a minute old. Now any 429 (and a 503 with Retry-After) keeps the route shown, says the server is busy
in the page's language and asks once more after Retry-After (at least 1 s, at most 60 s); the level stays shown,
marked as possibly out of date, and is asked again at the next poll.

The API runs in this process (:class:`tests.pages.test_resident_route_busy_browser.Served`) on a real PostgreSQL
database and a small generated drill town, with the real rate limit on a clock of the test's that stands still
until the test moves it: the test spends the budget of 127.0.0.1 (the browser's address too) with plain requests
before a page action, and gives it back by moving that clock. The page's clock is Playwright's, stopped while
the budget is spent, so the moment of the retry is checked exactly and no poll of the page's own spends it.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import with_database
from tests.pages.chromium import CHROMIUM, sync_playwright
from tests.pages.test_pages_browser import WAIT_MS, Watched, _context, _database
from tests.pages.test_resident_route_busy_browser import (
    ENGLISH_WORD,
    HOME,
    SHOWN,
    Routes,
    Served,
    _busy,
    _pause,
    _shown_texts,
)

if sync_playwright is not None:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(600),
]

#: the API's general rate limit here: requests a minute per client (a burst of a sixth of it, 40: a page's
#: opening and a test's steps fit in it, on a clock that stands still)
RATE_LIMIT_PER_MINUTE = 240
#: resident.js: its poll period, the age at which it asks the level again with no event, the retry's bound (ms)
POLL_MS, LEVEL_MAX_AGE_MS, RETRY_MAX_MS = 8000, 60000, 60000


@pytest.fixture(scope="module")
def served(pg_server_url: str, mqtt_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = f"sonae_test_limited_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    server = None
    try:
        server = Served(with_database(pg_server_url, name), mqtt_url, tmp_path_factory.mktemp("limited"),
                        rate_limit_per_minute=RATE_LIMIT_PER_MINUTE)
        yield server
    finally:
        if server is not None:
            server.stop()
        _database(pg_server_url, name, create=False)


#: per language: the busy notice with a route kept, and with none yet; the guidance of a route kept from another
#: language; what a route error says (never shown for a refusal)
BUSY_KEPT = {
    "ja": "サーバーが混み合っているため、経路を更新できませんでした。前に調べた経路を表示しています。"
          " しばらくすると自動でもう一度調べます。",
    "en": "The server is busy, so the route could not be updated. The route found earlier is shown. "
          "It will try again automatically shortly.",
}
BUSY_NONE = {"ja-easy": "いま こんで いて、まだ みちを だせません。 すこし たったら、じどうで もう いちど しらべます。"}
OTHER_LANG = {"ja": "日本語の道順は、サーバーから届きしだい表示します。",
              "en": "Directions in English will be shown as soon as the server sends them."}
ROUTE_ERROR = ("The route could not be found just now", "経路を調べられませんでした", "みちが わかりませんでした")


def _open(browser: Browser, served: Served, lang: str, *,
          geolocation: bool = True) -> tuple[BrowserContext, Watched, Routes]:
    """The page in ``lang`` with a full budget, its clock Playwright's; with ``geolocation``, once its route
    and level are shown."""
    served.refill()
    ctx = _context(browser, geolocation=HOME if geolocation else False)
    w = Watched(ctx.new_page())
    routes = Routes(w.page)
    w.page.clock.install()
    w.page.goto(f"{served.url}/?lang={lang}")
    if geolocation:
        w.page.wait_for_function("() => { const s = window.sonaeResident; return s && s.route"
                                 " && s.route.properties.status === 'ok' && s.level !== null"
                                 " && document.getElementById('level-action').textContent.trim() }", timeout=WAIT_MS)
    else:
        w.page.wait_for_function("() => document.body.getAttribute('data-ready') === 'true'", timeout=WAIT_MS)
    return ctx, w, routes


def _refused(response: Any) -> tuple[int, dict[str, Any]]:
    """A route answer the rate limit refused: its Retry-After (s) and problem (no status_code: not route_busy)."""
    assert response.status == 429, response.status
    problem = json.loads(response.body())
    assert "status_code" not in problem, problem
    return int(response.headers["retry-after"]), problem


def _level_box(page: Page) -> dict[str, Any]:
    return page.evaluate("""() => { const b = document.getElementById('stale');
        return {num: document.getElementById('level-num').textContent,
                name: document.getElementById('level-name').textContent,
                action: document.getElementById('level-action').textContent,
                data: document.getElementById('level').getAttribute('data-level'),
                stale: b.hidden ? null : b.textContent, card: document.getElementById('level-card').getAttribute('data-stale'),
                level: window.sonaeResident.level}; }""")


@pytest.mark.parametrize(("lang", "switch"), [("en", "ja"), ("ja", "en")])
def test_a_route_refused_by_the_rate_limit_stays_shown_says_so_in_the_pages_language_and_is_asked_again(
        browser: Browser, served: Served, lang: str, switch: str) -> None:
    ctx, w, routes = _open(browser, served, lang)
    try:
        page = w.page
        shown = _shown_texts(page)
        assert shown["line"] and shown["steps"] and _busy(page)["hidden"], shown
        _pause(page)
        limit_wait, problem = served.over_limit()  # this address has spent its budget
        assert problem["status"] == 429 and "status_code" not in problem, problem
        asked = len(routes.asked)
        with page.expect_response(lambda r: "/api/v1/route?" in r.url and f"lang={switch}&" in r.url,
                                  timeout=WAIT_MS) as answer:
            page.click(f"button[data-lang={switch}]")  # the route is asked again, in the new language
        retry_after, _ = _refused(answer.value)
        assert retry_after == limit_wait, (retry_after, limit_wait)
        page.wait_for_function(f"() => {SHOWN} || !window.sonaeResident.route", timeout=WAIT_MS)
        busy, kept = _busy(page), _shown_texts(page)
        # the route shown stays, drawn, with its shelter, distance and time; the page's language everywhere
        assert kept["route"] == shown["route"] and kept["line"] and busy["line"], kept
        assert busy["text"] == BUSY_KEPT[switch] and busy["role"] == "status" and busy["card"] == "kept", busy
        assert kept["guidance"] == OTHER_LANG[switch] and kept["lang"] == ("en" if switch == "en" else "ja"), kept
        assert not [e for e in ROUTE_ERROR if e in kept["route_card"]], kept["route_card"]
        assert not page.evaluate("document.getElementById('guidance').classList.contains('bad')")
        if switch == "ja":
            assert not ENGLISH_WORD.findall(kept["route_card"]), kept["route_card"]
        # one retry, set for Retry-After from now (at most a fifth later: pages told the same wait spread out)
        wait_ms = busy["busy"]["retryAt"] - busy["busy"]["since"]
        assert 1000 * retry_after <= wait_ms <= min(RETRY_MAX_MS, 1200 * retry_after), (retry_after, busy["busy"])
        assert len(routes.asked) == asked + 1, routes.asked

        # nothing asked before that moment (the page's clock jumps to just before it)
        page.clock.fast_forward(int(wait_ms) - 100)
        before = _busy(page)
        assert before["seq"] == busy["seq"] and not before["hidden"] and len(routes.asked) == asked + 1, before
        # then the retry: the budget is back by now (its clock has moved on), the route is answered in the new
        # language, the notice goes
        served.refill()
        with page.expect_response(lambda r: "/api/v1/route?" in r.url, timeout=WAIT_MS) as retried:
            page.clock.fast_forward(200)
        assert retried.value.status == 200 and f"lang={switch}&" in retried.value.url, retried.value.url
        page.wait_for_function("() => { const s = window.sonaeResident; return !s.routeBusy && s.route"
                               " && s.routeLang === s.lang }", timeout=WAIT_MS)
        after, texts = _busy(page), _shown_texts(page)
        assert after["hidden"] and not after["text"] and after["card"] is None, after
        assert texts["steps"] and texts["guidance"] == texts["route"]["guidance"] and texts["line"], texts
        assert routes.after_refusal() == [routes.asked[-1], 200], routes.events
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


def test_with_no_route_yet_a_refusal_of_the_rate_limit_says_busy_and_the_retry_shows_the_route(
        browser: Browser, served: Served) -> None:
    """A place chosen (the device's position) while the address is over its budget: the route and the level are
    both refused; the page says in its language that it will try again, never that no route could be found, and
    the retry after Retry-After shows the route."""
    ctx, w, routes = _open(browser, served, "ja-easy", geolocation=False)
    try:
        page = w.page
        _pause(page)
        served.over_limit()
        ctx.grant_permissions(["geolocation"])
        ctx.set_geolocation(HOME)
        with page.expect_response(lambda r: "/api/v1/route?" in r.url, timeout=WAIT_MS) as answer:
            page.click("#locate")
        retry_after, _ = _refused(answer.value)
        page.wait_for_function(f"() => {SHOWN} || document.getElementById('guidance').classList.contains('bad')",
                               timeout=WAIT_MS)
        busy = _busy(page)
        assert busy["route"] is None and busy["card"] == "none" and busy["text"] == BUSY_NONE["ja-easy"], busy
        guidance = page.inner_text("#route-card")
        assert not [e for e in ROUTE_ERROR if e in guidance], guidance
        wait_ms = busy["busy"]["retryAt"] - busy["busy"]["since"]
        assert 1000 * retry_after <= wait_ms <= min(RETRY_MAX_MS, 1200 * retry_after), (retry_after, busy["busy"])
        served.refill()
        page.clock.fast_forward(int(wait_ms) + 100)
        page.wait_for_function("() => { const s = window.sonaeResident; return !s.routeBusy && s.route"
                               " && document.querySelector('.layer-route [data-id=route-line]') }", timeout=WAIT_MS)
        assert _busy(page)["hidden"] and routes.after_refusal() == [routes.asked[-1], 200], routes.events
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


def test_a_level_refused_by_the_rate_limit_stays_shown_marked_out_of_date_and_is_asked_again(
        browser: Browser, served: Served) -> None:
    ctx, w, routes = _open(browser, served, "ja")
    try:
        page = w.page
        level = _level_box(page)
        assert level["stale"] is None and level["num"] and level["name"] and level["action"], level
        asked = len(routes.asked)
        _pause(page)
        served.over_limit()
        # the level is a minute old: the page's poll asks it again (and the alerts and hazards), all refused
        with page.expect_response(lambda r: "/api/v1/level?" in r.url, timeout=WAIT_MS) as answer:
            page.clock.fast_forward(LEVEL_MAX_AGE_MS + POLL_MS)
            page.clock.fast_forward(300)  # (its reads go together a moment after)
        assert answer.value.status == 429, answer.value.status
        page.wait_for_function("() => !document.getElementById('stale').hidden", timeout=WAIT_MS)
        marked = _level_box(page)
        # the level shown stays, marked as possibly out of date, in the page's language
        assert {k: marked[k] for k in ("num", "name", "action", "data", "level")} == \
            {k: level[k] for k in ("num", "name", "action", "data", "level")}, (level, marked)
        assert marked["card"] == "server" and "サーバーから最新の情報を取得できません。" in marked["stale"], marked
        assert re.search(r"表示は\d{1,2}:\d{2}（日本時間）時点の情報", marked["stale"]), marked
        assert _shown_texts(page)["line"] and len(routes.asked) == asked, routes.asked  # the route shown stays
        # the budget back, the next poll asks again and the level is current once more
        served.refill()
        with page.expect_response(lambda r: "/api/v1/level?" in r.url, timeout=WAIT_MS) as again:
            page.clock.fast_forward(POLL_MS)
            page.clock.fast_forward(300)
        assert again.value.status == 200, again.value.status
        page.wait_for_function("() => document.getElementById('stale').hidden", timeout=WAIT_MS)
        assert _level_box(page)["card"] is None and _level_box(page)["num"] == level["num"]
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()


def test_a_503_with_retry_after_keeps_the_route_and_its_retry_waits_at_most_a_minute(
        browser: Browser, served: Served) -> None:
    """A 503 with Retry-After (the database unreachable, api/edge.py; the road network still loading) is a
    refusal for now too; a Retry-After longer than a minute is waited for a minute at most."""
    ctx, w, routes = _open(browser, served, "en")
    try:
        page = w.page
        shown = _busy(page)
        _pause(page)
        body = json.dumps({"title": "Service Unavailable", "status": 503, "detail": "test: database away"})
        page.route("**/api/v1/route?*", lambda route: route.fulfill(
            status=503, headers={"Content-Type": "application/problem+json", "Retry-After": "3600"}, body=body))
        with page.expect_response(lambda r: "/api/v1/route?" in r.url, timeout=WAIT_MS) as answer:
            page.select_option("#profile", "car")
        assert answer.value.status == 503
        page.wait_for_function(f"() => {SHOWN} || !window.sonaeResident.route", timeout=WAIT_MS)
        busy = _busy(page)
        assert busy["route"] == shown["route"] and busy["line"] and busy["text"] == BUSY_KEPT["en"], busy
        assert busy["busy"]["retryAt"] - busy["busy"]["since"] == RETRY_MAX_MS, busy["busy"]
        page.unroute("**/api/v1/route?*")
        served.offset += 120  # (a route by car is a field not computed yet: its budget, a minute on, allows it)
        with page.expect_response(lambda r: "/api/v1/route?" in r.url, timeout=WAIT_MS) as retried:
            page.clock.fast_forward(RETRY_MAX_MS + 100)
        assert retried.value.status == 200 and "profile=car" in retried.value.url, retried.value.url
        page.wait_for_function("() => { const s = window.sonaeResident; return !s.routeBusy && s.route"
                               " && s.route.properties.profile === 'car' }", timeout=WAIT_MS)
        assert routes.after_refusal() == [routes.asked[-1], 200], routes.events
    finally:
        ctx.close()
