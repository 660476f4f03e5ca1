"""Report-by-exception, as 危機管理型水位計 (crisis-management water-level gauges) do.

These low-cost gauges measure often but transmit rarely to save battery and airtime: once a day
while the river is low (a heartbeat that says "alive, all quiet"), and every 10 minutes once the
stage reaches the 観測開始水位 (observation-start level), for as long as it stays there. We also send
the first reading back below the level, so that the recession is seen to end, and optionally start
the 10-minute mode early while the stage rises fast (``rise_m`` per sample) below the level.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ReportByException:
    """Decide, sample by sample (every ``fast_s``), whether the gauge transmits."""

    obs_start: float
    fast_s: float = 600.0
    slow_s: float = 86400.0
    rise_m: float | None = None
    _last_sent: float | None = field(default=None, init=False)
    _prev: float | None = field(default=None, init=False)
    _active: bool = field(default=False, init=False)

    def decide(self, t: float, value: float) -> bool:
        rising_fast = (self.rise_m is not None and self._prev is not None and value - self._prev >= self.rise_m)
        active = value >= self.obs_start or rising_fast
        send = (active or self._active  # 10-minute mode, and the first reading after it ends
                or self._last_sent is None or t - self._last_sent >= self.slow_s - 1e-6)
        self._active = active
        self._prev = value
        if send:
            self._last_sent = t
        return send
