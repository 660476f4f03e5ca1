"""The NGSI-LD view on a real database: every entity validates against its Smart Data Model offline and
expands as JSON-LD (pyld, local contexts only); a gauge matches /api/v1/stations and its readings; near
queries against a haversine oracle; an alert raised through the real rules worker appears as an Alert."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from alerting.store import issue_order
from api.auth import create_account, login
from ingest.contract import Reading
from ingest.rollups import refresh_rollups
from ingest.store import write_batch
from ngsi import context as ctx
from tests.alerting.support import running_worker
from tests.ingest_support import wait_until
from tests.ngsi.support import CENTRE, offline_loader, seed


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on a sphere of the WGS 84 mean radius (the test's own oracle)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_008.8 * math.asin(math.sqrt(a))


async def test_every_entity_validates_and_expands(client: TestClient, pool: asyncpg.Pool, sdm: Any) -> None:
    from pyld import jsonld

    await seed(pool)
    lat, lon = CENTRE
    area = {"type": "Polygon", "coordinates": [[[lon - 0.02, lat - 0.02], [lon + 0.02, lat - 0.02],
                                                [lon + 0.02, lat + 0.02], [lon - 0.02, lat - 0.02]]]}
    async with pool.acquire() as conn:  # an evacuation order (避難指示) over an area: an Alert with a Polygon
        await issue_order(conn, municipality_code="072036", level=4, issued_by="kawa", area=area, note="内部メモ")
    resp = await client.get("/ngsi-ld/v1/entities", params={
        "type": "WaterObserved,PointOfInterest,Alert,MunicipalityWarningLevel", "options": "keyValues",
        "limit": "1000"}, headers={"Accept": "application/ld+json"})
    assert resp.status == 200 and resp.content_type == "application/ld+json"
    entities = await resp.json()
    types = [e["type"] for e in entities]
    assert types.count("WaterObserved") == 4  # the gauge without a position is left out
    assert types.count("PointOfInterest") == 7 and types.count("MunicipalityWarningLevel") == 1
    (order,) = [e for e in entities if e["type"] == "Alert"]
    assert order["location"] == area and order["warningLevel"] == 4 and order["alertCondition"] == "evacuation_order"
    assert "kawa" not in json.dumps(entities, ensure_ascii=False) and "内部メモ" not in json.dumps(entities)
    base = f"http://{client.host}:{client.port}"
    loader = offline_loader(base)
    for e in entities:
        assert e["@context"] == ctx.context_url(base)
        if e["type"] != "MunicipalityWarningLevel":  # Sonae's own type: no SDM model
            assert sdm.errors(e["type"], e) == [], e
        expanded = jsonld.expand(e, {"documentLoader": loader})
        node = expanded[0]
        assert node["@id"] == e["id"]
        for term in e:
            if term in ("@context", "id", "type"):
                continue
            # every term maps to an absolute IRI: none dropped, none left relative
            assert any(k.endswith("/" + term) or k.endswith("#" + term) or k.endswith(":" + term)
                       or k.startswith("https://") for k in node), (term, list(node))
        assert len([k for k in node if not k.startswith("@")]) == len([k for k in e if k not in (
            "@context", "id", "type")]), (e, node)
    # application/json: no @context in the body, a Link header instead
    resp = await client.get("/ngsi-ld/v1/entities", params={"type": "PointOfInterest", "limit": "2"})
    assert resp.content_type == "application/json"
    assert resp.headers["Link"] == ctx.link_header(base)
    body = await resp.json()
    assert len(body) == 2 and all("@context" not in e for e in body)
    assert body[0]["occupancy"] == {"type": "Property", "value": 0}  # normalized by default
    assert body[0]["location"]["type"] == "GeoProperty"


async def test_gauge_and_temporal_match_the_stations_api(client: TestClient, pool: asyncpg.Pool) -> None:
    now = await seed(pool)
    station = await (await client.get("/api/v1/stations/g1")).json()
    resp = await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:WaterObserved:g1", params={"options": "keyValues"})
    assert resp.status == 200
    e = await resp.json()
    assert e["waterLevel"] == e["riverLevel"] == station["latest"]["value"]
    assert e["dateObserved"] == station["latest"]["ts"]
    assert e["location"]["coordinates"] == [station["location"]["lon"], station["location"]["lat"]]
    assert {k: e[t] for k, t in (("standby", "standbyWaterLevel"), ("caution", "cautionWaterLevel"),
                                 ("evacuation", "evacuationWaterLevel"), ("danger", "dangerWaterLevel"))} \
        == station["thresholds"]
    start, end = now - timedelta(hours=3), now + timedelta(minutes=1)
    readings = (await (await client.get("/api/v1/stations/g1/readings", params={
        "from": start.isoformat(), "to": end.isoformat()})).json())["readings"]
    resp = await client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WaterObserved:g1", params={
        "timerel": "between", "timeAt": start.isoformat(), "endTimeAt": end.isoformat(),
        "options": "temporalValues"})
    assert resp.status == 200
    values = (await resp.json())["riverLevel"]["values"]
    assert values == [[r["value"], r["ts"]] for r in readings] and len(values) == 18
    resp = await client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WaterObserved:g1", params={"lastN": "3"})
    assert [v["value"] for v in (await resp.json())["riverLevel"]] == [r["value"] for r in readings[-3:]]
    # aggregated: the rollups the stations API reads with bucket=1h, recomputed from raw rows as well
    async with pool.acquire() as conn:
        await refresh_rollups(conn)  # what housekeeping does (plain PostgreSQL and TimescaleDB)
    rolled = (await (await client.get("/api/v1/stations/g1/readings", params={
        "from": start.isoformat(), "to": end.isoformat(), "bucket": "1h"})).json())["readings"]
    resp = await client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WaterObserved:g1", params={
        "timerel": "between", "timeAt": start.isoformat(), "endTimeAt": end.isoformat(),
        "aggrMethods": "max,min,totalCount", "aggrPeriodDuration": "PT1H"})
    assert resp.status == 200
    agg = (await resp.json())["riverLevel"]
    assert [m[0] for m in agg["max"]] == [r["max"] for r in rolled]
    assert [m[1] for m in agg["min"]] == [r["bucket"] for r in rolled]
    raw_by_hour: dict[str, list[float]] = {}
    for r in readings:
        hour = datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).replace(minute=0, second=0)
        if hour >= start:  # a rollup bucket counts when it starts inside the window (as bucket= does)
            raw_by_hour.setdefault(hour.isoformat().replace("+00:00", "Z"), []).append(r["value"])
    assert {m[1]: m[0] for m in agg["totalCount"]} == {h: len(v) for h, v in raw_by_hour.items()}


async def test_near_and_within_match_a_haversine_oracle(client: TestClient, pool: asyncpg.Pool) -> None:
    await seed(pool)
    lat, lon = CENTRE
    resp = await client.get("/ngsi-ld/v1/entities", params={
        "type": "WaterObserved,PointOfInterest", "georel": "near;maxDistance==2000", "geometry": "Point",
        "coordinates": json.dumps([lon, lat]), "options": "keyValues", "limit": "1000", "count": "true"})
    assert resp.status == 200
    got = {e["id"] for e in await resp.json()}
    everything = await (await client.get("/ngsi-ld/v1/entities", params={
        "type": "WaterObserved,PointOfInterest", "options": "keyValues", "limit": "1000"})).json()
    distances = {e["id"]: haversine_m(lat, lon, e["location"]["coordinates"][1], e["location"]["coordinates"][0])
                 for e in everything}
    assert all(abs(d - 2000) > 20 for d in distances.values()), "a place too close to the edge for the oracle"
    assert got == {i for i, d in distances.items() if d <= 2000}
    assert resp.headers["NGSILD-Results-Count"] == str(len(got)) and 0 < len(got) < len(everything)
    box = [[[lon - 0.01, lat - 0.01], [lon + 0.01, lat - 0.01], [lon + 0.01, lat + 0.01], [lon - 0.01, lat + 0.01],
            [lon - 0.01, lat - 0.01]]]
    inside = await (await client.get("/ngsi-ld/v1/entities", params={
        "type": "PointOfInterest", "georel": "within", "geometry": "Polygon", "coordinates": json.dumps(box),
        "options": "keyValues"})).json()
    assert {e["id"] for e in inside} == {e["id"] for e in everything if e["type"] == "PointOfInterest"
                                         and abs(e["location"]["coordinates"][0] - lon) <= 0.01
                                         and abs(e["location"]["coordinates"][1] - lat) <= 0.01}


async def test_q_paging_errors_and_access(client: TestClient, pool: asyncpg.Pool, sdm: Any) -> None:
    now = await seed(pool)
    resp = await client.get("/ngsi-ld/v1/entities", params={
        "type": "PointOfInterest", "q": 'shelterStatus=="open";occupancy>=2', "options": "keyValues"})
    assert sorted(e["id"] for e in await resp.json()) == [f"urn:ngsi-ld:PointOfInterest:s{i}" for i in (2, 4, 5, 6)]
    resp = await client.get("/ngsi-ld/v1/entities", params={"type": "PointOfInterest", "q": "!capacity|occupancy==0",
                                                            "options": "keyValues"})
    assert sorted(e["id"] for e in await resp.json()) == [f"urn:ngsi-ld:PointOfInterest:s{i}" for i in (0, 1, 3, 5)]
    page = await (await client.get("/ngsi-ld/v1/entities", params={"type": "PointOfInterest", "limit": "3",
                                                                   "offset": "5"})).json()
    assert [e["id"] for e in page] == ["urn:ngsi-ld:PointOfInterest:s5", "urn:ngsi-ld:PointOfInterest:s6"]
    resp = await client.get("/ngsi-ld/v1/entities", params={
        "id": "urn:ngsi-ld:WaterObserved:g1,urn:ngsi-ld:PointOfInterest:s1,urn:ngsi-ld:Device:g0"})
    assert [e["id"] for e in await resp.json()] == ["urn:ngsi-ld:WaterObserved:g1", "urn:ngsi-ld:PointOfInterest:s1"]
    resp = await client.get("/ngsi-ld/v1/entities", params={"type": "PointOfInterest", "idPattern": r"s[0-2]$"})
    assert [e["id"] for e in await resp.json()] == [f"urn:ngsi-ld:PointOfInterest:s{i}" for i in (0, 1, 2)]
    for params in ({"type": "WaterObserved", "q": "location.coordinates==1"}, {"q": "a==("},
                   {"type": "PointOfInterest", "idPattern": r"(s)\1"},
                   {"type": "WaterObserved", "georel": "equals", "geometry": "Point", "coordinates": "[140,37]"}):
        resp = await client.get("/ngsi-ld/v1/entities", params=params)
        assert resp.status == 400, params
        assert (await resp.json())["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    # georel=near with a polygon: each parameter valid, together not (422, still BadRequestData)
    resp = await client.get("/ngsi-ld/v1/entities", params={
        "georel": "near;maxDistance==10", "geometry": "Polygon",
        "coordinates": "[[[140.4,37.7],[140.5,37.7],[140.5,37.8],[140.4,37.7]]]"})
    assert resp.status == 422 and (await resp.json())["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    # no filter at all: every public entity, a page at a time
    every = await (await client.get("/ngsi-ld/v1/entities", params={"limit": "1000"})).json()
    first = await (await client.get("/ngsi-ld/v1/entities")).json()
    assert {e["type"] for e in every} >= {"WaterObserved", "PointOfInterest"} and "Device" not in {
        e["type"] for e in every}
    assert [e["id"] for e in first] == [e["id"] for e in every][:len(first)] and len(first) == min(20, len(every))
    base = f"http://{client.host}:{client.port}"
    for context, status in ((ctx.context_url(base), 200), (ctx.SDM_CONTEXTS[3], 200),
                            ("https://smart-data-models.github.io/dataModel.PointOfInterest/context.jsonld", 200),
                            ("https://example.org/my-context.jsonld", 503)):
        resp = await client.get("/ngsi-ld/v1/entities", params={"type": "PointOfInterest"}, headers={
            "Link": f'<{context}>; rel="{ctx.LINK_REL}"; type="application/ld+json"'})
        assert resp.status == status, context
    assert (await resp.json())["type"] == "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable"
    resp = await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:WaterObserved:absent")
    assert resp.status == 404
    assert (await resp.json())["type"] == "https://uri.etsi.org/ngsi-ld/errors/ResourceNotFound"
    assert (await client.get("/ngsi-ld/v1/entities", params={"type": "Device"})).status == 401
    assert (await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:g0")).status == 401
    assert (await client.get("/ngsi-ld/v1/entities", params={"type": "PointOfInterest"},
                             headers={"Accept": "text/html"})).status == 406
    async with pool.acquire() as conn:
        await create_account(conn, username="kawa", password="kawa-password-1", role="staff",
                             municipality_code="072036")
        token, _, _ = await login(conn, "kawa", "kawa-password-1")  # type: ignore[misc]
    resp = await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:g0", params={"options": "keyValues"},
                            headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    device = await resp.json()
    assert sdm.errors("Device", device) == []
    assert (device["batteryLevel"], device["rssi"], device["deviceState"]) == (0.87, -71.0, "ok")
    assert device["dateLastValueReported"] == now.isoformat().replace("+00:00", "Z")
    # its history shows the values the entity shows (57 % is 0.57, not 57 × 0.01 = 0.5700000000000001)
    async with pool.acquire() as conn:
        await write_batch(conn, [Reading("g0", "battery_pct", now + timedelta(seconds=1), 57.0)])
    shown = (await (await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:g0", params={"options": "keyValues"},
                                     headers={"Authorization": f"Bearer {token}"})).json())["batteryLevel"]
    history = (await (await client.get("/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Device:g0", params={
        "lastN": "2", "attrs": "batteryLevel"}, headers={"Authorization": f"Bearer {token}"})).json())["batteryLevel"]
    assert shown == 0.57 and [v["value"] for v in history] == [0.87, shown]
    # staff of another municipality do not see the device at all (as if it did not exist)
    async with pool.acquire() as conn:  # (an account names a municipality of the deployment's list)
        await conn.execute("INSERT INTO municipalities (code, name_ja) VALUES ('072010', '福島市') ON CONFLICT DO NOTHING")
        await create_account(conn, username="yama", password="yama-password-1", role="staff",
                             municipality_code="072010")
        other, _, _ = await login(conn, "yama", "yama-password-1")  # type: ignore[misc]
    resp = await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:g0", headers={"Authorization": f"Bearer {other}"})
    assert resp.status == 404
    listed = await (await client.get("/ngsi-ld/v1/entities", params={"type": "Device"},
                                     headers={"Authorization": f"Bearer {other}"})).json()
    assert listed == []


async def test_alert_from_the_rules_worker_is_an_alert_entity(client: TestClient, pool: asyncpg.Pool,
                                                              sdm: Any) -> None:
    now = await seed(pool)
    async with running_worker(pool):
        async with pool.acquire() as conn:
            # a gauge rising at a plausible rate (5.4 m/h < 6 m/h) through every threshold past 氾濫危険水位
            await write_batch(conn, [Reading("g2", "level", now + timedelta(minutes=1 + 10 * k), 2.2 + 0.9 * k)
                                     for k in range(7)])

        async def raised() -> Any:  # the database is the synchronisation point (the API is rate limited)
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT count(*) FROM alerts WHERE station_id = 'g2' AND "
                                           "audience = 'public' AND cleared_at IS NULL AND level = 4")

        await wait_until(raised, timeout=120, what="a public level-4 alert for g2")
    resp = await client.get("/ngsi-ld/v1/entities", params={"type": "Alert", "options": "keyValues"})
    assert resp.status == 200
    alerts = [e for e in await resp.json() if e.get("alertSource") == "urn:ngsi-ld:WaterObserved:g2"]
    assert len(alerts) == 1
    a = alerts[0]
    assert sdm.errors("Alert", a) == []
    assert a["warningLevel"] == 4 and a["severity"] == "high" and a["subCategory"] == "flood"
    cap = await client.get(a["capDocument"].replace(f"http://{client.host}:{client.port}", ""))
    assert cap.status == 200 and a["capIdentifier"].encode() in await cap.read()
    assert "acknowledged_by" not in json.dumps(a) and "issued_by" not in json.dumps(a)
    gauge = await (await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:WaterObserved:g2",
                                    params={"options": "keyValues"})).json()
    assert gauge["warningLevel"] == 4
    town = await (await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:MunicipalityWarningLevel:072036",
                                    params={"options": "keyValues"})).json()
    assert town["warningLevel"] == 4


async def test_an_unconfirmed_spike_never_becomes_an_entity(client: TestClient, pool: asyncpg.Pool) -> None:
    now = await seed(pool)
    async with running_worker(pool):
        async with pool.acquire() as conn:  # +6 m in ten minutes: beyond the plausible rate
            await write_batch(conn, [Reading("g3", "level", now + timedelta(minutes=1), 7.5)])

        async def unconfirmed() -> Any:
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT count(*) FROM alerts WHERE station_id = 'g3' AND "
                                           "condition = 'river_level_unconfirmed' AND cleared_at IS NULL")

        await wait_until(unconfirmed, timeout=120, what="an unconfirmed alert for g3")
    body = await (await client.get("/ngsi-ld/v1/entities", params={
        "type": "Alert,WaterObserved,MunicipalityWarningLevel", "options": "keyValues", "limit": "1000"})).json()
    assert [e for e in body if e["type"] == "Alert"] == []
    assert all("warningLevel" not in e for e in body)
    assert "river_level_unconfirmed" not in json.dumps(body)


async def test_coordinates_nested_deeper_than_json_reads_are_a_readable_400(client: TestClient) -> None:
    """``coordinates`` of 1,200 nested brackets (deeper than json reads; a longer request line is refused by
    the server first): 400 BadRequestData naming the parameter, never a 500 (ngsi.query.parse_geo refuses it
    too, tests/test_deep_geojson.py)."""
    deep = "[" * 1200 + "]" * 1200
    resp = await client.get(f"/ngsi-ld/v1/entities?georel=intersects&geometry=Polygon&coordinates={deep}")
    assert resp.status == 400, await resp.text()
    problem = await resp.json()
    assert problem["type"] == "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    assert "coordinates" in problem["detail"], problem
