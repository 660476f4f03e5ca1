"""What an operator sees while a simulation runs, and the summary at the end.

On a terminal the display redraws in place about once a second (on stderr, so stdout stays clean
for the summary); otherwise — a log file, CI — it prints one plain line every ``plain_every_s``.
"""

from __future__ import annotations

import asyncio
import math
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import TextIO

from simulators.fleet import Stats

JST = timezone(timedelta(hours=9), "JST")


def _clock(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).astimezone(JST).strftime("%m-%d %H:%M JST")


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def status_lines(stats: Stats, *, max_gauges: int = 8) -> list[str]:
    accel = "max" if math.isinf(stats.accel) else f"{stats.accel:g}×"
    mode = "EXERCISE (drill)" if stats.exercise else "REAL — readings are NOT marked as an exercise"
    pct = 100.0 * stats.sim_t / stats.span_s if stats.span_s else 0.0
    lines = [
        f"sonae simulate · {stats.scenario} · {mode}",
        f"  devices {stats.devices:,}  stations {stats.stations:,}  accel {accel}  "
        f"scenario {_hms(stats.sim_t)} / {_hms(stats.span_s)} ({pct:5.1f} %)  wall {_hms(stats.elapsed())}",
        f"  messages {stats.published:,}  now {stats.rate:,.0f} msg/s  mean {stats.mean_rate():,.0f} msg/s  "
        + "  ".join(f"{k} {v:,}" for k, v in sorted(stats.by_kind.items())),
    ]
    faults = ", ".join(stats.faults_active) or "none"
    injected = ", ".join(f"{k} {v}" for k, v in sorted(stats.injected.items())) or "none"
    lines.append(f"  faults active: {faults}   injected: {injected}")
    shown = [g for g in stats.gauges.values() if g.value is not None][:max_gauges]
    for g in shown:
        lines.append(f"    {g.name[:28]:<28} {g.value:8.2f} m  {g.stage_label():<10} at {_clock(g.ts)}")
    return lines


def summary(stats: Stats) -> str:
    accel = "max" if math.isinf(stats.accel) else f"{stats.accel:g}×"
    mode = 'exercise (every message marked "exercise": true)' if stats.exercise else "REAL"
    out = [
        f"simulation {stats.scenario!r} {stats.state}"
        + (f": {stats.error}" if stats.error else ""),
        f"  mode: {mode}",
        f"  devices {stats.devices:,}, stations {stats.stations:,}, accel {accel}",
        f"  scenario time {_hms(stats.sim_t)} of {_hms(stats.span_s)} in {stats.elapsed():.1f} s wall",
        f"  published {stats.published:,} messages ({stats.mean_rate():,.0f} msg/s): "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_kind.items())),
    ]
    if stats.injected:
        out.append("  faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.injected.items())))
        out.append("  ingest should show: " + ", ".join(f"{k.replace('_', ' ')} {v}"
                                                       for k, v in sorted(stats.expected.items())))
    peaks = [g for g in stats.gauges.values() if g.value is not None]
    if peaks:
        out.append("  last levels: " + "; ".join(f"{g.name} {g.value:.2f} m ({g.stage_label()})" for g in peaks[:8]))
    return "\n".join(out)


class ProgressDisplay:
    """Refreshes the status of a running fleet until ``stop`` is set."""

    def __init__(self, stats: Stats, *, stream: TextIO | None = None, interval_s: float = 1.0,
                 plain_every_s: float = 10.0, tty: bool | None = None) -> None:
        self.stats = stats
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval_s = interval_s
        self.plain_every_s = plain_every_s
        self._drawn = 0

    def draw(self) -> None:
        self.stats.update_rate()
        lines = status_lines(self.stats)
        if self.tty:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        else:
            s = self.stats
            self.stream.write(f"simulate: t={_hms(s.sim_t)}/{_hms(s.span_s)} published={s.published} "
                              f"rate={s.rate:.0f}/s faults={','.join(s.faults_active) or 'none'}\n")
        self.stream.flush()

    async def run(self, stop: asyncio.Event) -> None:
        every = self.interval_s if self.tty else self.plain_every_s
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                self.draw()
