"""A national-format flood map linked to a gauge (or its river) blocks routes through its deep areas
exactly while the gauge is at the linked 警戒レベル, in the API process's engine (evac/service.py),
and staff can list and link maps over the API."""

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
from api.evacuation import EVAC
from evac import store
from evac.drilltown import DrillTown, generate
from evac.service import EvacService
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.api_support import start_client

WAIT_S = 180.0  # waits end as soon as their event comes; graph building is slow on a loaded machine
GAUGE = "kano-test-01"
RIVER = "試験川"


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> DrillTown:
    return generate(tmp_path_factory.mktemp("town"), rows=20, cols=20, seed=11)


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evac-state")


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings, town: DrillTown,
                 shared_state: Path) -> AsyncIterator[TestClient]:
    async with pool.acquire() as conn:
        await store.import_shelters_file(conn, town.shelters, actor="test")
        await upsert_stations(conn, [Station(id=GAUGE, name="試験川 第1", municipality_code="072036",
                                             lat=37.0, lon=140.0, river=RIVER)])
    s = settings.replace(evac__network=str(town.osm), state__dir=str(shared_state))
    c = await start_client(create_app(pool=pool, settings=s))
    try:
        await asyncio.wait_for(c.app[EVAC].loaded.wait(), WAIT_S)
        yield c
    finally:
        await c.close()


async def _route(client: TestClient, lat: float, lon: float) -> dict[str, Any]:
    resp = await client.get("/api/v1/route", params={"lat": str(lat), "lon": str(lon)})
    assert resp.status == 200, await resp.text()
    return dict(await resp.json(content_type=None))


async def _alert(pool: asyncpg.Pool, service: EvacService, level: int | None) -> None:
    """Raise (or clear, ``None``) the gauge's alert the way the rules worker writes it; wait for the engine."""
    events = service.subscribe()
    try:
        async with pool.acquire() as conn, conn.transaction():
            if level is None:
                await conn.execute("UPDATE alerts SET cleared_at = now(), state = 'cleared' "
                                   "WHERE station_id = $1 AND cleared_at IS NULL", GAUGE)
            else:
                await conn.execute("UPDATE alerts SET cleared_at = now(), state = 'cleared' "
                                   "WHERE station_id = $1 AND cleared_at IS NULL", GAUGE)
                await conn.execute(
                    """INSERT INTO alerts (station_id, condition, exercise, audience, municipality_code, level,
                                           max_level, state, raised_at, changed_at)
                       VALUES ($1, 'river_level', false, 'public', '072036', $2, $2, 'raised', now(), now())""",
                    GAUGE, level)
            await conn.execute("SELECT pg_notify('sonae_alerts', '{}')")
        await asyncio.wait_for(events.get(), WAIT_S)
    finally:
        service.unsubscribe(events)


def _plateau_flood(path: Path, deep: Any, shallow: Any) -> Path:
    """A flood map in PLATEAU's GeoJSON form (the property names of the real 沼津市 file)."""
    feats = [{"type": "Feature", "geometry": mapping(g),
              "properties": {"name": "試験川水系試験川洪水浸水想定区域図（想定最大規模）", "種類": "2", "規模": "L2",
                             "浸水ランク": rank, "wtr_class": "1140", "gml_id": f"wtr_{rank}"}}
             for g, rank in ((deep, "2"), (shallow, "1"))]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("link", [f"gauge:{GAUGE}", f"river:{RIVER}"])
async def test_linked_map_blocks_deep_water_while_the_level_is_in_force(
    client: TestClient, pool: asyncpg.Pool, tmp_path: Path, link: str
) -> None:
    service = client.app[EVAC]
    w, s, e, n = service.map.bounds  # type: ignore[union-attr]
    lat, lon = s + (n - s) * 0.75 + 0.00011, w + (e - w) * 0.13 + 0.00017
    before = await _route(client, lat, lon)
    assert before["properties"]["status"] == "ok"
    line = before["geometry"]["coordinates"]
    assert len(line) >= 5
    deep = Point(line[len(line) // 2]).buffer(0.00025, cap_style="square")
    assert not deep.contains(Point(line[0])) and not deep.contains(Point(line[-1]))
    shallow = Point(w + 0.0003, s + 0.0003).buffer(0.0002, cap_style="square")
    path = _plateau_flood(tmp_path / "shiken_fld_l2.geojson", deep, shallow)

    events = service.subscribe()
    try:
        async with pool.acquire() as conn:
            row = await store.import_hazard_map(conn, path, actor="test",
                                                link=store.MapLink.parse(link, at_level=4))
        await asyncio.wait_for(events.get(), WAIT_S)
    finally:
        service.unsubscribe(events)
    assert row["areas"] == 2
    # linked but the gauge is quiet: the route is unchanged
    assert (await _route(client, lat, lon))["geometry"]["coordinates"] == line

    await _alert(pool, service, 3)  # 避難判断 (level 3): below the link's level 4
    assert (await _route(client, lat, lon))["geometry"]["coordinates"] == line

    await _alert(pool, service, 4)  # 氾濫危険: the map is in force; deep water is blocked
    during = await _route(client, lat, lon)
    assert during["properties"]["status"] == "ok"
    assert not LineString(during["geometry"]["coordinates"]).intersects(deep)
    assert during["properties"]["duration_s"] >= before["properties"]["duration_s"]
    hazards = await (await client.get("/api/v1/hazards")).json(content_type=None)
    mine = {f["properties"]["depth_rank"]: f["properties"] for f in hazards["features"]
            if f["properties"].get("map_id") == row["id"]}
    assert mine[2]["severity"] == "blocked" and mine[2]["depth_min_m"] == 0.5 and mine[2]["in_force"]
    assert mine[1]["severity"] == "penalty" and mine[1]["depth_max_m"] == 0.5

    await _alert(pool, service, None)  # the alert clears: the original route comes back
    assert (await _route(client, lat, lon))["geometry"]["coordinates"] == line


async def test_staff_list_link_and_unlink_maps(client: TestClient, pool: asyncpg.Pool) -> None:
    from api.auth import create_account, login
    from tests.conftest import shared_data

    path = shared_data("hazard_plateau", "numazu_plateau2021_lsld_523856.geojson")
    async with pool.acquire() as conn:
        row = await store.import_hazard_map(conn, path, actor="test", municipality_code="222038")
        for name, muni in (("numazu-staff", "222038"), ("other-staff", "072036")):
            await create_account(conn, username=name, password="correct horse battery", role="staff",
                                 municipality_code=muni)
        tokens = {n: (await login(conn, n, "correct horse battery"))[0]  # type: ignore[index]
                  for n in ("numazu-staff", "other-staff")}
    mine = {"Authorization": f"Bearer {tokens['numazu-staff']}"}
    other = {"Authorization": f"Bearer {tokens['other-staff']}"}
    assert (await client.get("/api/v1/hazard-maps")).status == 401
    listed = await (await client.get("/api/v1/hazard-maps", headers=mine)).json()
    assert [(m["id"], m["areas"], m["link"]) for m in listed["maps"]] == [(row["id"], 234, None)]
    assert "PLATEAU" in listed["maps"][0]["attribution"]
    assert (await (await client.get("/api/v1/hazard-maps", headers=other)).json())["maps"] == []
    link = {"kind": "jma_area", "ref": "222038", "at_level": 4, "phenomenon": "landslide"}
    url = f"/api/v1/hazard-maps/{row['id']}/link"
    assert (await client.put(url, json=link, headers=other)).status == 404  # another municipality: as missing
    bad = await client.put(url, json={**link, "at_level": 9}, headers=mine)
    assert bad.status == 400 and bad.content_type == "application/problem+json"
    assert (await client.put("/api/v1/hazard-maps/nope/link", json=link, headers=mine)).status == 404
    done = await client.put(url, json=link, headers=mine)
    assert done.status == 200 and (await done.json())["link"] == link
    async with pool.acquire() as conn:
        keys = {r["station_id"] for r in await conn.fetch("SELECT station_id FROM hazard_areas WHERE map_id = $1",
                                                          row["id"])}
        audit = await conn.fetchval("SELECT count(*) FROM audit_log WHERE action = 'hazard_map.linked'")
    assert keys == {"jma_area:222038:landslide"} and audit == 1
    assert (await client.delete(url, headers=mine)).status == 204
    listed = await (await client.get("/api/v1/hazard-maps", headers=mine)).json()
    assert listed["maps"][0]["link"] is None
