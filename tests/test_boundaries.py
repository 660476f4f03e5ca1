"""A point's municipality from the shipped N03 boundaries, against the full-resolution polygons (issue #14 item 4).

The oracle is the full-resolution N03-22 data in ``shared/data/boundaries`` (338,795 vertices), which the
shipped, coverage-simplified boundaries must agree with for every point more than their largest border
displacement (1.32 m, plus 0.06 m of rounding) away from a full-resolution border.
"""

from __future__ import annotations

import json
import math
import random
from functools import cache

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from shapely.geometry import Point, shape

from ingest.boundaries import BoundaryIndex, packaged_boundaries, simplify
from tests.conftest import shared_data

#: points at least this far from a full-resolution border must get the same municipality
EXACT_BEYOND_M = 1.5
M_PER_DEG_LAT = 110_574.0


@cache
def oracle() -> tuple[list[str], list[shapely.Geometry], shapely.STRtree]:
    doc = json.loads(shared_data("boundaries", "fukushima_n03_2022_full.geojson").read_text(encoding="utf-8"))
    codes = [f["properties"]["lgcode6"] for f in doc["features"]]
    geoms = [shape(f["geometry"]) for f in doc["features"]]
    for g in geoms:
        shapely.prepare(g)
    return codes, geoms, shapely.STRtree(geoms)


@cache
def shipped() -> BoundaryIndex:
    return BoundaryIndex(packaged_boundaries())


@cache
def border_vertices() -> np.ndarray:
    """Full-resolution vertices that lie on the boundaries of two different municipalities: (n, 2) lon/lat."""
    codes, geoms, _ = oracle()
    coords = shapely.get_coordinates(geoms)
    points = shapely.points(coords)
    x, y = coords[:, 0], coords[:, 1]
    owners: dict[int, set[str]] = {}
    # polygon by polygon (prepared, the points in its bounding box at once): the same pairs as querying the
    # tree with every point, in 1 s instead of 25 s
    for code, geom in zip(codes, geoms, strict=True):
        west, south, east, north = geom.bounds
        candidates = np.flatnonzero((x >= west) & (x <= east) & (y >= south) & (y <= north))
        for p in candidates[shapely.intersects(geom, points[candidates])].tolist():
            owners.setdefault(p, set()).add(code)
    shared_ = sorted(p for p, found in owners.items() if len(found) >= 2)
    return np.unique(coords[shared_], axis=0)


def oracle_at(lon: float, lat: float) -> tuple[str | None, float]:
    """(the municipality of the full-resolution polygon covering the point, metres to the nearest border)."""
    codes, geoms, tree = oracle()
    p = Point(lon, lat)
    inside = [codes[i] for i in tree.query(p, predicate="covered_by")]
    kx = 111_320.0 * math.cos(math.radians(lat))
    near = tree.query(p.buffer(0.001))
    local = shapely.transform(p, lambda c: c * [kx, M_PER_DEG_LAT])
    distance = min((shapely.distance(local, shapely.transform(geoms[i].boundary, lambda c: c * [kx, M_PER_DEG_LAT]))
                    for i in near), default=math.inf)
    return (inside[0] if inside else None), float(distance)


def _offset(lon: float, lat: float, east_m: float, north_m: float) -> tuple[float, float]:
    return lon + east_m / (111_320.0 * math.cos(math.radians(lat))), lat + north_m / M_PER_DEG_LAT


def test_shipped_boundaries_are_fukushimas_59_and_cover_the_offices() -> None:
    index = shipped()
    assert len(index) == 59 and all(code.startswith("07") for code in index.boundaries)
    rows = shared_data("municipalities", "fukushima_municipalities.csv").read_text(encoding="utf-8").splitlines()[1:]
    for row in rows:
        code, _, name, *_rest = row.split(",")
        lat, lon = float(_rest[-3]), float(_rest[-2])
        if code == "075469":  # 双葉町's listed office is its evacuation office in いわき市 (see PROVENANCE)
            continue
        assert index.municipality_at(lat, lon) == code, name


def test_both_sides_of_real_borders_get_their_own_municipality() -> None:
    """Points 2.5 m either side of real border vertices (5 m apart) against the full-resolution polygons."""
    vertices = border_vertices()
    assert len(vertices) > 10_000
    rng = random.Random(14)
    index = shipped()
    checked = differing = 0
    for i in rng.sample(range(len(vertices)), 400):
        lon, lat = map(float, vertices[i])
        angle = rng.uniform(0, math.pi)
        dx, dy = 2.5 * math.cos(angle), 2.5 * math.sin(angle)
        sides = [_offset(lon, lat, dx, dy), _offset(lon, lat, -dx, -dy)]
        expected = [oracle_at(*p) for p in sides]
        if any(d < EXACT_BEYOND_M for _, d in expected):
            continue  # too close to some border to demand exactness at 1.4 m accuracy
        got = [index.municipality_at(p[1], p[0]) for p in sides]
        assert got == [code for code, _ in expected], (lon, lat)
        checked += 1
        differing += expected[0][0] != expected[1][0]
    assert checked > 100 and differing > 50  # many pairs really straddle a border


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0), st.floats(min_value=0, max_value=2 * math.pi), st.floats(min_value=0.5, max_value=40))
def test_random_points_near_borders_agree_with_full_resolution(pick: int, angle: float, distance_m: float) -> None:
    vertices = border_vertices()
    lon, lat = map(float, vertices[pick % len(vertices)])
    plon, plat = _offset(lon, lat, distance_m * math.cos(angle), distance_m * math.sin(angle))
    expected, to_border = oracle_at(plon, plat)
    assume(to_border >= EXACT_BEYOND_M)
    assert shipped().municipality_at(plat, plon) == expected


def test_circles_touch_the_municipalities_they_reach() -> None:
    index = shipped()
    vertices = border_vertices()
    lon, lat = map(float, vertices[len(vertices) // 3])
    touched = index.touching_circle(lat, lon, 200)
    assert len(touched) >= 2
    far = index.touching_circle(37.3956, 140.3539, 100)  # the middle of 郡山市
    assert far == ["072036"]


def test_simplify_keeps_a_coverage_and_reports_its_accuracy() -> None:
    """Re-simplifying a few real neighbours: shared borders stay one line (no gap, no overlap)."""
    codes, geoms, _ = oracle()
    wanted = {"072036", "072079", "073423"}  # 郡山市, 須賀川市, 鏡石町: neighbours
    parts = [(c, c, g) for c, g in zip(codes, geoms, strict=True) if c in wanted]
    boundaries, report = simplify(parts, tolerance_m=1.0, measure=True)
    assert report is not None and report.vertices_after < report.vertices_before
    assert 0 < report.max_displacement_m < 2.0
    by_code = {b.code: b.geometry for b in boundaries}
    assert set(by_code) == wanted
    union_before = shapely.union_all([g for _, _, g in parts]).area
    overlap = sum(by_code[a].intersection(by_code[b]).area for a in wanted for b in wanted if a < b)
    assert overlap < 1e-12 and abs(shapely.union_all(list(by_code.values())).area - union_before) / union_before < 1e-5


@pytest.mark.parametrize(("lat", "lon", "code"), [(37.367401, 140.329744, "072036"), (37.7608, 140.4747, "072010")])
def test_named_points(lat: float, lon: float, code: str) -> None:
    assert shipped().municipality_at(lat, lon) == code
