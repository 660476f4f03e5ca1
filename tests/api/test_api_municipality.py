"""One municipality code at every entry, and municipal boundaries in use (issue #14 items 2-4).

Real PostgreSQL and a real MQTT broker; the boundaries are the shipped N03 ones.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from alerting import store as alerts
from alerting.rules import Transition
from api.auth import AccountError, create_account, login
from app.runtime import open_pool
from ingest.boundaries import packaged_boundaries, store_boundaries
from ingest.contract import encode_reading
from ingest.municipalities import seed_if_empty
from ingest.registry import Station, upsert_stations
from sonae.config import Settings, load_settings
from sonae.migrations import migrate
from tests.api.test_api_staff import PASSWORD, auth, make_client
from tests.ingest_support import count, publish_raw, running_ingestor, wait_until

KORIYAMA_POINT = {"lat": "37.367401", "lon": "140.329744"}  # 郡山市, ~6 km from the gauge below
# 芦の口橋 is the issue's example; this gauge stands ~6 km east of KORIYAMA_POINT, inside 郡山市
GAUGE = {"lat": 37.375, "lon": 140.40}


async def _with_boundaries(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await store_boundaries(conn, packaged_boundaries(), source="test")


async def _gauge_at_level_5(pool: asyncpg.Pool) -> int:
    """A crisis gauge registered with the 5-digit code 07203, at level 5 (as the rules worker records it)."""
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="ashinokuchi", name="芦の口橋", gauge_type="crisis",
                                             municipality_code="07203", lat=GAUGE["lat"], lon=GAUGE["lon"],
                                             th_obs_start=1.0, th_crisis=2.0, th_overflow=3.0)])
        code = await conn.fetchval("SELECT municipality_code FROM stations WHERE id = 'ashinokuchi'")
        assert code == "072036"
        async with conn.transaction():
            change = await alerts.apply_transition(
                conn, station_id="ashinokuchi", municipality_code=code, exercise=False,
                t=Transition("river_level", 0, 5, datetime.now(UTC).timestamp(), 3.2, 3.0, "threshold"))
    assert change is not None
    return change.alert_id


async def test_five_and_six_digit_codes_are_one_municipality(pool: asyncpg.Pool, settings: Settings) -> None:
    await _with_boundaries(pool)
    alert_id = await _gauge_at_level_5(pool)
    client: TestClient = await make_client(pool, settings)
    try:
        at_point = await (await client.get("/api/v1/level", params=KORIYAMA_POINT)).json()
        assert at_point["municipality_code"] == "072036" and at_point["level"] == 5
        five = await (await client.get("/api/v1/level", params={"municipality": "07203"})).json()
        six = await (await client.get("/api/v1/level", params={"municipality": "072036"})).json()
        assert five == six and six["level"] == 5 and six["alert_id"] == alert_id
        listed5 = await (await client.get("/api/v1/alerts", params={"municipality": "07203"})).json()
        listed6 = await (await client.get("/api/v1/alerts", params={"municipality": "072036"})).json()
        assert listed5 == listed6 and alert_id in [a["id"] for a in listed6["alerts"]]
        for path in ("/api/v1/level", "/api/v1/alerts", "/api/v1/stations", "/api/v1/shelters"):
            resp = await client.get(path, params={"municipality": "072037"})
            body = await resp.json(content_type=None)
            assert resp.status == 400 and resp.content_type == "application/problem+json", path
            assert "072036" in body["detail"] and body["parameter"] == "municipality"
        # an account made with the 5-digit code is Koriyama's: it sees and acknowledges the alert
        async with pool.acquire() as conn:
            account = await create_account(conn, username="kori5", password=PASSWORD, role="staff",
                                           municipality_code="07203")
            assert account.municipality_code == "072036"
            token = (await login(conn, "kori5", PASSWORD))[0]  # type: ignore[index]
        staff_view = await (await client.get("/api/v1/alerts", params={"audience": "all"},
                                             headers=auth(token))).json()
        assert alert_id in [a["id"] for a in staff_view["alerts"]]
        ack = await client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "見ました"}, headers=auth(token))
        assert ack.status == 200, await ack.text()
        bad = await client.post("/api/v1/orders", json={"municipality_code": "072037", "level": 3}, headers=auth(token))
        assert bad.status == 400 and "072036" in (await bad.json(content_type=None))["detail"]
    finally:
        await client.close()


async def test_points_across_a_border_get_their_own_municipality(pool: asyncpg.Pool, settings: Settings) -> None:
    """A level-5 whole-municipality order of 郡山市 reaches a point just inside it, not one just outside."""
    await _with_boundaries(pool)
    index_boundary = {b.code: b.geometry for b in packaged_boundaries()}
    kori, neighbours = index_boundary["072036"], [c for c, g in index_boundary.items()
                                                  if c != "072036" and g.touches(index_boundary["072036"])]
    assert neighbours
    # a vertex of the shared border with the first neighbour, and points 3 m either side (east-west)
    shared = kori.boundary.intersection(index_boundary[neighbours[0]].boundary)
    lon, lat = list(shared.geoms[len(shared.geoms) // 2].coords)[0] if hasattr(shared, "geoms") else shared.coords[0]
    step = 3 / (111_320 * 0.79)
    east, west = {"lat": f"{lat:.7f}", "lon": f"{lon + step:.7f}"}, {"lat": f"{lat:.7f}", "lon": f"{lon - step:.7f}"}
    async with pool.acquire() as conn:
        await alerts.issue_order(conn, municipality_code="07203", level=5, issued_by="test")
    client: TestClient = await make_client(pool, settings)
    try:
        answers = [await (await client.get("/api/v1/level", params=p)).json() for p in (east, west)]
    finally:
        await client.close()
    codes = {a["municipality_code"] for a in answers}
    assert codes == {"072036", neighbours[0]}
    for a in answers:
        assert (a["level"] == 5) == (a["municipality_code"] == "072036")


async def test_staff_draw_inside_their_municipality(pool: asyncpg.Pool, settings: Settings) -> None:
    await _with_boundaries(pool)
    async with pool.acquire() as conn:
        await create_account(conn, username="kori-staff", password=PASSWORD, role="staff", municipality_code="072036")
        await create_account(conn, username="pref-staff", password=PASSWORD, role="staff")
        kori = (await login(conn, "kori-staff", PASSWORD))[0]  # type: ignore[index]
        pref = (await login(conn, "pref-staff", PASSWORD))[0]  # type: ignore[index]

    def square(lat: float, lon: float, d: float = 0.003) -> dict[str, object]:
        return {"type": "Polygon", "coordinates": [[[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d],
                                                     [lon, lat]]]}

    in_koriyama, in_fukushima = square(37.395, 140.355), square(37.755, 140.46)
    client: TestClient = await make_client(pool, settings)
    try:
        ok = await client.post("/api/v1/hazards", json={"geometry": in_koriyama, "hazard": "flood"}, headers=auth(kori))
        assert ok.status == 201, await ok.text()
        out = await client.post("/api/v1/hazards", json={"geometry": in_fukushima, "hazard": "flood"},
                                headers=auth(kori))
        assert out.status == 403 and "border" in (await out.json(content_type=None))["detail"]
        order = await client.post("/api/v1/orders", json={"level": 4, "area": in_fukushima}, headers=auth(kori))
        assert order.status == 403
        drawn = await client.post("/api/v1/hazards", json={"geometry": in_fukushima, "hazard": "flood"},
                                  headers=auth(pref))
        assert drawn.status == 201
        area_id = (await drawn.json())["id"]
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT municipality_code FROM hazard_areas WHERE id = $1", area_id) == "072010"
        wrong = await client.post("/api/v1/hazards", json={"geometry": in_fukushima, "hazard": "flood",
                                                           "municipality_code": "07203"}, headers=auth(pref))
        assert wrong.status == 422  # area and municipality each valid, not together
    finally:
        await client.close()


async def test_a_town_without_a_boundary_draws_real_areas_only_outside_known_ones(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """The drill town (079995) has no boundary: its staff issued a real level-3 order whose area covered much
    of Fukushima (201), and residents of real 郡山市 got 高齢者等避難 from it (found by enduser). A real area of
    such a town may not reach more than the border slack into a municipality Sonae has a boundary for; its
    drills may (the drill town lies inside real 郡山市), also away from every known boundary (a real area there is
    a 422, tests/api/test_api_coverage.py)."""
    await _with_boundaries(pool)
    async with pool.acquire() as conn:
        await create_account(conn, username="drill-staff", password=PASSWORD, role="staff", municipality_code="079995")
        await create_account(conn, username="pref-staff", password=PASSWORD, role="staff")
        drill = (await login(conn, "drill-staff", PASSWORD))[0]  # type: ignore[index]
        pref = (await login(conn, "pref-staff", PASSWORD))[0]  # type: ignore[index]
    fukushima_wide = {"type": "Polygon", "coordinates": [[[140.0, 37.0], [141.0, 37.0], [141.0, 38.0], [140.0, 38.0],
                                                          [140.0, 37.0]]]}
    drill_street = {"type": "Polygon", "coordinates": [[[140.352, 37.404], [140.356, 37.404], [140.356, 37.407],
                                                        [140.352, 37.407], [140.352, 37.404]]]}  # inside 郡山市
    at_sea = {"type": "Polygon", "coordinates": [[[141.5, 37.0], [141.51, 37.0], [141.51, 37.01], [141.5, 37.01],
                                                  [141.5, 37.0]]]}
    client: TestClient = await make_client(pool, settings)
    try:
        for path, key in (("/api/v1/orders", "area"), ("/api/v1/hazards", "geometry")):
            for area in (fukushima_wide, drill_street):
                real = await client.post(path, json={"level": 3, key: area} if key == "area" else {key: area},
                                         headers=auth(drill))
                assert real.status == 422, await real.text()  # the drill town is for exercises only
                assert "for exercises only" in (await real.json(content_type=None))["detail"]
                named = await client.post(path, json={"municipality_code": "079995", key: area,
                                                      **({"level": 3} if key == "area" else {})}, headers=auth(pref))
                assert named.status == 422, await named.text()
            drill_area = {key: drill_street, "exercise": True, **({"level": 4} if key == "area" else {})}
            assert (await client.post(path, json=drill_area, headers=auth(drill))).status == 201
            away = {key: at_sea, **({"level": 4} if key == "area" else {})}  # real, in no covered municipality
            assert (await client.post(path, json=away, headers=auth(drill))).status == 422
            assert (await client.post(path, json={**away, "exercise": True}, headers=auth(drill))).status == 201
        level = await (await client.get("/api/v1/level", params={"lat": "37.45", "lon": "140.38"})).json()
        assert level["level"] is None  # real 郡山市 heard nothing real from the drill town
    finally:
        await client.close()


async def test_push_circle_lists_the_municipalities_it_touches(pool: asyncpg.Pool, database_url: str) -> None:
    await _with_boundaries(pool)
    boundary = {b.code: b.geometry for b in packaged_boundaries()}
    shared = boundary["072036"].boundary.intersection(boundary["072079"].boundary)  # 郡山市 | 須賀川市
    point = shared.representative_point()
    browser_key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    keys = {"p256dh": base64.urlsafe_b64encode(browser_key).rstrip(b"=").decode(),
            "auth": base64.urlsafe_b64encode(b"0123456789abcdef").rstrip(b"=").decode()}
    body = {"subscription": {"endpoint": "http://127.0.0.1:9/push/1", "keys": keys},
            "areas": [{"lat": point.y, "lon": point.x, "radius_m": 500}, {"municipality_code": "07201"}]}
    settings = load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_NOTIFY_PUSH_ALLOW_HTTP": "true",
                                      "SONAE_LOG_FORMAT": "text"})
    client: TestClient = await make_client(pool, settings)
    try:
        resp = await client.post("/api/v1/push/subscriptions", json=body)
        assert resp.status == 201, await resp.text()
        areas = (await resp.json())["areas"]
        assert {"072036", "072079"} <= set(areas[0]["municipalities"]) and areas[1] == {"municipality_code": "072010"}
        async with pool.acquire() as conn:
            stored = await conn.fetch("SELECT municipality_code, near_municipalities FROM push_areas ORDER BY lat")
        assert {r["municipality_code"] for r in stored} == {None, "072010"}
        assert any(r["near_municipalities"] and "072079" in r["near_municipalities"] for r in stored)
    finally:
        await client.close()


async def test_a_push_area_outside_every_municipality_is_refused(pool: asyncpg.Pool, database_url: str) -> None:
    """Found: a circle at 0°N 0°E (``-0.0``, ``-1e-400``) was accepted 201 with ``"municipalities": []``, a
    subscription that could never receive anything. It is a 422 saying the area is outside what Sonae covers
    (the rule of /api/v1/level's ``covered: false``), as is a municipality code outside the deployment's list."""
    await _with_boundaries(pool)
    async with pool.acquire() as conn:
        await seed_if_empty(conn)
    browser_key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    keys = {"p256dh": base64.urlsafe_b64encode(browser_key).rstrip(b"=").decode(),
            "auth": base64.urlsafe_b64encode(b"0123456789abcdef").rstrip(b"=").decode()}
    sub = json.dumps({"endpoint": "http://127.0.0.1:9/push/1", "keys": keys})
    settings = load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_NOTIFY_PUSH_ALLOW_HTTP": "true",
                                      "SONAE_LOG_FORMAT": "text"})
    client: TestClient = await make_client(pool, settings)
    try:
        for areas in ('[{"lat":-0.0,"lon":-1e-400,"radius_m":100}]',
                      '[{"municipality_code":"07203"},{"lat":-33.86,"lon":151.2,"radius_m":2000}]'):
            resp = await client.post("/api/v1/push/subscriptions", data=f'{{"subscription":{sub},"areas":{areas}}}',
                                     headers={"Content-Type": "application/json"})
            assert resp.status == 422, (areas, await resp.text())
            problem = await resp.json()
            assert "outside the area Sonae covers" in problem["detail"] and problem["field"] == "areas", problem
            assert problem["covered"] is False and set(problem["guidance"]) == {"ja-JP", "en-US", "ja-JP-x-easy"}
        resp = await client.post("/api/v1/push/subscriptions", json={
            "subscription": {"endpoint": "http://127.0.0.1:9/push/1", "keys": keys},
            "areas": [{"municipality_code": "079987"}]})  # a right check digit, no municipality of the list
        assert resp.status == 422, await resp.text()
        assert "areas[].municipality_code" in (await resp.json())["detail"]
        assert await pool.fetchval("SELECT count(*) FROM push_subscriptions") == 0
    finally:
        await client.close()


async def test_topic_with_five_digits_stores_six(pool: asyncpg.Pool, settings: Settings) -> None:
    prefix = settings["mqtt.topic_prefix"]
    now = datetime.now(UTC) - timedelta(minutes=1)
    async with running_ingestor(settings, pool, unknown_stations="accept"):
        await publish_raw(settings, [
            (f"{prefix}/07203/new-gauge/level", encode_reading(value=1.5, ts=now, seq=1)),
            (f"{prefix}/072037/other-gauge/level", encode_reading(value=1.5, ts=now, seq=1)),
            (f"{prefix}/079995/drill-gauge/level", encode_reading(value=1.5, ts=now, seq=1, exercise=True)),
            # nothing real from the drill town: refused, so not registered (ingest.placement)
            (f"{prefix}/079995/drill-real/level", encode_reading(value=1.5, ts=now, seq=1)),
        ])
        await wait_until(lambda: count(pool, "SELECT count(*) FROM readings WHERE station_id = 'new-gauge'"),
                         what="the reading of new-gauge")
        await wait_until(lambda: count(pool, "SELECT count(*) FROM stations WHERE id = 'drill-gauge'"),
                         what="the registration of drill-gauge")
        await wait_until(lambda: count(pool, "SELECT count(*) FROM dead_letters WHERE reason = 'bad_municipality_code'"),
                         what="the dead letter of the bad check digit")
        await wait_until(lambda: count(pool, "SELECT count(*) FROM dead_letters WHERE reason = 'real_in_drill_town'"),
                         what="the dead letter of the real reading from the drill town")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT municipality_code FROM stations WHERE id = 'new-gauge'") == "072036"
        # the drill town holds exercise stations only (found: a real one could be put there)
        assert [tuple(r) for r in await conn.fetch("SELECT id, exercise FROM stations WHERE id LIKE '%-gauge' "
                                                   "ORDER BY id")] == [("drill-gauge", True), ("new-gauge", False)]
        detail = await conn.fetchval("SELECT detail FROM dead_letters WHERE reason = 'bad_municipality_code'")
        assert "072036" in detail
        assert not await conn.fetchval("SELECT count(*) FROM stations WHERE id = 'other-gauge'")


async def test_auto_registration_takes_the_coverage_rule_and_keeps_what_it_refuses(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """Ingest's auto-registration (``unknown_stations = "accept"``) puts a station only where an import or an
    edit may (``ingest.municipalities.uncovered``); the readings of one it cannot register are kept as dead
    letters ``uncovered_municipality`` saying why (found: stations were registered in 那覇市, which has no
    boundary here, and in 479993, a code of no municipality of the list)."""
    async with pool.acquire() as conn:
        await seed_if_empty(conn)
        await store_boundaries(conn, packaged_boundaries(), source="test")
    prefix = settings["mqtt.topic_prefix"]
    now = datetime.now(UTC) - timedelta(minutes=1)
    async with running_ingestor(settings, pool, unknown_stations="accept"):
        await publish_raw(settings, [
            (f"{prefix}/472018/naha-gauge/level", encode_reading(value=1.5, ts=now, seq=1)),
            (f"{prefix}/472018/naha-gauge/level", encode_reading(value=1.6, ts=now + timedelta(seconds=1), seq=2)),
            (f"{prefix}/479993/nowhere-gauge/level", encode_reading(value=1.5, ts=now, seq=1)),
            (f"{prefix}/072036/kori-gauge/level", encode_reading(value=1.5, ts=now, seq=1)),
        ])
        await wait_until(lambda: count(pool, "SELECT count(*) FROM readings WHERE station_id = 'kori-gauge'"),
                         what="the reading of kori-gauge")
        await wait_until(lambda: count(pool, "SELECT (count(*) = 3)::int FROM dead_letters "
                                             "WHERE reason = 'uncovered_municipality'"),
                         what="the dead letters of the stations that cannot be registered")
    async with pool.acquire() as conn:
        assert [r["id"] for r in await conn.fetch("SELECT id FROM stations ORDER BY id")] == ["kori-gauge"]
        letters = {r["topic"]: r["detail"] for r in await conn.fetch(
            "SELECT topic, detail FROM dead_letters WHERE reason = 'uncovered_municipality'")}
        assert await conn.fetchval("SELECT count(*) FROM dead_letters WHERE reason = 'uncovered_municipality'") == 3
        assert not await conn.fetchval("SELECT count(*) FROM readings WHERE station_id <> 'kori-gauge'")
    assert "outside the area Sonae covers" in letters[f"{prefix}/472018/naha-gauge/level"]
    assert "not in this deployment's municipality list" in letters[f"{prefix}/479993/nowhere-gauge/level"]


async def test_migration_rewrites_stored_codes(pool: asyncpg.Pool) -> None:
    """Rows written with 5-digit codes and the drill town's 079999 before issue #14 are rewritten."""
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO stations (id, name, municipality_code) VALUES ('old', 'old', '07203')")
        await conn.execute("INSERT INTO municipalities (code, name_ja) VALUES ('07204', 'いわき市'), "
                           "('07203', '郡山市 (old)'), ('072036', '郡山市')")
        await conn.execute("INSERT INTO accounts (username, password_hash, role, municipality_code) "
                           "VALUES ('old-staff', 'x', 'staff', '07201')")
        await conn.execute("INSERT INTO shelters (id, lat, lon, municipality_code) VALUES ('dt', 37.4, 140.36, '079999')")
        await conn.execute("INSERT INTO evacuation_orders (municipality_code, level, issued_by) VALUES ('07202', 3, 't')")
        await conn.execute("INSERT INTO webhooks (url, secret, municipality_code, created_by) "
                           "VALUES ('https://example.jp/h', 's', '07208', 't')")
        await conn.execute("DELETE FROM sonae_migrations WHERE version = 20")
        applied = await migrate(conn)
        assert sorted(applied) == sorted(f"{c}/020_municipality_codes" for c in
                                         ("ingest", "alerting", "api", "notify", "evac"))
        assert await conn.fetchval("SELECT municipality_code FROM stations WHERE id = 'old'") == "072036"
        assert [r["code"] for r in await conn.fetch("SELECT code FROM municipalities ORDER BY code")] == [
            "072036", "072044"]
        assert await conn.fetchval("SELECT municipality_code FROM accounts") == "072010"
        assert await conn.fetchval("SELECT municipality_code FROM shelters") == "079995"
        assert await conn.fetchval("SELECT municipality_code FROM evacuation_orders") == "072028"
        assert await conn.fetchval("SELECT municipality_code FROM webhooks") == "072087"
        # the SQL rule is the Python rule, on every 5-digit code of the shipped list
        from ingest.municipalities import packaged_municipalities

        codes = [m.code for m in packaged_municipalities()]
        got = await conn.fetch("SELECT c, sonae_municipality_code(left(c, 5)) AS n FROM unnest($1::text[]) c", codes)
        assert all(r["c"] == r["n"] for r in got) and len(got) == len(codes)


async def test_an_empty_database_gets_the_shipped_list_and_boundaries(settings: Settings) -> None:
    pool = await open_pool(settings, migrate_schema=True)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM municipalities") == 1916
            assert await conn.fetchval("SELECT count(*) FROM municipality_boundaries") == 59
            kori = await conn.fetchrow("SELECT * FROM municipalities WHERE code = '072036'")
            assert (kori["name_ja"], kori["name_kana"], kori["name_en"]) == ("郡山市", "こおりやまし", "Koriyama City")
            await conn.execute("UPDATE municipalities SET name_en = 'kept' WHERE code = '072036'")
        again = await open_pool(settings, migrate_schema=True)  # not empty: nothing is reloaded
        await again.close()
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT name_en FROM municipalities WHERE code = '072036'") == "kept"
        client: TestClient = await make_client(pool, settings)
        try:
            credit = await (await client.get("/api/v1/attribution")).json()
            assert any("国土数値情報（行政区域データ）" in a["credit"] for a in credit["attributions"])
            listed = await (await client.get("/api/v1/municipalities")).json()
            assert {"code": "072036", "name_ja": "郡山市", "name_kana": "こおりやまし", "name_en": "kept", "prefecture": "福島県"}.items() <= \
                next(m for m in listed["municipalities"] if m["code"] == "072036").items()
        finally:
            await client.close()
    finally:
        await pool.close()


async def test_cli_imports_n03_boundaries_and_name_lists(pool: asyncpg.Pool, database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`sonae municipalities import` takes an N03 GeoJSON (5-digit N03_007) and a CSV with 5-digit codes."""
    import asyncio
    import gzip
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import shared_data

    full = json.loads(shared_data("boundaries", "fukushima_n03_2022_full.geojson").read_text(encoding="utf-8"))
    n03 = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": f["geometry"],
         "properties": {"N03_001": "福島県", "N03_003": f["properties"]["gun"] or None,
                        "N03_004": f["properties"]["name"], "N03_007": f["properties"]["N03_007"]}}
        for f in full["features"] if f["properties"]["N03_007"] in ("07207", "07342")]}
    path = tmp_path / "N03-22_07_test.geojson.gz"
    path.write_bytes(gzip.compress(json.dumps(n03, ensure_ascii=False).encode()))
    names = tmp_path / "names.csv"
    names.write_text("code,name_ja,name_kana\n07207,須賀川市,すかがわし\n", encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SONAE_DATABASE_URL": database_url,
           "SONAE_LOG_FORMAT": "text", "SONAE_STATE_DIR": str(tmp_path / "state")}
    for file in (path, names):
        proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "app.cli", "municipalities", "import",
                                                        str(file)], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT code, name FROM municipality_boundaries WHERE source = $1 ORDER BY code",
                                str(path))
        assert [(r["code"], r["name"]) for r in rows] == [("072079", "須賀川市"), ("073423", "岩瀬郡鏡石町")]
        # the import ran on a migrated database, which got the shipped boundaries first
        assert await conn.fetchval("SELECT count(*) FROM municipality_boundaries") == 59
        assert await conn.fetchval("SELECT name_kana FROM municipalities WHERE code = '072079'") == "すかがわし"
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name_ja\n072037,郡山市\n", encoding="utf-8")
    proc = await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "app.cli", "municipalities", "import",
                                                    str(bad)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "072036" in proc.stderr and "line 2" in proc.stderr


async def test_codes_that_name_no_municipality_are_refused_at_every_entry(pool: asyncpg.Pool,
                                                                           settings: Settings) -> None:
    """``000001`` and 福島県's own ``070009`` pass the check digit but name no 市区町村, nor does ``479993``, not
    in the municipality list: an order, a hazard area, a webhook, an account (and a filter, for the first two)
    given one is refused, saying why, and nothing is stored."""
    async with pool.acquire() as conn:
        await create_account(conn, username="pref-admin", password=PASSWORD, role="admin")
        token = (await login(conn, "pref-admin", PASSWORD))[0]  # type: ignore[index]
        for code in ("000001", "070009"):
            with pytest.raises(AccountError, match="municipality"):
                await create_account(conn, username=f"acct{code}", password=PASSWORD, role="staff",
                                     municipality_code=code)
        before = {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                  for t in ("evacuation_orders", "hazard_areas", "webhooks")}
    square = {"type": "Polygon", "coordinates": [[[140.3, 37.3], [140.31, 37.3], [140.31, 37.31], [140.3, 37.31],
                                                  [140.3, 37.3]]]}
    async with pool.acquire() as conn:
        await seed_if_empty(conn)  # the deployment's municipality list (the shipped one)
        with pytest.raises(AccountError, match="not in this deployment's municipality list"):
            await create_account(conn, username="acct479993", password=PASSWORD, role="staff",
                                 municipality_code="479993")
    client: TestClient = await make_client(pool, settings)
    try:
        # 479993: a right check digit in 沖縄県, but no municipality of the list (found breaking the first fix)
        for code, words in (("000001", "no prefecture"), ("070009", "code of a prefecture"),
                            ("479993", "not in this deployment's municipality list")):
            for path, body in (("/api/v1/orders", {"municipality_code": code, "level": 3}),
                               ("/api/v1/hazards", {"geometry": square, "municipality_code": code}),
                               ("/api/v1/webhooks", {"url": "https://example.org/hook", "municipality_code": code})):
                resp = await client.post(path, json=body, headers=auth(token))
                problem = await resp.json(content_type=None)
                assert resp.status in (400, 422) and words in problem["detail"], (path, code, problem)
            if code == "479993":
                continue  # a filter on a municipality that is not listed is no fault: it lists nothing
            for path in ("/api/v1/level", "/api/v1/alerts", "/api/v1/stations", "/api/v1/shelters"):
                resp = await client.get(path, params={"municipality": code})
                problem = await resp.json(content_type=None)
                assert resp.status == 400 and words in problem["detail"], (path, code, problem)
    finally:
        await client.close()
    async with pool.acquire() as conn:
        assert {t: await conn.fetchval(f"SELECT count(*) FROM {t}")
                for t in before} == before
