"""A recompute reuses what did not change (hazard index, shelter road points, source rows, search) and
gives exactly what a fresh engine gives (the oracle), also after a change is reverted (issue #13).
The engines here search whole graphs (``incremental=False``), so next hops and routes equal the oracle's
even where two ways tie; incremental updates: ``test_evac_incremental.py``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evac.engine import Engine, FieldKey
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea
from evac.network import RoadNetwork
from evac.shelters import Shelter

REAL: FieldKey = ("walk", "flood", False)
DRILL: FieldKey = ("walk", "flood", True)
CAR: FieldKey = ("car", "flood", False)
SLIDE: FieldKey = ("walk", "landslide", False)
KEYS = (REAL, DRILL, CAR, SLIDE)


@pytest.fixture(scope="module")
def net() -> RoadNetwork:
    return grid_network(900, seed=5)


def _box(net: RoadNetwork, node: int, half: float) -> shapely.Polygon:
    x, y = float(net.node_lon[node]), float(net.node_lat[node])
    return shapely.box(x - half, y - half, x + half, y + half)


def _fresh(eng: Engine) -> Engine:
    st_ = eng.state
    return Engine(eng.network, shelters=st_.shelters.values(), areas=st_.areas.values(),
                  alert_levels=st_.alert_levels)


def _probe_points(net: RoadNetwork) -> list[tuple[float, float]]:
    rng = np.random.default_rng(3)
    nodes = rng.choice(net.n_nodes, size=25, replace=False)
    return [(float(net.node_lat[i]) + float(rng.uniform(-2e-4, 2e-4)),
             float(net.node_lon[i]) + float(rng.uniform(-2e-4, 2e-4))) for i in nodes.tolist()]


def assert_same_as_fresh(eng: Engine) -> None:
    """Every key's field and some routes equal those of an engine built from scratch at the same state."""
    fresh = _fresh(eng)
    for key in KEYS:
        f, g = eng.field(*key), fresh.field(*key)
        assert f.version == eng.state.version
        assert np.array_equal(f.dist, g.dist), key
        assert np.array_equal(f.next_node, g.next_node), key
        assert np.array_equal(f.source, g.source), key
        assert np.array_equal(f.de_weight, g.de_weight), key
        assert [s for s in f.shelters] == [s for s in g.shelters], key  # same shelters, same state of each
        for name in ("shelter", "end", "edge", "along", "partial_s", "egress_s", "offset"):
            assert np.array_equal(getattr(f.sources, name), getattr(g.sources, name)), (key, name)
        for name in ("edge", "shelter", "along", "egress_s"):
            assert np.array_equal(getattr(f.stops, name), getattr(g.stops, name)), (key, name)
    for lat, lon in _probe_points(eng.network):
        for key in (REAL, CAR):
            a = eng.route_result(lat, lon, profile=key[0], hazard=key[1], exercise=key[2])
            b = fresh.route_result(lat, lon, profile=key[0], hazard=key[1], exercise=key[2])
            assert (a.status, a.path, a.duration_s) == (b.status, b.path, b.duration_s)
            assert (a.shelter and a.shelter.id) == (b.shelter and b.shelter.id)


def test_changes_and_reverts_equal_a_fresh_engine(net: RoadNetwork) -> None:
    shelters = grid_shelters(net, per=100, seed=4)
    base = [HazardArea(id="h0", hazard="flood", geometry=_box(net, 100, 0.002))]
    eng = Engine(net, shelters=shelters, areas=base, warm=KEYS, incremental=False)  # exact next hops: full searches
    assert_same_as_fresh(eng)
    mult0 = eng.field(*REAL).mult

    # an area drawn, then withdrawn: the withdrawn state reuses the earlier hazard index
    cut = HazardArea(id="cut", hazard="flood", geometry=_box(net, 450, 0.003))
    eng.update(add_areas=[cut])
    assert not np.array_equal(eng.field(*REAL).mult, mult0)  # the change reached the field
    assert_same_as_fresh(eng)
    eng.update(remove_areas=["cut"])
    assert eng.field(*REAL).mult is mult0
    assert_same_as_fresh(eng)
    eng.update(add_areas=[cut])
    assert_same_as_fresh(eng)

    # the same id with another shape is another area: nothing of the old one is reused
    eng.update(add_areas=[replace(cut, geometry=_box(net, 460, 0.0015))])
    assert_same_as_fresh(eng)

    # a penalty area and a gauge area: activated by its level, then cleared again
    eng.update(add_areas=[HazardArea(id="slow", hazard="flood", geometry=_box(net, 300, 0.003), severity="penalty",
                                     penalty_factor=3.0),
                          HazardArea(id="gauge", hazard="flood", geometry=_box(net, 620, 0.002), source="gauge",
                                     station_id="st1", activation_level=3)])
    assert_same_as_fresh(eng)
    mult1 = eng.field(*REAL).mult
    eng.update(alert_levels={"st1": 4})
    assert eng.field(*REAL).mult is not mult1
    assert_same_as_fresh(eng)
    eng.update(alert_levels={"st1": 1})
    assert eng.field(*REAL).mult is mult1
    assert_same_as_fresh(eng)

    # a drill area counts in exercise mode only
    eng.update(add_areas=[HazardArea(id="drill", hazard="flood", geometry=_box(net, 700, 0.002), exercise=True)])
    assert_same_as_fresh(eng)

    # a shelter closes and reopens; another fills and empties; the hazard index stays the same
    target = shelters[0]
    mult = eng.field(*REAL).mult
    eng.update(is_open={target.id: False})
    assert target.id not in {s.id for s in eng.field(*REAL).shelters}
    assert eng.field(*REAL).mult is mult
    assert_same_as_fresh(eng)
    eng.update(is_open={target.id: True})
    assert target.id in {s.id for s in eng.field(*REAL).shelters}
    assert_same_as_fresh(eng)
    other = shelters[1]
    eng.update(occupancy={other.id: 500})
    assert other.id not in {s.id for s in eng.field(*REAL).shelters}
    assert_same_as_fresh(eng)
    eng.update(occupancy={other.id: 10})
    assert_same_as_fresh(eng)

    # a shelter moves (its road points change) and a new one is added
    moved = replace(shelters[2], lat=shelters[2].lat + 0.001)
    eng.update(shelters=[moved, *shelters[3:], shelters[0], shelters[1],
                         Shelter(id="new", name="new", lat=float(net.node_lat[50]) + 5e-5,
                                 lon=float(net.node_lon[50]), hazards=frozenset({"flood", "landslide"}),
                                 capacity=None)])
    assert_same_as_fresh(eng)
    eng.update(shelters=shelters)
    assert_same_as_fresh(eng)


def test_occupancy_change_reuses_the_search_and_shows_the_new_occupancy(net: RoadNetwork) -> None:
    shelters = grid_shelters(net, per=100, seed=6)
    eng = Engine(net, shelters=shelters, areas=[HazardArea(id="a", hazard="flood", geometry=_box(net, 200, 0.002))],
                 warm=[REAL])
    before = eng.recomputes.copy()
    f0 = eng.field(*REAL)
    eng.update(occupancy={shelters[0].id: 7})  # not full: the same rows, the same search
    f1 = eng.field(*REAL)
    assert eng.recomputes == before
    assert f1.dist is f0.dist and f1.version == f0.version + 1
    assert {s.id: s.occupancy for s in f1.shelters}[shelters[0].id] == 7
    assert_same_as_fresh(eng)


def test_a_shelter_change_recomputes_only_the_hazards_it_is_rated_for(net: RoadNetwork) -> None:
    """A field is carried over unchanged when no shelter rated for its hazard changed (the update replaces
    only the shelters it changes; the check looks at those), and recomputed when one did."""
    shelters = grid_shelters(net, per=100, seed=6)
    flood_only = replace(shelters[0], hazards=frozenset({"flood"}))
    slide_only = replace(shelters[1], hazards=frozenset({"landslide"}))
    shelters = [flood_only, slide_only, *shelters[2:]]
    eng = Engine(net, shelters=shelters, warm=[REAL, SLIDE])
    for who in (flood_only, slide_only):
        for is_open in (False, True):
            before = {k: eng.field(*k) for k in (REAL, SLIDE)}
            eng.update(is_open={who.id: is_open})
            after = {k: eng.field(*k) for k in (REAL, SLIDE)}
            for key, hazard in ((REAL, "flood"), (SLIDE, "landslide")):
                changed = after[key].shelters != before[key].shelters
                assert changed == who.rated_for(hazard), (who.id, is_open, key)
                if not changed:  # carried over without a recompute: the very same lists and search result
                    assert after[key].shelters is before[key].shelters, (who.id, is_open, key)
                    assert after[key].dist is before[key].dist, (who.id, is_open, key)
            assert_same_as_fresh(eng)
    # a new shelter mapping with other ids is compared in full
    eng.update(shelters=[s for s in shelters if s is not slide_only])
    assert slide_only.id not in {s.id for s in eng.field(*SLIDE).shelters}
    assert_same_as_fresh(eng)


_OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.integers(0, 3), st.integers(0, 899), st.sampled_from(["blocked", "penalty"])),
    st.tuples(st.just("remove"), st.integers(0, 3)),
    st.tuples(st.just("level"), st.integers(0, 5)),
    st.tuples(st.just("open"), st.integers(0, 8), st.booleans()),
    st.tuples(st.just("fill"), st.integers(0, 8), st.booleans()),
), min_size=1, max_size=8)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS)
def test_random_changes_equal_a_fresh_engine(net: RoadNetwork, ops: list[tuple]) -> None:
    shelters = grid_shelters(net, per=100, seed=8)
    gauge = HazardArea(id="g", hazard="flood", geometry=_box(net, 333, 0.002), source="gauge", station_id="st",
                       activation_level=3)
    eng = Engine(net, shelters=shelters, areas=[gauge], warm=[REAL, CAR], incremental=False)
    made: dict[tuple[int, int, str], HazardArea] = {}
    for op in ops:
        if op[0] == "add":
            _, slot, node, sev = op
            # the same slot and node give the same object back (a revert), else a new area for the slot
            area = made.setdefault((slot, node, sev), HazardArea(
                id=f"a{slot}", hazard="flood", geometry=_box(net, node, 0.0015), severity=sev,
                penalty_factor=2.5 if sev == "penalty" else 1.0))
            eng.update(add_areas=[area])
        elif op[0] == "remove":
            eng.update(remove_areas=[f"a{op[1]}"])
        elif op[0] == "level":
            eng.update(alert_levels={"st": op[1]})
        elif op[0] == "open":
            eng.update(is_open={shelters[op[1]].id: op[2]})
        else:
            eng.update(occupancy={shelters[op[1]].id: 500 if op[2] else 0})
        fresh = _fresh(eng)
        for key in (REAL, CAR):
            f, g = eng.field(*key), fresh.field(*key)
            assert np.array_equal(f.dist, g.dist)
            assert np.array_equal(f.next_node, g.next_node)
            assert np.array_equal(f.source, g.source)
            assert [s.id for s in f.shelters] == [s.id for s in g.shelters]
