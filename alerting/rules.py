"""The alert rules of one station: a pure state machine fed readings in reading-time order.

No I/O here: :class:`StationRules` takes readings and returns :class:`Transition` objects; its whole
state is a JSON-able dict (:meth:`StationRules.to_json`), so the rules worker can keep it in the
database and any worker can take over (see :mod:`alerting.worker`).

River level (condition ``river_level``, one open alert that moves up and down the ladder of
:mod:`alerting.levels`):

* **Missing values.** A stage at or below ``missing_at_or_below`` (0.0 m by default; per gauge, the registry's
  ``missing_at_or_below``, None for a gauge that reads below 0 m: see ``ingest.registry.MISSING_RULE``) is a missing
  value, not a stage: telemetry exports write 欠測 as 0 (the 持世寺 series reads 0.00 for 40 minutes on
  2023-07-03 between 3.4 m readings). Missing values are ignored: they neither raise nor clear.
* **Raising at once.** A plausible reading at or above a threshold raises that level at once (reason
  ``threshold``): a gauge's very first reading, a reading after a long silence, and a lone reading of
  an hourly or report-by-exception gauge (危機管理型水位計 report only while the water rises) all
  count. That is "the first reading at or above 氾濫危険水位".
* **Physical plausibility (spike rejection).** A reading that differs from the last accepted one by
  more than ``max(min_step_m, max_rate_m_per_h × Δt)`` is *suspect*: faster than the gauge's river can
  change. If it reaches a level above the public one, a staff-only **unconfirmed** alert (condition
  ``river_level_unconfirmed``) is raised at once — never silently held. The next reading decides: if
  it is plausible from the suspect, the suspect was a real, fast change and becomes the public level
  (the unconfirmed alert is closed as ``confirmed``); if it is plausible from the reading before, the
  suspect was a spike and the unconfirmed alert is withdrawn (reason :data:`SPIKE`, audited as
  ``alert.withdrawn``). Unconfirmed alerts never reach residents, CAP, MQTT, push or webhooks.
* **Rate of rise.** When the least-squares slope over ``trend_window_s`` says the 氾濫危険水位
  (危険水位 for crisis gauges) will be reached within ``trend_horizon_s``, level 3 is raised early
  (reason ``trend``) — the flood-warning practice of "reached, or forecast to reach". When the stage then
  reaches 避難判断水位 the level is held by that threshold: a transition at the same level (kind
  ``re-evaluated``, reason ``threshold``), so the alert says reached, not forecast.
* **Hysteresis and dwell on the way down.** A level is held while the stage stays at or above its
  threshold minus ``hysteresis_m``; it is lowered (or cleared) only after ``dwell_down_samples``
  consecutive readings *and* ``dwell_down_s`` seconds below that. What a level is told by is the reading that
  put it in force, never a later stage that only keeps it (:meth:`StationRules.standing`): a stage below its
  threshold never "reached" it; a level the river fell to is :data:`HELD` while the river falls.
* **Step-down by time when readings stop.** Report-by-exception gauges (危機管理型水位計) may send one
  or two readings below the line and then nothing for months (0700000235 川田橋 falls back to standby
  at 02:50 and 03:30 JST on 2025-11-01 and next reports 9.5 months later); silence while the last value
  is below the line is no evidence the water is still high. So when the latest reading is below the
  threshold minus ``hysteresis_m``, ``dwell_down_s`` has passed since the first reading below, and no
  reading has come for ``dwell_down_grace_s`` after that (one reporting interval, see
  :meth:`RuleConfig.for_interval`: the next reading of a regular gauge is overdue), the level is lowered
  as after the dwell, however few readings came. The moment is reading time
  ``max(down_since + dwell_down_s, last reading) + dwell_down_grace_s``; it is applied by
  :meth:`StationRules.tick` (the worker calls it periodically with the wall clock) and, before a newer
  reading is evaluated, by the reading itself, so a replay of the same readings reaches the same levels.
  Its transition has reason :data:`STEPPED_DOWN`, is dated at that moment and carries the last reading's stage
  with that reading's own time (:attr:`Transition.value_ts`) and the dwell (:attr:`Transition.dwell_s`): worded
  as lowered by time, never as the river falling then (no reading showed it). The next reading that changes no
  level gives a transition at the same level telling what holds it by that reading (reached, forecast, or
  :data:`HELD`): the last reading is no longer the one before the step-down.
* **Reached again at the same level.** A level the river fell to below its threshold (held while it falls), or
  a trend's level 3, that the river then rises to reach at its threshold gives a transition at the same level
  (reason ``threshold``): the alert says reached, never "falling" while the river rose.

Device health (staff only): ``low_battery`` (battery_pct below ``low_battery_pct`` or status
low_battery) and ``fault`` (status fault), each raised after ``health_dwell_samples`` consecutive bad
reports and cleared after as many good ones. A silent station is a wall-clock condition: its rule is
:func:`is_silent`, applied by the worker (and shown by the staff console), not by :class:`StationRules`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from alerting.levels import LEVEL3, LEVEL4, Step, level_for, threshold_of, trend_target

RIVER = "river_level"
UNCONFIRMED = "river_level_unconfirmed"
LOW_BATTERY = "low_battery"
FAULT = "fault"
SILENT = "silent"
ORDER = "evacuation_order"
CONDITIONS = (RIVER, UNCONFIRMED, LOW_BATTERY, FAULT, SILENT, ORDER)
HEALTH_KINDS = ("battery_pct", "status")
STATUS_OK, STATUS_LOW_BATTERY, STATUS_FAULT, STATUS_MAINTENANCE = 0, 1, 2, 3
#: a station is silent after this many of its expected reading intervals without data (the default of the
#: ``alerting.silent_factor`` setting; see :func:`is_silent`)
SILENT_FACTOR = 3.0
#: the station kinds expected to send readings of their own (a gateway may only relay other stations')
REPORTING_KINDS = ("river_level", "rainfall", "device")

#: reasons of the unconfirmed alert's life
IMPLAUSIBLE = "beyond plausible rate"
CONFIRMED = "confirmed"
SPIKE = "withdrawn: spike"
#: the reason of a river level told as held while the river falls (the hysteresis and dwell on the way down):
#: the level was lowered to it, or its stage is below its threshold now (:meth:`StationRules.standing`). Worded
#: "the river has begun to fall; the level continues" (:mod:`alerting.texts`), never as a threshold reached
HELD = "held: the river falls"
#: the reason of a level lowered (or cleared) by time — the step-down by time when readings stop (module docstring,
#: :meth:`StationRules.tick`): no reading at or above the level for the dwell (``dwell_down_s``) and none since for
#: the grace. Its transition is dated when the step-down applies, with the last reading's stage and that
#: reading's time (:attr:`Transition.value_ts`) and the dwell (:attr:`Transition.dwell_s`); worded "lowered because
#: the river stayed below the threshold for <dwell>, last reading <stage> at <time>" (:mod:`alerting.texts`),
#: never as the river falling at that moment: no reading showed it then
STEPPED_DOWN = "lowered by time: below the threshold for the dwell, no newer reading"

#: the default plausible rate of change of a river stage, m/h (see :class:`RuleConfig`)
MAX_RATE_M_PER_H = 6.0

#: how far, in metres, binary floating point may miss a line the rules draw from decimal stages: a nanometre, a
#: million times finer than any gauge reports (1 mm), far coarser than the rounding of a stage up to 2,000 m
#: (about 1e-13 m). Stages and thresholds are decimals, but ``6.4 - 0.1`` is 6.300000000000001 and ``0.4 - 0.1``
#: 0.30000000000000004: without it a stage exactly on the hold line (threshold - ``hysteresis_m``) fell below
#: it, and a step of exactly ``min_step_m`` was beyond the plausible rate (tests/alerting/test_alerting_decimal_edges.py)
LINE_TOLERANCE_M = 1e-9


@dataclass(frozen=True)
class RuleConfig:
    """Tunable parameters (defaults suit 10-minute gauges; all times are reading time, stages in m).

    ``max_rate_m_per_h`` (default :data:`MAX_RATE_M_PER_H` = 6.0 m/h, per gauge in the registry's
    ``max_rate_m_per_h``) is the fastest change of stage taken as physically plausible. Measured on the
    real series in ``shared/data/river_levels`` (change between consecutive readings ≤ 1 h apart):

    * MLIT 川の水位情報, 226 Fukushima gauges, 19,490 such pairs: median 0.00, 99th percentile
      0.32 m/h, 99.9th 1.39 m/h; the largest genuine rise is **4.00 m in one hour** (0700000003
      鶴沼川(枝松橋), 2025-11-01 07:50 JST; the water stayed there), then 3.46 m/h (0700000072,
      2025-11-17 02:20); the largest fall is 3.70 m/h (0700000003, 2025-11-25 03:10).
    * 持世寺 (厚東川, the 2023-07-01 flood, 10-minute data): at most 0.27 m in 10 minutes (1.62 m/h),
      1.44 m in one hour.

    6.0 m/h is 1.5 times the fastest genuine change on record, so no real reading in either record is
    suspect, while a +3 m jump within 10 minutes (18 m/h) is. ``min_step_m`` lets small steps through
    whatever the interval (gauge resolution and noise over very short Δt).

    ``time_scale`` > 1 only for exercise streams of a scenario that runs its clock faster (see
    :meth:`scaled`); the real rules' hold times are never changed.
    """

    hysteresis_m: float = 0.10
    dwell_down_samples: int = 3
    dwell_down_s: float = 1800.0
    dwell_down_grace_s: float = 600.0  # silence after the dwell before a time step-down (one interval)
    max_rate_m_per_h: float = MAX_RATE_M_PER_H
    min_step_m: float = 0.30
    missing_at_or_below: float | None = 0.0
    trend_window_s: float = 3600.0
    trend_min_samples: int = 4
    trend_horizon_s: float = 3600.0
    trend_min_rise_m_per_h: float = 0.10
    buffer_s: float = 3 * 3600.0
    buffer_max: int = 32  # the state stays small however often a gauge reports
    low_battery_pct: float = 20.0
    low_battery_clear_pct: float = 25.0
    health_dwell_samples: int = 2

    def for_interval(self, interval_s: float) -> RuleConfig:
        """The same rules for a gauge reporting every ``interval_s``: the windows cover enough samples."""
        return replace(
            self,
            trend_window_s=max(self.trend_window_s, (self.trend_min_samples + 0.5) * interval_s),
            buffer_s=max(self.buffer_s, 12 * interval_s),
            dwell_down_grace_s=max(self.dwell_down_grace_s, float(interval_s)),
        )

    def for_gauge(self, *, max_rate_m_per_h: float | None,
                  missing_at_or_below: float | None = 0.0) -> RuleConfig:
        """The rules with a gauge's own plausible rate (None keeps the default) and its own 欠測 sentinel
        (the registry's ``missing_at_or_below``; None: the gauge has none, every stage is a stage)."""
        rate = self.max_rate_m_per_h if max_rate_m_per_h is None else float(max_rate_m_per_h)
        missing = None if missing_at_or_below is None else float(missing_at_or_below)
        if (rate, missing) == (self.max_rate_m_per_h, self.missing_at_or_below):
            return self
        return replace(self, max_rate_m_per_h=rate, missing_at_or_below=missing)

    def scaled(self, time_scale: float) -> RuleConfig:
        """The rules on a clock running ``time_scale`` times faster (exercise scenarios only).

        Every duration (dwell, trend window and horizon, buffer) shrinks by the factor and every rate
        grows by it, so a drill whose river rises in minutes instead of hours shows the same ladder,
        hold and step-down as a real flood. Raises ValueError for a factor below 1.
        """
        if time_scale < 1:
            raise ValueError(f"time_scale must be at least 1, not {time_scale}")
        if time_scale == 1:
            return self
        k = float(time_scale)
        return replace(self, dwell_down_s=self.dwell_down_s / k, dwell_down_grace_s=self.dwell_down_grace_s / k,
                       max_rate_m_per_h=self.max_rate_m_per_h * k,
                       trend_window_s=self.trend_window_s / k, trend_horizon_s=self.trend_horizon_s / k,
                       trend_min_rise_m_per_h=self.trend_min_rise_m_per_h * k, buffer_s=self.buffer_s / k)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RuleConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclass(frozen=True, slots=True)
class Reading:
    kind: str
    ts: float  # epoch seconds
    value: float


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of one condition's alert. ``new_level`` None means cleared; ``old_level`` None raised."""

    condition: str
    old_level: int | None
    new_level: int | None
    ts: float
    value: float | None
    threshold: float | None
    reason: str
    #: found by replaying the stream after late readings (:func:`reconcile`): ``reason``, ``value`` and
    #: ``threshold`` are still the rule, stage (m) and threshold (m) that decided it
    re_evaluated: bool = False
    #: the reading time (epoch s) of ``value`` when it is not ``ts``: a step-down by time (:data:`STEPPED_DOWN`) is
    #: dated when it applies and carries the last reading's stage, read at ``value_ts``; None otherwise
    value_ts: float | None = None
    #: the dwell (s) a step-down by time waited for (``RuleConfig.dwell_down_s``, scaled for a fast exercise)
    dwell_s: float | None = None

    @property
    def kind(self) -> str:
        """``raised``, ``cleared``, ``escalated``, ``de-escalated``, or ``re-evaluated``: the same level now held
        by another rule or threshold (a trend's level 3 reaching 避難判断水位; new thresholds)."""
        if self.old_level == self.new_level:
            return "re-evaluated"
        if self.old_level is None:
            return "raised"
        if self.new_level is None:
            return "cleared"
        return "escalated" if self.new_level > self.old_level else "de-escalated"


def slope(points: Iterable[tuple[float, float]]) -> tuple[float, float, float] | None:
    """Least-squares fit ``value = a + b·(t − t̄)``: returns (b per second, t̄, a) or None."""
    pts = list(points)
    n = len(pts)
    if n < 2:
        return None
    tm = sum(t for t, _ in pts) / n
    vm = sum(v for _, v in pts) / n
    sxx = sum((t - tm) ** 2 for t, _ in pts)
    if sxx <= 0:
        return None
    sxy = sum((t - tm) * (v - vm) for t, v in pts)
    return sxy / sxx, tm, vm


@dataclass
class _HealthState:
    active: bool = False
    bad_run: int = 0
    good_run: int = 0
    last_ts: float = -math.inf


@dataclass
class State:
    level: int | None = None
    reason: str = ""
    last_ts: float | None = None  # newest level reading seen (accepted, suspect or missing)
    last_valid: tuple[float, float] | None = None
    pending: tuple[float, float] | None = None  # the suspect reading waiting for the next one
    unconfirmed: int | None = None  # level of the open unconfirmed alert
    buffer: list[tuple[float, float]] = field(default_factory=list)  # accepted readings (ts, value)
    down_run: int = 0
    down_since: float | None = None
    down_max: int = 0
    ticked_to: float | None = None  # the latest time :meth:`StationRules.tick` was applied at
    #: the reading (ts, m) of the transition that last put the level in force or changed its rule, and whether
    #: it lowered the level (see :meth:`StationRules.standing`); None with no level, or in a state stored before
    cause: tuple[float, float, bool] | None = None
    health: dict[str, _HealthState] = field(default_factory=dict)


class StationRules:
    """The rules of one (station, exercise) stream."""

    def __init__(self, steps: tuple[Step, ...], config: RuleConfig | None = None,
                 state: dict[str, Any] | None = None) -> None:
        self.steps = steps
        self.config = config or RuleConfig()
        self.state = self._load(state) if state else State()

    # -- serialisation ---------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        s = self.state
        return {
            "level": s.level, "reason": s.reason, "last_ts": s.last_ts,
            "last_valid": list(s.last_valid) if s.last_valid else None,
            "pending": list(s.pending) if s.pending else None,
            "unconfirmed": s.unconfirmed,
            "buffer": [[t, v] for t, v in s.buffer], "down_run": s.down_run,
            "down_since": s.down_since, "down_max": s.down_max, "ticked_to": s.ticked_to,
            "cause": list(s.cause) if s.cause else None,
            "health": {k: {"active": h.active, "bad_run": h.bad_run, "good_run": h.good_run,
                           "last_ts": None if h.last_ts == -math.inf else h.last_ts}
                       for k, h in s.health.items()},
        }

    @staticmethod
    def _load(data: dict[str, Any]) -> State:
        s = State()
        s.level = data.get("level")
        s.reason = data.get("reason", "")
        s.last_ts = data.get("last_ts")
        s.last_valid = tuple(data["last_valid"]) if data.get("last_valid") else None  # type: ignore[assignment]
        s.pending = tuple(data["pending"]) if data.get("pending") else None  # type: ignore[assignment]
        s.buffer = [(float(t), float(v)) for t, v in data.get("buffer", [])]
        s.unconfirmed = data.get("unconfirmed")
        s.down_run = int(data.get("down_run", 0))
        s.down_since = data.get("down_since")
        s.down_max = int(data.get("down_max", 0))
        s.ticked_to = data.get("ticked_to")
        cause = data.get("cause")
        s.cause = (float(cause[0]), float(cause[1]), bool(cause[2])) if cause else None
        for name, h in (data.get("health") or {}).items():
            s.health[name] = _HealthState(bool(h.get("active")), int(h.get("bad_run", 0)),
                                          int(h.get("good_run", 0)),
                                          -math.inf if h.get("last_ts") is None else float(h["last_ts"]))
        return s

    # -- queries ---------------------------------------------------------------------------------
    def is_duplicate(self, r: Reading) -> bool:
        """An already evaluated level reading (the worker re-reads a little overlap)."""
        s = self.state
        if r.kind != "level" or s.last_ts is None or r.ts > s.last_ts:
            return False
        return any(t == r.ts for t, _ in s.buffer) or (s.pending is not None and s.pending[0] == r.ts) or (
            s.last_valid is not None and s.last_valid[0] == r.ts)

    def is_late(self, r: Reading) -> bool:
        """A level reading older than what was evaluated: the station must be re-evaluated."""
        s = self.state
        return r.kind == "level" and s.last_ts is not None and r.ts <= s.last_ts and not self.is_duplicate(r)

    def standing(self) -> list[Transition]:
        """The river level in force as the transition that would raise it now, told by what holds it: one true
        whole of rule, reading time, stage (m) and threshold (m). Empty when no level is open. The cause for
        :func:`reconcile` of a replayed machine's level that no replayed transition explains, and of a level
        judged again under new thresholds (:meth:`alerting.worker.RulesWorker._judge_again`).

        The rule: a level is told by a reading that shows what holds it — the newest accepted reading when it
        does, else the reading of the transition that last put the level in force or changed its rule; never a
        stage that only keeps it (hysteresis and dwell keep a level while the stage is below its threshold, and
        such a stage "reaching" the threshold would be false):

        * a level reached (``threshold``): the newest reading if it is at or above the level's threshold, else
          the reading that reached it;
        * a level 3 of the trend rule (``trend``), with the 氾濫危険水位 (危険水位) it is forecast to reach: the
          newest reading if its trend still forecasts it, else the reading whose trend did;
        * a level the river was falling to (lowered after the dwell, by the threshold rule): reason
          :data:`HELD` (worded as held while the river falls) at the reading that lowered it, with the level's
          threshold; so too a level whose only reading to tell is below its threshold (a state stored before
          causes were kept, which has its newest accepted reading as its cause)."""
        s = self.state
        if s.level is None or s.last_valid is None:
            return []
        reason = s.reason or "threshold"
        th = threshold_of(self.steps, s.level)
        ts, value, fell = s.cause if s.cause is not None else (*s.last_valid, False)
        if reason == "trend" and s.level == LEVEL3:
            target = trend_target(self.steps)
            th = target.threshold if target else th
            if self._trend_level(*s.last_valid)[0]:
                ts, value = s.last_valid
        elif fell:
            reason = HELD
        elif th is not None and s.last_valid[1] >= th:
            ts, value = s.last_valid
        elif th is not None and value < th:
            reason = HELD
        return [Transition(RIVER, None, s.level, ts, value, th, reason)]

    def settled(self, suspect: tuple[float, float] | None, level: int | None) -> list[Transition]:
        """How an unconfirmed alert of ``level`` for the reading ``suspect`` (ts, m) that this machine (a replay)
        no longer holds open ended, as the live rules would have closed it: :data:`CONFIRMED` when the replay
        accepted the reading as the river, else :data:`SPIKE` (not above the public level, or rejected), at
        that reading with the threshold of ``level``. Empty without a suspect or when the unconfirmed level is
        still open. For :func:`reconcile`, which never closes an unconfirmed alert with a bare
        :data:`RE_EVALUATED`."""
        s = self.state
        if suspect is None or level is None or s.unconfirmed is not None:
            return []
        ts, value = suspect
        accepted = any(t == ts for t, _ in s.buffer) or (s.last_valid is not None and s.last_valid[0] == ts)
        return [Transition(UNCONFIRMED, level, None, ts, value, threshold_of(self.steps, level),
                           CONFIRMED if accepted else SPIKE)]

    def open_conditions(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self.state.level is not None:
            out[RIVER] = self.state.level
        if self.state.unconfirmed is not None:
            out[UNCONFIRMED] = self.state.unconfirmed
        for name, h in self.state.health.items():
            if h.active:
                out[name] = 0
        return out

    # -- feeding ---------------------------------------------------------------------------------
    def feed(self, r: Reading) -> list[Transition]:
        if r.kind == "level":
            return self._level(r)
        if r.kind in HEALTH_KINDS:
            return self._health(r)
        return []

    def tick(self, now: float) -> list[Transition]:
        """Apply the step-down by time at reading time ``now`` (epoch s; the worker passes the wall clock).

        Returns the river-level transition, if the level was lowered. Idempotent; never raises a level.
        """
        s = self.state
        s.ticked_to = now if s.ticked_to is None else max(s.ticked_to, now)
        return self._step_down_by_time(now)

    def feed_all(self, readings: Iterable[Reading]) -> list[Transition]:
        out: list[Transition] = []
        for r in readings:
            out.extend(self.feed(r))
        return out

    # -- river level -----------------------------------------------------------------------------
    def _plausible(self, prev: tuple[float, float], ts: float, value: float) -> bool:
        dt_h = abs(ts - prev[0]) / 3600.0
        allowed = max(self.config.min_step_m, self.config.max_rate_m_per_h * dt_h)
        return abs(value - prev[1]) <= allowed + LINE_TOLERANCE_M  # (at exactly the allowed step: plausible)

    def _level(self, r: Reading) -> list[Transition]:
        s = self.state
        if s.last_ts is not None and r.ts <= s.last_ts:
            return []  # duplicates and late readings: the worker re-evaluates from a checkpoint
        s.last_ts = r.ts
        stepped = self._step_down_by_time(r.ts)
        if stepped:
            return [*stepped, *self._level_reading(r)]
        return self._level_reading(r)

    def _level_reading(self, r: Reading) -> list[Transition]:
        s, c = self.state, self.config
        if c.missing_at_or_below is not None and r.value <= c.missing_at_or_below:
            return []
        point = (r.ts, r.value)
        if s.pending is not None:
            suspect = s.pending
            if self._plausible(suspect, *point):  # the suspect was a real, fast change
                s.pending = None
                return [*self._evaluate(suspect), *self._evaluate(point), *self._settle(point, CONFIRMED)]
            if s.last_valid is None or self._plausible(s.last_valid, *point):  # it was a spike
                s.pending = None
                return [*self._settle(point, SPIKE), *self._evaluate(point)]
            s.pending = point  # neither: the newer reading is the suspect now
            return self._suspect(point)
        if s.last_valid is None or self._plausible(s.last_valid, *point):
            return self._evaluate(point)
        s.pending = point
        return self._suspect(point)

    def _suspect(self, point: tuple[float, float]) -> list[Transition]:
        """A reading beyond the plausible rate: an unconfirmed alert when it reaches above the public level."""
        s = self.state
        ts, value = point
        level = level_for(self.steps, value)
        if level <= (s.level or 0):
            return self._settle(point, SPIKE)  # nothing above the public level (any earlier suspect is gone)
        if level == s.unconfirmed:
            return []
        old, s.unconfirmed = s.unconfirmed, level
        return [Transition(UNCONFIRMED, old, level, ts, value, threshold_of(self.steps, level), IMPLAUSIBLE)]

    def _settle(self, point: tuple[float, float], reason: str) -> list[Transition]:
        """Close the unconfirmed alert (``confirmed`` or withdrawn as a spike), if one is open."""
        s = self.state
        if s.unconfirmed is None:
            return []
        old, s.unconfirmed = s.unconfirmed, None
        return [Transition(UNCONFIRMED, old, None, point[0], point[1], threshold_of(self.steps, old), reason)]

    def _trend_level(self, ts: float, value: float) -> tuple[bool, float | None]:
        """Does the trend forecast 氾濫危険水位 (危険水位) within the horizon?"""
        c = self.config
        target = trend_target(self.steps)
        if target is None or value >= target.threshold:
            return False, None
        lowest = self.steps[0].threshold if self.steps else target.threshold
        if value < lowest:
            return False, None
        window = [p for p in self.state.buffer if p[0] >= ts - c.trend_window_s]
        if len(window) < c.trend_min_samples:
            return False, None
        fit = slope(window)
        if fit is None:
            return False, None
        b = fit[0]
        if b * 3600.0 < c.trend_min_rise_m_per_h:
            return False, None
        eta = (target.threshold - value) / b
        return eta <= c.trend_horizon_s, eta

    def _evaluate(self, point: tuple[float, float]) -> list[Transition]:
        s = self.state
        after_time = s.level is not None and s.reason == STEPPED_DOWN
        out = self._evaluate_level(point)
        if after_time and s.level is not None and s.reason == STEPPED_DOWN:
            # the first reading after a step-down by time that changes no level: it tells what holds the level now
            # (reached, forecast, or held while the river falls), at the same level; the alert no longer says the
            # reading before the step-down was the last, "none since" (found: it did while readings came in)
            ts, value = point
            level = s.level
            if level_for(self.steps, value) >= level:
                s.reason, s.cause = "threshold", (ts, value, False)
            elif level == LEVEL3 and self._trend_level(ts, value)[0]:
                s.reason, s.cause = "trend", (ts, value, False)
            else:
                s.reason, s.cause = "threshold", (ts, value, True)
            out.extend(replace(t, old_level=level) for t in self.standing())
        return out

    def _evaluate_level(self, point: tuple[float, float]) -> list[Transition]:
        s, c = self.state, self.config
        ts, value = point
        s.buffer.append(point)
        s.buffer = [p for p in s.buffer if p[0] >= ts - c.buffer_s][-c.buffer_max:]
        s.last_valid = point
        raw = level_for(self.steps, value)
        trend, _eta = self._trend_level(ts, value)
        candidate, reason = raw, "threshold"
        if trend and raw < LEVEL3:
            candidate, reason = LEVEL3, "trend"
        current = s.level or 0
        out: list[Transition] = []
        if candidate > current:  # up at once: the reading is plausible, so it is the river
            s.down_run, s.down_since, s.down_max = 0, None, 0
            out.append(self._change(candidate, ts, value, reason))
            return out
        if candidate == current:
            s.down_run, s.down_since, s.down_max = 0, None, 0
            th = threshold_of(self.steps, current) if current else None
            fell_below = (s.cause is not None and s.cause[2] and th is not None and s.cause[1] < th)
            if current and reason == "threshold" and (s.reason == "trend" or fell_below) and raw >= current:
                # a level 3 forecast by the trend now reached, or a level the river fell to (told below its
                # threshold, as held while the river falls) that the river rose back to reach: held by its
                # threshold, and the alert says reached — never "falling" while the river rose to the threshold
                s.reason = "threshold"
                s.cause = (ts, value, False)
                out.append(Transition(RIVER, current, current, ts, value, threshold_of(self.steps, current),
                                      "threshold"))
            return out
        # candidate < current: hold with hysteresis, lower only after the dwell
        hold = 0
        for level in range(current, 0, -1):
            th = threshold_of(self.steps, level)
            if level == LEVEL3 and trend:
                hold = level
                break
            # at or above the hold line, a stage exactly on it included (LINE_TOLERANCE_M)
            if (th is not None and value >= th - c.hysteresis_m - LINE_TOLERANCE_M
                    and level_for(self.steps, th) == level):
                hold = level
                break
        target = max(candidate, hold)
        if target >= current:
            s.down_run, s.down_since, s.down_max = 0, None, 0
            return out
        s.down_run += 1
        if s.down_since is None:
            s.down_since = ts
        s.down_max = max(s.down_max, target)
        if s.down_run >= c.dwell_down_samples and ts - s.down_since >= c.dwell_down_s:
            new_level = s.down_max
            s.down_run, s.down_since, s.down_max = 0, None, 0
            # the trend rule holds only a level 3 (a level 4 kept within its hysteresis while the trend is up is
            # held by the threshold rule: worded as the river falling, never as forecast at level 4)
            out.append(self._change(new_level, ts, value,
                                    "trend" if new_level == LEVEL3 and reason == "trend" else "threshold"))
        return out

    def _time_due(self) -> float | None:
        """Reading time at which a started step-down completes by time (see the module docstring)."""
        s, c = self.state, self.config
        if s.level is None or s.down_since is None or s.pending is not None or s.last_valid is None:
            return None
        return max(s.down_since + c.dwell_down_s, s.last_valid[0]) + c.dwell_down_grace_s

    def _step_down_by_time(self, now: float) -> list[Transition]:
        s = self.state
        due = self._time_due()
        if due is None or now < due or s.last_valid is None:
            return []
        new_level = s.down_max
        s.down_run, s.down_since, s.down_max = 0, None, 0
        last_ts, last_value = s.last_valid
        t = self._change(new_level, due, last_value, STEPPED_DOWN)
        if new_level:
            # what holds it is the threshold rule, lowered by the river (standing(): HELD, told by the last reading at
            # its own time); the change itself is worded by time (STEPPED_DOWN), which the state keeps until the
            # next reading tells what holds the level (:meth:`_evaluate`)
            s.reason, s.cause = STEPPED_DOWN, (last_ts, last_value, True)
        return [replace(t, value_ts=last_ts, dwell_s=self.config.dwell_down_s)]

    def _change(self, new: int, ts: float, value: float, reason: str) -> Transition:
        s = self.state
        old = s.level
        s.level = new or None
        s.reason = reason if new else ""
        s.cause = (ts, value, old is not None and new < old) if new else None
        th = threshold_of(self.steps, new) if new else threshold_of(self.steps, old or 0)
        if reason == "trend" and new == LEVEL3:
            target = trend_target(self.steps)
            th = target.threshold if target else th
        return Transition(RIVER, old, s.level, ts, value, th, reason)

    # -- device health ---------------------------------------------------------------------------
    def _health(self, r: Reading) -> list[Transition]:
        c = self.config
        verdicts: dict[str, bool | None] = {}
        if r.kind == "battery_pct":
            verdicts["low_battery"] = (True if r.value < c.low_battery_pct
                                       else False if r.value >= c.low_battery_clear_pct else None)
        elif r.kind == "status":
            code = int(round(r.value))
            if code == STATUS_OK:
                verdicts = {"low_battery": False, "fault": False}
            elif code == STATUS_LOW_BATTERY:
                verdicts = {"low_battery": True}
            elif code == STATUS_FAULT:
                verdicts = {"fault": True}
        out: list[Transition] = []
        for name, bad in verdicts.items():
            h = self.state.health.setdefault(name, _HealthState())
            if bad is None or r.ts < h.last_ts:
                continue
            if r.ts == h.last_ts:  # battery_pct and status of one telemetry message count once
                continue
            h.last_ts = r.ts
            if bad:
                h.bad_run, h.good_run = h.bad_run + 1, 0
                if not h.active and h.bad_run >= c.health_dwell_samples:
                    h.active = True
                    out.append(Transition(name, None, 0, r.ts, r.value, None, r.kind))
            else:
                h.good_run, h.bad_run = h.good_run + 1, 0
                if h.active and h.good_run >= c.health_dwell_samples:
                    h.active = False
                    out.append(Transition(name, 0, None, r.ts, r.value, None, r.kind))
        return out


def is_silent(*, station_kind: str, seconds_since_data: float | None, seconds_since_registered: float,
              expected_interval_s: float, factor: float = SILENT_FACTOR,
              seconds_since_switch: float | None = None) -> bool:
    """Is a station silent now? The one rule of the rules worker's ``silent`` alert and the staff console.

    A station is silent when more than ``factor`` × ``expected_interval_s`` seconds have passed since its
    newest reading or, if it never reported in its stream since the stream began, since that beginning.

    * **Watched:** every station expected to send readings of its own (:data:`REPORTING_KINDS`:
      river-level and rain gauges and devices alike). Not a ``gateway``: its SenML packs may carry only
      other stations' readings, and those stations fall silent themselves when it fails.
    * **Data:** a reading of *any* kind — level, rain or telemetry (battery, signal, status). The alert
      says "no data from the device: check the device and its link" (:mod:`alerting.texts`), and a
      report-by-exception gauge (危機管理型水位計) that sends levels only while the water rises can show
      it is alive by its telemetry.
    * **Never reported:** silent once the same time has passed since registration: the grace of a gauge
      that just reported (a newly imported gauge is not a fault yet), but not unwatched for ever.
      Readings from before registration, released from quarantine, count as data like any other.
    * **Streams:** exercise and real readings are separate; the caller passes the station's own stream. A
      stream that began since registration (:func:`stream_start`: the last switch of the exercise flag,
      unless that switch only ended a flap shorter than the grace) is watched from its beginning when that
      is later than its newest reading or registration: a drill station switched to real is not silent
      at once because it was registered long ago (nor because of a real reading of before a drill period),
      and likewise a real station switched to exercise; a silent real station flapped to exercise and back
      within the grace stays silent (its clock, like its alert, goes on).

    Parameters
    ----------
    station_kind
        The registry's ``stations.kind``.
    seconds_since_data
        Seconds from the station's newest reading to now (None: it never reported). Negative (a reading
        slightly in the future) is data just now.
    seconds_since_registered
        Seconds from the station's registration (``stations.created_at``) to now.
    expected_interval_s
        The station's expected reporting interval, seconds.
    factor
        How many intervals may pass without data (setting ``alerting.silent_factor``, default
        :data:`SILENT_FACTOR` = 3: silent once three intervals have passed without a reading).
    seconds_since_switch
        Seconds from the beginning of the stream (:func:`stream_start`) to now; None if it began at
        registration.

    Returns
    -------
    bool
        True when silent. Both sides pass times measured on one clock (the database's ``now()``,
        :func:`alerting.silence.station_silence`).
    """
    if station_kind not in REPORTING_KINDS:
        return False
    quiet_for = seconds_since_registered if seconds_since_data is None else seconds_since_data
    if seconds_since_switch is not None:  # the stream began at the switch: watched from then at the earliest
        quiet_for = min(quiet_for, seconds_since_switch)
    return quiet_for > factor * expected_interval_s


#: how many of a station's last switches between real and exercise the registry keeps
#: (``stations.exercise_switches``, migration ``046_station_exercise_switches``)
SWITCHES_KEPT = 32


def stream_start(switches: Sequence[float], *, grace_s: float) -> float | None:
    """When a station's current stream (real or exercise) began, for the silence clock (:func:`is_silent`).

    The rule: the stream began at the last switch of the exercise flag — **unless** the period in the other
    registration that switch ended was shorter than ``grace_s`` (setting ``alerting.exercise_grace_s``) and
    the station had been in its current registration before it: then that excursion was a flap (a mistaken
    toggle corrected, an import and a staff edit disagreeing) and the stream goes on from where it began
    before it, walking back over every such flap. ``None``: it began at registration.

    Why: a real alert outlives a switch to exercise for the grace and, switched back within it, goes on as the
    same alert (:meth:`alerting.worker.RulesWorker.follow_registry`). A ``silent`` alert is one of them, so its
    clock must go on too: counted from the switch back, a silent station flapped to exercise and back had its
    alert cleared as if data had come ("data again" with no reading) and raised anew 3 intervals later. A
    station that was an exercise station for the grace or longer starts afresh (its real alerts ended), and a
    stream the station never had before (the other registration since registration) begins at its switch, so
    a drill station switched to real is not silent at once for having been registered long ago.

    Parameters
    ----------
    switches
        The times of the station's last switches, epoch seconds, oldest first, alternating registrations,
        the newest being ``stations.exercise_since`` (``stations.exercise_switches``, at most
        :data:`SWITCHES_KEPT`; empty: never switched since registration).
    grace_s
        Seconds: an excursion to the other registration shorter than this is a flap.

    Returns
    -------
    float or None
        Epoch seconds, or None for registration. When the walk reaches a full history's start (more than
        :data:`SWITCHES_KEPT` switches, the older ones forgotten) it stops at the oldest switch kept into the
        current registration: later, never earlier, than the truth.
    """
    k = len(switches) - 1  # the switch that began the current registration's period (-1: registration)
    while k >= 1 and switches[k] - switches[k - 1] < grace_s:
        k -= 2  # [k-1, k] was a short excursion: the period that began at k-2 (or at registration) goes on
    if k >= 0:
        # k == 0: the other registration's period before it began at registration (this registration's
        # stream began here) or, in a full history, before what is kept: later than the truth, not earlier
        return switches[k]
    return switches[1] if len(switches) >= SWITCHES_KEPT else None


def device_problems(*, silent: bool, battery_pct: float | None, status: int | None,
                    config: RuleConfig | None = None) -> list[str]:
    """A device's problems now, by the rules that raise its staff alerts (a snapshot: no dwell, no hysteresis).

    Parameters
    ----------
    silent
        The verdict of :func:`is_silent` (the rules worker's ``silent`` alert).
    battery_pct, status
        Its latest ``battery_pct`` (percent) and ``status`` code (``ingest.contract.STATUS_CODES``), or None.

    Returns
    -------
    list of str
        Some of ``silent``, ``low_battery`` (below ``config.low_battery_pct``, or the device says so),
        ``fault``, in that order.
    """
    c = config or RuleConfig()
    low = (battery_pct is not None and battery_pct < c.low_battery_pct) or status == STATUS_LOW_BATTERY
    return [name for name, bad in ((SILENT, silent), (LOW_BATTERY, low), (FAULT, status == STATUS_FAULT)) if bad]


#: the reason of a net change of a replay that no replayed transition explains (a health condition whose
#: deciding report came before the replay's checkpoint); every other net change keeps the rule that decided it
RE_EVALUATED = "re-evaluated"


def _rank(level: int | None) -> int:
    return -1 if level is None else level


def _rises(t: Transition) -> bool:
    return _rank(t.new_level) > _rank(t.old_level)


def reconcile(before: dict[str, int], after: dict[str, int], *, ts: float,
              decided: Iterable[Transition] = (), ended: Iterable[Transition] = ()) -> list[Transition]:
    """Net transitions that take open conditions ``before`` to ``after`` (after a re-evaluation).

    Each net transition carries the cause of the change as one consistent whole: the rule (``reason``:
    ``threshold``, ``trend``, a confirmation…), the reading time (``ts``) **and** the stage (``value``) of the
    one reading that decided it, and the threshold — what the texts of every channel are made from (a level 3
    of the trend rule is worded as forecast, with the stage and the 氾濫危険水位 that decided it), never a bare
    "re-evaluated" without a stage, never a stage of one reading dated at another. In order of preference:

    1. the last transition of ``decided`` (the replay's own transitions) of its condition that reached its
       new level the same way (a rise for a net rise, a fall or clearing for a net fall: a rise the live
       state went beyond does not explain a fall back to it): its reason, time, stage and threshold;
       for a river level risen to a level the replay fell back to (up to 4, then down to 3 after the dwell:
       a rise is never explained by a fall), the last replayed rise by the threshold rule to that level or
       above: its time and stage (at or above the new level's threshold, so "reached" is true), reason
       ``threshold``, the new level's threshold;
    2. a river level lowered because a reading that raised it live turned out to be a spike in reading time
       (the replay withdrew, :data:`SPIKE`, an unconfirmed alert that reached above the new level): reason
       :data:`SPIKE` — worded as the live withdrawal of an unconfirmed alert — at the time and stage of the
       reading that showed the spike, with the threshold of the new level (of the old one when cleared);
    3. the level standing at the end of the replay (``ended``, :meth:`StationRules.standing` of the replayed
       machine): what holds it — the reading that put it in force (time and stage), its rule and threshold,
       or :data:`HELD` for a level the river was falling to; for an unconfirmed level the replay does not
       hold open, how the replay ended it (``ended`` also carries :meth:`StationRules.settled`: confirmed, or
       withdrawn as a spike, at the suspect reading);
    4. otherwise (a health condition whose deciding report came before the replay's checkpoint) reason
       :data:`RE_EVALUATED`, dated ``ts`` with no stage — never a river or unconfirmed level, given ``ended``.

    Parameters
    ----------
    before, after
        Open conditions (name → level) of the live state and of the replayed one
        (:meth:`StationRules.open_conditions`).
    ts
        Reading time (epoch s) of a net transition no reading explains: the newest reading replayed.
    decided
        Transitions of the replay, oldest first.
    ended
        :meth:`StationRules.standing` of the replayed machine, and :meth:`StationRules.settled` of it for the
        live state's suspect reading (an open unconfirmed alert).

    Returns
    -------
    list of Transition
        One per condition whose level differs, by condition name, each marked ``re_evaluated``.
    """
    decided = list(decided)
    last: dict[str, Transition] = {}
    for t in decided:
        last[t.condition] = t
    standing = {t.condition: t for t in ended}
    out = []
    for name in sorted(set(before) | set(after)):
        old, new = before.get(name), after.get(name)
        if old == new:
            continue
        cause = last.get(name)
        held = standing.get(name)
        spike = None
        if name == RIVER and old is not None and (new or 0) < old:
            spike = next((t for t in reversed(decided) if t.condition == UNCONFIRMED and t.reason == SPIKE
                          and t.old_level is not None and t.old_level > (new or 0)), None)
        rose = None
        if name == RIVER and new is not None and _rank(new) > _rank(old) and cause is not None \
                and _rank(cause.new_level) < _rank(cause.old_level):
            rose = next((t for t in reversed(decided) if t.condition == RIVER and _rises(t)
                         and t.reason == "threshold" and (t.new_level or 0) >= new), None)
        if cause is not None and cause.new_level == new and _rises(cause) == (_rank(new) > _rank(old)):
            out.append(replace(cause, old_level=old, re_evaluated=True))
        elif rose is not None:
            th = (held.threshold if held is not None and held.new_level == new and held.reason != "trend"
                  else rose.threshold)
            out.append(Transition(name, old, new, rose.ts, rose.value, th, "threshold", re_evaluated=True))
        elif spike is not None:
            th = held.threshold if held is not None and held.new_level == new else spike.threshold
            out.append(Transition(name, old, new, spike.ts, spike.value, th, SPIKE, re_evaluated=True))
        elif held is not None and held.new_level == new:
            out.append(replace(held, old_level=old, re_evaluated=True))
        else:
            out.append(Transition(name, old, new, ts, None, None, RE_EVALUATED, re_evaluated=True))
    return out


__all__ = ["RIVER", "UNCONFIRMED", "CONFIRMED", "IMPLAUSIBLE", "SPIKE", "MAX_RATE_M_PER_H", "LOW_BATTERY", "FAULT", "SILENT", "ORDER", "LEVEL4", "Reading", "RuleConfig",
           "StationRules", "Transition", "device_problems", "is_silent", "stream_start", "SWITCHES_KEPT", "reconcile", "slope",
           "RE_EVALUATED", "HELD", "STEPPED_DOWN"]
