"""SenML packs resolved per RFC 8428 §4: base name, time, unit, value, sum and version; relative times."""

import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from ingest.contract import Parser, PayloadError

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
P = Parser(prefix="sonae/v1")


def parse(pack: list[dict[str, object]], station: str = "g01"):  # type: ignore[no-untyped-def]
    return P.parse(f"sonae/v1/072036/{station}/senml", json.dumps(pack).encode(), now=NOW)


def test_issue_15_base_value_pack_stores_3_42_and_3_51() -> None:
    bt = NOW.timestamp() - 600
    parsed = parse([{"bn": "g01/", "bt": bt, "bu": "m", "bv": 3.0, "n": "level", "v": 0.42},
                    {"n": "level", "t": 300, "v": 0.51}])
    assert [(r.station_id, r.kind) for r in parsed.readings] == [("g01", "level"), ("g01", "level")]
    assert [r.value for r in parsed.readings] == pytest.approx([3.42, 3.51], abs=1e-12)
    assert [r.ts for r in parsed.readings] == [NOW - timedelta(seconds=600), NOW - timedelta(seconds=300)]
    assert not parsed.problems


def test_base_value_is_in_the_base_unit_and_converted_with_the_record() -> None:
    parsed = parse([{"bn": "g01/", "bt": NOW.timestamp(), "bu": "cm", "bv": 300, "n": "level", "v": 42},
                    {"n": "level", "u": "cm", "t": -60, "v": 51}])
    assert [r.value for r in parsed.readings] == pytest.approx([3.42, 3.51])


def test_a_unit_on_the_record_overrides_the_base_unit() -> None:
    parsed = parse([{"bu": "cm", "n": "level", "v": 250}, {"n": "level", "u": "m", "t": -600, "v": 2.6}])
    assert [r.value for r in parsed.readings] == pytest.approx([2.5, 2.6])


def test_times_below_2_28_are_relative_to_now() -> None:
    """RFC 8428 §4.5.3: a resolved time below 2**28 is relative; 0 is "now", negative is in the past."""
    parsed = parse([{"n": "level", "v": 1.0}, {"n": "level", "t": -120, "v": 1.1},
                    {"bt": -3600, "n": "level", "t": 60, "v": 1.2}])
    assert [r.ts for r in parsed.readings] == [NOW, NOW - timedelta(seconds=120), NOW - timedelta(seconds=3540)]


def test_an_absolute_base_time_plus_offsets() -> None:
    bt = 1795000000  # 2026-11-18, an absolute time (≥ 2**28)
    parsed = parse([{"bt": bt, "n": "level", "v": 1.0}, {"n": "level", "t": 600, "v": 1.0}])
    assert [r.ts.timestamp() for r in parsed.readings] == [bt, bt + 600]


def test_base_sum_and_sum_are_resolved_but_a_sum_alone_is_refused() -> None:
    parsed = parse([{"bs": 100.0, "n": "rain", "u": "mm", "v": 2.5, "s": 12.0},
                    {"n": "rain", "u": "mm", "s": 14.5}])
    assert [r.value for r in parsed.readings] == [2.5]
    (problem,) = parsed.problems
    assert problem.reason == "bad_senml" and "sum" in problem.detail


def test_a_non_finite_resolved_sum_is_refused() -> None:
    parsed = parse([{"bs": 1e308, "n": "rain", "u": "mm", "v": 2.5, "s": 1e308}, {"n": "rain", "v": 1.0}])
    assert [r.value for r in parsed.readings] == [1.0] and parsed.problems[0].reason == "not_finite"


def test_bver_10_or_less_is_read_and_a_newer_version_refuses_the_whole_pack() -> None:
    assert parse([{"bver": 10, "n": "level", "v": 1.0}]).readings
    assert parse([{"bver": 5, "n": "level", "v": 1.0}]).readings
    with pytest.raises(PayloadError) as info:
        parse([{"n": "level", "v": 1.0}, {"bver": 13, "n": "level", "t": -60, "v": 1.1}])
    assert info.value.reason == "unsupported_senml_version" and "13" in info.value.detail
    with pytest.raises(PayloadError) as info:
        parse([{"bver": "10", "n": "level", "v": 1.0}])
    assert info.value.reason == "bad_senml"


def test_an_unknown_must_understand_field_refuses_its_record() -> None:
    parsed = parse([{"n": "level", "v": 1.0, "calib_": 2}, {"n": "level", "t": -60, "v": 1.1, "colour": "blue"}])
    assert [r.value for r in parsed.readings] == [1.1]
    assert parsed.problems[0].reason == "bad_senml" and "calib_" in parsed.problems[0].detail


def test_a_bad_base_field_fails_the_records_that_would_resolve_against_it() -> None:
    """Not resolving against the previous base instead: that would store another station's or time's data."""
    parsed = parse([{"bn": "s1/", "n": "level", "v": 1.0},
                    {"bn": ["s2/"], "n": "level", "v": 2.0},
                    {"n": "level", "t": -60, "v": 2.1},
                    {"bn": "s3/", "n": "level", "v": 3.0}], station="gw")
    assert [(r.station_id, r.value) for r in parsed.readings] == [("s1", 1.0), ("s3", 3.0)]
    assert [p.reason for p in parsed.problems] == ["bad_senml", "bad_senml"]
    assert "bn" in parsed.problems[1].detail


def test_status_is_a_string_value_and_other_value_types_are_refused() -> None:
    parsed = parse([{"n": "status", "vs": "fault"}, {"n": "status", "v": 2}, {"n": "level", "vb": True},
                    {"n": "level", "vd": "AAE="}])
    assert [(r.kind, r.value) for r in parsed.readings] == [("status", 2.0)]
    assert [p.reason for p in parsed.problems] == ["bad_senml"] * 3


def test_the_drill_mark_applies_to_its_record_and_the_ones_after() -> None:
    parsed = parse([{"n": "level", "v": 1.0}, {"exercise_": True, "n": "level", "t": -60, "v": 1.1},
                    {"n": "level", "t": -120, "v": 1.2}])
    assert [r.exercise for r in parsed.readings] == [False, True, True]
    assert all(math.isfinite(r.value) for r in parsed.readings)
