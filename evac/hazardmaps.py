"""Hazard maps in Japan's national formats: PLATEAU (CityGML converted to GeoJSON) and 国土数値情報.

Three kinds of published map are recognised, with the attributes they carry:

洪水浸水想定区域 (flood), 高潮浸水想定区域 (storm surge), 雨水出水(内水)浸水想定区域 (inland flooding)
    depth rank and the depth range it stands for (m);
津波浸水想定 (tsunami)
    depth rank and range;
土砂災害警戒区域 (landslide)
    zone class (警戒区域 / 特別警戒区域) and phenomenon (急傾斜地の崩壊 / 土石流 / 地すべり).

Attribute names and codes
-------------------------
PLATEAU GeoJSON (as converted from 3D都市モデル標準製品仕様書 uro:*RiskAttribute):
``浸水ランク`` (uro:rank, codelists ``RiverFloodingRiskAttribute_rank.xml`` / ``TsunamiRiskAttribute_rank.xml``,
named ``浸水ランクフィールド`` in the file), ``name`` (the map title, uro:description), ``規模`` (uro:scale,
L1 計画規模 / L2 想定最大規模), ``区域区分`` and ``現象の種類`` (urf:areaType / urf:disasterType of
土砂災害警戒区域, same codes as 国土数値情報 A33).

国土数値情報 (shapefile or GeoJSON): A31 洪水浸水想定区域 ``A31_001`` (浸水深ランクコード), A33 土砂災害警戒区域
``A33_001`` 現象の種類, ``A33_002`` 区域区分, ``A33_004`` 区域番号, ``A33_005`` 区域名, ``A33_006`` 所在地,
``A33_007`` 告示日; A40 津波浸水想定 ``A40_003``, A49 高潮浸水想定区域 ``A49_003``, A51 雨水出水浸水想定区域
``A51_005`` — these three give the depth as text ("0.3m以上0.5m未満"), parsed into a range.

Routing policy (:func:`routing_severity`)
----------------------------------------
While a map is in force its areas are, by depth/zone:

* water (flood, storm surge, inland flooding) 0.5 m or deeper, or of unknown depth: **blocked**;
  shallower than 0.5 m: **penalised** ×:data:`SHALLOW_WATER_PENALTY`. Source: 内閣府「避難情報に関する
  ガイドライン」(2021) and 国土交通省「水害ハザードマップ作成の手引き」(2016): walking becomes difficult and
  dangerous once water is above the knee, about 0.5 m (0.2 m already with a current), and 0.5 m is the
  手引き's first depth boundary (床上浸水, an adult's knee). Walking speed in knee-deep water roughly
  halves (須賀ら 1995, 地下空間からの避難実験), so the factor 3 covers the slower walk plus hidden
  hazards (open manholes, ditches): a detour up to three times as long is preferred.
* tsunami: **blocked at every depth** — 気象庁: a tsunami of 0.2–0.3 m knocks people off their feet.
* landslide: 特別警戒区域 (red zone) **blocked**; 警戒区域 (yellow zone) **penalised** ×
  :data:`LANDSLIDE_WARNING_ZONE_PENALTY`, so routes leave them where they can while a resident who lives
  in one can still get out.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely

from sonae.geojson import shape_of
from sonae.jsonkeys import DuplicateKeyError, loads_unique
from sonae.nametext import refused_text

#: Penalty factor for water shallower than 0.5 m (see the module docstring for the source).
SHALLOW_WATER_PENALTY = 3.0
#: Penalty factor for a 土砂災害警戒区域 (yellow zone).
LANDSLIDE_WARNING_ZONE_PENALTY = 3.0
#: Depth from which water blocks walking (m): 内閣府 避難情報に関するガイドライン (knee height).
WALKING_LIMIT_M = 0.5

#: PLATEAU ``RiverFloodingRiskAttribute_rank.xml`` (洪水; also 高潮 ``HighTideRiskAttribute_rank`` and
#: 内水 ``InlandFloodingRiskAttribute_rank``): rank -> (min m, max m or None). The 水害ハザードマップ作成の
#: 手引き (2016) classes; matches the ranks described in data/hazard_plateau/PROVENANCE.md.
PLATEAU_WATER_RANKS: dict[int, tuple[float, float | None]] = {
    1: (0.0, 0.5), 2: (0.5, 3.0), 3: (3.0, 5.0), 4: (5.0, 10.0), 5: (10.0, 20.0), 6: (20.0, None)}
#: PLATEAU ``TsunamiRiskAttribute_rank.xml`` (uro 1.x: ``Tsunami_rank.xml``): the 8 detailed classes of
#: the 手引き (0.3 m steps at the shallow end). The codelist file itself is not in the shared snapshot:
#: check it against the dataset's ``codelists/`` folder. Routing does not depend on it (tsunami areas
#: are blocked at every depth).
PLATEAU_TSUNAMI_RANKS: dict[int, tuple[float, float | None]] = {
    1: (0.0, 0.3), 2: (0.3, 0.5), 3: (0.5, 1.0), 4: (1.0, 3.0), 5: (3.0, 5.0), 6: (5.0, 10.0),
    7: (10.0, 20.0), 8: (20.0, None)}
#: 国土数値情報 A31 浸水深ランクコード: 11–15 (before the 2015 水防法 revision), 21–26 (after).
KSJ_A31_RANKS: dict[int, tuple[float, float | None]] = {
    11: (0.0, 0.5), 12: (0.5, 1.0), 13: (1.0, 2.0), 14: (2.0, 5.0), 15: (5.0, None),
    21: (0.0, 0.5), 22: (0.5, 3.0), 23: (3.0, 5.0), 24: (5.0, 10.0), 25: (10.0, 20.0), 26: (20.0, None)}
#: 国土数値情報 A33 / PLATEAU 区域区分 (urf:areaType).
ZONE_CLASSES = {"1": "警戒区域", "2": "特別警戒区域"}
#: 国土数値情報 A33 / PLATEAU 現象の種類 (urf:disasterType).
PHENOMENA = {"1": "急傾斜地の崩壊", "2": "土石流", "3": "地すべり"}

#: Attribution the sources require (shown by ``sonae hazards maps`` and the staff API).
ATTRIBUTION = {
    "plateau": "出典：国土交通省 Project PLATEAU 3D都市モデル（{title}）を加工して作成",
    "ksj": "出典：国土数値情報（{title}）（国土交通省）を加工して作成",
}

_WATER = ("flood", "storm_surge", "inland_flooding", "tsunami")
_FILE_HINTS = (("_fld_", "flood"), ("_tnm_", "tsunami"), ("_htd_", "storm_surge"), ("_ifld_", "inland_flooding"),
               ("_lsld_", "landslide"), ("a31", "flood"), ("a40", "tsunami"), ("a49", "storm_surge"),
               ("a51", "inland_flooding"), ("a33", "landslide"))
_TITLE_HINTS = (("津波", "tsunami"), ("高潮", "storm_surge"), ("内水", "inland_flooding"),
                ("雨水出水", "inland_flooding"), ("土砂", "landslide"), ("洪水", "flood"), ("浸水", "flood"))
_DEPTH_TEXT = re.compile(r"(\d+(?:\.\d+)?)\s*[mｍ]\s*(以上|未満)")


class HazardMapError(ValueError):
    """A file that is not a hazard map Sonae can read; the message says why and what to do."""


@dataclass(frozen=True)
class MapArea:
    """One polygon of a hazard map with its national attributes (depths in m)."""

    geometry: shapely.Geometry
    depth_rank: int | None = None
    depth_min_m: float | None = None
    depth_max_m: float | None = None
    zone_class: str | None = None
    phenomenon: str | None = None
    label: str = ""
    repaired: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MapInfo:
    """What a hazard map file is: its format (``plateau`` | ``ksj``), hazard type and title."""

    format: str
    hazard: str
    title: str
    features: int

    @property
    def attribution(self) -> str:
        return ATTRIBUTION[self.format].format(title=self.title)


def depth_range_from_text(text: str) -> tuple[float | None, float | None]:
    """``"0.3m以上0.5m未満"`` -> ``(0.3, 0.5)``; ``"20m以上"`` -> ``(20, None)``; unreadable -> ``(None, None)``."""
    lo: float | None = None
    hi: float | None = None
    for number, kind in _DEPTH_TEXT.findall(text):
        if kind == "以上":
            lo = float(number)
        else:
            hi = float(number)
    if hi is not None and lo is None:
        lo = 0.0
    return lo, hi


def routing_severity(hazard: str, area: MapArea) -> tuple[str, float]:
    """``("blocked", 1)`` or ``("penalty", factor)`` for an area while its map is in force (policy above)."""
    if hazard == "landslide":
        if area.zone_class == ZONE_CLASSES["1"]:
            return "penalty", LANDSLIDE_WARNING_ZONE_PENALTY
        return "blocked", 1.0
    if hazard in _WATER and hazard != "tsunami" and area.depth_max_m is not None \
            and area.depth_max_m <= WALKING_LIMIT_M:
        return "penalty", SHALLOW_WATER_PENALTY
    return "blocked", 1.0


def _is_ksj(props: Mapping[str, Any]) -> bool:
    return any(re.match(r"^A(31a?|33|40|49|51)_", k) for k in props)


def is_national(props: Mapping[str, Any]) -> bool:
    """Whether a feature's properties are PLATEAU's or 国土数値情報's (rather than Sonae's own GeoJSON)."""
    return _is_ksj(props) or any(k in props for k in ("浸水ランク", "区域区分", "現象の種類"))


def _detect_hazard(path: Path, props: Mapping[str, Any], title: str) -> str | None:
    if "区域区分" in props or "現象の種類" in props or any(k.startswith("A33_") for k in props):
        return "landslide"
    if "Tsunami" in str(props.get("浸水ランクフィールド", "")) or any(k.startswith("A40_") for k in props):
        return "tsunami"
    if any(k.startswith("A49_") for k in props):
        return "storm_surge"
    if any(k.startswith("A51_") for k in props):
        return "inland_flooding"
    if any(k.startswith(("A31_", "A31a_")) for k in props):
        return "flood"
    for word, kind in _TITLE_HINTS:
        if word in title:
            return kind
    name = path.name.lower()
    for hint, kind in _FILE_HINTS:
        if hint in name:
            return kind
    return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _polygonal(geom: shapely.Geometry) -> tuple[shapely.Geometry, bool]:
    """The geometry, made valid if it is not (GEOS make_valid, structure method: no vertex is dropped)."""
    if shapely.is_valid(geom):
        return geom, False
    fixed = shapely.make_valid(geom, method="structure", keep_collapsed=False)
    if isinstance(fixed, shapely.GeometryCollection):
        parts = [g for g in fixed.geoms if isinstance(g, shapely.Polygon | shapely.MultiPolygon)]
        fixed = shapely.union_all(parts) if parts else shapely.Polygon()
    return fixed, True


def _area(hazard: str, props: Mapping[str, Any], geom: shapely.Geometry, title: str) -> MapArea:
    rank: int | None = None
    lo: float | None = None
    hi: float | None = None
    zone = phen = None
    label = title
    if "浸水ランク" in props:
        rank = _int(props["浸水ランク"])
        table = PLATEAU_TSUNAMI_RANKS if hazard == "tsunami" else PLATEAU_WATER_RANKS
        if rank is not None and rank in table:
            lo, hi = table[rank]
    elif "A31_001" in props:
        rank = _int(props["A31_001"])
        if rank is not None and rank in KSJ_A31_RANKS:
            lo, hi = KSJ_A31_RANKS[rank]
    else:
        for key in ("A40_003", "A49_003", "A51_005"):
            if key in props and props[key] is not None:
                lo, hi = depth_range_from_text(str(props[key]))
                break
    zone_code = props.get("区域区分", props.get("A33_002"))
    phen_code = props.get("現象の種類", props.get("A33_001"))
    if zone_code is not None:
        zone = ZONE_CLASSES.get(str(zone_code).strip(), str(zone_code))
    if phen_code is not None:
        phen = PHENOMENA.get(str(phen_code).strip(), str(phen_code))
    name = props.get("区域名", props.get("A33_005"))
    if hazard == "landslide" and name:
        label = f"{name}（{phen or ''}{zone or ''}）"
    fixed, repaired = _polygonal(geom)
    attrs = {k: v for k, v in props.items() if isinstance(v, str | int | float | bool) or v is None}
    return MapArea(geometry=fixed, depth_rank=rank, depth_min_m=lo, depth_max_m=hi, zone_class=zone,
                   phenomenon=phen, label=str(label), repaired=repaired, attributes=attrs)


def _features(path: Path) -> tuple[list[dict[str, Any]], str]:
    """Raw features and format of a GeoJSON or shapefile (``.shp`` via pyshp)."""
    if path.suffix.lower() == ".shp":
        try:
            import shapefile  # pyshp
        except ImportError:  # pragma: no cover - pyshp is a dependency
            raise HazardMapError("reading shapefiles needs pyshp: pip install pyshp") from None
        cpg = path.with_suffix(".cpg")
        named = cpg.read_text(encoding="ascii", errors="replace").strip() if cpg.exists() else ""
        # 国土数値情報 shapefiles without a .cpg are Shift_JIS (cp932); newer ones are UTF-8
        for encoding in ([named] if named else ["utf-8", "cp932"]):
            try:
                with shapefile.Reader(str(path), encoding=encoding) as shp:
                    feats = [{"type": "Feature", "geometry": sr.shape.__geo_interface__,
                              "properties": sr.record.as_dict()} for sr in shp.iterShapeRecords()]
                break
            except (UnicodeDecodeError, LookupError):
                continue
            except (struct.error, EOFError, IndexError) as exc:  # a truncated or foreign file
                raise HazardMapError(f"not a readable shapefile ({exc})") from None
            except shapefile.ShapefileException as exc:
                if "decode" in str(exc):  # pyshp >= 3 wraps a wrong encoding like this
                    continue
                raise HazardMapError(f"not a readable shapefile ({exc})") from None
        else:
            raise HazardMapError("attribute text is neither UTF-8 nor Shift_JIS: add a .cpg file naming "
                                 "the encoding")
        return feats, "ksj"
    try:
        data = loads_unique(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as exc:  # one rule for outside JSON (sonae.jsonkeys)
        raise HazardMapError(f"not usable GeoJSON: {exc}") from None
    except UnicodeDecodeError:
        raise HazardMapError("not UTF-8 text: give a GeoJSON (.geojson) or a shapefile (.shp)") from None
    except json.JSONDecodeError as exc:
        raise HazardMapError(f"not GeoJSON (JSON error at line {exc.lineno}, column {exc.colno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("features"), list):
        raise HazardMapError("not a GeoJSON FeatureCollection (no 'features' list)")
    feats = data["features"]
    first = next((f.get("properties") or {} for f in feats if isinstance(f, dict)), {})
    return feats, ("ksj" if _is_ksj(first) else "plateau")


def read_hazard_map(path: Path | str, *, hazard: str | None = None,
                    title: str | None = None) -> tuple[MapInfo, Iterator[MapArea]]:
    """Read a PLATEAU or 国土数値情報 hazard map: what it is, and its areas one by one.

    Parameters
    ----------
    path
        GeoJSON (lon/lat, JGD2011 = EPSG:6668 is taken as WGS 84, < 1 m apart) or a ``.shp``.
    hazard
        Hazard type when the file does not say (``flood``, ``tsunami``, ...).
    title
        Map title when the file has none (PLATEAU ``name``).

    Raises
    ------
    HazardMapError
        Not a readable file, or the hazard type cannot be told (pass ``hazard``).
    """
    p = Path(path)
    feats, fmt = _features(p)
    if not feats:
        raise HazardMapError("the file has no features")
    first = feats[0].get("properties") or {}
    if title is not None and (why := refused_text("--title", title)):  # shown to people (sonae.nametext)
        raise HazardMapError(why)
    named = str(first.get("name") or "")
    if title is None and (why := refused_text("the map's title (feature 0: name)", named)):
        raise HazardMapError(why)  # refused, not trimmed: a line break or U+202E is no title
    map_title = title or named.strip()
    if not map_title or map_title.isdigit():  # 土砂災害警戒区域 files carry name = "1"
        map_title = title or {"landslide": "土砂災害警戒区域"}.get(_detect_hazard(p, first, "") or "", p.stem)
        if why := refused_text(f"the map's title (the file name {p.stem!r})", map_title):
            raise HazardMapError(why)
    kind = hazard or _detect_hazard(p, first, map_title)
    if kind is None:
        raise HazardMapError("cannot tell the hazard type from the file: give --hazard "
                             "(flood, tsunami, storm_surge, inland_flooding or landslide)")
    info = MapInfo(format=fmt, hazard=kind, title=map_title, features=len(feats))

    def areas() -> Iterator[MapArea]:
        for i, feat in enumerate(feats):
            try:
                geom = shape_of(feat["geometry"])  # (GeometryError is a ValueError)
            except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException) as exc:
                raise HazardMapError(f"feature {i}: bad geometry ({exc})") from None
            if not isinstance(geom, shapely.Polygon | shapely.MultiPolygon) or geom.is_empty:
                raise HazardMapError(f"feature {i}: geometry must be a Polygon or MultiPolygon, "
                                     f"not {geom.geom_type}")
            xmin, ymin, xmax, ymax = geom.bounds
            if not (-180 <= xmin <= xmax <= 180 and -90 <= ymin <= ymax <= 90):
                raise HazardMapError(f"feature {i}: coordinates are not lon/lat degrees (a projected "
                                     "CRS?): convert the file to EPSG:6668 or 4326 first")
            area = _area(kind, feat.get("properties") or {}, geom, map_title)
            if why := refused_text(f"feature {i}: label", area.label):  # its 区域名, 現象 and 区域区分 from the file
                raise HazardMapError(why)
            yield area

    return info, areas()
