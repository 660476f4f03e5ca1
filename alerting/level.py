"""The 警戒レベル in force for a municipality or a point, with every source that sets it.

One rule, used by ``GET /api/v1/level``, the resident page, the staff console and SSE consumers:
the level is the highest of

- official information in force (気象庁防災情報XML, ``jma.store.in_force``: 土砂災害警戒情報 → 4,
  指定河川洪水予報 2–5, warnings 2–5, tsunami; mapped to municipalities by ``jma.areas``),
- Sonae's public gauge alerts (警戒レベル相当; *unconfirmed* alerts are staff-only and never count),
- staff evacuation orders (3 高齢者等避難, 4 避難指示, 5 緊急安全確保).

Which alerts count where (from the former ``api/level.py``): an alert or order with an area counts
where the area covers the point whatever municipality issued it; alerts without an area count for
their own municipality; gauge alerts count within ``NEARBY_GAUGE_M`` of the point too. A point in the
drill town (``alerting.drilltown``) is in its real municipality (072036) and, for exercises only, in the
drill town (079995) as well: the drill town's whole-town exercise orders and exercise official information
count there too (:func:`exercise_municipality_at`). Real
information always decides; drill (exercise) information speaks only where nothing real is in force,
and is marked as a drill. Official information is shown as its source says; it is never re-issued
as the municipality's own alert (no CAP, no order is made from it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
from shapely.geometry import Point, shape

from alerting.cap import place_name
from alerting.drilltown import drill_town_box, reaches
from alerting.store import list_active
from alerting.texts import last_reading, text_for
from jma.areas import municipality_names
from jma.store import in_force as official_in_force
from sonae.municipality_code import DRILL_TOWN_CODE, DRILL_TOWN_NAMES

#: a gauge alert counts for points this close to the gauge, whatever the municipality (as on the page)
NEARBY_GAUGE_M = 5000.0

#: official phenomenon → evacuation-engine hazard (evac.hazards.HAZARD_TYPES) the route must avoid.
#: 大雨 names none: in H27 telegrams it covers 土砂災害 and 浸水害 alike, in R06 only 浸水害 (土砂災害 has
#: its own telegram, VPWW56), so the route keeps the resident's own choice.
HAZARD_OF = {"土砂災害": "landslide", "津波": "tsunami", "洪水": "flood", "高潮": "storm_surge"}
#: the order hazards of the same level are listed in (and ``hazard`` chosen by): evac.hazards.HAZARD_TYPES
#: (alerting does not import evac; tests/alerting check the two agree). Flood comes before landslide.
HAZARD_ORDER = ("flood", "landslide", "storm_surge", "earthquake", "tsunami", "large_fire", "inland_flooding",
                "volcano")
_PHENOMENON = {
    "土砂災害": ("landslide", "どしゃさいがい"), "洪水": ("flood", "こうずい"), "大雨": ("heavy rain", "おおあめ"),
    "高潮": ("storm surge", "たかしお"), "津波": ("tsunami", "つなみ"),
}
#: English names of the official information kinds residents meet most (気象庁 防災気象情報; the 2024
#: review's level names first). Any other kind is named by its phenomenon, never by its Japanese title,
#: so an English answer carries no Japanese text.
_KIND_EN = {
    "土砂災害警戒情報": "landslide alert information", "氾濫注意情報": "river flood advisory",
    "氾濫警戒情報": "river flood warning", "氾濫危険情報": "river flood danger information",
    "氾濫発生情報": "river flooding has occurred", "大雨警報": "heavy rain warning",
    "大雨特別警報": "heavy rain emergency warning", "洪水警報": "flood warning", "高潮警報": "storm surge warning",
    "高潮特別警報": "storm surge emergency warning", "津波警報": "tsunami warning", "大津波警報": "major tsunami warning",
    "津波注意報": "tsunami advisory",
}


@dataclass(frozen=True)
class NewName:
    """One name of the 2024 review of 防災気象情報 (levels in the name), with the name it replaces.

    ``level`` 2–5; ``phenomenon`` as :class:`jma.telegram.Statement` names it; ``former`` the name in force
    before the review for the same information (None: the review made a new kind, e.g. レベル４大雨危険警報);
    ``en`` and ``easy`` the name in English and in やさしい日本語.
    """

    level: int
    phenomenon: str
    former: str | None
    en: str
    easy: str


#: The level names of the 2024 review (気象庁「防災気象情報に関する検討会」最終取りまとめ, 2024年6月;
#: 気象庁防災情報XMLフォーマット R06 samples in /work/shared/data/jma/samples: VPWW55–61 ``*_241226_*``,
#: VXWW50 ``17_04_0*_250630`` (Head/Title 神奈川県レベル４土砂災害危険警報 while Control/Title and the Body
#: still say 土砂災害警戒情報), VXSU ``91_01_01_241031`` (善川レベル２氾濫注意報)), each with the name it
#: replaces (内閣府「避難情報に関するガイドライン」の警戒レベル相当情報). Residents hear both names while
#: the two are in use, so a source shows the new one beside the old (:func:`official_names`).
NEW_NAMES: dict[str, NewName] = {
    "レベル５大雨特別警報": NewName(5, "大雨", "大雨特別警報", "level 5 heavy rain emergency warning",
                                   "レベル5 おおあめ とくべつ けいほう"),
    "レベル４大雨危険警報": NewName(4, "大雨", None, "level 4 heavy rain danger warning",
                                   "レベル4 おおあめ きけん けいほう"),
    "レベル３大雨警報": NewName(3, "大雨", "大雨警報", "level 3 heavy rain warning", "レベル3 おおあめ けいほう"),
    "レベル２大雨注意報": NewName(2, "大雨", "大雨注意報", "level 2 heavy rain advisory",
                                 "レベル2 おおあめ ちゅういほう"),
    "レベル５土砂災害特別警報": NewName(5, "土砂災害", "大雨特別警報", "level 5 landslide emergency warning",
                                       "レベル5 どしゃさいがい とくべつ けいほう"),
    "レベル４土砂災害危険警報": NewName(4, "土砂災害", "土砂災害警戒情報", "level 4 landslide danger warning",
                                       "レベル4 どしゃさいがい きけん けいほう"),
    "レベル３土砂災害警報": NewName(3, "土砂災害", "大雨警報", "level 3 landslide warning",
                                   "レベル3 どしゃさいがい けいほう"),
    "レベル２土砂災害注意報": NewName(2, "土砂災害", "大雨注意報", "level 2 landslide advisory",
                                     "レベル2 どしゃさいがい ちゅういほう"),
    "レベル５氾濫特別警報": NewName(5, "洪水", "氾濫発生情報", "level 5 river flooding emergency warning",
                                   "レベル5 かわの はんらん とくべつ けいほう"),
    "レベル４氾濫危険警報": NewName(4, "洪水", "氾濫危険情報", "level 4 river flood danger warning",
                                   "レベル4 かわの はんらん きけん けいほう"),
    "レベル３氾濫警報": NewName(3, "洪水", "氾濫警戒情報", "level 3 river flood warning",
                               "レベル3 かわの はんらん けいほう"),
    "レベル２氾濫注意報": NewName(2, "洪水", "氾濫注意情報", "level 2 river flood advisory",
                                 "レベル2 かわの はんらん ちゅういほう"),
    "レベル５高潮特別警報": NewName(5, "高潮", "高潮特別警報", "level 5 storm surge emergency warning",
                                   "レベル5 たかしお とくべつ けいほう"),
    "レベル４高潮危険警報": NewName(4, "高潮", "高潮警報", "level 4 storm surge danger warning",
                                   "レベル4 たかしお きけん けいほう"),
    "レベル３高潮警報": NewName(3, "高潮", None, "level 3 storm surge warning", "レベル3 たかしお けいほう"),
    "レベル２高潮注意報": NewName(2, "高潮", "高潮注意報", "level 2 storm surge advisory",
                                 "レベル2 たかしお ちゅういほう"),
}
_FULLWIDTH = str.maketrans("12345", "１２３４５")
#: a former name → its new name, where one former name, phenomenon and level give exactly one new name (大雨
#: is left out: an H27 大雨警報 or 大雨特別警報 speaks of 土砂災害 and 浸水害 alike)
_NEW_OF: dict[tuple[str, Any, Any], str] = {(n.former, n.phenomenon, n.level): new for new, n in NEW_NAMES.items()
           if n.former and n.phenomenon != "大雨"}


def official_names(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """``(new, former)``: the 2024 review's name of an official statement and the name it replaces.

    ``row`` is a :func:`jma.store.in_force` row (``kind``, ``phenomenon``, ``level``, ``title``). The new
    name is the statement's own kind when it is one of :data:`NEW_NAMES` (R06 telegrams), else the one its
    telegram's Head/Title carries for this kind (VXWW50 keeps 土砂災害警戒情報 in Control/Title and Body and
    names レベル４土砂災害危険警報 only in Head/Title), else the one the former name unambiguously has; None when
    there is none. ``former`` is None when the statement has only a new name with no former one."""
    kind = str(row.get("kind") or "")
    level = row.get("level")
    if kind.translate(_FULLWIDTH) in NEW_NAMES or kind in NEW_NAMES:
        new = kind if kind in NEW_NAMES else kind.translate(_FULLWIDTH)
        return new, NEW_NAMES[new].former
    title = str(row.get("title") or "").translate(_FULLWIDTH)
    for new in sorted(NEW_NAMES, key=len, reverse=True):
        if new in title and NEW_NAMES[new].former == kind and NEW_NAMES[new].level == level:
            return new, kind
    return _NEW_OF.get((kind, row.get("phenomenon"), level)), kind


_ORDER = {3: ("高齢者等避難", "Evacuation of older people and others", "おとしより などは にげて"),
          4: ("避難指示", "Evacuation order", "みんな にげて"),
          5: ("緊急安全確保", "Emergency safety measures", "いのちを まもって")}
#: what staff should consider when official information is in force (避難情報に関するガイドライン)
SUGGESTED_ORDER = {3: "高齢者等避難", 4: "避難指示", 5: "緊急安全確保"}


@dataclass(frozen=True)
class Source:
    """One source of a level: ``kind`` official | gauge | order; ``name`` per language (ja-JP, en-US,
    ja-JP-x-easy); ``hazard`` the evacuation hazard it asks routes to avoid (None: not known)."""

    kind: str
    level: int
    exercise: bool
    name: dict[str, str]
    hazard: str | None = None
    alert: dict[str, Any] | None = None
    official: dict[str, Any] | None = None

    def as_json(self, language: str) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "level": self.level, "exercise": self.exercise,
                                "name": self.name[language], "names": self.name, "hazard": self.hazard}
        if self.alert is not None:
            body.update(alert_id=self.alert["id"], station_id=self.alert.get("station_id"),
                        order_id=self.alert.get("order_id"))
        if self.official is not None:
            body.update(phenomenon=self.official["phenomenon"], official_kind=self.official["kind"],
                        status=self.official["status"], title=self.official["title"],
                        headline=self.official["headline"], office=self.official["editorial_office"],
                        valid_from=self.official["valid_from"].isoformat(),
                        suggested_order=SUGGESTED_ORDER.get(self.level))
        return body


@dataclass(frozen=True)
class LevelInForce:
    """The answer: ``top`` decides (None: nothing in force); ``sources`` every source counted, highest first."""

    municipality: str | None
    top: Source | None
    sources: list[Source] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    exercise_in_progress: bool = False

    @property
    def level(self) -> int | None:
        return self.top.level if self.top else None

    @property
    def hazards(self) -> list[HazardInForce]:
        """Every hazard the counted sources name, each at the highest level of its sources: highest level
        first, ties in :data:`HAZARD_ORDER` (flood before landslide). Sources naming none (大雨, an order
        without a hazard) count for the level, not here."""
        by: dict[str, list[Source]] = {}
        for s in self.sources:
            if s.hazard:
                by.setdefault(s.hazard, []).append(s)
        rank = {h: i for i, h in enumerate(HAZARD_ORDER)}
        out = [HazardInForce(h, max(s.level for s in ss), ss) for h, ss in by.items()]
        out.sort(key=lambda x: (-x.level, rank.get(x.hazard, len(rank)), x.hazard))
        return out

    @property
    def hazard(self) -> str | None:
        """The one hazard older clients route for: the first of :attr:`hazards` (None: none named)."""
        hs = self.hazards
        return hs[0].hazard if hs else None

    @property
    def route_hazard(self) -> str | None:
        """Every hazard in force joined by commas in :data:`HAZARD_ORDER`, as ``/api/v1/route?hazard=`` takes
        them (the route ends at a shelter rated for all of them); None: none named."""
        names = {h.hazard for h in self.hazards}
        order = [h for h in HAZARD_ORDER if h in names] + sorted(names - set(HAZARD_ORDER))
        return ",".join(order) or None


@dataclass(frozen=True)
class HazardInForce:
    """One hazard in force: ``level`` the highest of ``sources`` (those naming it, highest first)."""

    hazard: str
    level: int
    sources: list[Source]

    def as_json(self, language: str) -> dict[str, Any]:
        return {"hazard": self.hazard, "level": self.level, "exercise": all(s.exercise for s in self.sources),
                "sources": [{"kind": s.kind, "level": s.level, "exercise": s.exercise, "name": s.name[language]}
                            for s in self.sources]}


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance: exact enough at a few kilometres."""
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    return 6_371_000.0 * math.hypot(x, math.radians(lat2 - lat1))


def official_source(row: dict[str, Any]) -> Source:
    """The source an official statement (a :func:`jma.store.in_force` row) makes, named in ja-JP, en-US
    and ja-JP-x-easy: the 2024 review's name beside the former one when it has both (:func:`official_names`),
    e.g. ``気象庁: レベル４土砂災害危険警報（土砂災害警戒情報）`` / ``JMA: level 4 landslide danger warning
    (landslide alert information; alert level 4 equivalent)``."""
    kind = row["kind"]
    level = row["level"]
    en, easy = _PHENOMENON.get(row["phenomenon"], (row["phenomenon"], row["phenomenon"]))
    new, former = official_names(row)
    former_en = _KIND_EN.get(former or kind, en + " information")
    if new is None:
        names = {"ja-JP": f"気象庁: {kind}",
                 "en-US": f"JMA: {former_en} (alert level {level} equivalent)",
                 "ja-JP-x-easy": f"きしょうちょう: {easy}の じょうほう（レベル{level}）"}
    else:
        named = NEW_NAMES[new]
        names = {"ja-JP": f"気象庁: {new}" + (f"（{former}）" if former else ""),
                 "en-US": f"JMA: {named.en} (" + (f"{former_en}; " if former else "")
                          + f"alert level {level} equivalent)",
                 "ja-JP-x-easy": f"きしょうちょう: {named.easy}（{easy}の じょうほう）"}
    return Source("official", level, row["exercise"], names, HAZARD_OF.get(row["phenomenon"]), official=row)


def _town_names(alert: dict[str, Any]) -> dict[str, str]:
    """The name of an order's municipality in each language: the names joined to the alert
    (``municipality_name``, ``municipality_name_en``), else the shipped 福島県 list's, else the drill
    town's (:data:`sonae.municipality_code.DRILL_TOWN_NAMES`), else, only then, its code."""
    code = alert.get("municipality_code") or ""
    drill = DRILL_TOWN_NAMES if code == DRILL_TOWN_CODE else {}
    ja = alert.get("municipality_name") or municipality_names().get(code) or drill.get("ja-JP") or code
    return {"ja-JP": ja, "en-US": alert.get("municipality_name_en") or drill.get("en-US") or ja,
            "ja-JP-x-easy": drill.get("ja-JP-x-easy") or ja}


def alert_source(alert: dict[str, Any]) -> Source:
    level = alert["level"] or 0
    if alert["condition"] == "evacuation_order":
        town = _town_names(alert)
        ja, en, easy = _ORDER.get(level, ("避難情報", "Evacuation information", "ひなん じょうほう"))
        return Source("order", level, alert["exercise"], {
            "ja-JP": f"{town['ja-JP']}: {ja}", "en-US": f"{town['en-US']}: {en}",
            "ja-JP-x-easy": f"{town['ja-JP-x-easy']}: {easy}"},
            alert.get("hazard") if isinstance(alert.get("hazard"), str) else None, alert=alert)
    place = alert.get("station_name") or alert.get("river") or alert.get("station_id") or ""
    place_en = alert.get("station_name_en") or place  # English readers get the station's English name
    return Source("gauge", level, alert["exercise"], {
        "ja-JP": f"Sonae 水位計 {place}", "en-US": f"Sonae gauge {place_en}",
        "ja-JP-x-easy": f"Sonae の かわの みずの けいき {place}"}, "flood", alert=alert)


async def level_in_force(conn: asyncpg.Connection, *, municipality: str | None,
                         lat: float | None = None, lon: float | None = None,
                         exercise_municipality: str | None = None) -> LevelInForce:
    """The level in force for a municipality (and a point in it, when given); see the module rule.

    ``exercise_municipality``: a second municipality the point is in for exercise answers only (the drill
    town, :func:`exercise_municipality_at`): its exercise alerts and orders without an area and its exercise
    official information count as the municipality's own do; nothing real of it counts (there is none).
    """
    point = Point(lon, lat) if lat is not None and lon is not None else None
    alerts = await list_active(conn, audience="public")
    counted = []
    for alert in alerts:
        area = alert.get("area")
        if area and point is not None:
            if shape(json.loads(area) if isinstance(area, str) else area).covers(point):
                counted.append(alert)
        elif alert["municipality_code"] == municipality:
            counted.append(alert)
        elif exercise_municipality is not None and alert["exercise"] \
                and alert["municipality_code"] == exercise_municipality:
            counted.append(alert)  # a whole-town drill order of the drill town the point is in
        elif point is not None and alert.get("lat") is not None and _distance_m(
                lat, lon, alert["lat"], alert["lon"]) <= NEARBY_GAUGE_M:  # type: ignore[arg-type]
            counted.append(alert)  # a gauge just across the municipal line
    sources = [alert_source(a) for a in counted if a["level"]]
    if municipality is not None:
        sources += [official_source(r) for r in await official_in_force(conn, municipality=municipality)]
    if exercise_municipality is not None and exercise_municipality != municipality:
        sources += [official_source(r) for r in await official_in_force(conn, municipality=exercise_municipality)
                    if r["exercise"]]
    real = [s for s in sources if not s.exercise]
    considered = real or sources
    considered.sort(key=lambda s: (s.level, s.kind == "order", s.kind == "official"), reverse=True)
    top = considered[0] if considered else None
    return LevelInForce(municipality, top, considered, counted, any(s.exercise for s in sources))


#: what official information at each level asks residents to do (避難情報に関するガイドライン, 令和3年)
OFFICIAL_INSTRUCTION = {
    2: {"ja-JP": "ハザードマップで避難先と避難経路を確認してください。",
        "en-US": "Check your hazard map, your evacuation site and how to get there.",
        "ja-JP-x-easy": "にげる ばしょと みちを たしかめて ください。"},
    3: {"ja-JP": "危険な場所にいる高齢者等は避難してください。市町村の避難情報を確認してください。",
        "en-US": "Older people and others who need time, in dangerous places: evacuate now. "
                 "Check your municipality's evacuation information.",
        "ja-JP-x-easy": "おとしよりや からだの ふじゆうな ひとは にげて ください。"},
    4: {"ja-JP": "危険な場所から全員避難してください。市町村の避難情報を確認してください。",
        "en-US": "Everyone in a dangerous place: evacuate now. Check your municipality's evacuation information.",
        "ja-JP-x-easy": "あぶない ばしょに いる ひとは みんな にげて ください。"},
    5: {"ja-JP": "命の危険があります。直ちに身の安全を確保してください。",
        "en-US": "Your life is in danger. Take the safest action you can right now.",
        "ja-JP-x-easy": "いのちが あぶないです。すぐに いのちを まもって ください。"},
}


# -- a point's municipality ------------------------------------------------------------------------
#: without loaded boundaries, a point belongs to the municipality of the nearest registered shelter or
#: station this close (a municipality is rarely wider than 20 km from its own places)
NEAREST_KM = 20.0

_NEAREST = f"""
SELECT municipality_code FROM (
    SELECT municipality_code, lat, lon FROM shelters WHERE municipality_code IS NOT NULL
    UNION ALL
    SELECT municipality_code, lat, lon FROM stations WHERE municipality_code IS NOT NULL AND lat IS NOT NULL
) places
WHERE municipality_code <> '{DRILL_TOWN_CODE}'
  AND abs(lat - $1) < $3 AND abs(lon - $2) < $3 * 1.5
ORDER BY (lat - $1) ^ 2 + ((lon - $2) * cos(radians($1))) ^ 2
LIMIT 1
"""


class Boundaries(Protocol):
    """Municipal boundaries (``ingest.boundaries.BoundaryIndex``, 国土数値情報 N03)."""

    def __len__(self) -> int: ...

    def municipality_at(self, lat: float, lon: float) -> str | None: ...


async def municipality_at(conn: asyncpg.Connection, lat: float, lon: float, *,
                          boundaries: Boundaries | None) -> str | None:
    """The 団体コード of the municipality a point (degrees, WGS 84) lies in.

    The one whose boundary covers it; a point outside every loaded boundary has none. Only when no
    boundaries are loaded at all: the municipality of the nearest registered shelter or station within
    :data:`NEAREST_KM`, never the drill town's (found: a point in the drill town took 079995 for real
    answers; it is real 郡山市's, and in the drill town for exercises only, :func:`exercise_municipality_at`).
    The position is used for this answer only; it is never logged or stored.
    """
    if boundaries is not None and len(boundaries):
        return boundaries.municipality_at(lat, lon)
    row = await conn.fetchrow(_NEAREST, lat, lon, NEAREST_KM / 111.0)
    return row["municipality_code"] if row else None


async def exercise_municipality_at(conn: asyncpg.Connection, lat: float, lon: float) -> str | None:
    """The municipality a point (degrees, WGS 84) is in for exercise answers only, besides its real one:
    :data:`~sonae.municipality_code.DRILL_TOWN_CODE` when the point lies in the drill town
    (:func:`alerting.drilltown.reaches`: within its margin of its shipped shelters' box), else None.

    The drill town has no boundary and lies inside real 郡山市, so :func:`municipality_at` gives 072036 there;
    found: a level-5 drill order for the whole drill town reached no point of it. Never logged or stored."""
    return DRILL_TOWN_CODE if reaches(lat, lon, await drill_town_box(conn)) else None


# -- what residents read -----------------------------------------------------------------------------
#: what to do when nothing is in force (levels 1-2 have no order), per language
CALM = {
    "ja-JP": ("警戒レベルの発表はありません", "最新の気象・河川情報に注意してください。"),
    "en-US": ("No alert level in force", "Keep following the latest weather and river information."),
    "ja-JP-x-easy": ("いま けいかいレベルは ありません", "てんきと かわの じょうほうに ちゅういして ください。"),
}

#: what to do at a point no municipality Sonae knows holds (outside every loaded boundary; nothing in force
#: there): not "no alert level", which would tell a resident beyond the covered area that all is calm
OUTSIDE = {
    "ja-JP": ("この場所は対象地域の外です",
              "お住まいの市区町村と気象庁が出している防災情報を確認してください。"),
    "en-US": ("This place is outside the area this service covers",
              "Check the disaster information of your municipality and the Japan Meteorological Agency."),
    "ja-JP-x-easy": ("ここは この サービスの ちいきの そとです",
                     "すんで いる まちと きしょうちょうの ぼうさいの じょうほうを みて ください。"),
}


def guidance(answer: LevelInForce, language: str, *, covered: bool = True) -> dict[str, Any]:
    """The headline residents read for ``answer`` in ``language`` (ja-JP, en-US, ja-JP-x-easy):
    ``{"level", "headline", "instruction"}``, plus ``condition``, ``alert_id`` and ``event`` when a
    source is in force. The deciding source speaks: an official warning with the guideline's instruction
    for its level (:data:`OFFICIAL_INSTRUCTION`), a gauge alert or an order with its own CAP texts
    (:func:`alerting.texts.text_for`); nothing in force: :data:`CALM`, or :data:`OUTSIDE` when the point
    is not ``covered`` (in no municipality Sonae knows)."""
    top = answer.top
    if top is None:
        headline, instruction = (CALM if covered else OUTSIDE)[language]
        return {"level": None, "headline": headline, "instruction": instruction}
    if top.kind == "official":
        return {"level": top.level, "condition": "official_information", "alert_id": None,
                "event": top.name[language], "headline": top.name[language],
                "instruction": OFFICIAL_INSTRUCTION.get(top.level, {}).get(language, CALM[language][1])}
    alert = top.alert or {}
    text = text_for(alert["condition"], top.level, language, reason=alert.get("reason"),
                    falling=alert.get("state") == "de-escalated", dwell_s=alert.get("dwell_s"))
    place = place_name(alert, lang=language)  # as CAP and push name it: an order's area or town, a gauge
    headline = text.headline.format(place=place)
    # a level lowered by time says its last reading as such, with that reading's time (as CAP and push do)
    last = last_reading(language, value=alert.get("value"), at=alert.get("value_at"))
    if last is not None:
        headline = f"{headline} {last}"
    return {"level": top.level, "condition": alert["condition"], "alert_id": alert["id"], "event": text.event,
            "headline": headline, "instruction": text.instruction}
