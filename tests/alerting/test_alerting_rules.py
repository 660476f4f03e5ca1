"""The pure rules: ladders for both gauge kinds, spike rejection, dwell, hysteresis, rate of rise, and
replays of real gauge data (MLIT 川の水位情報 for Fukushima; the 2023 flood at 持世寺)."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from alerting.levels import LEVEL2, LEVEL3, LEVEL4, LEVEL5, STANDBY, ladder, level_for, trend_target
from alerting.rules import (
    CONFIRMED,
    IMPLAUSIBLE,
    RIVER,
    SPIKE,
    STEPPED_DOWN,
    UNCONFIRMED,
    Reading,
    RuleConfig,
    StationRules,
    Transition,
    reconcile,
    slope,
)
from tests.alerting.replay_data import JST, jiseiji_series, jiseiji_thresholds, mlit_rows, mlit_thresholds

FF = {"th_standby": 3.80, "th_caution": 5.00, "th_evacuation": 5.10, "th_danger": 5.50}


def feed(machine: StationRules, values: list[float], *, start: float = 1_700_000_000.0,
         step: float = 600.0) -> list[Transition]:
    return machine.feed_all(Reading("level", start + i * step, v) for i, v in enumerate(values))


def test_ladders_for_both_gauge_kinds() -> None:
    ff = ladder("flood_forecast", FF)
    assert [(s.level, s.threshold) for s in ff] == [(1, 3.8), (2, 5.0), (3, 5.1), (4, 5.5)]
    crisis = ladder("crisis", {"th_obs_start": 488.63, "th_crisis": 489.13, "th_overflow": 492.03})
    assert [(s.level, s.label_ja) for s in crisis] == [(STANDBY, "観測開始水位"), (LEVEL4, "危険水位"),
                                                       (LEVEL5, "氾濫開始水位")]
    assert level_for(crisis, 489.13) == LEVEL4 and level_for(crisis, 489.12) == STANDBY
    # 危険水位 missing: no level-4 step, and the trend aims at 氾濫開始水位
    partial = ladder("crisis", {"th_obs_start": 1.0, "th_overflow": 2.0})
    assert [s.level for s in partial] == [STANDBY, LEVEL5]
    trend = trend_target(partial)
    assert trend is not None and trend.level == LEVEL5
    assert ladder("none", FF) == ()


def test_single_sample_spike_raises_only_an_unconfirmed_alert_then_withdraws_it() -> None:
    m = StationRules(ladder("flood_forecast", FF))
    out = feed(m, [2.0, 2.0, 2.01, 7.5, 2.02, 2.0, 2.01])
    t0 = 1_700_000_000.0
    assert [(t.condition, t.old_level, t.new_level, t.ts, t.reason) for t in out] == [
        (UNCONFIRMED, None, LEVEL4, t0 + 3 * 600, IMPLAUSIBLE),  # at once, staff only
        (UNCONFIRMED, LEVEL4, None, t0 + 4 * 600, SPIKE),        # the next reading shows a spike
    ]
    assert m.state.level is None and m.state.unconfirmed is None and m.open_conditions() == {}
    # the spike never entered the trend buffer
    assert all(v < 3 for _, v in m.state.buffer)


def test_first_reading_and_a_reading_after_silence_raise_at_once() -> None:
    m = StationRules(ladder("flood_forecast", FF))
    out = feed(m, [5.6])  # a gauge's very first reading
    assert [(t.condition, t.new_level, t.reason) for t in out] == [(RIVER, LEVEL4, "threshold")]
    m2 = StationRules(ladder("crisis", {"th_obs_start": 20.0, "th_crisis": 21.0, "th_overflow": 22.73}))
    feed(m2, [20.1, 20.2])
    out = feed(m2, [24.42], start=1_700_000_000.0 + 2 * 600 + 20 * 3600)  # 20 h later, above 氾濫開始水位
    assert [(t.old_level, t.new_level, t.reason) for t in out] == [(STANDBY, LEVEL5, "threshold")]


def test_a_lone_crossing_of_an_hourly_gauge_raises_at_that_reading() -> None:
    m = StationRules(ladder("flood_forecast", FF))
    out = feed(m, [4.2, 5.0, 5.6], step=3600.0)  # 0.6 m in an hour is a plausible river
    assert [(t.new_level, t.ts) for t in out] == [(STANDBY, 1_700_000_000.0), (LEVEL2, 1_700_003_600.0),
                                                  (LEVEL4, 1_700_007_200.0)]


def test_fast_real_rise_is_unconfirmed_then_confirmed_by_the_next_reading() -> None:
    m = StationRules(ladder("flood_forecast", FF))
    t0 = 1_700_000_000.0
    out = feed(m, [2.0, 2.0, 2.0, 5.6, 5.7, 5.8])  # a 3.6 m jump in 10 minutes (21.6 m/h), then it stays
    assert [(t.condition, t.old_level, t.new_level, t.ts, t.reason) for t in out] == [
        (UNCONFIRMED, None, LEVEL4, t0 + 3 * 600, IMPLAUSIBLE),
        (RIVER, None, LEVEL4, t0 + 3 * 600, "threshold"),  # the public level, at the suspect's reading time
        (UNCONFIRMED, LEVEL4, None, t0 + 4 * 600, CONFIRMED),
    ]
    assert m.state.level == LEVEL4 and m.state.unconfirmed is None


def test_suspect_below_the_public_level_raises_nothing() -> None:
    m = StationRules(ladder("flood_forecast", FF))
    feed(m, [5.6, 5.6])
    out = feed(m, [1.0, 5.6], start=1_700_001_200.0)  # an impossible drop: held, then a spike
    assert out == [] and m.state.level == LEVEL4


def test_per_gauge_rate_and_time_scale() -> None:
    steps = ladder("flood_forecast", FF)
    slow = StationRules(steps, RuleConfig().for_gauge(max_rate_m_per_h=1.0))
    out = feed(slow, [4.0, 5.6])  # 1.6 m in 10 minutes is too fast for this gauge
    assert [t.condition for t in out] == [RIVER, UNCONFIRMED]
    assert RuleConfig().for_gauge(max_rate_m_per_h=None) == RuleConfig()
    fast = RuleConfig().scaled(30.0)
    assert fast.dwell_down_s == 60.0 and fast.max_rate_m_per_h == 180.0 and fast.trend_horizon_s == 120.0
    assert RuleConfig().scaled(1.0) == RuleConfig()
    with pytest.raises(ValueError, match="at least 1"):
        RuleConfig().scaled(0.5)


def test_noise_at_a_threshold_does_not_flap() -> None:
    m = StationRules(ladder("flood_forecast", FF))
    out = feed(m, [5.45, 5.55, 5.46, 5.56, 5.47, 5.52, 5.45, 5.53])
    assert [(t.old_level, t.new_level) for t in out] == [(None, LEVEL3), (LEVEL3, LEVEL4)]


def test_hysteresis_and_dwell_on_the_way_down() -> None:
    cfg = RuleConfig(hysteresis_m=0.1, dwell_down_samples=3, dwell_down_s=1200)
    m = StationRules(ladder("flood_forecast", FF), cfg)
    rise = [4.9, 5.0, 5.1, 5.2, 5.3, 5.4, 5.5, 5.6]
    feed(m, rise)
    assert m.state.level == LEVEL4
    # in the band 5.4..5.5: held however long
    out = feed(m, [5.45, 5.42, 5.41, 5.45, 5.42], start=1_700_000_000.0 + 8 * 600)
    assert out == [] and m.state.level == LEVEL4
    # one bad low sample does not lower it
    out = feed(m, [5.30, 5.45], start=1_700_000_000.0 + 13 * 600)
    assert out == [] and m.state.level == LEVEL4
    out = feed(m, [5.3, 5.3, 5.3], start=1_700_000_000.0 + 15 * 600)
    assert [(t.old_level, t.new_level) for t in out] == [(LEVEL4, LEVEL3)]
    assert out[0].ts == 1_700_000_000.0 + 17 * 600


def test_rate_of_rise_raises_level_3_early() -> None:
    cfg = RuleConfig(trend_horizon_s=3600)
    m = StationRules(ladder("flood_forecast", FF), cfg)
    # 0.15 m per 10 minutes from 4.0 m: reaches 5.5 m 100 minutes after 4.0
    out = feed(m, [4.0 + 0.15 * i for i in range(8)])
    trend = [t for t in out if t.reason == "trend"]
    assert trend and trend[0].new_level == LEVEL3
    assert trend[0].value < 5.0  # below even 氾濫注意水位: "forecast to reach"
    assert trend[0].threshold == 5.5


def test_missing_zeros_are_ignored() -> None:
    m = StationRules(ladder("flood_forecast", FF))
    feed(m, [5.2, 5.3, 5.4, 5.5, 5.6])
    assert m.state.level == LEVEL4
    out = feed(m, [0.0, 0.0, 0.0, 0.0, 5.6], start=1_700_000_000.0 + 5 * 600)
    assert out == [] and m.state.level == LEVEL4
    assert all(v > 0 for _, v in m.state.buffer)
    # without the rule, four zeros confirm each other and clear the alert: the rule matters
    m2 = StationRules(ladder("flood_forecast", FF), RuleConfig(missing_at_or_below=None, dwell_down_s=0))
    feed(m2, [5.2, 5.3, 5.4, 5.5, 5.6])
    out2 = feed(m2, [0.0, 0.0, 0.0, 0.0], start=1_700_000_000.0 + 5 * 600)
    assert out2 and out2[-1].new_level is None


def test_state_round_trips_through_json() -> None:
    steps = ladder("flood_forecast", FF)
    a = StationRules(steps)
    feed(a, [4.0, 4.5, 5.0, 5.3, 5.6])
    a.feed(Reading("battery_pct", 1_700_003_000.0, 10.0))
    b = StationRules(steps, state=json.loads(json.dumps(a.to_json())))
    tail = [5.7, 5.2, 5.2, 5.0, 4.9, 4.8, 4.8, 4.7]
    assert feed(a, tail, start=1_700_003_600.0) == feed(b, tail, start=1_700_003_600.0)
    assert a.to_json() == b.to_json()


def test_device_health_needs_two_reports() -> None:
    m = StationRules(ladder("flood_forecast", FF))
    assert m.feed(Reading("battery_pct", 1.0e9, 12.0)) == []
    assert m.feed(Reading("status", 1.0e9, 1.0)) == []  # same telemetry message: counts once
    out = m.feed(Reading("battery_pct", 1.0e9 + 600, 11.0))
    assert [(t.condition, t.kind) for t in out] == [("low_battery", "raised")]
    assert m.feed(Reading("status", 1.0e9 + 1200, 2.0)) == []
    out = m.feed(Reading("status", 1.0e9 + 1800, 2.0))
    assert [(t.condition, t.kind) for t in out] == [("fault", "raised")]
    out = m.feed_all([Reading("status", 1.0e9 + 2400, 0.0), Reading("status", 1.0e9 + 3000, 0.0)])
    assert sorted((t.condition, t.kind) for t in out) == [("fault", "cleared"), ("low_battery", "cleared")]


def test_reconcile_gives_net_changes() -> None:
    out = reconcile({RIVER: 4, "fault": 0}, {RIVER: 3}, ts=5.0)
    assert [(t.condition, t.old_level, t.new_level) for t in out] == [("fault", 0, None), (RIVER, 4, 3)]


def test_slope() -> None:
    fit = slope([(0, 1.0), (600, 1.1), (1200, 1.2)])
    assert fit is not None and fit[0] == pytest.approx(0.1 / 600)


# -- real data ------------------------------------------------------------------------------------
def jiseiji_transitions(config: RuleConfig | None = None) -> list[tuple[str, str, int | None, int | None]]:
    m = StationRules(ladder("flood_forecast", jiseiji_thresholds()), config)
    out = []
    for ts, value in jiseiji_series():
        for t in m.feed(Reading("level", ts.timestamp(), value)):
            out.append((datetime.fromtimestamp(t.ts, JST).strftime("%m/%d %H:%M"), t.reason, t.old_level,
                        t.new_level))
    return out


def test_jiseiji_2023_flood_sequence_and_times() -> None:
    """The real 2023-06-30/07-01 flood at 持世寺 (厚東川): levels raised and cleared, with times."""
    series = jiseiji_series()
    th = jiseiji_thresholds()
    first_danger = next(ts for ts, v in series if v >= th["th_danger"])
    assert first_danger.strftime("%m/%d %H:%M") == "07/01 01:20"
    got = jiseiji_transitions()
    flood = [t for t in got if "06/30" <= t[0] <= "07/02"]
    assert flood == [
        ("06/30 18:10", "threshold", None, 1),  # first reading ≥ 3.80 (3.81)
        ("07/01 01:00", "trend", 1, 3),         # 5.02 m rising 0.23 m/10 min: 5.50 forecast within the hour
        ("07/01 01:10", "threshold", 3, 3),     # 避難判断水位 (5.10) reached: level 3 now held by its threshold
        ("07/01 01:20", "threshold", 3, 4),     # the first reading ≥ 氾濫危険水位 (5.51)
        ("07/01 11:00", "threshold", 4, 3),     # below 5.40 (5.50 − 0.10) since 10:30, for 30 minutes
        ("07/01 11:50", "threshold", 3, 2),     # below 5.00 since 11:20
        ("07/01 12:30", "threshold", 2, 1),     # below 4.90 since 11:30... and 30 minutes
        ("07/01 23:00", "threshold", 1, None),  # below 3.70 since 22:30
    ]
    # level 4 held for as long as the stage stayed above 5.40
    above = [ts for ts, v in series if v >= th["th_danger"] - 0.10 and "07/01" in ts.strftime("%m/%d")]
    assert max(above).strftime("%H:%M") == "10:20"
    # the 0.0 m missing values of 07/03 10:10-10:40 change nothing
    assert not [t for t in got if t[0].startswith("07/03")]
    # the later, smaller events raise standby only
    assert {t[3] for t in got if t[0] >= "07/02"} <= {STANDBY, None}


def test_mlit_crisis_gauges_raise_at_the_crossing_reading() -> None:
    """Replay every Fukushima crisis gauge (the whole year): level ≥ 4 at every reading the source flags
    is_warning (危険水位) and level 5 at every is_flood (氾濫開始水位) reading — at that reading, not one
    later; never a level the source does not show on the way up. The way down has the documented hold."""
    config = RuleConfig().for_interval(3600)  # the crawl saw each gauge about hourly
    stations = mlit_rows()
    assert len(stations) == 226
    false_raises, late, unconfirmed = [], [], []
    warning_rows = flood_rows = 0
    for code, rows in stations.items():
        machine, key = None, None
        for row in rows:
            th = mlit_thresholds(row)
            if tuple(th.values()) != key:  # one station's thresholds were changed during the year
                machine, key = StationRules(ladder("crisis", th), config), tuple(th.values())
            assert machine is not None
            ts = datetime.fromisoformat(row["obs_time_jst"]).timestamp()
            for t in machine.feed(Reading("level", ts, float(row["level_m"]))):
                if t.condition == UNCONFIRMED:
                    unconfirmed.append((code, row["obs_time_jst"], t))
                elif t.new_level is not None and (t.old_level is None or t.new_level > t.old_level):
                    if t.new_level >= LEVEL4 and row["is_warning"] != "1":
                        false_raises.append((code, row["obs_time_jst"], t))
                    if t.new_level == LEVEL5 and row["is_flood"] != "1":
                        false_raises.append((code, row["obs_time_jst"], t))
            level = machine.state.level or 0
            warning_rows += row["is_warning"] == "1"
            flood_rows += row["is_flood"] == "1"
            if (row["is_warning"] == "1" and level < LEVEL4) or (row["is_flood"] == "1" and level < LEVEL5):
                late.append((code, row["obs_time_jst"], row["level_m"], level))
    assert warning_rows > 2000 and flood_rows > 400  # the file's own counts (PROVENANCE: 2,762 and 417)
    assert false_raises == []  # never a level the source does not show
    assert late == []          # every warning and flood reading at its level, 0 readings late
    assert unconfirmed == []   # no real reading of the year is beyond the default plausible rate


def test_report_by_exception_gauge_steps_down_by_time_when_readings_stop() -> None:
    """0700000235 川田橋 (危機管理型): level 4 at 01:50, back to standby in the source (``over`` = 1) at
    02:50 and 03:30 JST on 2025-11-01, then silent for 9.5 months. Fewer readings below the line than
    the sample dwell asks for, then silence: the level is lowered by time, not held for months."""
    rows = mlit_rows()["0700000235"]
    steps = ladder("crisis", mlit_thresholds(rows[0]))
    config = RuleConfig()
    ts = [datetime.fromisoformat(r["obs_time_jst"]).timestamp() for r in rows]
    assert [r["over"] for r in rows[1:]] == ["1", "1", "1"]  # the source's own flag: standby again
    standby = level_for(steps, float(rows[1]["level_m"]))
    assert standby == STANDBY
    # two readings below after level 4, then silence; the tick in reading time lowers the level
    machine = StationRules(steps, config)
    t0, t1 = ts[0], ts[1]
    out = machine.feed_all([Reading("level", t0, float(rows[0]["level_m"])),
                            Reading("level", t1, float(rows[1]["level_m"])),
                            Reading("level", t1 + 600, float(rows[2]["level_m"]))])
    assert [(t.old_level, t.new_level) for t in out] == [(None, LEVEL4)]
    assert machine.state.level == LEVEL4  # two readings below: the sample dwell is not met
    due = t1 + config.dwell_down_s + config.dwell_down_grace_s  # 30 min below, then one interval silent
    assert machine.tick(t1 + config.dwell_down_s - 1) == [] and machine.tick(due - 1) == []
    assert machine.state.level == LEVEL4
    stepped = machine.tick(due + 3600)
    assert [(t.condition, t.old_level, t.new_level, t.ts, t.value) for t in stepped] == [
        (RIVER, LEVEL4, STANDBY, due, float(rows[2]["level_m"]))]
    assert machine.state.level == STANDBY and machine.tick(due + 7200) == []  # once only
    # state survives serialisation mid-dwell
    mid = StationRules(steps, config)
    mid.feed_all(Reading("level", t, float(r["level_m"])) for t, r in zip(ts[:2], rows[:2], strict=True))
    restored = StationRules(steps, config, json.loads(json.dumps(mid.to_json())))
    assert restored.tick(due - 1) == [] and [t.new_level for t in restored.tick(due)] == [STANDBY]
    # the real series, replayed without ticks: the 03:30 reading comes after the dwell (30 min from
    # 02:50) and one interval of silence, so the level is lowered at that moment; nothing in 2026-08
    replay = StationRules(steps, config)
    again = replay.feed_all(Reading("level", t, float(r["level_m"])) for t, r in zip(ts, rows, strict=True))
    # (the 03:30 reading itself then tells what holds the level it was lowered to, at that level: the step-down's
    # "last reading, none since" is no longer so)
    assert [(t.old_level, t.new_level, t.ts) for t in again] == [
        (None, LEVEL4, ts[0]), (LEVEL4, STANDBY, ts[1] + 1800 + 600), (STANDBY, STANDBY, ts[2])]
    assert [t.reason for t in again[1:]] == [STEPPED_DOWN, "threshold"]
    assert ts[2] == ts[1] + 2400 and replay.state.level == STANDBY


def test_tick_does_not_lower_while_the_water_is_above_the_line_or_a_reading_is_suspect() -> None:
    steps = ladder("flood_forecast", FF)
    t0 = 1_700_000_000.0
    held = StationRules(steps)
    feed(held, [5.6, 5.45, 5.45], start=t0)  # within hysteresis of 5.50: held, no step-down started
    assert held.state.level == LEVEL4 and held.tick(t0 + 30 * 86400) == []
    # a regular gauge still steps down by its readings, at the same time as before
    regular = StationRules(steps)
    out = feed(regular, [5.6, 5.2, 5.2, 5.2, 5.2], start=t0)
    assert [(t.new_level, t.ts) for t in out] == [(LEVEL4, t0), (LEVEL3, t0 + 4 * 600)]
    # silent below the line, but the last reading is a suspect fall: wait for the next one
    suspect = StationRules(steps)
    feed(suspect, [5.6, 5.3, 1.0], start=t0)
    assert suspect.state.pending is not None and suspect.tick(t0 + 86400) == []
    # an exercise on a 60× clock steps down 60× sooner
    fast = StationRules(steps, RuleConfig().scaled(60))
    feed(fast, [5.6, 5.2], start=t0, step=10.0)
    assert fast.tick(t0 + 10 + 30 + 9) == [] and [t.new_level for t in fast.tick(t0 + 10 + 30 + 10)] == [LEVEL3]


def test_a_replayed_change_carries_the_rule_stage_and_threshold_that_decided_it() -> None:
    """A late-reading replay's net change says what decided it (found: ``re-evaluated`` with no stage, so every
    text said 避難判断水位 was reached, "水位 1.00 m / 基準 1.00 m", though the trend rule raised level 3 at 2.10 m)."""
    steps = ladder("flood_forecast", {"th_standby": 1.0, "th_caution": 1.2, "th_evacuation": 3.0, "th_danger": 4.0})
    t0 = 1.0e9
    m = StationRules(steps)
    decided = m.feed_all([Reading("level", t0 + 600 * i, v) for i, v in enumerate([1.0, 1.1, 1.6, 2.1, 2.5, 1.8])])
    assert m.state.level == 3 and m.state.reason == "trend"
    (net,) = reconcile({RIVER: 1}, m.open_conditions(), ts=t0 + 3600, decided=decided)
    assert (net.old_level, net.new_level, net.reason, net.value, net.threshold, net.re_evaluated) == \
        (1, 3, "trend", 2.1, 4.0, True)
    # decided before the replay's start (a checkpoint): the level in force says what holds it, at the reading whose
    # trend forecast it (2.10 m), not at the newest (1.80 m after 2.50 m: falling, its trend forecasts nothing)
    (held,) = reconcile({RIVER: 1}, m.open_conditions(), ts=t0 + 3600, decided=m.standing())
    assert (held.reason, held.ts, held.value, held.threshold) == ("trend", t0 + 1800, 2.1, 4.0)
    # nothing explains it: marked, without a stage
    (bare,) = reconcile({"fault": 0}, {}, ts=t0)
    assert (bare.reason, bare.value, bare.re_evaluated) == ("re-evaluated", None, True)
