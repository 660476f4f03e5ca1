"""The drill town (through the osmnx import path), gauge-linked hazards, and capacity-aware planning."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from evac.drilltown import generate
from evac.engine import Engine
from evac.hazards import load_hazard_geojson
from evac.network import load_network
from evac.planning import places_from_nodes, plan_evacuation
from evac.routes import route
from evac.shelters import load_shelters


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("drilltown")
    t = generate(root / "town", rows=24, cols=24, seed=3)
    net = load_network(t.osm, state_dir=root / "state")
    return t, net


def _digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_drilltown_is_deterministic_and_imports_through_osmnx(town, tmp_path: Path) -> None:
    t, net = town
    again = generate(tmp_path / "again", rows=24, cols=24, seed=3)
    assert _digest(t.directory) == _digest(again.directory)
    assert _digest(generate(tmp_path / "other", rows=24, cols=24, seed=4).directory) != _digest(t.directory)
    assert net.n_nodes >= 24 * 24 - 10
    names = set(net.names)
    assert "steps" in names and any(n.endswith("大橋") for n in names) and "訓練川" not in names
    shelters = load_shelters(t.shelters)
    assert shelters and all(s.municipality_code == "079995" for s in shelters)
    assert any(s.capacity is None for s in shelters) or all(s.capacity for s in shelters)
    areas = load_hazard_geojson(t.hazards)
    assert areas and all(a.source == "gauge" and a.exercise for a in areas)


def test_gauge_levels_activate_areas_and_drills_stay_in_exercise_mode(town) -> None:
    t, net = town
    shelters = load_shelters(t.shelters)
    areas = load_hazard_geojson(t.hazards)
    eng = Engine(net, shelters=shelters, areas=areas)
    a3 = next(a for a in areas if a.activation_level == 3)
    c = a3.geometry.centroid
    assert route(eng, c.y, c.x, exercise=True)["properties"]["status"] == "ok"
    station = a3.station_id
    assert station is not None
    eng.set_alert_level(station, 3)
    drill = route(eng, c.y, c.x, exercise=True, lang="ja")
    assert drill["properties"]["status"] == "inside_hazard" and drill["properties"]["guidance"].startswith("【訓練】")
    real = route(eng, c.y, c.x, exercise=False)
    assert real["properties"]["status"] == "ok" and real["properties"]["exercise"] is False
    eng.set_alert_level(station, 2)
    assert route(eng, c.y, c.x, exercise=True)["properties"]["status"] == "ok"


def _reference_plan(eng: Engine, places: list[tuple[float, float, int]], caps: dict[str, int]) -> tuple[int, float]:
    """Overflow and person-seconds of a networkx min-cost flow: place -> shelter arcs whose costs come from
    networkx Dijkstra over the profile's edges (from the place's road point to each shelter's own rows)."""
    f = eng.field("walk", "flood")
    pg = eng.network.profile("walk")
    de_w = np.asarray(f.de_weight)
    ok = de_w < 1e8
    D = nx.DiGraph()
    for a, b, w in zip(pg.de_tail[ok].tolist(), pg.de_head[ok].tolist(), de_w[ok].tolist(), strict=True):
        if not D.has_edge(a, b) or D[a][b]["w"] > w:
            D.add_edge(a, b, w=w)
    src = f.sources
    F = nx.DiGraph()
    total = sum(p for *_, p in places)
    F.add_node("sink", demand=total)
    F.add_edge("overflow", "sink", weight=0)
    for i, (lat, lon, people) in enumerate(places):
        F.add_node(("p", i), demand=-people)
        F.add_edge(("p", i), "overflow", weight=10**9)
        r = eng.route_result(lat, lon)
        if r.status != "ok":
            F.add_edge(("p", i), "sink", weight=10**10)  # unreachable: leaves through its own arc
            continue
        starts, direct = eng.starts(r)
        best: dict[str, float] = {}
        for start, off in starts:
            lengths = nx.single_source_dijkstra_path_length(D, start, weight="w") if start in D else {start: 0.0}
            for k in range(len(src)):
                end = int(src.end[k])
                if end in lengths or end == start:
                    sid = f.shelters[int(src.shelter[k])].id
                    t = off + lengths.get(end, 0.0) + float(src.offset[k])
                    best[sid] = min(best.get(sid, np.inf), t)
        for j, t in direct:
            sid = f.shelters[j].id
            best[sid] = min(best.get(sid, np.inf), t)
        for sid, t in best.items():
            F.add_edge(("p", i), ("s", sid), weight=int(round(t * 100)))
    for sid, cap in caps.items():
        F.add_edge(("s", sid), "sink", capacity=cap, weight=0)
    flow = nx.min_cost_flow(F)
    cost = sum(flow[u][v] * F[u][v]["weight"] for u in flow for v in flow[u]
               if u != "overflow" and v not in ("overflow", "sink")) / 100
    return flow["overflow"]["sink"], cost


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plan_respects_capacities_and_matches_networkx_min_cost_flow(town, seed: int) -> None:
    t, net = town
    rng = np.random.default_rng(seed)
    base = load_shelters(t.shelters)
    # small known capacities so that capacity binds; every other shelter gets a twin at the very same point
    # (a gym and a school building at one site): each must keep its own capacity
    shelters = []
    for i, s in enumerate(base):
        shelters.append(s.__class__(**{**s.__dict__, "capacity": int(rng.integers(5, 60))}))
        if i % 2 == 0:
            shelters.append(s.__class__(**{**s.__dict__, "id": f"{s.id}-twin", "name": f"{s.name} 体育館",
                                           "capacity": int(rng.integers(5, 60))}))
    eng = Engine(net, shelters=shelters)
    nodes = rng.choice(net.profile("walk").snap_nodes, size=50, replace=False)
    people = {int(n): int(rng.integers(1, 30)) for n in nodes}
    places = places_from_nodes(eng, people)
    plan = plan_evacuation(eng, places, hazard="flood")
    f = eng.field("walk", "flood")
    caps = {s.id: int(s.capacity or 0) for s in f.shelters}
    assert any(sid.endswith("-twin") for sid in caps), "twins are planned with"
    for sid, n in plan.arrivals.items():
        assert n <= caps[sid]
    assert sum(plan.arrivals.values()) + plan.overflow_people + plan.unreachable_people == sum(people.values())
    ref_overflow, ref_cost = _reference_plan(eng, places, caps)
    assert plan.overflow_people == ref_overflow
    assert plan.total_person_seconds == pytest.approx(ref_cost, rel=1e-4)
    full = [w for w in plan.warnings if "will be full" in w]
    assert full, "capacities this small must fill some shelters"


def test_two_shelters_at_one_point_both_count(tmp_path: Path) -> None:
    """Issue 13: a three-node line, "gym" and "school" at the same point with 5 places each, 8 people."""
    from small_towns import lonlat, write_osm

    from evac.graph import graph_from_file
    from evac.network import RoadNetwork
    from evac.shelters import Shelter

    osm = write_osm(tmp_path / "line.osm", {1: (0.0, 0.0), 2: (100.0, 0.0), 3: (200.0, 0.0)},
                    [([1, 2, 3], {"highway": "residential"}), ([2, 3], {"highway": "footway"})])
    net = RoadNetwork.from_graph(graph_from_file(osm, state_dir=tmp_path))
    lon, lat = lonlat(200.0, 5.0)
    shelters = [Shelter(id=i, name=i, lat=lat, lon=lon, hazards=frozenset({"flood"}), capacity=5)
                for i in ("gym", "school")]
    eng = Engine(net, shelters=shelters)
    plon, plat = lonlat(0.0, 2.0)
    plan = plan_evacuation(eng, [(plat, plon, 8)])
    assert plan.overflow_people == 0 and sum(plan.arrivals.values()) == 8
    assert set(plan.arrivals) == {"gym", "school"} and max(plan.arrivals.values()) <= 5
    near = eng.nearest_shelters(plat, plon, k=5)
    assert {n["shelter"]["id"] for n in near} == {"gym", "school"}


def test_plan_population_file_with_gauge_flood(town) -> None:
    t, net = town
    eng = Engine(net, shelters=load_shelters(t.shelters), areas=load_hazard_geojson(t.hazards))
    for station in {a.station_id for a in eng.state.areas.values()}:
        assert station is not None
        eng.set_alert_level(station, 4)
    with t.population.open(encoding="utf-8") as fh:
        places = [(float(r["lat"]), float(r["lon"]), int(r["people"])) for r in csv.DictReader(fh)]
    plan = plan_evacuation(eng, places, exercise=True, unknown_capacity=100)
    total = sum(p for *_, p in places)
    assert plan.inside_hazard_people > 0
    assert (sum(plan.arrivals.values()) + plan.overflow_people + plan.unreachable_people
            + plan.inside_hazard_people) == total
    assert all(v is None or v >= 0 for v in plan.capacity_left.values())
    assert plan.to_dict()["hazard_version"] == eng.state.version
