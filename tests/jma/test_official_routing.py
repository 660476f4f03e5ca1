"""Official information decides which hazard a resident's route avoids.

The generated drill town stands in for 郡山市 (its shelters are given 072036): a 土砂災害警戒情報 for
郡山市 makes ``/api/v1/level`` at a point in the town name ``hazard = landslide``, and the route asked
for that hazard ends at a site whose GSI flags (the database's own ``hazards``) rate it for 土砂災害.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from shapely.geometry import LineString, Point, mapping

from api.app import create_app
from evac import store
from evac.drilltown import DrillTown
from evac.service import EvacService, official_levels
from jma.store import store_telegram
from sonae.config import Settings
from tests.api.test_api_evacuation import _origins, _ready, _route, shared_state, town
from tests.api.test_api_staff import KORIYAMA
from tests.api_support import start_client
from tests.jma.support import LANDSLIDE
from tests.jma.test_official_flow import koriyama

__all__ = ["shared_state", "town"]  # module fixtures of the evacuation tests, reused


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings, town: DrillTown,
                 shared_state: Path) -> AsyncIterator[TestClient]:
    async with pool.acquire() as conn:
        await store.import_shelters_file(conn, town.shelters, actor="test")
        await conn.execute("UPDATE shelters SET municipality_code = $1", KORIYAMA)
    c = await start_client(create_app(pool=pool, settings=settings.replace(
        evac__network=str(town.osm), state__dir=str(shared_state))))
    try:
        await _ready(c)
        yield c
    finally:
        await c.close()


async def test_landslide_information_routes_to_landslide_rated_sites(pool: asyncpg.Pool,
                                                                     client: TestClient) -> None:
    service = await _ready(client)
    lat, lon = _origins(service)[4]
    calm = await (await client.get("/api/v1/level", params={"lat": str(lat), "lon": str(lon)})).json()
    assert calm["municipality_code"] == KORIYAMA and calm["level"] is None and calm["hazard"] is None
    async with pool.acquire() as conn:
        assert await store_telegram(conn, link="t1", data=koriyama(LANDSLIDE[0])) == "applied"
        rated = {r["id"]: set(r["hazards"]) for r in await conn.fetch("SELECT id, hazards FROM shelters")}
    body = await (await client.get("/api/v1/level", params={"lat": str(lat), "lon": str(lon)})).json()
    assert body["level"] == 4 and body["hazard"] == "landslide"
    checked = 0
    for origin in _origins(service):
        feature = await _route(client, *origin, hazard=body["hazard"])
        props = feature["properties"]
        if props["status"] != "ok":
            continue
        checked += 1
        assert "landslide" in rated[props["shelter"]["id"]], props["shelter"]
    assert checked >= 3
    assert any("landslide" not in h for h in rated.values())  # the choice mattered: some sites are not rated


def _landslide_map(path: Path, red: Any, yellow: Any) -> Path:
    """A landslide map in PLATEAU's GeoJSON form (the property names of the real 沼津市 file)."""
    feats = [{"type": "Feature", "geometry": mapping(g),
              "properties": {"name": str(i), "区域区分": zone, "現象の種類": "1", "都道府県コード": "07",
                             "区域番号": f"203-I-{i:04d}", "区域名": f"試験{i}", "所在地": "郡山市",
                             "告示日": "2020-03-31", "特別警戒未指定フラグ": "0", "gml_id": f"lsid_{i}"}}
             for i, (g, zone) in enumerate(((red, "2"), (yellow, "1")))]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False),
                    encoding="utf-8")
    return path


async def _changed(service: EvacService, pool: asyncpg.Pool, link: str, data: bytes) -> str:
    """Store a telegram and wait until this process's engine has recomputed."""
    events = service.subscribe()
    try:
        async with pool.acquire() as conn:
            outcome = await store_telegram(conn, link=link, data=data)
        await asyncio.wait_for(events.get(), 60)
    finally:
        service.unsubscribe(events)
    return outcome


@pytest.mark.parametrize("phenomenon", ["landslide", "土砂災害", None])
async def test_landslide_map_linked_to_the_warning_area_blocks_its_red_zone(
    pool: asyncpg.Pool, client: TestClient, tmp_path: Path, phenomenon: str | None
) -> None:
    service = await _ready(client)
    lat, lon = _origins(service)[7]
    before = await _route(client, lat, lon, hazard="landslide")
    assert before["properties"]["status"] == "ok"
    line = before["geometry"]["coordinates"]
    assert len(line) >= 5
    red = Point(line[len(line) // 2]).buffer(0.00025, cap_style="square")  # 特別警戒区域 on the route
    assert not red.contains(Point(line[0])) and not red.contains(Point(line[-1]))
    w, s, _, _ = service.map.bounds  # type: ignore[union-attr]
    yellow = Point(w + 0.0003, s + 0.0003).buffer(0.0002, cap_style="square")
    events = service.subscribe()
    try:
        async with pool.acquire() as conn:
            row = await store.import_hazard_map(
                conn, _landslide_map(tmp_path / "koriyama_lsld.geojson", red, yellow), actor="test",
                link=store.MapLink.parse("jma_area:07203", at_level=4, phenomenon=phenomenon))
        await asyncio.wait_for(events.get(), 60)
    finally:
        service.unsubscribe(events)
    async with pool.acquire() as conn:
        keys = {r["station_id"] for r in await conn.fetch("SELECT station_id FROM hazard_areas WHERE map_id = $1",
                                                          row["id"])}
    assert keys == {f"jma_area:{KORIYAMA}:{phenomenon or 'landslide'}"}  # 6-digit code, never shared by hazards
    assert (await _route(client, lat, lon, hazard="landslide"))["geometry"]["coordinates"] == line  # quiet

    assert await _changed(service, pool, "issued", koriyama(LANDSLIDE[0])) == "applied"  # level 4 for 郡山市
    during = await _route(client, lat, lon, hazard="landslide")
    assert during["properties"]["status"] == "ok"
    assert not LineString(during["geometry"]["coordinates"]).intersects(red)
    hazards = await (await client.get("/api/v1/hazards")).json(content_type=None)
    mine = {f["properties"]["zone_class"]: f["properties"] for f in hazards["features"]
            if f["properties"].get("map_id") == row["id"]}
    assert mine["特別警戒区域"]["severity"] == "blocked" and mine["特別警戒区域"]["in_force"]

    assert await _changed(service, pool, "cleared", koriyama(LANDSLIDE[2])) == "applied"  # 解除
    assert (await _route(client, lat, lon, hazard="landslide"))["geometry"]["coordinates"] == line


def test_official_levels_match_municipality_hazard_and_drill() -> None:
    """Pure rule: a key takes the level of its own municipality's real (or, for a drill key, 訓練)
    information whose phenomenon names its hazard; 大雨 names none."""
    def row(code: str, phenomenon: str, level: int, exercise: bool = False) -> dict[str, Any]:
        return {"municipality_code": code, "phenomenon": phenomenon, "level": level, "exercise": exercise}

    rows = [row(KORIYAMA, "土砂災害", 4), row(KORIYAMA, "洪水", 3), row(KORIYAMA, "洪水", 5, True),
            row("072010", "土砂災害", 5), row(KORIYAMA, "大雨", 5)]
    keys = {f"jma_area:{KORIYAMA}:landslide": "landslide", f"jma_area:{KORIYAMA}:土砂災害": "landslide",
            f"jma_area:{KORIYAMA}:氾濫": "flood", f"jma_area:{KORIYAMA}:": "flood",
            f"exercise:jma_area:{KORIYAMA}:flood": "flood", f"jma_area:{KORIYAMA}:tsunami": "tsunami",
            f"jma_area:{KORIYAMA}:大雨": "flood", "jma_area:072044:landslide": "landslide"}
    assert official_levels(rows, keys) == {
        f"jma_area:{KORIYAMA}:landslide": 4, f"jma_area:{KORIYAMA}:土砂災害": 4, f"jma_area:{KORIYAMA}:氾濫": 3,
        f"jma_area:{KORIYAMA}:": 3, f"exercise:jma_area:{KORIYAMA}:flood": 5}


async def test_flood_and_landslide_in_force_route_to_sites_rated_for_both(pool: asyncpg.Pool,
                                                                         client: TestClient) -> None:
    """A gauge at 氾濫危険水位 (flood, level 4) and a レベル４土砂災害危険警報 (landslide, level 4) for 郡山市 at once
    (found by breakit7: the level named landslide only, and the page then routed a resident fleeing the river
    to a site rated for landslide alone). The level names both; the route for both ends at sites rated for
    both; with none rated for both, it says so and routes nowhere."""
    from datetime import UTC, datetime

    from alerting.rules import Transition
    from alerting.store import apply_transition
    from ingest.registry import Station, upsert_stations

    service = await _ready(client)
    lat, lon = _origins(service)[4]
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="abukuma-test", name="本宮", municipality_code=KORIYAMA,
                                             lat=lat, lon=lon, th_danger=6.0)])
        async with conn.transaction():
            await apply_transition(conn, station_id="abukuma-test", municipality_code=KORIYAMA, exercise=False,
                                   t=Transition("river_level", None, 4, datetime.now(UTC).timestamp(), 6.6, 6.0,
                                                "threshold"))
        assert await store_telegram(conn, link="t1", data=koriyama(LANDSLIDE[0])) == "applied"
        rated = {r["id"]: set(r["hazards"]) for r in await conn.fetch("SELECT id, hazards FROM shelters")}
    both = {sid for sid, h in rated.items() if {"flood", "landslide"} <= h}
    assert both and any(h & {"flood", "landslide"} == {"landslide"} for h in rated.values())  # the choice matters

    body = await (await client.get("/api/v1/level", params={"lat": str(lat), "lon": str(lon), "lang": "en"})).json()
    assert body["level"] == 4
    assert [(h["hazard"], h["level"]) for h in body["hazards"]] == [("flood", 4), ("landslide", 4)]
    assert {s["kind"] for s in body["hazards"][0]["sources"]} == {"gauge"}
    assert {s["kind"] for s in body["hazards"][1]["sources"]} == {"official"}
    assert body["hazard"] == "flood"  # the tie goes by HAZARD_ORDER, documented; never the only one given
    assert body["route_hazard"] == "flood,landslide"

    checked = 0
    for origin in _origins(service):
        props = (await _route(client, *origin, hazard=body["route_hazard"]))["properties"]
        assert props["hazard"] == "flood,landslide"
        if props["status"] == "ok":
            checked += 1
            assert props["shelter"]["id"] in both, props["shelter"]
            assert {"flood", "landslide"} <= set(props["shelter"]["hazards"])
    assert checked >= 3
    same = await _route(client, lat, lon, hazard="landslide,flood,flood")  # one set, however spelt
    assert same["properties"]["hazard"] == "flood,landslide"
    resp = await client.get("/api/v1/route", params={"lat": str(lat), "lon": str(lon), "hazard": "flood,lava"})
    assert resp.status == 400

    # no site rated for both: no route to a partly rated one, the guidance says so in every language
    events = service.subscribe()
    try:
        async with pool.acquire() as conn:
            await conn.execute("UPDATE shelters SET hazards = array_remove(hazards, 'landslide') "
                               "WHERE hazards @> ARRAY['flood', 'landslide']")
            await conn.execute("SELECT pg_notify('sonae_evac', '{}')")
        await asyncio.wait_for(events.get(), 60)
    finally:
        service.unsubscribe(events)
    for origin in _origins(service):
        feature = await _route(client, *origin, hazard="flood,landslide")
        props = feature["properties"]
        assert props["status"] in ("no_shelter_for_all_hazards", "inside_hazard"), props["status"]
        assert feature["geometry"] is None and "shelter" not in props
    said = {}
    for lang in ("ja", "en", "ja-easy"):
        props = (await _route(client, lat, lon, hazard="flood,landslide", lang=lang))["properties"]
        assert props["status"] == "no_shelter_for_all_hazards"
        said[lang] = props["guidance"]
    assert "洪水・土砂災害" in said["ja"] and "屋内安全確保" in said["ja"] and "flood and landslide" in said["en"]
    assert "どしゃさいがい" in said["ja-easy"]
    assert (await _route(client, lat, lon, hazard="flood"))["properties"]["status"] == "ok"  # each alone has one
