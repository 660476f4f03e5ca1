"""The shortcuts of the route answer (issue #21) against the code they stand for, on hypothesis-random input:
the kept C encoder of ``evac.routes.dumps`` against ``json.dumps`` with the API's options, and the
rounding of the head's points (``_round7``/``_points_text``) against numpy's. Any difference fails: the
answers must stay byte for byte the same.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

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
    assert repr(_round7(v)) == repr(np.round(np.array([v]), 7).tolist()[0])  # repr: -0.0 and nan too


@given(st.lists(st.tuples(_COORD, _COORD), min_size=1, max_size=6))
def test_points_text_is_the_json_of_numpy_rounded_points(points: list[tuple[float, float]]) -> None:
    pts = [list(p) for p in points]
    assert _points_text(pts) == _json(np.round(np.array(pts, dtype=float), 7).tolist())[1:-1]
