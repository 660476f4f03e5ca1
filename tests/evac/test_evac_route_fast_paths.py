"""The shortcuts of the route answer (issue #21) against the code they stand for, on hypothesis-random input:
the kept C encoder of ``evac.routes.dumps`` against ``json.dumps`` with the API's options, the rounding of
the head's points (``_round7``/``_points_text``) against numpy's, ``EdgeIndex.near`` against ``within``,
and ``Engine.route_start`` against the former query (``route_start_oracle``) on the drill town and the
north-Bayreuth extract with blocked, penalty and drill areas in force (``test_evac_route_body._engine``).
Any difference fails: the answers must stay byte for byte the same.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import pytest
import route_start_oracle as oracle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_evac_route_body import _engine, _position

from evac.engine import RouteResult, RouteStart
from evac.graph import PROFILE_NAMES
from evac.routes import _points_text, _round7, dumps


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text() | st.dates() | st.datetimes(timezones=st.just(dt.UTC)))
_VALUES = st.recursive(_LEAVES, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                       | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)


@given(_VALUES)
def test_dumps_is_json_dumps(value: object) -> None:
    assert dumps(value) == _json(value)


@given(st.dictionaries(st.integers() | st.floats() | st.booleans() | st.none(), st.text(), max_size=4))
def test_dumps_writes_other_keys_as_json_dumps_does(value: dict[object, str]) -> None:
    assert dumps(value) == _json(value)


_COORD = (st.floats(allow_nan=True, allow_infinity=True)
          | st.floats(-180.0, 180.0)
          | st.integers(-2 * 10**9, 2 * 10**9).map(lambda k: k / 2e7)  # halves of the 7th decimal
          | st.integers(-2 * 10**9, 2 * 10**9).map(lambda k: float(np.nextafter(k / 2e7, math.inf))))


@given(_COORD)
def test_round7_is_numpy_round(v: float) -> None:
    with np.errstate(all="ignore"):
        want = np.round(np.array([v]), 7).tolist()[0]
    assert repr(_round7(v)) == repr(want)  # repr: -0.0 and nan too


@given(st.lists(st.tuples(_COORD, _COORD), min_size=1, max_size=6))
def test_points_text_is_the_json_of_numpy_rounded_points(points: list[tuple[float, float]]) -> None:
    pts = [list(p) for p in points]
    with np.errstate(all="ignore"):
        want = np.round(np.array(pts, dtype=float), 7).tolist()
    assert _points_text(pts) == _json(want)[1:-1]


# -- the core query: Engine.route_start against the former one (route_start_oracle) -------------------

def _key(r: RouteResult | RouteStart) -> tuple[object, ...]:
    """Everything an answer is made of, as exact numbers (repr: -0.0 and nan compare too)."""
    if isinstance(r, RouteStart):
        return ("start", repr((r.duration_s, r.snap_distance_m, r.access_s, r.first, r.end, r.origin)), r.field)
    return (r.status, repr((r.duration_s, r.snap_distance_m, r.access_s, r.first, r.last, r.egress_m, r.egress_s,
                            r.origin, r.path)), r.shelter, [a.id for a in r.hazards_here], r.field)


@pytest.fixture(scope="module")
def tmp_nets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fast_paths")


@pytest.mark.parametrize("name", ["drilltown", "bayreuth"])
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fx=st.floats(-0.05, 1.05), fy=st.floats(-0.05, 1.05),
       hazard=st.sampled_from(["flood", "earthquake", "landslide"]), profile=st.sampled_from(PROFILE_NAMES),
       exercise=st.booleans())
def test_route_start_equals_the_former_query(name: str, tmp_nets: Path, fx: float, fy: float, hazard: str,
                                             profile: str, exercise: bool) -> None:
    engine = _engine(name, tmp_nets)
    lat, lon = _position(engine, fx, fy)
    engine.field(profile, hazard, exercise)
    got = engine.route_start(lat, lon, profile=profile, hazard=hazard, exercise=exercise)
    assert _key(got) == _key(oracle.route_start(engine, lat, lon, profile=profile, hazard=hazard, exercise=exercise))


@pytest.mark.parametrize("name", ["drilltown", "bayreuth"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fx=st.floats(-0.05, 1.05), fy=st.floats(-0.05, 1.05), radius=st.floats(0.0, 400.0),
       profile=st.sampled_from(PROFILE_NAMES))
def test_near_is_within_as_a_list(name: str, tmp_nets: Path, fx: float, fy: float, radius: float,
                                  profile: str) -> None:
    engine = _engine(name, tmp_nets)
    lat, lon = _position(engine, fx, fy)
    net = engine.network
    x, y = net.transformer().transform(lon, lat)
    idx = net.profile(profile).index
    want = idx.within(x, y, radius)
    got = idx.near(x, y, radius)
    assert [(d, a, e, qx, qy) for d, a, _, e, qx, qy in got] == list(zip(
        want.dist.tolist(), want.along.tolist(), want.edge.tolist(), want.x.tolist(), want.y.tolist(), strict=True))
