"""The operator's live display and end summary."""

from __future__ import annotations

import io
import math

from simulators.fleet import Fleet
from simulators.progress import ProgressDisplay, status_lines, summary
from simulators.scenario import load_scenario
from tests.simulators.support import SCENARIOS


def _stats_after_plan():  # type: ignore[no-untyped-def]
    fleet = Fleet(load_scenario(SCENARIOS / "faults-drill.toml").with_overrides(accel=math.inf))
    for d in fleet.deliveries():  # what run() records, without a broker
        fleet.stats.published += 1
        fleet.stats.by_kind[d.sample.kind] += 1
        fleet.stats.sim_t = max(fleet.stats.sim_t, d.sample.t)
        view = fleet.stats.gauges.get(d.sample.station)
        if view is not None and not d.malformed:
            view.value = d.sample.value  # type: ignore[assignment]
    fleet.stats.faults_active = fleet.faults.active_types(3.5 * 3600)
    return fleet.stats


def test_status_lines_show_devices_rate_levels_and_faults() -> None:
    stats = _stats_after_plan()
    text = "\n".join(status_lines(stats))
    assert "EXERCISE" in text and "devices 9" in text and "msg/s" in text
    assert "faults active: clock_skew, duplicate, spike" in text
    assert "sim-f-dropout" in text and " m " in text


def test_summary_lists_faults_and_expected_effects() -> None:
    text = summary(_stats_after_plan())
    assert "published 420 messages" in text
    assert "malformed 12" in text and "dead letters 18" in text and "duplicate rows 97" in text


def test_display_redraws_in_place_on_a_terminal_and_prints_lines_otherwise() -> None:
    stats = _stats_after_plan()
    tty = io.StringIO()
    display = ProgressDisplay(stats, stream=tty, tty=True)
    display.draw()
    display.draw()
    n = len(status_lines(stats))
    assert tty.getvalue().count(f"\x1b[{n}F") == 1  # the second frame moves up over the first
    plain = io.StringIO()
    ProgressDisplay(stats, stream=plain, tty=False).draw()
    assert plain.getvalue().startswith("simulate: t=6:00:00/6:00:00 published=420") and "\x1b" not in plain.getvalue()
