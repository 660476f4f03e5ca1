"""Shelters (避難場所・避難所): import from GSI GeoJSON, generic GeoJSON and CSV.

GSI data carries one flag per hazard (``"1"`` = designated for it) and no capacity; a shelter whose
capacity is unknown (``capacity=None``) is still a shelter and is never considered full.

Generic GeoJSON/CSV columns: ``id, name, address, lat, lon, municipality_code, hazards`` (ids separated by
``;`` or ``,``, or the GSI flag columns), ``capacity, occupancy, is_open``.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evac.drilltown import DRILL_TOWN_CODE
from evac.hazards import GSI_FLAGS, HAZARD_TYPES
from sonae.csvrows import shaped_rows
from sonae.jsonkeys import read_json_file
from sonae.municipality_code import normalise
from sonae.nametext import refused_text
from sonae.numbers import file_number
from sonae.pgtext import unstorable

_GSI_BY_FLAG = {v: k for k, v in GSI_FLAGS.items()}
# the GSI flag for landslides is written with different punctuation in different releases
_GSI_BY_FLAG.update({"崖崩れ・土石流・地滑り": "landslide", "崖崩れ・土石流及び地滑り": "landslide"})


@dataclass(frozen=True)
class Shelter:
    """One shelter or evacuation site."""

    id: str
    name: str
    lat: float
    lon: float
    hazards: frozenset[str]
    address: str = ""
    municipality_code: str = ""
    capacity: int | None = None
    occupancy: int = 0
    is_open: bool = True
    designations: frozenset[str] = frozenset()
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def is_full(self) -> bool:
        return self.capacity is not None and self.occupancy >= self.capacity

    def rated_for(self, hazard: str) -> bool:
        """Whether the site is rated (GSI flags) for ``hazard``: one id, or a set made by
        :func:`evac.hazards.hazard_set` (``flood,landslide``), which needs every hazard of it."""
        return all(h in self.hazards for h in hazard.split(","))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description, as shown to residents and staff."""
        return {
            "id": self.id, "name": self.name, "address": self.address, "lat": self.lat, "lon": self.lon,
            "municipality_code": self.municipality_code, "hazards": sorted(str(h) for h in self.hazards),
            "capacity": self.capacity, "capacity_known": self.capacity is not None,
            "occupancy": self.occupancy, "is_open": self.is_open, "is_full": self.is_full,
            "designations": sorted(self.designations),
        }


def _flag(value: Any) -> bool:
    return str(value).strip() in ("1", "true", "True", "yes", "○", "◯")


def _hazards_from(props: Mapping[str, Any]) -> frozenset[str]:
    found = {hz for flag, hz in _GSI_BY_FLAG.items() if flag in props and _flag(props[flag])}
    raw = props.get("hazards")
    if isinstance(raw, str):
        raw = [h for part in raw.replace(",", ";").split(";") if (h := part.strip())]
    for h in raw or []:
        if h not in HAZARD_TYPES:
            raise ValueError(f"unknown hazard {h!r} in shelter {props.get('id')}: use {', '.join(HAZARD_TYPES)}")
        found.add(h)
    return frozenset(found)


def _int_or_none(value: Any) -> int | None:
    if value is None or str(value).strip() == "":
        return None
    return int(file_number(value))


def _bool(value: Any, default: bool = True) -> bool:
    if value is None or str(value).strip() == "":
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("1", "true", "yes", "open", "開設")


#: GSI designations (災害対策基本法 第49条の4 / 第49条の7)
EMERGENCY_SITE = "指定緊急避難場所"
STAY_SHELTER = "指定避難所"
#: two records are one site when they share an id, or a name and municipality within this distance; GSI
#: gives the two designations separate ids, and in the Fukushima files 963 指定避難所 share a name with a
#: 指定緊急避難場所 of their municipality, at a median 3.6 m (../shared/data/shelters; measured)
SAME_SITE_M = 30.0


def _distance_m(a: Shelter, b: Shelter) -> float:
    x = math.radians(b.lon - a.lon) * math.cos(math.radians((a.lat + b.lat) / 2))
    return 6_371_000.0 * math.hypot(x, math.radians(b.lat - a.lat))


def merge_sites(*files: Iterable[Shelter], within_m: float = SAME_SITE_M) -> list[Shelter]:
    """One shelter per site from several files (e.g. GSI 指定緊急避難場所 and 指定避難所).

    A record joins an earlier one with the same id, or with the same name and municipality within
    ``within_m`` metres (the first record's id, position and name stay). The merged site has the union of
    the hazards, the designations, and the first known capacity.
    """
    out: list[Shelter] = []
    by_id: dict[str, int] = {}
    by_name: dict[tuple[str, str], list[int]] = {}
    for shelters in files:
        for s in shelters:
            i = by_id.get(s.id)
            if i is None and s.name:
                i = next((j for j in by_name.get((s.municipality_code, s.name), [])
                          if _distance_m(out[j], s) <= within_m), None)
            if i is None:
                by_id[s.id] = len(out)
                if s.name:
                    by_name.setdefault((s.municipality_code, s.name), []).append(len(out))
                out.append(s)
                continue
            first = out[i]
            out[i] = Shelter(**{**first.__dict__, "hazards": first.hazards | s.hazards,
                                "designations": first.designations | s.designations,
                                "capacity": first.capacity if first.capacity is not None else s.capacity,
                                "address": first.address or s.address})
    return out


#: the drill town's code before issue #14 (it failed the check digit); files written then still load
LEGACY_DRILL_TOWN_CODE = "079999"


def municipality_code(raw: Any) -> str:
    """A shelter's 団体コード in the 6-digit form ("" when unknown); raises ValueError for a bad code."""
    text = "" if raw is None else str(raw).strip()
    if text == LEGACY_DRILL_TOWN_CODE:
        return DRILL_TOWN_CODE
    return normalise(text) if text else ""


def shelter_from_properties(
    props: Mapping[str, Any], *, lon: float, lat: float, fallback_id: str,
    default_hazards: Iterable[str] = (),
) -> Shelter:
    """One :class:`Shelter` from GSI or generic properties.

    ``default_hazards`` applies when the properties carry no hazard information at all (GSI's
    指定避難所 file has no flags: those are places to stay, the flags are on 指定緊急避難場所).
    """
    has_info = "hazards" in props or any(flag in props for flag in _GSI_BY_FLAG)
    designations = {d for part in str(props.get("designations") or "").replace(",", ";").split(";")
                    if (d := part.strip())}
    if any(flag in props for flag in _GSI_BY_FLAG) and "共通ID" in props:
        designations.add(EMERGENCY_SITE)
    if "指定緊急避難場所との住所同一" in props:  # a column only GSI's 指定避難所 file has
        designations.add(STAY_SHELTER)
    sid = str(props.get("id") or props.get("共通ID") or props.get("NO") or fallback_id)
    texts = {"id": sid, "name": str(props.get("name") or props.get("施設・場所名") or ""),
             "address": str(props.get("address") or props.get("住所") or "")}
    for key, text in texts.items():
        problem = unstorable(text)
        if problem:
            raise ValueError(f"shelter {sid!r}: field {key!r} contains {problem}; remove it from the file")
        # the name and address are shown to residents and staff: sonae.nametext's rule, the one of the API
        if key != "id" and (why := refused_text(f"shelter {sid!r}: {key}", text)):
            raise ValueError(why)
    return Shelter(
        id=sid,
        name=texts["name"],
        address=texts["address"],
        lat=file_number(lat), lon=file_number(lon),
        municipality_code=municipality_code(props.get("municipality_code")),
        hazards=_hazards_from(props) if has_info else frozenset(default_hazards),
        capacity=_int_or_none(props.get("capacity")),
        occupancy=_int_or_none(props.get("occupancy")) or 0,
        is_open=_bool(props.get("is_open")),
        designations=frozenset(designations),
    )


def load_shelters_geojson(
    source: Path | str | Mapping[str, Any], *, default_hazards: Iterable[str] = ()
) -> list[Shelter]:
    """Shelters from a GeoJSON FeatureCollection of Points (GSI or generic properties)."""
    data = read_json_file(source) if isinstance(source, str | Path) else source
    out = []
    seen: set[str] = set()
    for i, feat in enumerate(data.get("features", [])):
        geom = feat.get("geometry") or {}
        if geom.get("type") != "Point":
            raise ValueError(f"shelter feature {i} is a {geom.get('type')}: shelters must be Points [lon, lat]")
        lon, lat = geom["coordinates"][:2]
        try:
            s = shelter_from_properties(feat.get("properties") or {}, lon=lon, lat=lat,
                                        fallback_id=f"shelter-{i}", default_hazards=default_hazards)
        except ValueError as exc:  # the whole file is refused, naming the feature
            raise ValueError(f"feature {i}: {exc}") from None
        if s.id in seen:  # GSI ids are unique within a file; keep the data but make the id unique
            s = Shelter(**{**s.__dict__, "id": f"{s.id}#{i}"})
        seen.add(s.id)
        out.append(s)
    return out


def load_shelters_csv(path: Path | str, *, default_hazards: Iterable[str] = ()) -> list[Shelter]:
    """Shelters from a CSV with ``lat`` and ``lon`` columns (UTF-8, a BOM is accepted), each row one cell per
    column (:func:`sonae.csvrows.shaped_rows`: ``…,flood,landslide`` unquoted was rated for flood only).

    Raises
    ------
    ValueError
        Naming the file and line (:class:`sonae.csvrows.CsvShapeError` for a row's shape).
    """
    out = []
    seen: set[str] = set()
    with Path(path).open(encoding="utf-8-sig", newline="") as fh:
        for i, row in enumerate(shaped_rows(csv.DictReader(fh), source=Path(path).name)):
            try:
                lat, lon = file_number(row["lat"]), file_number(row["lon"])
            except (KeyError, ValueError, TypeError):
                raise ValueError(f"{Path(path).name} line {i + 2}: needs numeric 'lat' and 'lon' columns") from None
            try:
                s = shelter_from_properties(row, lon=lon, lat=lat, fallback_id=f"shelter-{i}",
                                            default_hazards=default_hazards)
            except ValueError as exc:  # the whole file is refused, naming the row (its line, after the header)
                raise ValueError(f"{Path(path).name} line {i + 2}: {exc}") from None
            if s.id in seen:  # as load_shelters_geojson: merge_sites joins one id, so two sites would become one
                s = Shelter(**{**s.__dict__, "id": f"{s.id}#{i}"})  # with both ratings (found by break33)
            seen.add(s.id)
            out.append(s)
    return out


def load_shelters(path: Path | str, *, default_hazards: Iterable[str] = ()) -> list[Shelter]:
    """Shelters from ``.geojson``/``.json`` (GSI or generic) or ``.csv``."""
    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json"):
        return load_shelters_geojson(path, default_hazards=default_hazards)
    if suffix == ".csv":
        return load_shelters_csv(path, default_hazards=default_hazards)
    raise ValueError(f"cannot read shelters from {Path(path).name}: use .geojson, .json or .csv")


def write_shelters_geojson(shelters: Iterable[Shelter], path: Path | str, *, gsi_flags: bool = True) -> None:
    """Write shelters as GeoJSON, with GSI hazard flags (and capacity/occupancy) as properties."""
    feats = []
    for s in shelters:
        props: dict[str, Any] = {"id": s.id, "施設・場所名": s.name, "住所": s.address,
                                 "municipality_code": s.municipality_code}
        if gsi_flags:
            props.update({flag: "1" if hz in s.hazards else "" for hz, flag in GSI_FLAGS.items()})
        else:
            props["hazards"] = sorted(s.hazards)
        props.update({"capacity": s.capacity, "occupancy": s.occupancy, "is_open": s.is_open})
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [s.lon, s.lat]},
                      "properties": props})
    Path(path).write_text(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False),
                          encoding="utf-8")
