"""Staff drawing hazard areas of every shape through ``POST /api/v1/hazards``: what Sonae can use is
stored (201) and reads back the same; anything else is a 400 problem naming ``geometry``, never a 500.
The rules are ``sonae.geojson.check_shape``'s (a Polygon or MultiPolygon, valid, lon/lat in range)."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
import shapely
from aiohttp.test_utils import TestClient

from api.app import create_app
from evac import store
from sonae.config import Settings
from tests.api_support import signed_in, start_client

PASSWORD = "correct horse battery"
X0, Y0 = 140.36, 37.39


def ring(*pts: tuple[float, float]) -> list[list[float]]:
    return [[X0 + x * 1e-3, Y0 + y * 1e-3] for x, y in pts]


OUTER = ring((0, 0), (10, 0), (10, 10), (0, 10), (0, 0))
HOLE = ring((3, 3), (3, 6), (6, 6), (6, 3), (3, 3))
ACCEPTED: dict[str, dict[str, Any]] = {
    "square": {"type": "Polygon", "coordinates": [OUTER]},
    "with a hole": {"type": "Polygon", "coordinates": [OUTER, HOLE]},
    "hole touching the outer ring at a point": {"type": "Polygon", "coordinates": [
        OUTER, ring((0, 5), (4, 7), (4, 3), (0, 5))]},
    "clockwise": {"type": "Polygon", "coordinates": [OUTER[::-1]]},
    "repeated points": {"type": "Polygon", "coordinates": [[OUTER[0], *OUTER[:3], OUTER[2], *OUTER[3:]]]},
    "multipolygon": {"type": "MultiPolygon", "coordinates": [[OUTER], [ring((20, 0), (25, 0), (25, 5), (20, 0))]]},
    "thin sliver": {"type": "Polygon", "coordinates": [ring((0, 0), (10, 0), (10, 1e-6), (0, 0))]},
    # RFC 7946 asks for closed rings; shapely closes an open one, the documented repair of check_shape
    "ring not closed": {"type": "Polygon", "coordinates": [OUTER[:-1]]},
    "the globe": {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]},
}
REFUSED: dict[str, Any] = {
    "geometry collection": {"type": "GeometryCollection", "geometries": [{"type": "Polygon", "coordinates": [OUTER]}]},
    "self-crossing (bow tie)": {"type": "Polygon", "coordinates": [ring((0, 0), (10, 10), (10, 0), (0, 10), (0, 0))]},
    "too few points": {"type": "Polygon", "coordinates": [ring((0, 0), (1, 1), (0, 0))]},
    "hole outside the outer ring": {"type": "Polygon", "coordinates": [OUTER, ring((20, 0), (22, 0), (22, 2), (20, 0))]},
    "latitude and longitude swapped": {"type": "Polygon", "coordinates": [[[y, x] for x, y in OUTER]]},
    "empty": {"type": "Polygon", "coordinates": []},
    "point": {"type": "Point", "coordinates": [X0, Y0]},
    "line": {"type": "LineString", "coordinates": OUTER},
    "no coordinates": {"type": "Polygon"},
    "coordinates of text": {"type": "Polygon", "coordinates": [[["a", "b"], ["c", "d"], ["e", "f"], ["a", "b"]]]},
    "three numbers a position": {"type": "Polygon", "coordinates": [[[*p, 0.0, 1.0] for p in OUTER]]},
    "nested too deep": {"type": "Polygon", "coordinates": [[OUTER]]},
    "not an object": [OUTER],
}


@pytest.fixture
async def staff(pool: asyncpg.Pool, settings: Settings):  # type: ignore[no-untyped-def]
    async with pool.acquire() as conn:
        tokens = await signed_in(conn, (("pref-staff", "staff", None),), PASSWORD)
    c = await start_client(create_app(pool=pool, settings=settings))
    yield c, {"Authorization": f"Bearer {tokens['pref-staff']}"}
    await c.close()


@pytest.mark.parametrize("name", sorted(ACCEPTED))
async def test_usable_shapes_are_stored_as_drawn(staff: tuple[TestClient, dict[str, str]], pool: asyncpg.Pool,
                                                 name: str) -> None:
    client, headers = staff
    geometry = ACCEPTED[name]
    resp = await client.post("/api/v1/hazards", json={"geometry": geometry, "hazard": "flood"}, headers=headers)
    assert resp.status == 201, await resp.text()
    area_id = (await resp.json())["id"]
    async with pool.acquire() as conn:
        (area,) = [a for a in await store.list_hazard_areas(conn) if a.id == area_id]
    assert shapely.equals_exact(area.geometry, shapely.geometry.shape(geometry), 0.0)
    assert all(r.is_closed for r in shapely.get_parts(shapely.get_rings(area.geometry)))


@pytest.mark.parametrize("name", sorted(REFUSED))
async def test_unusable_shapes_are_400_problems(staff: tuple[TestClient, dict[str, str]], pool: asyncpg.Pool,
                                                name: str) -> None:
    client, headers = staff
    resp = await client.post("/api/v1/hazards", json={"geometry": REFUSED[name], "hazard": "flood"}, headers=headers)
    assert resp.status == 400, await resp.text()
    body = await resp.json(content_type=None)
    assert body.get("field") == "geometry" or "geometry" in body.get("detail", ""), body
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM hazard_areas") == 0


async def test_non_finite_numbers_are_400(staff: tuple[TestClient, dict[str, str]]) -> None:
    """JSON has no NaN or Infinity, but Python's parser reads them: a position of them is refused."""
    client, headers = staff
    for bad in ("NaN", "Infinity", "-Infinity"):
        text = ('{"hazard": "flood", "geometry": {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.39], '
                f'[{bad}, 37.40], [140.36, 37.39]]]}}}}')
        resp = await client.post("/api/v1/hazards", data=text, headers={**headers, "Content-Type": "application/json"})
        assert resp.status == 400, (bad, await resp.text())


@pytest.mark.parametrize("name", ["point", "line"])
async def test_a_point_or_line_is_refused_naming_the_accepted_types_and_no_id(
        staff: tuple[TestClient, dict[str, str]], name: str) -> None:
    """Found: the 400 named a made-up id (``staff-05dc15c98253``) of an area never created."""
    client, headers = staff
    resp = await client.post("/api/v1/hazards", json={"geometry": REFUSED[name], "hazard": "flood"}, headers=headers)
    assert resp.status == 400, await resp.text()
    detail = (await resp.json(content_type=None))["detail"]
    assert "staff-" not in detail and "Polygon" in detail and "MultiPolygon" in detail, detail


def test_the_openapi_document_lists_only_the_accepted_geometry_types() -> None:
    from api.openapi import document
    from sonae.geojson import AREA_TYPES

    doc = document()
    schema = doc["paths"]["/api/v1/hazards"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["geometry"]["properties"]["type"]["enum"] == list(AREA_TYPES)
