"""Hazard-area boundaries on parts of edges, on far-reaching areas and on the grid path (issues found by
trying to break the one lon/lat boundary rule, ``evac.network.BOUNDARY_RULE``).

- A shelter's partial edge (from its road point to an end of its edge) through a blocked area's corner
  that lies exactly on the road line: the whole edge is blocked (the corner is on its lon/lat line), so
  the part that covers the corner must be blocked too. The cut point used to be brought back from the
  projected segment to lon/lat, a hair off the lon/lat line, and the part missed the corner on one side
  of the road (the far end of the edge then reached the shelter through the area).

Oracles: shapely ``intersects`` on lon/lat lines whose coordinates are the edge's own (horizontal and
vertical lattice segments, so a corner on the road is exactly on it and a cut point interpolated on the
segment too), and networkx Dijkstra on the reference graph for the field.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import shapely
from evac_reference import reference_digraph, reference_field
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evac.engine import UNREACHABLE_S, Engine
from evac.hazards import HazardArea
from evac.network import RoadNetwork
from evac.shelters import Shelter

STEP = 1e-4
LON0, LAT0 = 140.36, 37.40


def at(i: float, j: float) -> tuple[float, float]:
    """Lattice point ``(i, j)`` as (lon, lat)."""
    return LON0 + i * STEP, LAT0 + j * STEP


def diamond(i: int, j: int, side: int) -> shapely.Geometry:
    """A diamond with its corner at lattice point ``(i, j)``, north of it (``side`` 1) or south (-1)."""
    return shapely.Polygon([at(i, j), at(i + 2, j + 2 * side), at(i, j + 4 * side), at(i - 2, j + 2 * side)])


@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize("length", [40, 400, 4000])
@pytest.mark.parametrize("vertical", [False, True])
def test_shelter_part_through_a_corner_on_the_road_is_blocked(side: int, length: int, vertical: bool) -> None:
    """A road of ``length`` lattice steps, a shelter 3 steps beside it at a quarter of its length, a
    blocked diamond whose corner touches the road at half its length: the shelter reaches the near end
    only; the far end is cut off (before the fix: reached, through the corner, with the corner south of
    an east-west road or west of a north-south one: 6 of these 12 cases)."""
    def pt(i: float, j: float) -> tuple[float, float]:
        return at(j, i) if vertical else at(i, j)

    G = nx.MultiDiGraph(crs="epsg:4326")
    for n, (i, j) in {1: (0, 0), 2: (length, 0)}.items():
        x, y = pt(i, j)
        G.add_node(n, x=x, y=y)
    for a, b in ((1, 2), (2, 1)):
        G.add_edge(a, b, highway="residential", length=length * 8.85, oneway=False, name="road")
    corner = diamond(length // 2, 0, side)
    area = HazardArea(id="a", hazard="flood", geometry=shapely.transform(corner, lambda xy: (
        np.column_stack([LON0 + (xy[:, 1] - LAT0), LAT0 + (xy[:, 0] - LON0)]) if vertical else xy)))
    lon, lat = pt(length // 4, 3)
    net = RoadNetwork.from_graph(G)
    road = shapely.LineString([pt(0, 0), pt(length, 0)])
    assert road.intersects(area.geometry) and not area.geometry.intersects(shapely.Point(lon, lat))
    eng = Engine(net, shelters=[Shelter(id="s", name="s", lat=lat, lon=lon, hazards=frozenset({"flood"}))],
                 areas=[area], max_snap_m=1e6)
    f = eng.field("walk", "flood")
    near, far = (int(np.flatnonzero(net.node_osmid == n)[0]) for n in (1, 2))
    assert f.dist[near] < UNREACHABLE_S
    assert not f.dist[far] < UNREACHABLE_S, "the far end reaches the shelter through the blocked corner"
    D = reference_digraph(G, net, "walk", [area.geometry])
    ref = reference_field(D, f.sources)
    ours = np.where(f.dist < UNREACHABLE_S, f.dist, np.inf)
    assert np.array_equal(np.isfinite(ours), np.isfinite(ref))


def _interpolated_part(net: RoadNetwork, e: int, a: float, b: float) -> shapely.Geometry:
    """The oracle's part of edge ``e`` from ``a`` to ``b`` projected metres: the edge's own lon/lat points
    inside, each cut point at its projected fraction of its segment's lon/lat line (exact on horizontal
    and vertical segments: the other coordinate is copied)."""
    o0, o1 = int(net.coord_offsets[e]), int(net.coord_offsets[e + 1])
    ll, along = np.asarray(net.coords[o0:o1]), np.asarray(net.coord_along[o0:o1])
    lo, hi = sorted((a, b))

    def cut(s: float) -> list[float]:
        k = min(int(np.searchsorted(along, s, side="right")) - 1, len(ll) - 2)
        t = (s - along[k]) / (along[k + 1] - along[k])
        p, q = ll[k], ll[k + 1]
        return [p[0] if p[0] == q[0] else p[0] + (q[0] - p[0]) * t, p[1] if p[1] == q[1] else p[1] + (q[1] - p[1]) * t]

    pts = [cut(lo), *ll[(along > lo) & (along < hi)].tolist(), cut(hi)]
    return shapely.LineString(pts) if len(pts) > 1 else shapely.Point(pts[0])


@st.composite
def _axis_road_and_area(draw: st.DrawFn) -> tuple[nx.MultiDiGraph, shapely.Geometry, float, float]:
    """A polyline of horizontal and vertical lattice steps, a lattice polygon (box, diamond or triangle)
    near it, and a part of it given by two fractions of its length."""
    i, j = draw(st.integers(0, 20)), draw(st.integers(0, 20))
    pts = [(i, j)]
    for _ in range(draw(st.integers(1, 4))):
        d = draw(st.integers(1, 12)) * draw(st.sampled_from([1, -1]))
        i, j = (i + d, j) if draw(st.booleans()) else (i, j + d)
        pts.append((i, j))
    G = nx.MultiDiGraph(crs="epsg:4326")
    G.add_node(1, x=at(*pts[0])[0], y=at(*pts[0])[1])
    G.add_node(2, x=at(*pts[-1])[0], y=at(*pts[-1])[1])
    if pts[0] == pts[-1]:
        G.nodes[2]["x"] += STEP / 2
        pts[-1] = (pts[-1][0] + 0.5, pts[-1][1])
    G.add_edge(1, 2, highway="residential", length=100.0, oneway=False,
               geometry=shapely.LineString([at(*p) for p in pts]))
    ci, cj = draw(st.integers(-5, 45)), draw(st.integers(-5, 45))
    w, h = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    kind = draw(st.sampled_from(["box", "diamond", "triangle"]))
    if kind == "box":
        poly = shapely.box(*at(ci, cj), *at(ci + w, cj + h))
    elif kind == "diamond":
        poly = shapely.Polygon([at(ci, cj), at(ci + w, cj + h), at(ci, cj + 2 * h), at(ci - w, cj + h)])
    else:
        poly = shapely.Polygon([at(ci, cj), at(ci + w, cj), at(ci, cj + h)])
    fa, fb = draw(st.floats(0.0, 1.0)), draw(st.floats(0.0, 1.0))
    return G, poly, fa, fb


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_axis_road_and_area())
def test_part_meets_equals_shapely_on_the_lonlat_part(case: tuple[nx.MultiDiGraph, shapely.Geometry, float, float]) -> None:
    """``RoadNetwork.part_meets`` equals shapely ``intersects`` on the oracle's lon/lat part, wherever the
    answer does not hang on where exactly a cut point lies (the area 1e-9 degree or further from both)."""
    G, poly, fa, fb = case
    net = RoadNetwork.from_graph(G)
    e = 0
    plen = float(net.edge_plen[e])
    a, b = fa * plen, fb * plen
    part = _interpolated_part(net, e, a, b)
    ends = shapely.get_coordinates(part)[[0, -1]]
    if min(shapely.distance(poly, shapely.Point(p)) for p in ends) < 1e-9 and not poly.intersects(part):
        return  # a cut point within rounding of the area: either answer is right
    assert net.part_meets(e, a, b, poly) == poly.intersects(part)
    assert net.part_meets(e, b, a, poly) == poly.intersects(part)
    # and a part always within a whole edge the area misses misses it too
    if not poly.intersects(shapely.LineString(net.coords[net.coord_offsets[e]:net.coord_offsets[e + 1]])):
        assert not net.part_meets(e, a, b, poly)
