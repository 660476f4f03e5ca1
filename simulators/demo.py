"""A small demo basin: river gauges along one river, publishing a slow flood wave.

Used by ``sonae run --simulate`` so that a fresh install shows live stations at once. With the drill
town as road network, the gauges are the drill town's own (:func:`drilltown_stations`): their rising
levels raise exercise alerts, which arm the town's gauge-linked flood areas, which re-route residents —
the whole loop on one machine. The readings are marked as an exercise unless asked otherwise, so a
demo never looks like a real flood.

**Demo time.** The river runs ``time_scale`` times faster than real time (setting
``simulators.demo_time_scale``, default :data:`DEMO_TIME_SCALE` = 30): one flood — rise through every level,
peak above 氾濫危険水位, fall, and a quiet spell — takes ``period_s`` = 2.5 hours of river time, five minutes
on the wall clock at 30 (one minute at 150). Readings keep their true (wall-clock) times, so the stations
declare the same factor in the registry (``exercise_time_scale``: :func:`demo_stations`,
:func:`drilltown_stations`) and the rules worker runs their *exercise* readings on that clock: hold times
(30 minutes below a threshold before stepping down) shrink by the factor for this scenario only — the real
rules and real data are never scaled. So the alert visibly steps down and clears at about 55 % of the
period (three minutes at 30), before the next flood. Every gauge publishes one reading a minute of river
time (:data:`READING_EVERY_S`, its ``expected_interval_s``): every ``60 / time_scale`` wall-clock seconds,
so the rules see the same points on the river's clock whatever the scale (the step between two readings
stays below ``min_step_m``, the plausible-rate check is never tripped, the trend window holds as many).
"""

from __future__ import annotations

import asyncio
import dataclasses
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
#: how many times faster than real time the demo river runs (and the rules judge its exercise readings) by
#: default: the setting ``simulators.demo_time_scale``
DEMO_TIME_SCALE = 30.0
#: river time between two readings of a gauge (the stations' ``expected_interval_s``)
READING_EVERY_S = 60

DEMO_STATIONS: tuple[Station, ...] = (
    Station(id="demo-upstream", name="デモ上流観測所", name_en="Demo Upstream", river="デモ川",
            municipality_code=MUNICIPALITY, lat=37.420, lon=140.380, expected_interval_s=READING_EVERY_S,
            th_standby=2.0, th_caution=2.8, th_evacuation=3.3, th_danger=3.8, exercise=True, source="demo",
            exercise_time_scale=DEMO_TIME_SCALE),
    Station(id="demo-midstream", name="デモ中流観測所", name_en="Demo Midstream", river="デモ川",
            municipality_code=MUNICIPALITY, lat=37.400, lon=140.390, expected_interval_s=READING_EVERY_S,
            th_standby=2.5, th_caution=3.2, th_evacuation=3.7, th_danger=4.3, exercise=True, source="demo",
            exercise_time_scale=DEMO_TIME_SCALE),
    Station(id="demo-downstream", name="デモ下流観測所", name_en="Demo Downstream", river="デモ川",
            municipality_code=MUNICIPALITY, lat=37.380, lon=140.400, expected_interval_s=READING_EVERY_S,
            th_standby=3.0, th_caution=3.8, th_evacuation=4.4, th_danger=5.0, exercise=True, source="demo",
            exercise_time_scale=DEMO_TIME_SCALE),
)


DRILLTOWN_MUNICIPALITY = DRILL_TOWN_CODE  # 079995: see evac/drilltown.py


def demo_stations(time_scale: float = DEMO_TIME_SCALE) -> tuple[Station, ...]:
    """:data:`DEMO_STATIONS` on the clock of a demo river running ``time_scale`` times faster than real time."""
    return tuple(dataclasses.replace(s, exercise_time_scale=float(time_scale)) for s in DEMO_STATIONS)


def drilltown_stations(town_dir: Path, time_scale: float = DEMO_TIME_SCALE) -> tuple[Station, ...]:
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
                           expected_interval_s=READING_EVERY_S, th_standby=round(evacuation * 0.5, 2),
                           th_caution=round(evacuation * 0.75, 2), th_evacuation=evacuation, th_danger=danger,
                           exercise=True, source="drilltown", exercise_time_scale=float(time_scale)))
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
    mqtt: MqttClient, *, prefix: str, interval_s: float | None = None, exercise: bool = True,
    stop: asyncio.Event | None = None, stations: Sequence[Station] = DEMO_STATIONS,
    time_scale: float = DEMO_TIME_SCALE,
) -> None:
    """Publish one level reading per station every ``interval_s`` until ``stop`` is set.

    The river runs ``time_scale`` times faster than real time; ``interval_s`` defaults to one reading a
    minute of river time (:data:`READING_EVERY_S` / ``time_scale``). The stations must be registered on the
    same clock (their ``exercise_time_scale``, see :func:`demo_stations`): a ValueError otherwise, since the
    rules would judge the readings on another clock than the river's (hold times too long or too short).

    ``exercise=False`` (``sonae run --simulate --real``) marks the readings real, but for the drill town's
    gauges (079995): the drill town is for exercises only, and ingest keeps no real reading from its topic
    (:mod:`ingest.placement`, dead letter ``real_in_drill_town``), so they stay an exercise.
    """
    if not 1 <= time_scale < math.inf:
        raise ValueError(f"time_scale must be 1 or more, not {time_scale}")
    other = [s.id for s in stations if s.exercise and s.exercise_time_scale != time_scale]
    if other:
        raise ValueError(f"stations {', '.join(other)} are not registered on the demo's clock "
                         f"(exercise_time_scale {time_scale:g}): see demo_stations, drilltown_stations")
    interval_s = READING_EVERY_S / time_scale if interval_s is None else interval_s
    river = DemoRiver()
    loop = asyncio.get_running_loop()
    start = loop.time()
    seq = 0
    stop = stop or asyncio.Event()
    while not stop.is_set():
        now = datetime.now(UTC)
        elapsed = (loop.time() - start) * time_scale  # river time: a 2.5-hour flood in 5 minutes at 30
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
