"""The station and device registry: what each gauge is, where, and its thresholds.

Stations are imported from CSV (one row per station, columns named as :class:`Station` fields) or
GeoJSON (Point features whose properties are those fields). Readings that arrived before their
station was registered wait in quarantine and are released into ``readings`` on registration.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import asyncpg

from ingest.contract import STATION_ID
from sonae.municipality_code import MunicipalityCodeError, normalise_optional

THRESHOLD_FIELDS = ("th_standby", "th_caution", "th_evacuation", "th_danger",
                    "th_obs_start", "th_crisis", "th_overflow")


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

    def validate(self) -> Station:
        """The station with its municipality code in the 6-digit form; raises :class:`RegistryError`."""
        where = f"station {self.id!r}"
        if not STATION_ID.match(self.id):
            raise RegistryError(f"{where}: id must match [A-Za-z0-9_.-]{{1,64}}")
        if not self.name:
            raise RegistryError(f"{where}: name is empty")
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
        ordered = [getattr(self, f) for f in ("th_standby", "th_caution", "th_evacuation", "th_danger")]
        present = [v for v in ordered if v is not None]
        if present != sorted(present):
            raise RegistryError(f"{where}: thresholds must rise 水防団待機 ≤ 氾濫注意 ≤ 避難判断 ≤ 氾濫危険")
        crisis = [v for v in (self.th_obs_start, self.th_crisis, self.th_overflow) if v is not None]
        if crisis != sorted(crisis):
            raise RegistryError(f"{where}: thresholds must rise 観測開始 ≤ 危険 ≤ 氾濫開始")
        try:
            code = normalise_optional(self.municipality_code)
        except MunicipalityCodeError as exc:
            raise RegistryError(f"{where}: municipality_code: {exc}") from None
        return self if code == self.municipality_code else replace(self, municipality_code=code)


_FIELDS = {f.name: f for f in fields(Station)}
_FLOATS = {"lat", "lon", *THRESHOLD_FIELDS}


def station_from_mapping(raw: dict[str, Any], *, where: str) -> Station:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in _FIELDS:
            continue
        if value == "" or value is None:
            continue
        try:
            if key in _FLOATS:
                value = float(value)
                if not math.isfinite(value):
                    raise ValueError("not finite")
            elif key == "expected_interval_s":
                value = int(value)
            elif key == "exercise":
                value = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
            else:
                value = str(value)
        except ValueError:
            raise RegistryError(f"{where}: field {key!r} has a bad value {value!r}") from None
        values[key] = value
    if "id" not in values or "name" not in values:
        raise RegistryError(f"{where}: fields 'id' and 'name' are required")
    return Station(**values).validate()


def load_stations(path: str | Path) -> list[Station]:
    """Read stations from a ``.csv`` or ``.geojson``/``.json`` file."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, encoding="utf-8-sig", newline="") as fh:
            return [station_from_mapping(row, where=f"{path.name} line {i + 2}")
                    for i, row in enumerate(csv.DictReader(fh))]
    doc = json.loads(path.read_text(encoding="utf-8"))
    features = doc.get("features", []) if isinstance(doc, dict) else []
    out = []
    for i, feature in enumerate(features):
        props = dict(feature.get("properties") or {})
        geometry = feature.get("geometry") or {}
        if geometry.get("type") == "Point":
            props.setdefault("lon", geometry["coordinates"][0])
            props.setdefault("lat", geometry["coordinates"][1])
        out.append(station_from_mapping(props, where=f"{path.name} feature {i}"))
    return out


_COLUMNS = [f.name for f in fields(Station)]
_UPSERT = (
    f"INSERT INTO stations ({', '.join(_COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))}) "
    f"ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS if c != "id")
    + ", updated_at = now()"
)


async def upsert_stations(conn: asyncpg.Connection, stations: Iterable[Station]) -> int:
    """Insert or update stations, then release their quarantined readings. Returns the count."""
    rows = [tuple(asdict(s.validate()).values()) for s in stations]
    if not rows:
        return 0
    async with conn.transaction():
        await conn.executemany(_UPSERT, rows)
        await release_quarantine(conn, [r[0] for r in rows])
    return len(rows)


async def release_quarantine(conn: asyncpg.Connection, station_ids: Sequence[str]) -> int:
    """Move quarantined readings of now-registered stations into ``readings``."""
    status = await conn.execute(
        """WITH moved AS (
               DELETE FROM quarantined_readings q WHERE q.station_id = ANY($1::text[])
               AND EXISTS (SELECT 1 FROM stations s WHERE s.id = q.station_id)
               RETURNING station_id, kind, ts, value, exercise, seq)
           INSERT INTO readings (station_id, kind, ts, value, exercise, seq)
           SELECT * FROM moved ON CONFLICT DO NOTHING""",
        list(station_ids),
    )
    return int(status.rsplit(" ", 1)[-1])


async def gateway_ids(conn: asyncpg.Connection) -> set[str]:
    """Stations registered as gateways (allowed to report for other stations)."""
    return {r["id"] for r in await conn.fetch("SELECT id FROM stations WHERE kind = 'gateway'")}


async def known_station_ids(conn: asyncpg.Connection, ids: Sequence[str]) -> set[str]:
    rows = await conn.fetch("SELECT id FROM stations WHERE id = ANY($1::text[])", list(ids))
    return {r["id"] for r in rows}


async def get_station(conn: asyncpg.Connection, station_id: str) -> Station | None:
    row = await conn.fetchrow(f"SELECT {', '.join(_COLUMNS)} FROM stations WHERE id = $1", station_id)
    return Station(**dict(row)) if row else None


async def list_stations(conn: asyncpg.Connection) -> list[Station]:
    rows = await conn.fetch(f"SELECT {', '.join(_COLUMNS)} FROM stations ORDER BY id")
    return [Station(**dict(r)) for r in rows]
