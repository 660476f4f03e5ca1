"""The demo river (``sonae run --simulate``): which readings it marks as an exercise.

Pure logic (which flag each published reading carries), so the broker is a recording stand-in.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

import pytest

from evac.drilltown import DRILL_TOWN_CODE
from simulators.demo import DEMO_STATIONS, run_demo


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
