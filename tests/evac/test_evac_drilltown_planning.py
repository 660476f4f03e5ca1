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
    assert eng.route(c.y, c.x, exercise=True)["properties"]["status"] == "ok"
    station = a3.station_id
    assert station is not None
    eng.set_alert_level(station, 3)
    drill = eng.route(c.y, c.x, exercise=True, lang="ja")
    assert drill["properties"]["status"] == "inside_hazard" and drill["properties"]["guidance"].startswith("【訓練】")
    real = eng.route(c.y, c.x, exercise=False)
    assert real["properties"]["status"] == "ok" and real["properties"]["exercise"] is False
    eng.set_alert_level(station, 2)
    assert eng.route(c.y, c.x, exercise=True)["properties"]["status"] == "ok"


def test_plan_respects_capacities_and_matches_networkx_min_cost_flow(town) -> None:
    t, net = town
    shelters = load_shelters(t.shelters)
    # small known capacities so that capacity binds
    shelters = [s.__class__(**{**s.__dict__, "capacity": 40 + 10 * (i % 4)}) for i, s in enumerate(shelters)]
    eng = Engine(net, shelters=shelters)
    rng = np.random.default_rng(0)
    nodes = rng.choice(net.profile("walk").snap_nodes, size=60, replace=False)
    people = {int(n): int(rng.integers(1, 30)) for n in nodes}
    plan = plan_evacuation(eng, places_from_nodes(eng, people), hazard="flood")
    f = eng.field("walk", "flood")
    caps = {s.id: s.capacity for s in f.shelter_at.values()}
    for sid, n in plan.arrivals.items():
        assert n <= caps[sid]
    assert sum(plan.arrivals.values()) + plan.overflow_people + plan.unreachable_people == sum(people.values())
    # exact optimum: networkx min-cost flow on place -> shelter arcs with the same travel times (integers
    # in centiseconds) and an overflow arc
    pg = net.profile("walk")
    from scipy.sparse.csgraph import dijkstra

    fwd = pg.forward_csr(f.pair_weight)
    F = nx.DiGraph()
    total = sum(people.values())
    F.add_node("sink", demand=total)
    for n, p in people.items():
        F.add_node(("p", n), demand=-p)
        d = dijkstra(fwd, indices=n)
        F.add_edge(("p", n), "overflow", weight=10**9)
        for node, s in f.shelter_at.items():
            if np.isfinite(d[node]):
                F.add_edge(("p", n), ("s", s.id), weight=int(round(d[node] * 100)))
    for s in f.shelter_at.values():
        F.add_edge(("s", s.id), "sink", capacity=caps[s.id], weight=0)
    F.add_edge("overflow", "sink", weight=0)
    flow = nx.min_cost_flow(F)
    ref_overflow = flow["overflow"]["sink"]
    ref_cost = sum(flow[u][v] * F[u][v]["weight"] for u in flow for v in flow[u]
                   if u != "overflow" and v not in ("overflow", "sink")) / 100
    assert plan.overflow_people == ref_overflow
    assert plan.total_person_seconds == pytest.approx(ref_cost, rel=1e-4)
    full = [w for w in plan.warnings if "will be full" in w]
    assert full, "capacities this small must fill some shelters"


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
