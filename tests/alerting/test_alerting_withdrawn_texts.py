"""Alert texts when a station's registration, not the river, changed an alert (alerting.texts): never an
all-clear, never "the river began to fall" (found breaking the station edit: both told residents so while
the stage stood above the line)."""

from __future__ import annotations

import pytest

from alerting.texts import (
    ENDED_EXERCISE,
    ENDED_REAL,
    LANGUAGES,
    REJUDGED,
    REMOVED,
    cleared_text,
    is_withdrawal,
    text_for,
)
from notify.messages import text_of

FALLING = {"ja-JP": "下がり始め", "en-US": "begun to fall", "ja-JP-x-easy": "へりはじめ"}
ALL_CLEAR = {"ja-JP": "解除", "en-US": "ended", "ja-JP-x-easy": "おわりました"}


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("level", [2, 3, 4])
def test_a_level_lowered_by_new_thresholds_does_not_say_the_river_fell(lang: str, level: int) -> None:
    lowered = text_for("river_level", level, lang, reason=REJUDGED, falling=True)
    assert FALLING[lang] not in lowered.headline
    assert lowered == text_for("river_level", level, lang)
    # the river's own step down still says so
    assert FALLING[lang] in text_for("river_level", level, lang, reason="threshold", falling=True).headline


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("reason", [REMOVED, ENDED_EXERCISE, ENDED_REAL, REJUDGED])
def test_an_alert_ended_by_the_registry_is_withdrawn_not_cleared(lang: str, reason: str) -> None:
    assert is_withdrawal(reason)
    withdrawn = cleared_text("river_level", 4, lang, "訓練川", reason=reason)
    assert ALL_CLEAR[lang] not in withdrawn.headline + withdrawn.event
    assert "訓練川" in withdrawn.headline
    cleared = cleared_text("river_level", 4, lang, "訓練川", reason="threshold")
    assert ALL_CLEAR[lang] in cleared.headline and not is_withdrawal("threshold") and not is_withdrawal(None)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_push_for_new_thresholds_lowering_below_level_2_is_a_withdrawal(lang: str) -> None:
    alert = {"condition": "river_level", "level": 1, "reason": REJUDGED, "station_name": "訓練川 第1水位観測所",
             "municipality_code": "072036", "exercise": False}
    event = {"kind": "de-escalated", "level": 1, "old_level": 4, "reason": REJUDGED}
    told = text_of(alert, event, lang)
    assert ALL_CLEAR[lang] not in told.headline + told.event and FALLING[lang] not in told.headline
