"""Incremental field updates (issue #21 item 3) against the full search as the oracle.

Random sequences of changes — hazard areas added and removed, a blocked area turned into a penalty and
back, penalty factors changed, shelters closed, opened and filled, gauge levels putting the drill town's
linked areas in and out of force — are applied to an engine that updates its fields incrementally; after
every step each field must equal a fresh engine's full search: the same distances (within 1e-9
relative), and valid next hops (:mod:`tests.evac.field_oracle`; ties may take another next hop).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evac.incremental
from evac.drilltown import generate
from evac.engine import Engine, FieldKey
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea, load_hazard_geojson
from evac.network import RoadNetwork, load_network
from evac.search import ProcessSearch
from evac.shelters import Shelter, load_shelters
from tests.evac.field_oracle import assert_field_matches

KEYS: list[FieldKey] = [("walk", "flood", False), ("car", "flood", False), ("reduced_mobility", "flood", True),
                        ("walk", "landslide", False)]


@dataclass(frozen=True, repr=False)
class Town:
    net: RoadNetwork
    shelters: list[Shelter]
    areas: list[HazardArea]  # the gauge-linked drill areas (in force by alert level)

    def __repr__(self) -> str:
        return f"Town({self.net.n_nodes} nodes, {len(self.shelters)} shelters, {len(self.areas)} areas)"


@pytest.fixture(scope="module")
def drilltown(tmp_path_factory: pytest.TempPathFactory) -> Town:
    root = tmp_path_factory.mktemp("incr-drilltown")
    t = generate(root / "town", rows=16, cols=16, seed=5, shelter_every=5)
    return Town(load_network(t.osm, state_dir=root / "state"), load_shelters(t.shelters),
                load_hazard_geojson(t.hazards))


@pytest.fixture(scope="module")
def gridtown() -> Town:
    net = grid_network(900, seed=13)
    return Town(net, grid_shelters(net, per=60, seed=13), [])


def _box(net: RoadNetwork, at: float, half_m: float) -> shapely.Polygon:
    i = min(int(at * net.n_nodes), net.n_nodes - 1)
    x, y = float(net.node_lon[i]), float(net.node_lat[i])
    dy = half_m / 111_320.0
    dx = dy / np.cos(np.radians(y))
    return shapely.box(x - dx, y - dy, x + dx, y + dy)


unit = st.floats(0.0, 0.999)
step = st.one_of(
    st.tuples(st.just("add"), unit, st.floats(20.0, 250.0), st.sampled_from(["blocked", "penalty"]),
              st.floats(1.0, 6.0), st.booleans()),
    st.tuples(st.just("remove"), unit),
    st.tuples(st.just("reseverity"), unit, st.sampled_from(["blocked", "penalty"]), st.floats(1.0, 6.0)),
    st.tuples(st.just("close_open"), unit),
    st.tuples(st.just("fill"), unit),
    st.tuples(st.just("level"), unit, st.integers(0, 5)),
    # changes that raise some weights and lower others in one update
    st.tuples(st.just("move"), unit, unit, st.floats(20.0, 250.0)),
    st.tuples(st.just("swap"), unit, unit, st.floats(20.0, 250.0), unit),
)


def _apply(eng: Engine, town: Town, op: tuple[Any, ...], k: int) -> None:
    st_ = eng.state
    own = sorted(a for a in st_.areas if a.startswith("x"))
    shelters = sorted(st_.shelters)
    kind = op[0]
    if kind == "add":
        _, at, half, severity, factor, exercise = op
        eng.update(add_areas=[HazardArea(id=f"x{k}", hazard="flood", geometry=_box(town.net, at, half),
                                         severity=severity, penalty_factor=factor, exercise=exercise)])
    elif kind == "remove" and own:
        eng.update(remove_areas=[own[int(op[1] * len(own))]])
    elif kind == "reseverity" and own:
        a = st_.areas[own[int(op[1] * len(own))]]
        eng.update(add_areas=[replace(a, severity=op[2], penalty_factor=op[3])])
    elif kind == "close_open":
        sid = shelters[int(op[1] * len(shelters))]
        eng.update(is_open={sid: not st_.shelters[sid].is_open})
    elif kind == "fill":
        s = st_.shelters[shelters[int(op[1] * len(shelters))]]
        if s.capacity:
            eng.update(occupancy={s.id: 0 if s.is_full else s.capacity})
    elif kind == "move" and own:
        a = st_.areas[own[int(op[1] * len(own))]]
        eng.update(add_areas=[replace(a, geometry=_box(town.net, op[2], op[3]))])
    elif kind == "swap":  # an area goes, another comes, a shelter closes or opens: one update
        sid = shelters[int(op[4] * len(shelters))]
        eng.update(remove_areas=own[int(op[1] * len(own)):][:1],
                   add_areas=[HazardArea(id=f"x{k}", hazard="flood", geometry=_box(town.net, op[2], op[3]))],
                   is_open={sid: not st_.shelters[sid].is_open})
    elif kind == "level" and town.areas:
        gauges = sorted({a.station_id for a in town.areas if a.station_id})
        eng.update(alert_levels={gauges[int(op[1] * len(gauges))]: op[2]})


def _run(town: Town, ops: list[tuple[Any, ...]]) -> Engine:
    eng = Engine(town.net, shelters=town.shelters, areas=town.areas, warm=KEYS, incremental_fraction=1.0, incremental_min_nodes=0)
    for k, op in enumerate(ops):
        before, inc_before = eng.recomputes.copy(), eng.incremental_updates.copy()
        _apply(eng, town, op, k)
        st_ = eng.state
        oracle = Engine(town.net, shelters=st_.shelters.values(), areas=st_.areas.values(),
                        alert_levels=st_.alert_levels, incremental=False)
        for key in KEYS:
            f = eng.field(*key)
            try:
                assert_field_matches(f, oracle.field(*key), town.net)
            except AssertionError as e:
                raise AssertionError(f"{key} after step {k} of {ops}: {e}") from e
            if eng.recomputes[key] > before[key] and len(f.sources):  # recomputed: incrementally
                assert eng.incremental_updates[key] == inc_before[key] + 1
    return eng


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=8))
def test_incremental_equals_full_search_on_drilltown(drilltown: Town, ops: list[tuple[Any, ...]]) -> None:
    _run(drilltown, ops)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=8))
def test_incremental_equals_full_search_on_gridtown(gridtown: Town, ops: list[tuple[Any, ...]]) -> None:
    _run(gridtown, ops)


def test_a_long_sequence_stays_exact(drilltown: Town) -> None:
    """Errors would pile up over many updates from one full search: 72 steps, checked after each."""
    rng = np.random.default_rng(21)
    ops: list[tuple[Any, ...]] = []
    for k in range(72):
        kind = ["add", "add", "remove", "reseverity", "close_open", "fill", "level", "move", "swap"][k % 9]
        ops.append({"add": ("add", rng.random(), rng.uniform(20, 200), rng.choice(["blocked", "penalty"]),
                            rng.uniform(1, 5), bool(rng.integers(2))),
                    "remove": ("remove", rng.random()), "reseverity": ("reseverity", rng.random(), "penalty", 3.0),
                    "close_open": ("close_open", rng.random()), "fill": ("fill", rng.random()),
                    "level": ("level", rng.random(), int(rng.integers(6))),
                    "move": ("move", rng.random(), rng.random(), rng.uniform(20, 200)),
                    "swap": ("swap", rng.random(), rng.random(), rng.uniform(20, 200), rng.random())}[kind])
    eng = _run(drilltown, ops)
    assert sum(eng.incremental_updates.values()) >= 60  # most steps changed some field, incrementally
    assert eng.incremental_work["increased"] > 0 and eng.incremental_work["decreased"] > 0


def test_a_large_change_falls_back_to_the_full_search(gridtown: Town) -> None:
    key = KEYS[0]
    eng = Engine(gridtown.net, shelters=gridtown.shelters, warm=[key],  # default: give up past 30 % of nodes
                 incremental_min_nodes=0)
    net = gridtown.net
    whole = shapely.box(float(net.node_lon.min()), float(net.node_lat.min()), float(net.node_lon.mean()),
                        float(net.node_lat.max()))
    eng.update(add_areas=[HazardArea(id="half", hazard="flood", geometry=whole, severity="penalty",
                                     penalty_factor=2.0)])
    assert eng.recomputes[key] == 2 and eng.incremental_updates[key] == 0
    eng.update(add_areas=[HazardArea(id="small", hazard="flood", geometry=_box(net, 0.9, 60.0))])
    assert eng.recomputes[key] == 3 and eng.incremental_updates[key] == 1
    st_ = eng.state
    oracle = Engine(net, shelters=st_.shelters.values(), areas=st_.areas.values(), incremental=False)
    assert_field_matches(eng.field(*key), oracle.field(*key), net)


@pytest.fixture()
def worker() -> Iterator[ProcessSearch]:
    w = ProcessSearch()
    yield w
    w.close()


def test_large_regions_are_solved_in_the_worker(gridtown: Town, worker: ProcessSearch,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Regions above ``IN_PROCESS_NODES`` go to the field's search (here: every region, to the worker)."""
    monkeypatch.setattr(evac.incremental, "IN_PROCESS_NODES", 0)
    net = gridtown.net
    local = Engine(net, shelters=gridtown.shelters, warm=KEYS[:2], incremental_fraction=1.0, incremental_min_nodes=0)
    remote = Engine(net, shelters=gridtown.shelters, warm=KEYS[:2], incremental_fraction=1.0, search=worker,
                    incremental_min_nodes=0)
    full_before = worker.searches  # after the two first full searches
    changes: list[dict[str, Any]] = [
        {"add_areas": [HazardArea(id="a", hazard="flood", geometry=_box(net, 0.3, 120.0))]},
        {"is_open": {gridtown.shelters[0].id: False}},
        {"remove_areas": ["a"]},
        {"is_open": {gridtown.shelters[0].id: True}},
    ]
    for change in changes:
        local.update(**change)
        remote.update(**change)
        for key in KEYS[:2]:
            a, b = local.field(*key), remote.field(*key)
            assert np.array_equal(a.dist, b.dist) and np.array_equal(a.next_node, b.next_node)
            assert np.array_equal(a.source, b.source)
    assert sum(remote.incremental_updates.values()) == 2 * len(changes)
    assert remote.incremental_work["worker_searches"] > 0
    assert worker.searches - full_before == remote.incremental_work["worker_searches"]  # no full search

