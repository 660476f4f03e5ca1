"""The flood model: lag and attenuation downstream, volume kept, stage from the rating, repeatable."""

from __future__ import annotations

import pytest

from simulators.fleet import Fleet
from simulators.hydrology import Rating, Reach, Storm, rating_for_thresholds, simulate_river
from simulators.scenario import load_scenario
from tests.simulators.support import SCENARIOS

STORM = [Storm(start_s=2 * 3600, duration_s=12 * 3600, peak_mm_h=30.0)]


def test_flood_wave_arrives_later_and_lower_downstream() -> None:
    # rain only on the head catchment: what the lower gauges see is the routed wave alone
    reaches = [Reach("a", 300, lag_s=0, base_flow_m3s=20),
               Reach("b", 0, lag_s=2 * 3600, k_route_s=3 * 3600, base_flow_m3s=0),
               Reach("c", 0, lag_s=3 * 3600, k_route_s=4 * 3600, base_flow_m3s=0)]
    series = simulate_river(reaches, STORM, 72 * 3600)
    peaks = {r.station: (series.peak(r.station)[0], max(series.discharge[r.station])) for r in reaches}
    assert peaks["a"][0] < peaks["b"][0] < peaks["c"][0]
    assert peaks["b"][0] - peaks["a"][0] >= 2 * 3600  # at least the travel time
    assert peaks["a"][1] > peaks["b"][1] > peaks["c"][1]  # attenuation
    volumes = [sum(q - 20 for q in series.discharge[r.station]) * series.dt for r in reaches]
    assert volumes[1] == pytest.approx(volumes[0], rel=0.01)  # routing keeps the volume
    # runoff volume = runoff coefficient × rain volume
    rain_m3 = sum(series.rain) * series.dt / 3600 / 1000 * 300e6
    assert volumes[0] == pytest.approx(0.6 * rain_m3, rel=0.02)


def test_hydrograph_rises_peaks_and_recedes() -> None:
    series = simulate_river([Reach("a", 200, k_s=3 * 3600)], STORM, 72 * 3600)
    stage = series.stage["a"]
    t_peak, h_peak = series.peak("a")
    assert 8 * 3600 < t_peak < 16 * 3600  # after the rain's peak (8 h), before it long stopped
    assert stage[0] == pytest.approx(stage[-1], abs=0.05)  # back to base flow
    i = int(t_peak / series.dt)
    assert all(x <= y + 1e-9 for x, y in zip(stage[: i], stage[1: i + 1], strict=True))  # monotone rise
    assert all(x >= y - 1e-9 for x, y in zip(stage[i:], stage[i + 1:], strict=False))  # monotone recession


def test_rating_curve_round_trip_and_calibration() -> None:
    r = Rating(h0=0.8, a=91.0, b=1.6)
    assert r.stage(r.discharge(4.2)) == pytest.approx(4.2)
    assert r.stage(0) == pytest.approx(0.8)
    cal = rating_for_thresholds(20, 1.2, 5.0, 900)
    assert cal.stage(20) == pytest.approx(1.2)
    assert cal.stage(900) == pytest.approx(5.0)


def test_example_flood_crosses_every_threshold_in_order_and_downstream_later() -> None:
    fleet = Fleet(load_scenario(SCENARIOS / "abukuma-flood.toml"))
    river = fleet.scenario.rivers[0]
    series = fleet.river_series["abukuma"]
    first_danger = []
    for g in river.gauges:
        stage = series.stage[g.station]
        times = []
        for name in ("th_standby", "th_caution", "th_evacuation", "th_danger"):
            times.append(next(i for i, h in enumerate(stage) if h >= g.thresholds[name]))
        assert times == sorted(times) and len(set(times)) == 4, g.station
        first_danger.append(times[-1])
        assert stage[-1] < g.thresholds["th_standby"]  # recession below standby by the end
    assert first_danger == sorted(first_danger)


def test_seed_makes_runs_repeatable() -> None:
    scenario = load_scenario(SCENARIOS / "abukuma-flood.toml")

    def plan(seed: int) -> list[tuple[str, bytes]]:
        from datetime import UTC, datetime

        fleet = Fleet(scenario.with_overrides(seed=seed), origin=datetime(2026, 7, 1, tzinfo=UTC))
        return [fleet.message(d) for d in fleet.deliveries()]

    a, b, c = plan(1), plan(1), plan(2)
    assert a == b
    assert a != c
    assert len(a) == len(c)
