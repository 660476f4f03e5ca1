"""Hazard areas of other shapes than boxes under the one boundary rule (``evac.network.BOUNDARY_RULE``):
polygons with holes (a shelter in the hole is usable, one on the hole's ring is not), MultiPolygons,
rings given clockwise or with repeated points, thin slivers and diamonds, with shelters and road nodes
on the areas' corners and sides (lattice points, as in ``test_evac_property``), through the full engine
and through an incremental update from the areas' absence.

Oracles: shapely ``intersects`` in lon/lat for the shelters, networkx Dijkstra over the brute-force
reference graph (``evac_reference``) for the field.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
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


def at(i: int, j: int) -> tuple[float, float]:
    return LON0 + i * STEP, LAT0 + j * STEP


@st.composite
def _shape(draw: st.DrawFn) -> shapely.Geometry:
    """A lattice polygon of one of several kinds (valid by shapely)."""
    i, j = draw(st.integers(0, 30)), draw(st.integers(0, 30))
    w, h = draw(st.integers(2, 14)), draw(st.integers(2, 14))
    kind = draw(st.sampled_from(["holed", "multi", "clockwise", "repeated", "sliver", "diamond"]))
    outer = [at(i, j), at(i + w, j), at(i + w, j + h), at(i, j + h), at(i, j)]
    if kind == "holed":
        hi, hj = draw(st.integers(1, w - 1)), draw(st.integers(1, h - 1))
        hw, hh = draw(st.integers(1, max(1, w - hi - 1))), draw(st.integers(1, max(1, h - hj - 1)))
        hole = [at(i + hi, j + hj), at(i + hi, j + hj + hh), at(i + hi + hw, j + hj + hh), at(i + hi + hw, j + hj)]
        geom = shapely.Polygon(outer, [hole])
    elif kind == "multi":
        gap = draw(st.integers(0, 5))
        geom = shapely.MultiPolygon([shapely.Polygon(outer),
                                     shapely.box(*at(i + w + gap, j), *at(i + 2 * w + gap, j + h))])
    elif kind == "clockwise":
        geom = shapely.Polygon(outer[::-1])
    elif kind == "repeated":
        geom = shapely.Polygon([outer[0], outer[0], outer[1], outer[1], outer[2], outer[3], outer[3], outer[0]])
    elif kind == "sliver":
        geom = shapely.Polygon([at(i, j), at(i + w, j + h), at(i + w, j + h + 1)]) if draw(st.booleans()) \
            else shapely.box(*at(i, j), at(i, j)[0] + 1e-7, at(i, j + h)[1])
    else:
        geom = shapely.Polygon([at(i, j), at(i + w, j + h), at(i, j + 2 * h), at(i - w, j + h)])
    if not geom.is_valid:  # a MultiPolygon whose parts share a side (gap 0): their union
        geom = shapely.union_all([g for g in shapely.get_parts(shapely.make_valid(geom))
                                  if isinstance(g, shapely.Polygon | shapely.MultiPolygon)])
    assert isinstance(geom, shapely.Polygon | shapely.MultiPolygon) and geom.is_valid, geom.wkt
    return geom


@st.composite
def _town(draw: st.DrawFn) -> tuple[nx.MultiDiGraph, list[Shelter], list[HazardArea]]:
    """A lattice town with two-way roads, shelters at nodes and at the areas' corners, and 1-2 areas."""
    areas = [HazardArea(id=f"a{k}", hazard="flood", geometry=draw(_shape()),
                        severity=draw(st.sampled_from(["blocked", "blocked", "penalty"])), penalty_factor=3.0)
             for k in range(draw(st.integers(1, 2)))]
    corners = sorted({tuple(c) for a in areas for c in shapely.get_coordinates(a.geometry).tolist()})
    n = draw(st.integers(2, 12))
    G = nx.MultiDiGraph(crs="epsg:4326")
    pts: list[tuple[float, float]] = []
    for k in range(n):  # some nodes exactly on the areas' corners
        if corners and draw(st.integers(0, 2)) == 0:
            x, y = draw(st.sampled_from(corners))
        else:
            x, y = at(draw(st.integers(-3, 45)), draw(st.integers(-3, 45)))
        if (x, y) in pts:
            x += STEP / 2
        pts.append((x, y))
        G.add_node(100 + k, x=x, y=y)
    for _ in range(draw(st.integers(1, 3 * n))):
        u, v = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
        if u != v:
            for a, b in ((u, v), (v, u)):
                G.add_edge(100 + a, 100 + b, highway="residential", length=float(draw(st.integers(5, 400))),
                           oneway=False, name=f"road{u}-{v}")
    shelters = []
    for k in range(draw(st.integers(1, 4))):
        if corners and draw(st.booleans()):
            lon, lat = draw(st.sampled_from(corners))
        else:
            lon, lat = pts[draw(st.integers(0, n - 1))]
        shelters.append(Shelter(id=f"s{k}", name=f"s{k}", lat=lat, lon=lon, hazards=frozenset({"flood"})))
    return G, shelters, areas


def _check(eng: Engine, G: nx.MultiDiGraph, areas: list[HazardArea]) -> None:
    f = eng.field("walk", "flood")
    net = eng.network
    blocked = [a.geometry for a in areas if a.severity == "blocked"]
    for s in f.shelter_at.values():
        assert not any(b.intersects(shapely.Point(s.lon, s.lat)) for b in blocked), s.id
    used = {f.shelters[int(i)].id for i in f.sources.shelter.tolist()}
    for s in f.shelters:
        if any(b.intersects(shapely.Point(s.lon, s.lat)) for b in blocked):
            assert s.id not in used, s.id
    D = reference_digraph(G, net, "walk", blocked, [(a.geometry, a.penalty_factor) for a in areas
                                                     if a.severity == "penalty"])
    ref = reference_field(D, f.sources)
    ours = np.where(f.dist < UNREACHABLE_S, f.dist, np.inf)
    assert np.array_equal(np.isfinite(ours), np.isfinite(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(ours[fin], ref[fin], rtol=1e-9, atol=1e-6)
    for s in f.shelters:  # a resident standing on a shelter in a blocked area is inside it
        if any(b.intersects(shapely.Point(s.lon, s.lat)) for b in blocked):
            assert eng.route_result(s.lat, s.lon, profile="walk", hazard="flood").status == "inside_hazard"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_town())
def test_area_shapes_match_networkx(case: tuple[nx.MultiDiGraph, list[Shelter], list[HazardArea]]) -> None:
    """Full computation, then the same areas added to a field computed without them (the incremental
    update on, for every graph size), and removed again: each equals the reference."""
    G, shelters, areas = case
    net = RoadNetwork.from_graph(G)
    _check(Engine(net, shelters=shelters, areas=areas, max_snap_m=1e6), G, areas)
    eng = Engine(net, shelters=shelters, max_snap_m=1e6, incremental_min_nodes=0, incremental_fraction=1.0)
    eng.field("walk", "flood")
    eng.update(areas=areas)
    _check(eng, G, areas)
    eng.update(areas=[])
    _check(eng, G, [])


def test_shelter_in_a_hole_is_used_and_one_on_the_hole_ring_is_not() -> None:
    """The plain case: a blocked box with a square hole; a shelter inside the hole (its road inside the
    hole too) is a source; a shelter on the hole's ring is not."""
    outer = [at(0, 0), at(40, 0), at(40, 40), at(0, 40)]
    hole = [at(10, 10), at(10, 30), at(30, 30), at(30, 10)]
    area = HazardArea(id="a", hazard="flood", geometry=shapely.Polygon(outer, [hole]))
    G = nx.MultiDiGraph(crs="epsg:4326")
    for n, (i, j) in {1: (15, 20), 2: (25, 20), 3: (10, 20), 4: (12, 25)}.items():
        x, y = at(i, j)
        G.add_node(n, x=x, y=y)
    for u, v in ((1, 2), (3, 4)):
        for a, b in ((u, v), (v, u)):
            G.add_edge(a, b, highway="residential", length=90.0, oneway=False, name=f"road{u}-{v}")
    in_hole = Shelter(id="hole", name="hole", lat=at(15, 20)[1], lon=at(15, 20)[0], hazards=frozenset({"flood"}))
    on_ring = Shelter(id="ring", name="ring", lat=at(10, 20)[1], lon=at(10, 20)[0], hazards=frozenset({"flood"}))
    net = RoadNetwork.from_graph(G)
    eng = Engine(net, shelters=[in_hole, on_ring], areas=[area], max_snap_m=1e6)
    f = eng.field("walk", "flood")
    assert {s.id for s in f.shelter_at.values()} == {"hole"}
    _check(eng, G, [area])


def _grid_town(k: int = 8, step: int = 10) -> tuple[nx.MultiDiGraph, list[Shelter]]:
    """A ``k`` x ``k`` lattice of nodes ``step`` lattice steps apart with two-way roads, shelters at four nodes."""
    G = nx.MultiDiGraph(crs="epsg:4326")
    for i in range(k):
        for j in range(k):
            x, y = at(i * step, j * step)
            G.add_node(i * k + j, x=x, y=y)
    for i in range(k):
        for j in range(k):
            for di, dj in ((1, 0), (0, 1)):
                if i + di < k and j + dj < k:
                    u, v = i * k + j, (i + di) * k + j + dj
                    for a, b in ((u, v), (v, u)):
                        G.add_edge(a, b, highway="residential", length=88.0, oneway=False, name=f"r{u}-{v}")
    shelters = [Shelter(id=f"s{n}", name=f"s{n}", lon=G.nodes[n]["x"], lat=G.nodes[n]["y"],
                        hazards=frozenset({"flood"})) for n in (0, k * k - 1, 3 * k + 4, 5 * k + 2)]
    return G, shelters


@given(st.lists(st.tuples(st.integers(0, 70), st.integers(0, 70), st.integers(1, 30), st.integers(1, 30),
                          st.booleans()), min_size=1, max_size=3))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_incremental_update_with_boundary_areas_equals_a_full_computation(boxes: list[tuple[int, int, int, int, bool]]) -> None:
    """Blocked boxes (some with a hole) whose sides run through road nodes and shelters, added to and
    then removed from a field by incremental updates: each result equals a full computation and the
    reference."""
    G, shelters = _grid_town()
    areas = []
    for k, (i, j, w, h, holed) in enumerate(boxes):
        outer = shapely.box(*at(i, j), *at(i + w, j + h))
        geom = outer.difference(shapely.box(*at(i + 1, j + 1), *at(i + w - 1, j + h - 1))) \
            if holed and w > 2 and h > 2 else outer
        areas.append(HazardArea(id=f"a{k}", hazard="flood", geometry=geom))
    net = RoadNetwork.from_graph(G)
    eng = Engine(net, shelters=shelters, incremental_min_nodes=0, incremental_fraction=1.0)
    eng.field("walk", "flood")
    for now in (areas[:1], areas, areas[1:], []):
        eng.update(areas=now)
        f = eng.field("walk", "flood")
        full = Engine(net, shelters=shelters, areas=now).field("walk", "flood")
        np.testing.assert_allclose(np.where(f.dist < UNREACHABLE_S, f.dist, np.inf),
                                   np.where(full.dist < UNREACHABLE_S, full.dist, np.inf), rtol=1e-9, atol=1e-6)
        _check(eng, G, now)
    assert eng.incremental_updates[("walk", "flood", False)] >= 1
