"""Hazard-area boundaries: one rule everywhere (``evac.network.BOUNDARY_RULE``): a shelter, a resident, a
road edge, a straight leg to or from the road or a part of an edge touching a blocked area's boundary is
inside it, judged in lon/lat degrees as the areas are
given. Coordinates lie on a 1e-4 degree lattice (as in ``test_evac_property``), so points fall exactly on
box sides and corners; projected to metres many of them fell just outside the projected box.

Oracles: shapely ``intersects`` in lon/lat for the membership, and networkx Dijkstra over the brute-force
reference graph (``evac_reference``) for the field; for the resident's query, ``route_start_oracle``.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import shapely
from evac_reference import reference_digraph, reference_field
from route_start_oracle import route_start as oracle_route_start

from evac.engine import UNREACHABLE_S, Engine, RouteResult
from evac.hazards import HazardArea, edge_hits
from evac.network import RoadNetwork
from evac.shelters import Shelter

STEP = 1e-4
LON0, LAT0 = 140.36, 37.40


def at(i: int, j: int) -> tuple[float, float]:
    """Lattice point ``(i, j)`` as (lon, lat), computed as the property test computes its points."""
    return LON0 + i * STEP, LAT0 + j * STEP


def box(i0: int, j0: int, w: int, h: int) -> shapely.Geometry:
    """The box from lattice corner ``(i0, j0)`` to ``(i0 + w, j0 + h)``, its corners lattice points (so a
    lattice point on a side is exactly on it)."""
    return shapely.box(*at(i0, j0), *at(i0 + w, j0 + h))


def town(points: dict[int, tuple[int, int]], roads: list[tuple[int, int]]) -> nx.MultiDiGraph:
    """A graph of lattice nodes and two-way residential roads of 100 m."""
    G = nx.MultiDiGraph(crs="epsg:4326")
    for n, (i, j) in points.items():
        x, y = at(i, j)
        G.add_node(n, x=x, y=y)
    for u, v in roads:
        for a, b in ((u, v), (v, u)):
            G.add_edge(a, b, highway="residential", length=100.0, oneway=False, name=f"road{u}-{v}")
    return G


def check_field(G: nx.MultiDiGraph, shelters: list[Shelter], areas: list[HazardArea]) -> Engine:
    """The walk/flood field agrees with the reference (both by the lon/lat rule) and no shelter it uses
    touches a blocked area."""
    net = RoadNetwork.from_graph(G)
    eng = Engine(net, shelters=shelters, areas=areas, max_snap_m=1e6)
    f = eng.field("walk", "flood")
    blocked = [a.geometry for a in areas if a.severity == "blocked"]
    for s in f.shelter_at.values():
        assert not any(b.intersects(shapely.Point(s.lon, s.lat)) for b in blocked), s.id
    D = reference_digraph(G, net, "walk", blocked,
                          [(a.geometry, a.penalty_factor) for a in areas if a.severity == "penalty"])
    ref = reference_field(D, f.sources)
    ours = np.where(f.dist < UNREACHABLE_S, f.dist, np.inf)
    assert np.array_equal(np.isfinite(ours), np.isfinite(ref))
    np.testing.assert_allclose(ours[np.isfinite(ref)], ref[np.isfinite(ref)], rtol=1e-9, atol=1e-6)
    return eng


# a shelter at lattice point (10, 10): boxes with it on each side, at each corner, and a box 1 step away
SIDES = {
    "west side": (10, 5, 5, 10), "east side": (5, 5, 5, 10), "south side": (5, 10, 10, 5),
    "north side": (5, 5, 10, 5), "sw corner": (10, 10, 5, 5), "ne corner": (5, 5, 5, 5),
    "nw corner": (10, 5, 5, 5), "se corner": (5, 10, 5, 5),
}


@pytest.mark.parametrize("where", sorted(SIDES))
@pytest.mark.parametrize("shelter_at", [(10, 10), (23, 31), (40, 3), (7, 40)])
def test_shelter_on_the_boundary_of_a_blocked_area_is_inside(where: str, shelter_at: tuple[int, int]) -> None:
    """A shelter exactly on a blocked box's side or corner is no source; its road still works for others."""
    di, dj = shelter_at[0] - 10, shelter_at[1] - 10
    i0, j0, w, h = SIDES[where]
    area = HazardArea(id="a", hazard="flood", geometry=box(i0 + di, j0 + dj, w, h))
    lon, lat = at(*shelter_at)
    assert area.geometry.intersects(shapely.Point(lon, lat))
    G = town({1: shelter_at, 2: (shelter_at[0] + 30, shelter_at[1] + 30)}, [(1, 2)])
    inside = Shelter(id="in", name="in", lat=lat, lon=lon, hazards=frozenset({"flood"}))
    eng = check_field(G, [inside], [area])
    f = eng.field("walk", "flood")
    assert not f.shelter_at and not np.isfinite(np.where(f.dist < UNREACHABLE_S, f.dist, np.inf)).any()
    assert eng.route_result(lat, lon, profile="walk", hazard="flood").status == "inside_hazard"


def test_shelter_one_step_outside_a_blocked_area_is_used() -> None:
    """The counterpart: a shelter one lattice step west of the box is a source, reached along its road."""
    area = HazardArea(id="a", hazard="flood", geometry=box(11, 5, 5, 10))
    lon, lat = at(10, 10)
    G = town({1: (10, 10), 2: (0, 10)}, [(1, 2)])
    eng = check_field(G, [Shelter(id="s", name="s", lat=lat, lon=lon, hazards=frozenset({"flood"}))], [area])
    assert {s.id for s in eng.field("walk", "flood").shelter_at.values()} == {"s"}


@pytest.mark.parametrize("case", [
    # (name, road's two nodes, the box): the road meets the box at one point or along a side only
    ("end node on the west side", ((0, 10), (10, 10)), (10, 5, 5, 10)),
    ("end node on the north side", ((12, 30), (12, 15)), (10, 5, 5, 10)),
    ("end node on a corner", ((0, 0), (10, 5)), (10, 5, 5, 10)),
    ("along the south side", ((10, 5), (15, 5)), (10, 5, 5, 10)),
    ("along the east side, longer", ((15, 0), (15, 30)), (10, 5, 5, 10)),
    ("diagonal through a corner", ((5, 0), (15, 10)), (10, 5, 5, 5)),
])
@pytest.mark.parametrize("shift", [(0, 0), (17, 3), (29, 28)])
def test_road_touching_a_blocked_area_is_blocked(case, shift: tuple[int, int]) -> None:
    """A road touching a blocked box at one point or along a side is blocked (edge hits and the field), so
    a shelter at its far end does not reach its near end."""
    _, (p, q), (i0, j0, w, h) = case
    di, dj = shift
    p, q = (p[0] + di, p[1] + dj), (q[0] + di, q[1] + dj)
    area = HazardArea(id="a", hazard="flood", geometry=box(i0 + di, j0 + dj, w, h))
    G = town({1: p, 2: q}, [(1, 2)])
    assert shapely.LineString([at(*p), at(*q)]).intersects(area.geometry)
    net = RoadNetwork.from_graph(G)
    assert edge_hits(net, area).tolist() == list(range(net.n_edges))  # its two directions
    lon, lat = at(*p)
    eng = check_field(G, [Shelter(id="s", name="s", lat=lat, lon=lon, hazards=frozenset({"flood"}))], [area])
    f = eng.field("walk", "flood")
    far = int(np.flatnonzero(eng.network.node_osmid == 2)[0])
    assert not f.dist[far] < UNREACHABLE_S


def test_penalty_area_touching_a_road_end_counts() -> None:
    """The same rule for penalty areas: a road whose end node lies on a penalty box's side is slowed."""
    area = HazardArea(id="p", hazard="flood", geometry=box(10, 5, 5, 10), severity="penalty", penalty_factor=2.5)
    G = town({1: (0, 10), 2: (10, 10)}, [(1, 2)])
    lon, lat = at(0, 10)
    eng = check_field(G, [Shelter(id="s", name="s", lat=lat, lon=lon, hazards=frozenset({"flood"}))], [area])
    far = int(np.flatnonzero(eng.network.node_osmid == 2)[0])
    f = eng.field("walk", "flood")
    plain = Engine(eng.network, shelters=list(eng.state.shelters.values()), max_snap_m=1e6).field("walk", "flood")
    assert f.dist[far] == pytest.approx(2.5 * plain.dist[far])


# -- legs and the resident's own partial edge (AreaLines) ------------------------------------------
# A road A (10, 10) – B (40, 0) and a point P (10, 20) due north of A: P's nearest road point is A itself
# (the road leaves A away from P), so the straight leg P–A runs along the meridian of A. These boxes have
# a side on that meridian along part of the leg (west or east of it), or lie one step off it.
LEG_BOXES = {"east side on the leg": (5, 13, 5, 4), "west side on the leg": (10, 13, 5, 4),
             "corner on the leg": (10, 15, 4, 2), "other corner on the leg": (6, 13, 4, 2)}
LEG_CLEAR = {"one step west": (4, 13, 5, 4), "one step east": (11, 13, 5, 4)}
SHIFTS = [(0, 0), (17, 3), (29, 28), (3, 41), (61, 12)]


def _leg_town(di: int, dj: int) -> nx.MultiDiGraph:
    return town({1: (10 + di, 10 + dj), 2: (40 + di, 0 + dj)}, [(1, 2)])


@pytest.mark.parametrize("where", sorted(LEG_BOXES) + sorted(LEG_CLEAR))
@pytest.mark.parametrize("shift", SHIFTS)
def test_access_leg_touching_a_blocked_area_is_blocked(where: str, shift: tuple[int, int]) -> None:
    """A resident whose straight leg to the road touches a blocked box (a side or a corner on the leg) has
    no safe route (the road offers no other point within reach); with the box one step off the leg the
    resident walks the leg and the road to the shelter at B."""
    di, dj = shift
    i0, j0, w, h = LEG_BOXES.get(where) or LEG_CLEAR[where]
    area = HazardArea(id="a", hazard="flood", geometry=box(i0 + di, j0 + dj, w, h))
    lon, lat = at(10 + di, 20 + dj)
    leg = shapely.LineString([(lon, lat), at(10 + di, 10 + dj)])
    touches = where in LEG_BOXES
    assert leg.intersects(area.geometry) == touches
    assert not area.geometry.intersects(shapely.Point(lon, lat))
    G = _leg_town(di, dj)
    net = RoadNetwork.from_graph(G)
    assert not len(edge_hits(net, area))  # the road itself is dry
    sx, sy = at(40 + di, 0 + dj)
    eng = Engine(net, shelters=[Shelter(id="s", name="s", lat=sy, lon=sx, hazards=frozenset({"flood"}))],
                 areas=[area], max_snap_m=1e6)
    r = eng.route_result(lat, lon, profile="walk", hazard="flood")
    assert r.status == ("no_safe_route" if touches else "ok"), (where, shift, r.status)
    if not touches:
        assert r.shelter is not None and r.shelter.id == "s"
    assert r.status == _oracle_status(eng, lat, lon)


@pytest.mark.parametrize("where", sorted(LEG_BOXES) + sorted(LEG_CLEAR))
@pytest.mark.parametrize("shift", SHIFTS)
def test_egress_leg_touching_a_blocked_area_is_blocked(where: str, shift: tuple[int, int]) -> None:
    """A shelter at P whose straight leg to its road point A touches a blocked box is no source (its only
    road point cannot be reached safely); with the box one step off the leg it is reached from B."""
    di, dj = shift
    i0, j0, w, h = LEG_BOXES.get(where) or LEG_CLEAR[where]
    area = HazardArea(id="a", hazard="flood", geometry=box(i0 + di, j0 + dj, w, h))
    lon, lat = at(10 + di, 20 + dj)
    touches = where in LEG_BOXES
    assert shapely.LineString([(lon, lat), at(10 + di, 10 + dj)]).intersects(area.geometry) == touches
    G = _leg_town(di, dj)
    net = RoadNetwork.from_graph(G)
    assert not len(edge_hits(net, area))
    eng = Engine(net, shelters=[Shelter(id="s", name="s", lat=lat, lon=lon, hazards=frozenset({"flood"}))],
                 areas=[area], max_snap_m=1e6)
    f = eng.field("walk", "flood")
    far = int(np.flatnonzero(net.node_osmid == 2)[0])
    assert (f.dist[far] < UNREACHABLE_S) == (not touches), (where, shift)
    assert {s.id for s in f.shelter_at.values()} == (set() if touches else {"s"})
    bx, by = at(40 + di, 0 + dj)
    assert eng.route_result(by, bx, profile="walk", hazard="flood").status == ("no_safe_route" if touches else "ok")


# A road from A bending at V (5, 5) to B (20, 20) (one edge, V a point of its geometry), roads on from A
# to C (20 steps further) and from B to D (80, 20), and a resident R (9, 8) beside the edge's V–B part
# (its road point near (8.5, 8.5)). A is (0, 10) with the box below V, or (10, 0) with the box left of V;
# V lies on the box's side (top or east) or is one of its corners: the edge touches the box at V alone,
# so the part of R's edge toward A (through V) touches it and the part toward B does not. The shelter at C
# is the nearer by A; the one at D is reached by B.
PART_BOXES = {"top side": ((0, 10), (2, 0, 6, 5)), "top-left corner": ((0, 10), (5, 0, 3, 5)),
              "top-right corner": ((0, 10), (1, 1, 4, 4)), "east side": ((10, 0), (0, 2, 5, 6)),
              "bottom-right corner": ((10, 0), (0, 5, 5, 3)), "top-right corner, from below": ((10, 0), (0, 1, 5, 4))}


MIRRORS = [(1, 1), (-1, 1), (1, -1), (-1, -1)]


def _bent_town(a: tuple[int, int], m: tuple[int, int], di: int,
               dj: int) -> tuple[nx.MultiDiGraph, dict[int, tuple[int, int]]]:
    """The town of the bent road (nodes 1 = A, 2 = B, 3 = C, 4 = D), mirrored about V by ``m`` and shifted."""
    c = (a[0] - 20, a[1]) if a[1] else (a[0], a[1] - 20)
    pts = {n: _place(p, m, di, dj) for n, p in ((1, a), (2, (20, 20)), (3, c), (4, (80, 20)))}
    G = town(pts, [(1, 3), (2, 4)])
    bent = shapely.LineString([at(*pts[1]), at(*_place((5, 5), m, di, dj)), at(*pts[2])])
    for u, v, line in ((1, 2, bent), (2, 1, bent.reverse())):
        G.add_edge(u, v, highway="residential", length=100.0, oneway=False, name="bent", geometry=line)
    return G, pts


def _place(p: tuple[int, int], m: tuple[int, int], di: int, dj: int) -> tuple[int, int]:
    """Lattice point ``p`` mirrored about V (5, 5) by ``m`` (1 or -1 per axis), then shifted."""
    return 5 + m[0] * (p[0] - 5) + di, 5 + m[1] * (p[1] - 5) + dj


@pytest.mark.parametrize("where", sorted(PART_BOXES))
@pytest.mark.parametrize("mirror", MIRRORS)
@pytest.mark.parametrize("shift", SHIFTS)
def test_own_partial_edge_touching_a_box_at_a_bend_is_blocked(where: str, mirror: tuple[int, int],
                                                              shift: tuple[int, int]) -> None:
    """A resident on an edge whose part toward one end touches a blocked box (a side or a corner, at the
    edge's bend) leaves by the other end: the shelter at D, not the nearer one at C."""
    di, dj = shift
    a, (i0, j0, w, h) = PART_BOXES[where]
    (x0, y0), (x1, y1) = _place((i0, j0), mirror, di, dj), _place((i0 + w, j0 + h), mirror, di, dj)
    area = HazardArea(id="a", hazard="flood", geometry=shapely.box(*at(min(x0, x1), min(y0, y1)),
                                                                   *at(max(x0, x1), max(y0, y1))))
    G, pts = _bent_town(a, mirror, di, dj)
    net = RoadNetwork.from_graph(G)
    hit = edge_hits(net, area)
    ends = set(net.edge_u[hit].tolist()) | set(net.edge_v[hit].tolist())
    assert sorted(int(net.node_osmid[n]) for n in ends) == [1, 2]  # only the bent edge is hit
    shelters = [Shelter(id=n, name=n, lat=lat, lon=lon, hazards=frozenset({"flood"}))
                for n, (lon, lat) in (("C", at(*pts[3])), ("D", at(*pts[4])))]
    lon, lat = at(*_place((9, 8), mirror, di, dj))
    dry = Engine(net, shelters=shelters, max_snap_m=1e6).route_result(lat, lon, profile="walk", hazard="flood")
    assert dry.status == "ok" and dry.shelter is not None and dry.shelter.id == "C"
    eng = Engine(net, shelters=shelters, areas=[area], max_snap_m=1e6)
    r = eng.route_result(lat, lon, profile="walk", hazard="flood")
    assert r.status == "ok" and r.shelter is not None and r.shelter.id == "D", (where, shift, r.status, r.shelter)
    start = oracle_route_start(eng, lat, lon, profile="walk", hazard="flood")
    assert start.duration_s == r.duration_s


def _oracle_status(eng: Engine, lat: float, lon: float) -> str:
    eng.field("walk", "flood")
    got = oracle_route_start(eng, lat, lon, profile="walk", hazard="flood")
    return got.status if isinstance(got, RouteResult) else "ok"
