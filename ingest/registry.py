"""The station and device registry: what each gauge is, where, and its thresholds.

Stations are imported from CSV (one row per station, columns named as :class:`Station` fields) or
GeoJSON (Point features whose properties are those fields). Readings that arrived before their
station was registered wait in quarantine and are released into ``readings`` on registration.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import asyncpg

from ingest.contract import STATION_ID, STATION_ID_RULE, PayloadError, Topic, parse_topic
from ingest.municipalities import uncovered
from ingest.placement import Place, misplaced
from sonae import textfile
from sonae.csvrows import CsvShapeError, shaped_rows
from sonae.jsonkeys import DuplicateKeyError, loads_unique
from sonae.municipality_code import (
    DRILL_TOWN_CODE,
    MunicipalityCodeError,
    normalise_optional,
    not_a_municipality,
)
from sonae.nametext import hidden_character, shown_text
from sonae.numbers import file_number, unsigned
from sonae.pgtext import unstorable
from sonae.textfile import TextFileError

THRESHOLD_FIELDS = ("th_standby", "th_caution", "th_evacuation", "th_danger",
                    "th_obs_start", "th_crisis", "th_overflow")
#: the 洪水予報 thresholds in rising order (水防団待機, 氾濫注意, 避難判断, 氾濫危険 水位), m
FLOOD_THRESHOLDS = ("th_standby", "th_caution", "th_evacuation", "th_danger")
#: the 危機管理型 thresholds in rising order (観測開始, 危険, 氾濫開始 水位), m
CRISIS_THRESHOLDS = ("th_obs_start", "th_crisis", "th_overflow")
#: the texts shown to people as the station's names (alert headlines): no hidden characters (sonae.nametext)
SHOWN_TEXTS = ("name", "name_en", "kana", "river")


def shown_station(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a station read from the database, any of its columns) with its :data:`SHOWN_TEXTS` as they
    show (:func:`sonae.nametext.shown_text`): the one rule for every read path whose station texts leave the
    service (the API's station list and answers, the staff sensor-health view, NGSI-LD gauges and devices), as
    the alerts' names are (``alerting.store``). Texts stored before the name rule, or written by SQL, may hold
    hidden or reordering characters (found: served raw by ``GET /api/v1/stations``, a ``PATCH`` answer and
    ``/api/v1/sensors/health`` while alerts showed them cleaned); the stored text is kept, for staff to correct
    at its source. A new dict; ``row`` is not changed."""
    out = dict(row)
    for key in SHOWN_TEXTS:
        if isinstance(out.get(key), str):
            out[key] = shown_text(out[key])
    return out


class RegistryError(ValueError):
    """A station record is invalid; the message names the record and field."""


@dataclass(frozen=True)
class Station:
    id: str
    name: str
    name_en: str | None = None
    kana: str | None = None
    kind: str = "river_level"
    gauge_type: str = "flood_forecast"
    river: str | None = None
    municipality_code: str | None = None
    lat: float | None = None
    lon: float | None = None
    unit: str = "m"
    datum: str | None = None
    expected_interval_s: int = 600
    th_standby: float | None = None  # 水防団待機水位
    th_caution: float | None = None  # 氾濫注意水位
    th_evacuation: float | None = None  # 避難判断水位
    th_danger: float | None = None  # 氾濫危険水位
    th_obs_start: float | None = None  # 観測開始水位 (危機管理型)
    th_crisis: float | None = None  # 危険水位 (危機管理型)
    th_overflow: float | None = None  # 氾濫開始水位 (危機管理型)
    exercise: bool = False
    source: str | None = None
    max_rate_m_per_h: float | None = None  # plausible rate of change (None: alerting's default)
    #: the exercise scenario's clock speed, applied while the station is an exercise station (kept, unused, while
    #: it is real: switched back to exercise, its drills run on their clock again)
    exercise_time_scale: float = 1.0
    #: a stage at or below this (m, the gauge's datum) is 欠測, a missing value, not a stage (alerting.rules); None:
    #: the gauge has no such sentinel and every stage is a stage. See :data:`MISSING_RULE`.
    missing_at_or_below: float | None = 0.0

    def validate(self, *, texts: Iterable[str] = SHOWN_TEXTS, levels: bool = True,
                 repair: str = "in the station file") -> Station:
        """The station with its municipality code in the 6-digit form; raises :class:`RegistryError`.

        ``texts``: the shown texts (of :data:`SHOWN_TEXTS`) checked for hidden characters; all of them for a
        station file, only those an edit sets for a staff edit (:func:`edit_station`: a name stored before the
        rule is shown cleaned, :func:`sonae.nametext.shown_text`, and never blocks an edit of other fields).
        ``levels``: whether the rules of the stages are checked (thresholds finite and rising, all above
        ``missing_at_or_below``); False only for a staff edit that sets none of them (:func:`edit_station`).
        ``repair``: where an error of ``missing_at_or_below`` tells to set it (a file, or the staff edit).
        """
        where = f"station {self.id!r}"
        if not STATION_ID.match(self.id):
            raise RegistryError(f"{where}: id {self.id[:80]!r}: a station id is {STATION_ID_RULE}")
        if not self.name:
            raise RegistryError(f"{where}: name is empty")
        for name in texts:
            value = getattr(self, name)
            hidden = hidden_character(value) if isinstance(value, str) else None
            if hidden:
                raise RegistryError(f"{where}: {name} contains {hidden}; it would reach alert headlines: "
                                    "write the name without it")
        if self.kind not in ("river_level", "rainfall", "device", "gateway"):
            raise RegistryError(f"{where}: kind must be river_level, rainfall, device or gateway")
        if self.gauge_type not in ("flood_forecast", "crisis", "none"):
            raise RegistryError(f"{where}: gauge_type must be flood_forecast, crisis or none")
        if self.lat is not None and not -90 <= self.lat <= 90:
            raise RegistryError(f"{where}: lat {self.lat} out of range")
        if self.lon is not None and not -180 <= self.lon <= 180:
            raise RegistryError(f"{where}: lon {self.lon} out of range")
        if self.expected_interval_s <= 0:
            raise RegistryError(f"{where}: expected_interval_s must be positive")
        if self.max_rate_m_per_h is not None and not self.max_rate_m_per_h > 0:
            raise RegistryError(f"{where}: max_rate_m_per_h must be positive (m/h), or empty for the default")
        if not self.exercise_time_scale >= 1:
            raise RegistryError(f"{where}: exercise_time_scale must be 1 or more")
        if levels:
            self._check_rising(FLOOD_THRESHOLDS, "水防団待機 ≤ 氾濫注意 ≤ 避難判断 ≤ 氾濫危険", where=where)
            self._check_rising(CRISIS_THRESHOLDS, "観測開始 ≤ 危険 ≤ 氾濫開始", where=where)
            self._check_above_missing(where=where, repair=repair)
        try:
            code = normalise_optional(self.municipality_code)
        except MunicipalityCodeError as exc:
            raise RegistryError(f"{where}: municipality_code: {exc}") from None
        problem = not_a_municipality(code) if code is not None else None
        if problem:
            raise RegistryError(f"{where}: municipality_code: {problem}")
        return self if code == self.municipality_code else replace(self, municipality_code=code)


    def _check_above_missing(self, *, where: str, repair: str) -> None:
        """Every threshold lies above the stages read as 欠測 (:data:`MISSING_RULE`): the rules ignore a stage
        at or below ``missing_at_or_below``, so a threshold there could never be reached (found: thresholds
        −1.0/−0.5/−0.2/0.0 were accepted at import and PATCH, and the gauge never alerted)."""
        limit = self.missing_at_or_below
        if limit is None:
            return
        if not math.isfinite(limit):
            raise RegistryError(f"{where}: missing_at_or_below must be a finite number of metres, or none")
        for name in THRESHOLD_FIELDS:
            value = getattr(self, name)
            if value is not None and value <= limit:
                raise RegistryError(
                    f"{where}: {name} ({value:g} m) is at or below missing_at_or_below ({limit:g} m), the stage "
                    f"read as 欠測 (a missing value), so the gauge could never reach it: if the gauge reads such "
                    f"stages (a tidal or low-lying gauge on T.P.), give missing_at_or_below none (or the value its "
                    f"telemetry writes for 欠測, below every threshold) {repair}, or give thresholds above it")

    def _check_rising(self, names: Sequence[str], order: str, *, where: str) -> None:
        """The load rule of one ladder (the one rule, for files and staff edits alike): each threshold given
        is a finite number of metres, and those given rise (equal allowed) in ``order``."""
        present = [(f, getattr(self, f)) for f in names if getattr(self, f) is not None]
        for f, value in present:
            if not math.isfinite(value):
                raise RegistryError(f"{where}: {f} must be a finite number of metres, not {value}")
        for (low_name, low), (high_name, high) in zip(present, present[1:], strict=False):
            if high < low:
                raise RegistryError(f"{where}: thresholds must rise {order}: {high_name} ({high:g} m) is below "
                                    f"{low_name} ({low:g} m)")


#: Where the 欠測 rule comes from, and why it is per gauge. Telemetry exports write a missing stage as 0: the
#: 持世寺 series (Yamaguchi 土木防災情報システム, shared/data/river_levels) reads 0.00 for 40 minutes on
#: 2023-07-03 between 3.4 m readings, so a stage at or below 0 m is 欠測 by default (``alerting.rules``). But real
#: Japanese gauges read below 0 m: in MLIT 川の水位情報 (the all-Japan snapshot of 2025-11-01 03 JST, same folder)
#: 13 of 344 gauges read or start below 0 m, e.g. 幸田川橋 (岡山県) at −0.56 m with 観測開始水位 −0.95 m and
#: 氾濫開始水位 0.01 m, and 北北上運河 中里 (宮城県) at −0.16 m; MLIT writes 欠測 as no value, never 0. So the
#: sentinel is the station's ``missing_at_or_below`` (0.0 by default, ``none`` for no sentinel), and no threshold
#: may lie at or below it.
MISSING_RULE = "missing_at_or_below"

_FIELDS = {f.name: f for f in fields(Station)}
_FLOATS = {"lat", "lon", "max_rate_m_per_h", "exercise_time_scale", "missing_at_or_below", *THRESHOLD_FIELDS}


def _shown(value: Any) -> str:
    """A value for an error message: short, and never raising (``repr`` of a 5,000-digit int does)."""
    if isinstance(value, str | float | bool) or value is None:
        return repr(value)[:60]
    if isinstance(value, int):
        return repr(value) if -10**20 < value < 10**20 else f"(an integer of {value.bit_length()} bits)"
    return f"(a {type(value).__name__})"


def station_from_mapping(raw: dict[str, Any], *, where: str) -> Station:
    """A validated :class:`Station` from one CSV row or GeoJSON properties; :class:`RegistryError` names
    the record and field of anything else (lists, objects, numbers beyond a float, NaN, huge integers)."""
    if not isinstance(raw, dict):
        raise RegistryError(f"{where}: expected an object of station fields, got {_shown(raw)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            continue
        if value is None and key == MISSING_RULE:  # JSON null: "no sentinel" or "not given"? said, not guessed
            raise RegistryError(f"{where}: field {key!r} is null: give a number of metres, \"none\" for a gauge "
                                "with no 欠測 sentinel, or leave the field out for the default 0.0")
        if value == "" or value is None:
            continue
        if key == MISSING_RULE and isinstance(value, str) and value.strip().lower() == "none":
            values[key] = None  # the gauge has no 欠測 sentinel: every stage is a stage
            continue
        try:
            if isinstance(value, list | dict):
                raise TypeError("a list or an object")
            if key in _FLOATS:
                value = unsigned(file_number(value))  # a threshold of -0.0 is 0.0 (sonae.numbers); 6_4 refused
                if not math.isfinite(value):
                    raise ValueError("not finite")
            elif key == "expected_interval_s":
                value = int(file_number(value, whole=True))
            elif key == "exercise":
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            else:
                value = str(value)
        except (ValueError, TypeError, OverflowError):  # OverflowError: int(1e309), float(10**400)
            raise RegistryError(f"{where}: field {key!r} has a bad value {_shown(value)}") from None
        problem = unstorable(value) if isinstance(value, str) else None
        if problem:
            raise RegistryError(f"{where}: field {key!r} contains {problem}; remove it from the file")
        values[key] = value
    if "id" not in values or "name" not in values:
        raise RegistryError(f"{where}: fields 'id' and 'name' are required")
    if values.get("exercise_time_scale", 1) != 1 and not values.get("exercise"):
        raise RegistryError(f"{where}: exercise_time_scale is for exercise stations only; "
                            "set exercise=true or leave it at 1")
    try:
        return Station(**values).validate()
    except RegistryError as exc:  # the station's own rules (id, code, thresholds): say where, too
        raise RegistryError(f"{where}: {exc}") from None


def read_text_file(path: str | Path) -> str:
    """:func:`sonae.textfile.read_text_file` of a station file, its errors as :class:`RegistryError`."""
    try:
        return textfile.read_text_file(path)
    except TextFileError as exc:
        raise RegistryError(str(exc)) from None


def load_stations(path: str | Path) -> list[Station]:
    """The stations of a file, :func:`located_stations` without the places."""
    return [station for _, station in located_stations(path)]


def located_stations(path: str | Path) -> list[tuple[str, Station]]:
    """Read stations from a ``.csv`` or ``.geojson``/``.json`` file (optionally compressed; read by
    :func:`sonae.textfile.read_text_file`: UTF-8 or UTF-16/32 with a BOM, gzip or xz).

    CSV: a header row of :class:`Station` field names (``id`` and ``name`` required; every other column
    must be a known field, so a misspelt threshold column cannot be dropped silently). GeoJSON: Point
    features whose properties are those fields (other properties are ignored).

    Raises
    ------
    RegistryError
        Naming the file, the line (CSV) or feature (GeoJSON), and the column or field at fault.

    Returns
    -------
    list of (str, Station)
        Each station with where it was read (``"x.csv line 2"``, ``"x.geojson feature 0"``): the places
        :func:`upsert_stations` names in a refusal.
    """
    path = Path(path)
    text = read_text_file(path)
    stem = path.name[:-3] if path.name.lower().endswith(".gz") else path.name
    if stem.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = reader.fieldnames or []
        except csv.Error as exc:
            raise RegistryError(f"{path.name} line 1: not CSV ({exc})") from None
        for column in ("id", "name"):
            if column not in header:
                raise RegistryError(f"{path.name} line 1: missing column {column!r} (columns: {', '.join(_FIELDS)})")
        for column in header:
            if column not in _FIELDS:
                raise RegistryError(f"{path.name} line 1: unknown column {column!r} (known: {', '.join(_FIELDS)})")
        try:
            return _one_row_each([(where, station_from_mapping(row, where=where))
                                  for where, row in ((f"{path.name} line {i + 2}", row)
                                                     for i, row in enumerate(shaped_rows(reader, source=path.name)))])
        except CsvShapeError as exc:  # a shifted or short row, a column named twice: cells would be dropped
            raise RegistryError(str(exc)) from None
        except csv.Error as exc:  # a field past the csv module's size limit, a NUL, a bad quote
            raise RegistryError(f"{path.name} line {reader.line_num}: not CSV ({exc})") from None
    try:
        doc = loads_unique(text)
    except DuplicateKeyError as exc:  # one rule for outside JSON (sonae.jsonkeys): $.features[i]... names the feature
        raise RegistryError(f"{path.name}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise RegistryError(f"{path.name} line {exc.lineno}: not JSON ({exc.msg}); expected a .csv or a GeoJSON "
                            f"FeatureCollection") from None
    except (ValueError, RecursionError) as exc:  # an integer beyond 4,300 digits; nesting deeper than Python's stack
        raise RegistryError(f"{path.name}: not a GeoJSON FeatureCollection ({str(exc)[:120]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("features"), list):
        raise RegistryError(f"{path.name}: not a GeoJSON FeatureCollection (no \"features\" list)")
    out = []
    for i, feature in enumerate(doc["features"]):
        where = f"{path.name} feature {i}"
        if not isinstance(feature, dict):
            raise RegistryError(f"{where}: not a GeoJSON Feature")
        props = feature.get("properties")
        props = {} if props is None else props
        if not isinstance(props, dict):
            raise RegistryError(f"{where}: properties must be an object")
        props = dict(props)
        geometry = feature.get("geometry") or {}
        if isinstance(geometry, dict) and geometry.get("type") == "Point":
            coords = geometry.get("coordinates")
            if not (isinstance(coords, list) and len(coords) >= 2):
                raise RegistryError(f"{where}: a Point needs [lon, lat] coordinates")
            props.setdefault("lon", coords[0])
            props.setdefault("lat", coords[1])
        out.append((where, station_from_mapping(props, where=where)))
    return _one_row_each(out)


def _one_row_each(located: list[tuple[str, Station]]) -> list[tuple[str, Station]]:
    """``located`` when each station is on one row (feature) of its file; a second one is refused, naming both:
    an upsert would store the last row and count both (found: ``imported 2 stations``, one stored, the first
    row's name and thresholds gone without a word)."""
    first: dict[str, str] = {}
    for where, station in located:
        if station.id in first:
            at = first[station.id].rsplit(" ", 2)
            raise RegistryError(f"{where}: station {station.id!r} again (first {'on' if at[1] == 'line' else 'in'} "
                                f"{at[1]} {at[2]}); one row per station: remove or merge one")
        first[station.id] = where
    return located


_COLUMNS = [f.name for f in fields(Station)]
_UPSERT = (
    f"INSERT INTO stations ({', '.join(_COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))}) "
    f"ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c != "id")
    + ", updated_at = now()"
)


async def upsert_stations(conn: asyncpg.Connection, stations: Iterable[Station], *,
                          places: Mapping[str, str] | None = None) -> int:
    """Insert or update stations, then release their quarantined readings. Returns the count.

    ``places``: where each station was read, by id (``"x.csv line 2"``, :func:`located_stations`), said
    before a refusal as the file's own errors say it.

    Raises
    ------
    RegistryError
        For a station that breaks the registry's rules (:meth:`Station.validate`), or names a municipality this
        deployment does not cover (:func:`ingest.municipalities.uncovered`: the drill town for an exercise
        station only): then the message names every such station (ten at most) by its place, and what to do;
        nothing is written then.
    """
    checked = [s.validate() for s in stations]
    rows = [tuple(asdict(s).values()) for s in checked]
    if not rows:
        return 0
    refused: list[tuple[Station, str]] = []
    for code, exercise in sorted({(s.municipality_code, s.exercise) for s in checked
                                  if s.municipality_code is not None}):
        # the rule of a staff edit (edit_station) and the API's bodies
        if why := await uncovered(conn, code, exercise=exercise):
            refused += [(s, why) for s in checked if (s.municipality_code, s.exercise) == (code, exercise)]
    if refused:
        order = {id(s): i for i, s in enumerate(checked)}  # named in the file's order
        refused.sort(key=lambda pair: order[id(pair[0])])
        raise RegistryError(_refusal(refused, places or {}, given=len(checked)))
    async with conn.transaction():
        await conn.executemany(_UPSERT, rows)
        await release_quarantine(conn, [r[0] for r in rows])
    return len(rows)


def _refusal(refused: Sequence[tuple[Station, str]], places: Mapping[str, str], *, given: int) -> str:
    """The one-line error of :func:`upsert_stations` for stations naming a municipality not covered: the
    first station with its place and the rule, every other one (ten at most) by its place, and what to do
    (found: a re-import of a registry holding stations outside the loaded boundaries was refused naming
    only the first, with no word of the rest, that nothing was written, or how to go on)."""
    def at(station: Station) -> str:
        return f"{places[station.id]}: " if station.id in places else ""

    first, why = refused[0]
    text = f"{at(first)}station {first.id!r}: municipality_code: {why}"
    others = [f"{at(s)}{s.id!r} ({s.municipality_code})" for s, _ in refused[1:]]
    if others:
        text += (f"; so are {len(others)} more: {', '.join(others[:10])}"
                 + (f" and {len(others) - 10} more" if len(others) > 10 else ""))
    return (text + f". Nothing was written (the {given} station(s) are one import): remove or correct these "
            "stations (municipality_code), load the boundaries of their municipalities (`sonae municipalities "
            f"import`), or keep one for drills only with exercise=true and municipality_code {DRILL_TOWN_CODE} (the "
            "drill town, in the list where a service uses it), then import again")


#: a quarantined reading ``q`` as the payload of its dead letter (the quarantine keeps readings, not messages)
_QUARANTINED_PAYLOAD = ("convert_to(json_build_object('station', q.station_id, 'kind', q.kind, 'ts', q.ts, "
                        "'value', q.value, 'exercise', q.exercise, 'seq', q.seq)::text, 'UTF8')")
#: the quarantined readings ``q`` of each (topic, station, exercise) judged ``v`` (``$2…$6``, arrays of one
#: verdict each, :func:`release_quarantine`) taken out and kept as dead letters of the verdict's reason
_QUARANTINE_REFUSED = f"""
WITH moved AS (
    DELETE FROM quarantined_readings q
    USING unnest($2::text[], $3::text[], $4::bool[], $5::text[], $6::text[]) AS v(topic, station_id, exercise, reason,
                                                                                  detail)
    WHERE q.station_id = ANY($1::text[]) AND q.topic = v.topic AND q.station_id = v.station_id
      AND q.exercise = v.exercise
    RETURNING q.topic, {_QUARANTINED_PAYLOAD} AS payload, v.reason, v.detail)
INSERT INTO dead_letters AS d (topic, payload, payload_length, payload_sha256, message_key, reason, detail, deliveries)
SELECT topic, payload, octet_length(payload), sha256(payload),
       sha256(convert_to(topic, 'UTF8') || '\\x00'::bytea || payload), reason, detail, 1
FROM moved
ON CONFLICT (message_key, reason) DO UPDATE SET deliveries = d.deliveries + EXCLUDED.deliveries, last_received_at = now()
"""
#: the quarantined readings ``q`` judged placed (``$2…$4``: topic, station, exercise) whose time already holds
#: another value in ``readings``: kept as dead letters ``conflicting_value``, as ingest keeps them
_QUARANTINE_CONFLICTS = f"""
WITH moved AS (
    DELETE FROM quarantined_readings q
    USING unnest($2::text[], $3::text[], $4::bool[]) AS v(topic, station_id, exercise), readings r
    WHERE q.station_id = ANY($1::text[]) AND q.topic = v.topic AND q.station_id = v.station_id
      AND q.exercise = v.exercise
      AND r.station_id = q.station_id AND r.kind = q.kind AND r.exercise = q.exercise AND r.ts = q.ts
      AND r.value <> q.value
    RETURNING q.topic, {_QUARANTINED_PAYLOAD} AS payload,
              q.station_id || ' ' || q.kind || ' at ' || q.ts || ': ' || q.value || ' differs from the stored '
              || r.value || '; a correction is a staff edit, not a resend' AS detail)
INSERT INTO dead_letters AS d (topic, payload, payload_length, payload_sha256, message_key, reason, detail, deliveries)
SELECT topic, payload, octet_length(payload), sha256(payload),
       sha256(convert_to(topic, 'UTF8') || '\\x00'::bytea || payload), 'conflicting_value', detail, 1
FROM moved
ON CONFLICT (message_key, reason) DO UPDATE SET deliveries = d.deliveries + EXCLUDED.deliveries, last_received_at = now()
"""
#: the quarantined readings judged placed (``$2…$4``) moved into ``readings`` (an identical one: a duplicate, gone)
_QUARANTINE_RELEASED = """
WITH moved AS (
    DELETE FROM quarantined_readings q
    USING unnest($2::text[], $3::text[], $4::bool[]) AS v(topic, station_id, exercise)
    WHERE q.station_id = ANY($1::text[]) AND q.topic = v.topic AND q.station_id = v.station_id
      AND q.exercise = v.exercise
    RETURNING q.station_id, q.kind, q.ts, q.value, q.exercise, q.seq)
INSERT INTO readings (station_id, kind, ts, value, exercise, seq)
SELECT * FROM moved ON CONFLICT DO NOTHING
"""


def quarantined_topic(topic: str) -> Topic:
    """The municipality and sender of a quarantined reading's topic, parsed as ingest parsed it.

    Ingest quarantines only readings of topics :func:`ingest.contract.parse_topic` read under its prefix
    (``{prefix}/{municipality}/{station}/{kind}``), so the topic's last three levels are those it read,
    whatever the prefix was then (a prefix changed since does not strand the quarantine); they are checked
    again by the same parser. Raises :class:`ingest.contract.PayloadError` for a topic that is not one
    (a row written by anything but ingest).
    """
    if topic.count("/") < 3:
        raise PayloadError("bad_topic", f"topic {topic[:200]!r} is not <prefix>/<municipality>/<station>/<kind>")
    return parse_topic(topic, topic.rsplit("/", 3)[0])


async def release_quarantine(conn: asyncpg.Connection, station_ids: Sequence[str]) -> int:
    """Move quarantined readings of now-registered stations into ``readings``; returns how many moved.

    Each reading is judged by the rule ingest applies (:func:`ingest.placement.misplaced`, the one rule), now
    that its station's place is known: from its topic's municipality and sender (:func:`quarantined_topic`)
    and the registry's places of the station and the sender as they are now. A refused one is not released
    but kept as a dead letter of the rule's reason: ``foreign_station`` (relayed by a sender that is no
    gateway, or no longer one), ``wrong_municipality`` (its station or its gateway registered in another
    municipality than the topic's, or in none), ``real_in_drill_town`` (found: a reading relayed by a device
    that lost its gateway role, and one by a gateway moved to another municipality, were released while ingest
    refused the same messages; earlier a real reading quarantined from ``…/079995/bk-new1/level`` was
    released as real). A quarantined row whose topic is not a topic ingest reads is kept as ``bad_topic``.
    One whose time already holds another value in ``readings`` is kept as a dead letter ``conflicting_value``,
    as ingest keeps it (:class:`ingest.store.Conflict`); an identical one is a duplicate and goes. Readings
    quarantined after the judgement (none of a registered station, but for a race) wait for the next release.
    """
    ids = list(station_ids)
    held = await conn.fetch(
        """SELECT DISTINCT q.topic, q.station_id, q.exercise FROM quarantined_readings q
           WHERE q.station_id = ANY($1::text[]) AND EXISTS (SELECT 1 FROM stations s WHERE s.id = q.station_id)""",
        ids)
    if not held:
        return 0
    senders: dict[str, Topic | PayloadError] = {}
    for row in held:
        if row["topic"] not in senders:
            try:
                senders[row["topic"]] = quarantined_topic(row["topic"])
            except PayloadError as exc:
                senders[row["topic"]] = exc
    places = await station_places(conn, sorted({r["station_id"] for r in held} | {
        t.station for t in senders.values() if isinstance(t, Topic)}))
    refused: list[tuple[str, str, bool, str, str]] = []
    placed: list[tuple[str, str, bool]] = []
    for row in held:
        topic, station, exercise = row["topic"], row["station_id"], row["exercise"]
        parsed = senders[topic]
        if isinstance(parsed, PayloadError):
            refused.append((topic, station, exercise, parsed.reason, parsed.detail))
            continue
        verdict = misplaced(station=station, sender=parsed.station, municipality=parsed.municipality,
                            exercise=exercise, places=places)
        if verdict is not None:
            refused.append((topic, station, exercise, *verdict))
        else:
            placed.append((topic, station, exercise))
    if refused:
        await conn.execute(_QUARANTINE_REFUSED, ids, *map(list, zip(*refused, strict=True)))
    if not placed:
        return 0
    columns = [list(c) for c in zip(*placed, strict=True)]
    await conn.execute(_QUARANTINE_CONFLICTS, ids, *columns)
    status = await conn.execute(_QUARANTINE_RELEASED, ids, *columns)
    return int(status.rsplit(" ", 1)[-1])


async def station_places(conn: asyncpg.Connection, ids: Sequence[str]) -> dict[str, Place]:
    """The registry's :class:`ingest.placement.Place` (municipality, kind) of those of ``ids`` it knows."""
    rows = await conn.fetch("SELECT id, municipality_code, kind FROM stations WHERE id = ANY($1::text[])", list(ids))
    return {r["id"]: Place(r["municipality_code"], r["kind"]) for r in rows}


async def known_station_ids(conn: asyncpg.Connection, ids: Sequence[str]) -> set[str]:
    rows = await conn.fetch("SELECT id FROM stations WHERE id = ANY($1::text[])", list(ids))
    return {r["id"] for r in rows}


async def get_station(conn: asyncpg.Connection, station_id: str) -> Station | None:
    row = await conn.fetchrow(f"SELECT {', '.join(_COLUMNS)} FROM stations WHERE id = $1", station_id)
    return Station(**dict(row)) if row else None


async def list_stations(conn: asyncpg.Connection) -> list[Station]:
    rows = await conn.fetch(f"SELECT {', '.join(_COLUMNS)} FROM stations ORDER BY id")
    return [Station(**dict(r)) for r in rows]


#: what staff may edit on a registered station (:func:`edit_station`)
EDITABLE = ("name", "name_en", "municipality_code", "exercise", *FLOOD_THRESHOLDS, MISSING_RULE)
#: where an edit's error of ``missing_at_or_below`` tells staff to set it (:meth:`Station.validate`)
_EDIT_REPAIR = ("in the same edit (PATCH /api/v1/stations/{id} with \"missing_at_or_below\": null, or the value, "
                "m; a station file's column missing_at_or_below)")


async def edit_station(conn: asyncpg.Connection, station_id: str,
                       changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Change some :data:`EDITABLE` fields of one registered station, as a registry import would.

    ``changes`` maps field names to new values, already checked one by one (a name, an English name or None,
    a 6-digit 団体コード, a bool, thresholds in metres on the station's datum). The station after the change
    must pass the registry's own load rules (:meth:`Station.validate`: thresholds finite and rising
    水防団待機 ≤ 氾濫注意 ≤ 避難判断 ≤ 氾濫危険, a municipality code, the names it sets without hidden characters), and
    more for an edit:

    * **thresholds**: an edit that sets any of them leaves all four set (a 洪水予報 gauge's ladder is the four
      stages; none is removed here), and only on a ``flood_forecast`` gauge;
    * **the 欠測 sentinel** ``missing_at_or_below`` (m, or None: no sentinel, :data:`MISSING_RULE`): every
      threshold of the edited station lies above it, whatever its ladder;
    * **the stages' rules apply to an edit that sets a stage** (a threshold or the sentinel): one that sets none
      (a rename, a move, an exercise switch) is not refused for the stages as stored, as a stored name is not
      refused for an edit of other fields (found: a station kept from before the sentinel, thresholds
      −1.0/−0.5/−0.2/0.0 m under the sentinel 0.0 m given by migration 076, could not be renamed or switched to
      exercise, and the sentinel was not editable). Its stages are repaired by an edit that sets them: the
      error names the threshold at fault and says to give ``missing_at_or_below`` null (or a value below every
      threshold) in the same edit;
    * **municipality**: one of the municipality list (table ``municipalities``) when the deployment has one;
    * **a rename** (``name`` changed) without ``name_en`` clears the English name (and the reading,
      ``kana``): they named the station by its old name, and alert texts fall back to the new Japanese name
      (``alerting.cap._place_en``) rather than show another station's;
    * **an exercise switch** keeps ``exercise_time_scale``: it applies while the station is an exercise
      station, so switched back its drills run on their scenario's clock again.

    The station is updated in one statement, so the ``stations`` trigger announces it (NOTIFY ``names``,
    migration ``025_names_changed``) and the rules worker follows it as it follows an import
    (``alerting.worker.RulesWorker.follow_registry``); nothing is written when nothing changes.

    Returns ``(before, after)``: the fields that changed, old and new values (both empty when nothing
    changed); None when no station has the id. Call in a transaction.

    Raises
    ------
    RegistryError
        The edited station breaks one of the rules above; the message names the field and the rule.
    """
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise RegistryError(f"station {station_id!r}: {', '.join(sorted(unknown))} cannot be edited here")
    row = await conn.fetchrow("SELECT * FROM stations WHERE id = $1 FOR UPDATE", station_id)
    if row is None:
        return None
    where = f"station {station_id!r}"
    given = [f for f in FLOOD_THRESHOLDS if f in changes]
    if given and row["gauge_type"] != "flood_forecast":
        raise RegistryError(f"{where} is a gauge_type {row['gauge_type']} gauge: its ladder is not the four 洪水予報 "
                            "thresholds; change its thresholds by a registry import")
    updates = dict(changes)
    if given:
        missing = [f for f in FLOOD_THRESHOLDS if updates.get(f, row[f]) is None]
        if missing:
            raise RegistryError(f"{where}: {', '.join(missing)} would be missing: a 洪水予報 gauge's thresholds are "
                                "the four stages 水防団待機 ≤ 氾濫注意 ≤ 避難判断 ≤ 氾濫危険 水位; give a number of "
                                "metres for each")
    if "name" in changes and changes["name"] != row["name"]:
        updates.setdefault("name_en", None)
        updates["kana"] = None
    # the texts the edit sets are checked; a stored text it leaves (one from before the name rule, or written
    # by SQL) is not the edit's: refusing it blocked an exercise switch or new thresholds during an event
    edited = replace(Station(**{c: row[c] for c in _COLUMNS}), **updates).validate(
        texts=[t for t in SHOWN_TEXTS if t in changes], levels=any(f in changes for f in (*THRESHOLD_FIELDS,
                                                                                          MISSING_RULE)),
        repair=_EDIT_REPAIR.replace("{id}", station_id))
    updates = {k: getattr(edited, k) for k in updates}
    # a move, or an exercise switch: the drill town is for exercise stations only (uncovered)
    moved = edited.municipality_code != row["municipality_code"] or (
        edited.municipality_code == DRILL_TOWN_CODE and edited.exercise != row["exercise"])
    if moved and edited.municipality_code is not None and (
            why := await uncovered(conn, edited.municipality_code, exercise=edited.exercise)):
        raise RegistryError(f"{where}: {why}")
    changed = {k: v for k, v in updates.items() if row[k] != v}
    if changed:
        columns = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(changed))  # names of Station's fields only
        await conn.execute(f"UPDATE stations SET {columns}, updated_at = now() WHERE id = $1",
                           station_id, *changed.values())
    return {k: row[k] for k in changed}, changed
