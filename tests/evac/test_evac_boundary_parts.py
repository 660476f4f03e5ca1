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

from unittest import mock

import networkx as nx
import numpy as np
import pytest
import shapely
from edge_oracle import lonlat_edge_hits
from evac_reference import reference_digraph, reference_field
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evac.network
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


# -- the grid path (networks over TREE_MAX_EDGES) against the tree path and shapely ------------------------

def _lines_network(lines: list[np.ndarray]) -> RoadNetwork:
    """A network whose edges' lon/lat geometry is ``lines`` (only the geometry is meaningful)."""
    offsets = np.cumsum([0] + [len(c) for c in lines]).astype(np.int64)
    m = len(lines)
    return RoadNetwork(np.zeros(1, np.int64), np.zeros(1), np.zeros(1), np.zeros(m, np.int32), np.zeros(m, np.int32),
                       np.ones(m), np.full(m, -1, np.int32), np.zeros(m, np.int32), offsets,
                       np.vstack(lines).astype(float), [""], {"walk": (np.ones(m), np.ones(m))}, 32654)


def _both_paths(net: RoadNetwork, poly: shapely.Geometry) -> tuple[list[int], list[int]]:
    """Edges ``poly`` meets through the network's edge tree and through the grid (the limit lowered)."""
    tree = net.edges_intersecting(poly).tolist()
    with mock.patch.object(evac.network, "TREE_MAX_EDGES", -1):
        grid = _lines_network([net.coords[net.coord_offsets[e]:net.coord_offsets[e + 1]]
                               for e in range(net.n_edges)]).edges_intersecting(poly).tolist()
    return tree, grid


@pytest.mark.parametrize("length_deg", [0.3, 0.6, 1.0])
@pytest.mark.parametrize("below", [True, False])
def test_grid_finds_a_long_segment_bowing_into_an_area(length_deg: float, below: bool) -> None:
    """An east-west segment of ``length_deg`` degrees (27-88 km: a ferry line, a long straight road)
    across zone 54's central meridian, and a thin box touching its middle from the south or the north:
    straight in degrees the segment runs along the parallel, straight in metres it is a chord that passes
    tens of metres from it, beyond the grid's old 10 m pad (before the fix the grid missed the south
    box for all three lengths)."""
    lat = 37.4
    line = np.array([[141.0 - length_deg / 2, lat], [141.0 + length_deg / 2, lat]])
    net = _lines_network([line, line + [0.0, 0.5]])
    poly = (shapely.box(141.0 - 1e-4, lat - 1e-3, 141.0 + 1e-4, lat) if below
            else shapely.box(141.0 - 1e-4, lat, 141.0 + 1e-4, lat + 1e-3))
    tree, grid = _both_paths(net, poly)
    assert tree == grid == lonlat_edge_hits(net, poly).tolist() == [0]


#: Areas a staff drawing or an import may give (valid by ``sonae.geojson.check_shape``) that reach far
#: beyond the network: around the globe, to a pole, to the equator 90 degrees west of the zone (where
#: projected coordinates are infinite), and across half the globe while missing the network.
FAR_AREAS = {
    "the globe": shapely.box(-180, -90, 180, 90),
    "to the pole": shapely.box(140, 37, 141, 90),
    "to the equator far west": shapely.box(50, -1, 141, 38),
    "half the globe, west of the town": shapely.box(0, -80, 140.3, 80),
    "the globe but the town": shapely.box(-180, -90, 180, 90).difference(shapely.box(140.35, 37.39, 140.38, 37.42)),
}


@pytest.mark.parametrize("name", sorted(FAR_AREAS))
def test_grid_answers_areas_reaching_far_beyond_the_network(name: str) -> None:
    """The grid path gives the tree path's edges for areas reaching across the globe (before the fix:
    no edge for the globe, whose projected box missed the town, and ValueError "cannot convert float NaN
    to integer" for the box to the equator)."""
    line = np.array([[140.36, 37.40], [140.37, 37.40]])
    net = _lines_network([line, line + [0.0, 0.01]])
    poly = FAR_AREAS[name]
    tree, grid = _both_paths(net, poly)
    assert tree == grid == lonlat_edge_hits(net, poly).tolist()


@pytest.mark.parametrize("name", sorted(FAR_AREAS))
@pytest.mark.parametrize("grid", [False, True])
def test_engine_with_an_area_reaching_far_beyond_the_network(name: str, grid: bool) -> None:
    """The field and a resident's answer under an area reaching far beyond the town equal the reference
    (networkx, lon/lat intersects): a town inside the area has no shelter and its residents are
    ``inside_hazard``; a town outside it routes as without it (before the fix, half the globe west of the
    town, projected to metres, covered the town's shelter legs: no source and ``no_safe_route``; and
    the grid path raised for the box to the equator)."""
    G = nx.MultiDiGraph(crs="epsg:4326")
    corners = {1: (0, 0), 2: (100, 0), 3: (100, 100), 4: (0, 100)}
    for n, (i, j) in corners.items():
        x, y = at(i, j)
        G.add_node(n, x=x, y=y)
    for u, v in ((1, 2), (2, 3), (3, 4), (4, 1)):
        for a, b in ((u, v), (v, u)):
            G.add_edge(a, b, highway="residential", length=900.0, oneway=False, name=f"road{u}-{v}")
    lon, lat = at(50, -3)
    shelters = [Shelter(id="s", name="s", lat=lat, lon=lon, hazards=frozenset({"flood"}))]
    area = HazardArea(id="a", hazard="flood", geometry=FAR_AREAS[name])
    covered = area.geometry.intersects(shapely.Point(lon, lat))
    with mock.patch.object(evac.network, "TREE_MAX_EDGES", -1 if grid else evac.network.TREE_MAX_EDGES):
        net = RoadNetwork.from_graph(G)
        eng = Engine(net, shelters=shelters, areas=[area])
        f = eng.field("walk", "flood")
        r = eng.route_result(*at(50, 50)[::-1], profile="walk", hazard="flood")
    assert bool(len(f.sources)) is not covered
    ref = reference_field(reference_digraph(G, net, "walk", [area.geometry]), f.sources)
    ours = np.where(f.dist < UNREACHABLE_S, f.dist, np.inf)
    assert np.array_equal(np.isfinite(ours), np.isfinite(ref))
    plain = Engine(net, shelters=shelters).field("walk", "flood")
    if not covered:
        np.testing.assert_allclose(f.dist, plain.dist)
    assert r.status == ("inside_hazard" if area.geometry.intersects(shapely.Point(*at(50, 50))) else "ok")


@st.composite
def _long_lines_and_polygon(draw: st.DrawFn) -> tuple[list[np.ndarray], shapely.Geometry]:
    """Up to 6 polylines of 2-4 points anywhere within 1.5 degrees of (141, 37.5) (segments up to
    about 250 km), and a box, triangle or thin sliver there, at times reaching far beyond."""
    coord = st.tuples(st.floats(139.5, 142.5), st.floats(36.0, 39.0))
    lines = [np.array(draw(st.lists(coord, min_size=2, max_size=4))) for _ in range(draw(st.integers(1, 6)))]
    (x0, y0), (x1, y1) = draw(coord), draw(coord)
    kind = draw(st.sampled_from(["box", "triangle", "sliver", "far"]))
    if kind == "box":
        poly = shapely.box(min(x0, x1), min(y0, y1), max(x0, x1) + 1e-4, max(y0, y1) + 1e-4)
    elif kind == "triangle":
        poly = shapely.Polygon([(x0, y0), (x1, y1), (x0, y1 + 1e-3)])
    elif kind == "sliver":
        poly = shapely.box(x0, y0, x0 + draw(st.floats(1e-6, 1e-3)), y0 + draw(st.floats(0.1, 2.0)))
    else:
        poly = shapely.box(x0 - draw(st.floats(0, 170)), -80, x0, 80)
    if not poly.is_valid or poly.is_empty:
        poly = poly.convex_hull.buffer(1e-4)
    return lines, poly


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_long_lines_and_polygon())
def test_grid_equals_tree_and_shapely_on_long_segments(case: tuple[list[np.ndarray], shapely.Geometry]) -> None:
    """Both paths of ``edges_intersecting`` give the edges whose lon/lat line shapely finds meeting the
    area, for segments up to hundreds of kilometres and areas up to half the globe."""
    lines, poly = case
    net = _lines_network(lines)
    tree, grid = _both_paths(net, poly)
    assert tree == grid == lonlat_edge_hits(net, poly).tolist()


@pytest.mark.parametrize("grid", [False, True])
def test_egress_leg_across_a_finger_of_an_area_reaching_round_the_globe(grid: bool) -> None:
    """A blocked area covering the globe but the town, with a thin finger reaching into the town between a
    shelter and its road: the shelter's egress leg crosses the finger, so the shelter is no source (the
    oracle: shapely on the lon/lat leg). Before the fix the area's projected box, the legs' cheap filter,
    was computed from the whole globe and missed the town, so the leg was never tested and the shelter
    was used."""
    G = nx.MultiDiGraph(crs="epsg:4326")
    for n, (i, j) in {1: (0, 0), 2: (100, 0)}.items():
        x, y = at(i, j)
        G.add_node(n, x=x, y=y)
    for a, b in ((1, 2), (2, 1)):
        G.add_edge(a, b, highway="residential", length=900.0, oneway=False, name="road")
    lon, lat = at(50, -20)
    town = shapely.box(*at(-50, -60), *at(150, 60))
    finger = shapely.box(*at(40, -12), *at(60, -8))
    area = HazardArea(id="a", hazard="flood",
                      geometry=shapely.box(-180, -90, 180, 90).difference(town).union(finger))
    leg = shapely.LineString([(lon, lat), at(50, 0)])
    assert area.geometry.intersects(leg) and not area.geometry.intersects(shapely.Point(lon, lat))
    assert not area.geometry.intersects(shapely.LineString([at(0, 0), at(100, 0)]))
    with mock.patch.object(evac.network, "TREE_MAX_EDGES", -1 if grid else evac.network.TREE_MAX_EDGES):
        net = RoadNetwork.from_graph(G)
        eng = Engine(net, shelters=[Shelter(id="s", name="s", lat=lat, lon=lon, hazards=frozenset({"flood"}))],
                     areas=[area])
        f = eng.field("walk", "flood")
    assert not len(f.sources), "the shelter's egress leg crosses the blocked finger"


@pytest.mark.parametrize("side", [1, -1])
@pytest.mark.parametrize("length", [40, 400])
def test_a_residents_own_part_through_a_blocked_corner_on_the_road_is_cut(length: int, side: int) -> None:
    """A road 1 (0, 0) - 2 (L, 0) - 3 (L, 30), the shelter at 3, and a blocked diamond whose corner lies
    exactly on the road at (L/2, 0), north or south of it. A resident beside the road at (L/4, -1) joins
    it west of the corner: the part of their own edge toward node 2 covers the corner, so it is cut
    (:meth:`AreaLines.part_factor` on the edge's lon/lat line), and with node 1 a dead end there is no
    safe route, whichever side the diamond is on. The part's cut point brought back from metres missed
    the corner on one side and routed the resident through it (found by trying to break the rule)."""
    G = nx.MultiDiGraph(crs="epsg:4326")
    for n, (i, j) in {1: (0, 0), 2: (length, 0), 3: (length, 30)}.items():
        G.add_node(n, x=at(i, j)[0], y=at(i, j)[1])
    for u, v in ((1, 2), (2, 3)):
        for a, b in ((u, v), (v, u)):
            G.add_edge(a, b, highway="residential", length=100.0, oneway=False)
    net = RoadNetwork.from_graph(G)
    shelter = Shelter(id="s", name="s", lon=at(length, 30)[0], lat=at(length, 30)[1], hazards=frozenset({"flood"}))
    area = HazardArea(id="a", hazard="flood", geometry=diamond(length // 2, 0, side))
    eng = Engine(net, shelters=[shelter], areas=[area], max_snap_m=1e6)
    lon, lat = at(length // 4, -1)
    r = eng.route_result(lat, lon, profile="walk", hazard="flood")
    assert r.status == "no_safe_route", (r.status, r.duration_s)
    # without the area the same resident walks east along the road to the shelter
    free = Engine(net, shelters=[shelter], areas=[], max_snap_m=1e6).route_result(lat, lon, profile="walk",
                                                                                   hazard="flood")
    assert free.status == "ok" and free.shelter is not None and free.shelter.id == "s"
