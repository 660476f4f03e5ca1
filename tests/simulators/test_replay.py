"""Parsing the real river-level files, and replaying them with acceleration."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ingest.contract import Parser
from simulators.fleet import Fleet
from simulators.replay import (
    JISEIJI_ID,
    ReplayError,
    load_replay,
    mlit_series,
    read_area_info,
    read_jiseiji,
    read_mlit_rows,
)
from simulators.scenario import ReplaySpec, Scenario
from tests.simulators.support import area_info_file, jiseiji_file, mlit_file

JST = timezone(timedelta(hours=9))


def test_jiseiji_peak_missing_values_and_time_zone() -> None:
    points = read_jiseiji(jiseiji_file())
    assert len(points) == 8928 - 4  # four 0.0 rows on 2023/07/03 10:10–10:40 are missing values
    assert all(v != 0.0 for _, v in points)
    times = [t for t, _ in points]
    assert times == sorted(times)
    assert times[0] == datetime(2023, 6, 1, 0, 10, tzinfo=JST)
    assert times[0].tzinfo == UTC
    peak = max(v for _, v in points)
    assert peak == 7.47
    at_peak = [t.astimezone(JST).strftime("%m/%d %H:%M") for t, v in points if v == peak]
    assert "07/01 04:40" in at_peak
    assert all(datetime(2023, 7, 3, 10, m, tzinfo=JST) not in set(times) for m in (10, 20, 30, 40))
    assert sum(1 for _, v in points if v >= 3.80) == 296


def test_jiseiji_station_has_the_stated_thresholds() -> None:
    [series] = load_replay("jiseiji", jiseiji_file())
    s = series.station
    assert (s.id, s.name, s.gauge_type) == (JISEIJI_ID, "持世寺", "flood_forecast")
    assert (s.th_standby, s.th_caution, s.th_evacuation, s.th_danger) == (3.80, 5.00, 5.10, 5.50)


def test_mlit_rows_and_stations() -> None:
    rows = read_mlit_rows(mlit_file())
    assert len(rows) == 31710
    series = mlit_series(rows)
    assert len(series) == 226
    assert sum(len(s.points) for s in series) == 31710  # one row per (station, time) already
    first = next(s for s in series if s.station.id == "0700000003")
    st = first.station
    assert st.gauge_type == "crisis" and st.municipality_code == "073628"  # the 6-digit code of town_code 07362 (下郷町)
    assert (st.th_obs_start, st.th_crisis, st.th_overflow) == (488.63, 489.13, 492.03)
    assert first.points[0] == (datetime(2025, 9, 13, 22, 50, tzinfo=JST), 491.6)
    warnings = sum(1 for r in rows if r.warn_level_m is not None and r.level_m >= r.warn_level_m)
    assert warnings == 2762  # the crawler's is_warning count


def test_area_info_snapshot() -> None:
    assert len(read_area_info(area_info_file())) == 344
    fukushima = read_area_info(area_info_file(), pref_code="07000")
    assert len(fukushima) == 80
    assert all(r.town_code.startswith("07") for r in fukushima)


def test_replay_window_and_filters() -> None:
    start = datetime(2023, 6, 30, 6, 0, tzinfo=JST)
    end = datetime(2023, 7, 1, 18, 0, tzinfo=JST)
    [series] = load_replay("jiseiji", jiseiji_file(), start=start, end=end)
    assert series.points[0][0] == start and series.points[-1][0] == end
    assert len(series.points) == 36 * 6 + 1
    with pytest.raises(ReplayError, match="nothing to replay"):
        load_replay("mlit", mlit_file(), stations=["no-such-station"])


def test_replay_timestamps_shift_into_the_past_and_keep_spacing() -> None:
    start = datetime(2023, 6, 30, 6, 0, tzinfo=JST)
    end = datetime(2023, 7, 1, 18, 0, tzinfo=JST)
    now = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
    scenario = Scenario(name="r", accel=60.0, replay=ReplaySpec("jiseiji", jiseiji_file(), start, end))
    fleet = Fleet(scenario, start_wall=now)
    assert fleet.span == 36 * 3600
    parser = Parser()
    deliveries = list(fleet.deliveries())
    readings = [parser.parse(*fleet.message(d), now=now + timedelta(seconds=d.due / 60)).readings[0]
                for d in deliveries]
    # published at t/accel after the start, stamped origin + t: never ahead of the wall clock
    for d, r in zip(deliveries, readings, strict=True):
        assert r.ts <= now + timedelta(seconds=d.due / 60 + 1e-3)
    assert readings[-1].ts == now + timedelta(minutes=36)  # stamped "now" as the run ends (36 h / 60)
    assert readings[1].ts - readings[0].ts == timedelta(minutes=10)
    assert deliveries[1].due - deliveries[0].due == 600  # 10 minutes of river = 10 s at 60×
    assert max(r.value for r in readings) == 7.47
    assert all(r.exercise for r in readings)
    assert fleet.origin_epoch == math.floor(now.timestamp() - 36 * 3600 * (1 - 1 / 60))
