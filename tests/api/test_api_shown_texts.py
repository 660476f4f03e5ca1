"""Texts staff write for the public or other staff to read hold no bidirectional, zero-width, other format or
control characters (sonae.nametext.refused_text; line feeds kept where a text is multi-line by design), and
passwords no control characters: through the real app, as the tester sent them.

Found: ``POST /api/v1/orders {"level":4,"exercise":true,"area_desc":"abc\\u202edef\\n"}`` → 201, and the CAP
``<headline>`` and ``<areaDesc>`` read "abc‮def" (a right-to-left override: another place); display names
"Bob\\u202e" and "Bob\\n", a hazard label "x\\u202ey" were accepted; a password "123456789\\n" made an account
that logged in only with the newline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from alerting.store import issue_order
from tests.api_support import signed_in

KORIYAMA = "072036"
PASSWORD = "correct horse battery"
SQUARE = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.39], [140.37, 37.40],
                                               [140.36, 37.40], [140.36, 37.39]]]}
#: bidi controls, zero-width and other format characters, controls (a line feed only where it is no line)
HIDDEN = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200e", "\u200f", "\u061c", "\u200b", "\u2060", "\ufeff",
          "\u00ad", "\t", "\r", "\x1b", "\x85", "\u2028"]


@pytest.fixture
async def tokens(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        return await signed_in(conn, (("kori-staff", "staff", KORIYAMA), ("admin1", "admin", None)), PASSWORD)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _refused(response: object, field: str, ch: str) -> None:
    from aiohttp import ClientResponse

    assert isinstance(response, ClientResponse)
    assert response.status == 400, await response.text()
    problem = await response.json()
    assert problem["detail"].startswith(field) and f"U+{ord(ch):04X}" in problem["detail"], problem


async def test_an_order_with_a_right_to_left_override_is_refused_naming_it(client: TestClient,
                                                                           tokens: dict[str, str]) -> None:
    r = await client.post("/api/v1/orders", headers=auth(tokens["kori-staff"]),
                          json={"level": 4, "exercise": True, "area_desc": "abc\u202edef\n"})
    await _refused(r, "area_desc", "\u202e")
    for ch in HIDDEN:
        r = await client.post("/api/v1/orders", headers=auth(tokens["kori-staff"]),
                              json={"level": 4, "exercise": True, "area_desc": f"中町{ch}一丁目"})
        await _refused(r, "area_desc", ch)
        r = await client.post("/api/v1/orders", headers=auth(tokens["kori-staff"]),
                              json={"level": 4, "exercise": True, "area_desc": "中町", "note": f"a{ch}b"})
        await _refused(r, "note", ch)


async def test_an_area_description_keeps_its_line_breaks(client: TestClient, tokens: dict[str, str]) -> None:
    r = await client.post("/api/v1/orders", headers=auth(tokens["kori-staff"]),
                          json={"level": 4, "exercise": True, "area_desc": "中町一丁目\n中町二丁目\n",
                                "note": "確認済み\n班長"})
    assert r.status == 201, await r.text()
    alert_id = (await r.json())["alert_id"]
    cap = await (await client.get(f"/api/v1/alerts/{alert_id}.cap", headers=auth(tokens["kori-staff"]))).text()
    assert "中町一丁目" in cap and "中町二丁目" in cap
    # the cancel and acknowledge notes: the same rule
    ack = await client.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=auth(tokens["kori-staff"]),
                            json={"note": "ok\u202e"})
    await _refused(ack, "note", "\u202e")
    order_id = (await r.json())["order_id"]
    cancel = await client.post(f"/api/v1/orders/{order_id}/cancel", headers=auth(tokens["kori-staff"]),
                               json={"note": "done\u200b"})
    await _refused(cancel, "note", "\u200b")


async def test_an_area_description_stored_before_the_rule_reaches_no_cap_with_the_override(
        client: TestClient, pool: asyncpg.Pool, tokens: dict[str, str]) -> None:
    async with pool.acquire() as conn:
        _, change = await issue_order(conn, municipality_code=KORIYAMA, level=4, issued_by="kori-staff",
                                      area_desc="abc\u202edef\u200b\n二丁目", exercise=True)
    cap = await (await client.get(f"/api/v1/alerts/{change.alert_id}.cap", headers=auth(tokens["kori-staff"]))).text()
    assert "\u202e" not in cap and "\u200b" not in cap
    assert "abcdef" in cap and "二丁目" in cap


@pytest.mark.parametrize("name", ["Bob\u202e", "Bob\n", "Bob\u200d", "\u2067Bob"])
async def test_a_display_name_with_a_hidden_character_is_refused(client: TestClient, tokens: dict[str, str],
                                                                  name: str) -> None:
    r = await client.post("/api/v1/accounts", headers=auth(tokens["admin1"]), json={
        "username": "bob", "password": "long enough password", "role": "staff", "municipality_code": KORIYAMA,
        "display_name": name})
    hidden = next(ch for ch in name if not ch.isalpha())
    await _refused(r, "display_name", hidden)
    ok = await client.post("/api/v1/accounts", headers=auth(tokens["admin1"]), json={
        "username": "bob", "password": "long enough password", "role": "staff", "municipality_code": KORIYAMA,
        "display_name": "郡山 ボブ"})
    assert ok.status == 201, await ok.text()


async def test_a_hazard_label_and_a_webhook_description_with_an_override_are_refused(
        client: TestClient, tokens: dict[str, str]) -> None:
    r = await client.post("/api/v1/hazards", headers=auth(tokens["kori-staff"]),
                          json={"geometry": SQUARE, "label": "x\u202ey", "exercise": True})
    await _refused(r, "label", "\u202e")
    r = await client.post("/api/v1/webhooks", headers=auth(tokens["admin1"]),
                          json={"url": "https://partner.example.jp/hook", "description": "防災\u202eシステム"})
    await _refused(r, "description", "\u202e")


@pytest.mark.parametrize("password", ["123456789\n", "12345678\r\n", "1234567890\t", "abc\x1bdefghijk",
                                      "abcdefghij\u2028"])
async def test_a_password_with_a_control_character_is_refused(client: TestClient, tokens: dict[str, str],
                                                              password: str) -> None:
    r = await client.post("/api/v1/accounts", headers=auth(tokens["admin1"]), json={
        "username": "pw9n", "password": password, "role": "staff", "municipality_code": KORIYAMA})
    assert r.status == 400, await r.text()
    detail = (await r.json())["detail"]
    assert "password" in detail and "U+" in detail, detail


def _cli(tmp_path: Path, *args: str, password: str = "long enough password") -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "SONAE_STATE_DIR": str(tmp_path / "s"),
           "SONAE_NEW_PASSWORD": password}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_command_refuses_a_password_ending_in_a_newline_before_the_database(tmp_path: Path) -> None:
    done = _cli(tmp_path, "users", "add", "pw9n", "--role", "staff", "--municipality", KORIYAMA,
                "--password-from-env", password="123456789\n")
    assert done.returncode == 2, done.stderr
    assert "U+000A" in done.stderr and "no final line break" in done.stderr, done.stderr


@pytest.mark.parametrize("name", ["Bob\u202e", "Bob\n"])
def test_the_command_refuses_a_display_name_with_a_hidden_character(tmp_path: Path, name: str) -> None:
    done = _cli(tmp_path, "users", "add", "bob", "--role", "staff", "--name", name, "--password-from-env")
    assert done.returncode == 2, done.stderr
    assert "--name" in done.stderr and f"U+{ord(name[-1]):04X}" in done.stderr, done.stderr


def test_the_command_refuses_a_webhook_description_with_an_override(tmp_path: Path) -> None:
    done = _cli(tmp_path, "webhooks", "add", "https://partner.example.jp/hook", "--description", "a\u202eb")
    assert done.returncode == 2 and "U+202E" in done.stderr, done.stderr


@pytest.mark.parametrize("title", ["x川\u202e洪水", "x川洪水\n", "x\x07"])
def test_the_command_refuses_a_hazard_map_title_with_a_hidden_character(tmp_path: Path, title: str) -> None:
    """Found: ``sonae hazards import FILE --title $'x\\u202e'`` reached the map's title, shown with its areas."""
    done = _cli(tmp_path, "hazards", "import", str(tmp_path / "map.geojson"), "--title", title)
    assert done.returncode == 2, done.stderr
    assert "--title" in done.stderr and "U+" in done.stderr and "remove it" in done.stderr, done.stderr
