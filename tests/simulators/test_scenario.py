"""Scenario files: the documented examples load, and mistakes are named by their key."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from simulators import command
from simulators.fleet import Fleet
from simulators.replay import default_data_dir
from simulators.scenario import ScenarioError, load_scenario, loads_scenario, parse_duration
from tests.simulators.support import SCENARIOS, jiseiji_file, mlit_file

RIVER = """
[[rivers]]
id = "r"
  [[rivers.reaches]]
  station = "s1"
"""


@pytest.mark.parametrize("name", sorted(p.name for p in SCENARIOS.glob("*.toml")))
def test_documented_examples_load_and_build(name: str) -> None:
    if "jiseiji" in name:
        jiseiji_file()
    if "mlit" in name:
        mlit_file()
    scenario = load_scenario(SCENARIOS / name)
    assert scenario.exercise
    fleet = Fleet(scenario)
    assert fleet.stations and fleet.stats.devices >= len(fleet.stations) - 0
    assert next(iter(fleet.deliveries()), None) is not None


@pytest.mark.parametrize(("text", "message"), [
    ("[scenario]\nduration = '3x'\n" + RIVER, r"scenario\.duration: '3x' is not a duration"),
    ("[scenario]\naccel = -1\n" + RIVER, r"scenario\.accel: expected a positive number"),
    ("[scenario]\nspeed = 2\n" + RIVER, r"scenario\.speed: unknown key"),
    ("[[rivers]]\nid = 'r'\n  [[rivers.reaches]]\n  station = 'bad id!'\n", r"rivers\[0\]\.reaches\[0\]\.station"),
    ("[[rivers]]\nid = 'r'\n  [[rivers.reaches]]\n  station = 's'\n  thresholds = {standby = 3, caution = 2}\n",
     r"rivers\[0\]\.reaches\[0\]\.thresholds: thresholds must rise"),
    ("[[rivers]]\nid = 'r'\n  [[rivers.reaches]]\n  station = 's'\n  reporting = 'exception'\n",
     r"rivers\[0\]\.reaches\[0\]\.reporting: 'exception'.*obs_start"),
    (RIVER + "[[faults]]\ntype = 'gremlins'\n", r"faults\[0\]\.type: 'gremlins' is not one of"),
    (RIVER + "[[faults]]\ntype = 'late'\nstart = '2h'\nend = '1h'\n", r"faults\[0\]\.end: must be after start"),
    (RIVER + "[[faults]]\ntype = 'malformed'\nvariant = 'xml'\n", r"faults\[0\]\.variant"),
    (RIVER + "[[rain_gauges]]\nstation = 'rg'\nriver = 'nile'\n", r"rain_gauges\[0\]\.river: no river 'nile'"),
    (RIVER + "[[load]]\ncount = 0\n", r"load\[0\]\.count: 0 is below 1"),
    (RIVER + RIVER.replace('id = "r"', 'id = "r2"'), r"station 's1' appears twice"),
    ("[scenario]\nname = 'x'\n", r"needs rivers, rain_gauges or a replay"),
    ("[replay]\nformat = 'csv'\npath = 'x'\n", r"replay\.format: 'csv' is not one of"),
    ("[scenario\n", r"not valid TOML"),
])
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        loads_scenario(text)


def test_defaults_and_durations() -> None:
    sc = loads_scenario("[scenario]\naccel = 'max'\nduration = '1h30m'\n" + RIVER)
    assert math.isinf(sc.accel) and sc.duration_s == 5400 and sc.exercise is True and sc.seed == 1
    assert [parse_duration(x, "k") for x in (90, "90s", "10m", "6h", "2d", "250ms")] == [
        90, 90, 600, 21600, 172800, 0.25]


@pytest.mark.parametrize("start", ["'2023-07-01T04:40:00'", "2023-07-01T04:40:00", "'2023-07-01T04:40:00+09:00'"])
def test_replay_window_times_without_an_offset_are_japan_time(start: str) -> None:
    """sonae.japantime's one rule: a string or TOML local date-time without an offset is JST."""
    sc = loads_scenario(f"[replay]\nformat = 'jiseiji'\npath = 'x.csv'\nstart = {start}\n")
    assert sc.replay is not None and sc.replay.start == datetime(2023, 6, 30, 19, 40, tzinfo=UTC)


def test_a_dropout_too_short_for_the_wall_clock_is_told_and_the_drills_is_not() -> None:
    """faults-drill promised a silent-gauge alert that its mid-run dropout (90 min at 600×: 9 s) never raised."""
    drill = load_scenario(SCENARIOS / "faults-drill.toml")
    for accel in (600.0, math.inf):
        assert Fleet(drill.with_overrides(accel=accel)).unseen_dropouts(3.0) == []
    text = (SCENARIOS / "faults-drill.toml").read_text(encoding="utf-8")
    mid_run = loads_scenario(text.replace('start = "4h30m"       # no end: it does not come back',
                                          'start = "2h"\nend = "3h30m"'))
    (note,) = Fleet(mid_run).unseen_dropouts(3.0)  # the scenario's own accel, 600
    assert note.startswith("dropout of sim-f-dropout (7200 s to 12600 s") and "9 real seconds" in note
    assert "1800 s" in note and "--accel" in note
    assert len(Fleet(mid_run.with_overrides(accel=math.inf)).unseen_dropouts(3.0)) == 1
    assert Fleet(mid_run.with_overrides(accel=1.0)).unseen_dropouts(3.0) == []  # live: 90 min ≥ 30 min
    assert Fleet(mid_run).unseen_dropouts(10.0) == []  # 100 min to be silent: the gap is too short anyway


@pytest.mark.parametrize("checkout", ["sonae", "wt/break30", "wt/a/b"])
def test_replay_files_are_found_beside_the_checkout_or_a_parent_folder(tmp_path: Path, checkout: str) -> None:
    """``simulators.data_dir`` empty: the shared data set beside the checkout or beside a parent folder (a git
    worktree under ``wt/NAME``), the nearest first. Found: only the folder beside the checkout was looked at, so
    in a worktree the documented replays said the shared files did not exist."""
    module = tmp_path / checkout / "simulators" / "replay.py"
    module.parent.mkdir(parents=True)
    module.touch()
    (tmp_path / "shared" / "data" / "river_levels").mkdir(parents=True)
    assert default_data_dir(module) == tmp_path / "shared" / "data" / "river_levels"
    nearer = module.parents[2] / "shared" / "data" / "river_levels"
    nearer.mkdir(parents=True, exist_ok=True)
    assert default_data_dir(module) == nearer


def test_replay_files_nowhere_are_looked_for_beside_the_checkout(tmp_path: Path) -> None:
    module = tmp_path / "a" / "checkout" / "simulators" / "replay.py"
    module.parent.mkdir(parents=True)
    assert default_data_dir(module) == tmp_path / "a" / "shared" / "data" / "river_levels"


def test_a_default_replay_file_that_is_missing_names_the_setting(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONAE_SIMULATORS_DATA_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    with pytest.raises(ScenarioError, match="SONAE_SIMULATORS_DATA_DIR"):
        command.scenario_from_args(parser.parse_args(["--replay", "mlit"]))


def test_the_documented_replay_runs_with_the_default_folder() -> None:
    mlit_file()  # skips without the shared data set
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    scenario, _ = command.scenario_from_args(parser.parse_args(["--replay", "mlit", "--station", "0700000003"]))
    assert next(iter(Fleet(scenario).deliveries()), None) is not None
