"""Fault injection: what goes wrong with real field devices, switchable per device and time window.

A device produces :class:`Sample` s (what it measured, when). :class:`FaultInjector` turns each sample
into zero or more :class:`Delivery` s (what reaches the broker, and when), according to the scenario's
``[[faults]]``. Each fault applies to devices matching its globs, to the listed kinds, inside its
window ``[start, end)`` of scenario time, with a probability (seeded, so runs repeat).

=============  ==========================================================  ==============================
fault          what happens                                                where ingest/alerting sees it
=============  ==========================================================  ==============================
dropout        nothing is sent                                             gaps; silent-gauge alerts
stuck          the value freezes at the first value in the window          flat line (stuck-sensor rule)
spike          ``magnitude`` is added to the value                         outlier; dead letter if
                                                                           implausible (contract range)
duplicate      the same message is sent twice (``gap`` apart)              "duplicates skipped"
out_of_order   delivered after the device's next message                   stored by reading time
late           delivered ``delay`` later                                   late reading, re-evaluated
clock_skew     the timestamp is off by ``skew`` seconds                    > max_future: dead letter
                                                                           ("future_timestamp")
malformed      the payload (or topic) is broken, ``variant`` or rotating   dead letter with a reason
flood          ``copies`` identical messages per reading (a retry storm)   duplicates skipped; broker load
=============  ==========================================================  ==============================

:class:`FaultInjector` also counts what it did (``injected``) and what ingest should therefore see
(``expected``: dead letters, duplicate rows skipped, readings missing), so tests and operators can
check each fault "shows up where it should".
"""

from __future__ import annotations

import fnmatch
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ingest.contract import PLAUSIBLE
from simulators.scenario import MALFORMED_VARIANTS, FaultSpec

#: how far in the future a reading may be before ingest dead-letters it (ingest.max_future_s default)
DEFAULT_MAX_FUTURE_S = 300.0
_TELEMETRY_MALFORMED = {"bad_unit": "bad_json"}  # telemetry has no unit: a bad unit would be stored


@dataclass(slots=True)
class Sample:
    """One measurement of one device: ``t`` is scenario seconds since the start."""

    t: float
    station: str
    municipality: str
    kind: str  # level | rain | telemetry
    value: float | dict[str, float | str]
    seq: int
    interval_s: float
    ts_offset_s: float = 0.0  # clock skew added to the timestamp


@dataclass(slots=True)
class Delivery:
    """A message to publish at scenario time ``due``."""

    due: float
    sample: Sample
    malformed: str = ""  # a MALFORMED_VARIANTS entry, or "" for a good message
    fault: str = ""  # the fault that made this delivery differ ("" = none)


@dataclass
class FaultInjector:
    specs: Sequence[FaultSpec]
    seed: int = 1
    max_future_s: float = DEFAULT_MAX_FUTURE_S
    #: seconds a sample's timestamp is ahead of the wall clock when delivered at ``due``; the fleet
    #: sets it from its time mapping (the default is a live run: timestamp = start + t)
    lead: Callable[[Sample, float], float] = field(default=lambda s, due: s.t + s.ts_offset_s - due)
    injected: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed * 7919 + 17)
        self._cache: dict[tuple[str, str], tuple[FaultSpec, ...]] = {}
        self._stuck: dict[tuple[int, str, str], float | dict[str, float | str]] = {}
        self._rotate = 0

    def matching(self, station: str, kind: str) -> tuple[FaultSpec, ...]:
        key = (station, kind)
        found = self._cache.get(key)
        if found is None:
            found = tuple(s for s in self.specs if kind in s.kinds
                          and any(fnmatch.fnmatchcase(station, pattern) for pattern in s.devices))
            self._cache[key] = found
        return found

    def active_types(self, t: float) -> list[str]:
        return sorted({s.type for s in self.specs if s.active(t)})

    def _fires(self, spec: FaultSpec) -> bool:
        return spec.probability >= 1.0 or self._rng.random() < spec.probability

    def apply(self, sample: Sample) -> list[Delivery]:
        """The deliveries of one sample (a list of one unchanged delivery when no fault applies)."""
        specs = self.matching(sample.station, sample.kind) if self.specs else ()
        if not specs:
            return [Delivery(sample.t, sample)]
        active = [s for s in specs if s.active(sample.t) and self._fires(s)]
        # stuck state lasts the whole window, whether or not the probability fired this time
        for s in specs:
            if s.type == "stuck" and not s.active(sample.t):
                self._stuck.pop((s.index, sample.station, sample.kind), None)
        if not active:
            return [Delivery(sample.t, sample)]
        by_type = {s.type: s for s in active}
        rows = 1 if not isinstance(sample.value, dict) else len(sample.value)

        if "dropout" in by_type:
            self.injected["dropout"] += 1
            self.expected["missing_rows"] += rows
            return []
        fault = ""
        if "stuck" in by_type:
            s = by_type["stuck"]
            held = self._stuck.setdefault((s.index, sample.station, sample.kind), sample.value)
            if held != sample.value:
                sample.value = held
            self.injected["stuck"] += 1
            fault = "stuck"
        if "spike" in by_type and isinstance(sample.value, float | int):
            sample.value = float(sample.value) + by_type["spike"].magnitude
            self.injected["spike"] += 1
            fault = "spike"
            low, high = PLAUSIBLE.get(sample.kind, (-1e300, 1e300))
            if not low <= sample.value <= high:
                self.expected["dead_letters"] += 1
                self.expected["missing_rows"] += rows
                rows = 0
        if "clock_skew" in by_type:
            sample.ts_offset_s += by_type["clock_skew"].skew_s
            self.injected["clock_skew"] += 1
            fault = "clock_skew"
        malformed = ""
        if "malformed" in by_type:
            variant = by_type["malformed"].variant
            if not variant:
                variant = MALFORMED_VARIANTS[self._rotate % len(MALFORMED_VARIANTS)]
                self._rotate += 1
            if sample.kind == "telemetry":
                variant = _TELEMETRY_MALFORMED.get(variant, variant)
            malformed = variant
            self.injected["malformed"] += 1
            fault = "malformed"
            if rows:
                self.expected["dead_letters"] += 1
                self.expected["missing_rows"] += rows
            rows = 0

        due = sample.t
        if "late" in by_type:
            due += by_type["late"].delay_s
            self.injected["late"] += 1
            fault = "late"
        if "out_of_order" in by_type:
            due += sample.interval_s * 1.5
            self.injected["out_of_order"] += 1
            fault = "out_of_order"
        if rows and sample.ts_offset_s > 0 and self.lead(sample, due) > self.max_future_s:
            # the skewed timestamp is ahead of the wall clock when ingest sees it
            self.expected["dead_letters"] += 1
            self.expected["missing_rows"] += rows
            rows = 0
        out = [Delivery(due, sample, malformed, fault)]
        if "duplicate" in by_type:
            out.append(Delivery(due + by_type["duplicate"].gap_s, sample, malformed, "duplicate"))
            self.injected["duplicate"] += 1
            if rows:
                self.expected["duplicate_rows"] += rows
            else:
                self.expected["dead_letters"] += 1
        if "flood" in by_type:
            copies = by_type["flood"].copies
            out.extend(Delivery(due, sample, malformed, "flood") for _ in range(copies))
            self.injected["flood"] += copies
            if rows:
                self.expected["duplicate_rows"] += rows * copies
            else:
                self.expected["dead_letters"] += copies
        return out
