"""The resident page in real headless Chromium: a landmark chosen as the place is named in the page's language, also
after a switch of language.

Found: a gauge picked from the landmark search on the English page went on being named by its English name under
"いる場所" after a switch to Japanese ("目印：Ichido River Gauge"), and in the search box, while the list of
results followed the language. The page now keeps the landmark's names and writes the one of its language.

The API runs in this process (a thread of its own, :class:`tests.pages.test_resident_route_busy_browser.Served`) on a
real PostgreSQL database and a small generated drill town, with one gauge registered by its Japanese name, its
English name and its reading.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from sonae.municipality_code import DRILL_TOWN_CENTER
from tests.conftest import with_database
from tests.pages.chromium import CHROMIUM, sync_playwright
from tests.pages.test_pages_browser import WAIT_MS, Watched, _context, _database
from tests.pages.test_resident_route_busy_browser import Served

if sync_playwright is not None:
    from playwright.sync_api import Browser

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(600),
]

GAUGE = {"id": "ichido", "name": "一度", "name_en": "Ichido River Gauge", "kana": "いちど"}


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
    name = f"sonae_test_landmark_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    server = None
    try:
        server = Served(with_database(pg_server_url, name), mqtt_url, tmp_path_factory.mktemp("landmark"))
        server.run(_gauge(server.database_url))
        yield server
    finally:
        if server is not None:
            server.stop()
        _database(pg_server_url, name, create=False)


#: the place line and the search box once the gauge is the place, by language
SHOWN = {"en": ("Landmark: Ichido River Gauge", "Ichido River Gauge"), "ja": ("目印：一度", "一度"),
         "ja-easy": ("めじるし：一度（いちど）", "一度（いちど）")}


def test_a_landmark_picked_in_english_is_named_in_the_language_switched_to(browser: Browser, served: Served) -> None:
    ctx = _context(browser, geolocation=False)
    try:
        w = Watched(ctx.new_page())
        page = w.page
        page.goto(f"{served.url}/?lang=en")
        page.wait_for_function("() => document.body.getAttribute('data-ready') === 'true'", timeout=WAIT_MS)
        page.fill("#landmark", "Ichido")
        page.click(f"[data-pick='g:{GAUGE['id']}']")
        page.wait_for_function("() => window.sonaeResident.route", timeout=WAIT_MS)  # the place is set and answered

        def shown() -> tuple[str, str]:
            return page.inner_text("#where-status"), page.input_value("#landmark")

        assert shown() == SHOWN["en"], shown()
        for lang in ("ja", "ja-easy", "en"):
            page.click(f"button[data-lang={lang}]")
            page.wait_for_function("(l) => window.sonaeResident.lang === l", arg=lang, timeout=WAIT_MS)
            assert shown() == SHOWN[lang], (lang, shown())
        assert not [e for e in w.errors if not e.startswith("Failed to load resource")], w.errors
    finally:
        ctx.close()
