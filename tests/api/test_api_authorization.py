"""The authorisation model as a table over every operation of the OpenAPI document.

For each operation and each principal (anonymous, a garbage token, staff/operators/admins of Koriyama,
staff and an admin of another municipality, prefecture-wide staff and admin), the request targets
Koriyama's objects. The expectation comes from the table below, written from the issue's rules
(independently of ``api/authorization.py``): no principal outside it may get a 2xx, objects of another
municipality are answered 404 (never 403, which would reveal that they exist), lists are filtered, and
nothing answers 5xx.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import asyncpg
import pytest

from alerting.store import issue_order
from api.app import create_app
from api.auth import create_account, login
from api.authorization import POLICY
from api.openapi import OPERATIONS
from evac.shelters import Shelter
from evac.store import import_shelters
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.api_support import bearer, signed_in, start_client

KORI, FUKU = "072036", "072010"
PASSWORD = "correct horse battery"
SQUARE = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.39], [140.37, 37.40],
                                               [140.36, 37.40], [140.36, 37.39]]]}
ACCOUNTS = {"kori-staff": ("staff", KORI), "fuku-staff": ("staff", FUKU), "pref-staff": ("staff", None),
            "kori-op": ("operator", KORI), "kori-admin": ("admin", KORI), "fuku-admin": ("admin", FUKU),
            "pref-admin": ("admin", None)}
PRINCIPALS = ["anonymous", "garbage", *ACCOUNTS]
LOGGED_IN = set(ACCOUNTS)
EVERYONE = {"anonymous", "garbage", *ACCOUNTS}
STAFF_OF_KORI = {"kori-staff", "pref-staff", "kori-admin", "pref-admin"}
ADMINS_OF_KORI = {"kori-admin", "pref-admin"}

#: who may act on Koriyama's object (or list) of each operation — the issue's rules, written out
MAY: dict[tuple[str, str], set[str]] = {
    ("delete", "/api/v1/auth/token"): LOGGED_IN, ("get", "/api/v1/auth/me"): LOGGED_IN,
    ("post", "/api/v1/alerts/{alert_id}/acknowledge"): STAFF_OF_KORI,
    ("post", "/api/v1/orders"): STAFF_OF_KORI,
    ("post", "/api/v1/orders/{order_id}/cancel"): STAFF_OF_KORI,
    ("patch", "/api/v1/shelters/{shelter_id}"): STAFF_OF_KORI,
    ("patch", "/api/v1/stations/{station_id}"): STAFF_OF_KORI,
    ("post", "/api/v1/hazards"): STAFF_OF_KORI,
    ("delete", "/api/v1/hazards/{area_id}"): STAFF_OF_KORI,
    # hazard maps: none exists in this world, so the link operations can only show who is refused
    ("get", "/api/v1/hazard-maps"): STAFF_OF_KORI | {"fuku-staff", "fuku-admin"},
    ("put", "/api/v1/hazard-maps/{map_id}/link"): STAFF_OF_KORI | {"fuku-staff", "fuku-admin"},
    ("delete", "/api/v1/hazard-maps/{map_id}/link"): STAFF_OF_KORI | {"fuku-staff", "fuku-admin"},
    ("get", "/api/v1/sensors/health"): LOGGED_IN,  # staff, operators, admins; a list filtered to the scope
    ("get", "/api/v1/webhooks"): LOGGED_IN - {"kori-op"},
    ("get", "/api/v1/webhooks/{webhook_id}/deliveries"): STAFF_OF_KORI,
    ("get", "/api/v1/roster"): LOGGED_IN - {"kori-op"},
    ("put", "/api/v1/roster/{username}"): {"kori-staff", "kori-admin", "pref-admin"},  # self, or an admin
    ("get", "/api/v1/simulations"): {"kori-op", "kori-admin", "fuku-admin", "pref-admin"},
    ("post", "/api/v1/simulations"): {"kori-op", "kori-admin", "pref-admin"},
    ("delete", "/api/v1/simulations/current"): {"kori-op", "kori-admin", "pref-admin"},
    ("get", "/api/v1/accounts"): {"kori-admin", "fuku-admin", "pref-admin"},
    ("post", "/api/v1/accounts"): ADMINS_OF_KORI,
    ("put", "/api/v1/accounts/{username}/real-injection"): ADMINS_OF_KORI,  # of Koriyama's operator
    ("get", "/api/v1/audit"): {"kori-admin", "fuku-admin", "pref-admin"},
    ("post", "/api/v1/webhooks"): ADMINS_OF_KORI,
    ("delete", "/api/v1/webhooks/{webhook_id}"): ADMINS_OF_KORI,
    ("delete", "/api/v1/roster/{username}"): ADMINS_OF_KORI,
}
#: lists whose answer to a Fukushima principal must not contain anything of Koriyama
SCOPED_LISTS = {("get", "/api/v1/sensors/health"), ("get", "/api/v1/webhooks"), ("get", "/api/v1/roster"),
                ("get", "/api/v1/accounts"), ("get", "/api/v1/audit")}
#: operations whose object may be gone (or busy) by the time a later allowed principal tries
CONSUMING = {("post", "/api/v1/orders/{order_id}/cancel"), ("delete", "/api/v1/hazards/{area_id}"),
             ("delete", "/api/v1/webhooks/{webhook_id}"), ("delete", "/api/v1/roster/{username}"),
             ("post", "/api/v1/alerts/{alert_id}/acknowledge"), ("post", "/api/v1/simulations"),
             ("delete", "/api/v1/simulations/current"), ("post", "/api/v1/accounts")}
SCENARIO = {"scenario": {"name": "authz", "municipality": KORI, "duration": "1h", "accel": 1},
            "rivers": [{"id": "r", "name": "r", "reaches": [{"station": "authz-kori-1", "area_km2": 10}]}]}


def test_every_operation_has_exactly_one_rule() -> None:
    assert set(POLICY) == set(OPERATIONS)
    protected = {op for op, op_doc in OPERATIONS.items() if op_doc.get("security")}
    assert {op for op, rule in POLICY.items() if not rule.public} == protected
    assert set(MAY) == protected



@pytest.fixture
async def world(pool: asyncpg.Pool, unlimited_settings: Settings) -> Any:
    client = await start_client(create_app(pool=pool, settings=unlimited_settings))
    async with pool.acquire() as conn:
        tokens = await signed_in(conn, ((name, role, muni) for name, (role, muni) in ACCOUNTS.items()), PASSWORD)
        await import_shelters(conn, [Shelter(id="s-kori", name="Kori School", lat=37.395, lon=140.365,
                                             hazards=frozenset({"flood"}), municipality_code=KORI)], actor="test")
        order_id, change = await issue_order(conn, municipality_code=KORI, level=3, issued_by="setup")
        await upsert_stations(conn, [Station(id="st-kori", name="Kori gauge", municipality_code=KORI)])
    admin = bearer(tokens["pref-admin"])
    hazard = await client.post("/api/v1/hazards", json={"geometry": SQUARE, "municipality_code": KORI}, headers=admin)
    hook = await client.post("/api/v1/webhooks", json={"url": "https://partner.example/hook", "municipality_code": KORI,
                                                       "include_staff": True}, headers=admin)
    roster = await client.put("/api/v1/roster/kori-staff", json={"email": "kori@example.jp", "municipality_code": KORI},
                              headers=admin)
    assert (hazard.status, hook.status, roster.status) == (201, 201, 200), await hook.text()
    ids = {"alert_id": change.alert_id, "order_id": order_id, "shelter_id": "s-kori",
           "area_id": (await hazard.json())["id"], "webhook_id": (await hook.json())["id"], "username": "kori-staff",
           "station_id": "st-kori", "subscription_id": "1", "map_id": "no-such-map"}
    try:
        yield client, tokens, ids
    finally:
        await client.close()


def _request(method: str, path: str, ids: dict[str, Any], n: int) -> tuple[str, dict[str, Any] | None]:
    if path == "/api/v1/accounts/{username}/real-injection":  # the grant is for operators: Koriyama's
        return "/api/v1/accounts/kori-op/real-injection", {"allowed": False}
    for name, value in ids.items():
        path = path.replace("{" + name + "}", str(value))
    body: dict[str, Any] | None = {
        ("post", "/api/v1/orders"): {"municipality_code": KORI, "level": 3, "exercise": True},
        ("patch", "/api/v1/shelters/s-kori"): {"occupancy": 3},
        ("patch", "/api/v1/stations/st-kori"): {"name": "Kori gauge"},
        ("post", "/api/v1/hazards"): {"geometry": SQUARE, "municipality_code": KORI, "exercise": True},
        ("put", "/api/v1/roster/kori-staff"): {"email": "kori@example.jp", "municipality_code": KORI},
        ("post", "/api/v1/simulations"): {**{"scenario": SCENARIO}, "duration_s": 60},
        ("post", "/api/v1/accounts"): {"username": f"new-kori-{n}", "password": PASSWORD, "role": "staff",
                                       "municipality_code": KORI},
        ("post", "/api/v1/webhooks"): {"url": "https://p.example/h", "municipality_code": KORI},
        ("post", "/api/v1/auth/token"): {"username": "kori-staff", "password": PASSWORD},
        ("post", "/api/v1/push/subscriptions"): {"subscription": {"endpoint": "x"}, "areas": []},
        ("post", "/api/v1/alerts/" + str(ids["alert_id"]) + "/acknowledge"): {"note": "seen"},
    }.get((method, path))
    return path, body


async def test_the_authorisation_table_over_every_operation(world: Any) -> None:
    client, tokens, ids = world
    failures: list[str] = []
    n = 0
    # operations that use their object up run last, so that every other one finds it
    for (method, template), _ in sorted(OPERATIONS.items(), key=lambda kv: (kv[0] in CONSUMING, kv[0][1], kv[0][0])):
        if template in ("/api/v1/events",):
            continue  # a stream: its scope is checked in test_event_stream_is_scoped below
        allowed = MAY.get((method, template), EVERYONE)
        # refused principals first: a consuming operation must not have used the object up yet
        order = sorted(PRINCIPALS, key=lambda p: p in allowed)
        first_allowed = True
        for who in order:
            n += 1
            path, body = _request(method, template, ids, n)
            headers = {} if who == "anonymous" else bearer("garbage-token" if who == "garbage" else tokens[who])
            if (method, template) == ("delete", "/api/v1/auth/token") and who in tokens:
                async with client.server.app[__import__("api.context", fromlist=["POOL"]).POOL].acquire() as conn:
                    fresh = await login(conn, who, PASSWORD)
                assert fresh is not None
                headers = bearer(fresh[0])
            resp = await client.request(method.upper(), path, json=body, headers=headers)
            text = await resp.text()
            where = f"{method.upper()} {path} as {who}: {resp.status} {text[:200]}"
            vary = {v.strip().lower() for line in resp.headers.getall("Vary", []) for v in line.split(",")}
            if not POLICY[(method, template)].public and "authorization" not in vary:
                # the account chooses the answer (401, 403, 200, a scoped list): caches must keep them apart
                failures.append("no Vary: Authorization: " + where)
            if resp.status >= 500 and not (resp.status == 503 and "routing is not configured" in text):
                failures.append("5xx: " + where)
            elif who not in allowed:
                if resp.status < 400:
                    failures.append("cross-scope or wrong-role 2xx: " + where)
                elif resp.status not in (401, 403, 404):
                    failures.append("refused with an unexpected status: " + where)
                elif who in ("anonymous", "garbage") and resp.status != 401:
                    failures.append("no token but not 401: " + where)
            else:
                if resp.status in (401, 403):
                    failures.append("allowed but refused: " + where)
                elif first_allowed and (method, template) not in CONSUMING and resp.status >= 400 \
                        and not template.startswith(("/ngsi-ld/", "/api/v1/hazard-maps/")) \
                        and template not in ("/api/v1/stations/{station_id}", "/api/v1/stations/{station_id}/readings",
                                             "/api/v1/push/subscriptions", "/api/v1/push/subscriptions/{subscription_id}",
                                             "/api/v1/route", "/api/v1/shelters/nearest", "/api/v1/level",
                                             "/api/v1/network.geojson", "/api/v1/simulations/current",
                                             "/api/v1/hazards"):
                    failures.append("allowed but failed: " + where)
                first_allowed = False
                if (method, template) == ("post", "/api/v1/simulations") and resp.status == 201:
                    stop = await client.delete("/api/v1/simulations/current", headers=headers)
                    assert stop.status in (200, 404), await stop.text()  # 404: it already ended
            if (method, template) in SCOPED_LISTS and who in ("fuku-staff", "fuku-admin") and resp.status == 200:
                leaked = [k for k in ("kori-staff", "kori-admin", "kori-op", KORI, "partner.example") if k in text]
                if leaked:
                    failures.append(f"list not filtered ({leaked}): " + where)
    assert not failures, "\n".join(failures)


async def test_a_municipal_admin_stays_in_its_municipality(world: Any) -> None:
    """Issue #16 trial 3: an admin of one municipality created a prefecture-wide admin, a webhook with staff
    data for another municipality, deleted that municipality's webhook and roster entry, read all accounts
    and the whole audit log."""
    client, tokens, ids = world
    fuku = bearer(tokens["fuku-admin"])
    made = await client.post("/api/v1/accounts", json={"username": "rogue", "password": PASSWORD, "role": "admin"},
                             headers=fuku)
    assert made.status == 403
    hook = await client.post("/api/v1/webhooks", json={"url": "https://x.example/h", "municipality_code": KORI,
                                                       "include_staff": True}, headers=fuku)
    assert hook.status == 403
    assert (await client.post("/api/v1/webhooks", json={"url": "https://x.example/h", "include_staff": True},
                              headers=fuku)).status == 201  # defaults to its own municipality
    assert (await client.delete(f"/api/v1/webhooks/{ids['webhook_id']}", headers=fuku)).status == 404
    assert (await client.delete("/api/v1/roster/kori-staff", headers=fuku)).status == 404
    accounts = (await (await client.get("/api/v1/accounts", headers=fuku)).json())["accounts"]
    assert {a["username"] for a in accounts} == {"fuku-staff", "fuku-admin"}
    audit = (await (await client.get("/api/v1/audit", headers=fuku)).json())["entries"]
    assert audit and {e["actor"] for e in audit} == {"fuku-admin"}
    # a prefecture-wide admin may create prefecture-wide accounts; a municipal one only in its municipality
    pref = bearer(tokens["pref-admin"])
    assert (await client.post("/api/v1/accounts", json={"username": "pref-2", "password": PASSWORD, "role": "admin"},
                              headers=pref)).status == 201
    assert (await client.post("/api/v1/accounts", json={"username": "fuku-2", "password": PASSWORD, "role": "staff",
                                                        "municipality_code": FUKU}, headers=fuku)).status == 201
    # the other municipality's objects exist, but the answer is the one for a missing id
    missing = await client.delete("/api/v1/webhooks/999999", headers=fuku)
    hidden = await client.delete(f"/api/v1/webhooks/{ids['webhook_id']}", headers=fuku)
    assert (missing.status, (await missing.json())["title"]) == (hidden.status, (await hidden.json())["title"])


async def test_public_alert_reads_show_no_staff_identity_or_note(world: Any) -> None:
    """Issue #16 trial 7: anonymous history and alert reads exposed actor, acknowledged_by and notes."""
    client, tokens, ids = world
    ack = await client.post(f"/api/v1/alerts/{ids['alert_id']}/acknowledge", json={"note": "内部メモ secret-note"},
                            headers=bearer(tokens["kori-staff"]))
    assert ack.status == 200
    for path in ("/api/v1/alerts/history", f"/api/v1/alerts/{ids['alert_id']}", "/api/v1/alerts"):
        text = await (await client.get(path)).text()
        assert "kori-staff" not in text and "secret-note" not in text and "setup" not in text, (path, text[:300])
        body = json.loads(text)
        rows = body.get("events") or body.get("alerts") or [body]
        assert rows and all("actor" not in r and "acknowledged_by" not in r and "note" not in r for r in rows)
    # logged-in staff asking for the staff view still see who acknowledged
    staff = await client.get("/api/v1/alerts/history?audience=all", headers=bearer(tokens["kori-staff"]))
    assert "kori-staff" in await staff.text()


async def test_event_stream_is_scoped_and_public_streams_carry_no_staff_identity(world: Any) -> None:
    client, tokens, ids = world
    fuku = await client.get(f"/api/v1/events?audience=staff&municipality={KORI}", headers=bearer(tokens["fuku-staff"]))
    assert fuku.status == 403
    fuku.close()
    public = await client.get("/api/v1/events?last_event_id=0")
    assert public.status == 200
    chunk = b""
    while b"event: alert" not in chunk:
        chunk += await public.content.readany()
    public.close()
    assert b"setup" not in chunk and b"actor" not in chunk


#: (who grants, to whom) → the answer: admins grant real injection to operators of their own scope only
GRANTS = [
    ("kori-admin", "kori-op", 200), ("pref-admin", "kori-op", 200), ("fuku-admin", "kori-op", 404),
    ("kori-staff", "kori-op", 403), ("kori-op", "kori-op", 403), ("anonymous", "kori-op", 401),
    ("kori-admin", "kori-staff", 409), ("kori-admin", "fuku-op", 404), ("kori-admin", "pref-op", 404),
    ("pref-admin", "pref-op", 200), ("fuku-admin", "fuku-op", 200), ("kori-admin", "nobody-here", 404),
]


async def test_real_injection_is_granted_per_operator_by_an_admin_of_its_scope(world: Any) -> None:
    """Operators inject real (non-exercise) readings only once an admin of their scope allows it; the
    grant and its withdrawal are audited, and the grant never widens the operator's municipality."""
    client, tokens, _ = world
    pool = client.server.app[__import__("api.context", fromlist=["POOL"]).POOL]
    async with pool.acquire() as conn:
        for name, muni in (("fuku-op", FUKU), ("pref-op", None)):
            await create_account(conn, username=name, password=PASSWORD, role="operator", municipality_code=muni)
    failures = []
    for granter, target, expected in GRANTS:
        headers = {} if granter == "anonymous" else bearer(tokens[granter])
        resp = await client.put(f"/api/v1/accounts/{target}/real-injection", json={"allowed": True}, headers=headers)
        if resp.status != expected:
            failures.append(f"{granter} → {target}: {resp.status} (expected {expected}) {await resp.text()}")
    assert not failures, "\n".join(failures)
    async with pool.acquire() as conn:
        granted = {r["username"] for r in await conn.fetch("SELECT username FROM accounts WHERE may_inject_real")}
        audited = await conn.fetch("SELECT actor, object_id FROM audit_log WHERE action = "
                                   "'account.real_injection_granted' ORDER BY id")
    assert granted == {"kori-op", "pref-op", "fuku-op"}
    # pref-admin's grant to kori-op repeats kori-admin's: the same fact, not audited again
    assert [(r["actor"], r["object_id"]) for r in audited] == [
        ("kori-admin", "kori-op"), ("pref-admin", "pref-op"), ("fuku-admin", "fuku-op")]

    # the granted operator runs real readings on its own stations, still never on another municipality's
    op, admin = bearer(tokens["kori-op"]), bearer(tokens["kori-admin"])
    own = {"scenario": SCENARIO, "duration_s": 60, "exercise": False}
    started = await client.post("/api/v1/simulations", json=own, headers=op)
    assert started.status == 201, await started.text()
    assert (await client.delete("/api/v1/simulations/current", headers=op)).status in (200, 404)
    other = {**own, "scenario": {**SCENARIO, "rivers": [{"id": "r", "name": "r", "reaches": [
        {"station": "authz-fuku-1", "area_km2": 10}]}], "scenario": {**SCENARIO["scenario"], "municipality": FUKU}}}
    assert (await client.post("/api/v1/simulations", json=other, headers=op)).status == 403
    # withdrawn: refused again, and audited
    revoked = await client.put("/api/v1/accounts/kori-op/real-injection", json={"allowed": False}, headers=admin)
    assert (revoked.status, (await revoked.json())["may_inject_real"]) == (200, False)
    refused = await client.post("/api/v1/simulations", json=own, headers=op)
    assert refused.status == 403 and "admin" in (await refused.json())["detail"]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'account.real_injection_revoked' "
                                   "AND actor = 'kori-admin' AND object_id = 'kori-op'") == 1


async def test_a_repeated_grant_is_answered_repeated_and_written_once_even_at_once(world: Any) -> None:
    """The same grant (or withdrawal) again, by the same or another admin, is the fact the account has already:
    200 with ``"repeated": true``, nothing written or audited (found: a second admin's identical grant was
    audited again). Sent six at once by two admins through the API, the account's row lock makes them one
    after the other: one write, one audit row, five ``repeated``."""
    client, tokens, _ = world
    pool = client.server.app[__import__("api.context", fromlist=["POOL"]).POOL]
    admins = [bearer(tokens["kori-admin"]), bearer(tokens["pref-admin"])]
    path = "/api/v1/accounts/kori-op/real-injection"
    for allowed in (True, False):
        answers = await asyncio.gather(*(client.put(path, json={"allowed": allowed}, headers=admins[i % 2])
                                         for i in range(6)))
        assert [r.status for r in answers] == [200] * 6
        bodies = [await r.json() for r in answers]
        assert sorted(b["repeated"] for b in bodies) == [False] + [True] * 5, bodies
        assert {(b["username"], b["may_inject_real"]) for b in bodies} == {("kori-op", allowed)}
        again = await client.put(path, json={"allowed": allowed}, headers=admins[0])
        assert await again.json() == {"username": "kori-op", "may_inject_real": allowed, "repeated": True}
    async with pool.acquire() as conn:
        audited = [r["action"] for r in await conn.fetch(
            "SELECT action FROM audit_log WHERE object_id = 'kori-op' AND action LIKE 'account.real_injection%' "
            "ORDER BY id")]
        assert await conn.fetchval("SELECT may_inject_real FROM accounts WHERE username = 'kori-op'") is False
    assert audited == ["account.real_injection_granted", "account.real_injection_revoked"], audited
