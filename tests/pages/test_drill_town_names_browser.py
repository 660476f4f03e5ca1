"""The drill town (079995) and its gauges by name on the resident page, in ja, en and やさしい日本語, in real headless
Chromium against a real ``sonae run --simulate`` (the browser fixture of tests/pages/conftest.py).

Found: an order of the drill town showed its place as the bare code ("(079995, …)"), and the drill town's gauges
were registered with their station id as their English name (``name_en="DT-G01"``) and no reading, so English
texts named a gauge by its id and やさしい日本語 gave no reading of 訓練川 第1水位観測所.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sonae.embedded import free_port
from sonae.municipality_code import DRILL_TOWN_CODE, DRILL_TOWN_NAMES
from tests.conftest import with_database
from tests.pages.chromium import CHROMIUM, sync_playwright

HOME = {"latitude": 37.4000, "longitude": 140.3600}  # inside the drill town
PASSWORD = "drill-staff-" + uuid.uuid4().hex[:8]
WAIT_MS = 120_000

if sync_playwright is not None:
    from playwright.sync_api import Browser

pytestmark = [
    pytest.mark.skipif(sync_playwright is None, reason="the Python package 'playwright' is not installed"),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM}"),
    pytest.mark.timeout(600),
]


class Sonae:
    def __init__(self, url: str, database_url: str) -> None:
        self.url = url
        self.database_url = database_url
        self.token = ""

    def sql(self, statement: str, *args: Any) -> None:
        async def run() -> None:
            conn = await asyncpg.connect(self.database_url)
            try:
                await conn.execute(statement, *args)
            finally:
                await conn.close()

        with concurrent.futures.ThreadPoolExecutor(1) as ex:  # pytest-asyncio may run a loop in this thread
            ex.submit(asyncio.run, run()).result(timeout=60)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None


def _database(server_url: str, name: str, create: bool) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        ex.submit(asyncio.run, run()).result(timeout=60)


@pytest.fixture(scope="module")
def sonae(pg_server_url: str, mqtt_url: str, mqtt_protocol: str,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sonae]:
    """A real ``sonae run --simulate`` with the drill town, on a fresh database, and a staff account logged in."""
    name = f"sonae_test_drillnames_{uuid.uuid4().hex[:10]}"
    _database(pg_server_url, name, create=True)
    tmp = tmp_path_factory.mktemp("drillnames")
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": with_database(pg_server_url, name), "SONAE_MQTT_URL": mqtt_url,
           "SONAE_MQTT_PROTOCOL": mqtt_protocol, "SONAE_MQTT_TOPIC_PREFIX": f"drillnames{port}/v1",
           "SONAE_INGEST_SHARED_GROUP": "", "SONAE_EVAC_NETWORK": "drilltown", "SONAE_STATE_DIR": str(tmp / "state"),
           "SONAE_API_PORT": str(port), "SONAE_LOG_FORMAT": "text", "SONAE_API_RATE_LIMIT_PER_MINUTE": "0"}
    added = subprocess.run([sys.executable, "-m", "app.cli", "users", "add", "drillstaff", "--role", "staff",
                            "--name", "訓練 職員", "--password-from-env"], env={**env, "SONAE_NEW_PASSWORD": PASSWORD},
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stdout + added.stderr
    log = tmp / "sonae.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--simulate"], env=env,
                                stdout=out, stderr=subprocess.STDOUT, text=True)
    server = Sonae(f"http://127.0.0.1:{port}", env["SONAE_DATABASE_URL"])
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
            time.sleep(0.3)  # polling a starting process under a deadline
        server.token = server.api("POST", "/api/v1/auth/token",
                                  {"username": "drillstaff", "password": PASSWORD})["access_token"]
        yield server
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        _database(pg_server_url, name, create=False)


def _source_text(browser: Browser, sonae: Sonae, lang: str) -> str:
    """#level-source of the resident page at HOME in ``lang`` once it shows the drill town's order."""
    ctx = browser.new_context(viewport={"width": 412, "height": 915}, locale="ja-JP", geolocation=HOME,
                              permissions=["geolocation"])
    ctx.set_default_timeout(WAIT_MS)
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{sonae.url}/?lang={lang}")
        page.wait_for_function("() => { const s = window.sonaeResident; return s && s.levelAlert"
                               " && s.levelAlert.condition === 'evacuation_order'"
                               " && document.getElementById('level-source').textContent.trim() }")
        assert not errors, errors
        return page.inner_text("#level-source")
    finally:
        ctx.close()


def test_an_order_of_the_drill_town_names_the_town_in_each_language(browser: Browser, sonae: Sonae) -> None:
    """Also when the town's row has no English name (an operator's row in Japanese only: names an operator gave
    it are kept, evac.store.name_drill_town): English readers get its English name, never the code."""
    sonae.sql("UPDATE municipalities SET name_en = NULL WHERE code = $1", DRILL_TOWN_CODE)
    lat, lon = HOME["latitude"], HOME["longitude"]
    ring = [[lon - 0.004, lat - 0.003], [lon + 0.004, lat - 0.003], [lon + 0.004, lat + 0.003],
            [lon - 0.004, lat + 0.003], [lon - 0.004, lat - 0.003]]
    sonae.api("POST", "/api/v1/orders", {"municipality_code": DRILL_TOWN_CODE, "level": 4, "exercise": True,
                                         "area": {"type": "Polygon", "coordinates": [ring]}})
    sonae.api("POST", "/api/v1/orders", {"municipality_code": DRILL_TOWN_CODE, "level": 3, "exercise": True})
    for lang, town in (("ja", DRILL_TOWN_NAMES["ja-JP"]), ("en", DRILL_TOWN_NAMES["en-US"]),
                       ("ja-easy", DRILL_TOWN_NAMES["ja-JP-x-easy"])):
        text = _source_text(browser, sonae, lang)
        assert DRILL_TOWN_CODE not in text, (lang, text)
        assert town in text, (lang, text)


def test_the_drill_towns_gauges_have_an_english_name_and_a_reading(sonae: Sonae) -> None:
    gauges = [s for s in sonae.api("GET", "/api/v1/stations")["stations"] if s["municipality_code"] == DRILL_TOWN_CODE]
    assert gauges
    for s in gauges:
        assert s["name_en"] and s["name_en"] != s["id"] and s["id"] not in s["name_en"], s
        assert s["name_en"].isascii() and "Kunren River" in s["name_en"], s
        assert s["kana"] and "くんれんがわ" in s["kana"], s
