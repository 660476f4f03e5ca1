"""Staff and operator actions: authentication, roles, municipality scope, audit."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from alerting.store import issue_order
from api.app import create_app
from api.auth import login
from evac.shelters import Shelter
from evac.store import import_shelters
from sonae.config import Settings
from tests.api_support import signed_in, start_client

KORIYAMA, FUKUSHIMA = "072036", "072010"
PASSWORD = "correct horse battery"
SQUARE = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.39], [140.37, 37.40],
                                               [140.36, 37.40], [140.36, 37.39]]]}


async def make_client(pool: asyncpg.Pool, settings: Settings) -> TestClient:
    return await start_client(create_app(pool=pool, settings=settings))


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings):  # type: ignore[no-untyped-def]
    c = await make_client(pool, settings)
    yield c
    await c.close()


@pytest.fixture
async def tokens(pool: asyncpg.Pool) -> dict[str, str]:
    """Bearer tokens: Koriyama staff, Fukushima staff, prefecture staff, an operator, an admin, an expired one."""
    out = {}
    async with pool.acquire() as conn:
        out.update(await signed_in(conn, (("kori-staff", "staff", KORIYAMA), ("fuku-staff", "staff", FUKUSHIMA),
                                          ("pref-staff", "staff", None), ("operator1", "operator", KORIYAMA),
                                          ("admin1", "admin", None)), PASSWORD))
        expired = await login(conn, "kori-staff", PASSWORD, ttl=timedelta(seconds=-1))
        assert expired is not None
        out["expired"] = expired[0]
        await import_shelters(conn, [Shelter(id="s-kori", name="Kori School", lat=37.395, lon=140.365,
                                             hazards=frozenset({"flood"}), municipality_code=KORIYAMA),
                                     Shelter(id="s-fuku", name="Fuku Hall", lat=37.75, lon=140.47,
                                             hazards=frozenset({"flood"}), municipality_code=FUKUSHIMA)],
                              actor="test")
    return out


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _alert_in(pool: asyncpg.Pool, municipality: str) -> int:
    async with pool.acquire() as conn:
        _, change = await issue_order(conn, municipality_code=municipality, level=3, issued_by="setup")
    return change.alert_id


STAFF_ACTIONS: list[tuple[str, str, Any]] = [
    ("POST", "/api/v1/orders", {"municipality_code": KORIYAMA, "level": 4}),
    ("PATCH", "/api/v1/shelters/s-kori", {"occupancy": 10}),
    ("POST", "/api/v1/hazards", {"geometry": SQUARE, "hazard": "flood", "municipality_code": KORIYAMA}),
    ("GET", "/api/v1/sensors/health", None),
    ("POST", "/api/v1/alerts/{alert}/acknowledge", {"note": "seen"}),
]


@pytest.mark.parametrize(("method", "path", "body"), STAFF_ACTIONS)
async def test_staff_endpoints_refuse_missing_expired_and_wrong_role(
        client: TestClient, pool: asyncpg.Pool, tokens: dict[str, str], method: str, path: str, body: Any) -> None:
    path = path.replace("{alert}", str(await _alert_in(pool, KORIYAMA)))
    for headers, status in (({}, 401), (auth("not-a-token"), 401), (auth(tokens["expired"]), 401)):
        resp = await client.request(method, path, json=body, headers=headers)
        assert resp.status == status, (headers, await resp.text())
        assert resp.content_type == "application/problem+json"
        assert "Bearer" in resp.headers.get("WWW-Authenticate", "")
    if path != "/api/v1/sensors/health":  # operators may read sensor health, nothing else here
        resp = await client.request(method, path, json=body, headers=auth(tokens["operator1"]))
        assert resp.status == 403
    resp = await client.request(method, path, json=body, headers=auth(tokens["kori-staff"]))
    assert resp.status in (200, 201), await resp.text()


async def test_staff_cannot_act_in_another_municipality(client: TestClient, pool: asyncpg.Pool,
                                                        tokens: dict[str, str]) -> None:
    fuku_alert = await _alert_in(pool, FUKUSHIMA)
    kori = auth(tokens["kori-staff"])
    checks = [
        await client.post(f"/api/v1/alerts/{fuku_alert}/acknowledge", json={}, headers=kori),
        await client.post("/api/v1/orders", json={"municipality_code": FUKUSHIMA, "level": 4}, headers=kori),
        await client.patch("/api/v1/shelters/s-fuku", json={"occupancy": 5}, headers=kori),
        await client.post("/api/v1/hazards", json={"geometry": SQUARE, "municipality_code": FUKUSHIMA}, headers=kori),
    ]
    # objects of another municipality are answered like missing ones (404); a named municipality is 403
    assert [r.status for r in checks] == [404, 403, 404, 403]
    async with pool.acquire() as conn:
        order_id = await conn.fetchval("SELECT order_id FROM alerts WHERE id = $1", fuku_alert)
        area = await conn.fetchval("SELECT count(*) FROM hazard_areas")
        occupancy = await conn.fetchval("SELECT occupancy FROM shelters WHERE id = 's-fuku'")
    assert (area, occupancy) == (0, 0)
    assert (await client.post(f"/api/v1/orders/{order_id}/cancel", json={}, headers=kori)).status == 404
    # the prefecture's staff act everywhere
    pref = auth(tokens["pref-staff"])
    assert (await client.post(f"/api/v1/alerts/{fuku_alert}/acknowledge", json={}, headers=pref)).status == 200
    assert (await client.post(f"/api/v1/orders/{order_id}/cancel", json={}, headers=pref)).status == 200


async def test_actions_take_effect_and_are_audited(client: TestClient, pool: asyncpg.Pool,
                                                   tokens: dict[str, str]) -> None:
    kori = auth(tokens["kori-staff"])
    resp = await client.post("/api/v1/orders", json={"level": 4, "area": SQUARE, "note": "river rising"}, headers=kori)
    assert resp.status == 201
    order = await resp.json()
    active = await (await client.get("/api/v1/alerts")).json()
    assert any(a["id"] == order["alert_id"] for a in active["alerts"])
    assert (await client.post(f"/api/v1/alerts/{order['alert_id']}/acknowledge", json={"note": "on it"},
                              headers=kori)).status == 200
    assert (await client.patch("/api/v1/shelters/s-kori", json={"occupancy": 120, "is_open": True},
                               headers=kori)).status == 200
    hazard = await (await client.post("/api/v1/hazards", json={"geometry": SQUARE, "label": "冠水"}, headers=kori)).json()
    assert (await client.delete(f"/api/v1/hazards/{hazard['id']}", headers=kori)).status == 204
    assert (await client.post(f"/api/v1/orders/{order['order_id']}/cancel", json={}, headers=kori)).status == 200
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT occupancy FROM shelters WHERE id = 's-kori'") == 120
        actions = [r["action"] for r in await conn.fetch(
            "SELECT action FROM audit_log WHERE actor = 'kori-staff' ORDER BY id")]
    assert actions == ["account.login", "order.issued", "alert.acknowledged", "shelter.updated",
                       "hazard_area.added", "hazard_area.removed", "order.cancelled"] or set(actions) >= {
        "order.issued", "alert.acknowledged", "shelter.updated", "hazard_area.added", "hazard_area.removed",
        "order.cancelled"}
    log = await client.get("/api/v1/audit", headers=auth(tokens["admin1"]))
    assert log.status == 200 and len((await log.json())["entries"]) >= 6
    assert (await client.get("/api/v1/audit", headers=kori)).status == 403


async def test_login_logout_and_bad_bodies(client: TestClient, pool: asyncpg.Pool, tokens: dict[str, str]) -> None:
    bad = await client.post("/api/v1/auth/token", json={"username": "kori-staff", "password": "wrong password"})
    assert bad.status == 401
    assert (await client.post("/api/v1/auth/token", data=b"{not json", headers={"Content-Type": "application/json"})).status == 400
    assert (await client.post("/api/v1/auth/token", json=["a"])).status == 400
    good = await client.post("/api/v1/auth/token", json={"username": "kori-staff", "password": PASSWORD})
    assert good.status == 201
    token = (await good.json())["access_token"]
    me = await client.get("/api/v1/auth/me", headers=auth(token))
    assert (await me.json())["municipality_code"] == KORIYAMA
    assert (await client.delete("/api/v1/auth/token", headers=auth(token))).status == 204
    assert (await client.get("/api/v1/auth/me", headers=auth(token))).status == 401
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT password_hash FROM accounts WHERE username = 'kori-staff'")
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    resp = await client.post("/api/v1/orders", json={"level": "four"}, headers=auth(tokens["kori-staff"]))
    assert resp.status == 400 and (await resp.json())["field"] == "level"


async def test_public_endpoints_are_rate_limited(pool: asyncpg.Pool, settings: Settings) -> None:
    client = await make_client(pool, settings.replace(api__rate_limit_per_minute=60))
    try:
        statuses = [(await client.get("/api/v1/stations")).status for _ in range(15)]
        assert statuses[:10] == [200] * 10 and statuses[-1] == 429
        limited = await client.get("/api/v1/stations")
        assert int(limited.headers["Retry-After"]) >= 1
        assert (await client.get("/healthz")).status == 200  # operations are never limited
    finally:
        await client.close()


def test_users_command_creates_an_account_that_can_log_in(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SONAE_DATABASE_URL": database_url,
           "SONAE_STATE_DIR": str(tmp_path), "SONAE_NEW_PASSWORD": PASSWORD}
    add = subprocess.run([sys.executable, "-m", "app.cli", "users", "add", "hana", "--role", "staff",
                          "--municipality", KORIYAMA, "--password-from-env"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert add.returncode == 0, add.stderr
    listed = subprocess.run([sys.executable, "-m", "app.cli", "users", "list"], env=env, capture_output=True,
                            text=True, timeout=120)
    assert "hana" in listed.stdout and KORIYAMA in listed.stdout
    again = subprocess.run([sys.executable, "-m", "app.cli", "users", "add", "hana", "--role", "staff",
                            "--password-from-env"], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists already" in again.stderr


async def test_operators_start_and_stop_a_drill(client: TestClient, pool: asyncpg.Pool,
                                                tokens: dict[str, str]) -> None:
    op, staff = auth(tokens["operator1"]), auth(tokens["kori-staff"])
    listing = await client.get("/api/v1/simulations", headers=op)
    assert listing.status == 200 and "abukuma-flood" in (await listing.json())["scenarios"]
    assert (await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood"}, headers=staff)).status == 403
    assert (await client.post("/api/v1/simulations", json={"scenario": "nope"}, headers=op)).status == 400
    started = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood", "duration_s": 3600},
                                headers=op)
    assert started.status == 201, await started.text()
    status = await started.json()
    assert status["state"] == "running" and status["run"]
    busy = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood"}, headers=op)
    assert busy.status == 409
    stopped = await client.delete("/api/v1/simulations/current", headers=op)
    assert stopped.status == 200 and (await stopped.json())["state"] != "running"
    async with pool.acquire() as conn:
        actions = {r["action"] for r in await conn.fetch("SELECT action FROM audit_log WHERE actor = 'operator1'")}
        exercise = await conn.fetchval("SELECT bool_and(exercise) FROM stations WHERE source IS DISTINCT FROM 'test'")
    assert {"simulation.started", "simulation.stopped"} <= actions
    assert exercise is not False  # every station the drill registered is an exercise station
