"""The resident page in real headless Chromium asks its route once when it opens.

Found: where a hazard was in force (a gauge's flood within 5 km), every page opened asked the same route twice
(two identical ``GET /api/v1/route``). The page asks the level and the route at once; the level's answer named the
hazard in force, flood, the one the page had just asked for, and the page asked for it again as if it had changed.
It now asks again only when the level's answer changes what the route is asked for (another hazard or set of
them, or a drill).

The API runs in this process (a thread of its own, :class:`tests.pages.test_resident_route_busy_browser.Served`) on a
real PostgreSQL database and a small generated drill town, with a gauge at 氾濫危険水位 (level 4) beside the
resident.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from sonae.municipality_code import DRILL_TOWN_CENTER
from tests.conftest import with_database
from tests.pages.chromium import CHROMIUM, sync_playwright
from tests.pages.test_pages_browser import WAIT_MS, Watched, _context, _database
from tests.pages.test_resident_route_busy_browser import HOME, Routes, Served

if sync_playwright is not None:
    from playwright.sync_api import Browser

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(600),
]

KORIYAMA = "072036"


async def _gauge_at_level_4(database_url: str) -> None:
    """A gauge 300 m from HOME whose alert is at level 4 (氾濫危険水位): the level there names flood as in force."""
    from alerting.rules import Transition
    from alerting.store import apply_transition
    from ingest.registry import Station, upsert_stations

    conn = await asyncpg.connect(database_url)
    try:
        await upsert_stations(conn, [Station(id="once", name="一度", kana="いちど", river="訓練川",
                                             municipality_code=KORIYAMA, lat=DRILL_TOWN_CENTER[0] + 0.0025,
                                             lon=DRILL_TOWN_CENTER[1] + 0.001, th_evacuation=4.0, th_danger=5.5)])
        async with conn.transaction():
            await apply_transition(conn, station_id="once", municipality_code=KORIYAMA, exercise=False,
                                   t=Transition("river_level", None, 4, datetime.now(UTC).timestamp(), 5.6, 5.5,
                                                "threshold"))
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def served(pg_server_url: str, mqtt_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    name = f"sonae_test_once_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    server = None
    try:
        server = Served(with_database(pg_server_url, name), mqtt_url, tmp_path_factory.mktemp("once"))
        server.run(_gauge_at_level_4(server.database_url))
        yield server
    finally:
        if server is not None:
            server.stop()
        _database(pg_server_url, name, create=False)


#: counts the page's route requests as it makes them (``asked``) and as their answers come (``answered``), before
#: any script of the page runs
COUNT_ROUTE_REQUESTS = """(() => {
    const count = window.__routeRequests = {asked: 0, answered: 0};
    const fetch = window.fetch;
    window.fetch = function (input, init) {
        const route = String((input && input.url) || input).includes('/api/v1/route?');
        if (route) count.asked += 1;
        const answer = fetch.call(this, input, init);
        if (route) answer.finally(() => { count.answered += 1; }).catch(() => {});
        return answer;
    };
})();"""


@pytest.mark.parametrize("lang", ["ja", "en"])
def test_a_page_opened_where_a_hazard_is_in_force_asks_its_route_once(browser: Browser, served: Served,
                                                                      lang: str) -> None:
    ctx = _context(browser, geolocation=HOME)
    try:
        ctx.add_init_script(COUNT_ROUTE_REQUESTS)
        w = Watched(ctx.new_page())
        page = w.page
        routes = Routes(page)
        page.goto(f"{served.url}/?lang={lang}")
        # settled: the route drawn, the level shown with the flood in force it names, and no route request on its
        # way (a second one would have been asked when the level's answer was read, before the level is shown)
        page.wait_for_function("""() => { const s = window.sonaeResident, n = window.__routeRequests;
            return s && s.route && s.route.properties.status === 'ok' && s.routeHazard === 'flood' && s.level === 4
                && document.querySelector('.layer-route [data-id=route-line]')
                && document.getElementById('level-action').textContent.trim() && n.asked === n.answered }""",
                               timeout=WAIT_MS)
        counted = page.evaluate("window.__routeRequests")
        assert counted["asked"] == 1, (counted, routes.asked)
        assert len(routes.asked) <= 1 and routes.answers == [(200, routes.answers[0][1])], routes.events
        assert f"hazard=flood&profile=walk&lang={lang}&exercise=false" in routes.asked[0], routes.asked
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()
