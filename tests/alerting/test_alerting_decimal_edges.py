"""Stages and thresholds are decimals (a gauge reports to the centimetre; thresholds are stated to the
centimetre): a stage exactly on a line the rules draw is on it, whatever binary floating point makes of
``threshold - hysteresis`` or of a difference of two stages.

Found: the README's gauge 本宮 (氾濫危険水位 6.40 m, hysteresis 0.10 m) was lowered from 警戒レベル4相当 while the
river stood at exactly 6.30 m, its documented hold line ("held while the stage stays at or above its threshold
minus hysteresis_m"): ``6.4 - 0.1`` is 6.300000000000001 in binary, above the reading 6.3. So for 347 of the
1,991 centimetre thresholds from 0.10 to 20.00 m (6.40, 5.60, 0.40 …). Likewise a step of exactly
``min_step_m`` (0.30 m: 0.10 → 0.40 m within a few minutes) was "beyond the plausible rate", since
``0.4 - 0.1`` is 0.30000000000000004.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from alerting.levels import LEVEL4, ladder
from alerting.rules import RIVER, UNCONFIRMED, Reading, RuleConfig, StationRules

T0 = 1_700_000_000.0
CENTIMETRES = st.integers(min_value=100, max_value=60_000)  # 1.00 m .. 600.00 m (elevation datums too)


def _crisis(danger_cm: int) -> StationRules:
    """A 危機管理型 gauge whose 危険水位 (level 4) is ``danger_cm`` and nothing else (no other step to hold)."""
    return StationRules(ladder("crisis", {"th_crisis": danger_cm / 100}), RuleConfig(missing_at_or_below=None))


@given(CENTIMETRES)
def test_a_stage_exactly_at_the_hold_line_holds_the_level(danger_cm: int) -> None:
    m = _crisis(danger_cm)
    hold_line = (danger_cm - 10) / 100  # the gauge's reading of threshold - 0.10 m, as it reports it
    out = m.feed_all(Reading("level", T0 + i * 600, v)
                     for i, v in enumerate([danger_cm / 100] + [hold_line] * 8))  # 80 minutes on the line
    assert [(t.condition, t.new_level) for t in out] == [(RIVER, LEVEL4)]
    assert m.state.level == LEVEL4


def test_the_readme_gauge_holds_level_4_at_six_thirty() -> None:
    m = StationRules(ladder("flood_forecast", {"th_standby": 3.0, "th_caution": 4.5, "th_evacuation": 5.4,
                                               "th_danger": 6.4}))
    m.feed_all(Reading("level", T0 + i * 600, v) for i, v in enumerate([6.2, 6.3, 6.4, 6.3, 6.3, 6.3, 6.3, 6.3]))
    assert m.state.level == LEVEL4


@given(st.integers(min_value=0, max_value=60_000))
def test_a_step_of_exactly_the_minimum_step_is_plausible(start_cm: int) -> None:
    m = _crisis(200_000)  # far above: only the plausibility rule speaks
    config = m.config
    step_cm = round(config.min_step_m * 100)
    out = m.feed_all([Reading("level", T0, start_cm / 100),
                      Reading("level", T0 + 60, (start_cm + step_cm) / 100)])  # one minute later: the min step
    assert not [t for t in out if t.condition == UNCONFIRMED]
    assert m.state.pending is None and m.state.last_valid == (T0 + 60, (start_cm + step_cm) / 100)
