"""From a gauge's own thresholds to 警戒レベル相当: the mapping for both kinds of gauge.

Two kinds of gauge carry different thresholds (see ``stations.gauge_type``):

洪水予報河川・水位周知河川 (``flood_forecast``), four thresholds set under the Flood Control Act:

=================  =========================  ==========================================
threshold          level raised               who it is for
=================  =========================  ==========================================
水防団待機水位      STANDBY (1)                staff only: 水防団 get ready; no public alert
氾濫注意水位        警戒レベル2相当             public (氾濫注意情報)
避難判断水位        警戒レベル3相当             public (氾濫警戒情報; 高齢者等避難の目安)
氾濫危険水位        警戒レベル4相当             public (氾濫危険情報; 避難指示の目安)
=================  =========================  ==========================================

危機管理型水位計 (``crisis``), up to three thresholds as published by MLIT 川の水位情報
(``startLevel``, ``warnLevel``, ``fladLevel``):

=================  =========================  ==========================================
観測開始水位        STANDBY (1)                staff only: the gauge starts reporting often
危険水位            警戒レベル4相当             public
氾濫開始水位        警戒レベル5相当             public (氾濫発生のおそれ/発生)
=================  =========================  ==========================================

Why 危険水位 → level 4 and not 3: MLIT and the prefectures define a crisis gauge's 危険水位 as the
stage at which flooding near the gauge becomes likely, set so that evacuation can finish before the
氾濫開始水位 is reached — the same role as 氾濫危険水位 on a forecast river (the old name of
氾濫危険水位 *was* 危険水位). Crisis gauges have no 避難判断水位, so level 3 on them comes only from the
trend rule ("forecast to reach 危険水位 within the horizon"). 氾濫開始水位 means water is at the top of
the bank at the gauge: that is 警戒レベル5相当 (緊急安全確保 territory). A flood-forecast gauge has no
level-5 threshold: 氾濫発生 is an observation, not a stage, and is left to staff (manual orders).

Consistency with the MLIT data: the source's ``is_warning`` = level ≥ warnLevel (危険水位) is our
"level ≥ 4", and ``is_flood`` = level ≥ fladLevel (氾濫開始水位) is our "level 5". When 危険水位 is
missing (it is for some stations), the ladder simply has no level-4 step and the trend rule aims at
氾濫開始水位 instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

STANDBY = 1
LEVEL2 = 2
LEVEL3 = 3
LEVEL4 = 4
LEVEL5 = 5

#: levels that residents are told about; STANDBY (and staff-only conditions, level 0) are not
PUBLIC_LEVELS = frozenset({LEVEL2, LEVEL3, LEVEL4, LEVEL5})


@dataclass(frozen=True, slots=True)
class Step:
    """One rung of a gauge's ladder: at or above ``threshold`` the level is at least ``level``."""

    level: int
    threshold: float
    field: str  # the stations column it comes from
    label_ja: str


_FLOOD_FORECAST = (
    ("th_standby", STANDBY, "水防団待機水位"),
    ("th_caution", LEVEL2, "氾濫注意水位"),
    ("th_evacuation", LEVEL3, "避難判断水位"),
    ("th_danger", LEVEL4, "氾濫危険水位"),
)
_CRISIS = (
    ("th_obs_start", STANDBY, "観測開始水位"),
    ("th_crisis", LEVEL4, "危険水位"),
    ("th_overflow", LEVEL5, "氾濫開始水位"),
)


def ladder(gauge_type: str, thresholds: Mapping[str, Any]) -> tuple[Step, ...]:
    """The steps of one gauge, lowest first; thresholds that are missing are left out.

    ``thresholds`` maps stations columns (``th_*``) to values (a Station, asdict'ed, or a row).
    """
    table = _CRISIS if gauge_type == "crisis" else _FLOOD_FORECAST if gauge_type == "flood_forecast" else ()
    steps = []
    for field, level, label in table:
        value = thresholds.get(field)
        if value is not None:
            steps.append(Step(level, float(value), field, label))
    return tuple(sorted(steps, key=lambda s: (s.level, s.threshold)))


def level_for(steps: tuple[Step, ...], value: float) -> int:
    """The level a stage reaches (0 below every threshold), without hysteresis."""
    reached = 0
    for step in steps:
        if value >= step.threshold:
            reached = max(reached, step.level)
    return reached


def threshold_of(steps: tuple[Step, ...], level: int) -> float | None:
    """The lowest stage that reaches ``level`` (None when the gauge has no such step)."""
    found = [s.threshold for s in steps if s.level >= level]
    return min(found) if found else None


def step_of(steps: tuple[Step, ...], level: int) -> Step | None:
    for s in steps:
        if s.level == level:
            return s
    return None


def trend_target(steps: tuple[Step, ...]) -> Step | None:
    """The step the rate-of-rise rule forecasts: 氾濫危険水位/危険水位, else 氾濫開始水位."""
    return step_of(steps, LEVEL4) or step_of(steps, LEVEL5)


def is_public(level: int) -> bool:
    return level in PUBLIC_LEVELS
