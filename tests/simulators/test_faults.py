"""Each fault's effect on a stream of samples (pure: no broker, no database)."""

from __future__ import annotations

import math

import pytest

from ingest.contract import Parser, PayloadError
from simulators.faults import FaultInjector, Sample
from simulators.fleet import Encoder
from simulators.scenario import MALFORMED_VARIANTS, FaultSpec

PREFIX = "sonae/v1"


def _stream(n: int = 36, interval: float = 600.0) -> list[Sample]:
    return [Sample(i * interval, "g1", "072036", "level", 1.0 + i / 100, i, interval) for i in range(n)]


def _run(*specs: FaultSpec, samples: list[Sample] | None = None, **kw: object) -> tuple[list, FaultInjector]:
    inj = FaultInjector(list(specs), seed=3, **kw)  # type: ignore[arg-type]
    out = []
    for s in samples if samples is not None else _stream():
        out.extend(inj.apply(s))
    return out, inj


def _window(kind: str, **kw: object) -> FaultSpec:
    return FaultSpec(type=kind, devices=("g*",), kinds=("level",), start_s=3600, end_s=7200, **kw)  # type: ignore[arg-type]


def test_no_fault_passes_everything_unchanged() -> None:
    out, inj = _run()
    assert [(d.due, d.sample.value) for d in out] == [(s.t, s.value) for s in _stream()]
    assert not inj.injected


def test_fault_applies_only_to_matching_devices_kinds_and_window() -> None:
    other = [Sample(i * 600.0, "x1", "072036", "level", 1.0, i, 600.0) for i in range(36)]
    out, inj = _run(_window("dropout"), samples=other)
    assert len(out) == 36 and not inj.injected
    rain = [Sample(i * 600.0, "g1", "072036", "rain", 1.0, i, 600.0) for i in range(36)]
    out, _ = _run(_window("dropout"), samples=rain)
    assert len(out) == 36


def test_dropout_leaves_a_gap() -> None:
    out, inj = _run(_window("dropout"))
    times = [d.sample.t for d in out]
    assert not [t for t in times if 3600 <= t < 7200]
    assert len(times) == 36 - 6 and inj.injected["dropout"] == 6 and inj.expected["missing_rows"] == 6


def test_stuck_holds_the_first_value_of_the_window() -> None:
    out, _ = _run(_window("stuck"))
    values = {d.sample.t: d.sample.value for d in out}
    assert {values[t] for t in range(3600, 7200, 600)} == {1.06}
    assert values[7200] == pytest.approx(1.12)  # released after the window


def test_spike_adds_magnitude_and_implausible_ones_are_dead_letters() -> None:
    out, inj = _run(_window("spike", magnitude=3.0))
    assert [round(d.sample.value - (1 + d.sample.t / 60000), 6) for d in out if 3600 <= d.sample.t < 7200] == [3.0] * 6
    assert inj.expected["dead_letters"] == 0
    _, inj = _run(_window("spike", magnitude=5000.0))
    assert inj.expected["dead_letters"] == 6


def test_spike_probability_is_seeded() -> None:
    spec = FaultSpec(type="spike", probability=0.3, magnitude=1.0)
    a, _ = _run(spec, samples=_stream(500))
    b, _ = _run(spec, samples=_stream(500))
    spiked = [d.sample.seq for d in a if d.fault == "spike"]
    assert spiked == [d.sample.seq for d in b if d.fault == "spike"]
    assert 100 < len(spiked) < 200


def test_duplicate_sends_twice() -> None:
    out, inj = _run(_window("duplicate", gap_s=60.0))
    seqs = [d.sample.seq for d in out]
    assert len(out) == 36 + 6 and inj.expected["duplicate_rows"] == 6
    assert sorted(seqs) == sorted(list(range(36)) + list(range(6, 12)))
    assert {d.due - d.sample.t for d in out if d.fault == "duplicate"} == {60.0}


def test_out_of_order_arrives_after_the_next_reading() -> None:
    out, _ = _run(_window("out_of_order"))
    delayed = [d for d in out if d.fault == "out_of_order"]
    assert len(delayed) == 6
    assert all(d.due == d.sample.t + 900 for d in delayed)  # after the next one (t + 600)


def test_late_delivery() -> None:
    out, _ = _run(_window("late", delay_s=3600.0))
    assert {d.due - d.sample.t for d in out if d.fault == "late"} == {3600.0}


def test_clock_skew_forward_beyond_max_future_is_a_dead_letter() -> None:
    out, inj = _run(_window("clock_skew", skew_s=86400.0))
    assert {d.sample.ts_offset_s for d in out if d.fault == "clock_skew"} == {86400.0}
    assert inj.expected["dead_letters"] == 6
    _, inj = _run(_window("clock_skew", skew_s=-120.0))  # behind: stored, just wrong
    assert inj.expected["dead_letters"] == 0


def test_malformed_payloads_are_rejected_by_the_contract_for_every_variant() -> None:
    out, inj = _run(FaultSpec(type="malformed", devices=("g1",), kinds=("level",)), samples=_stream(12))
    assert [d.malformed for d in out] == list(MALFORMED_VARIANTS) * 2
    encoder = Encoder(1.8e9, exercise=True)
    parser = Parser(prefix=PREFIX)
    for d in out:
        s = d.sample
        payload = encoder.malformed(s, d.malformed)
        station = s.station + "!bad" if d.malformed == "bad_topic" else s.station
        with pytest.raises(PayloadError):
            parser.parse(f"{PREFIX}/{s.municipality}/{station}/{s.kind}", payload, now=_now())
    assert inj.expected["dead_letters"] == 12


def test_flood_sends_copies() -> None:
    out, inj = _run(_window("flood", copies=20))
    assert len(out) == 36 + 6 * 20
    assert inj.expected["duplicate_rows"] == 120 and inj.injected["flood"] == 120


def test_good_payloads_follow_the_contract() -> None:
    encoder = Encoder(1.8e9, exercise=True)
    parser = Parser(prefix=PREFIX)
    s = Sample(600.0, "g1", "072036", "level", 3.42, 7, 600.0)
    [r] = parser.parse(f"{PREFIX}/072036/g1/level", encoder.payload(s), now=_now()).readings
    assert (r.value, r.seq, r.exercise, r.ts.timestamp()) == (3.42, 7, True, 1.8e9 + 600)
    t = Sample(600.0, "g1", "072036", "telemetry", {"battery_pct": 80.0, "rssi_dbm": -71, "status": "ok"}, 1, 3600)
    readings = parser.parse(f"{PREFIX}/072036/g1/telemetry", encoder.payload(t), now=_now()).readings
    assert {r.kind for r in readings} == {"battery_pct", "rssi_dbm", "status"} and all(r.exercise for r in readings)
    real = Encoder(1.8e9, exercise=False)
    [r] = parser.parse(f"{PREFIX}/072036/g1/level", real.payload(s), now=_now()).readings
    assert r.exercise is False and b"exercise" not in real.payload(s)


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.fromtimestamp(1.8e9 + 86400, UTC)


def test_window_bounds() -> None:
    spec = _window("dropout")
    assert spec.active(3600) and not spec.active(7200) and not spec.active(3599)
    assert FaultSpec(type="dropout").end_s == math.inf
