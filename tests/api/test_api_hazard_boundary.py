"""The resident API at a blocked area's boundary: ``/api/v1/route`` and ``/api/v1/shelters/nearest`` agree
on ``inside_hazard`` for a position on or just inside a blocked area's side (the one boundary rule,
``evac.network.BOUNDARY_RULE``: touching counts), and no answer routes to a shelter on the side.

``/api/v1/route`` answers per cell of ``POSITION_DECIMALS`` (about 10 m) from the rounded position; a
side that is not on that lattice runs through cells, so rounding moved a resident standing on the side
(or just inside the area) out of it: the route said ``ok`` where the nearest-shelter answer said
``inside_hazard``.

Oracle: shapely ``intersects`` of the unrounded position with the area as drawn (lon/lat).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import shapely
from aiohttp.test_utils import TestClient

from api.app import create_app
from api.evacuation import EVAC
from evac import store
from evac.drilltown import DrillTown, generate
from evac.service import EvacService
from sonae.config import Settings
from tests.api_support import start_client

WAIT_S = 180.0


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> DrillTown:
    return generate(tmp_path_factory.mktemp("town"), rows=12, cols=12, seed=5)


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings, town: DrillTown,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TestClient]:
    async with pool.acquire() as conn:
        await store.import_shelters_file(conn, town.shelters, actor="test")
    state: Path = tmp_path_factory.mktemp("evac-state")
    c = await start_client(create_app(pool=pool, settings=settings.replace(evac__network=str(town.osm),
                                                                           state__dir=str(state))))
    try:
        await asyncio.wait_for(c.app[EVAC].loaded.wait(), WAIT_S)
        yield c
    finally:
        await c.close()


async def _block(client: TestClient, pool: asyncpg.Pool, geometry: shapely.Geometry) -> None:
    """Draw a blocked flood area and wait for the engine to take it."""
    service: EvacService = client.app[EVAC]
    events = service.subscribe()
    try:
        async with pool.acquire() as conn:
            area = store.hazard_area(hazard="flood", geometry=geometry, source="staff")
            await store.add_hazard_area(conn, area, actor="staff:test")
        assert (await asyncio.wait_for(events.get(), WAIT_S))["type"] == "hazard_state"
    finally:
        service.unsubscribe(events)


async def _answers(client: TestClient, lat: float, lon: float) -> tuple[dict[str, Any], dict[str, Any]]:
    q = {"lat": repr(lat), "lon": repr(lon)}
    r = await client.get("/api/v1/route", params=q)
    n = await client.get("/api/v1/shelters/nearest", params=q)
    assert r.status == 200 and n.status == 200, (await r.text(), await n.text())
    return await r.json(content_type=None), await n.json(content_type=None)


async def test_route_and_nearest_agree_on_a_blocked_side_between_cells(client: TestClient, pool: asyncpg.Pool) -> None:
    """A blocked box whose west side lies half a cell east of a cell centre line, positions on that side,
    just inside it and a cell further in: each is ``inside_hazard`` in both answers; positions just
    outside route to a shelter that is not in the box (before the fix the two on the side and just
    inside got an ``ok`` route from the cell west of the side)."""
    service: EvacService = client.app[EVAC]
    w, s, e, n = service.map.bounds  # type: ignore[union-attr]
    lat_c = round((s + n) / 2, 4)
    side = round((w + e) / 2, 4) + 0.00004  # rounds (4 decimals) to the cell west of the side
    box = shapely.box(side, lat_c - 0.002, side + 0.003, lat_c + 0.002)
    await _block(client, pool, box)
    for lon in (side, side + 1e-6, side + 1e-4):
        assert box.intersects(shapely.Point(lon, lat_c))
        route, nearest = await _answers(client, lat_c, lon)
        assert nearest["status"] == "inside_hazard", (lon, nearest)
        assert route["properties"]["status"] == "inside_hazard", (lon, route["properties"])
    for lon in (side - 2e-4, side - 1e-3):
        route, nearest = await _answers(client, lat_c, lon)
        assert route["properties"]["status"] == nearest["status"]
        if route["properties"]["status"] == "ok":
            shelter = route["properties"]["shelter"]
            assert not box.intersects(shapely.Point(shelter["lon"], shelter["lat"]))
            for f in nearest["shelters"]:
                assert not box.intersects(shapely.Point(f["shelter"]["lon"], f["shelter"]["lat"]))


async def test_no_answer_routes_to_a_shelter_on_a_blocked_side(client: TestClient, pool: asyncpg.Pool) -> None:
    """A blocked box drawn with a shelter exactly on its east side: every answer from around the box
    avoids that shelter (and positions inside the box are ``inside_hazard`` in both answers)."""
    service: EvacService = client.app[EVAC]
    engine = service.engine
    assert engine is not None
    shelters = sorted(engine.state.shelters.values(), key=lambda s: s.id)
    target = next(s for s in shelters if s.is_open and "flood" in s.hazards)
    box = shapely.box(target.lon - 0.0012, target.lat - 0.0007, target.lon, target.lat + 0.0009)
    await _block(client, pool, box)
    for dlat in (-0.003, -0.0004, 0.0, 0.0004, 0.003):
        for dlon in (-0.003, -0.0006, 0.0, 0.00005, 0.0004, 0.003):
            lat, lon = target.lat + dlat, target.lon + dlon
            route, nearest = await _answers(client, lat, lon)
            inside = box.intersects(shapely.Point(lon, lat))
            assert (route["properties"]["status"] == "inside_hazard") is inside, (dlat, dlon, route["properties"])
            assert (nearest["status"] == "inside_hazard") is inside, (dlat, dlon, nearest)
            if route["properties"]["status"] == "ok":
                assert route["properties"]["shelter"]["id"] != target.id
            assert target.id not in [f["shelter"]["id"] for f in nearest["shelters"]]
