"""The resident page and the staff console in real headless Chromium, against a real ``sonae run --simulate``.

One Sonae process (its own fresh database, the drill town's road network, simulated gauges) serves the
whole module; one browser runs every test. Screenshots go to ``artifacts/screenshots/``.

Needs Debian's ``chromium`` (``/usr/bin/chromium``, or ``SONAE_TEST_CHROMIUM``) and the Python package
``playwright`` (its own browser download is never used); without them the tests skip and say why.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from sonae.embedded import free_port
from tests.conftest import shared_data, with_database
from tests.pages.chromium import CHROMIUM, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
AXE = Path(__file__).resolve().parent / "vendor" / "axe.min.js"
#: a position inside the drill town (routes end at one of its shelters)
HOME = {"latitude": 37.4000, "longitude": 140.3600}
PASSWORD = "drill-staff-" + uuid.uuid4().hex[:8]

if sync_playwright is not None:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed "
                       "(pip install playwright; its browser download is not needed)"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} "
                       "(apt-get install chromium, or set SONAE_TEST_CHROMIUM)"),
    pytest.mark.timeout(600),  # generous: Chromium and `sonae run` start slowly on a loaded machine
]

#: how long a page may take to show what a test waits for (ms; Chromium under load is slow)
WAIT_MS = 120_000


@dataclass
class Sonae:
    url: str
    proc: subprocess.Popen[str]
    log: Path
    env: dict[str, str]
    _token: str | None = None

    def api(self, method: str, path: str, body: Any = None, token: str | None = None) -> Any:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def token(self) -> str:
        """drillstaff's token, logged in once per module: logins are limited to 10 a minute from one address
        (``api.loginlimit``), and the consoles' own logins in this module come from the same address (found: a
        clean-clone CI run, faster than runs beside other work, had the English-console test's login refused)."""
        if self._token is None:
            answer = self.api("POST", "/api/v1/auth/token", {"username": "drillstaff", "password": PASSWORD})
            self._token = str(answer["access_token"])
        return self._token


def _database(server_url: str, name: str, create: bool) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            if create:
                await conn.execute(f'CREATE DATABASE "{name}"')
            else:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    # in a thread of its own: pytest-asyncio may have an event loop running in this one
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        ex.submit(asyncio.run, run()).result(timeout=60)


@pytest.fixture(scope="module")
def sonae(pg_server_url: str, mqtt_url: str, mqtt_protocol: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sonae]:
    """A real ``sonae run --simulate`` with the drill town, on a fresh database, and a staff account."""
    name = f"sonae_test_pages_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    tmp = tmp_path_factory.mktemp("pages")
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": with_database(pg_server_url, name), "SONAE_MQTT_URL": mqtt_url,
           "SONAE_MQTT_PROTOCOL": mqtt_protocol, "SONAE_MQTT_TOPIC_PREFIX": f"pages{port}/v1",
           "SONAE_INGEST_SHARED_GROUP": "", "SONAE_EVAC_NETWORK": "drilltown", "SONAE_STATE_DIR": str(tmp / "state"),
           "SONAE_API_PORT": str(port), "SONAE_LOG_FORMAT": "text",
           # every page, script, poll and SSE-driven reload of every test comes from 127.0.0.1, counted against
           # one client's budget (600 a minute): the clean-clone CI run of 12212bb, on a loaded machine, got 429s
           # in three tests; the per-client limit has its own tests (tests/api/test_api_abuse.py)
           "SONAE_API_RATE_LIMIT_PER_MINUTE": "0"}
    added = subprocess.run([sys.executable, "-m", "app.cli", "users", "add", "drillstaff", "--role", "staff",
                            "--name", "訓練 職員", "--password-from-env"], env={**env, "SONAE_NEW_PASSWORD": PASSWORD},
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stdout + added.stderr
    log = tmp / "sonae.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--simulate"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    server = Sonae(f"http://127.0.0.1:{port}", proc, log, env)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, "sonae run exited early:\n" + log.read_text()
            try:
                server.api("GET", f"/api/v1/route?lat={HOME['latitude']}&lon={HOME['longitude']}")
                if server.api("GET", "/api/v1/stations")["stations"]:
                    break
            except (OSError, urllib.error.HTTPError):
                pass
            assert time.monotonic() < deadline, "sonae did not become ready:\n" + log.read_text()[-4000:]
            time.sleep(0.3)
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:  # not longer: a stop with an event stream open can hang (reported); the database is dropped anyway
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _database(pg_server_url, name, create=False)


def _context(browser: Browser, *, geolocation: bool | dict[str, float] = True, **extra: Any) -> BrowserContext:
    """A browser context; ``geolocation`` True gives HOME, a dict gives that position, False none."""
    options: dict[str, Any] = {"viewport": {"width": 412, "height": 915}, "locale": "ja-JP", "device_scale_factor": 1}
    if geolocation:
        options.update(geolocation=HOME if geolocation is True else geolocation, permissions=["geolocation"])
    options.update(extra)
    ctx = browser.new_context(**options)
    # every wait of a page (selectors, wait_for_function, navigation) returns as soon as its condition
    # holds: a long default costs nothing when all is well and spares a loaded machine false failures
    ctx.set_default_timeout(WAIT_MS)
    ctx.set_default_navigation_timeout(WAIT_MS)
    return ctx


class Watched:
    """A page with its console errors and every request it made."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.requests: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("request", lambda r: self.requests.append(r.url))


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def _wait_answer(page: Page, timeout: float = WAIT_MS) -> None:
    try:
        # the route and the level come from two requests: wait for both to be shown (the level box keeps
        # its placeholder until the level answer is in)
        page.wait_for_function("() => { const s = window.sonaeResident; return s && s.route && s.route.geometry"
                               " && document.querySelector('.layer-route [data-id=route-line]') && s.level !== null"
                               " && document.getElementById('level-action').textContent.trim() }", timeout=timeout)
    except Exception as exc:
        shot(page, "failed-no-route")
        state = page.evaluate("JSON.stringify({where: document.getElementById('where-status').textContent,"
                              " guidance: document.getElementById('guidance').textContent,"
                              " pos: window.sonaeResident && window.sonaeResident.pos})")
        raise AssertionError(f"no route and level shown: {state}") from exc


@pytest.fixture(scope="module")
def resident(browser: Browser, sonae: Sonae) -> Iterator[Watched]:
    """The resident page, opened once with a geolocation set, and kept open (live) for the module."""
    ctx = _context(browser)
    w = Watched(ctx.new_page())
    w.page.goto(sonae.url + "/")
    _wait_answer(w.page)
    w.page.evaluate("window.__notReloaded = true")
    try:
        yield w
    finally:
        ctx.close()


# -- resident ------------------------------------------------------------------------------------------
def test_resident_page_shows_a_level_and_draws_a_route_ending_at_a_shelter(resident: Watched, sonae: Sonae) -> None:
    page = resident.page
    level = page.get_attribute("#level", "data-level")
    assert level in {"0", "1", "2", "3", "4", "5"}
    assert page.inner_text("#level-name").strip() and page.inner_text("#level-action").strip()
    route = page.evaluate("window.sonaeResident.route")
    props = route["properties"]
    assert props["status"] == "ok"
    shelter = props["shelter"]
    end_lon, end_lat = route["geometry"]["coordinates"][-1]
    assert abs(end_lon - shelter["lon"]) < 0.003 and abs(end_lat - shelter["lat"]) < 0.003, "the route ends at the shelter"
    assert page.inner_text("#shelter-name").startswith(shelter["name"])
    assert page.inner_text("#shelter-address") == shelter["address"]
    assert page.inner_text("#route-distance") and page.inner_text("#route-duration")
    assert page.locator("#steps li").count() >= 2
    # drawn: the route line on the SVG map, ending at the highlighted shelter, over the road network
    d = page.get_attribute(".layer-route [data-id=route-line]", "d") or ""
    assert d.startswith("M") and d.count("L") >= 1
    page.wait_for_function("() => document.querySelectorAll('.layer-roads path').length > 20")
    assert page.locator(f'.layer-points [data-id="{shelter["id"]}"]').get_attribute("class") == "shelter-target"
    # privacy: the position is not in the address bar; only the route and level queries carry it; the map's roads
    # come in fixed 0.01° cells (a cell, like a map tile, never the position); nothing goes elsewhere
    assert "lat" not in page.url and "140.36" not in page.url
    origin = sonae.url + "/"
    assert all(u.startswith(origin) for u in resident.requests), resident.requests
    for u in resident.requests:
        path, _, query = u[len(origin) - 1:].partition("?")
        if path == "/api/v1/network.geojson":
            cell = [float(v) for v in query.removeprefix("bbox=").split(",")]
            assert all(abs(v * 100 - round(v * 100)) < 1e-6 for v in cell), u
        elif path == "/api/v1/shelters":
            # shelters by area: the map view widened to a 0.05° grid, never the position itself
            params = urllib.parse.parse_qs(query)
            assert set(params) <= {"bbox", "limit"}, u
            cell = [float(v) for v in params["bbox"][0].split(",")]
            assert all(abs(v * 20 - round(v * 20)) < 1e-6 for v in cell), u
        elif path in ("/api/v1/route", "/api/v1/level"):
            # the page sends what the server uses: 4 decimals (~10 m), never the device's full precision
            sent = urllib.parse.parse_qs(query)
            assert all(len(sent[k][0].partition(".")[2]) <= 4 for k in ("lat", "lon")), u
        else:
            assert "lat=" not in query and "lon=" not in query and "37.4" not in query, u
    assert not resident.errors, resident.errors
    shot(page, "resident-route-ja")


def test_switching_language_changes_the_text(resident: Watched) -> None:
    page = resident.page
    page.click("button[data-lang=en]")
    page.wait_for_function("() => document.querySelector('#guidance').textContent.includes('Evacuate')")
    assert page.inner_text("h1") == "Sonae evacuation guide"
    assert page.get_attribute("html", "lang") == "en"
    assert page.get_attribute("button[data-lang=en]", "aria-pressed") == "true"
    assert "Shelter" in page.inner_text("#route-card")
    shot(page, "resident-route-en")
    page.click("button[data-lang=ja-easy]")
    page.wait_for_function("() => document.querySelector('#guidance').textContent.includes('にげて')")
    assert "ひなん" in page.inner_text("h1")
    shot(page, "resident-route-ja-easy")
    page.click("button[data-lang=ja]")
    page.wait_for_function("() => document.querySelector('#guidance').textContent.includes('避難してください')")
    assert page.inner_text("h1") == "Sonae 避難ナビ"
    assert "lat" not in page.url


#: a point in 那覇, in no municipality Sonae knows (outside every loaded boundary and the road network)
NAHA = {"latitude": 26.2125, "longitude": 127.6809}


def test_outside_the_area_the_level_box_shows_the_level_answers_outside_headline_in_the_pages_language(
        browser: Browser, sonae: Sonae) -> None:
    """/api/v1/level answers ``covered: false`` and its own outside-area headline there (alerting.level.OUTSIDE);
    the page showed "発表なし" and "いまは避難の必要はありません" (all calm) instead (found by enduser). The
    page's language: negotiated from Accept-Language (en), asked in the address (ja-easy) and switched."""
    from alerting.level import CALM, OUTSIDE

    def level_texts(page: Page) -> tuple[str, str, str]:
        return (page.inner_text("#level-name").strip(), page.inner_text("#level-action").strip(),
                page.inner_text("#level-card"))

    def shows(page: Page, tag: str) -> None:
        headline, instruction = OUTSIDE[tag]
        page.wait_for_function("(h) => document.getElementById('level-name').textContent === h", arg=headline)
        name, action, card = level_texts(page)
        assert (name, action) == (headline, instruction)
        calm = [*CALM[tag], "発表なし", "避難の必要はありません", "No alert", "do not need to evacuate", "でて いません",
                "にげなくて だいじょうぶ", "この場所に出ている避難情報はありません", "No evacuation information is in force"]
        assert not [c for c in calm if c in card], card
        assert page.get_attribute("#level", "data-level") == "outside"

    for locale, query, tag in (("ja-JP", "", "ja-JP"), ("en-US", "", "en-US"), ("ja-JP", "?lang=ja-easy", "ja-JP-x-easy")):
        ctx = _context(browser, geolocation=NAHA, locale=locale)
        try:
            watched = Watched(ctx.new_page())
            page = watched.page
            page.goto(sonae.url + "/" + query)
            shows(page, tag)
            if tag == "ja-JP":
                # a change of language asks the level again: its headline in the new language
                page.click("button[data-lang=ja-easy]")
                shows(page, "ja-JP-x-easy")
                page.click("button[data-lang=en]")
                shows(page, "en-US")
            shot(page, f"resident-outside-{tag}")
            assert not watched.errors, watched.errors
        finally:
            ctx.close()


def test_a_drill_learnt_of_after_the_route_asks_for_the_route_again_in_drill_mode(browser: Browser,
                                                                                 sonae: Sonae) -> None:
    """The page asks for the level and the route at once; when the route answered first (real mode) and
    the level then said a drill is on, the page showed the drill banner and level beside a route that
    ignored the drill's flooded area around the resident ("この経路は洪水の危険を避けています" from inside
    it; found by enduser). Here the level's answer is held until the real route is shown."""
    token = sonae.token()
    # away from HOME, where the module's live resident page stands: neither the drill nor its area reach it
    lat, lon = 37.4100, 140.3500
    d = 0.001
    home = {"type": "Polygon", "coordinates": [[[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d],
                                                [lon - d, lat + d], [lon - d, lat - d]]]}
    area = sonae.api("POST", "/api/v1/hazards", {"geometry": home, "hazard": "flood", "exercise": True,
                                                  "label": "試験: 訓練の浸水"}, token=token)
    try:
        order = sonae.api("POST", "/api/v1/orders", {"level": 3, "municipality_code": "072036", "area": home,
                                                      "exercise": True, "note": "試験: 訓練を後から知る"}, token=token)
    except Exception:
        sonae.api("DELETE", f"/api/v1/hazards/{area['id']}", token=token)
        raise
    ctx = _context(browser, geolocation={"latitude": lat, "longitude": lon})
    held: list[Any] = []
    releasing: list[bool] = []

    def hold(request: Any) -> None:
        request.continue_() if releasing else held.append(request)

    try:
        page = ctx.new_page()
        # nothing else may ask for the route again: no live events, and the page's timers (its poll, the
        # refresh after an event) stopped; the drill simulation changes hazards and alerts all the time
        page.route("**/api/v1/events*", lambda request: request.abort())
        page.clock.install()
        page.clock.pause_at(datetime.now(UTC) + timedelta(minutes=1))
        page.route("**/api/v1/level?*", hold)
        page.goto(sonae.url + "/")
        page.wait_for_function("() => window.sonaeResident && window.sonaeResident.route")
        real = page.evaluate("window.sonaeResident.route.properties")
        assert real["exercise"] is False and real["status"] == "ok", real
        assert held
        releasing.append(True)
        for request in held:
            request.continue_()
        page.wait_for_function("() => window.sonaeResident.drill && window.sonaeResident.route"
                               " && window.sonaeResident.route.properties.exercise === true")
        drill = page.evaluate("window.sonaeResident.route.properties")
        assert drill["status"] == "inside_hazard", drill
        assert page.inner_text("#guidance").startswith("【訓練】")
    finally:
        ctx.close()
        sonae.api("POST", f"/api/v1/orders/{order['order_id']}/cancel", {}, token=token)
        sonae.api("DELETE", f"/api/v1/hazards/{area['id']}", token=token)


def test_a_hazard_drawn_across_the_route_gives_a_new_safe_route_without_a_reload(browser: Browser, sonae: Sonae,
        safe_home: dict[str, float]) -> None:
    """At ``safe_home``, not HOME: the simulated 訓練川 rises to level 4 during a module run and arms the flood
    area over HOME, where the route answer is then "stay, go up" with no line to draw a hazard across (found: a
    full module run read ``route`` null here; the page showed the vertical-evacuation guidance)."""
    from shapely.geometry import LineString, shape

    ctx = _context(browser, geolocation=safe_home)
    page = ctx.new_page()
    page.goto(sonae.url + "/")
    _wait_answer(page)
    page.evaluate("window.__notReloaded = true")
    before = page.evaluate("window.sonaeResident.route")
    coords = before["geometry"]["coordinates"]
    lon, lat = coords[len(coords) // 2]
    d_lat, d_lon = 0.0006, 0.0008
    area = {"type": "Polygon", "coordinates": [[[lon - d_lon, lat - d_lat], [lon + d_lon, lat - d_lat],
                                                [lon + d_lon, lat + d_lat], [lon - d_lon, lat + d_lat],
                                                [lon - d_lon, lat - d_lat]]]}
    assert LineString(coords).intersects(shape(area))
    created = sonae.api("POST", "/api/v1/hazards", {"geometry": area, "hazard": "flood", "label": "test: road flooded"},
                        token=sonae.token())
    try:
        page.wait_for_function("(sig) => window.sonaeResident.routeSig && window.sonaeResident.routeSig !== sig",
                               arg=page.evaluate("window.sonaeResident.routeSig"), timeout=WAIT_MS)
        after = page.evaluate("window.sonaeResident.route")
        assert after["properties"]["status"] == "ok"
        assert not LineString(after["geometry"]["coordinates"]).intersects(shape(area)), "the new route avoids the area"
        assert page.evaluate("window.__notReloaded") is True
        notice = page.inner_text("#notice")
        assert "経路を変更" in notice or "route has changed" in notice
        page.wait_for_function("() => document.querySelectorAll('.layer-areas path.hazard').length >= 1")
        shot(page, "resident-rerouted-around-hazard")
    finally:
        sonae.api("DELETE", f"/api/v1/hazards/{created['id']}", token=sonae.token())
        ctx.close()


# -- staff ---------------------------------------------------------------------------------------------
def test_staff_console_logs_in_acknowledges_an_alert_and_issues_an_order_the_resident_page_shows(
        browser: Browser, sonae: Sonae, resident: Watched) -> None:
    ctx = _context(browser, geolocation=False, viewport={"width": 1280, "height": 1000})
    try:
        staff = Watched(ctx.new_page())
        page = staff.page
        page.goto(sonae.url + "/staff")
        page.fill("#username", "drillstaff")
        page.fill("#password", PASSWORD)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#alerts-card:not([hidden])")
        page.wait_for_function("() => document.body.dataset.loaded")
        page.wait_for_function("() => document.querySelectorAll('.layer-roads path').length > 20")
        page.wait_for_function("() => document.getElementById('chart-24h').dataset.points !== undefined")
        assert page.locator("#chart-24h line.th").count() >= 2, "thresholds drawn in the chart"
        assert page.locator(".layer-points rect.station").count() >= 1
        shot(page, "staff-console")

        # draw the order's area on the map around the resident's position (exercise), and issue it
        page.click("#draw-start")
        page.locator("#map").scroll_into_view_if_needed()
        lat, lon = HOME["latitude"], HOME["longitude"]
        for dlon, dlat in ((-0.004, -0.003), (0.004, -0.003), (0.004, 0.003), (-0.004, 0.003)):
            p = page.evaluate("([lon, lat]) => window.sonaeStaffMap.toClient(lon, lat)", [lon + dlon, lat + dlat])
            page.mouse.click(p["x"], p["y"])
        assert len(page.input_value("#draw-coords").splitlines()) == 4
        page.select_option("#order-level", "4")
        page.check("input[name=order-area][value=drawn]")
        page.check("#order-exercise")
        page.fill("#order-note", "訓練: ブラウザテスト")
        page.click("#order-submit")
        page.wait_for_selector("#orders li[data-order-id]")
        # the order named once, with its level and area (found: 避難情報 避難指示 L4（区域指定）; in English
        # "Evacuation order: Evacuation order (L4) (drawn area)")
        row = page.locator("#alerts tr", has_text="避難指示（警戒レベル4・区域指定）").first
        assert "避難情報" not in row.inner_text() and "L4" not in row.inner_text(), row.inner_text()
        row.locator("button.ack").click()
        page.wait_for_function("() => [...document.querySelectorAll('#alerts tr')].some(r => r.textContent.includes("
                               "'避難指示（警戒レベル4・区域指定）') && r.textContent.includes('確認済 drillstaff'))")
        assert page.is_visible("#drill"), "the exercise banner shows"
        shot(page, "staff-order-issued")
        assert not staff.errors, staff.errors

        # the resident page, still open, shows the order: level 4 from the order's area, and the drill banner
        rp = resident.page
        rp.wait_for_function("() => window.sonaeResident.levelAlert && window.sonaeResident.levelAlert.condition"
                             " === 'evacuation_order'", timeout=WAIT_MS)
        assert rp.get_attribute("#level", "data-level") == "4"
        assert "避難指示" in rp.inner_text("#level-name")
        assert rp.is_visible("#drill")
        rp.wait_for_function("() => document.querySelectorAll('.layer-areas path.order-area').length >= 1")
        assert rp.evaluate("window.__notReloaded") is True
        shot(rp, "resident-order-shown")

        # cancelling the order clears it from the resident page too
        page.once("dialog", lambda d: d.accept())
        page.locator("#orders li[data-order-id] button.cancel-order").first.click()
        rp.wait_for_function("() => !window.sonaeResident.levelAlert || window.sonaeResident.levelAlert.condition"
                             " !== 'evacuation_order'", timeout=WAIT_MS)
    finally:
        ctx.close()


def test_staff_console_shows_official_information_beside_the_order_it_suggests(
        browser: Browser, sonae: Sonae, tmp_path: Path) -> None:
    """A drill 土砂災害警戒情報 for 郡山市 read with `sonae jma import`: the console lists it as JMA's (not an
    order), suggests 避難指示 (レベル4), and one click issues that order through the orders endpoint."""
    from tests.jma.support import LANDSLIDE
    from tests.jma.test_official_flow import koriyama

    telegram = tmp_path / "landslide.xml"
    telegram.write_bytes(koriyama(LANDSLIDE[0], status="訓練"))
    done = subprocess.run([sys.executable, "-m", "app.cli", "jma", "import", str(telegram)], env=sonae.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "applied 1" in done.stdout, done.stdout + done.stderr
    ctx = _context(browser, geolocation=False, viewport={"width": 1280, "height": 1000})
    try:
        staff = Watched(ctx.new_page())
        page = staff.page
        page.goto(sonae.url + "/staff")
        page.fill("#username", "drillstaff")
        page.fill("#password", PASSWORD)
        page.click("#login button[type=submit]")
        row = page.locator("#official tr[data-municipality='072036']")
        row.wait_for()
        text = row.inner_text()
        assert "気象庁: レベル４土砂災害危険警報（土砂災害警戒情報）" in text and "避難指示" in text and "訓練" in text
        shot(page, "staff-official-information")
        page.once("dialog", lambda d: d.accept())
        row.locator("button.issue-suggested").click()
        page.wait_for_function("() => [...document.querySelectorAll('#orders li[data-order-id]')]"
                               ".some(li => li.textContent.includes('072036') || li.textContent.includes('郡山市'))")
        level = sonae.api("GET", "/api/v1/level?municipality=072036")
        kinds = {(s["kind"], s["level"]) for s in level["sources"]}
        assert level["level"] == 4 and level["exercise"] is True
        assert {("official", 4), ("order", 4)} <= kinds
        assert "郡山市: 避難指示" in [s["name"] for s in level["sources"]]
        assert not staff.errors, staff.errors
        order = next(a for a in sonae.api("GET", "/api/v1/alerts?municipality=072036")["alerts"] if a.get("order_id"))
        sonae.api("POST", f"/api/v1/orders/{order['order_id']}/cancel", {}, token=sonae.token())
    finally:
        ctx.close()


# -- accessibility, weight, print -------------------------------------------------------------------------------
def _axe(page: Page) -> list[dict[str, Any]]:
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {runOnly: {type: 'tag',
            values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
    }""")
    return list(result)


def test_pages_pass_an_automated_accessibility_check(browser: Browser, sonae: Sonae,
        safe_home: dict[str, float]) -> None:
    """axe-core (vendored, test-only) in the same browser: WCAG 2.0-2.2 A/AA rules and best practices. At
    ``safe_home``: HOME can be inside the simulated flood by then, with no route to wait for (a module run)."""
    ctx = _context(browser, geolocation=safe_home)
    ctx.add_init_script(path=str(AXE))  # through DevTools: the pages' CSP still applies to everything else
    try:
        page = ctx.new_page()
        page.goto(sonae.url + "/")
        _wait_answer(page)
        problems = {"resident ja": _axe(page)}
        page.click("button[data-lang=en]")
        # the page in English, whatever level the earlier tests of this module left in force
        page.wait_for_function("() => { const g = document.querySelector('#guidance').textContent;"
                               " return document.documentElement.lang === 'en' && /[A-Za-z]/.test(g)"
                               " && !/[\\u3040-\\u30ff]/.test(g); }")
        problems["resident en"] = _axe(page)
        page.goto(sonae.url + "/staff")
        page.wait_for_function("() => document.body.dataset.ready")
        problems["staff login"] = _axe(page)
        page.fill("#username", "drillstaff")
        page.fill("#password", PASSWORD)
        page.click("#login button[type=submit]")
        page.wait_for_function("() => document.body.dataset.loaded")
        problems["staff console"] = _axe(page)
        assert not any(problems.values()), json.dumps(problems, ensure_ascii=False, indent=1)
    finally:
        ctx.close()


def test_resident_page_is_light_keyboard_usable_and_printable(browser: Browser, sonae: Sonae) -> None:
    ctx = _context(browser, geolocation=False)
    try:
        page = ctx.new_page()
        page.goto(sonae.url + "/")
        page.wait_for_function("() => document.body.dataset.ready")
        weights = page.evaluate("""() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const res = performance.getEntriesByType('resource');
            const code = res.filter(r => /\\/static\\//.test(r.name));
            return {page: nav.transferSize + code.reduce((a, r) => a + r.transferSize, 0),
                    all: nav.transferSize + res.reduce((a, r) => a + r.transferSize, 0)};
        }""")
        assert 0 < weights["page"] < 300_000, weights
        (SHOTS.parent).mkdir(parents=True, exist_ok=True)
        (SHOTS.parent / "page-weight.json").write_text(json.dumps(weights))
        # keyboard only: focus the map, move, and choose its centre as the place; a route follows
        page.focus("#map")
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("Enter")
        _wait_answer(page)
        assert page.locator("#steps li").count() >= 2
        # a landmark works the same way: typed words find shelters (server-side) and gauges by name
        shelters = sonae.api("GET", "/api/v1/shelters?format=json")["shelters"]
        word = shelters[3]["name"][:3]
        page.fill("#landmark", word)
        page.wait_for_selector("#landmark-results button[data-pick]")
        names = page.locator("#landmark-results button[data-pick]").all_inner_texts()
        assert names and all(word in n for n in names), names
        assert len(names) <= 16
        picked = page.locator("#landmark-results button[data-pick]").first.inner_text()
        page.locator("#landmark-results button[data-pick]").first.click()
        page.wait_for_function("() => document.getElementById('where-status').textContent.includes('目印')")
        # a shelter picked as the landmark is where the resident is: a suitable one (open, rated for the
        # hazard) answers at_shelter, with no line to walk; any other answers a route as before
        page.wait_for_function("() => { const s = window.sonaeResident; return s && s.route && s.level !== null"
                               " && document.getElementById('level-action').textContent.trim()"
                               " && (s.route.properties.status === 'at_shelter'"
                               " || (s.route.geometry && document.querySelector('.layer-route [data-id=route-line]'))) }")
        status = page.evaluate("window.sonaeResident.route.properties.status")
        if status == "at_shelter":
            shelter = page.evaluate("window.sonaeResident.route.properties.shelter.name")
            assert shelter in picked and shelter in page.inner_text("#guidance"), (picked, shelter)
        page.emulate_media(media="print")
        assert not page.is_visible("#locate")
        assert page.is_visible("#steps" if status != "at_shelter" else "#guidance")
        shot(page, "resident-print")
        page.pdf(path=str(SHOTS / "resident-print.pdf")) if hasattr(page, "pdf") else None
    finally:
        ctx.close()


# -- phones: nothing wider than the screen, nothing cut; each language in its own words ---------------------
@pytest.fixture(scope="module")
def safe_home(sonae: Sonae) -> dict[str, float]:
    """A position in the service area as far as possible from every hazard area (armed or not), so its route
    does not depend on where the simulated flood is at the moment."""
    from shapely.geometry import Point, shape
    from shapely.ops import unary_union

    west, south, east, north = sonae.api("GET", "/api/v1/service")["service_area"]
    areas = unary_union([shape(f["geometry"]) for f in sonae.api("GET", "/api/v1/hazards?state=all")["features"]])
    best = max(((south + (north - south) * (i + 0.5) / 12, west + (east - west) * (j + 0.5) / 12)
                for i in range(1, 11) for j in range(1, 11)),
               key=lambda p: areas.distance(Point(p[1], p[0])) if not areas.is_empty else 0.0)
    return {"latitude": round(best[0], 4), "longitude": round(best[1], 4)}



WIDTHS = (320, 360, 390)
LANGS = ("ja", "en", "ja-easy")

#: Elements whose right edge passes the viewport (or a clipping ancestor) by more than half a pixel, and the
#: document's own width. SVG content is the map's business (clipped on purpose); the skip link waits off-screen.
_CUT = """() => {
    const vw = document.documentElement.clientWidth, out = [];
    // the "visually hidden" pattern (.sr-only, a phone's table header): a 1 px clipped box, read by screen readers
    const hiddenForScreenReaders = (e) => {
        for (let a = e; a && a !== document.body; a = a.parentElement) {
            const r = a.getBoundingClientRect();
            if (getComputedStyle(a).position === 'absolute' && r.width <= 1 && r.height <= 1) return true;
        }
        return false;
    };
    for (const e of document.body.querySelectorAll('*')) {
        if (e.closest('svg') || e.classList.contains('skip') || hiddenForScreenReaders(e)) continue;
        const r = e.getBoundingClientRect();
        if (!r.width || !r.height) continue;
        const st = getComputedStyle(e);
        if (st.visibility === 'hidden' || st.display === 'none') continue;
        if (r.right > vw + 0.5 || r.left < -0.5) out.push([e.id || e.className || e.tagName, Math.round(r.left), Math.round(r.right)]);
        // text cut by its own box (overflow hidden/clip): more content than room
        if (/(hidden|clip)/.test(st.overflowX) && e.scrollWidth > e.clientWidth + 1 && !e.classList.contains('map'))
            out.push([e.id || e.className || e.tagName, 'scrollWidth', e.scrollWidth, e.clientWidth]);
    }
    for (const id of ['level-name', 'level-num']) {  // the level box's text stays inside the box
        const t = document.getElementById(id), box = document.getElementById('level');
        if (t && box && t.getBoundingClientRect().right > box.getBoundingClientRect().right - 2) out.push([id, 'outside #level']);
    }
    return {width: document.documentElement.scrollWidth, bodyWidth: document.body.scrollWidth, vw, cut: out.slice(0, 10)};
}"""


def _fits(page: Page, width: int, what: str) -> None:
    got = page.evaluate(_CUT)
    assert got["vw"] == width, got
    assert got["width"] <= width and got["bodyWidth"] <= width, f"{what}: page {got['width']} px wide at {width} px"
    assert not got["cut"], f"{what}: cut at {width} px: {got['cut']}"


def test_resident_page_fits_phones_in_every_language(browser: Browser, sonae: Sonae,
        safe_home: dict[str, float]) -> None:
    """320, 360 and 390 px wide, ja / en / やさしい日本語, with a route and its details shown."""
    ctx = _context(browser, viewport={"width": 390, "height": 844}, geolocation=safe_home)
    try:
        page = ctx.new_page()
        page.goto(sonae.url + "/")
        _wait_answer(page)
        page.wait_for_selector("#route-details:not([hidden])")
        for lang in LANGS:
            page.click(f"button[data-lang={lang}]")
            page.wait_for_function("(l) => window.sonaeResident.routeLang === l && window.sonaeResident.route"
                                   " && document.documentElement.lang === (l === 'en' ? 'en' : 'ja')", arg=lang)
            _wait_answer(page)
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 844})
                page.wait_for_function("(w) => document.documentElement.clientWidth === w", arg=width)
                _fits(page, width, f"resident {lang}")
                shot(page, f"phone-resident-{lang}-{width}")
                for part in ("level-card", "route-card"):
                    page.locator(f"#{part}").screenshot(path=str(SHOTS / f"phone-resident-{part}-{lang}-{width}.png"))
        # the map: the target shelter's label inside the map, the route line starting at the pin
        label = page.evaluate("""() => {
            const svg = document.getElementById('map-svg').getBoundingClientRect();
            const t = document.querySelector('.layer-points text.map-label');
            if (!t) return null;
            const r = t.getBoundingClientRect();
            return {inside: r.left >= svg.left - 1 && r.right <= svg.right + 1 && r.top >= svg.top - 1 && r.bottom <= svg.bottom + 1};
        }""")
        assert label and label["inside"], label
        access = page.get_attribute(".layer-route [data-id=route-access]", "d") or ""
        first = page.evaluate("window.sonaeResident.route.geometry.coordinates[0]")
        pos = page.evaluate("window.sonaeResident.pos")
        m = re.fullmatch(r"M([-\d.]+) ([-\d.]+)L([-\d.]+) ([-\d.]+)", access)
        assert m, access
        pin = page.get_attribute(".layer-me path", "d") or ""
        tip = re.match(r"M([-\d.]+) ([-\d.]+)", pin)
        assert tip, pin
        assert abs(float(tip.group(1)) - float(m.group(1))) < 0.2 and abs(float(tip.group(2)) - float(m.group(2))) < 0.2, \
            "the dotted line starts at the pin's tip"
        end = page.evaluate("(c) => window.sonaeMap.project(c[0], c[1])", first)
        assert abs(end[0] - float(m.group(3))) < 0.2 and abs(end[1] - float(m.group(4))) < 0.2, "…and ends where the route starts"
        assert pos is not None
    finally:
        ctx.close()


def test_staff_console_fits_phones_and_hides_what_needs_a_login(browser: Browser, sonae: Sonae) -> None:
    token = sonae.token()
    muni = sonae.api("GET", "/api/v1/shelters?format=json&limit=1")["shelters"][0]["municipality_code"]
    order = sonae.api("POST", "/api/v1/orders", {"level": 3, "municipality_code": muni, "exercise": True,
                                                  "note": "test: phone layout"}, token=token)
    ctx = _context(browser, geolocation=False, viewport={"width": 390, "height": 844})
    try:
        page = ctx.new_page()
        page.goto(sonae.url + "/staff")
        page.wait_for_function("() => document.body.dataset.ready")
        # before logging in: no "Log out", no console parts
        assert not page.is_visible("#logout") and not page.is_visible("#who-box")
        assert not page.is_visible("#alerts-card")
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 844})
            _fits(page, width, "staff login")
            shot(page, f"phone-staff-login-{width}")
        page.fill("#username", "drillstaff")
        page.fill("#password", PASSWORD)
        page.click("#login button[type=submit]")
        page.wait_for_function("() => document.body.dataset.loaded")
        page.wait_for_selector("#alerts button.ack")
        assert page.is_visible("#logout")
        rows = page.locator("#alerts tr").all_inner_texts()
        assert rows and not any(re.search(r"\b(river_level|evacuation_order|low_battery|silent|fault)\b", r) for r in rows), rows
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 844})
            page.wait_for_function("(w) => document.documentElement.clientWidth === w", arg=width)
            _fits(page, width, "staff console")
            shot(page, f"phone-staff-console-{width}")
            for part in ("alerts-card", "map-card"):
                page.locator(f"#{part}").screenshot(path=str(SHOTS / f"phone-staff-{part}-{width}.png"))
        # the level header on one line, the exercise tag whole (one line box each)
        page.set_viewport_size({"width": 1280, "height": 900})
        heights = page.evaluate("""() => [...document.querySelectorAll('#alerts-card th:first-child, #alerts .tag-ex')]
            .map(e => e.getClientRects().length)""")
        assert heights and all(n == 1 for n in heights), heights
        # station labels on the map never overlap
        boxes = page.evaluate("""() => [...document.querySelectorAll('#map-svg text.map-label')].map(t => {
            const r = t.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })""")
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not (a[0] < b[2] - 1 and a[2] > b[0] + 1 and a[1] < b[3] - 1 and a[3] > b[1] + 1), (a, b)
    finally:
        ctx.close()
        sonae.api("POST", f"/api/v1/orders/{order['order_id']}/cancel", {}, token=token)


#: Every shown checkbox and radio: its box, and whether it sits beside the words of its <label> (the box's middle
#: within the height of their lines; None without a <label>, as the shelters' "open" boxes, named by aria-label).
_CHOICES = """() => [...document.querySelectorAll('input[type=checkbox], input[type=radio]')]
    .filter(e => e.getClientRects().length && !e.closest('[hidden]'))
    .map(e => {
        const r = e.getBoundingClientRect(), words = e.labels && e.labels[0];
        let onLine = null;
        if (words) {
            const range = document.createRange();
            range.selectNodeContents(words);
            const lines = [...range.getClientRects()].filter(q => q.width > 4 && (q.right <= r.left + 1 || q.left >= r.right - 1));
            if (lines.length) {
                const mid = (r.top + r.bottom) / 2;
                onLine = mid >= Math.min(...lines.map(q => q.top)) - 2 && mid <= Math.max(...lines.map(q => q.bottom)) + 2;
            }
        }
        return {id: e.id || e.getAttribute('aria-label') || e.name + '=' + e.value, width: r.width, height: r.height, onLine};
    })"""


def _choices_fit(page: Page, what: str) -> int:
    """Checks :data:`_CHOICES` (24 px: WCAG 2.2 2.5.8); the number of choices seen."""
    choices = page.evaluate(_CHOICES)
    small = [c for c in choices if c["width"] < 24 or c["height"] < 24]
    assert not small, f"{what}: checkboxes or radios smaller than 24 px: {small[:5]}"
    apart = [c for c in choices if c["onLine"] is False]
    assert not apart, f"{what}: a checkbox or radio not on the line of its words: {apart[:5]}"
    return len(choices)


def test_checkboxes_and_radios_are_24_px_targets_on_the_line_of_their_words_at_320_px(
        browser: Browser, sonae: Sonae, safe_home: dict[str, float]) -> None:
    """At 320 x 640 (WCAG 1.4.10 Reflow's width), in Japanese and English, the console (its shelters' "open"
    boxes, the order's area and exercise choices) and the resident page (the drill-notification choice): the
    page needs no sideways scrolling, and each checkbox or radio is a 24 px target on the line of its words.
    Found: every one was a 13 px-wide box drawn at the top of the 44 px height meant for text fields, its
    words a line below it."""
    ctx, staff = _staff_login(browser, sonae)
    try:
        page = staff.page
        page.wait_for_selector("#shelters tr input[type=checkbox]")
        page.set_viewport_size({"width": 320, "height": 640})
        page.wait_for_function("() => document.documentElement.clientWidth === 320")
        for lang in ("ja", "en"):
            page.click(f"button[data-lang={lang}]")
            page.wait_for_function("(l) => document.documentElement.lang === l", arg=lang)
            assert page.evaluate("document.scrollingElement.scrollWidth") <= 321, f"staff console {lang}: scrolls sideways"
            assert _choices_fit(page, f"staff console {lang}") >= 5
            page.locator("#side").screenshot(path=str(SHOTS / f"phone-staff-side-{lang}-320.png"))
    finally:
        ctx.close()
    ctx = _context(browser, viewport={"width": 320, "height": 640}, geolocation=safe_home)
    try:
        page = ctx.new_page()
        for lang in ("ja", "en"):
            page.goto(sonae.url + "/?lang=" + lang)
            _wait_answer(page)
            assert page.evaluate("document.scrollingElement.scrollWidth") <= 321, f"resident {lang}: scrolls sideways"
            assert _choices_fit(page, f"resident {lang}") >= 1
    finally:
        ctx.close()


#: Japanese script and punctuation (kana, kanji, CJK and full-width punctuation): none in English text
_JAPANESE = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
#: Latin words allowed in Japanese text: the product's name, a key's name and units
_LATIN_OK = {"Sonae", "Enter", "m", "km"}


def test_each_language_uses_only_its_own_words(browser: Browser, sonae: Sonae,
        safe_home: dict[str, float]) -> None:
    """The page's own words are in the chosen language.

    Rule: the visible text (innerText) of the page, less text inside an element that declares another
    language (``lang``, as the language buttons do) and less the proper names that come from data
    (shelter names and addresses, station, river, municipality and road names: they are names, written as
    their owners write them), must contain no Japanese script or punctuation in English, and no Latin words
    in Japanese or やさしい日本語 beyond ``Sonae``, ``Enter`` and units.
    """
    ctx = _context(browser, viewport={"width": 390, "height": 844}, geolocation=safe_home)
    try:
        page = ctx.new_page()
        page.goto(sonae.url + "/")
        _wait_answer(page)
        page.wait_for_selector("#route-details:not([hidden])")
        page.wait_for_function("() => document.getElementById('level-source').textContent")
        for lang in LANGS:
            page.click(f"button[data-lang={lang}]")
            page.wait_for_function("(l) => window.sonaeResident.routeLang === l && window.sonaeResident.route", arg=lang)
            page.wait_for_function("() => document.getElementById('where-status').textContent")
            text = page.evaluate("""() => {
                const clone = document.body.cloneNode(true);
                const live = [...document.body.querySelectorAll('*')];
                const copy = [...clone.querySelectorAll('*')];
                const root = document.documentElement.lang;
                copy.forEach((e, i) => {
                    const st = getComputedStyle(live[i]);
                    if (st.display === 'none' || live[i].closest('[hidden]') || (e.lang && e.lang !== root)) e.remove();
                });
                return clone.textContent;
            }""")
            names = page.evaluate("""() => {
                const s = window.sonaeResident, out = [];
                const r = s.route && s.route.properties;
                if (r && r.shelter) out.push(r.shelter.name, r.shelter.address || '');
                for (const st of (r && r.steps) || []) out.push(st.name || st.road || '');
                for (const x of s.stations) out.push(x.name, x.name_en || '', x.river || '');
                for (const a of s.alerts) out.push(a.municipality_name || '', a.municipality_name_en || '', a.station_name || '');
                return out.filter(Boolean).sort((a, b) => b.length - a.length);
            }""")
            for name in names:
                text = text.replace(name, " ")
            where = page.inner_text("#where-status")
            if lang == "en":
                found = sorted(set(_JAPANESE.findall(text)))
                assert not found, f"Japanese in English: {found} in {text[:2000]!r}"
                assert where == "Your location (device)"
            else:
                words = set(re.findall(r"[A-Za-z]+", text)) - _LATIN_OK
                assert not words, f"English in {lang}: {sorted(words)}"
        # the lists follow the language: 、 in Japanese, ", " in English
        page.click("button[data-lang=en]")
        page.wait_for_function("() => window.sonaeResident.lang === 'en'")
        hazards = page.inner_text("#shelter-hazards")
        assert "、" not in hazards
    finally:
        ctx.close()


def _real_gauges() -> list[dict[str, Any]]:
    """The real MLIT 危機管理型 gauges of Fukushima (one per station code, with its name and position)."""
    import csv
    import gzip

    path = shared_data("river_levels", "mlit_kriver_fukushima_gauges_over_threshold_2025-09_to_2026-08.csv.gz")
    gauges: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            gauges.setdefault(row["station_code"], {"name": row["station_name"], "lat": float(row["latitude"]),
                                                    "lon": float(row["longitude"])})
    return list(gauges.values())


def test_map_labels_of_the_real_gauges_never_overlap_and_thin_out_by_zoom(browser: Browser, sonae: Sonae) -> None:
    """map.js's label placement with every real gauge of the prefecture on a phone-sized map."""
    gauges = _real_gauges()
    assert len(gauges) > 200
    ctx = _context(browser, geolocation=False, viewport={"width": 360, "height": 800})
    try:
        page = ctx.new_page()
        page.goto(sonae.url + "/staff")
        page.wait_for_function("() => document.body.dataset.ready")
        measure = """() => {
            const svg = document.getElementById('test-map'), box = svg.getBoundingClientRect();
            const labels = [...svg.querySelectorAll('text.map-label')].map(t => {
                const r = t.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; });
            return {labels, points: svg.querySelectorAll('rect').length,
                    inside: labels.every(r => r[0] >= box.left - 1 && r[2] <= box.right + 1 && r[1] >= box.top - 1 && r[3] <= box.bottom + 1)};
        }"""
        page.evaluate("""(gauges) => {
            const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
            svg.id = 'test-map';
            svg.style.width = '330px';
            document.body.prepend(svg);
            const map = new window.Sonae.SvgMap(svg, {aspect: 0.75});
            window.testMap = map;
            map.setView(window.Sonae.boundsOf(gauges.map(g => [g.lon, g.lat])), 0.02);
            map.setLayer('points', gauges.map((g, i) => ({point: [g.lon, g.lat], shape: 'square', r: 6, cls: 'station st-0',
                                                        label: g.name, labelPriority: i % 7 === 0 ? 3 : 0})));
        }""", gauges)
        whole = page.evaluate(measure)
        page.evaluate("() => { window.testMap.zoom(4); }")
        zoomed = page.evaluate(measure)
        for got in (whole, zoomed):
            assert got["inside"], "every label inside the map"
            boxes = got["labels"]
            for i, a in enumerate(boxes):
                for b in boxes[i + 1:]:
                    assert not (a[0] < b[2] - 0.5 and a[2] > b[0] + 0.5 and a[1] < b[3] - 0.5 and a[3] > b[1] + 0.5), (a, b)
        assert whole["points"] == len(gauges) and 0 < len(whole["labels"]) < len(gauges) / 4, whole["points"]
        # zoomed in: fewer gauges in view, a larger share of them labelled
        assert zoomed["points"] < whole["points"]
        assert len(zoomed["labels"]) / zoomed["points"] > len(whole["labels"]) / whole["points"]
        page.locator("#test-map").screenshot(path=str(SHOTS / "map-real-gauges-360.png"))
    finally:
        ctx.close()


# -- the staff console's input, language, scope and live official information (breakit7) -------------------------
def _staff_login(browser: Browser, sonae: Sonae, *, username: str = "drillstaff", query: str = "",
                 locale: str = "ja-JP", events: Any = None, **extra: Any) -> tuple[BrowserContext, Watched]:
    """A logged-in console; ``events``, when given, serves the page's event stream (a Playwright route handler);
    ``extra``: more context options (``timezone_id``)."""
    ctx = _context(browser, geolocation=False, viewport={"width": 1280, "height": 1000}, locale=locale, **extra)
    staff = Watched(ctx.new_page())
    page = staff.page
    if events is not None:
        page.route("**/api/v1/events?*", events)
    page.goto(sonae.url + "/staff" + query)
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login button[type=submit]")
    page.wait_for_selector("#alerts-card:not([hidden])")
    page.wait_for_function("() => document.body.dataset.loaded && document.querySelectorAll('#order-muni option').length"
                           " && document.querySelectorAll('#station option').length")
    return ctx, staff


def _shelter_occupancy(sonae: Sonae, shelter_id: str) -> int:
    shelters = sonae.api("GET", "/api/v1/shelters")["features"]
    return int(next(f for f in shelters if f["properties"]["id"] == shelter_id)["properties"]["occupancy"])


def test_staff_console_refuses_an_emptied_or_unreadable_occupancy(browser: Browser, sonae: Sonae) -> None:
    """breakit7: emptying the occupancy box and pressing 更新 saved occupancy 0 (``Number(occ.value) || 0``): a
    full shelter then looked empty and routes, which skip full shelters, sent people there. The console refuses
    what is not a whole number from 0 (empty, unreadable, negative, fractional), says so, and changes nothing."""
    ctx, staff = _staff_login(browser, sonae)
    try:
        page = staff.page
        page.wait_for_selector("#shelters tr")
        row = page.locator("#shelters tr").first
        sid = row.get_attribute("data-shelter-id")
        assert sid
        row.locator("input[type=number]").fill("35")
        row.locator("button").click()
        page.wait_for_function("() => document.getElementById('notice').textContent.includes('Shelter updated')")
        assert _shelter_occupancy(sonae, sid) == 35
        # one login for all (the login limit: 10 a minute from one address, api/loginlimit.py)
        for typed in ("", "1e", "-3", "2.5"):
            page.evaluate("document.getElementById('notice').textContent = ''")
            row = page.locator(f"#shelters tr[data-shelter-id='{sid}']")
            box = row.locator("input[type=number]")
            box.fill("")
            if typed:
                box.press_sequentially(typed)
            row.locator("button").click()
            page.wait_for_function("() => document.getElementById('notice').textContent.includes('whole number')")
            assert "収容人数" in page.inner_text("#notice") and "not updated" in page.inner_text("#notice"), typed
            assert box.get_attribute("aria-invalid") == "true"
            assert _shelter_occupancy(sonae, sid) == 35, f"nothing was sent for {typed!r}"
        assert not staff.errors, staff.errors
    finally:
        ctx.close()


def test_a_reload_failing_in_the_background_never_replaces_the_answer_to_what_staff_did(
        browser: Browser, sonae: Sonae) -> None:
    """The console wrote a failed reload (the 15 s poll, or one of the reloads the simulator's alert events
    cause) to the one notice line, in place of the answer to the last action: a refusal, "Order issued",
    "Could not issue: …" were gone for staff, and a test awaiting one waited in vain (the likely cause of the
    occupancy test's one failure in a module run on a loaded machine; not reproduced in 14 runs). Here the page's event stream (served by the test) brings an ``alert`` event once the refusal
    is shown, and the reload it causes is answered 503 with Retry-After (the database away, api/edge.py); the
    refusal stays, the failure has its own line (the busy notice: a 503 with Retry-After is waited out, staff.js
    waitOut), and the retry after Retry-After, answered, empties that line."""
    live = {"alert": False, "fail": False}

    def stream(route: Any) -> None:
        body = "event: alert\ndata: {}\n\n" if live["alert"] else ": nothing yet\n\n"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}, body=body)

    def alerts(route: Any) -> None:
        if live["fail"]:
            route.fulfill(status=503, headers={"Content-Type": "application/problem+json", "Retry-After": "5"},
                          body=json.dumps({"title": "Service Unavailable", "status": 503, "detail": "test: database away"}))
        else:
            route.continue_()

    ctx, staff = _staff_login(browser, sonae, events=stream)
    try:
        page = staff.page
        page.route("**/api/v1/alerts?*", alerts)
        page.wait_for_function("() => window.sonaeStaff.timer")
        page.evaluate("clearInterval(window.sonaeStaff.timer)")
        row = page.locator("#shelters tr").first
        row.locator("input[type=number]").fill("")
        row.locator("button").click()
        page.wait_for_function("() => document.getElementById('notice').textContent.includes('whole number')")
        live["fail"] = live["alert"] = True
        page.wait_for_function("() => ['notice', 'load-status', 'busy-status'].some(id => document.getElementById(id)"
                               " && /Could not load|The server is busy/.test(document.getElementById(id).textContent))")
        assert "whole number" in page.inner_text("#notice"), page.inner_text("#notice")
        assert "The server is busy, so the alerts" in page.inner_text("#busy-status")
        live["fail"] = False
        page.wait_for_function("() => document.getElementById('busy-status').hidden"
                               " && !document.getElementById('load-status').textContent", timeout=WAIT_MS)
        assert "whole number" in page.inner_text("#notice")
        assert not [e for e in staff.errors if "503" not in e], staff.errors
    finally:
        ctx.close()


def test_the_shelter_api_refuses_an_occupancy_that_is_not_a_number(sonae: Sonae) -> None:
    shelter = sonae.api("GET", "/api/v1/shelters")["features"][0]["properties"]["id"]
    token = sonae.token()  # one login (the login limit: 10 a minute from one address)
    for bad in ("", "35", "abc", True, 1.5, -1, [3]):
        with pytest.raises(urllib.error.HTTPError) as refused:
            sonae.api("PATCH", f"/api/v1/shelters/{urllib.parse.quote(shelter)}", {"occupancy": bad}, token=token)
        assert 400 <= refused.value.code < 500, bad


def _add_account(sonae: Sonae, username: str, municipality: str) -> None:
    added = subprocess.run([sys.executable, "-m", "app.cli", "users", "add", username, "--role", "staff",
                            "--municipality", municipality, "--password-from-env"],
                           env={**sonae.env, "SONAE_NEW_PASSWORD": PASSWORD}, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0 or "exists" in added.stdout + added.stderr, added.stdout + added.stderr


def test_staff_console_offers_only_the_municipalities_the_account_may_order_for(browser: Browser, sonae: Sonae) -> None:
    """breakit7: a 072036 account's list offered 079995 (refused 403 when used). A municipal account is offered
    its own municipality only; a prefecture-wide one the covered municipalities, the drill town for exercises."""
    _add_account(sonae, "korstaff", "072036")
    ctx, staff = _staff_login(browser, sonae, username="korstaff")
    try:
        page = staff.page
        options = page.eval_on_selector_all("#order-muni option", "os => os.map(o => [o.value, o.textContent])")
        assert [v for v, _ in options] == ["072036"] and "郡山市" in options[0][1], options
        page.check("#order-exercise")
        assert page.eval_on_selector_all("#order-muni option", "os => os.map(o => o.value)") == ["072036"]
    finally:
        ctx.close()
    ctx, staff = _staff_login(browser, sonae)
    try:
        page = staff.page
        real = page.eval_on_selector_all("#order-muni option", "os => os.map(o => o.value)")
        assert "079995" not in real and "072036" in real
        page.check("#order-exercise")
        assert page.input_value("#order-muni") == "079995"
    finally:
        ctx.close()


def test_staff_console_shows_official_information_as_it_comes_without_waiting_for_the_poll(
        browser: Browser, sonae: Sonae, tmp_path: Path) -> None:
    """breakit7: the console ignored SSE ``event: official``; JMA's information showed at the next 15 s poll.

    The poll is stopped, and the page's event stream is served here: until the telegram is stored, an empty
    stream; after, one ``event: official`` as api/events.py sends it (``data`` is never read by the console).
    In ``run --simulate`` the real stream carries the simulator's alert events, each of which reloads the
    console too, so with the real stream the row would come whether ``official`` is handled or not (this test,
    so written, passed without the fix)."""
    from tests.jma.support import LANDSLIDE, sample, substitute

    stored = {"yes": False}

    def stream(route: Any) -> None:
        body = "event: official\ndata: {}\n\n" if stored["yes"] else ": nothing yet\n\n"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}, body=body)

    ctx, staff = _staff_login(browser, sonae, events=stream)
    try:
        page = staff.page
        page.wait_for_function("() => window.sonaeStaff.timer")
        page.evaluate("clearInterval(window.sonaeStaff.timer)")
        assert page.locator("#official tr[data-municipality='072010']").count() == 0
        telegram = tmp_path / "landslide-fukushima.xml"
        data = substitute(sample(LANDSLIDE[0]), code7="1420600", name="小田原市", as_code7="0720100", as_name="福島市",
                          status="訓練").decode("utf-8")
        # an event of its own: the koriyama telegram of another test has the sample's EventID (this one would be stale)
        data = re.sub(r"<EventID>([^<]*)</EventID>", r"<EventID>\1/fukushima-live</EventID>", data, count=1)
        telegram.write_bytes(data.encode("utf-8"))
        done = subprocess.run([sys.executable, "-m", "app.cli", "jma", "import", str(telegram)], env=sonae.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "applied 1" in done.stdout, done.stdout + done.stderr
        stored["yes"] = True
        row = page.locator("#official tr[data-municipality='072010']")
        row.wait_for()
        assert "レベル４土砂災害危険警報" in row.inner_text() and "福島市" in row.inner_text()
        assert not staff.errors, staff.errors
    finally:
        ctx.close()


def test_the_english_staff_console_has_no_japanese_but_proper_names(browser: Browser, sonae: Sonae) -> None:
    """breakit7: in English the console showed レベル, 「レベル3 072036 区域 … 訓練」, 「避難情報 緊急安全確保 L5（区域指定）」,
    「確認済 kor」, 「…レベル 0」, 「水防団待機 2」, 更新, "発令できません / Could not issue: …" and "Sonae gauge 本宮".

    Rule (as for the resident page): the text of the page (every text node shown, every aria-label, every
    option), less the language buttons (``lang`` ja) and the proper names that come from data without an
    English form (station, shelter and municipality names, the account's display name, hazard labels), has
    no Japanese script or punctuation."""
    token = sonae.token()
    order = sonae.api("POST", "/api/v1/orders", {"level": 5, "municipality_code": "079995", "exercise": True,
                                                 "area": {"type": "Polygon", "coordinates": [[
                                                     [140.355, 37.395], [140.365, 37.395], [140.365, 37.405],
                                                     [140.355, 37.405], [140.355, 37.395]]]}}, token=token)
    sonae.api("POST", f"/api/v1/alerts/{order['alert_id']}/acknowledge", {}, token=token)
    ctx, staff = _staff_login(browser, sonae, query="?lang=en")
    try:
        page = staff.page
        page.wait_for_selector(f"#orders li[data-order-id='{order['order_id']}']")
        page.wait_for_function("() => document.getElementById('chart-24h').dataset.points !== undefined")
        # an error from the server, in English only
        page.uncheck("#order-exercise")
        page.evaluate("document.getElementById('order-muni').appendChild(new Option('x', '079995'))")
        page.select_option("#order-muni", "079995")
        page.click("#order-submit")
        page.wait_for_function("() => document.getElementById('notice').textContent.startsWith('Could not issue: ')")
        texts = page.evaluate("""() => {
            const out = [];
            const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
            let n;
            while ((n = w.nextNode())) {
                const e = n.parentElement;
                if (!e || e.closest('[hidden]') || e.closest('[lang=ja]') || getComputedStyle(e).display === 'none') continue;
                if (n.textContent.trim()) out.push(n.textContent.trim());
            }
            for (const e of document.querySelectorAll('[aria-label]')) if (!e.closest('[hidden]')) out.push(e.getAttribute('aria-label'));
            out.push(document.title);
            return out;
        }""")
        names = page.evaluate("""async () => {
            const s = window.sonaeStaff, out = [s.account.display_name || ''];
            for (const x of s.stations) if (!x.name_en) out.push(x.name, x.river || ''); else out.push(x.river || '');
            for (const x of s.shelters) if (!x.name_en) out.push(x.name);
            for (const m of s.municipalities) if (!m.name_en) out.push(m.name_ja);
            for (const h of s.hazards) out.push(h.properties.label || '');
            return out.filter(Boolean).sort((a, b) => b.length - a.length);
        }""")
        found = []
        for text in texts:
            rest = text
            for name in names:
                rest = rest.replace(name, " ")
            if _JAPANESE.search(rest):
                found.append(text)
        assert not found, f"Japanese in the English console: {found[:20]}"
        whole = "\n".join(texts)
        assert "Acknowledged by drillstaff" in whole and "Emergency safety measures (Level 5, drawn area)" in whole
        # the order's name once (found: "Evacuation order: Emergency safety measures (L5) (drawn area)")
        assert "Evacuation order:" not in whole and "(L5)" not in whole
        assert page.evaluate("document.documentElement.lang") == "en"
        assert not [e for e in staff.errors if "422" not in e and "403" not in e], staff.errors
    finally:
        ctx.close()
        sonae.api("POST", f"/api/v1/orders/{order['order_id']}/cancel", {}, token=token)


# -- several hazards at once (last: the 訓練 telegram it reads stays in force) -----------------------------
def _run_sql(sonae: Sonae, *statements: tuple[Any, ...]) -> list[Any]:
    """Run statements on the module's database (in a thread of its own); each ``(sql, *args)``; fetchval each."""
    async def run() -> list[Any]:
        conn = await asyncpg.connect(sonae.env["SONAE_DATABASE_URL"])
        try:
            return [await conn.fetchval(sql, *args) for sql, *args in statements]
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, run()).result(timeout=60)


def test_flood_and_landslide_in_force_route_to_a_site_rated_for_both(browser: Browser, sonae: Sonae,
                                                                    safe_home: dict[str, float],
                                                                    tmp_path: Path) -> None:
    """A gauge's flood (level 4) and a 土砂災害 warning (level 4) at once where the resident is (breakit7: the page
    switched the route to landslide alone, and a landslide-only site could be where someone fleeing the river was
    sent). The page asks for the route with both and says the site is rated for both. The drill town lies in 郡山市's
    boundary: the 訓練 telegram is read with `sonae jma import` (as the staff console's test does; already in force
    when that test ran first, and left in force as it leaves it); the gauge alert is written as alerting writes it."""
    from tests.jma.support import LANDSLIDE
    from tests.jma.test_official_flow import koriyama

    telegram = tmp_path / "landslide.xml"
    telegram.write_bytes(koriyama(LANDSLIDE[0], status="訓練"))
    done = subprocess.run([sys.executable, "-m", "app.cli", "jma", "import", str(telegram)], env=sonae.env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    _run_sql(sonae, ("""INSERT INTO stations (id, name, municipality_code, lat, lon, exercise)
                        VALUES ('PAGES-FLOOD', '訓練川 試験', '072036', $1, $2, true)""", safe_home["latitude"],
                     safe_home["longitude"]),
             ("""INSERT INTO alerts (station_id, condition, exercise, audience, municipality_code, level, max_level,
                                    state, raised_at, changed_at)
                 VALUES ('PAGES-FLOOD', 'river_level', true, 'public', '072036', 4, 4, 'raised', now(), now())""",),
             ("SELECT pg_notify('sonae_alerts', '{}')",))
    level = sonae.api("GET", f"/api/v1/level?lat={safe_home['latitude']}&lon={safe_home['longitude']}")
    assert [(h["hazard"], h["level"]) for h in level["hazards"]] == [("flood", 4), ("landslide", 4)], {k: level[k] for k in ("municipality_code", "sources", "covered")}
    ctx = _context(browser, geolocation=safe_home)  # away from the simulated flood, wherever it is now
    try:
        w = Watched(ctx.new_page())
        page = w.page
        page.goto(sonae.url + "/")
        try:
            page.wait_for_function("() => { const r = window.sonaeResident.route; return r && r.properties.hazard"
                                   " === 'flood,landslide' && (r.properties.status === 'ok'"
                                   " || r.properties.status === 'at_shelter') }")
        except Exception as exc:
            shot(page, "failed-flood-and-landslide")
            got = page.evaluate("JSON.stringify({route: window.sonaeResident.route && window.sonaeResident.route"
                                ".properties, routeHazard: window.sonaeResident.routeHazard})")
            raise AssertionError(f"no route for both hazards: {got[:1500]}; asked: "
                                 f"{[u for u in w.requests if '/api/v1/route' in u]}") from exc
        props = page.evaluate("window.sonaeResident.route.properties")
        assert {"flood", "landslide"} <= set(props["shelter"]["hazards"]), props["shelter"]
        assert any("hazard=flood%2Clandslide" in u for u in w.requests if "/api/v1/route" in u)
        if props["status"] == "ok":
            avoids = page.inner_text("#route-avoids")
            assert "洪水、土砂災害" in avoids and "すべてに対応" in avoids, avoids
            hazards = page.inner_text("#shelter-hazards")
            assert "洪水" in hazards and "土砂災害" in hazards
        shot(page, "resident-flood-and-landslide")
        assert not w.errors, w.errors
    finally:
        ctx.close()
        _run_sql(sonae, ("UPDATE alerts SET cleared_at = now(), state = 'cleared' WHERE station_id = 'PAGES-FLOOD'",),
                 ("SELECT pg_notify('sonae_alerts', '{}')",))


@pytest.mark.parametrize(("query", "mark"), [("", "（日本時間）"), ("?lang=en", " JST")])
def test_staff_console_shows_times_in_japan_time_in_a_browser_set_to_utc(browser: Browser, sonae: Sonae,
                                                                         query: str, mark: str) -> None:
    """Found: in a browser running in UTC an order issued at 11:30 JST showed as 02:30, unmarked. Every time of
    the console is Japan time (Asia/Tokyo), marked so in the console's language, whatever the browser's zone."""
    token = sonae.token()
    muni = sonae.api("GET", "/api/v1/shelters?format=json&limit=1")["shelters"][0]["municipality_code"]
    order = sonae.api("POST", "/api/v1/orders", {"level": 3, "municipality_code": muni, "exercise": True},
                      token=token)
    try:
        ctx, staff = _staff_login(browser, sonae, query=query, timezone_id="UTC")
        try:
            page = staff.page
            assert page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone") in ("UTC", "Etc/UTC")
            item = page.locator(f"#orders li[data-order-id='{order['order_id']}']")
            item.wait_for()
            alerts = sonae.api("GET", "/api/v1/alerts?exercise=true&audience=all", token=token)
            rows = alerts["alerts"] if isinstance(alerts, dict) else alerts
            raised = next(a["raised_at"] for a in rows if a.get("order_id") == order["order_id"])
            at = datetime.fromisoformat(raised.replace("Z", "+00:00"))
            jst, utc = at.astimezone(ZoneInfo("Asia/Tokyo")), at.astimezone(UTC)
            text = item.inner_text()
            assert f"{jst:%H:%M}{mark}" in text, (text, raised)
            assert f"{utc:%H:%M}" not in text, (text, raised)
            since = page.locator(f"#alerts tr:has-text('{jst:%H:%M}')")
            assert since.count() >= 1 and mark.strip() in since.first.inner_text()
            assert not staff.errors, staff.errors
        finally:
            ctx.close()
    finally:
        sonae.api("POST", f"/api/v1/orders/{order['order_id']}/cancel", {}, token=token)


def test_resident_page_shows_its_times_in_japan_time_in_a_browser_set_to_utc(browser: Browser, sonae: Sonae) -> None:
    """The resident page's "updated" time (and the printed one): Japan time, marked, in a browser set to UTC."""
    ctx = _context(browser, timezone_id="UTC")
    try:
        page = ctx.new_page()
        page.goto(sonae.url + "/")
        page.wait_for_function("() => document.getElementById('updated').textContent.includes('日本時間')")
        text = page.inner_text("#updated")
        now = datetime.now(ZoneInfo("Asia/Tokyo"))
        hours = {f"{(now + timedelta(minutes=d)).hour:02d}:" for d in (-5, 0, 5)}
        assert any(h in text for h in hours), text
    finally:
        ctx.close()
