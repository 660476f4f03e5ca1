"""Official information decides which hazard a resident's route avoids.

The generated drill town stands in for 郡山市 (its shelters are given 072036): a 土砂災害警戒情報 for
郡山市 makes ``/api/v1/level`` at a point in the town name ``hazard = landslide``, and the route asked
for that hazard ends at a site whose GSI flags (the database's own ``hazards``) rate it for 土砂災害.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from evac import store
from evac.drilltown import DrillTown
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
