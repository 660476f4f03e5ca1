"""Hazard-area boundaries: one rule everywhere (``evac.network.BOUNDARY_RULE``): a shelter, a resident or
a road edge touching a blocked area's boundary is inside it, judged in lon/lat degrees as the areas are
given. Coordinates lie on a 1e-4 degree lattice (as in ``test_evac_property``), so points fall exactly on
box sides and corners; projected to metres many of them fell just outside the projected box.

Oracles: shapely ``intersects`` in lon/lat for the membership, and networkx Dijkstra over the brute-force
reference graph (``evac_reference``) for the field.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import shapely
from evac_reference import reference_digraph, reference_field

from evac.engine import UNREACHABLE_S, Engine
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
