"""Shelters and hazard areas in the database (tables in ``evac/migrations``).

The database is the source of truth; every API process holds an engine built from these rows. Each
change runs in a transaction that ends with ``pg_notify('sonae_evac', {"kind": ..., "id": ...})``, so
every process reloads when (and only when) the change commits.

Every change takes ``actor`` (who made it), recorded in the row. Who may make which change (staff
roles, municipality scoping) is decided by the API before calling these functions.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import shapely
from shapely.geometry import mapping, shape

from evac.hazardmaps import read_hazard_map, routing_severity
from evac.hazards import HAZARD_TYPES, HazardArea, check_hazard, load_hazard_geojson
from evac.shelters import Shelter, load_shelters, merge_sites
from sonae.exacttext import EXACT_RULE, loose_end
from sonae.geojson import AREA_TYPES, GeometryError, check_shape, shape_of
from sonae.municipality_code import (
    DRILL_TOWN_CODE,
    DRILL_TOWN_NAMES,
    MunicipalityCodeError,
    normalise,
    normalise_optional,
)

NOTIFY_CHANNEL = "sonae_evac"

#: Columns of a shelter row, in the order :func:`shelters_csv_header` writes them.
SHELTER_COLUMNS = ("id", "name", "address", "lat", "lon", "municipality_code", "hazards", "capacity", "occupancy",
                   "is_open", "source", "updated_at")


class StoreError(ValueError):
    """A change that cannot be made (unknown id, invalid geometry, bad value); the message says why."""


async def notify(conn: asyncpg.Connection, kind: str, object_id: str | None, **extra: Any) -> None:
    """Tell every process that something changed (delivered when the transaction commits)."""
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL,
                       json.dumps({"kind": kind, "id": object_id, **extra}, ensure_ascii=False))


def _actor(actor: str) -> str:
    if not actor or not actor.strip():
        raise StoreError("a change needs the name of who makes it (actor)")
    return actor.strip()


# -- shelters ------------------------------------------------------------------------------------
def _check_shelter(s: Shelter) -> None:
    if not s.id:
        raise StoreError("a shelter needs an id")
    if not (-90 <= s.lat <= 90 and -180 <= s.lon <= 180) or not (math.isfinite(s.lat) and math.isfinite(s.lon)):
        raise StoreError(f"shelter {s.id}: position out of range")
    bad = set(s.hazards) - set(HAZARD_TYPES)
    if bad:
        raise StoreError(f"shelter {s.id}: unknown hazard(s) {', '.join(sorted(bad))}")
    if s.capacity is not None and s.capacity < 0:
        raise StoreError(f"shelter {s.id}: capacity must be 0 or more")
    if s.occupancy < 0:
        raise StoreError(f"shelter {s.id}: occupancy must be 0 or more")


async def import_shelters(
    conn: asyncpg.Connection, shelters: Iterable[Shelter], *, actor: str, source: str = "import"
) -> int:
    """Insert or update shelters by id; returns how many were written.

    A re-import updates what the file knows (name, address, position, municipality, hazards, and the
    capacity when the file has one) but keeps the live state staff set: occupancy and open/closed.
    """
    who = _actor(actor)
    rows = []
    for s in shelters:
        _check_shelter(s)
        rows.append((s.id, s.name, s.address, float(s.lat), float(s.lon), s.municipality_code,
                     sorted(s.hazards), s.capacity, int(s.occupancy), bool(s.is_open), source, who,
                     sorted(s.designations)))
    if not rows:
        return 0
    async with conn.transaction():
        await conn.executemany(
            """INSERT INTO shelters (id, name, address, lat, lon, municipality_code, hazards, capacity, occupancy,
                                     is_open, source, updated_by, designations)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
               ON CONFLICT (id) DO UPDATE SET
                   name = EXCLUDED.name, address = EXCLUDED.address, lat = EXCLUDED.lat, lon = EXCLUDED.lon,
                   municipality_code = EXCLUDED.municipality_code, hazards = EXCLUDED.hazards,
                   capacity = coalesce(EXCLUDED.capacity, shelters.capacity), source = EXCLUDED.source,
                   designations = EXCLUDED.designations,
                   updated_by = EXCLUDED.updated_by, updated_at = now()""", rows)
        await notify(conn, "shelters", None, count=len(rows))
    return len(rows)


async def import_shelters_file(
    conn: asyncpg.Connection, path: Path | str, *, actor: str, source: str = "import",
    default_hazards: Iterable[str] = (),
) -> int:
    """Import a GSI/generic GeoJSON or CSV file of shelters (see :func:`evac.shelters.load_shelters`)."""
    return len(await import_shelter_files(conn, [path], actor=actor, source=source,
                                          default_hazards=default_hazards))


async def import_shelter_files(
    conn: asyncpg.Connection, paths: Iterable[Path | str], *, actor: str, source: str = "import",
    default_hazards: Iterable[str] = (),
) -> list[Shelter]:
    """Import several shelter files as one set of sites (:func:`evac.shelters.merge_sites`): a site in
    GSI's 指定緊急避難場所 and 指定避難所 files becomes one shelter with the hazard flags of the first and
    both designations. Returns the shelters written; raises :class:`StoreError` naming a bad file."""
    files = []
    for path in paths:
        try:
            files.append(load_shelters(path, default_hazards=default_hazards))
        except (OSError, KeyError, TypeError, ValueError) as exc:
            said, name = str(exc), Path(path).name
            raise StoreError(said if said.startswith(f"{name} line ") else f"{name}: {said}") from None
    shelters = merge_sites(*files)
    await import_shelters(conn, shelters, actor=actor, source=source)
    return shelters


async def set_shelter_state(
    conn: asyncpg.Connection, shelter_id: str, *, actor: str, occupancy: int | None = None,
    is_open: bool | None = None, capacity: int | None = None,
) -> dict[str, Any]:
    """Change a shelter's live state (occupancy, open/closed, capacity); returns the row."""
    who = _actor(actor)
    if occupancy is None and is_open is None and capacity is None:
        raise StoreError("nothing to change: give occupancy, is_open or capacity")
    if occupancy is not None and occupancy < 0:
        raise StoreError("occupancy must be 0 or more")
    if capacity is not None and capacity < 0:
        raise StoreError("capacity must be 0 or more")
    async with conn.transaction():
        row = await conn.fetchrow(
            """UPDATE shelters SET occupancy = coalesce($2, occupancy), is_open = coalesce($3, is_open),
                   capacity = coalesce($4, capacity), updated_by = $5, updated_at = now()
               WHERE id = $1 RETURNING *""", shelter_id, occupancy, is_open, capacity, who)
        if row is None:
            raise StoreError(f"no shelter {shelter_id!r}")
        await notify(conn, "shelter", shelter_id)
    return dict(row)


async def name_drill_town(conn: asyncpg.Connection) -> None:
    """Add the drill town to the ``municipalities`` table when it is missing (its names:
    ``sonae.municipality_code.DRILL_TOWN_NAMES``), so that wherever a municipality's name is joined to its
    code (alerts, orders, CAP, push, the pages) it is named as a real one is. Only a service that uses the
    drill town adds it (a real deployment's lists never show it); names an operator gave it are kept."""
    await conn.execute("""INSERT INTO municipalities (code, name_ja, name_en, prefecture, name_kana)
                          VALUES ($1, $2, $3, '訓練', $4) ON CONFLICT (code) DO NOTHING""",
                       DRILL_TOWN_CODE, DRILL_TOWN_NAMES["ja-JP"], DRILL_TOWN_NAMES["en-US"], DRILL_TOWN_NAMES["kana"])


async def count_shelters(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM shelters"))


async def shelter_rows(
    conn: asyncpg.Connection, *, municipality: str | None = None, hazard: str | None = None,
    bbox: tuple[float, float, float, float] | None = None, name: str | None = None, limit: int | None = None,
) -> list[dict[str, Any]]:
    """Shelter rows, optionally filtered; ordered by id, or as below when ``limit`` is given.

    Parameters
    ----------
    municipality, hazard
        Only shelters of this 団体コード / rated for this hazard.
    bbox
        ``(west, south, east, north)`` in degrees: only shelters inside (edges included). With ``limit``,
        the ones nearest the box's centre come first (distance on an equirectangular projection).
    name
        Only shelters whose name or address contains these words (case-insensitive, ``%``/``_`` literal);
        names starting with them come first, then shorter names.
    limit
        At most this many rows.
    """
    west, south, east, north = bbox if bbox is not None else (None, None, None, None)
    pattern = None
    if name:
        pattern = "%" + name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    if limit is not None and name:
        order = "(name ILIKE substr($7, 2)) DESC, length(name), id"
    elif limit is not None and bbox is not None:
        order = ("power(lat - ($4 + $6) / 2, 2) + power((lon - ($3 + $5) / 2) * cos(radians(($4 + $6) / 2)), 2), id")
    else:
        order = "id"
    rows = await conn.fetch(
        f"""SELECT * FROM shelters
           WHERE ($1::text IS NULL OR municipality_code = $1) AND ($2::text IS NULL OR $2 = ANY (hazards))
             AND ($3::float8 IS NULL OR lon BETWEEN $3 AND $5) AND ($4::float8 IS NULL OR lat BETWEEN $4 AND $6)
             AND ($7::text IS NULL OR name ILIKE $7 OR address ILIKE $7)
           ORDER BY {order} LIMIT $8""",
        municipality, hazard, west, south, east, north, pattern, limit)
    return [dict(r) for r in rows]


def shelter_from_row(row: Mapping[str, Any]) -> Shelter:
    return Shelter(id=row["id"], name=row["name"], address=row["address"], lat=float(row["lat"]),
                   lon=float(row["lon"]), hazards=frozenset(row["hazards"] or ()),
                   municipality_code=row["municipality_code"], capacity=row["capacity"],
                   occupancy=int(row["occupancy"]), is_open=bool(row["is_open"]),
                   designations=frozenset(row.get("designations") or ()))


async def list_shelters(conn: asyncpg.Connection) -> list[Shelter]:
    return [shelter_from_row(r) for r in await shelter_rows(conn)]


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat().replace("+00:00", "Z") if ts else None


def shelter_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A shelter row as open-data JSON (the resident-facing fields plus source and update time)."""
    d = shelter_from_row(row).to_dict()
    d.update({"source": row["source"], "updated_at": _iso(row["updated_at"])})
    return d


def shelter_feature(row: Mapping[str, Any]) -> dict[str, Any]:
    """A shelter row as an open-data GeoJSON Feature."""
    props = shelter_json(row)
    lat, lon = props.pop("lat"), props.pop("lon")
    return {"type": "Feature", "id": row["id"], "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": props}


def shelter_csv_row(row: Mapping[str, Any]) -> list[Any]:
    """A shelter row as CSV cells (columns :data:`SHELTER_COLUMNS`; hazards joined with ``;``).

    The CSV can be imported again with :func:`import_shelters_file`.
    """
    cells: list[Any] = []
    for col in SHELTER_COLUMNS:
        v = row[col]
        if col == "hazards":
            v = ";".join(sorted(v or ()))
        elif col == "updated_at":
            v = _iso(v)
        elif col == "is_open":
            v = "true" if v else "false"
        cells.append("" if v is None else v)
    return cells


# -- hazard areas -----------------------------------------------------------------------------------
def _check_area(area: HazardArea) -> None:
    try:
        check_shape(area.geometry, areas_only=True)
    except GeometryError as exc:
        raise StoreError(f"hazard area {area.id}: {exc}") from None


def hazard_area(
    *, hazard: str, geometry: Mapping[str, Any] | shapely.Geometry, id: str | None = None,
    severity: str = "blocked", penalty_factor: float = 1.0, source: str = "staff", station_id: str | None = None,
    activation_level: int | None = None, active: bool = True, exercise: bool = False, label: str = "",
) -> HazardArea:
    """Build (and validate) a :class:`HazardArea` from API-style values; raises :class:`StoreError`."""
    new_id = id or f"{source}-{uuid.uuid4().hex[:12]}"
    try:
        geom = geometry if isinstance(geometry, shapely.Geometry) else shape_of(geometry)
        if geom.geom_type not in AREA_TYPES:  # before an id is named: a refused area never gets one
            raise StoreError(f"geometry type {geom.geom_type} is not accepted for a hazard area: give a "
                             f"{' or '.join(AREA_TYPES)}")
        area = HazardArea(id=new_id, hazard=hazard, geometry=geom,
                          severity=severity,  # type: ignore[arg-type]
                          penalty_factor=float(penalty_factor), source=source,  # type: ignore[arg-type]
                          station_id=station_id, activation_level=activation_level, active=active,
                          exercise=exercise, label=label)
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.ShapelyError) as exc:
        # ShapelyError: also GeometryTypeError ({"type": "AAA"}), which is no ValueError. An id made up here
        # was never stored: the message does not name it
        raise StoreError(str(exc) if id else str(exc).replace(f"hazard area {new_id}: ", "")) from None
    if source not in ("gauge", "staff", "import"):
        raise StoreError("source must be gauge, staff or import")
    _check_area(area)
    return area


_AREA_UPSERT = """
    INSERT INTO hazard_areas (id, hazard, geometry, severity, penalty_factor, source, station_id, activation_level,
                              active, exercise, label, municipality_code, created_by, updated_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
    ON CONFLICT (id) DO UPDATE SET
        hazard = EXCLUDED.hazard, geometry = EXCLUDED.geometry, severity = EXCLUDED.severity,
        penalty_factor = EXCLUDED.penalty_factor, source = EXCLUDED.source, station_id = EXCLUDED.station_id,
        activation_level = EXCLUDED.activation_level, active = EXCLUDED.active, exercise = EXCLUDED.exercise,
        label = EXCLUDED.label, municipality_code = EXCLUDED.municipality_code,
        updated_by = EXCLUDED.updated_by, updated_at = now(), removed_by = NULL, removed_at = NULL
"""


def _code(municipality_code: str | None) -> str | None:
    try:
        return normalise_optional(municipality_code)
    except MunicipalityCodeError as exc:
        raise StoreError(str(exc)) from None


def _area_args(area: HazardArea, who: str, municipality_code: str | None) -> tuple[Any, ...]:
    municipality_code = _code(municipality_code)
    return (area.id, area.hazard, json.dumps(mapping(area.geometry)), area.severity, float(area.penalty_factor),
            area.source, area.station_id, area.activation_level, bool(area.active), bool(area.exercise),
            area.label, municipality_code, who)


async def add_hazard_area(
    conn: asyncpg.Connection, area: HazardArea, *, actor: str, municipality_code: str | None = None
) -> str:
    """Add a hazard area (or replace the one with its id, bringing it back if removed); returns the id."""
    who = _actor(actor)
    _check_area(area)
    async with conn.transaction():
        await conn.execute(_AREA_UPSERT, *_area_args(area, who, municipality_code))
        await notify(conn, "hazard_area", area.id)
    return area.id


async def import_hazard_areas(
    conn: asyncpg.Connection, areas: Iterable[HazardArea], *, actor: str, municipality_code: str | None = None
) -> int:
    """Add or replace many hazard areas in one transaction and one notification."""
    who = _actor(actor)
    args = []
    for a in areas:
        _check_area(a)
        args.append(_area_args(a, who, municipality_code))
    if not args:
        return 0
    async with conn.transaction():
        await conn.executemany(_AREA_UPSERT, args)
        await notify(conn, "hazard_areas", None, count=len(args))
    return len(args)


async def import_hazard_file(
    conn: asyncpg.Connection, path: Path | str, *, actor: str, hazard: str | None = None, exercise: bool = False,
    municipality_code: str | None = None, title: str | None = None, link: MapLink | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Import a hazard-area file; returns how many areas were written.

    A PLATEAU or 国土数値情報 hazard map (GeoJSON or ``.shp``, see :mod:`evac.hazardmaps`) becomes a
    :func:`hazard map <import_hazard_map>` whose areas are in force only while its ``link`` is; any other
    GeoJSON is Sonae's own format (:func:`evac.hazards.load_hazard_geojson`), in force as it says.
    """
    p = Path(path)
    if p.suffix.lower() == ".shp" or is_national_file(p):
        result = await import_hazard_map(conn, p, actor=actor, hazard=hazard, title=title, link=link,
                                         municipality_code=municipality_code, progress=progress)
        return int(result["areas"])
    if link is not None:
        raise StoreError(f"{p.name}: only hazard maps in the national formats (PLATEAU, 国土数値情報) can be "
                         "linked; Sonae's own GeoJSON gives station_id/activation_level per feature")
    try:
        areas = load_hazard_geojson(p, hazard=hazard, exercise=exercise, id_prefix=p.stem)
    except (OSError, KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException) as exc:
        raise StoreError(f"{p.name}: {exc}") from None
    return await import_hazard_areas(conn, areas, actor=actor, municipality_code=municipality_code)


# -- hazard maps (national formats) and their links ---------------------------------------------------
LINK_KINDS = ("gauge", "river", "jma_area")


@dataclass(frozen=True)
class MapLink:
    """What puts a hazard map in force: a gauge, a river (any of its gauges) or a JMA warning area.

    ``kind`` gauge | river | jma_area; ``ref`` the station id, river name or municipality code (団体コード);
    ``at_level`` the 警戒レベル (1–5) from which the map is in force; ``phenomenon`` for jma_area (e.g.
    ``flood``, ``landslide``: which official warning).
    """

    kind: str
    ref: str
    at_level: int
    phenomenon: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in LINK_KINDS:
            raise StoreError(f"link kind {self.kind!r}: use gauge:ID, river:NAME or jma_area:CODE")
        if not self.ref.strip():
            raise StoreError(f"link {self.kind}: needs what it links to, e.g. {self.kind}:ID")
        if not 1 <= int(self.at_level) <= 5:
            raise StoreError("the level a map comes into force at must be a 警戒レベル from 1 to 5")
        if self.kind == "jma_area":  # keyed by the 6-digit code, as official information is stored
            try:
                object.__setattr__(self, "ref", normalise(self.ref))
            except MunicipalityCodeError as exc:
                raise StoreError(f"jma_area link: {exc}") from None

    @classmethod
    def parse(cls, text: str, *, at_level: int, phenomenon: str | None = None) -> MapLink:
        """``"gauge:ID"`` / ``"river:NAME"`` / ``"jma_area:CODE"`` -> a link."""
        kind, sep, ref = text.partition(":")
        if not sep:
            raise StoreError(f"link {text!r}: write KIND:REF, e.g. gauge:ID, river:NAME or jma_area:CODE")
        return cls.given(kind, ref, at_level=at_level, phenomenon=phenomenon)

    @classmethod
    def given(cls, kind: str, ref: str, *, at_level: int, phenomenon: str | None = None) -> MapLink:
        """A link as someone gives it (the command line's ``--link``, the API's body): each part taken exactly,
        refused (:data:`sonae.exacttext.EXACT_RULE`) with a blank, line break or other control character around it
        (found: :meth:`parse` trimmed ``"gauge: G1\\n"`` to gauge ``G1``). Links read back from the database are
        built directly: one stored before the rule still loads."""
        for part, value in (("kind", kind), ("reference", ref), ("phenomenon", phenomenon or "")):
            if loose := loose_end(value):
                raise StoreError(f"link {kind.strip()}:{ref!r}: the {part} has {loose}: {EXACT_RULE}")
        return cls(kind=kind, ref=ref, at_level=at_level, phenomenon=phenomenon)

    def for_map(self, hazard: str) -> MapLink:
        """This link for a map of ``hazard``: a ``jma_area`` link without a phenomenon takes the map's
        hazard, so two maps of one municipality (flood, landslide) never share a level key."""
        if self.kind == "jma_area" and not (self.phenomenon or "").strip():
            return MapLink(self.kind, self.ref, self.at_level, hazard)
        return self

    @property
    def level_key(self) -> str:
        """The key the evac service looks the link's current level up by (see the migration)."""
        if self.kind == "gauge":
            return self.ref
        if self.kind == "river":
            return f"river:{self.ref}"
        return f"jma_area:{self.ref}:{self.phenomenon or ''}"


def is_national_file(path: Path) -> bool:
    """Whether a GeoJSON file's first feature has PLATEAU / 国土数値情報 attributes (cheap peek)."""
    try:
        with path.open("rb") as f:
            head = f.read(65536).decode("utf-8", errors="ignore")
    except OSError:
        return False
    return any(k in head for k in ('"浸水ランク"', '"区域区分"', '"現象の種類"', '"A31_', '"A33_', '"A40_',
                                   '"A49_', '"A51_'))


async def import_hazard_map(
    conn: asyncpg.Connection, path: Path | str, *, actor: str, hazard: str | None = None, title: str | None = None,
    link: MapLink | None = None, municipality_code: str | None = None,
    progress: Callable[[int, int], None] | None = None, batch: int = 200,
) -> dict[str, Any]:
    """Import a PLATEAU / 国土数値情報 hazard map as one map (id: the file's stem) and its areas.

    Re-importing the same file replaces its areas and keeps its link. ``progress(done, total)`` is called
    after each batch of areas. Returns the map row plus ``areas``, ``repaired`` (invalid polygons made
    valid, never simplified) and ``dropped`` (polygons with no area left once made valid, such as a ring
    whose points lie on one line: not stored, as the engine could not use them). Raises
    :class:`StoreError` for an unreadable file.
    """
    who = _actor(actor)
    p = Path(path)
    try:
        info, areas = read_hazard_map(p, hazard=hazard, title=title)
        check_hazard(info.hazard)
    except (OSError, ValueError) as exc:
        raise StoreError(f"{p.name}: {exc}") from None
    map_id = p.name.split(".")[0]
    written = repaired = dropped = 0
    async with conn.transaction():
        old = await conn.fetchrow("SELECT * FROM hazard_maps WHERE id = $1", map_id)
        if link is None and old is not None and old["link_kind"] is not None:
            link = MapLink(old["link_kind"], old["link_ref"], old["at_level"], old["link_phenomenon"])
        if link is not None:
            link = link.for_map(info.hazard)
        await conn.execute(
            """INSERT INTO hazard_maps (id, title, hazard, format, source_file, attribution, features, link_kind,
                                        link_ref, link_phenomenon, at_level, municipality_code, created_by,
                                        updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
               ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, hazard = EXCLUDED.hazard,
                   format = EXCLUDED.format, source_file = EXCLUDED.source_file, attribution = EXCLUDED.attribution,
                   features = EXCLUDED.features, link_kind = EXCLUDED.link_kind, link_ref = EXCLUDED.link_ref,
                   link_phenomenon = EXCLUDED.link_phenomenon, at_level = EXCLUDED.at_level,
                   municipality_code = EXCLUDED.municipality_code, updated_by = EXCLUDED.updated_by,
                   updated_at = now()""",
            map_id, info.title, info.hazard, info.format, p.name, info.attribution, info.features,
            link.kind if link else None, link.ref if link else None, link.phenomenon if link else None,
            link.at_level if link else None, municipality_code, who)
        await conn.execute("DELETE FROM hazard_areas WHERE map_id = $1", map_id)
        rows: list[tuple[Any, ...]] = []

        async def flush() -> None:
            nonlocal written
            await conn.executemany(_MAP_AREA_INSERT, rows)
            written += len(rows)
            rows.clear()
            if progress is not None:
                progress(written, info.features)

        try:
            for i, a in enumerate(areas):
                if a.geometry.is_empty:
                    dropped += 1
                    continue
                severity, factor = routing_severity(info.hazard, a)
                repaired += a.repaired
                rows.append((f"{map_id}-{i}", info.hazard, json.dumps(mapping(a.geometry)), severity, factor,
                             "gauge" if link else "import", link.level_key if link else None,
                             link.at_level if link else None, link is not None, a.label, municipality_code, who,
                             map_id, a.depth_rank, a.depth_min_m, a.depth_max_m, a.zone_class, a.phenomenon,
                             json.dumps(a.attributes, ensure_ascii=False)))
                if len(rows) >= batch:
                    await flush()
        except ValueError as exc:
            raise StoreError(f"{p.name}: {exc}") from None
        if rows:
            await flush()
        await notify(conn, "hazard_map", map_id, count=written)
    return {**dict(await conn.fetchrow("SELECT * FROM hazard_maps WHERE id = $1", map_id)),
            "areas": written, "repaired": repaired, "dropped": dropped}


_MAP_AREA_INSERT = """
    INSERT INTO hazard_areas (id, hazard, geometry, severity, penalty_factor, source, station_id, activation_level,
                              active, label, municipality_code, created_by, updated_by, map_id, depth_rank,
                              depth_min_m, depth_max_m, zone_class, phenomenon, attributes)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12, $13, $14, $15, $16, $17, $18, $19)
"""


async def link_hazard_map(
    conn: asyncpg.Connection, map_id: str, link: MapLink | None, *, actor: str
) -> dict[str, Any]:
    """Link a map to a gauge / river / warning area (``None``: unlink, the map is then never in force).

    The map's areas take the gauge mechanism: in force while the link's level is at least ``at_level``.
    Returns the map row; raises :class:`StoreError` for an unknown map.
    """
    who = _actor(actor)
    async with conn.transaction():
        hazard = await conn.fetchval("SELECT hazard FROM hazard_maps WHERE id = $1", map_id)
        if link is not None and hazard is not None:
            link = link.for_map(hazard)
        row = await conn.fetchrow(
            """UPDATE hazard_maps SET link_kind = $2, link_ref = $3, link_phenomenon = $4, at_level = $5,
                   updated_by = $6, updated_at = now() WHERE id = $1 RETURNING *""",
            map_id, link.kind if link else None, link.ref if link else None, link.phenomenon if link else None,
            link.at_level if link else None, who)
        if row is None:
            raise StoreError(f"no hazard map {map_id!r}: see `sonae hazards maps`")
        await conn.execute(
            """UPDATE hazard_areas SET source = $2, station_id = $3, activation_level = $4, active = $5,
                   updated_by = $6, updated_at = now() WHERE map_id = $1""",
            map_id, "gauge" if link else "import", link.level_key if link else None,
            link.at_level if link else None, link is not None, who)
        await notify(conn, "hazard_map", map_id)
    return dict(row)


async def hazard_map_rows(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Hazard maps with their link and how many areas each has, by id."""
    rows = await conn.fetch(
        """SELECT m.*, (SELECT count(*) FROM hazard_areas a WHERE a.map_id = m.id AND a.removed_at IS NULL)
                  AS areas FROM hazard_maps m ORDER BY m.id""")
    return [dict(r) for r in rows]


def hazard_map_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A hazard map row as JSON for staff (link as ``{"kind", "ref", "at_level", "phenomenon"}`` or null)."""
    link = None if row["link_kind"] is None else {
        "kind": row["link_kind"], "ref": row["link_ref"], "at_level": row["at_level"],
        "phenomenon": row["link_phenomenon"]}
    return {"id": row["id"], "title": row["title"], "hazard": row["hazard"], "format": row["format"],
            "source_file": row["source_file"], "attribution": row["attribution"], "features": row["features"],
            "areas": int(row.get("areas") or 0), "link": link, "municipality_code": row["municipality_code"],
            "updated_by": row["updated_by"], "updated_at": _iso(row["updated_at"])}


async def set_hazard_area_active(conn: asyncpg.Connection, area_id: str, active: bool, *, actor: str) -> None:
    """Put a staff/import area in or out of force (arm or disarm a gauge area)."""
    who = _actor(actor)
    async with conn.transaction():
        done = await conn.fetchval(
            """UPDATE hazard_areas SET active = $2, updated_by = $3, updated_at = now()
               WHERE id = $1 AND removed_at IS NULL RETURNING id""", area_id, active, who)
        if done is None:
            raise StoreError(f"no hazard area {area_id!r}")
        await notify(conn, "hazard_area", area_id)


async def remove_hazard_area(conn: asyncpg.Connection, area_id: str, *, actor: str) -> bool:
    """Remove a hazard area (kept with ``removed_at`` for the record); False if there was none."""
    who = _actor(actor)
    async with conn.transaction():
        done = await conn.fetchval(
            """UPDATE hazard_areas SET removed_by = $2, removed_at = now(), updated_at = now()
               WHERE id = $1 AND removed_at IS NULL RETURNING id""", area_id, who)
        if done is None:
            return False
        await notify(conn, "hazard_area", area_id)
    return True


async def hazard_area_rows(conn: asyncpg.Connection, *, include_removed: bool = False) -> list[dict[str, Any]]:
    """Hazard area rows (geometry parsed), current ones only unless ``include_removed``."""
    rows = await conn.fetch(
        "SELECT * FROM hazard_areas WHERE $1 OR removed_at IS NULL ORDER BY id", include_removed)
    out = []
    for r in rows:
        d = dict(r)
        if isinstance(d["geometry"], str):
            d["geometry"] = json.loads(d["geometry"])
        out.append(d)
    return out


def area_from_row(row: Mapping[str, Any]) -> HazardArea:
    return HazardArea(id=row["id"], hazard=row["hazard"], geometry=shape(row["geometry"]), severity=row["severity"],
                      penalty_factor=float(row["penalty_factor"]), source=row["source"],
                      station_id=row["station_id"], activation_level=row["activation_level"],
                      active=bool(row["active"]), exercise=bool(row["exercise"]), label=row["label"])


async def list_hazard_areas(conn: asyncpg.Connection) -> list[HazardArea]:
    return [area_from_row(r) for r in await hazard_area_rows(conn)]


def hazard_area_feature(row: Mapping[str, Any], *, in_force: bool | None = None) -> dict[str, Any]:
    """A hazard area row as a GeoJSON Feature (who drew it is left out: that is for staff views)."""
    props = {k: row[k] for k in ("id", "hazard", "severity", "penalty_factor", "source", "station_id",
                                 "activation_level", "active", "exercise", "label", "municipality_code")}
    for k in ("map_id", "depth_rank", "depth_min_m", "depth_max_m", "zone_class", "phenomenon"):
        if row.get(k) is not None:
            props[k] = row[k]
    props["created_at"] = _iso(row["created_at"])
    props["updated_at"] = _iso(row["updated_at"])
    if in_force is not None:
        props["in_force"] = in_force
    return {"type": "Feature", "id": row["id"], "geometry": row["geometry"], "properties": props}
