"""The demo river (``sonae run --simulate``): which readings it marks as an exercise.

Pure logic (which flag each published reading carries), so the broker is a recording stand-in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from evac.drilltown import DRILL_TOWN_CODE
from simulators import demo
from simulators.demo import DEMO_STATIONS, DEMO_TIME_SCALE, demo_stations, drilltown_stations, run_demo


class _Recorder:
    """Keeps (topic, payload) of every publish and stops the demo after one round of every station."""

    def __init__(self, stations: int, stop: asyncio.Event) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self._stations, self._stop = stations, stop

    async def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.sent.append((topic, json.loads(payload)))
        if len(self.sent) >= self._stations:
            self._stop.set()


@pytest.mark.parametrize("exercise", [True, False])
async def test_drill_town_gauges_stay_an_exercise_even_with_real(exercise: bool) -> None:
    """Found: with ``--real`` the drill town's gauges published real readings on 079995's topic, which ingest
    keeps no real reading from (dead letter ``real_in_drill_town``): the demo's drill town went dead."""
    town = dataclasses.replace(DEMO_STATIONS[0], id="DT-G01", municipality_code=DRILL_TOWN_CODE)
    stations = (*DEMO_STATIONS, town)
    stop = asyncio.Event()
    rec = _Recorder(len(stations), stop)
    await run_demo(rec, prefix="sonae/v1", interval_s=0.01, exercise=exercise, stop=stop,  # type: ignore[arg-type]
                   stations=stations)
    by_topic = {topic.split("/")[2] + "/" + topic.split("/")[3]: body for topic, body in rec.sent}
    assert by_topic[f"{DRILL_TOWN_CODE}/DT-G01"].get("exercise") is True
    for s in DEMO_STATIONS:
        assert bool(by_topic[f"{s.municipality_code}/{s.id}"].get("exercise")) is exercise


def test_the_demo_stations_are_registered_on_the_river_clock(tmp_path: Path) -> None:
    """The demo's time scale (``simulators.demo_time_scale``) is the stations' ``exercise_time_scale`` too, so the
    rules judge their exercise readings on the river's clock: the demo's own gauges and the drill town's."""
    from evac.drilltown import generate

    generate(tmp_path, rows=12, cols=12, seed=3)
    for stations in (demo_stations(150), drilltown_stations(tmp_path, 150)):
        assert stations and all(s.exercise and s.exercise_time_scale == 150.0 for s in stations)
        # one reading a minute of river time: the rules see as many points whatever the scale
        assert all(s.expected_interval_s == demo.READING_EVERY_S for s in stations)
    assert [s.exercise_time_scale for s in demo_stations()] == [DEMO_TIME_SCALE] * len(DEMO_STATIONS)


async def test_a_river_on_another_clock_than_its_stations_is_refused() -> None:
    """Readings of a river at 150 judged with hold times of a river at 30 (or the other way round) would step
    down five times too late (or early): run_demo refuses stations registered on another clock."""
    stop = asyncio.Event()
    rec = _Recorder(len(DEMO_STATIONS), stop)
    with pytest.raises(ValueError, match="exercise_time_scale 150"):
        await run_demo(rec, prefix="sonae/v1", stop=stop, stations=DEMO_STATIONS,  # type: ignore[arg-type]
                       time_scale=150)
    assert rec.sent == []
    await run_demo(rec, prefix="sonae/v1", stop=stop, stations=demo_stations(150),  # type: ignore[arg-type]
                   time_scale=150)
    assert len(rec.sent) == len(DEMO_STATIONS)
