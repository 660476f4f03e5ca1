"""Edge factors and weights patched per hazard change (issue #21) against the whole-array rebuild.

A new set of areas in force starts from the kept hazard index nearest to it and patches the edge
factors and each profile's directed-edge and pair weights on the edges the added or removed areas touch
(:meth:`evac.engine.Engine._hazard_index`). The oracle is the rebuild from nothing that the engine used
before: :func:`evac.hazards.edge_multipliers` over every area in force (no cache), then
``de_time * mult[de_base]`` (non-finite: ``BLOCKED_WEIGHT``) and the minimum per pair. They must be equal
bit for bit, after every step of random sequences of areas added, removed, replaced (same id, other
geometry or severity) and switched on and off by a gauge, on the drill town and a grid town.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evac.network
from evac.drilltown import generate
from evac.engine import BLOCKED_WEIGHT, Engine, FieldKey
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea, edge_multipliers, load_hazard_geojson
from evac.incremental import pairs_of_edges
from evac.network import PairWeights, RoadNetwork, load_network
from evac.shelters import Shelter, load_shelters
from tests.evac.test_evac_incremental import Town as IncrementalTown
from tests.evac.test_evac_incremental import _run as run_incremental
from tests.evac.test_evac_incremental import step as incremental_step

KEYS: list[FieldKey] = [("walk", "flood", False), ("car", "flood", False), ("reduced_mobility", "flood", True)]
Town = tuple[RoadNetwork, list[Shelter], list[HazardArea]]


@pytest.fixture(scope="module")
def drilltown(tmp_path_factory: pytest.TempPathFactory) -> Town:
    root = tmp_path_factory.mktemp("patch-drilltown")
    t = generate(root / "town", rows=16, cols=16, seed=5, shelter_every=5)
    return load_network(t.osm, state_dir=root / "state"), load_shelters(t.shelters), load_hazard_geojson(t.hazards)


@pytest.fixture(scope="module")
def gridtown() -> Town:
    net = grid_network(900, seed=13)
    return net, grid_shelters(net, per=60, seed=13), []


def with_parallel_edges(net: RoadNetwork, share: float, seed: int) -> RoadNetwork:
    """``net`` plus a second, bent and slower road beside ``share`` of its edges (same ends), so that
    pairs hold parallel directed edges (the towns above have none; real extracts have some)."""
    rng = np.random.default_rng(seed)
    dup = np.sort(rng.choice(net.n_edges, int(share * net.n_edges), replace=False))
    off = net.coord_offsets
    mid = (net.coords[off[dup]] + net.coords[off[dup + 1] - 1]) / 2 + rng.uniform(-2e-4, 2e-4, (len(dup), 2))
    bent = np.stack([net.coords[off[dup]], mid, net.coords[off[dup + 1] - 1]], axis=1).reshape(-1, 2)
    slower = rng.uniform(0.8, 3.0, len(dup))  # some faster than the first road: either can be a pair's least
    times = {p: (np.concatenate([f, f[dup] * slower]), np.concatenate([b, b[dup] * slower]))
             for p, (f, b) in net.times.items()}
    return RoadNetwork(net.node_osmid, net.node_lon, net.node_lat, np.concatenate([net.edge_u, net.edge_u[dup]]),
                       np.concatenate([net.edge_v, net.edge_v[dup]]), np.concatenate([net.edge_length,
                                                                                      net.edge_length[dup] * slower]),
                       np.concatenate([net.edge_name, net.edge_name[dup]]),
                       np.concatenate([net.edge_highway, net.edge_highway[dup]]),
                       np.concatenate([off, off[-1] + 3 * np.arange(1, len(dup) + 1)]),
                       np.concatenate([net.coords, bent]), net.names, times, net.epsg)


@pytest.fixture(scope="module")
def paralleltown() -> Town:
    net = with_parallel_edges(grid_network(900, seed=17), 0.3, seed=17)
    assert all(net.profile(p).edge_pairs[2].any() for p in ("walk", "car"))  # parallel pairs there are
    return net, grid_shelters(net, per=60, seed=17), []


def _polygon(net: RoadNetwork, at: float, half_m: float, turn: float) -> shapely.Polygon:
    """A box of half-width ``half_m`` metres around node ``at * n``, turned by ``turn`` radians."""
    i = min(int(at * net.n_nodes), net.n_nodes - 1)
    x, y = float(net.node_lon[i]), float(net.node_lat[i])
    dy = half_m / 111_320.0
    dx = dy / np.cos(np.radians(y))
    ang = turn + np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
    return shapely.Polygon(np.column_stack([x + dx * np.sqrt(2) * np.cos(ang), y + dy * np.sqrt(2) * np.sin(ang)]))


def rebuilt(net: RoadNetwork, areas: list[HazardArea], profile: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The oracle: factors, directed-edge and pair weights built from nothing."""
    mult = edge_multipliers(net, areas)
    pg = net.profile(profile)
    de_w = pg.de_time * mult[pg.de_base]
    de_w[~np.isfinite(de_w)] = BLOCKED_WEIGHT
    return mult, de_w, pg.pair_weights(de_w)


unit = st.floats(0.0, 0.999)
step = st.one_of(
    st.tuples(st.just("add"), unit, st.floats(10.0, 300.0), st.floats(0.0, 1.6),
              st.sampled_from(["blocked", "penalty"]), st.floats(1.0, 6.0), st.booleans()),
    st.tuples(st.just("remove"), unit),
    st.tuples(st.just("remove_two"), unit, unit),
    st.tuples(st.just("reseverity"), unit, st.sampled_from(["blocked", "penalty"]), st.floats(1.0, 6.0)),
    st.tuples(st.just("move"), unit, unit, st.floats(10.0, 300.0)),
    st.tuples(st.just("level"), unit, st.integers(0, 5)),
    st.tuples(st.just("redraw"), unit, st.sampled_from(["blocked", "penalty"]), st.floats(1.0, 6.0)),
)


def _apply(eng: Engine, town: Town, op: tuple[Any, ...], k: int) -> None:
    net, _, gauge_areas = town
    areas = eng.state.areas
    own = sorted(a for a in areas if a.startswith("x"))
    kind = op[0]
    if kind == "add":
        _, at, half, turn, severity, factor, exercise = op
        eng.update(add_areas=[HazardArea(id=f"x{k}", hazard="flood", geometry=_polygon(net, at, half, turn),
                                         severity=severity, penalty_factor=factor, exercise=exercise)])
    elif kind == "remove" and own:
        eng.update(remove_areas=[own[int(op[1] * len(own))]])
    elif kind == "remove_two" and own:
        eng.update(remove_areas=sorted({own[int(op[1] * len(own))], own[int(op[2] * len(own))]}))
    elif kind == "reseverity" and own:
        a = areas[own[int(op[1] * len(own))]]
        eng.update(add_areas=[replace(a, severity=op[2], penalty_factor=op[3])])
    elif kind == "redraw" and own:  # the same coordinates as a new object (an area read again), other severity
        a = areas[own[int(op[1] * len(own))]]
        eng.update(add_areas=[replace(a, geometry=shapely.from_wkb(shapely.to_wkb(a.geometry)), severity=op[2],
                                      penalty_factor=op[3])])
    elif kind == "move" and own:
        a = areas[own[int(op[1] * len(own))]]
        eng.update(add_areas=[replace(a, geometry=_polygon(net, op[2], op[3], 0.3))])
    elif kind == "level" and gauge_areas:
        gauges = sorted({a.station_id for a in gauge_areas if a.station_id})
        eng.update(alert_levels={gauges[int(op[1] * len(gauges))]: op[2]})


def _run(town: Town, ops: list[tuple[Any, ...]]) -> int:
    """Apply ``ops``, comparing every field's factors and weights with the oracle; returns how many
    hazard indexes were built from a parent (so the patch path was taken)."""
    net, shelters, gauge_areas = town
    eng = Engine(net, shelters=shelters, areas=gauge_areas, warm=KEYS)
    for k, op in enumerate(ops):
        _apply(eng, town, op, k)
        for key in KEYS:
            f = eng.field(*key)
            active = eng.state.active(exercise=key[2])
            mult, de_w, pair_w = rebuilt(net, active, key[0])
            where = f"{key} after step {k} of {ops}"
            assert np.array_equal(f.mult, mult), f"edge factors differ: {where}"
            assert np.array_equal(f.de_weight, de_w), f"directed-edge weights differ: {where}"
            assert np.array_equal(f.pair_weight, pair_w), f"pair weights differ: {where}"
            some = np.arange(0, len(pair_w), 7)
            assert np.array_equal(f.pair_weight[some], pair_w[some])
            assert f.de_weight[len(de_w) // 2] == de_w[len(de_w) // 2]  # one edge, as routes read it
            assert np.array_equal(f.de_weight[3:40], de_w[3:40])
    return sum(1 for hz in eng._hazard_indexes.values() if hz.edits)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=10))
def test_patched_weights_equal_the_rebuild_on_drilltown(drilltown: Town, ops: list[tuple[Any, ...]]) -> None:
    patched = _run(drilltown, ops)
    assert patched or not any(op[0] == "add" for op in ops)  # an added area is patched in


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=10))
def test_patched_weights_equal_the_rebuild_on_gridtown(gridtown: Town, ops: list[tuple[Any, ...]]) -> None:
    patched = _run(gridtown, ops)
    assert patched or not any(op[0] == "add" for op in ops)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=10))
def test_patched_weights_equal_the_rebuild_with_parallel_edges(paralleltown: Town, ops: list[tuple[Any, ...]]) -> None:
    patched = _run(paralleltown, ops)
    assert patched or not any(op[0] == "add" for op in ops)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(1, 6))
def test_pair_weights_patched_on_base_edges_equal_the_rebuild(paralleltown: Town, seed: int, steps: int) -> None:
    """:meth:`PairWeights.patched` from random factor changes (parallel edges among them) equals building
    the weights whole, bit for bit, profile by profile."""
    net = paralleltown[0]
    rng = np.random.default_rng(seed)
    for profile in ("walk", "car", "reduced_mobility"):
        pg = net.profile(profile)
        parallel = np.unique(pg.de_base[np.repeat(pg.edge_pairs[2], np.diff(pg.pair_start))])
        mult = np.ones(net.n_edges)
        w = PairWeights(pg, mult, BLOCKED_WEIGHT)
        for _ in range(steps):
            edges = np.unique(np.concatenate([rng.integers(net.n_edges, size=int(rng.integers(0, 40))),
                                              rng.choice(parallel, int(rng.integers(0, 6)))]))
            new = mult.copy()
            new[edges] = rng.choice([1.0, 1.5, 4.0, np.inf], len(edges))
            w = PairWeights.patched(w, new, edges)
            mult = new
            assert w.held and np.array_equal(w.whole(), PairWeights(pg, mult, BLOCKED_WEIGHT).whole())


def test_a_removed_area_is_patched_from_the_larger_set(gridtown: Town) -> None:
    """Removing the middle one of three areas (a set never seen) patches the three-area index (the
    most recent of the nearest kept sets), and where the removed area overlapped a kept one the kept
    one's factor comes back."""
    net = gridtown[0]
    ops: list[tuple[Any, ...]] = [("add", 0.40, 150.0, 0.0, "blocked", 1.0, False),
                                  ("add", 0.40, 200.0, 0.5, "penalty", 3.0, False),
                                  ("add", 0.40, 120.0, 1.0, "penalty", 2.0, False)]
    eng = Engine(net, shelters=gridtown[1], warm=KEYS[:1])
    for k, op in enumerate(ops):
        _apply(eng, gridtown, op, k)
    three = eng._hazard_index(eng.state.active(exercise=False))
    eng.update(remove_areas=["x1"])
    f = eng.field(*KEYS[0])
    active = eng.state.active(exercise=False)
    mult, de_w, pair_w = rebuilt(net, active, "walk")
    hz = eng._hazard_index(active)
    changed = hz.edges_changed_from(three.mult)
    assert changed is not None and len(changed) < net.n_edges // 4  # patched from the three-area set
    overlap = np.intersect1d(eng._hit_cache["x1"][1], eng._hit_cache["x0"][1])
    assert len(overlap) and np.all(np.isinf(f.mult[overlap]))  # x0 still blocks where x1 was too
    assert np.array_equal(f.mult, mult) and np.array_equal(f.de_weight, de_w)
    assert np.array_equal(f.pair_weight, pair_w)
    assert np.all(f.mult[np.setdiff1d(np.arange(net.n_edges), changed)] == three.mult[
        np.setdiff1d(np.arange(net.n_edges), changed)])


@pytest.mark.parametrize("mode", ["eager", "lazy", "lazy-general"])
def test_pair_weights_read_as_the_rebuild(gridtown: Town, drilltown: Town, mode: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """:class:`PairWeights` (one array, or computed when read on a large graph): single pairs, index
    arrays, masks, slices and the whole array equal the rebuild. ``lazy-general`` takes the path of
    graphs with parallel edges (least edge per pair) on these graphs, whose pairs have one edge each."""
    if mode != "eager":
        monkeypatch.setattr(evac.network, "EAGER_PAIRS", 0)
    for net, profile in ((gridtown[0], "walk"), (drilltown[0], "car"), (drilltown[0], "reduced_mobility")):
        pg = net.profile(profile)
        area = HazardArea(id="a", hazard="flood", geometry=_polygon(net, 0.5, 150.0, 0.2))
        pen = HazardArea(id="p", hazard="flood", geometry=_polygon(net, 0.3, 200.0, 0.7), severity="penalty",
                         penalty_factor=2.5)
        mult, _, pw = rebuilt(net, [area, pen], profile)
        w = PairWeights(pg, mult, BLOCKED_WEIGHT)
        assert (w._whole is not None) == (mode == "eager")
        if mode == "lazy-general":
            w._single = False
        rng = np.random.default_rng(3)
        pairs = rng.integers(len(pw), size=200)
        assert np.array_equal(w[pairs], pw[pairs])
        assert np.array_equal(w[pairs.reshape(10, 20)], pw[pairs].reshape(10, 20))
        assert w[int(pairs[0])] == pw[pairs[0]] and np.array_equal(w[5:50], pw[5:50])
        assert np.array_equal(w[pw > 1e8], pw[pw > 1e8]) and (pw >= BLOCKED_WEIGHT).any()
        assert np.array_equal(np.asarray(w), pw) and len(w) == len(pw)
        assert w[np.zeros(0, np.int64)].shape == (0,)


def test_pairs_of_edges_holds_every_directed_edge_of_the_edges(gridtown: Town, drilltown: Town) -> None:
    for net, profile in ((gridtown[0], "walk"), (drilltown[0], "car")):
        pg = net.profile(profile)
        area = HazardArea(id="a", hazard="flood", geometry=_polygon(net, 0.5, 120.0, 0.2))
        edges = np.flatnonzero(edge_multipliers(net, [area]) != 1.0)
        assert len(edges)
        pairs = pairs_of_edges(pg, net.edge_u, net.edge_v, edges)
        d_changed = np.flatnonzero(np.isin(pg.de_base, edges))
        pair_of = np.searchsorted(pg.pair_start, d_changed, side="right") - 1
        assert len(d_changed) and np.all(np.isin(pair_of, pairs))
        # and no pair without such an edge or a parallel of one
        tails, heads = pg.pair_tail[pairs], pg.pair_head[pairs]
        ends = {(int(a), int(b)) for a, b in zip(net.edge_u[edges].tolist(), net.edge_v[edges].tolist(), strict=True)}
        assert all((a, b) in ends or (b, a) in ends for a, b in zip(tails.tolist(), heads.tolist(), strict=True))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(incremental_step, min_size=1, max_size=8))
def test_fields_with_weights_read_lazily_equal_the_full_search(gridtown: Town, ops: list[tuple[Any, ...]]) -> None:
    """The incremental oracle test (``test_evac_incremental``) with every graph's pair weights computed
    when read, as on a prefecture-scale graph."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evac.network, "EAGER_PAIRS", 0)
        net, shelters, areas = gridtown
        assert not net.profile("walk").pair_tail.shape[0] <= evac.network.EAGER_PAIRS
        run_incremental(IncrementalTown(net, shelters, areas), ops)
