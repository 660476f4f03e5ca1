"""A small demo basin: river gauges along one river, publishing a slow flood wave.

Used by ``sonae run --simulate`` so that a fresh install shows live stations at once. With the drill
town as road network, the gauges are the drill town's own (:func:`drilltown_stations`): their rising
levels raise exercise alerts, which arm the town's gauge-linked flood areas, which re-route residents —
the whole loop on one machine. The readings are marked as an exercise unless asked otherwise, so a
demo never looks like a real flood.

**Demo time.** The river runs :data:`DEMO_TIME_SCALE` times faster than real time: one flood — rise
through every level, peak above 氾濫危険水位, fall, and a quiet spell — takes ``period_s`` = 2.5 hours of
river time, five minutes on the wall clock. Readings keep their true (wall-clock) times, so the stations
declare the same factor in the registry (``exercise_time_scale``) and the rules worker runs their
*exercise* readings on that clock: hold times (30 minutes below a threshold before stepping down)
shrink by the factor for this scenario only — the real rules and real data are never scaled. So the
alert visibly steps down and clears about three minutes after the start, before the next flood.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from evac.drilltown import DRILL_TOWN_CODE, gauge_names
from ingest.contract import encode_reading, topic_for
from ingest.registry import Station
from sonae.mqtt import MqttClient

log = logging.getLogger("sonae.simulators.demo")

MUNICIPALITY = "072036"  # 郡山市
#: how many times faster than real time the demo river runs (and the rules judge its exercise readings)
DEMO_TIME_SCALE = 30.0

DEMO_STATIONS: tuple[Station, ...] = (
    Station(id="demo-upstream", name="デモ上流観測所", name_en="Demo Upstream", river="デモ川",
            municipality_code=MUNICIPALITY, lat=37.420, lon=140.380, expected_interval_s=60,
            th_standby=2.0, th_caution=2.8, th_evacuation=3.3, th_danger=3.8, exercise=True, source="demo",
            exercise_time_scale=DEMO_TIME_SCALE),
    Station(id="demo-midstream", name="デモ中流観測所", name_en="Demo Midstream", river="デモ川",
            municipality_code=MUNICIPALITY, lat=37.400, lon=140.390, expected_interval_s=60,
            th_standby=2.5, th_caution=3.2, th_evacuation=3.7, th_danger=4.3, exercise=True, source="demo",
            exercise_time_scale=DEMO_TIME_SCALE),
    Station(id="demo-downstream", name="デモ下流観測所", name_en="Demo Downstream", river="デモ川",
            municipality_code=MUNICIPALITY, lat=37.380, lon=140.400, expected_interval_s=60,
            th_standby=3.0, th_caution=3.8, th_evacuation=4.4, th_danger=5.0, exercise=True, source="demo",
            exercise_time_scale=DEMO_TIME_SCALE),
)


DRILLTOWN_MUNICIPALITY = DRILL_TOWN_CODE  # 079995: see evac/drilltown.py


def drilltown_stations(town_dir: Path) -> tuple[Station, ...]:
    """Stations for the drill town's gauges (``gauges.json`` of :func:`evac.drilltown.generate`).

    The town gives the water level at which each gauge's flood areas come into force (levels 3 and
    4); they become the gauge's 避難判断水位 and 氾濫危険水位, with 水防団待機 and 氾濫注意 below them.
    """
    gauges = json.loads((town_dir / "gauges.json").read_text(encoding="utf-8"))
    out = []
    for i, g in enumerate(gauges):
        levels = {int(k): float(v) for k, v in g["levels_m"].items()}
        evacuation, danger = levels.get(3, 4.0), levels.get(4, 5.5)
        # a town generated before its gauges had English names and readings: its names by its order (never the id)
        names = {**gauge_names(i + 1), **{k: g[k] for k in ("name", "name_en", "kana") if g.get(k)}}
        out.append(Station(id=g["station_id"], name=names["name"], name_en=names["name_en"], kana=names["kana"],
                           river="訓練川",
                           municipality_code=DRILLTOWN_MUNICIPALITY, lat=g["lat"], lon=g["lon"],
                           expected_interval_s=60, th_standby=round(evacuation * 0.5, 2),
                           th_caution=round(evacuation * 0.75, 2), th_evacuation=evacuation, th_danger=danger,
                           exercise=True, source="drilltown", exercise_time_scale=DEMO_TIME_SCALE))
    return tuple(out)


@dataclass
class DemoRiver:
    """A flood wave travelling downstream: each gauge sees it a little later and a little lower.

    ``t`` is river time in seconds. Each ``period_s`` the stage rises from base flow (60 % of
    水防団待機水位) to a peak above 氾濫危険水位 and back within the first ``wave_fraction`` of the
    period (a sin² hydrograph), then stays at base flow so every alert can step down and clear.
    """

    period_s: float = 9000.0
    wave_fraction: float = 0.4
    lag_fraction: float = 0.05
    seed: int = 7

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def level(self, index: int, station: Station, t: float) -> float:
        base = (station.th_standby or 1.0) * 0.6
        peak = (station.th_danger or 4.0) * (1.10 - 0.02 * index)
        phase = (t / self.period_s - self.lag_fraction * index) % 1.0
        wave = math.sin(math.pi * phase / self.wave_fraction) ** 2 if phase < self.wave_fraction else 0.0
        return round(base + (peak - base) * wave + self._rng.gauss(0, 0.01), 3)


async def run_demo(
    mqtt: MqttClient, *, prefix: str, interval_s: float = 2.0, exercise: bool = True,
    stop: asyncio.Event | None = None, stations: Sequence[Station] = DEMO_STATIONS,
) -> None:
    """Publish one level reading per station every ``interval_s`` until ``stop`` is set.

    ``exercise=False`` (``sonae run --simulate --real``) marks the readings real, but for the drill town's
    gauges (079995): the drill town is for exercises only, and ingest keeps no real reading from its topic
    (:mod:`ingest.placement`, dead letter ``real_in_drill_town``), so they stay an exercise.
    """
    river = DemoRiver()
    loop = asyncio.get_running_loop()
    start = loop.time()
    seq = 0
    stop = stop or asyncio.Event()
    while not stop.is_set():
        now = datetime.now(UTC)
        elapsed = (loop.time() - start) * DEMO_TIME_SCALE  # river time: a 2.5-hour flood in 5 minutes
        for index, station in enumerate(stations):
            value = river.level(index, station, elapsed)
            topic = topic_for(prefix, station.municipality_code or MUNICIPALITY, station.id, "level")
            drill = exercise or station.municipality_code == DRILLTOWN_MUNICIPALITY
            await mqtt.publish(topic, encode_reading(value=value, ts=now, seq=seq, exercise=drill), qos=1)
        seq += 1
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
