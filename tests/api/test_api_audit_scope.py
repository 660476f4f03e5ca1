"""``GET /api/v1/audit`` for a municipal admin: the entries about its municipality, whoever acted, and those by
its own accounts; never an entry about another municipality only.

Found: a municipal admin saw only the entries whose actor was one of its accounts, so an evacuation order a
prefecture admin issued (or cancelled) for it, an edit of its gauge, a change of its roster, and the rule
engine's alerts for its gauges (actor ``rules``) were missing from its own audit trail. Each row now records the
municipality it concerns (``audit_log.municipality_code``, ``alerting.audit.record_audit``)."""

from __future__ import annotations

import ast
import inspect
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from alerting import store as alerts
from alerting.audit import record_audit
from alerting.rules import Transition
from api.app import create_app
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.api_support import bearer, signed_in, start_client

KORI, FUKU = "072036", "072010"
PASSWORD = "correct horse battery"
ACCOUNTS = (("kori-admin", "admin", KORI), ("kori-staff", "staff", KORI), ("fuku-admin", "admin", FUKU),
            ("pref-admin", "admin", None))
#: the packages whose code writes audit rows (mypy's list in ./manage lint)
PACKAGES = ("sonae", "ingest", "api", "evac", "simulators", "alerting", "notify", "ngsi", "jma", "app")
ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture
async def world(pool: asyncpg.Pool, unlimited_settings: Settings) -> Any:
    client = await start_client(create_app(pool=pool, settings=unlimited_settings))
    async with pool.acquire() as conn:
        tokens = await signed_in(conn, ACCOUNTS, PASSWORD)
        await upsert_stations(conn, [Station(id="akutsu", name="阿久津", municipality_code=KORI),
                                     Station(id="fuku-gauge", name="Fukushima gauge", municipality_code=FUKU),
                                     Station(id="unplaced", name="unplaced gauge", municipality_code=None)])
    try:
        yield client, {name: bearer(token) for name, token in tokens.items()}, pool
    finally:
        await client.close()


async def _entries(client: Any, headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = await client.get("/api/v1/audit?limit=1000", headers=headers)
    assert resp.status == 200, await resp.text()
    return list((await resp.json())["entries"])


def _actions(entries: list[dict[str, Any]]) -> set[tuple[str, str, str | None]]:
    return {(e["actor"], e["action"], e["municipality_code"]) for e in entries}


async def test_a_prefecture_admins_order_is_in_the_municipalitys_audit_trail(world: Any) -> None:
    client, auth, _ = world
    issued = await client.post("/api/v1/orders", json={"municipality_code": KORI, "level": 4},
                               headers=auth["pref-admin"])
    assert issued.status == 201, await issued.text()
    order_id = (await issued.json())["order_id"]
    cancelled = await client.post(f"/api/v1/orders/{order_id}/cancel", json={}, headers=auth["pref-admin"])
    assert cancelled.status == 200, await cancelled.text()
    # and more a prefecture admin does there: an edit of its gauge, a roster entry of its staff
    edit = await client.patch("/api/v1/stations/akutsu", json={"name": "阿久津橋"}, headers=auth["pref-admin"])
    roster = await client.put("/api/v1/roster/kori-staff", json={"email": "kori@example.jp"},
                              headers=auth["pref-admin"])
    assert (edit.status, roster.status) == (200, 200), await roster.text()

    kori = await _entries(client, auth["kori-admin"])
    assert {("pref-admin", "order.issued", KORI), ("pref-admin", "order.cancelled", KORI),
            ("pref-admin", "station.updated", KORI), ("pref-admin", "roster.updated", KORI)} <= _actions(kori)
    assert [e for e in kori if e["action"] == "order.issued"][0]["object_id"] == str(order_id)
    # another municipality's admin sees none of it
    fuku = await _entries(client, auth["fuku-admin"])
    assert not [e for e in fuku if e["actor"] == "pref-admin" or e["municipality_code"] == KORI], fuku
    # the prefecture admin sees every entry, as before
    assert {("pref-admin", "order.issued", KORI)} <= _actions(await _entries(client, auth["pref-admin"]))


async def test_each_prefecture_action_about_a_municipality_is_in_its_trail(world: Any) -> None:
    """Hazard areas, webhooks, accounts, acknowledgements and a gauge moved into the municipality: every entry a
    prefecture admin's action there writes is the municipality's, and none is another's. (A gauge moved from
    one municipality to another is entered under the one it moved to: here it was in none before.)"""
    client, auth, pool = world
    pref = auth["pref-admin"]
    square = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.39], [140.37, 37.40], [140.36, 37.40],
                                                  [140.36, 37.39]]]}
    hazard = await client.post("/api/v1/hazards", json={"geometry": square, "municipality_code": KORI}, headers=pref)
    hook = await client.post("/api/v1/webhooks", json={"url": "https://partner.example/h", "municipality_code": KORI},
                             headers=pref)
    account = await client.post("/api/v1/accounts", json={"username": "kori-new", "password": PASSWORD,
                                                          "role": "staff", "municipality_code": KORI}, headers=pref)
    moved = await client.patch("/api/v1/stations/unplaced", json={"municipality_code": KORI}, headers=pref)
    assert (hazard.status, hook.status, account.status, moved.status) == (201, 201, 201, 200), await moved.text()
    removed = await client.delete(f"/api/v1/hazards/{(await hazard.json())['id']}", headers=pref)
    unhooked = await client.delete(f"/api/v1/webhooks/{(await hook.json())['id']}", headers=pref)
    async with pool.acquire() as conn, conn.transaction():
        change = await alerts.apply_transition(conn, station_id="akutsu", municipality_code=KORI, exercise=False,
                                               t=Transition("river_level", None, 2, datetime.now(UTC).timestamp(),
                                                            5.6, 5.5, "threshold"))
    assert change is not None
    ack = await client.post(f"/api/v1/alerts/{change.alert_id}/acknowledge", json={}, headers=pref)
    assert (removed.status, unhooked.status, ack.status) == (204, 204, 200)

    by_pref = {a for who, a, muni in _actions(await _entries(client, auth["kori-admin"])) if who == "pref-admin"}
    assert by_pref == {"hazard_area.added", "hazard_area.removed", "webhook.created", "webhook.deleted",
                       "account.created", "station.updated", "alert.acknowledged"}
    assert not [e for e in await _entries(client, auth["fuku-admin"]) if e["actor"] != "fuku-admin"]


async def test_the_rule_engines_alert_for_a_gauge_is_in_its_municipalitys_trail(world: Any) -> None:
    client, auth, pool = world
    now = datetime.now(UTC).timestamp()
    async with pool.acquire() as conn, conn.transaction():
        raised = await alerts.apply_transition(conn, station_id="akutsu", municipality_code=KORI, exercise=False,
                                               t=Transition("river_level", None, 2, now, 5.6, 5.5, "threshold"))
        other = await alerts.apply_transition(conn, station_id="fuku-gauge", municipality_code=FUKU, exercise=False,
                                              t=Transition("river_level", None, 2, now, 3.1, 3.0, "threshold"))
    assert raised is not None and other is not None
    kori = await _entries(client, auth["kori-admin"])
    assert [(e["actor"], e["action"], e["object_id"]) for e in kori] == [("rules", "alert.raised", str(raised.alert_id))]
    fuku = await _entries(client, auth["fuku-admin"])
    assert [(e["actor"], e["object_id"]) for e in fuku] == [("rules", str(other.alert_id))]
    # the alert goes on for staff only when the river falls below the public levels: two rows, both Koriyama's
    async with pool.acquire() as conn, conn.transaction():
        assert await alerts.apply_transition(conn, station_id="akutsu", municipality_code=KORI, exercise=False,
                                             t=Transition("river_level", 2, 1, now + 600, 4.9, 4.5, "threshold"))
    kori = await _entries(client, auth["kori-admin"])
    assert {("rules", "alert.cleared", KORI), ("rules", "alert.raised", KORI)} <= _actions(kori)
    assert not [e for e in await _entries(client, auth["fuku-admin"]) if e["municipality_code"] == KORI]


async def test_a_municipal_admin_still_sees_what_its_accounts_did(world: Any) -> None:
    client, auth, _ = world
    hazard = await client.post("/api/v1/hazards", json={"geometry": {"type": "Polygon", "coordinates": [[
        [140.36, 37.39], [140.37, 37.39], [140.37, 37.40], [140.36, 37.40], [140.36, 37.39]]]}},
        headers=auth["kori-admin"])
    assert hazard.status == 201, await hazard.text()
    kori = await _entries(client, auth["kori-admin"])
    assert ("kori-admin", "hazard_area.added", KORI) in _actions(kori)
    # a row with no municipality (a prefecture-wide account's own) is the prefecture's only
    async with world[2].acquire() as conn:
        await record_audit(conn, "pref-admin", "account.password_changed", "account", "pref-admin", {},
                           municipality_code=None)
        await record_audit(conn, "kori-admin", "account.login", "account", "kori-admin", {}, municipality_code=KORI)
    kori = await _entries(client, auth["kori-admin"])
    assert ("kori-admin", "account.login", KORI) in _actions(kori)
    assert not [e for e in kori if e["actor"] == "pref-admin"]
    assert ("pref-admin", "account.password_changed", None) in _actions(await _entries(client, auth["pref-admin"]))


# -- every call says which municipality ----------------------------------------------------------------------------
def test_record_audit_takes_the_municipality_by_keyword_with_no_default() -> None:
    """Leaving it out is a TypeError (and a mypy error), never a row silently of no municipality."""
    param = inspect.signature(record_audit).parameters["municipality_code"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is inspect.Parameter.empty


def _audit_calls(tree: ast.AST) -> list[ast.Call]:
    """The calls of ``alerting.audit.record_audit`` in one module, under any name it is imported as."""
    names = {"record_audit"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "alerting.audit":
            names |= {a.asname or a.name for a in node.names if a.name == "record_audit"}
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id in names) or (isinstance(f, ast.Attribute) and f.attr == "record_audit"):
                calls.append(node)
    return calls


def test_every_call_of_record_audit_names_the_municipality() -> None:
    """Each call site passes ``municipality_code=`` itself (not through ``**kwargs``, which could leave it out)."""
    found: dict[str, int] = {}
    missing = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            where = str(path.relative_to(ROOT))
            for call in _audit_calls(ast.parse(path.read_text(encoding="utf-8"), filename=where)):
                found[where] = found.get(where, 0) + 1
                if "municipality_code" not in {k.arg for k in call.keywords}:
                    missing.append(f"{where}:{call.lineno}")
    assert not missing, f"record_audit called without municipality_code= at {missing}"
    # the walk sees the writers it should (a rename of the import would otherwise pass vacuously)
    assert {"alerting/store.py", "api/staff.py", "api/accounts.py", "api/notifications.py", "api/simulations.py",
            "app/cli.py"} <= set(found), found
    assert sum(found.values()) >= 25, found


@pytest.mark.parametrize("name", ["rules", "Rules", "RULES"])
async def test_no_account_takes_the_rule_engines_name_and_its_rows_stay_with_their_municipality(
        world: Any, name: str) -> None:
    """Found: a municipal admin created an account named ``rules`` (201) and then saw the rule engine's rows about
    every other municipality, filed under "by its own accounts"."""
    client, auth, pool = world
    resp = await client.post("/api/v1/accounts", headers=auth["kori-admin"], json={
        "username": name, "password": PASSWORD, "role": "staff", "municipality_code": KORI})
    assert resp.status == 400, await resp.text()
    assert "rule engine" in (await resp.json())["detail"]
    # an account of that name made before the rule (written straight into the table): still no other rows
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO accounts (username, password_hash, role, municipality_code) "
                           "VALUES ('rules', 'x', 'staff', $1)", KORI)
        now = datetime.now(UTC).timestamp()
        async with conn.transaction():
            other = await alerts.apply_transition(conn, station_id="fuku-gauge", municipality_code=FUKU,
                                                  exercise=False,
                                                  t=Transition("river_level", None, 2, now, 3.1, 3.0, "threshold"))
    assert other is not None
    assert not [e for e in await _entries(client, auth["kori-admin"]) if e["municipality_code"] == FUKU]
    assert [e["object_id"] for e in await _entries(client, auth["fuku-admin"])] == [str(other.alert_id)]
