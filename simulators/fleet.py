"""The fleet: every simulated device of a scenario, on one virtual clock, publishing over MQTT.

Time
----
Scenario time ``t`` runs from 0 to the *span* (the scenario's duration, or the replayed series' span).
A message is published ``t / accel`` real seconds after the start. Its reading timestamp is
``origin + t`` with ::

    origin = start_wall − span · (1 − 1/accel)

so the whole run lands in the past and its last reading is stamped "now" as the run ends: the
ingestor never sees a reading from the future (it dead-letters those beyond ``ingest.max_future_s``),
alert rules — which evaluate in reading time — see the event unfold at the replayed pace, and at
``accel = 1`` the run is simply live (``origin = start``). With ``accel = "max"`` (as fast as
possible, for benchmarks and tests) ``origin = start − span``. Replays keep their original spacing
but not their original dates (2023 readings would be aged out by retention and trip "silent gauge"
rules); the original time of each reading is ``replay.t0 + t``.

Devices
-------
Each device is a generator of :class:`~simulators.faults.Sample` in time order; the fleet merges
them with a heap (thousands of devices cost one heap entry each), passes each sample through the
:class:`~simulators.faults.FaultInjector`, and keeps delayed deliveries (late, out of order) in a
second heap until their time comes.
"""

from __future__ import annotations

import asyncio
import fnmatch
import heapq
import itertools
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from ingest.contract import topic_for
from ingest.registry import Station
from simulators.faults import Delivery, FaultInjector, Sample
from simulators.hydrology import RiverSeries, simulate_river
from simulators.replay import Series, load_replay, placed
from simulators.reporting import ReportByException
from simulators.scenario import GaugeSpec, LoadSpec, Scenario, ScenarioError, TelemetrySpec
from simulators.transport import Publisher

log = logging.getLogger("sonae.simulators.fleet")


# -- payloads --------------------------------------------------------------------------------------
class Encoder:
    """Builds message payloads (the contract's JSON; see :func:`ingest.contract.encode_reading`)."""

    def __init__(self, origin_epoch: float, exercise: bool) -> None:
        self.origin = origin_epoch
        self.exercise = exercise
        self._tail = ',"exercise":true}' if exercise else "}"
        self._iso_cache: dict[float, str] = {}

    def iso(self, epoch: float) -> str:
        iso = self._iso_cache.get(epoch)
        if iso is None:
            if len(self._iso_cache) > 4096:
                self._iso_cache.clear()
            iso = datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")
            self._iso_cache[epoch] = iso
        return iso

    def timestamp(self, sample: Sample) -> float:
        return round(self.origin + sample.t + sample.ts_offset_s, 3)

    def payload(self, sample: Sample) -> bytes:
        ts = self.iso(self.timestamp(sample))
        value = sample.value
        if isinstance(value, dict):
            body: dict[str, Any] = {"ts": ts, **value, "seq": sample.seq}
            if self.exercise:
                body["exercise"] = True
            return json.dumps(body, separators=(",", ":")).encode()
        unit = "m" if sample.kind == "level" else "mm"
        return f'{{"ts":"{ts}","value":{round(value, 4)!r},"unit":"{unit}","seq":{sample.seq}{self._tail}'.encode()

    def malformed(self, sample: Sample, variant: str) -> bytes:
        ts = self.iso(self.timestamp(sample))
        ex = ',"exercise":true' if self.exercise else ""
        value = sample.value if not isinstance(sample.value, dict) else 0.0
        if variant == "bad_json":
            return f'{{"ts":"{ts}","value":{value!r}'.encode()  # truncated
        if variant == "no_value":
            return f'{{"ts":"{ts}","unit":"m"{ex}}}'.encode()
        if variant == "not_a_number":
            field_ = "battery_pct" if sample.kind == "telemetry" else "value"
            return f'{{"ts":"{ts}","{field_}":"high"{ex}}}'.encode()
        if variant == "bad_unit":
            return f'{{"ts":"{ts}","value":{value!r},"unit":"ft"{ex}}}'.encode()
        if variant == "not_utf8":
            return b'{"ts":"' + ts.encode() + b'","value":\xff\xfe}'
        return self.payload(sample)  # bad_topic: the payload is fine, the topic is not


# -- devices ---------------------------------------------------------------------------------------
def _level_device(gauge: GaugeSpec, series: RiverSeries, span: float, rng: random.Random, *,
                  station: str | None = None, interval_s: float | None = None, phase: float = 0.0,
                  offset_m: float = 0.0, municipality: str | None = None) -> Iterator[Sample]:
    station = station or gauge.station
    municipality = municipality or gauge.municipality
    interval = interval_s or gauge.interval_s
    rbe = None
    if gauge.reporting == "exception" and station == gauge.station:
        rbe = ReportByException(gauge.thresholds["th_obs_start"], fast_s=interval)
    stage = series.stage[gauge.station]
    dt = series.dt
    last = len(stage) - 1
    noise = gauge.noise_m
    gauss = rng.gauss
    seq = 0
    t = phase
    while t <= span:
        x = t / dt
        i = int(x)
        v = stage[last] if i >= last else stage[i] + (stage[i + 1] - stage[i]) * (x - i)
        v = round(v + offset_m + (gauss(0.0, noise) if noise else 0.0), 2)
        if rbe is None or rbe.decide(t, v):
            yield Sample(t, station, municipality, "level", v, seq, interval)
            seq += 1
        t += interval


def _rain_device(station: str, municipality: str, series: RiverSeries, interval: float, noise: float,
                 span: float, rng: random.Random, phase: float = 0.0) -> Iterator[Sample]:
    rain = series.rain
    dt = series.dt
    seq = 0
    t = phase + interval
    while t <= span:
        lo, hi = int((t - interval) / dt), max(int(t / dt), int((t - interval) / dt) + 1)
        window = rain[lo:min(hi, len(rain))] or [0.0]
        mm = sum(window) / len(window) * interval / 3600.0
        if mm > 0 and noise:
            mm *= math.exp(rng.gauss(0.0, noise))
        mm = round(mm * 2) / 2  # a 0.5 mm tipping bucket
        yield Sample(t, station, municipality, "rain", mm, seq, interval)
        seq += 1
        t += interval


def _telemetry_device(station: str, municipality: str, spec: TelemetrySpec, msgs_per_day: float, span: float,
                      origin_epoch: float, rng: random.Random) -> Iterator[Sample]:
    rssi = rng.uniform(-95.0, -60.0)
    battery0 = spec.battery_start_pct - rng.uniform(0.0, 10.0)
    drain_per_s = (spec.drain_pct_per_day + spec.drain_pct_per_message * msgs_per_day) / 86400.0
    seq = 0
    t = rng.uniform(0.0, spec.interval_s)
    while t <= span:
        pct = max(0.0, battery0 - drain_per_s * t)
        rssi = min(-40.0, max(-120.0, rssi + rng.gauss(0.0, 1.5)))
        hour_jst = ((origin_epoch + t) / 3600.0 + 9.0) % 24.0
        temperature = 18.0 + 7.0 * math.sin(2 * math.pi * (hour_jst - 9.0) / 24.0) + rng.gauss(0.0, 0.3)
        value: dict[str, float | str] = {
            "battery_pct": round(pct, 1), "battery_v": round(3.3 + 0.9 * pct / 100.0, 3),
            "rssi_dbm": round(rssi), "temperature_c": round(temperature, 1),
            "status": "low_battery" if pct < 20.0 else "ok",
        }
        yield Sample(t, station, municipality, "telemetry", value, seq, spec.interval_s)
        seq += 1
        t += spec.interval_s


def _replay_device(series: Series, t0: datetime, span: float) -> Iterator[Sample]:
    station = series.station
    if not station.municipality_code:  # a topic names the municipality (ingest.contract)
        raise ValueError(f"station {station.id!r} has no municipality_code: its readings need one in their topic")
    municipality = station.municipality_code
    interval = float(station.expected_interval_s)
    for seq, (ts, value) in enumerate(series.points):
        t = (ts - t0).total_seconds()
        if t > span:
            return
        yield Sample(t, station.id, municipality, "level", value, seq, interval)


# -- statistics --------------------------------------------------------------------------------------
@dataclass
class GaugeView:
    """A named gauge shown on the progress display."""

    station: str
    name: str
    thresholds: dict[str, float]
    value: float | None = None
    ts: float | None = None

    def stage_label(self) -> str:
        if self.value is None:
            return "—"
        crossed = [k for k, v in self.thresholds.items() if self.value >= v]
        return crossed[-1].removeprefix("th_") if crossed else "normal"


@dataclass
class Stats:
    scenario: str = ""
    exercise: bool = True
    devices: int = 0
    stations: int = 0
    span_s: float = 0.0
    accel: float = 60.0
    started: float = 0.0  # time.monotonic()
    finished: float = 0.0
    sim_t: float = 0.0
    published: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    faults_active: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    gauges: dict[str, GaugeView] = field(default_factory=dict)
    state: str = "created"  # created | running | finished | stopped | failed
    error: str = ""
    origin_epoch: float = 0.0
    _rate_mark: tuple[float, int] = (0.0, 0)
    rate: float = 0.0

    def elapsed(self) -> float:
        end = self.finished or time.monotonic()
        return max(0.0, end - self.started) if self.started else 0.0

    def mean_rate(self) -> float:
        e = self.elapsed()
        return self.published / e if e > 0 else 0.0

    def update_rate(self) -> float:
        now = time.monotonic()
        t, n = self._rate_mark
        if t and now > t:
            self.rate = (self.published - n) / (now - t)
        self._rate_mark = (now, self.published)
        return self.rate

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario, "state": self.state, "error": self.error, "exercise": self.exercise,
            "devices": self.devices, "stations": self.stations, "accel": None if math.isinf(self.accel) else self.accel,
            "span_s": self.span_s, "sim_t_s": round(self.sim_t, 1),
            "progress": round(min(1.0, self.sim_t / self.span_s), 4) if self.span_s else None,
            "elapsed_s": round(self.elapsed(), 3), "published": self.published, "by_kind": dict(self.by_kind),
            "rate_msgs_s": round(self.rate, 1), "mean_rate_msgs_s": round(self.mean_rate(), 1),
            "faults_active": list(self.faults_active), "injected": dict(self.injected),
            "expected": dict(self.expected),
            "gauges": [{"station": g.station, "name": g.name, "value": g.value, "stage": g.stage_label()}
                       for g in self.gauges.values()],
        }


# -- the fleet ---------------------------------------------------------------------------------------

def _check_pace(span_s: float, accel: float, start_wall: datetime) -> None:
    """That a run of ``span_s`` scenario seconds at ``accel`` has a real timeline: its real length
    ``span_s / accel`` (seconds; ``1 / accel`` paces every message) is finite and ends, and its reading times
    begin, at a date a clock can show (found: ``--accel 1e-320`` ended in "unexpected error
    (OverflowError…)": one scenario second took 1e320 real seconds).

    Raises
    ------
    ScenarioError
        One line naming the accel and what it would make of the run.
    """
    if math.isinf(accel):
        return
    try:
        real_s = span_s / accel
        inverse = 1.0 / accel
        if not (math.isfinite(real_s) and math.isfinite(inverse)):
            raise OverflowError
        start_wall + timedelta(seconds=real_s)  # the end of the run and the origin of its readings
        start_wall - timedelta(seconds=span_s) + timedelta(seconds=real_s)
    except OverflowError:
        raise ScenarioError(f"accel {accel!r}: {span_s:g} scenario seconds would take longer than any date a "
                            "clock can show (give a larger --accel, e.g. 1 for real time, 60 for an hour a "
                            "minute)") from None

class Fleet:
    """All devices of one scenario. ``deliveries()`` is the pure, seeded message plan; ``run()`` paces
    and publishes it."""

    def __init__(self, scenario: Scenario, *, prefix: str = "sonae/v1", origin: datetime | None = None,
                 start_wall: datetime | None = None, max_future_s: float = 300.0,
                 max_span_s: float | None = None) -> None:
        self.scenario = scenario
        self.prefix = prefix
        self.exercise = scenario.exercise
        self._replay: list[Series] = []
        self.replay_t0: datetime | None = None
        if scenario.replay is not None:
            r = scenario.replay
            # where the replayed gauges play out: a covered municipality, the drill town for 持世寺 (replay.placed)
            self._replay = placed(load_replay(r.format, r.path, exercise=scenario.exercise, start=r.start, end=r.end,
                                              stations=r.stations, limit=r.limit),
                                  fmt=r.format, municipality=r.municipality, exercise=scenario.exercise)
            self.replay_t0 = min(s.points[0][0] for s in self._replay)
            replay_span = (max(s.points[-1][0] for s in self._replay) - self.replay_t0).total_seconds()
            self.span = replay_span if not (scenario.rivers or scenario.rain_gauges) else max(
                replay_span, scenario.duration_s)
        else:
            self.span = scenario.duration_s
        if max_span_s is not None:
            self.span = min(self.span, max_span_s)
        self.start_wall = start_wall or datetime.now(UTC)
        accel = scenario.accel
        _check_pace(self.span, accel, self.start_wall)
        if origin is None:
            factor = 1.0 if math.isinf(accel) else 1.0 - 1.0 / accel
            # whole seconds, so reading times fall on the scenario's grid (e.g. every 10 minutes)
            self.origin_epoch = float(math.floor(self.start_wall.timestamp() - self.span * factor))
        else:
            self.origin_epoch = origin.timestamp()
        self.encoder = Encoder(self.origin_epoch, self.exercise)
        lead_base = self.origin_epoch - self.start_wall.timestamp()
        inv = 0.0 if math.isinf(accel) else 1.0 / accel
        self.faults = FaultInjector(scenario.faults, seed=scenario.seed, max_future_s=max_future_s,
                                    lead=lambda s, due: lead_base + s.t + s.ts_offset_s - due * inv)
        self.river_series: dict[str, RiverSeries] = {
            r.id: simulate_river([g.reach for g in r.gauges], scenario.storms, self.span, dt=scenario.dt_s,
                                 rain_factor=r.rain_factor)
            for r in scenario.rivers
        }
        self.stations = self._stations()
        self.stats = Stats(scenario=scenario.name, exercise=self.exercise, accel=accel, span_s=self.span,
                           stations=len(self.stations), origin_epoch=self.origin_epoch)
        self.stats.devices = self._device_count()
        self.stats.injected = self.faults.injected  # live: the display shows them as they happen
        self.stats.expected = self.faults.expected
        for g in self._named_gauges():
            self.stats.gauges[g.station] = g

    def unseen_dropouts(self, silent_factor: float) -> list[str]:
        """Notes on the scenario's ``dropout`` faults that raise no silent-gauge alert at this ``accel``.

        Silence is judged on the wall clock (``silent_factor`` × a station's ``expected_interval_s`` without
        a reading, setting ``alerting.silent_factor``), while readings are stamped so that the run ends
        "now": a dropout that ends before the run does lasts ``(end − start) / accel`` real seconds, and one
        shorter than the silent threshold is over before anyone could call the gauge silent (at
        ``accel = max``, every one). A dropout lasting to the end of the run is seen at any accel: its gauge's
        newest reading is ``span − start`` seconds old when the run ends. One line per fault and threshold,
        naming up to 3 of its stations.
        """
        notes = []
        for fault in self.scenario.faults:
            if fault.type != "dropout" or fault.end_s >= self.span or fault.start_s >= self.span:
                continue
            real_s = 0.0 if math.isinf(self.scenario.accel) else (fault.end_s - fault.start_s) / self.scenario.accel
            unseen: dict[float, list[str]] = {}
            for st in self.stations:
                threshold = silent_factor * st.expected_interval_s
                if (real_s < threshold <= fault.end_s - fault.start_s
                        and any(fnmatch.fnmatchcase(st.id, glob) for glob in fault.devices)):
                    unseen.setdefault(threshold, []).append(st.id)
            for threshold, ids in unseen.items():
                named = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
                notes.append(f"dropout of {named} ({fault.start_s:g} s to {fault.end_s:g} s of scenario time): "
                             f"{real_s:g} real seconds at this accel, less than the {threshold:g} s without a "
                             "reading that make a gauge silent (alerting.silent_factor × its interval, on the wall "
                             "clock): no silent-gauge alert will be raised. Let the dropout last to the end of the "
                             "run, or lower --accel.")
        return notes

    # -- registry ----------------------------------------------------------------------------------
    def _stations(self) -> list[Station]:
        sc = self.scenario
        ex = self.exercise
        out: list[Station] = []
        for river in sc.rivers:
            for g in river.gauges:
                out.append(Station(
                    id=g.station, name=g.name, river=river.name, municipality_code=g.municipality, lat=g.lat,
                    lon=g.lon, gauge_type=g.gauge_type, expected_interval_s=int(
                        86400 if g.reporting == "exception" else max(1, g.interval_s)),
                    exercise=ex, source=f"simulator: {sc.name}", **cast("dict[str, Any]", g.thresholds)))
        for rg in sc.rain_gauges:
            out.append(Station(id=rg.station, name=rg.name, kind="rainfall", gauge_type="none",
                               municipality_code=rg.municipality, expected_interval_s=int(max(1, rg.interval_s)),
                               exercise=ex, source=f"simulator: {sc.name}"))
        for load in sc.load:
            river = next(r for r in sc.rivers if r.id == load.river)
            for i in range(load.count):
                g = river.gauges[i % len(river.gauges)]
                offset = self._load_offset(load, i)
                th = {k: round(v + offset, 3) for k, v in g.thresholds.items()} if load.kind == "level" else {}
                out.append(Station(
                    id=self._load_id(load, i), name=f"{river.name} load {i}", river=river.name,
                    kind="river_level" if load.kind == "level" else "rainfall",
                    gauge_type=g.gauge_type if load.kind == "level" else "none",
                    municipality_code=load.municipality, expected_interval_s=int(max(1, load.interval_s)),
                    exercise=ex, source=f"simulator load: {sc.name}", **cast("dict[str, Any]", th)))
        out.extend(s.station for s in self._replay)
        return [s.validate() for s in out]

    @staticmethod
    def _load_id(load: LoadSpec, i: int) -> str:
        return f"{load.prefix}{i:05d}"

    def _load_offset(self, load: LoadSpec, i: int) -> float:
        # each load gauge has its own datum: a deterministic offset of 0–2 m
        return round(random.Random(f"{self.scenario.seed}:{load.prefix}:{i}").uniform(0.0, 2.0), 2)

    def _named_gauges(self) -> list[GaugeView]:
        views = []
        for river in self.scenario.rivers:
            for g in river.gauges:
                views.append(GaugeView(g.station, g.name, dict(g.thresholds)))
        for s in self._replay[:12]:
            th = {k: getattr(s.station, k) for k in ("th_standby", "th_caution", "th_evacuation", "th_danger",
                                                      "th_obs_start", "th_crisis", "th_overflow")
                  if getattr(s.station, k) is not None}
            views.append(GaugeView(s.station.id, s.station.name, th))
        return views

    def _device_count(self) -> int:
        sc = self.scenario
        gauges = sum(len(r.gauges) for r in sc.rivers)
        loads = sum(ld.count for ld in sc.load)
        return gauges + len(sc.rain_gauges) + loads + len(self._replay)

    # -- the message plan --------------------------------------------------------------------------
    def _devices(self) -> list[Iterator[Sample]]:
        sc = self.scenario
        span = self.span
        seed = sc.seed
        devices: list[Iterator[Sample]] = []
        telemetry_of: list[tuple[str, str, float]] = []  # (station, municipality, messages per day)
        for river in sc.rivers:
            series = self.river_series[river.id]
            for g in river.gauges:
                rng = random.Random(f"{seed}:level:{g.station}")
                devices.append(_level_device(g, series, span, rng))
                per_day = 144.0 if g.reporting == "exception" else 86400.0 / g.interval_s
                telemetry_of.append((g.station, g.municipality, per_day))
        rain_by_river = {r.id: self.river_series[r.id] for r in sc.rivers}
        for rg in sc.rain_gauges:
            series = rain_by_river.get(rg.river) or simulate_river([], sc.storms, span, dt=sc.dt_s)
            rng = random.Random(f"{seed}:rain:{rg.station}")
            devices.append(_rain_device(rg.station, rg.municipality, series, rg.interval_s, rg.noise, span, rng))
            telemetry_of.append((rg.station, rg.municipality, 86400.0 / rg.interval_s))
        for load in sc.load:
            river = next(r for r in sc.rivers if r.id == load.river)
            series = self.river_series[river.id]
            for i in range(load.count):
                station = self._load_id(load, i)
                rng = random.Random(f"{seed}:load:{station}")
                phase = rng.uniform(0.0, load.interval_s)
                if load.kind == "level":
                    g = river.gauges[i % len(river.gauges)]
                    devices.append(_level_device(g, series, span, rng, station=station, interval_s=load.interval_s,
                                                 phase=phase, offset_m=self._load_offset(load, i),
                                                 municipality=load.municipality))
                else:
                    devices.append(_rain_device(station, load.municipality, series, load.interval_s, 0.1, span,
                                                rng, phase=phase))
                if load.telemetry:
                    telemetry_of.append((station, load.municipality, 86400.0 / load.interval_s))
        if sc.telemetry.enabled:
            for station, municipality, per_day in telemetry_of:
                rng = random.Random(f"{seed}:telemetry:{station}")
                devices.append(_telemetry_device(station, municipality, sc.telemetry, per_day, span,
                                                 self.origin_epoch, rng))
        if self._replay:
            assert self.replay_t0 is not None
            for s in self._replay:
                devices.append(_replay_device(s, self.replay_t0, span))
        return devices

    def samples(self) -> Iterator[Sample]:
        """Every device's samples, merged in scenario-time order (ties: device order)."""
        counter = itertools.count()
        heap: list[tuple[float, int, Sample, Iterator[Sample]]] = []
        for dev in self._devices():
            first = next(dev, None)
            if first is not None:
                heap.append((first.t, next(counter), first, dev))
        heapq.heapify(heap)
        while heap:
            _, _, sample, dev = heap[0]
            yield sample
            nxt = next(dev, None)
            if nxt is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (nxt.t, next(counter), nxt, dev))

    def deliveries(self) -> Iterator[Delivery]:
        """The message plan: deliveries in publishing order (``due``), faults applied."""
        delayed: list[tuple[float, int, Delivery]] = []
        counter = itertools.count()
        apply = self.faults.apply
        for sample in self.samples():
            while delayed and delayed[0][0] <= sample.t:
                yield heapq.heappop(delayed)[2]
            for d in apply(sample):
                if d.due <= sample.t:
                    yield d
                else:
                    heapq.heappush(delayed, (d.due, next(counter), d))
        while delayed:
            yield heapq.heappop(delayed)[2]

    def message(self, d: Delivery) -> tuple[str, bytes]:
        """Topic and payload of one delivery."""
        s = d.sample
        if d.malformed:
            payload = self.encoder.malformed(s, d.malformed)
            station = s.station + "!bad" if d.malformed == "bad_topic" else s.station
            return topic_for(self.prefix, s.municipality, station, s.kind), payload
        return topic_for(self.prefix, s.municipality, s.station, s.kind), self.encoder.payload(s)

    # -- publishing --------------------------------------------------------------------------------
    async def run(self, publisher: Publisher, *, stop: asyncio.Event | None = None, qos: int = 1,
                  flush_timeout: float = 60.0) -> Stats:
        """Publish the plan, paced by ``accel``, until done or ``stop``; returns the statistics."""
        stats = self.stats
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        accel = self.scenario.accel
        inv = 0.0 if math.isinf(accel) else 1.0 / accel
        t_start = loop.time()
        stats.started = time.monotonic()
        stats.state = "running"
        stats.update_rate()
        gauges = stats.gauges
        by_kind = stats.by_kind
        prefix = self.prefix
        encode = self.encoder.payload
        published = 0
        next_fault_check = -1.0
        try:
            for d in self.deliveries():
                if stop.is_set():
                    stats.state = "stopped"
                    break
                if inv:
                    wait = t_start + d.due * inv - loop.time()
                    if wait > 0.002:
                        stats.published = published
                        stats.sim_t = max(stats.sim_t, (loop.time() - t_start) / inv)
                        try:
                            await asyncio.wait_for(stop.wait(), wait)
                        except TimeoutError:
                            pass
                        if stop.is_set():
                            stats.state = "stopped"
                            break
                elif published % 2000 == 0:
                    await asyncio.sleep(0)  # let acks, progress and stop requests through
                s = d.sample
                if d.malformed:
                    topic, payload = self.message(d)
                else:
                    topic = f"{prefix}/{s.municipality}/{s.station}/{s.kind}"
                    payload = encode(s)
                await publisher.publish(topic, payload, qos=qos)
                published += 1
                by_kind[s.kind] += 1
                if s.t > stats.sim_t:
                    stats.sim_t = s.t
                    if s.t >= next_fault_check:
                        stats.faults_active = self.faults.active_types(s.t)
                        next_fault_check = s.t + 60.0
                view = gauges.get(s.station)
                if view is not None and s.kind == "level" and not d.malformed:
                    view.value = s.value  # type: ignore[assignment]
                    view.ts = self.encoder.timestamp(s)
                if published & 255 == 0:
                    stats.published = published
            stats.published = published
            await publisher.flush(timeout=flush_timeout)
            if stats.state == "running":
                stats.state = "finished"
                stats.sim_t = self.span
        except asyncio.CancelledError:
            stats.state = "stopped"
            raise
        except Exception as exc:
            stats.state = "failed"
            stats.error = str(exc)
            raise
        finally:
            stats.published = published
            stats.finished = time.monotonic()
            stats.faults_active = []
        return stats
