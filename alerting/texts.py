"""Alert texts in Japanese, English and やさしい日本語 (easy Japanese), per condition and level.

Wording follows the Cabinet Office's 避難情報に関するガイドライン (令和3年5月): 警戒レベル3 高齢者等避難,
警戒レベル4 避難指示, 警戒レベル5 緊急安全確保, which only a municipality issues (evacuation orders).
River-gauge alerts say "…相当" (equivalent) in every language (やさしい日本語: "けいかいレベルN ぐらい"): a gauge
gives the 警戒レベル相当情報 (氾濫注意情報 2相当, 氾濫警戒情報 3相当, 氾濫危険情報 4相当; the stage names 氾濫注意水位,
避難判断水位, 氾濫危険水位 kept by 国土交通省・気象庁「防災気象情報に関する検討会」取りまとめ, 令和6年6月, which puts
the level number first, e.g. レベル４氾濫危険警報) and the action, never an order's name (found: the resident page
showed "警戒レベル4相当 避難指示" for a gauge; its own table, api/pages/resident.js GAUGE, follows this one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from alerting.rules import HELD, SPIKE, STEPPED_DOWN

LANGUAGES = ("ja-JP", "en-US", "ja-JP-x-easy")


@dataclass(frozen=True)
class Text:
    event: str
    headline: str
    instruction: str


_RIVER: dict[int, dict[str, Text]] = {
    1: {
        "ja-JP": Text("水防団待機水位到達", "{place}で水防団待機水位に達しました",
                      "水防団・職員は出動に備えてください。"),
        "en-US": Text("River at flood-fighting standby stage", "The river at {place} reached the standby stage",
                      "Flood-fighting teams and staff: prepare to deploy."),
        "ja-JP-x-easy": Text("かわの みずが ふえています", "{place}の かわの みずが ふえています",
                             "しょくいんは じゅんびを してください。"),
    },
    2: {
        "ja-JP": Text("氾濫注意水位到達（警戒レベル2相当）", "{place}で氾濫注意水位に達しました（警戒レベル2相当）",
                      "ハザードマップで避難先と避難経路を確認してください。"),
        "en-US": Text("River flood caution (alert level 2 equivalent)",
                      "The river at {place} reached the flood caution stage (alert level 2 equivalent)",
                      "Check your hazard map, your evacuation site and how to get there."),
        "ja-JP-x-easy": Text("かわに ちゅうい（けいかいレベル2 ぐらい）", "{place}の かわの みずが おおく なっています",
                             "にげる ばしょと みちを たしかめて ください。"),
    },
    3: {
        "ja-JP": Text("避難判断水位到達（警戒レベル3相当）", "{place}で避難判断水位に達しました（警戒レベル3相当）",
                      "高齢者等は危険な場所から避難してください。その他の人も避難の準備をしてください。"),
        "en-US": Text("River flood warning (alert level 3 equivalent)",
                      "The river at {place} reached the evacuation-judgement stage (alert level 3 equivalent)",
                      "Older people and others who need time: evacuate from dangerous places now. "
                      "Everyone else: get ready to evacuate."),
        "ja-JP-x-easy": Text("かわが あぶない（けいかいレベル3 ぐらい）", "{place}の かわが あぶなく なっています",
                             "おとしよりなどは すぐに にげて ください。ほかの ひとも にげる じゅんびを して ください。"),
    },
    4: {
        "ja-JP": Text("氾濫危険水位到達（警戒レベル4相当）", "{place}で氾濫危険水位に達しました（警戒レベル4相当）",
                      "危険な場所から全員避難してください。"),
        "en-US": Text("River flood danger (alert level 4 equivalent)",
                      "The river at {place} reached the flood danger stage (alert level 4 equivalent)",
                      "Everyone must evacuate from dangerous places."),
        "ja-JP-x-easy": Text("かわが とても あぶない（けいかいレベル4 ぐらい）", "{place}の かわが あふれる かもしれません",
                             "あぶない ばしょから みんな にげて ください。"),
    },
    5: {
        "ja-JP": Text("氾濫開始水位到達（警戒レベル5相当）", "{place}で氾濫開始水位に達しました（警戒レベル5相当）",
                      "命の危険があります。直ちに身の安全を確保してください。"),
        "en-US": Text("River overflowing (alert level 5 equivalent)",
                      "The river at {place} reached the overflow stage (alert level 5 equivalent)",
                      "Your life is in danger. Secure your safety immediately."),
        "ja-JP-x-easy": Text("かわの みずが あふれそう（けいかいレベル5 ぐらい）", "{place}の かわの みずが あふれそうです",
                             "いのちが あぶないです。すぐに あんぜんな ところへ いって ください。"),
    },
}

#: level 3 raised by the trend rule (alerting/rules.py: 氾濫危険水位 forecast within the horizon) before the
#: gauge reached 避難判断水位: the flood-forecast practice of "reached, or forecast to reach" (氾濫警戒情報),
#: so the headline says the river is rising towards the danger stage, never that it reached a stage it has not
_RIVER_TREND: dict[str, Text] = {
    "ja-JP": Text("氾濫危険水位到達の見込み（警戒レベル3相当）",
                  "{place}の水位が上昇を続け、氾濫危険水位に達する見込みです（警戒レベル3相当）",
                  _RIVER[3]["ja-JP"].instruction),
    "en-US": Text("River flood warning (alert level 3 equivalent)",
                  "The river at {place} is rising and forecast to reach the flood danger stage "
                  "(alert level 3 equivalent)", _RIVER[3]["en-US"].instruction),
    "ja-JP-x-easy": Text("かわが あぶない（けいかいレベル3 ぐらい）", "{place}の かわの みずが どんどん ふえて います",
                         _RIVER[3]["ja-JP-x-easy"].instruction),
}

#: a gauge's level 2-4 kept after the river began to fall (de-escalated: alerting/rules.py lowers a level one
#: step at a time, after hysteresis and a dwell), so the headline never says the stage was just reached
_RIVER_FALLING = {
    "ja-JP": Text("警戒レベル{level}相当（水位低下中）", "{place}の水位は下がり始めましたが、警戒レベル{level}相当が続いています", ""),
    "en-US": Text("", "The river at {place} has begun to fall; alert level {level} equivalent continues", ""),
    "ja-JP-x-easy": Text("", "{place}の かわの みずは へりはじめました。でも まだ あぶないです（けいかいレベル{level} ぐらい）", ""),
}

#: a gauge's 水防団待機 (staff only) held while the river falls (reason ``alerting.rules.HELD``): standby is no
#: 警戒レベル, so it is not worded as one
_STANDBY_FALLING = {
    "ja-JP": Text("水防団待機水位（水位低下中）", "{place}の水位は下がり始めましたが、水防団待機水位の状態が続いています",
                  _RIVER[1]["ja-JP"].instruction),
    "en-US": Text("River at flood-fighting standby stage (falling)",
                  "The river at {place} has begun to fall; it stays at the standby stage", _RIVER[1]["en-US"].instruction),
    "ja-JP-x-easy": Text("かわの みずが へりはじめました", "{place}の かわの みずは へりはじめました。でも まだ おおいです",
                         _RIVER[1]["ja-JP-x-easy"].instruction),
}

#: a gauge's level lowered by time (``alerting.rules.STEPPED_DOWN``): no reading at or above the level for the dwell
#: (``{period}``) and none since, so the change is dated when it applied, not at a reading; it says why the level
#: was lowered, never that the river is falling now (no reading showed that then). The last reading, its stage and
#: time, is :func:`last_reading` (CAP ``<description>``, push, the level answer)
_RIVER_STEPPED_DOWN = {
    "ja-JP": Text("警戒レベル{level}相当に引き下げ（観測なし）",
                  "{place}の水位が{period}にわたり基準を下回ったまま新しい観測がないため、警戒レベル{level}相当に引き下げました",
                  ""),
    "en-US": Text("Lowered to alert level {level} equivalent (no newer reading)",
                  "The river at {place} stayed below the threshold for {period} with no newer reading: lowered to "
                  "alert level {level} equivalent", ""),
    "ja-JP-x-easy": Text("けいかいレベル{level} ぐらいに さげました",
                         "{place}の かわの みずは {period} ひくい ままでした。そのあと はかって いないので、"
                         "けいかいレベル{level} ぐらいに さげました", ""),
}
#: the same to 水防団待機 (staff only), which is no 警戒レベル
_STANDBY_STEPPED_DOWN = {
    "ja-JP": Text("水防団待機水位に引き下げ（観測なし）",
                  "{place}の水位が{period}にわたり基準を下回ったまま新しい観測がないため、水防団待機水位の状態に引き下げました",
                  _RIVER[1]["ja-JP"].instruction),
    "en-US": Text("Lowered to the flood-fighting standby stage (no newer reading)",
                  "The river at {place} stayed below the threshold for {period} with no newer reading: lowered to "
                  "the standby stage", _RIVER[1]["en-US"].instruction),
    "ja-JP-x-easy": Text("しょくいんの じゅんびの レベルに さげました",
                         "{place}の かわの みずは {period} ひくい ままでした。そのあと はかって いないので、"
                         "しょくいんの じゅんびの レベルに さげました", _RIVER[1]["ja-JP-x-easy"].instruction),
}
#: the last reading of a step-down by time: its stage and time (Japan time), said as the last one
_LAST_READING = {
    "ja-JP": "最後の観測: {time} 水位 {value:.2f} m（その後の観測はありません）",
    "en-US": "Last reading: {value:.2f} m at {time} (none since)",
    "ja-JP-x-easy": "さいごに はかった かわの みずの たかさ: {value:.2f} m（{time}）。そのあと はかって いません",
}
JST = ZoneInfo("Asia/Tokyo")


def _kana_minutes(n: int) -> str:
    """``n`` ふん/ぷん as read (1, 3, 4, 6, 8 and 10s: ぷん; 2, 5, 7, 9: ふん)."""
    return f"{n}{'ぷん' if n % 10 in (0, 1, 3, 4, 6, 8) else 'ふん'}"


def period(seconds: float, language: str) -> str:
    """A duration of ``seconds`` (> 0) as people read it in ``language`` (``KeyError`` for another than
    :data:`LANGUAGES`): hours and minutes, or seconds under a minute (a fast exercise's dwell)."""
    total = max(0, round(seconds))
    if total < 60:
        return {"ja-JP": f"{total}秒", "en-US": f"{total} seconds", "ja-JP-x-easy": f"{total}びょう"}[language]
    h, m = divmod(round(total / 60), 60)
    if language == "ja-JP":
        return (f"{h}時間" if h else "") + (f"{m}分" if m or not h else "")
    if language == "en-US":
        parts = ([f"{h} hour{'s' if h != 1 else ''}"] if h else []) + (
            [f"{m} minute{'s' if m != 1 else ''}"] if m or not h else [])
        return " ".join(parts)
    return (f"{h}じかん" if h else "") + (_kana_minutes(m) if m or not h else "")


def local_time(at: datetime, language: str) -> str:
    """``at`` (aware) in Japan time, as people read it in ``language``."""
    t = at.astimezone(JST)
    if language == "ja-JP":
        return f"{t.month}月{t.day}日 {t.hour}時{t.minute:02d}分"
    if language == "en-US":
        return f"{t.hour:02d}:{t.minute:02d} JST, {t.day} {t.strftime('%b')}"
    return f"{t.month}がつ{t.day}にち {t.hour}じ" + (_kana_minutes(t.minute) if t.minute else "")


def last_reading(language: str, *, value: float | None, at: datetime | None) -> str | None:
    """What a step-down by time says of the last reading (:data:`alerting.rules.STEPPED_DOWN`): its stage ``value``
    (m) and the time it was read ``at`` (the alert's ``value_at``), as the last; None without both."""
    if value is None or at is None:
        return None
    return _LAST_READING[language].format(value=value, time=local_time(at, language))


_ORDER: dict[int, dict[str, Text]] = {
    3: {
        "ja-JP": Text("高齢者等避難（警戒レベル3）", "{place}に高齢者等避難を発令しました",
                      "高齢者等は危険な場所から避難してください。"),
        "en-US": Text("Evacuation of older people and others (alert level 3)",
                      "Evacuation of older people and others needing help issued for {place}",
                      "Older people and others who need time: evacuate from dangerous places."),
        "ja-JP-x-easy": Text("おとしよりなどは にげて（レベル3）", "{place}の おとしよりなどは にげて ください",
                             "おとしよりや たすけが いる ひとは はやく にげて ください。"),
    },
    4: {
        "ja-JP": Text("避難指示（警戒レベル4）", "{place}に避難指示を発令しました",
                      "危険な場所から全員避難してください。"),
        "en-US": Text("Evacuation order (alert level 4)", "Evacuation order issued for {place}",
                      "Everyone must evacuate from dangerous places."),
        "ja-JP-x-easy": Text("みんな にげて（レベル4）", "{place}の ひとは みんな にげて ください",
                             "あぶない ばしょから みんな にげて ください。"),
    },
    5: {
        "ja-JP": Text("緊急安全確保（警戒レベル5）", "{place}に緊急安全確保を発令しました",
                      "命の危険があります。直ちに身の安全を確保してください。"),
        "en-US": Text("Emergency safety measures (alert level 5)", "Emergency safety measures issued for {place}",
                      "Disaster is imminent or occurring. Secure your safety immediately."),
        "ja-JP-x-easy": Text("いのちを まもって（レベル5）", "{place}で さいがいが おきています",
                             "すぐに いのちを まもる こうどうを して ください。"),
    },
}

_STAFF: dict[str, dict[str, Text]] = {
    "river_level_unconfirmed": {
        "ja-JP": Text("水位急変（未確認）", "{place}の水位計が川ではありえない速さの変化を示しています",
                      "次の観測で確認されるまで住民には伝えません。機器と現地を確認してください。"),
        "en-US": Text("Stage jump (unconfirmed)", "The gauge at {place} shows a change faster than its river can change",
                      "Not told to residents until the next reading confirms it. Check the device and the site."),
        "ja-JP-x-easy": Text("すいいが きゅうに かわりました（まだ たしかでは ありません）",
                             "{place}の すいいけいの すうじが とても はやく かわりました",
                             "しょくいんは きかいと かわを しらべて ください。"),
    },
    "silent": {
        "ja-JP": Text("水位計の通信途絶", "{place}の水位計からデータが届いていません", "機器と通信を点検してください。"),
        "en-US": Text("Gauge silent", "No data from the gauge at {place}", "Check the device and its link."),
        "ja-JP-x-easy": Text("すいいけいが とまって います", "{place}の すいいけいから データが きません",
                             "しょくいんは きかいを しらべて ください。"),
    },
    "low_battery": {
        "ja-JP": Text("水位計の電池低下", "{place}の水位計の電池が少なくなっています", "電池を交換してください。"),
        "en-US": Text("Gauge battery low", "The battery of the gauge at {place} is low", "Replace the battery."),
        "ja-JP-x-easy": Text("でんちが すくない", "{place}の すいいけいの でんちが すくないです",
                             "しょくいんは でんちを かえて ください。"),
    },
    "fault": {
        "ja-JP": Text("水位計の故障", "{place}の水位計が故障を報告しています", "機器を点検してください。"),
        "en-US": Text("Gauge fault", "The gauge at {place} reports a fault", "Inspect the device."),
        "ja-JP-x-easy": Text("すいいけいが こわれて います", "{place}の すいいけいが こわれて います",
                             "しょくいんは きかいを しらべて ください。"),
    },
}

#: the parts of a CAP ``<description>`` of a river level: the stage, the threshold that decided the level (for a
#: trend's level 3 the 氾濫危険水位 it is forecast to reach) and the trend's forecast, per language
_DESCRIPTION: dict[str, tuple[str, str, str]] = {
    "ja-JP": ("水位 {value:.2f} m", "基準 {threshold:.2f} m", "氾濫危険水位への到達が見込まれます"),
    "en-US": ("value {value:.2f} m", "threshold {threshold:.2f} m", "forecast to reach the flood danger stage"),
    "ja-JP-x-easy": ("かわの みずの たかさ {value:.2f} m", "めやすの たかさ {threshold:.2f} m",
                     "かわの みずが あふれる たかさに なりそうです"),
}


def description(language: str, *, value: float | None, threshold: float | None, trend: bool,
                value_at: datetime | None = None) -> str | None:
    """The CAP ``<description>`` of an alert in ``language`` (one of :data:`LANGUAGES`; ``KeyError`` for
    another): its stage ``value`` and ``threshold`` (m, each left out when None) and, when the trend rule
    decided the level (``trend``), the forecast. A stage read at ``value_at``, not when the alert changed (a
    step-down by time), is said as the last reading with its time (:func:`last_reading`). None when there is
    nothing to say."""
    stage, limit, forecast = _DESCRIPTION[language]
    parts = []
    last = last_reading(language, value=value, at=value_at)
    if last is not None:
        parts.append(last)
    elif value is not None:
        parts.append(stage.format(value=value))
    if threshold is not None:
        parts.append(limit.format(threshold=threshold))
    if trend:
        parts.append(forecast)
    return " / ".join(parts) or None


_CLEARED = {
    "ja-JP": Text("解除", "{place}の{event}は解除されました", "引き続き最新の情報に注意してください。"),
    "en-US": Text("cleared", "{event} at {place} has ended", "Keep following the latest information."),
    "ja-JP-x-easy": Text("おわりました", "{place}の {event}は おわりました", "これからも じょうほうに ちゅういして ください。"),
}


#: reasons of alerts cleared or changed because their station's registration changed, not because of the river
#: (:meth:`alerting.worker.RulesWorker.follow_registry`)
REMOVED = "station removed from the registry"
ENDED_EXERCISE = "station registered as an exercise station: its real alerts end (its readings are drills)"
ENDED_REAL = "station registered as a real station: the drill alerts of its exercise registration end"
#: the reason of an alert cleared by new thresholds (withdrawn), and of a level they lowered that the threshold
#: rule still holds (worded as reached — with the stage of the reading that reached it and the new threshold —,
#: never as the river falling); a level they raised or kept, or lowered to a level held by the trend rule or
#: while the river falls, carries that rule with REJUDGED as its event's note (alerting.worker._judge_again)
REJUDGED = "thresholds changed: level re-evaluated"
#: the reason of a level lowered earlier (its alert's state ``de-escalated``) that the river then rose to reach
#: at that same level — a level 3 the trend rule had kept when lowered from 4, or a level the river fell to below
#: its threshold (held while it falls), reaching the threshold in a live re-check
#: (:meth:`alerting.rules.StationRules._evaluate`), or a level kept and reached when judged again
#: (:data:`RESUMED`): worded as reached, never as the river falling; the row's state still says how the level
#: last changed (:func:`alerting.store.apply_transition`, :func:`alerting.store.worded_rule`)
REACHED = "threshold reached: the river rose to its level's threshold"
#: reasons a ``silent`` alert ends (:attr:`alerting.silence.Silence.clear_reason`): a reading arrived, or the
#: station's stream began afresh (a switch of its exercise flag that was not a flap within the grace)
DATA_AGAIN = "data again"
NOT_SILENT_BY_INTERVAL = "no longer silent by its expected interval and the silent factor (no data arrived)"
STREAM_AFRESH = "station registered as {became} station at {at}: its silence is counted afresh from then"
#: a real level raised when an exercise station is registered as a real one again, judged from the real readings
#: it had before the drill while they are still fresh (never cleared by it: it only raises, so not withdrawn)
RESUMED = "station registered as a real station again: level judged from its recent real readings"
#: an alert ended for one of these is withdrawn, never an all-clear: the river may still be as high as it was
REGISTRY_REASONS = frozenset({REMOVED, ENDED_EXERCISE, ENDED_REAL, REJUDGED})

_WITHDRAWN = {
    "ja-JP": Text("取り消し", "{place}の{event}は、水位計の登録の変更により取り消されました。川の水位が下がったためではありません",
                  "最新の水位と市町村からの情報を確認してください。"),
    "en-US": Text("withdrawn", "{event} at {place} was withdrawn because the gauge's registration changed, not because "
                  "the river fell", "Check the latest river levels and your municipality's information."),
    "ja-JP-x-easy": Text("とりけし", "{place}の {event}は とりけしました。かわの みずが へったからでは ありません",
                         "かわの ようすと まちからの じょうほうを みて ください。"),
}


#: an alert ended because the reading that raised it turned out, in reading time (late readings replayed), to be
#: a spike: withdrawn as the live rules withdraw an unconfirmed alert (``alerting.rules.SPIKE``), never an
#: all-clear — the river did not fall, it never was where that reading said
_SPIKE_WITHDRAWN = {
    "ja-JP": Text("取り消し", "{place}の{event}は、水位計の一時的な異常値によるものだったため取り消されました。"
                  "川の水位が下がったためではありません", "最新の水位と市町村からの情報を確認してください。"),
    "en-US": Text("withdrawn", "{event} at {place} was withdrawn: the reading that raised it was a spike of the "
                  "gauge, not the river", "Check the latest river levels and your municipality's information."),
    "ja-JP-x-easy": Text("とりけし", "{place}の {event}は とりけしました。すいいけいの すうじが いっしゅん まちがって "
                         "いました", "かわの ようすと まちからの じょうほうを みて ください。"),
}


def is_withdrawal(reason: str | None) -> bool:
    """Whether an alert change of ``reason`` withdraws what it ends rather than clearing it by the river: it came
    from its station's registration (:data:`REGISTRY_REASONS`) or the reading that decided the level was a spike
    (:data:`alerting.rules.SPIKE`, found when late readings are replayed)."""
    return reason in REGISTRY_REASONS or reason == SPIKE


def text_for(condition: str, level: int, language: str, *, reason: str | None = None, falling: bool = False,
             dwell_s: float | None = None) -> Text:
    """The texts of an alert of ``condition`` at ``level`` in ``language`` (one of :data:`LANGUAGES`;
    ``KeyError`` for another), worded by what holds a gauge's level — the alert's (or its event's) ``reason``:

    * ``trend`` at level 3: forecast, not reached (:data:`_RIVER_TREND`), whatever the change was (a level 3
      the trend rule holds is rising towards 氾濫危険水位, also when new thresholds lowered it to 3);
    * :data:`alerting.rules.HELD`: held while the river falls (:data:`_RIVER_FALLING`, :data:`_STANDBY_FALLING`
      at 水防団待機), whatever the change was (a late-reading replay, new thresholds);
    * ``falling`` — the alert's state (or its event's kind) is ``de-escalated`` — with a river rule: a level 2-4
      continues as the river falls; not when lowered by new thresholds (:data:`REJUDGED`: worded as reached,
      the stage and threshold being the reading that reached it under them) or because the reading that raised
      it was a spike (:data:`alerting.rules.SPIKE`): the river did not fall; nor when the river reached the
      level's threshold after the level was lowered to it (:data:`REACHED`): the river rose;
    * :data:`alerting.rules.STEPPED_DOWN`: lowered by time, because the river stayed below the threshold for the
      dwell (``dwell_s``, s: the alert's ``dwell_s``) with no newer reading (:data:`_RIVER_STEPPED_DOWN`,
      :data:`_STANDBY_STEPPED_DOWN`), whatever ``falling`` says: no reading showed the river falling then;
    * otherwise the threshold reached."""
    if condition == "river_level" and reason == STEPPED_DOWN and level >= 1:
        base = _RIVER[min(5, level)][language]
        t = (_STANDBY_STEPPED_DOWN if level == 1 else _RIVER_STEPPED_DOWN)[language]
        when = period(dwell_s, language) if dwell_s else {"ja-JP": "一定時間", "en-US": "the dwell period",
                                                          "ja-JP-x-easy": "しばらく"}[language]
        return Text(t.event.format(level=level), t.headline.replace("{period}", when).replace("{level}", str(level)),
                    t.instruction or base.instruction)
    if condition == "river_level":
        if reason == "trend" and level == 3:
            return _RIVER_TREND[language]
        if level <= 1 and reason == HELD:
            return _STANDBY_FALLING[language]
        if (reason == HELD and level >= 2) or (falling and 2 <= level <= 4 and reason not in (REJUDGED, REACHED, SPIKE)):
            base, t = _RIVER[min(5, level)][language], _RIVER_FALLING[language]
            return Text(t.event.format(level=level) or base.event, t.headline.replace("{level}", str(level)),
                        base.instruction)
        return _RIVER[max(1, min(5, level))][language]
    if condition == "evacuation_order":
        return _ORDER[max(3, min(5, level))][language]
    return _STAFF[condition][language]


def cleared_text(condition: str, level: int, language: str, place: str, *, reason: str | None = None) -> Text:
    """The texts of an alert of ``condition`` ended at ``level``: cleared, or withdrawn when the change's
    ``reason`` is its station's registration (:func:`is_withdrawal`), which never says the danger is over."""
    base = text_for(condition, level, language)
    c = (_SPIKE_WITHDRAWN if reason == SPIKE else _WITHDRAWN if is_withdrawal(reason) else _CLEARED)[language]
    return Text(f"{base.event} {c.event}", c.headline.format(place=place, event=base.event), c.instruction)
