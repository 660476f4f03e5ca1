"""Configured and bounded route fields; an update searches again only the fields whose inputs changed
(issue #21). Fields carried over are checked against a fresh engine (the oracle)."""

from __future__ import annotations

import pytest
import shapely

from evac.engine import Engine, FieldKey
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea
from evac.network import RoadNetwork
from tests.evac.field_oracle import assert_field_matches

REAL: FieldKey = ("walk", "flood", False)
DRILL: FieldKey = ("walk", "flood", True)
SLIDE: FieldKey = ("walk", "landslide", False)


@pytest.fixture(scope="module")
def net() -> RoadNetwork:
    return grid_network(1600, seed=11)


def _area(net: RoadNetwork, aid: str, node: int, *, exercise: bool = False) -> HazardArea:
    x, y = float(net.node_lon[node]), float(net.node_lat[node])
    return HazardArea(id=aid, hazard="flood", geometry=shapely.box(x - 0.002, y - 0.002, x + 0.002, y + 0.002),
                      exercise=exercise)


def _assert_same_as_fresh(eng: Engine, key: FieldKey) -> None:
    st = eng.state
    fresh = Engine(eng.network, shelters=st.shelters.values(), areas=st.areas.values(),
                   alert_levels=st.alert_levels).field(*key)
    f = eng.field(*key)
    assert f.version == st.version
    assert_field_matches(f, fresh, eng.network)  # ties may take another next hop (incremental updates)


def test_drill_area_searches_only_exercise_fields(net: RoadNetwork) -> None:
    eng = Engine(net, shelters=grid_shelters(net, per=100, seed=2), warm=[REAL, DRILL, SLIDE])
    before = eng.recomputes.copy()
    eng.update(add_areas=[_area(net, "drill", 500, exercise=True)])
    assert eng.recomputes - before == {DRILL: 1}
    before = eng.recomputes.copy()
    eng.update(add_areas=[_area(net, "real", 900)])  # a real area is in force in drills too
    assert eng.recomputes - before == {REAL: 1, DRILL: 1, SLIDE: 1}
    for key in (REAL, DRILL, SLIDE):
        _assert_same_as_fresh(eng, key)


def test_shelter_change_searches_only_its_hazards(net: RoadNetwork) -> None:
    shelters = grid_shelters(net, per=100, seed=3)
    eng = Engine(net, shelters=shelters, warm=[REAL, SLIDE])
    target = next(s for s in shelters if not s.rated_for("landslide"))
    before = eng.recomputes.copy()
    eng.update(is_open={target.id: False})
    assert eng.recomputes - before == {REAL: 1}
    before = eng.recomputes.copy()
    eng.update(alert_levels={"no-such-gauge": 4})  # no area follows it: nothing to search
    assert eng.recomputes - before == {}
    _assert_same_as_fresh(eng, SLIDE)
    _assert_same_as_fresh(eng, REAL)
    assert target.id not in {s.id for s in eng.field(*REAL).shelters}  # the change reached the field


def test_on_demand_fields_are_bounded(net: RoadNetwork) -> None:
    eng = Engine(net, shelters=grid_shelters(net, per=100, seed=4), warm=[REAL], max_fields=2)
    asked = [("car", "flood", False), ("walk", "landslide", False), ("walk", "flood", True),
             ("reduced_mobility", "flood", False), ("car", "flood", True)]
    for key in asked:
        eng.field(*key)
        assert len(eng._snap.fields) <= 1 + 2
    assert {k for k in asked if eng.has_field(*k)} == set(asked[-2:])
    before = eng.recomputes.copy()
    eng.update(add_areas=[_area(net, "a", 700)])
    assert set(eng.recomputes - before) == {REAL, *asked[-2:]}  # warm + the two most recent, nothing else
    assert len(eng._snap.fields) == 3
