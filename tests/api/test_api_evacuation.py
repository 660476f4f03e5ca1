"""Residents' evacuation endpoints on a real database and a generated drill town.

The engine runs inside the API process as in production (evac/service.py): loaded at startup,
reloaded on pg_notify('sonae_evac') / ('sonae_alerts'). Tests synchronise on the service's own events
(loaded, route-safety events), never on sleeps.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import shapely
from aiohttp.test_utils import TestClient
from shapely.geometry import LineString, Point, shape

import evac.service as evac_service
from api.app import create_app
from api.evacuation import EVAC
from evac import store
from evac.drilltown import DrillTown, generate
from evac.service import EvacService
from evac.shelters import load_shelters_csv
from sonae.config import Settings
from tests.api_support import start_client

WAIT_S = 180.0  # waits end as soon as their event comes; graph building is slow on a loaded machine


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> DrillTown:
    return generate(tmp_path_factory.mktemp("town"), rows=20, cols=20, seed=11)


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state directory for the module, so the network is built once and then read from its cache."""
    return tmp_path_factory.mktemp("evac-state")


async def _ready(client: TestClient) -> EvacService:
    service = client.app[EVAC]
    await asyncio.wait_for(service.loaded.wait(), WAIT_S)
    return service


@pytest.fixture
async def seeded(pool: asyncpg.Pool, town: DrillTown) -> asyncpg.Pool:
    async with pool.acquire() as conn:
        await store.import_shelters_file(conn, town.shelters, actor="test")
        await store.import_hazard_file(conn, town.hazards, actor="test")
    return pool


@pytest.fixture
async def client(seeded: asyncpg.Pool, settings: Settings, town: DrillTown,
                 shared_state: Path) -> AsyncIterator[TestClient]:
    s = settings.replace(evac__network=str(town.osm), state__dir=str(shared_state))
    c = await start_client(create_app(pool=seeded, settings=s))
    try:
        await _ready(c)
        yield c
    finally:
        await c.close()


def _center(service: EvacService) -> tuple[float, float]:
    w, s, e, n = service.map.bounds  # type: ignore[union-attr]
    return (s + n) / 2, (w + e) / 2


def _origins(service: EvacService) -> list[tuple[float, float]]:
    """Positions spread over the town (between streets), away from the river."""
    w, s, e, n = service.map.bounds  # type: ignore[union-attr]
    out = []
    for fy in (0.12, 0.3, 0.75, 0.9):
        for fx in (0.13, 0.48, 0.86):
            out.append((s + (n - s) * fy + 0.00011, w + (e - w) * fx + 0.00017))
    return out


async def _route(client: TestClient, lat: float, lon: float, **params: Any) -> dict[str, Any]:
    resp = await client.get("/api/v1/route", params={"lat": str(lat), "lon": str(lon), **params})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/geo+json"
    assert resp.headers["Cache-Control"] == "no-store"
    return await resp.json(content_type=None)


# -- startup and readiness ---------------------------------------------------------------------------
async def test_drilltown_by_default_and_readiness_after_load(
    pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    real_load = evac_service.load_network

    def gated_load(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(WAIT_S)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(evac_service, "load_network", gated_load)
    c = await start_client(create_app(pool=pool, settings=settings.replace(evac__network="drilltown")))
    try:
        resp = await c.get("/readyz")
        assert resp.status == 503
        assert (await resp.json())["checks"]["evac graph"] == "not ready"
        resp = await c.get("/api/v1/route", params={"lat": "37.4", "lon": "140.36"})
        assert resp.status == 503
        assert resp.content_type == "application/problem+json" and resp.headers["Retry-After"] == "5"
        release.set()
        service = await _ready(c)
        resp = await c.get("/readyz")
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["checks"]["evac graph"] == "ok"
        # the drill town was generated into the state directory and its data imported
        assert (settings.state_dir / "evac" / "drilltown" / "town.osm").exists()
        assert service.network is not None and 2000 <= service.network.n_nodes <= 5000
        async with pool.acquire() as conn:
            assert await store.count_shelters(conn) > 20
            areas = await store.hazard_area_rows(conn)
            # and the town is named where its code is joined to a name (before: shown as 079995)
            named = await conn.fetchrow("SELECT name_ja, name_en FROM municipalities WHERE code = '079995'")
        assert areas and all(a["source"] == "gauge" and a["exercise"] for a in areas)
        assert named is not None and (named["name_ja"], named["name_en"]) == ("訓練町", "Kunren Town (drill)")
        lat, lon = _center(service)
        body = await _route(c, lat + 0.004, lon + 0.0031)
        assert body["properties"]["status"] == "ok"
    finally:
        release.set()
        await c.close()


async def test_no_network_configured_answers_503_and_stays_ready(pool: asyncpg.Pool, settings: Settings) -> None:
    c = await start_client(create_app(pool=pool, settings=settings))  # evac.network unset
    try:
        resp = await c.get("/api/v1/route", params={"lat": "37.4", "lon": "140.36"})
        assert resp.status == 503
        assert "not configured" in (await resp.json())["detail"]
        resp = await c.get("/readyz")
        assert "evac graph" not in (await resp.json())["checks"]
    finally:
        await c.close()


# -- routes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("hazard", ["flood", "landslide", "earthquake"])
async def test_route_ends_at_a_shelter_rated_for_the_hazard(client: TestClient, pool: asyncpg.Pool,
                                                             hazard: str) -> None:
    service = client.app[EVAC]
    async with pool.acquire() as conn:
        shelters = {r["id"]: r for r in await store.shelter_rows(conn)}
    net = service.network
    assert net is not None
    ok = 0
    for lat, lon in _origins(service):
        body = await _route(client, lat, lon, hazard=hazard, lang="en")
        props = body["properties"]
        if props["status"] != "ok":
            assert props["status"] == "no_safe_route"
            continue
        ok += 1
        shelter = props["shelter"]
        row = shelters[shelter["id"]]
        assert hazard in row["hazards"] and hazard in shelter["hazards"]
        # the line runs from the (rounded) position to the shelter itself (issue 13: roads, not nodes)
        end = body["geometry"]["coordinates"][-1]
        assert end == pytest.approx([row["lon"], row["lat"]], abs=1e-6)
        assert body["geometry"]["coordinates"][0] == pytest.approx([round(lon, 4), round(lat, 4)], abs=1e-7)
        assert props["guidance"].startswith("Evacuate to ")
        assert props["duration_s"] >= 0 and props["steps"][-1]["type"] == "arrive"
        # no other qualifying shelter is closer than the one chosen (by the engine's own field)
        others = await (await client.get("/api/v1/shelters/nearest", params={
            "lat": str(lat), "lon": str(lon), "hazard": hazard, "k": "3"})).json()
        assert others["shelters"][0]["shelter"]["id"] == shelter["id"]
        assert [o["duration_s"] for o in others["shelters"]] == sorted(o["duration_s"] for o in others["shelters"])
        assert all(hazard in o["shelter"]["hazards"] for o in others["shelters"])
    assert ok >= 6


async def test_language_from_parameter_and_accept_language(client: TestClient) -> None:
    lat, lon = _origins(client.app[EVAC])[0]
    resp = await client.get("/api/v1/route", params={"lat": str(lat), "lon": str(lon)},
                            headers={"Accept-Language": "fr;q=1, en-GB;q=0.9, ja;q=0.5"})
    assert (await resp.json(content_type=None))["properties"]["guidance"].startswith("Evacuate")
    body = await _route(client, lat, lon, lang="ja-easy")
    assert "に にげて ください" in body["properties"]["guidance"]
    resp = await client.get("/api/v1/route", params={"lat": str(lat), "lon": str(lon)})
    assert "避難してください" in (await resp.json(content_type=None))["properties"]["guidance"]


def _block_across(line: list[list[float]], origin: tuple[float, float]) -> shapely.Polygon:
    """A small square over the middle of a route, away from its ends and from the resident."""
    coords = line[len(line) // 2]
    box = Point(coords).buffer(0.00025, cap_style="square")
    assert not box.contains(Point(line[0])) and not box.contains(Point(line[-1]))
    assert not box.contains(Point(origin[1], origin[0]))
    return box


async def test_hazard_area_added_across_the_route_is_avoided(client: TestClient, pool: asyncpg.Pool) -> None:
    service = client.app[EVAC]
    lat, lon = next(o for o in _origins(service) if o[0] > _center(service)[0])
    before = await _route(client, lat, lon)
    assert before["properties"]["status"] == "ok"
    line = before["geometry"]["coordinates"]
    assert len(line) >= 5, "the test needs a route of several segments"
    box = _block_across(line, (lat, lon))
    assert LineString(line).intersects(box)

    events = service.subscribe()
    listener = await pool.acquire()
    notified: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def on_notify(*args: Any) -> None:
        notified.put_nowait(json.loads(args[3]))

    await listener.add_listener("sonae_evac", on_notify)
    sse = await client.get("/api/v1/events")  # a resident page's live stream
    assert sse.status == 200

    async def sse_hazard_event() -> dict[str, Any]:
        while True:
            line = await sse.content.readline()
            if line.startswith(b"event: hazard_state"):
                data = await sse.content.readline()
                return dict(json.loads(data.decode()[len("data: "):]))

    try:
        async with pool.acquire() as conn:
            area = store.hazard_area(hazard="flood", geometry=box, label="冠水した道路", source="staff")
            await store.add_hazard_area(conn, area, actor="staff:test", municipality_code="079995")
        event = await asyncio.wait_for(events.get(), WAIT_S)
        assert event["type"] == "hazard_state"
        pushed = await asyncio.wait_for(sse_hazard_event(), WAIT_S)
        assert pushed["version"] == event["version"], "the SSE stream tells pages to refresh their route"
        assert event["version"] > before["properties"]["hazard_version"]
        # the change itself and the route-safety event went out on sonae_evac
        seen = [await asyncio.wait_for(notified.get(), WAIT_S) for _ in range(2)]
        assert {"kind": "hazard_area", "id": area.id} in seen
        assert any(p.get("type") == "hazard_state" and p["version"] == event["version"] for p in seen)

        after = await _route(client, lat, lon)
        assert after["properties"]["hazard_version"] == event["version"]
        assert after["properties"]["status"] == "ok"
        assert not LineString(after["geometry"]["coordinates"]).intersects(box)
        assert after["properties"]["duration_s"] >= before["properties"]["duration_s"]

        hazards = await (await client.get("/api/v1/hazards")).json(content_type=None)
        mine = [f for f in hazards["features"] if f["id"] == area.id]
        assert mine and mine[0]["properties"]["exercise"] is False and mine[0]["properties"]["in_force"]
        assert hazards["hazard_version"] == event["version"]

        # removing it brings the original route back
        async with pool.acquire() as conn:
            assert await store.remove_hazard_area(conn, area.id, actor="staff:test")
        event2 = await asyncio.wait_for(events.get(), WAIT_S)
        again = await _route(client, lat, lon)
        assert again["properties"]["hazard_version"] == event2["version"] > event["version"]
        assert again["geometry"]["coordinates"] == line
    finally:
        sse.close()
        service.unsubscribe(events)
        await listener.remove_listener("sonae_evac", on_notify)
        await pool.release(listener)


async def test_closed_shelter_is_not_a_destination(client: TestClient, pool: asyncpg.Pool) -> None:
    service = client.app[EVAC]
    lat, lon = _origins(service)[4]
    before = await _route(client, lat, lon)
    chosen = before["properties"]["shelter"]["id"]
    events = service.subscribe()
    try:
        async with pool.acquire() as conn:
            await store.set_shelter_state(conn, chosen, is_open=False, actor="staff:test")
        await asyncio.wait_for(events.get(), WAIT_S)
    finally:
        service.unsubscribe(events)
    after = await _route(client, lat, lon)
    assert after["properties"]["status"] in ("ok", "no_safe_route")
    assert (after["properties"].get("shelter") or {}).get("id") != chosen


async def test_drill_gauge_alert_activates_its_areas_only_for_exercise_routes(
    client: TestClient, pool: asyncpg.Pool
) -> None:
    from ingest.registry import Station, upsert_stations

    service = client.app[EVAC]
    rows = {r["id"]: r for r in await _area_rows(pool)}
    l3 = shape(rows["DT-G01-L3"]["geometry"])
    inside = l3.representative_point()
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="DT-G01", name="訓練川 第1水位観測所", municipality_code="079995",
                                             lat=inside.y, lon=inside.x, exercise=True)])
    real = await _route(client, inside.y, inside.x, exercise="true")
    assert real["properties"]["status"] != "inside_hazard"
    events = service.subscribe()
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """INSERT INTO alerts (station_id, condition, exercise, audience, municipality_code, level, max_level,
                                       state, raised_at, changed_at)
                   VALUES ('DT-G01', 'river_level', true, 'public', '079995', 3, 3, 'raised', now(), now())""")
            await conn.execute("SELECT pg_notify('sonae_alerts', '{}')")
        await asyncio.wait_for(events.get(), WAIT_S)
    finally:
        service.unsubscribe(events)
    drill = await _route(client, inside.y, inside.x, exercise="true", lang="en")
    assert drill["properties"]["status"] == "inside_hazard"
    assert drill["properties"]["guidance"].startswith("[EXERCISE]")
    assert [a["id"] for a in drill["properties"]["hazard_areas"]] == ["DT-G01-L3"]
    # a drill never changes real routes
    assert (await _route(client, inside.y, inside.x))["properties"]["status"] != "inside_hazard"
    hazards = await (await client.get("/api/v1/hazards")).json(content_type=None)
    assert [f["id"] for f in hazards["features"]] == ["DT-G01-L3"]
    assert hazards["features"][0]["properties"]["exercise"] is True


async def _area_rows(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return await store.hazard_area_rows(conn)


# -- validation and privacy --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status", "parameter"),
    [
        ("/api/v1/route?lon=140.36", 400, "lat"),
        ("/api/v1/route?lat=abc&lon=140.36", 400, "lat"),
        ("/api/v1/route?lat=91&lon=140.36", 400, "lat"),
        ("/api/v1/route?lat=nan&lon=140.36", 400, "lat"),
        ("/api/v1/route?lat=37.4&lon=181", 400, "lon"),
        ("/api/v1/route?lat=37.4&lon=140.36&hazard=zombies", 400, "hazard"),
        ("/api/v1/route?lat=37.4&lon=140.36&profile=bicycle", 400, "profile"),
        ("/api/v1/route?lat=37.4&lon=140.36&lang=de", 400, "lang"),
        ("/api/v1/route?lat=37.4&lon=140.36&exercise=maybe", 400, "exercise"),
        ("/api/v1/route?lat=35.68&lon=139.76", 422, "lat,lon"),
        ("/api/v1/shelters/nearest?lat=37.4&lon=140.36&k=0", 400, "k"),
        ("/api/v1/shelters/nearest?lat=37.4&lon=140.36&k=11", 400, "k"),
        ("/api/v1/shelters/nearest?lat=37.4&lon=140.36&k=two", 400, "k"),
        ("/api/v1/shelters/nearest?lat=-95&lon=140.36", 400, "lat"),
        ("/api/v1/shelters?format=xlsx", 400, "format"),
        ("/api/v1/shelters?municipality=abc", 400, "municipality"),
        ("/api/v1/shelters?hazard=meteor", 400, "hazard"),
        ("/api/v1/shelters?bbox=140.4,37.3,140.3,37.5", 400, "bbox"),
        ("/api/v1/shelters?bbox=140.3,37.3,nan,37.5", 400, "bbox"),
        ("/api/v1/shelters?bbox=1,2,3", 400, "bbox"),
        ("/api/v1/shelters?limit=0", 400, "limit"),
        ("/api/v1/shelters?limit=ten", 400, "limit"),
        ("/api/v1/shelters?limit=99999999999999999999", 400, "limit"),
        ("/api/v1/shelters?q=" + "x" * 101, 400, "q"),
        ("/api/v1/hazards?exercise=perhaps", 400, "exercise"),
        ("/api/v1/network.geojson?bbox=1,2,3", 400, "bbox"),
        ("/api/v1/network.geojson?bbox=140.4,37.3,140.3,37.5", 400, "bbox"),
        ("/api/v1/network.geojson?bbox=139,37,141,38", 400, "bbox"),
    ],
)
async def test_bad_parameters_get_problem_json(client: TestClient, path: str, status: int, parameter: str) -> None:
    resp = await client.get(path)
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["status"] == status and body["parameter"] == parameter
    assert parameter.split(",")[0] in body["detail"] or "service area" in body["detail"]


async def test_resident_position_never_logged(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    lat, lon = _origins(client.app[EVAC])[2]
    lat, lon = round(lat, 7) + 0.0000013, round(lon, 7) + 0.0000017
    lat_s, lon_s = f"{lat:.7f}", f"{lon:.7f}"
    caplog.set_level(logging.DEBUG)
    for name in ("", "aiohttp", "aiohttp.access", "aiohttp.server", "sonae", "asyncio", "asyncpg"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        for path in ("/api/v1/route", "/api/v1/shelters/nearest"):
            for extra in ({}, {"lang": "en", "profile": "car"}, {"hazard": "bad"}, {"k": "99"}):
                await client.get(path, params={"lat": lat_s, "lon": lon_s, **extra})
        await client.get("/api/v1/route", params={"lat": lat_s + "x", "lon": lon_s})
        await client.get("/api/v1/route", params={"lat": "-" + lat_s, "lon": lon_s})  # outside the service area
        await client.get("/api/v1/route", params={"lat": "95." + lat_s[3:], "lon": lon_s})
        await client.get("/api/v1/route", params={"lat": lat_s, "lon": "-" + lon_s})
    finally:
        for name in ("aiohttp", "aiohttp.access", "aiohttp.server", "sonae", "asyncio", "asyncpg"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    assert any(r.name.startswith("aiohttp.access") for r in caplog.records), "the access log was not captured"
    fragments = {lat_s[:7], lon_s[:8], lat_s[-5:], lon_s[-5:]}
    for record in caplog.records:
        text = record.getMessage() + " " + " ".join(str(v) for v in record.__dict__.values())
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        for frag in fragments:
            assert frag not in text, f"{record.name} logged part of the position"


# -- open data ---------------------------------------------------------------------------------------
async def test_shelters_geojson_and_csv(client: TestClient, pool: asyncpg.Pool, tmp_path: Path) -> None:
    async with pool.acquire() as conn:
        rows = await store.shelter_rows(conn)
    resp = await client.get("/api/v1/shelters")
    assert resp.status == 200 and resp.content_type == "application/geo+json"
    doc = await resp.json(content_type=None)
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == len(rows)
    f0 = doc["features"][0]
    assert f0["geometry"]["coordinates"] == [rows[0]["lon"], rows[0]["lat"]]
    assert f0["properties"]["name"] == rows[0]["name"]

    flood = await (await client.get("/api/v1/shelters", params={"hazard": "flood",
                                                               "municipality": "079995"})).json(content_type=None)
    expected = sorted(r["id"] for r in rows if "flood" in r["hazards"])
    assert sorted(f["id"] for f in flood["features"]) == expected and 0 < len(expected) < len(rows)
    none = await (await client.get("/api/v1/shelters", params={"municipality": "072036"})).json(content_type=None)
    assert none["features"] == []
    plain = await (await client.get("/api/v1/shelters", params={"format": "json"})).json()
    assert [x["id"] for x in plain["shelters"]] == [r["id"] for r in rows]
    assert plain["shelters"][0]["lat"] == rows[0]["lat"] and "is_open" in plain["shelters"][0]

    resp = await client.get("/api/v1/shelters", params={"format": "csv"})
    assert resp.status == 200 and resp.content_type == "text/csv" and resp.charset == "utf-8"
    text = await resp.text()
    assert text.startswith("\ufeff")  # a BOM, for Excel on Japanese Windows (api.csvexport); imports accept it
    table = list(csv.DictReader(io.StringIO(text.removeprefix("\ufeff"))))
    assert len(table) == len(rows)
    assert list(table[0]) == list(store.SHELTER_COLUMNS)
    # the CSV is importable again, and says the same
    path = tmp_path / "shelters.csv"
    path.write_text(text, encoding="utf-8")
    again = {s.id: s for s in load_shelters_csv(path)}
    for r in rows:
        s = again[r["id"]]
        assert (s.name, s.lat, s.lon, s.hazards, s.capacity) == (
            r["name"], r["lat"], r["lon"], frozenset(r["hazards"]), r["capacity"])


async def test_shelters_by_area_and_by_name_match_the_rows(client: TestClient, pool: asyncpg.Pool) -> None:
    """bbox, limit and q against the same rows filtered here (the oracle), never against fixed answers."""
    import math

    async with pool.acquire() as conn:
        rows = await store.shelter_rows(conn)
    lats = sorted(r["lat"] for r in rows)
    lons = sorted(r["lon"] for r in rows)
    box = (lons[len(lons) // 4], lats[len(lats) // 4], lons[3 * len(lons) // 4], lats[3 * len(lats) // 4])
    inside = sorted(r["id"] for r in rows if box[0] <= r["lon"] <= box[2] and box[1] <= r["lat"] <= box[3])
    assert 0 < len(inside) < len(rows)
    doc = await (await client.get("/api/v1/shelters", params={"bbox": ",".join(map(str, box))})).json(content_type=None)
    assert sorted(f["id"] for f in doc["features"]) == inside
    # with a limit: the ones nearest the box's centre
    cy, cx = (box[1] + box[3]) / 2, (box[0] + box[2]) / 2
    k = math.cos(math.radians(cy))

    def dist(r: dict[str, Any]) -> float:
        return (r["lat"] - cy) ** 2 + ((r["lon"] - cx) * k) ** 2

    near = sorted((r for r in rows if r["id"] in set(inside)), key=lambda r: (dist(r), r["id"]))[:3]
    got = await (await client.get("/api/v1/shelters", params={"bbox": ",".join(map(str, box)), "limit": "3"})
                 ).json(content_type=None)
    assert [f["id"] for f in got["features"]] == [r["id"] for r in near]
    # by name: a word of some names (the rarest word shared by several), prefix matches first, literal % and _
    word = rows[0]["name"][:2]
    named = [r for r in rows if word.lower() in r["name"].lower() or word.lower() in r["address"].lower()]
    found = await (await client.get("/api/v1/shelters", params={"q": word, "format": "json", "limit": "50"})).json()
    assert sorted(x["id"] for x in found["shelters"]) == sorted(r["id"] for r in named)[:50] or len(named) > 50
    assert {x["id"] for x in found["shelters"]} <= {r["id"] for r in named}
    starts = [x["name"].lower().startswith(word.lower()) for x in found["shelters"]]
    assert starts == sorted(starts, reverse=True), "names starting with the words come first"
    for literal in ("%", "_", "\\"):
        none = await (await client.get("/api/v1/shelters", params={"q": literal, "format": "json"})).json()
        assert [x["id"] for x in none["shelters"]] == sorted(
            r["id"] for r in rows if literal in r["name"] or literal in r["address"])


async def test_service_area_and_compressed_answers(client: TestClient) -> None:
    import gzip

    service = client.app[EVAC]
    body = await (await client.get("/api/v1/service")).json()
    assert body["service_area"] == [round(v, 6) for v in service.service_area]  # type: ignore[union-attr]
    assert "flood" in body["hazards"]
    # JSON answers are gzip-compressed when asked for, and say they vary by it; small ones are not
    plain = await client.get("/api/v1/shelters", headers={"Accept-Encoding": "identity"})
    raw = await plain.read()
    assert "Content-Encoding" not in plain.headers and len(raw) > 1024
    packed = await client.get("/api/v1/shelters", headers={"Accept-Encoding": "gzip, deflate, br"},
                              auto_decompress=False)
    assert packed.headers["Content-Encoding"] == "gzip" and "Accept-Encoding" in packed.headers["Vary"]
    zipped = await packed.read()
    assert gzip.decompress(zipped) == raw and len(zipped) < len(raw) / 3
    refused = await client.get("/api/v1/shelters", headers={"Accept-Encoding": "gzip;q=0, identity"},
                               auto_decompress=False)
    assert "Content-Encoding" not in refused.headers
    small = await client.get("/healthz", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert "Content-Encoding" not in small.headers
    # the event stream is never compressed: its first bytes arrive at once, as plain text
    async with client.get("/api/v1/events", headers={"Accept-Encoding": "gzip"}, auto_decompress=False) as events:
        assert events.status == 200 and "Content-Encoding" not in events.headers
        first = await asyncio.wait_for(events.content.readany(), WAIT_S)
        assert first.decode("utf-8")


async def test_network_geojson_bbox_bounded_and_cached(client: TestClient) -> None:
    service = client.app[EVAC]
    w, s, e, n = service.map.bounds  # type: ignore[union-attr]
    whole = await client.get("/api/v1/network.geojson")
    assert whole.status == 200 and whole.content_type == "application/geo+json"
    assert whole.headers["Content-Encoding"] == "gzip"  # the client asked for it (and decompresses)
    doc = await whole.json(content_type=None)
    assert doc["features"] and not doc["truncated"]
    assert {f["geometry"]["type"] for f in doc["features"]} == {"LineString"}
    # a quarter of the town: fewer lines, all touching the (grid-widened) box
    qw, qs, qe, qn = w, s, (w + e) / 2, (s + n) / 2
    part = await client.get("/api/v1/network.geojson", params={"bbox": f"{qw},{qs},{qe},{qn}"})
    pdoc = await part.json(content_type=None)
    assert 0 < len(pdoc["features"]) < len(doc["features"])
    bx, by, ex, ey = pdoc["bbox"]
    assert bx <= qw and by <= qs and ex >= qe and ey >= qn
    box = shapely.box(bx, by, ex, ey)
    assert all(LineString(f["geometry"]["coordinates"]).intersects(box) for f in pdoc["features"])
    etag = part.headers["ETag"]
    again = await client.get("/api/v1/network.geojson", params={"bbox": f"{qw},{qs},{qe},{qn}"},
                             headers={"If-None-Match": etag})
    assert again.status == 304
    # bounded: a small feature cap truncates, keeping the main roads
    assert service.map is not None
    service.map.MAX_FEATURES = 10
    service.map._cache.clear()
    small = await (await client.get("/api/v1/network.geojson")).json(content_type=None)
    assert small["truncated"] and len(small["features"]) == 10


async def test_listen_connection_lost_reconnects_and_catches_up(client: TestClient, pool: asyncpg.Pool) -> None:
    service = client.app[EVAC]
    old_pid = service.listen_pid
    version = service.engine.state.version  # type: ignore[union-attr]
    events = service.subscribe()
    try:
        async with pool.acquire() as conn:
            # a change nobody was told about (as if its NOTIFY was lost while the listener was down) ...
            await conn.execute("UPDATE shelters SET is_open = false WHERE id = (SELECT min(id) FROM shelters)")
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", old_pid)
        # ... is applied by the full reload after the reconnect
        event = await asyncio.wait_for(events.get(), WAIT_S)
    finally:
        service.unsubscribe(events)
    assert event["version"] == version + 1
    assert service.listen_pid != old_pid
    assert service.engine is not None and not next(iter(service.engine.state.shelters.values())).is_open


async def test_a_failed_update_is_tried_again_without_another_change(client: TestClient, pool: asyncpg.Pool,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload that fails for a reason other than the database (a damaged store file, a bug in an
    update) used to wait for the next NOTIFY or a reconnect: the process kept an old hazard state while
    its neighbours moved on. Now it tries again by itself (fault injected: the engine's next update
    raises once)."""
    service = client.app[EVAC]
    engine = service.engine
    assert engine is not None
    version = engine.state.version
    real_update = engine.update
    calls: list[int] = []

    def fails_once(**changes: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected: the update failed once")
        return real_update(**changes)

    monkeypatch.setattr(engine, "update", fails_once)
    events = service.subscribe()
    try:
        first = min(engine.state.shelters)
        async with pool.acquire() as conn:  # one change, one NOTIFY
            await store.set_shelter_state(conn, first, actor="test", is_open=False)
        event = await asyncio.wait_for(events.get(), WAIT_S)  # no other change or reconnect happens
    finally:
        service.unsubscribe(events)
    assert len(calls) == 2
    assert event["version"] == version + 1
    assert not service.engine.state.shelters[first].is_open


async def test_positions_on_the_service_areas_edge_are_answered(client: TestClient) -> None:
    """A position on the edge of the service area, given with 6 decimals (as /api/v1/service publishes the
    area) or rounded to 4 by the page, rounds onto or over the edge: it is in the area all the same, on
    every endpoint that takes a position (found: /api/v1/route answered 422 for such positions)."""
    service = client.app[EVAC]
    w, s, e, n = service.service_area  # type: ignore[misc]
    mid_lat, mid_lon = (s + n) / 2, (w + e) / 2
    published = await (await client.get("/api/v1/service")).json()
    pw, ps, pe, pn = published["service_area"]
    edges = [(mid_lat, pe), (mid_lat, pw), (pn, mid_lon), (ps, mid_lon), (pn, pe), (ps, pw),
             (mid_lat, round(e, 4)), (round(n, 4), mid_lon), (mid_lat, round(w, 4)), (round(s, 4), mid_lon),
             (mid_lat, round(e - 0.000049, 6)), (round(n - 0.000049, 6), mid_lon)]
    for lat, lon in edges:
        where = {"lat": f"{lat:.6f}", "lon": f"{lon:.6f}"}
        route = await client.get("/api/v1/route", params=where)
        assert route.status == 200, (where, await route.text())
        assert (await route.json(content_type=None))["properties"]["status"] != "outside_area", where
        nearest = await client.get("/api/v1/shelters/nearest", params=where)
        assert nearest.status == 200, (where, await nearest.text())
        assert (await nearest.json())["status"] != "outside_area", where
        assert (await client.get("/api/v1/level", params=where)).status == 200, where
    # further out than half a cell it is still outside, the same on both endpoints
    for lat, lon in ((mid_lat, e + 0.0002), (s - 0.0002, mid_lon)):
        where = {"lat": f"{lat:.6f}", "lon": f"{lon:.6f}"}
        for path in ("/api/v1/route", "/api/v1/shelters/nearest"):
            resp = await client.get(path, params=where)
            assert resp.status == 422 and (await resp.json())["status_code"] == "outside_area", path
    # the engine's own box is the service area: it never says outside_area for a position placed in it
    engine = service.require()
    assert all(engine.in_area(lat, lon) for lat in (s, n) for lon in (w, e))


async def test_route_and_nearest_shelters_vary_by_accept_language_once(client: TestClient) -> None:
    """Their guidance is in the header's language: ``Vary`` names Accept-Language (RFC 9110 §12.5.5), once,
    beside the compression's Accept-Encoding; a route answered from the cells' cache varies as the first."""
    service = await _ready(client)
    lat, lon = _center(service)
    for path in ("/api/v1/route", "/api/v1/route", "/api/v1/shelters/nearest"):
        resp = await client.get(path, params={"lat": str(lat), "lon": str(lon)},
                                headers={"Accept-Language": "en", "Accept-Encoding": "gzip"})
        assert resp.status == 200, await resp.text()
        vary = [v.strip().lower() for v in resp.headers.get("Vary", "").split(",") if v.strip()]
        assert "accept-language" in vary and len(vary) == len(set(vary)), (path, vary)
