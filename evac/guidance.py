"""Resident-facing texts in Japanese (``ja``), English (``en``) and やさしい日本語 (``ja-easy``).

やさしい日本語 follows the usual rules for disaster information: short sentences, spaces between
phrases, hiragana instead of difficult kanji, one instruction per sentence.
"""

from __future__ import annotations

import math

LANGS = ("ja", "en", "ja-easy")

HAZARD_NAMES: dict[str, dict[str, str]] = {
    "flood": {"ja": "洪水", "en": "flood", "ja-easy": "こうずい（かわの みずが あふれる）"},
    "landslide": {"ja": "土砂災害", "en": "landslide", "ja-easy": "どしゃさいがい（やまや がけが くずれる）"},
    "storm_surge": {"ja": "高潮", "en": "storm surge", "ja-easy": "たかしお（うみの みずが たかく なる）"},
    "earthquake": {"ja": "地震", "en": "earthquake", "ja-easy": "じしん"},
    "tsunami": {"ja": "津波", "en": "tsunami", "ja-easy": "つなみ"},
    "large_fire": {"ja": "大規模な火事", "en": "large fire", "ja-easy": "おおきな かじ"},
    "inland_flooding": {"ja": "内水氾濫", "en": "inland flooding", "ja-easy": "まちの なかの こうずい"},
    "volcano": {"ja": "火山現象", "en": "volcanic activity", "ja-easy": "かざんの ふんか"},
}

_EXERCISE = {"ja": "【訓練】", "en": "[EXERCISE] ", "ja-easy": "【くんれん】"}
_MODE = {
    "walk": {"ja": "徒歩で", "en": "on foot", "ja-easy": "あるいて"},
    "reduced_mobility": {"ja": "徒歩で", "en": "on foot", "ja-easy": "あるいて"},
    "car": {"ja": "車で", "en": "by car", "ja-easy": "くるまで"},
}
_STATUS = {
    "ok": {
        "ja": "{shelter}へ避難してください。{mode}約{minutes}分（{distance}）です。",
        "en": "Evacuate to {shelter}: about {minutes} min {mode} ({distance}).",
        "ja-easy": "{shelter} に にげて ください。{mode} {minutes}ぷん ぐらい です。",
    },
    "at_shelter": {
        "ja": "現在地は{shelter}です。ここは{hazard}に対応した開設中の避難場所です。移動せず、中に入って"
              "避難所の指示に従ってください。",
        "en": "You are at {shelter}, an open shelter for {hazard}. Stay here: go inside and follow the "
              "shelter staff's instructions.",
        "ja-easy": "いま {shelter} に います。ここは ひなんじょ です。ほかへ いかないで ください。"
                   "なかに はいって ください。",
    },
    "inside_hazard": {
        "ja": "現在地は{hazard}の危険区域の中です。無理に外へ出ず、建物の2階以上など高い所へ移動してください"
              "（垂直避難）。救助を待ち、市町村の情報を確認してください。",
        "en": "You are inside an active {hazard} area. Do not go outside: move to an upper floor of your "
              "building (vertical evacuation), wait for help and follow your municipality's instructions.",
        "ja-easy": "いま いる ところは {hazard} で あぶないです。そとに でないで ください。"
                   "たてものの 2かい より うえに にげて ください。",
    },
    "no_safe_route": {
        "ja": "安全に通れる避難経路が見つかりません。近くの頑丈な建物の高い階へ避難し（垂直避難）、"
              "市町村の情報を確認してください。",
        "en": "No safe route to a shelter is open. Move to an upper floor of a sturdy building nearby "
              "(vertical evacuation) and follow your municipality's instructions.",
        "ja-easy": "あんぜんな みちが ありません。ちかくの じょうぶな たてものの うえの かいに にげて ください。",
    },
    "off_network": {
        "ja": "現在地から最も近い道路まで{distance}あり、経路を案内できません。市町村の情報に従って避難してください。",
        "en": "Your position is too far from the mapped roads to give a route (the nearest is {distance} away). "
              "Follow your municipality's instructions.",
        "ja-easy": "ちかくに みちの じょうほうが ありません（{distance}）。しやくしょの じょうほうを みて ください。",
    },
    "no_shelter_in_area": {
        "ja": "この地域の地図には、{hazard}に対応した開設中の避難場所がありません。市町村の指示する避難場所へ"
              "避難するか、頑丈な建物の高い階へ避難してください。",
        "en": "No open shelter for {hazard} is known in this map area. Go to the shelter your municipality "
              "names, or to an upper floor of a sturdy building.",
        "ja-easy": "この ちかくに {hazard} の ひなんじょが ありません。しやくしょの じょうほうを みて ください。"
                   "じょうぶな たてものの うえの かいに にげて ください。",
    },
    # a set of hazards in force at once (``flood,landslide``) and no site in the map rated for every one:
    # no route to a site rated for only some (it would send the resident from one danger into another);
    # the municipality's own instruction, and 屋内安全確保 (an upper floor, away from slopes) when moving is
    # dangerous, as 避難情報に関するガイドライン (令和3年) advises where no suitable 避難場所 can be reached
    "no_shelter_for_all_hazards": {
        "ja": "この地域の地図には、{hazard}のすべてに対応した開設中の避難場所がありません。一部の災害にしか"
              "対応していない避難場所へ向かうと、別の危険にさらされるおそれがあります。市町村が指示する避難場所を"
              "確認してください。移動が危険なときは、頑丈な建物の2階以上の、崖や斜面から離れた部屋へ移動して"
              "ください（屋内安全確保）。",
        "en": "No open shelter in this map area is rated for all of these hazards: {hazard}. A shelter rated for "
              "only some of them could put you in the other danger. Check the shelter your municipality names. "
              "If moving is dangerous, go to an upper floor of a sturdy building, to a room away from slopes "
              "and cliffs.",
        "ja-easy": "{hazard} の ぜんぶに あんぜんな ひなんじょが この ちかくに ありません。しやくしょの じょうほうを"
                   " みて ください。そとが あぶない ときは、じょうぶな たてものの 2かい より うえの、がけから"
                   " はなれた へやに にげて ください。",
    },
    # a route field not yet computed was refused (evac.coldfields: this client asked for many new ones, or
    # the server is computing many): a problem (429/503 with Retry-After), not a route answer. For a set of
    # hazards the route for one hazard (the one most residents ask for, kept computed) is the way out now
    "route_busy_set": {
        "ja": "{hazard}のすべてを避ける避難経路は、いま計算が混み合っています。少し待ってからもう一度表示するか、"
              "災害の種類を一つ選んで経路を表示してください。",
        "en": "Routes avoiding all of these hazards ({hazard}) are busy right now. Try again in a moment, or show "
              "the route for a single hazard.",
        "ja-easy": "{hazard} の ぜんぶを さける みちは いま こんで います。すこし まってから もう いちど みて"
                   " ください。さいがいを ひとつ えらんで みちを みる ことも できます。",
    },
    "route_busy": {
        "ja": "{hazard}の避難経路は、いま計算が混み合っています。少し待ってからもう一度表示してください。",
        "en": "Routes for {hazard} are busy right now. Try again in a moment.",
        "ja-easy": "{hazard} の みちは いま こんで います。すこし まってから もう いちど みて ください。",
    },
    "outside_area": {
        "ja": "現在地はこのサービスの地図の範囲外です。お住まいの市町村の情報に従って避難してください。",
        "en": "Your position is outside the area this service has maps for. Follow the instructions of the "
              "municipality you are in.",
        "ja-easy": "いま いる ところの ちずが ありません。その まちの しやくしょの じょうほうを みて ください。",
    },
}
_TURN = {
    "depart": {"ja": "", "en": "Head", "ja-easy": ""},
    "straight": {"ja": "直進して", "en": "Continue", "ja-easy": "まっすぐ すすんで"},
    "slight left": {"ja": "やや左に進み", "en": "Bear left", "ja-easy": "すこし ひだりに すすんで"},
    "left": {"ja": "左に曲がり", "en": "Turn left", "ja-easy": "ひだりに まがって"},
    "sharp left": {"ja": "左に大きく曲がり", "en": "Turn sharp left", "ja-easy": "ひだりに おおきく まがって"},
    "slight right": {"ja": "やや右に進み", "en": "Bear right", "ja-easy": "すこし みぎに すすんで"},
    "right": {"ja": "右に曲がり", "en": "Turn right", "ja-easy": "みぎに まがって"},
    "sharp right": {"ja": "右に大きく曲がり", "en": "Turn sharp right", "ja-easy": "みぎに おおきく まがって"},
    "uturn": {"ja": "引き返し", "en": "Turn around", "ja-easy": "もどって"},
}
_UNNAMED = {"ja": "道", "en": "the road", "ja-easy": "みち"}


def check_lang(lang: str) -> str:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: use one of {', '.join(LANGS)}")
    return lang


_METRES = {"ja": "m", "en": " m", "ja-easy": "メートル"}
_KILOMETRES = {"ja": "km", "en": " km", "ja-easy": "キロメートル"}


def _round_half_up(x: float) -> int:
    """The integer nearest ``x`` (≥ 0), halves up: JavaScript's ``Math.round``, which the resident page uses."""
    n = math.floor(x)
    return n + 1 if x - n >= 0.5 else n


def format_distance(metres: float, *, lang: str) -> str:
    """Metres to the nearest 10 under 1 km, else km to one decimal, in ``lang`` (``KeyError`` for another).

    Formatted from the figure as answers publish it (``distance_m``, rounded to 0.1 m) with halves rounded
    up, exactly as the resident page's ``fmtDistance`` (api/pages/resident.js) formats that figure beside
    this text: otherwise one route in a few hundred said "460m" in its guidance and "470m" in its details."""
    m = round(metres, 1)
    if m < 1000:
        return f"{_round_half_up(m / 10) * 10}" + _METRES[lang]
    return f"{_round_half_up(m / 100) / 10:.1f}" + _KILOMETRES[lang]


def minutes_of(duration_s: float) -> int:
    """Whole minutes shown for a duration (at least 1), from the figure as published (``duration_s``,
    rounded to 0.1 s), as the resident page counts them: ``max(1, ceil(duration_s / 60))``."""
    return max(1, math.ceil(round(duration_s, 1) / 60))


_JOIN = {"ja": "・", "en": ", ", "ja-easy": "、"}
_JOIN_LAST = {"ja": "・", "en": " and ", "ja-easy": "、"}


def hazard_name(hazard: str, *, lang: str) -> str:
    """The name of a hazard, or of a set of them (``flood,landslide`` → 洪水・土砂災害, "flood and landslide"),
    in ``lang`` (``KeyError`` for an unknown hazard or language)."""
    names = [HAZARD_NAMES[h][lang] for h in hazard.split(",")]
    if len(names) == 1:
        return names[0]
    return _JOIN[lang].join(names[:-1]) + _JOIN_LAST[lang] + names[-1]


def status_text(
    status: str, *, lang: str, hazard: str, profile: str = "walk", shelter: str = "", duration_s: float = math.nan,
    distance_m: float = math.nan, exercise: bool = False,
) -> str:
    """One message for a route answer's status, in ``lang``."""
    check_lang(lang)
    minutes = minutes_of(duration_s) if math.isfinite(duration_s) else 0
    if status == "off_network" and not math.isfinite(distance_m):
        distance_m = 0.0
    text = _STATUS[status][lang].format(
        shelter=shelter, minutes=minutes, hazard=hazard_name(hazard, lang=lang), mode=_MODE[profile][lang],
        distance=format_distance(distance_m, lang=lang) if math.isfinite(distance_m) else "",
    )
    return (_EXERCISE[lang] + text) if exercise else text


def status_texts(status: str, **kwargs: object) -> dict[str, str]:
    """:func:`status_text` in every language."""
    return {lang: status_text(status, lang=lang, **kwargs) for lang in LANGS}  # type: ignore[arg-type]


def step_text(modifier: str, name: str, distance_m: float, *, lang: str) -> str:
    """One step: "Turn left onto X and continue 200 m", in ``lang``."""
    road = name or _UNNAMED[lang]
    dist = format_distance(distance_m, lang=lang)
    turn = _TURN[modifier][lang]
    if lang == "en":
        return f"{turn} {'along' if modifier == 'depart' else 'onto'} {road} for {dist}"
    if lang == "ja":
        return f"{turn}、{road}を{dist}進みます" if turn else f"{road}を{dist}進みます"
    return f"{turn} {road} を {dist} すすみます" if turn else f"{road} を {dist} すすみます"


def arrive_text(shelter: str, *, lang: str) -> str:
    return {"ja": f"{shelter}に到着です", "en": f"Arrive at {shelter}",
            "ja-easy": f"{shelter} に つきました"}[check_lang(lang)]
