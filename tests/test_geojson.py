"""One rule for the geometries staff draw (sonae.geojson): the API's formats, the order store and the
hazard-area store refuse the same geometries for the same reason. Before, the order store had its own
hand-written ring check that let a self-crossing (bow-tie) area through."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alerting.store import AlertError, issue_order
from api.validation import FORMATS
from evac.store import StoreError, hazard_area
from sonae.geojson import GeometryError, read_geometry

SQUARE = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.39], [140.37, 37.40],
                                              [140.36, 37.40], [140.36, 37.39]]]}
BOW_TIE = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.40], [140.37, 37.39],
                                               [140.36, 37.40], [140.36, 37.39]]]}


def test_the_rules_say_why() -> None:
    read_geometry(SQUARE, areas_only=True)
    with pytest.raises(GeometryError, match="Self-intersection"):
        read_geometry(BOW_TIE, areas_only=True)
    with pytest.raises(GeometryError, match="Polygon or MultiPolygon"):
        read_geometry({"type": "Point", "coordinates": [140.36, 37.39]}, areas_only=True)
    read_geometry({"type": "Point", "coordinates": [140.36, 37.39]}, areas_only=False)
    with pytest.raises(GeometryError, match="WGS 84"):
        read_geometry({"type": "Point", "coordinates": [37.39, 1400.36]}, areas_only=False)
    with pytest.raises(GeometryError, match="not a GeoJSON geometry"):
        read_geometry({"type": "Polygon", "coordinates": [[[0, 0]]]}, areas_only=True)
    with pytest.raises(GeometryError, match="empty"):
        read_geometry({"type": "Polygon", "coordinates": []}, areas_only=True)
    with pytest.raises(GeometryError, match="WGS 84"):
        read_geometry({"type": "Point", "coordinates": [140.36, float("nan")]}, areas_only=False)


def _api_accepts(area: dict[str, Any]) -> bool:
    return FORMATS.conforms(area, "geojson-area")


def _order_store_accepts(area: dict[str, Any]) -> bool:
    from alerting.store import _check_area

    try:
        _check_area(area)
    except AlertError:
        return False
    return True


def _hazard_store_accepts(area: dict[str, Any]) -> bool:
    try:
        hazard_area(hazard="flood", geometry=area)
    except StoreError:
        return False
    return True


coordinate = st.one_of(st.floats(-200, 200, allow_nan=False), st.sampled_from([140.36, 140.37, 37.39, 37.40]))
position = st.lists(coordinate, min_size=2, max_size=2)


@st.composite
def polygons(draw: st.DrawFn) -> dict[str, Any]:
    ring = draw(st.lists(position, min_size=0, max_size=6))
    if ring and draw(st.booleans()):
        ring = [*ring, ring[0]]  # closed, as GeoJSON asks
    holes = draw(st.lists(st.lists(position, min_size=4, max_size=5), max_size=1))
    if draw(st.booleans()):
        return {"type": "Polygon", "coordinates": [ring, *holes]}
    return {"type": "MultiPolygon", "coordinates": [[ring, *holes]]}


@settings(max_examples=300, deadline=None)
@given(polygons())
@example(BOW_TIE)
@example(SQUARE)
@example({"type": "Polygon", "coordinates": []})
def test_api_order_store_and_hazard_store_agree(area: dict[str, Any]) -> None:
    """The three doors take the same geometries: a body the API would refuse is refused by the domain
    functions behind it too (a script calling them, an import), and one it accepts is accepted."""
    api = _api_accepts(area)
    assert _order_store_accepts(area) == api
    assert _hazard_store_accepts(area) == api


async def test_an_order_with_a_self_crossing_area_is_refused_by_the_store(pool: asyncpg.Pool) -> None:
    """Before, ``issue_order`` checked only that the rings were closed: a bow tie was stored, then every
    reader that tested points against it (levels for a position, CAP areas) worked on an invalid polygon."""
    async with pool.acquire() as conn:
        with pytest.raises(AlertError, match="Self-intersection"):
            await issue_order(conn, municipality_code="072036", level=4, issued_by="chief", area=BOW_TIE)
        order_id, _ = await issue_order(conn, municipality_code="072036", level=4, issued_by="chief",
                                        area=SQUARE)
        assert await conn.fetchval("SELECT count(*) FROM evacuation_orders") == 1
        assert order_id
