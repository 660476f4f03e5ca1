"""Sonae's level per reading against the source's own flags, for MLIT 川の水位情報 replays.

The MLIT rows carry ``over`` (1 = 観測開始/待機 → standby, 11 = 危険水位 → level 4, 111 = 氾濫開始 → level 5),
computed by the source from its own thresholds: an oracle independent of Sonae's rules. A slice of the
file is published over MQTT to a running ingestor and rules worker (:func:`replay_slice`), and each
reading's level is read back from the alert events in the database and compared (:func:`compare`).

Used by ``tests/alerting/test_alerting_agreement.py`` (a subset of gauges) and by
``bench/level_agreement.py`` (both whole slices, with the table of the issue).
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from alerting.levels import ladder, threshold_of
from alerting.rules import RuleConfig
from ingest.contract import encode_reading
from ingest.registry import Station, upsert_stations
from simulators.replay import JST, MlitRow, mlit_station, read_mlit_rows

SOURCE_LEVEL = {"1": 1, "11": 4, "111": 5}
UNCONFIRMED = "river_level_unconfirmed"

#: the two slices of the issue (JST, half-open)
SLICES = {"2025-10 → 11": ("2025-10-01", "2025-12-01"), "2026-06 → 08-23": ("2026-06-01", "2026-08-24")}


@dataclass(frozen=True)
class SourceReading:
    station: str
    ts: datetime  # UTC
    value: float
    level: int  # from the source's ``over`` flag


@dataclass
class Slice:
    """The stations and readings of one slice (a repeated observation time keeps the first row)."""

    stations: dict[str, Station]
    readings: dict[str, list[SourceReading]]

    def subset(self, ids: Iterable[str]) -> Slice:
        keep = set(ids)
        return Slice({k: v for k, v in self.stations.items() if k in keep},
                     {k: v for k, v in self.readings.items() if k in keep})

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.readings.values())


def load_slice(path: Path, start_jst: str, end_jst: str) -> Slice:
    """The slice [start, end) (JST dates) of the MLIT file, with each reading's source level."""
    start, end = (datetime.fromisoformat(d).replace(tzinfo=JST) for d in (start_jst, end_jst))
    flags: dict[tuple[str, datetime], str] = {}
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for r in csv.DictReader(io.StringIO(fh.read())):
            flags.setdefault((r["station_code"], datetime.fromisoformat(r["obs_time_jst"])), r["over"])
    by_station: dict[str, dict[datetime, tuple[MlitRow, int]]] = defaultdict(dict)
    for row in read_mlit_rows(path):
        if start <= row.obs_time < end:
            level = SOURCE_LEVEL[flags[(row.station_code, row.obs_time)]]
            by_station[row.station_code].setdefault(row.obs_time, (row, level))
    stations, readings = {}, {}
    for code in sorted(by_station):
        points = sorted(by_station[code].items())
        stations[code] = mlit_station(points[0][1][0])
        readings[code] = [SourceReading(code, ts, row.level_m, level) for ts, (row, level) in points]
    return Slice(stations, readings)


async def register(pool: asyncpg.Pool, sl: Slice) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, list(sl.stations.values()))


def places(sl: Slice) -> dict[str, str]:
    """Each gauge's registered municipality, whose topic its readings come on (:mod:`ingest.placement`)."""
    return {code: s.municipality_code for code, s in sl.stations.items() if s.municipality_code}


def messages(sl: Slice) -> list[tuple[str, str, bytes]]:
    """(station, kind, payload) in reading-time order across stations, as the gauges reported."""
    everything = sorted((r for rs in sl.readings.values() for r in rs), key=lambda r: (r.ts, r.station))
    return [(r.station, "level", encode_reading(value=r.value, ts=r.ts, seq=i)) for i, r in enumerate(everything)]


async def evaluated(pool: asyncpg.Pool, sl: Slice) -> bool:
    """Has the rules worker evaluated every station up to its last reading?"""
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT station_id, last_ts FROM rule_state WHERE NOT exercise")
    seen = {r["station_id"]: r["last_ts"] for r in rows}
    return all(seen.get(code) is not None and seen[code] >= rs[-1].ts for code, rs in sl.readings.items())


async def sonae_levels(pool: asyncpg.Pool, sl: Slice) -> dict[str, list[tuple[int, int]]]:
    """Per station and reading: (public river level, unconfirmed level), 0 for none, from the alert events."""
    async with pool.acquire() as conn:
        events = await conn.fetch(
            """SELECT a.station_id, a.condition, e.reading_ts, e.level, e.kind FROM alert_events e
               JOIN alerts a ON a.id = e.alert_id
               WHERE NOT a.exercise AND a.condition = ANY($1::text[]) AND e.kind <> 'acknowledged'
               ORDER BY e.id""", ["river_level", UNCONFIRMED])
    timeline: dict[tuple[str, str], list[tuple[datetime, int]]] = defaultdict(list)
    for e in events:
        timeline[(e["station_id"], e["condition"])].append((e["reading_ts"], e["level"] or 0))
    out: dict[str, list[tuple[int, int]]] = {}
    for code, rs in sl.readings.items():
        levels = []
        for r in rs:
            pair = []
            for condition in ("river_level", UNCONFIRMED):
                level = 0
                for ts, lv in timeline.get((code, condition), []):
                    if ts <= r.ts:
                        level = lv
                pair.append(level)
            levels.append((pair[0], pair[1]))
        out[code] = levels
    return out


@dataclass
class Result:
    gauges: int = 0
    readings: int = 0
    agree: int = 0
    hold: int = 0  # readings above the source's level because of the documented hold on falling water
    agree_outside_hold: int = 0
    l4_readings: int = 0
    l4_missed: int = 0
    l4_missed_unconfirmed: int = 0  # of the missed: an unconfirmed alert ≥ 4 was open
    l4_episodes: int = 0
    l4_never: int = 0
    l5_episodes: int = 0
    l5_never: int = 0
    crossings: int = 0
    crossings_late: int = 0  # not at the crossing reading, and no unconfirmed alert there either
    unconfirmed_readings: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float:
        return self.agree / self.readings if self.readings else 1.0

    @property
    def agreement_outside_hold(self) -> float:
        n = self.readings - self.hold
        return self.agree_outside_hold / n if n else 1.0

    def row(self, name: str) -> str:
        return (f"| {name} | {self.gauges} | {self.readings:,} | {100 * self.agreement:.1f} % | "
                f"{100 * self.agreement_outside_hold:.1f} % | {self.hold:,} | {self.l4_missed} / {self.l4_readings:,} | "
                f"{self.l4_never} / {self.l4_episodes} | {self.l5_never} / {self.l5_episodes} | "
                f"{self.crossings_late} / {self.crossings} | {self.unconfirmed_readings} |")


HEADER = ("| slice (JST) | gauges | readings | agreement | agreement outside the hold | readings in the hold | "
          "≥ L4 readings missed | "
          "L4 episodes never raised | L5 episodes never raised | crossings raised late | readings with an "
          "unconfirmed alert |\n|---|---|---|---|---|---|---|---|---|---|---|")


def _in_hold(config: RuleConfig, steps: Any, readings: list[SourceReading], i: int, level: int) -> bool:
    """The documented hold (alerting.rules): ``level`` stays while the stage is at or above its threshold
    minus ``hysteresis_m``, and until ``dwell_down_samples`` readings *and* ``dwell_down_s`` below it, or
    until the step-down by time (``dwell_down_s`` below, then ``dwell_down_grace_s`` without a reading)."""
    th = threshold_of(steps, level)
    if th is None:
        return False
    floor = th - config.hysteresis_m
    if readings[i].value >= floor:
        return True
    run_start = i
    while run_start > 0 and readings[run_start - 1].value < floor:
        run_start -= 1
    run = i - run_start + 1
    span = (readings[i].ts - readings[run_start].ts).total_seconds()
    if i > run_start:  # the step-down by time, due before this reading came
        due = max(span_to(readings, run_start, i - 1), config.dwell_down_s) + config.dwell_down_grace_s
        if span >= due:
            return False
    # the reading that completes the dwell is the one where the level comes down
    return run < config.dwell_down_samples or span < config.dwell_down_s


def span_to(readings: list[SourceReading], start: int, end: int) -> float:
    """Seconds from reading ``start`` to reading ``end``."""
    return (readings[end].ts - readings[start].ts).total_seconds()


def compare(sl: Slice, levels: dict[str, list[tuple[int, int]]], *, config: RuleConfig | None = None) -> Result:
    config = config or RuleConfig()
    res = Result(gauges=len(sl.readings))
    for code, rs in sl.readings.items():
        steps = ladder("crisis", {"th_obs_start": sl.stations[code].th_obs_start,
                                  "th_crisis": sl.stations[code].th_crisis,
                                  "th_overflow": sl.stations[code].th_overflow})
        ep4 = ep5 = None  # raised so far in the current episode
        prev_src = 0
        for i, (r, (sonae, unconfirmed)) in enumerate(zip(rs, levels[code], strict=True)):
            res.readings += 1
            res.unconfirmed_readings += unconfirmed > 0
            station_config = config.for_interval(sl.stations[code].expected_interval_s)
            hold = sonae > r.level and _in_hold(station_config, steps, rs, i, sonae)
            res.hold += hold
            res.agree += sonae == r.level
            res.agree_outside_hold += (sonae == r.level) and not hold
            if r.level >= 4:
                res.l4_readings += 1
                if sonae < 4:
                    res.l4_missed += 1
                    res.l4_missed_unconfirmed += unconfirmed >= 4
            if r.level > prev_src and r.level >= 4:
                res.crossings += 1
                if sonae < r.level and unconfirmed < r.level:
                    res.crossings_late += 1
                    if len(res.examples) < 20:
                        res.examples.append(f"{code} {r.ts.isoformat()} {r.value} m: source {r.level}, Sonae {sonae}")
            # episodes: runs of readings at ≥ 4 (and at 5); raised = Sonae (or an unconfirmed alert) reached it
            if r.level >= 4:
                if ep4 is None:
                    res.l4_episodes += 1
                    ep4 = False
                ep4 = ep4 or sonae >= 4 or unconfirmed >= 4
            elif ep4 is not None:
                res.l4_never += not ep4
                ep4 = None
            if r.level == 5:
                if ep5 is None:
                    res.l5_episodes += 1
                    ep5 = False
                ep5 = ep5 or sonae >= 5 or unconfirmed >= 5
            elif ep5 is not None:
                res.l5_never += not ep5
                ep5 = None
            prev_src = r.level
        res.l4_never += ep4 is False
        res.l5_never += ep5 is False
    return res
