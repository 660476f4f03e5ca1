"""The drill town (079995) is for exercises only, at every entry; its extent is its shipped shelters'.

Found (break-it pass): a real whole-town order for 079995 was taken (CAP ``Actual``, 訓練町に高齢者等避難を発令しました
without 【訓練】) while a real area in it was refused; a real station was moved into it by PATCH and its real
alert went there, to webhooks filtered to 079995 without drills; a station imported as 079995 at 会津若松
(40 km away) grew the town, and a push circle there listed it. Real PostgreSQL; the shipped boundaries and list.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from alerting.store import AlertError, issue_order
from api.auth import login
from evac.service import DRILLTOWN
from evac.store import name_drill_town
from ingest.municipalities import DRILL_TOWN_RULE, uncovered
from ingest.registry import RegistryError, Station, edit_station, upsert_stations
from notify import store
from sonae.config import Settings, load_settings
from sonae.municipality_code import DRILL_TOWN_CODE, drill_town_refusal
from tests.api.test_api_coverage import NAHA, _deployment, _subscription
from tests.api.test_api_staff import PASSWORD, SQUARE, auth, make_client
from tests.api_support import signed_in

KORI = "072036"
EXERCISES_ONLY = "for exercises only"


@pytest.fixture
def psettings(database_url: str) -> Settings:
    return load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_NOTIFY_PUSH_ALLOW_HTTP": "true",
                                  "SONAE_API_RATE_LIMIT_PER_MINUTE": "0", "SONAE_LOG_FORMAT": "text"})


async def _accounts(pool: asyncpg.Pool) -> dict[str, str]:
    await _deployment(pool)
    async with pool.acquire() as conn:
        await name_drill_town(conn)
        await upsert_stations(conn, [
            Station(id="bk-c", name="郡山の水位計", municipality_code=KORI, lat=37.40, lon=140.36),
            Station(id="dt-g", name="訓練川の水位計", municipality_code=DRILL_TOWN_CODE, lat=37.40, lon=140.36,
                    exercise=True)])
        return await signed_in(conn, (("pref-admin", "admin", None), ("pref-staff", "staff", None),
                                      ("drill-staff", "staff", DRILL_TOWN_CODE)), PASSWORD)


async def test_nothing_real_is_taken_for_the_drill_town(pool: asyncpg.Pool, psettings: Settings) -> None:
    tokens = await _accounts(pool)
    staff, admin = auth(tokens["pref-staff"]), auth(tokens["pref-admin"])
    client: TestClient = await make_client(pool, psettings)
    try:
        refused: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
            ("post", "/api/v1/orders", {"level": 3, "municipality_code": DRILL_TOWN_CODE, "exercise": False}, staff),
            ("post", "/api/v1/orders", {"level": 3}, auth(tokens["drill-staff"])),  # its own town, by default
            ("patch", "/api/v1/stations/bk-c", {"municipality_code": DRILL_TOWN_CODE}, staff),
            ("patch", "/api/v1/stations/dt-g", {"exercise": False}, staff),  # a drill gauge made real
            ("post", "/api/v1/webhooks", {"url": "https://partner.example/h", "municipality_code": DRILL_TOWN_CODE,
                                          "drills": False}, admin),
            ("post", "/api/v1/push/subscriptions", {"subscription": _subscription(1),
                                                    "areas": [{"municipality_code": DRILL_TOWN_CODE}]}, {}),
        ]
        for method, path, body, headers in refused:
            resp = await client.request(method, path, json=body, headers=headers)
            assert resp.status == 422, (path, body, await resp.text())
            detail = (await resp.json())["detail"]
            assert EXERCISES_ONLY in detail and "Kunren Town" in detail, (path, detail)  # English, as the detail is
            assert ('"drills": true' if "webhooks" in path or "push" in path else '"exercise": true') in detail
        taken = [
            ("post", "/api/v1/orders", {"level": 3, "municipality_code": DRILL_TOWN_CODE, "exercise": True}, staff),
            ("post", "/api/v1/webhooks", {"url": "https://partner.example/h", "municipality_code": DRILL_TOWN_CODE,
                                          "drills": True}, admin),
            ("post", "/api/v1/push/subscriptions", {"subscription": _subscription(2), "drills": True,
                                                    "areas": [{"municipality_code": DRILL_TOWN_CODE}]}, {}),
        ]
        for method, path, body, headers in taken:
            resp = await client.request(method, path, json=body, headers=headers)
            assert resp.status == 201, (path, body, await resp.text())
        level = await (await client.get("/api/v1/level", params={"municipality": DRILL_TOWN_CODE})).json()
        assert level["level"] == 3 and level["exercise"] is True, level
    finally:
        await client.close()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM evacuation_orders WHERE NOT exercise") == 0
        assert await conn.fetchval("SELECT municipality_code FROM stations WHERE id = 'bk-c'") == KORI
        assert await conn.fetchval("SELECT exercise FROM stations WHERE id = 'dt-g'") is True
        assert await conn.fetchval("SELECT count(*) FROM webhooks WHERE NOT drills") == 0
        assert await conn.fetchval("SELECT count(*) FROM push_subscriptions WHERE NOT drills") == 0
        # the registry's own rule, for an import and an edit alike
        with pytest.raises(RegistryError, match=EXERCISES_ONLY):
            await upsert_stations(conn, [Station(id="bk-far", name="会津の水位計", municipality_code=DRILL_TOWN_CODE,
                                                 lat=37.5, lon=139.9)])
        async with conn.transaction():
            with pytest.raises(RegistryError, match=EXERCISES_ONLY):
                await edit_station(conn, "bk-c", {"municipality_code": DRILL_TOWN_CODE})
        assert await conn.fetchval("SELECT count(*) FROM stations WHERE id = 'bk-far'") == 0


async def test_the_drill_towns_extent_is_its_shipped_shelters_not_what_is_labelled_with_its_code(
        pool: asyncpg.Pool, psettings: Settings) -> None:
    """A station or shelter labelled 079995 at 会津若松 (an exercise station may be anywhere; an imported
    shelter names any code) does not take the drill town there: a push circle at it lists 会津若松市 only."""
    await _deployment(pool)
    async with pool.acquire() as conn:
        await name_drill_town(conn)
        await conn.execute("INSERT INTO shelters (id, name, lat, lon, municipality_code, source) VALUES "
                           "('dt-1', '訓練町第1避難所', 37.395, 140.355, $1, $2), "
                           "('far', '会津の避難所', 37.501, 139.901, $1, 'import')",
                           DRILL_TOWN_CODE, DRILLTOWN)  # as evac.service seeds the shipped town
        await upsert_stations(conn, [Station(id="bk-far", name="会津の水位計", municipality_code=DRILL_TOWN_CODE,
                                             lat=37.5, lon=139.9, exercise=True)])
        assert await store.drill_town_box(conn) == (140.355, 37.395, 140.355, 37.395)
    client: TestClient = await make_client(pool, psettings)
    try:
        near = {}
        for i, (lat, lon, drills) in enumerate(((37.5, 139.9, True), (37.395, 140.355, True),
                                                (37.395, 140.355, False))):
            resp = await client.post("/api/v1/push/subscriptions", json={
                "subscription": _subscription(i), "drills": drills,
                "areas": [{"lat": lat, "lon": lon, "radius_m": 500}]})
            assert resp.status == 201, await resp.text()
            near[lat, drills] = (await resp.json())["areas"][0]["municipalities"]
    finally:
        await client.close()
    # without drills the drill town is no place of the circle's: its code reaches exercise alerts only
    # (found: stored with 072036 and 079995)
    assert near == {(37.5, True): ["072028"], (37.395, True): [KORI, DRILL_TOWN_CODE],
                    (37.395, False): [KORI]}, near
    async with pool.acquire() as conn:
        stored = await conn.fetch("SELECT s.drills, a.near_municipalities FROM push_areas a "
                                  "JOIN push_subscriptions s ON s.id = a.subscription_id WHERE a.lat = 37.395")
    assert sorted((r["drills"], list(r["near_municipalities"])) for r in stored) == [
        (False, [KORI]), (True, [KORI, DRILL_TOWN_CODE])]
    assert store.DRILL_TOWN_SOURCE == DRILLTOWN  # the seeding's source is the one notify reads


async def test_every_entry_answers_422_for_a_municipality_outside_coverage(
        pool: asyncpg.Pool, psettings: Settings) -> None:
    """One rule, one status: an account naming 那覇市 was a 400 while every other entry answered 422."""
    tokens = await _accounts(pool)
    staff, admin = auth(tokens["pref-staff"]), auth(tokens["pref-admin"])
    client: TestClient = await make_client(pool, psettings)
    try:
        entries: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
            ("post", "/api/v1/accounts", {"username": "naha-staff", "password": PASSWORD, "role": "staff",
                                          "municipality_code": NAHA}, admin),
            ("post", "/api/v1/webhooks", {"url": "https://partner.example/h", "municipality_code": NAHA}, admin),
            ("post", "/api/v1/orders", {"level": 3, "municipality_code": NAHA}, staff),
            ("post", "/api/v1/hazards", {"municipality_code": NAHA, "exercise": True, "geometry": {
                "type": "Polygon", "coordinates": [[[127.68, 26.21], [127.69, 26.21], [127.69, 26.22],
                                                    [127.68, 26.21]]]}}, staff),
            ("put", "/api/v1/roster/pref-staff", {"municipality_code": NAHA, "email": "a@example.org"}, staff),
            ("patch", "/api/v1/stations/bk-c", {"municipality_code": NAHA}, staff),
            ("post", "/api/v1/push/subscriptions", {"subscription": _subscription(3),
                                                    "areas": [{"municipality_code": NAHA}]}, {}),
        ]
        for method, path, body, headers in entries:
            resp = await client.request(method, path, json=body, headers=headers)
            assert resp.status == 422, (path, await resp.text())
            assert "那覇市" in (await resp.json())["detail"], path
    finally:
        await client.close()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM accounts WHERE username = 'naha-staff'") == 0
        assert await login(conn, "pref-staff", PASSWORD) is not None


async def test_a_repeated_acknowledgement_or_cancellation_is_answered_and_written_once(
        pool: asyncpg.Pool, settings: Settings) -> None:
    async with pool.acquire() as conn:
        tokens = await signed_in(conn, (("kori-staff", "staff", KORI), ("pref-staff", "staff", None)), PASSWORD)
    kori, pref = auth(tokens["kori-staff"]), auth(tokens["pref-staff"])
    client: TestClient = await make_client(pool, settings)
    try:
        order = await (await client.post("/api/v1/orders", json={"level": 3}, headers=kori)).json()
        alert = order["alert_id"]
        first, again = [await client.post(f"/api/v1/alerts/{alert}/acknowledge", json={"note": "見ました"},
                                          headers=kori) for _ in range(2)]
        assert (first.status, again.status) == (200, 200)
        first_body, again_body = await first.json(), await again.json()
        assert again_body == {**first_body, "repeated": True} and first_body["repeated"] is False
        plain = await client.post(f"/api/v1/alerts/{alert}/acknowledge", headers=kori)  # no note: the same fact
        assert (await plain.json())["event_id"] == first_body["event_id"]
        other = await client.post(f"/api/v1/alerts/{alert}/acknowledge", headers=pref)  # a colleague saw it too
        assert (await other.json())["repeated"] is False
        cancels = [await client.post(f"/api/v1/orders/{order['order_id']}/cancel", json={}, headers=h)
                   for h in (kori, kori, pref)]
        assert [c.status for c in cancels] == [200, 200, 200]
        bodies = [await c.json() for c in cancels]
        assert [b["repeated"] for b in bodies] == [False, True, True]
        assert {(b["state"], b["cancelled_by"], b["alert_id"]) for b in bodies} == {("cancelled", "kori-staff", alert)}
    finally:
        await client.close()
    async with pool.acquire() as conn:
        events = [(r["kind"], r["actor"]) for r in await conn.fetch(
            "SELECT kind, actor FROM alert_events WHERE alert_id = $1 AND kind <> 'raised' ORDER BY id", alert)]
        audits = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action IN "
                                     "('alert.acknowledged', 'order.cancelled')")
    assert events == [("acknowledged", "kori-staff"), ("acknowledged", "pref-staff"), ("cleared", "kori-staff")]
    assert audits == 3


NOTES = ("見ました", "避難所を開設中", "巡回します", "水位を確認", "消防団に連絡")


async def test_acknowledgements_and_removals_at_the_same_time_are_as_one_after_the_other(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """Requests sent together through the API (real HTTP, real PostgreSQL) answer and write as some order of
    them one after the other would: the alert's row serialises acknowledgements, so the same acknowledgement
    six times is one write and five ``repeated``; different notes are each a new acknowledgement (as one
    after the other: a note that adds to the last is news); a hazard area removed four times at once is
    removed and audited once, the others find none (404), as they would after it."""
    async with pool.acquire() as conn:
        tokens = await signed_in(conn, (("kori-staff", "staff", KORI),), PASSWORD)
    kori = auth(tokens["kori-staff"])
    client: TestClient = await make_client(pool, settings)
    try:
        alert = (await (await client.post("/api/v1/orders", json={"level": 3}, headers=kori)).json())["alert_id"]
        path = f"/api/v1/alerts/{alert}/acknowledge"
        for note in NOTES:  # rounds: each a new note, sent six times at once
            same = await asyncio.gather(*(client.post(path, json={"note": note}, headers=kori) for _ in range(6)))
            assert [r.status for r in same] == [200] * 6
            bodies = [await r.json() for r in same]
            assert sorted(b["repeated"] for b in bodies) == [False] + [True] * 5, (note, bodies)
            assert len({b["event_id"] for b in bodies}) == 1, bodies
        notes = await asyncio.gather(*(client.post(path, json={"note": f"n{i}"}, headers=kori) for i in range(4)))
        assert [r.status for r in notes] == [200] * 4
        noted = [await r.json() for r in notes]
        assert [b["repeated"] for b in noted] == [False] * 4 and len({b["event_id"] for b in noted}) == 4
        last = max(noted, key=lambda b: b["event_id"])  # the last one written is the acknowledgement as it stands
        again = await (await client.post(path, json={"note": f"n{noted.index(last)}"}, headers=kori)).json()
        assert again == {**last, "repeated": True}, again
        area = (await (await client.post("/api/v1/hazards", json={"geometry": SQUARE, "municipality_code": KORI},
                                         headers=kori)).json())["id"]
        removals = await asyncio.gather(*(client.delete(f"/api/v1/hazards/{area}", headers=kori) for _ in range(4)))
        assert sorted(r.status for r in removals) == [204, 404, 404, 404]
    finally:
        await client.close()
    async with pool.acquire() as conn:
        acks = [r["note"] for r in await conn.fetch(
            "SELECT note FROM alert_events WHERE alert_id = $1 AND kind = 'acknowledged' ORDER BY id", alert)]
        audits = {r["action"]: r["n"] for r in await conn.fetch(
            "SELECT action, count(*) AS n FROM audit_log WHERE action IN ('alert.acknowledged', "
            "'hazard_area.removed') GROUP BY action")}
    assert acks[:len(NOTES)] == list(NOTES) and sorted(acks[len(NOTES):]) == ["n0", "n1", "n2", "n3"], acks
    assert audits == {"alert.acknowledged": len(NOTES) + 4, "hazard_area.removed": 1}, audits


async def test_the_order_store_itself_refuses_a_real_order_for_the_drill_town(pool: asyncpg.Pool) -> None:
    """``alerting.store.issue_order`` called directly (a script, a new entry) applies the drill town's rule that
    every API and CLI entry applies first (found: it took a real 避難指示 for 079995): nothing is written;
    an exercise order is taken."""
    async with pool.acquire() as conn:
        for code in (DRILL_TOWN_CODE, DRILL_TOWN_CODE[:5]):  # the 5-digit form is the same town
            with pytest.raises(AlertError, match=EXERCISES_ONLY):
                await issue_order(conn, municipality_code=code, level=4, issued_by="script")
        assert await conn.fetchval("SELECT count(*) FROM evacuation_orders") == 0
        assert await conn.fetchval("SELECT count(*) FROM alerts") == 0
        assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'order.issued'") == 0
        order_id, change = await issue_order(conn, municipality_code=DRILL_TOWN_CODE, level=4, issued_by="script",
                                             exercise=True)
        assert await conn.fetchval("SELECT exercise FROM evacuation_orders WHERE id = $1", order_id) is True
        assert change.municipality_code == DRILL_TOWN_CODE


async def test_the_drill_towns_exception_is_decided_by_the_coverage_rule(pool: asyncpg.Pool) -> None:
    """Accounts and the roster may name the drill town, real orders, areas and stations may not: decided in
    one place (``uncovered(staff=)``, ``drill_town_refusal``), not by each caller passing ``exercise=True``."""
    await _deployment(pool)
    async with pool.acquire() as conn:
        await name_drill_town(conn)
        assert await uncovered(conn, DRILL_TOWN_CODE, exercise=False, staff=True) is None
        assert await uncovered(conn, DRILL_TOWN_CODE, exercise=True) is None
        assert await uncovered(conn, DRILL_TOWN_CODE, exercise=False) == DRILL_TOWN_RULE
        assert await uncovered(conn, NAHA, exercise=False, staff=True) is not None  # staff: no wider elsewhere
    assert drill_town_refusal(DRILL_TOWN_CODE, exercise=False) == DRILL_TOWN_RULE
    assert drill_town_refusal(DRILL_TOWN_CODE, exercise=False, staff=True) is None
    assert drill_town_refusal(KORI, exercise=False) is None
