"""危機管理型水位計 report-by-exception: daily while low, every 10 minutes above 観測開始水位."""

from __future__ import annotations

from simulators.reporting import ReportByException


def _run(levels: list[float], rbe: ReportByException) -> list[int]:
    return [i for i, v in enumerate(levels) if rbe.decide(i * 600.0, v)]


def test_daily_heartbeat_while_low() -> None:
    sent = _run([0.5] * (3 * 144), ReportByException(obs_start=1.0))
    assert sent == [0, 144, 288]  # once a day


def test_ten_minute_data_above_the_level_and_one_reading_after() -> None:
    low, high = [0.5] * 10, [1.2, 1.5, 1.8, 1.4, 1.1]
    levels = low + high + [0.9, 0.8] + [0.7] * 150
    sent = _run(levels, ReportByException(obs_start=1.0))
    assert sent[0] == 0
    assert sent[1:7] == [10, 11, 12, 13, 14, 15]  # every sample above, and the first one back below
    assert sent[7:] == [15 + 144]  # then daily again, counted from the last transmission


def test_fast_rise_below_the_level_starts_fast_reporting() -> None:
    levels = [0.2, 0.2, 0.5, 0.8, 0.85, 0.85, 0.85]
    assert _run(levels, ReportByException(obs_start=1.0, rise_m=0.25)) == [0, 2, 3, 4]
    assert _run(levels, ReportByException(obs_start=1.0)) == [0]


def test_crisis_gauge_in_a_fleet_reports_by_exception() -> None:
    from simulators.fleet import Fleet
    from simulators.scenario import load_scenario
    from tests.simulators.support import SCENARIOS

    fleet = Fleet(load_scenario(SCENARIOS / "abukuma-flood.toml"))
    gauge = next(g for r in fleet.scenario.rivers for g in r.gauges if g.reporting == "exception")
    obs = gauge.thresholds["th_obs_start"]
    sent = [(d.sample.t, d.sample.value) for d in fleet.deliveries()
            if d.sample.station == gauge.station and d.sample.kind == "level"]
    gaps = [b[0] - a[0] for a, b in zip(sent, sent[1:], strict=False)]
    assert any(v >= obs for _, v in sent)
    assert max(gaps) <= 86400.0  # at least the daily heartbeat
    # a pause in transmissions only ever starts from a reading below the level
    assert all(v < obs for (_, v), g in zip(sent, gaps, strict=False) if g > 600.0)
    fast = [g for (_, v), g in zip(sent, gaps, strict=False) if v >= obs]
    assert fast and set(fast) == {600.0}
    assert len(sent) < 48 * 6 / 2  # far fewer than a 10-minute gauge over 48 h
