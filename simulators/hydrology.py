"""A small, documented rainfall–runoff–routing model: enough physics for a believable flood drill.

The chain, computed on a fixed step ``dt`` (60 s by default) for the whole scenario:

1. **Rain** (mm/h) over the basin: one or more storms, each a triangular (or block) hyetograph with a
   peak intensity; a river may scale it (``rain_factor``) for orographic or spatial variation.
2. **Runoff from each reach's own catchment**: a linear reservoir (Nash, one store).
   ``dS/dt = c·i(t)·A − Q``, ``Q = S/k``: effective rain ``c·i`` over area ``A`` fills a store that
   drains with time constant ``k``; 1 mm/h over 1 km² is 1/3.6 m³/s. The unit hydrograph of a linear
   reservoir is ``exp(−t/k)/k``: a quick rise while it rains, an exponential recession after.
3. **Routing to the next gauge downstream**: the upstream gauge's discharge is delayed by the travel
   time ``lag`` and passed through a second linear reservoir ``k_route`` (lag-and-route, the
   simplest form of Muskingum with x = 0). The peak arrives later and lower (attenuation), the volume
   is conserved.
4. **Stage from discharge** with a power-law rating curve ``Q = a·(h − h0)^b``, i.e.
   ``h = h0 + (Q/a)^(1/b)``; ``h0`` is the stage of zero flow in the gauge's own datum.

Every step is explicit Euler on the exact exponential solution of the reservoir
(``S ← S·e^(−dt/k) + inflow·k·(1 − e^(−dt/k))``), which is stable for any ``dt``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field

MM_PER_H_KM2_TO_M3S = 1.0 / 3.6  # 1 mm/h falling on 1 km² is 0.2778 m³/s


@dataclass(frozen=True)
class Storm:
    """A storm over the basin: intensity rises linearly to ``peak_mm_h`` and falls back (triangle),
    or stays at it (block), between ``start_s`` and ``start_s + duration_s``."""

    start_s: float
    duration_s: float
    peak_mm_h: float
    shape: str = "triangle"  # triangle | block
    peak_at: float = 0.5  # fraction of the duration at which a triangle peaks

    def intensity(self, t: float) -> float:
        x = (t - self.start_s) / self.duration_s if self.duration_s > 0 else -1.0
        if not 0.0 <= x <= 1.0:
            return 0.0
        if self.shape == "block":
            return self.peak_mm_h
        p = min(max(self.peak_at, 1e-6), 1 - 1e-6)
        return self.peak_mm_h * (x / p if x <= p else (1 - x) / (1 - p))


def rain_rate(storms: Sequence[Storm], t: float, factor: float = 1.0) -> float:
    """Rain intensity (mm/h) at scenario time ``t`` (s)."""
    return factor * sum(s.intensity(t) for s in storms)


@dataclass(frozen=True)
class Rating:
    """``Q = a·(h − h0)^b``; stage ``h`` in metres in the gauge's datum, ``Q`` in m³/s."""

    h0: float = 0.0
    a: float = 30.0
    b: float = 1.6

    def stage(self, q: float) -> float:
        return self.h0 + (max(q, 0.0) / self.a) ** (1.0 / self.b)

    def discharge(self, h: float) -> float:
        return self.a * max(h - self.h0, 0.0) ** self.b


@dataclass(frozen=True)
class Reach:
    """A gauge on a river and the catchment draining to it since the gauge upstream."""

    station: str
    area_km2: float
    runoff_coeff: float = 0.6
    k_s: float = 3 * 3600.0  # catchment reservoir constant
    lag_s: float = 0.0  # travel time from the gauge upstream
    k_route_s: float = 1800.0  # attenuation of the wave routed from upstream
    base_flow_m3s: float = 10.0
    rating: Rating = field(default_factory=Rating)


def _reservoir(inflow: Sequence[float], k: float, dt: float, s0: float = 0.0) -> list[float]:
    """Outflow of a linear reservoir ``Q = S/k`` fed by ``inflow`` (m³/s, piecewise constant)."""
    if k <= 0:
        return list(inflow)
    decay = math.exp(-dt / k)
    s = s0
    out = []
    for q_in in inflow:
        s = s * decay + q_in * k * (1.0 - decay)
        out.append(s / k)
    return out


@dataclass
class RiverSeries:
    """Discharge and stage at each gauge of one river, sampled every ``dt`` seconds from t = 0."""

    dt: float
    discharge: dict[str, list[float]]
    stage: dict[str, list[float]]
    rain: list[float]

    def _at(self, series: list[float], t: float) -> float:
        x = t / self.dt
        i = int(x)
        if i < 0:
            return series[0]
        if i >= len(series) - 1:
            return series[-1]
        frac = x - i
        return series[i] + (series[i + 1] - series[i]) * frac

    def stage_at(self, station: str, t: float) -> float:
        return self._at(self.stage[station], t)

    def discharge_at(self, station: str, t: float) -> float:
        return self._at(self.discharge[station], t)

    def rain_at(self, t: float) -> float:
        return self._at(self.rain, t)

    def peak(self, station: str) -> tuple[float, float]:
        """(time s, stage m) of the highest stage at ``station``."""
        series = self.stage[station]
        i = max(range(len(series)), key=series.__getitem__)
        return i * self.dt, series[i]


def simulate_river(reaches: Sequence[Reach], storms: Sequence[Storm], duration_s: float, *,
                   dt: float = 60.0, rain_factor: float = 1.0) -> RiverSeries:
    """Run the model for one river whose ``reaches`` are listed upstream to downstream."""
    n = int(math.ceil(duration_s / dt)) + 1
    rain = [rain_rate(storms, i * dt + dt / 2, rain_factor) for i in range(n)]
    discharge: dict[str, list[float]] = {}
    stage: dict[str, list[float]] = {}
    upstream: list[float] | None = None
    for reach in reaches:
        local_in = [reach.runoff_coeff * r * reach.area_km2 * MM_PER_H_KM2_TO_M3S for r in rain]
        local = _reservoir(local_in, reach.k_s, dt)
        total = [reach.base_flow_m3s + q for q in local]
        if upstream is not None:
            shift = int(round(reach.lag_s / dt))
            delayed = [upstream[0]] * min(shift, n) + upstream[: max(n - shift, 0)]
            # route the flood part only: the base flow of the river upstream passes unchanged
            base_up = upstream[0]
            routed = _reservoir([q - base_up for q in delayed], reach.k_route_s, dt)
            total = [q + base_up + r for q, r in zip(total, routed, strict=True)]
        discharge[reach.station] = total
        stage[reach.station] = [reach.rating.stage(q) for q in total]
        upstream = total
    return RiverSeries(dt, discharge, stage, rain)


def rating_for_thresholds(base_flow_m3s: float, base_stage_m: float, danger_stage_m: float,
                          danger_flow_m3s: float, b: float = 1.6) -> Rating:
    """A rating curve through two points: (base flow, base stage) and (danger flow, danger stage).

    Useful to calibrate a scenario so a flood of a known size crosses a gauge's thresholds.
    """
    # Solve h = h0 + (Q/a)^(1/b) at both points for h0 and a, with b fixed.
    r = (base_flow_m3s / danger_flow_m3s) ** (1.0 / b)
    depth_danger = (danger_stage_m - base_stage_m) / (1.0 - r)
    h0 = danger_stage_m - depth_danger
    a = danger_flow_m3s / depth_danger ** b
    return Rating(h0=h0, a=a, b=b)


def crossings(times: Sequence[float], values: Sequence[float], thresholds: Sequence[float]) -> list[tuple[float, float]]:
    """(time, threshold) for each first upward crossing, in time order."""
    out = []
    for th in sorted(thresholds):
        for t, v in zip(times, values, strict=True):
            if v >= th:
                out.append((t, th))
                break
    out.sort()
    return out


def sample_index(times: Sequence[float], t: float) -> int:
    return max(0, bisect_right(times, t) - 1)
