"""Municipal boundaries (国土数値情報 N03 行政区域): which municipality a point lies in.

Sonae ships Fukushima Prefecture's 59 municipalities (N03-22, 2022-01-01) as package data,
``ingest/data/n03_fukushima_2022.geojson.xz``, simplified from the full-resolution polygons with
:func:`simplify` at :data:`TOLERANCE_M`: a *coverage* simplification (``shapely.coverage_simplify``), so
a border shared by two municipalities stays one line — no gaps, no overlaps — and a point is in exactly
one municipality. The shipped file moves no border by more than 1.4 m from the full-resolution one
(measured by ``python -m ingest.boundaries``); coordinates keep 6 decimals (≤ 0.06 m).
Attribution (required by the 国土数値情報 利用約款): 「国土数値情報（行政区域データ）」（国土交通省）を加工して作成
(shown in the README and at ``/api/v1/attribution``).

The polygons live in the ``municipality_boundaries`` table (loaded from the package data into an empty
database by :func:`seed_if_empty`; ``sonae municipalities import N03.geojson`` adds other prefectures,
simplified the same way; :func:`import_boundaries` refuses, without ``replace``, an import that would
move loaded borders, :func:`compare_boundaries`). Each process keeps a :class:`BoundaryIndex` in memory
(an STRtree), reloaded by :class:`BoundaryCache` when the table changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import lzma
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import shapely
from shapely import affinity
from shapely.geometry import MultiPolygon, Point, Polygon, mapping
from shapely.geometry.base import BaseGeometry

from sonae.geojson import shape_of
from sonae.jsonkeys import loads_unique
from sonae.municipality_code import MunicipalityCodeError, normalise
from sonae.textfile import TextFileError, read_packaged_text, read_text_file

#: the shipped boundaries (package data)
PACKAGED = "data/n03_fukushima_2022.geojson.xz"
#: the attribution the 国土数値情報 利用約款 requires wherever the boundaries are used
ATTRIBUTION = "「国土数値情報（行政区域データ）」（国土交通省）を加工して作成"
ATTRIBUTION_EN = "Source: MLIT National Land Numerical Information (Administrative Area data), processed by Sonae"
#: coverage-simplification tolerance (Visvalingam–Whyatt, metres in a local projection): 1.0 keeps every
#: border within 1.4 m of the full-resolution N03 line in Fukushima (2.0 would move some by 3.5 m).
TOLERANCE_M = 1.0
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQ = 111_320.0


class BoundaryError(ValueError):
    """Boundary data that cannot be used; the message names the file and feature."""


@dataclass(frozen=True)
class Boundary:
    """One municipality's area: ``geometry`` a (Multi)Polygon in lon/lat (JGD2011 ≈ WGS 84)."""

    code: str
    name: str
    geometry: BaseGeometry


# -- reading N03 -------------------------------------------------------------------------------------

#: largest N03 GeoJSON read, bytes (after decompression): a bound against decompression bombs, well
#: above a prefecture's full-resolution file (Fukushima's, the third largest prefecture: 13 MB)
MAX_N03_BYTES = 1024 * 1024 * 1024


def parse_n03(doc: Any, *, source: str) -> list[tuple[str, str, BaseGeometry]]:
    """(code, name, polygon part) for every feature of an N03 GeoJSON FeatureCollection.

    The code comes from ``lgcode6``, ``code`` or N03's 5-digit ``N03_007`` (normalised to 6 digits); the
    name from ``name`` or N03_003/N03_004. Features without a code (所属未定地) are skipped.

    Raises
    ------
    BoundaryError
        When the document is not a FeatureCollection of polygons or a code is wrong.
    """
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise BoundaryError(f"{source}: not a GeoJSON FeatureCollection")
    out: list[tuple[str, str, BaseGeometry]] = []
    for i, feature in enumerate(doc.get("features") or []):
        props = (feature or {}).get("properties") or {}
        raw = props.get("lgcode6") or props.get("code") or props.get("N03_007")
        if not raw:
            continue
        try:
            code = normalise(str(raw))
        except MunicipalityCodeError as exc:
            raise BoundaryError(f"{source} feature {i}: {exc}") from None
        name = props.get("name") or "".join(str(props.get(k) or "") for k in ("N03_003", "N03_004"))
        try:
            geometry = shape_of(feature["geometry"])  # (GeometryError is a ValueError)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BoundaryError(f"{source} feature {i}: no usable geometry") from None
        parts = list(geometry.geoms) if isinstance(geometry, MultiPolygon) else [geometry]
        for part in parts:
            if not isinstance(part, Polygon):
                raise BoundaryError(f"{source} feature {i}: {part.geom_type} is not a polygon")
            out.append((code, str(name), part))
    if not out:
        raise BoundaryError(f"{source}: no municipality polygons (features need N03_007, lgcode6 or code)")
    return out


def read_n03(path: str | Path) -> list[tuple[str, str, BaseGeometry]]:
    """:func:`parse_n03` of a file (plain, gzip or xz; read by :func:`sonae.textfile.read_text_file`).

    Raises
    ------
    BoundaryError
        Naming the file: unreadable, not text, not JSON, or not N03 polygons.
    """
    path = Path(path)
    try:
        doc = loads_unique(read_text_file(path, max_bytes=MAX_N03_BYTES))
    except TextFileError as exc:
        raise BoundaryError(str(exc)) from None
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise BoundaryError(f"{path.name}: not readable GeoJSON ({str(exc)[:120]})") from None
    return parse_n03(doc, source=path.name)


# -- simplifying -------------------------------------------------------------------------------------

def _projection(geoms: Sequence[BaseGeometry]) -> tuple[float, float]:
    """Metres per degree (lon, lat) of a local equirectangular projection at the data's mid-latitude.

    Over one prefecture (±1° of latitude) its scale differs from the true one by < 2 %, which only
    changes what the tolerance means by as much; distances are measured in the same projection.
    """
    ys = shapely.get_coordinates(np.asarray(geoms, dtype=object))[:, 1]
    lat0 = (float(ys.min()) + float(ys.max())) / 2
    return _M_PER_DEG_LON_EQ * math.cos(math.radians(lat0)), _M_PER_DEG_LAT


def _scale(geoms: Any, kx: float, ky: float) -> Any:
    return shapely.transform(geoms, lambda c: c * np.array([kx, ky]))


@dataclass(frozen=True)
class SimplifyReport:
    vertices_before: int
    vertices_after: int
    max_displacement_m: float


def simplify(parts: Sequence[tuple[str, str, BaseGeometry]], *, tolerance_m: float = TOLERANCE_M,
             measure: bool = False) -> tuple[list[Boundary], SimplifyReport | None]:
    """Coverage-simplify polygon parts and merge them per municipality.

    ``measure`` also computes the largest distance of a full-resolution border vertex from the
    simplified border (metres): the most any border moved.
    """
    geoms = np.asarray([g for _, _, g in parts], dtype=object)
    kx, ky = _projection(list(geoms))
    projected = _scale(geoms, kx, ky)
    simplified = shapely.coverage_simplify(projected, tolerance_m) if tolerance_m > 0 else projected
    simplified = shapely.make_valid(simplified)
    report = None
    if measure:
        worst = 0.0
        for before, after in zip(projected, simplified, strict=True):
            line = shapely.boundary(after)
            shapely.prepare(line)
            points = shapely.points(shapely.get_coordinates(shapely.boundary(before)))
            worst = max(worst, float(shapely.distance(points, line).max()))
        report = SimplifyReport(int(shapely.get_num_coordinates(projected).sum()),
                                int(shapely.get_num_coordinates(simplified).sum()), worst)
    back = _scale(simplified, 1 / kx, 1 / ky)
    grouped: dict[str, list[BaseGeometry]] = {}
    names: dict[str, str] = {}
    for (code, name, _), geometry in zip(parts, back, strict=True):
        polys = [g for g in _polygons(geometry) if not g.is_empty]
        grouped.setdefault(code, []).extend(polys)
        names.setdefault(code, name)
    boundaries = [Boundary(code, names[code], polys[0] if len(polys) == 1 else MultiPolygon(polys))
                  for code, polys in grouped.items() if polys]
    return boundaries, report


def _polygons(geometry: BaseGeometry) -> list[Polygon]:
    """The polygons in a geometry, however nested (make_valid may return a collection)."""
    if isinstance(geometry, Polygon):
        return [geometry]
    return [p for part in getattr(geometry, "geoms", []) for p in _polygons(part)]


_DECIMALS = re.compile(r"(-?\d+\.\d{6})\d+")


def to_geojson(boundaries: Iterable[Boundary]) -> str:
    """An N03-style FeatureCollection (``lgcode6``, ``N03_007``, ``name``), coordinates to 6 decimals."""
    features = [{"type": "Feature", "properties": {"lgcode6": b.code, "N03_007": b.code[:5], "name": b.name},
                 "geometry": mapping(b.geometry)} for b in boundaries]
    text = json.dumps({"type": "FeatureCollection", "attribution": ATTRIBUTION, "features": features},
                      ensure_ascii=False, separators=(",", ":"))
    return _DECIMALS.sub(r"\1", text)


def packaged_boundaries() -> list[Boundary]:
    """The shipped boundaries (already simplified)."""
    parts = parse_n03(json.loads(read_packaged_text("ingest", PACKAGED, max_bytes=MAX_N03_BYTES)), source=PACKAGED)
    grouped: dict[str, list[BaseGeometry]] = {}
    names: dict[str, str] = {}
    for code, name, part in parts:
        grouped.setdefault(code, []).append(part)
        names.setdefault(code, name)
    return [Boundary(c, names[c], p[0] if len(p) == 1 else MultiPolygon(p)) for c, p in grouped.items()]


# -- the in-memory index -----------------------------------------------------------------------------

#: most points :meth:`BoundaryIndex.beyond_m` samples (a continent-wide area would otherwise be sampled
#: every 5 m: minutes of work and gigabytes)
MAX_SAMPLES = 20_000
#: how far a staff-drawn area may reach past its municipality's border (metres): a river on the
#: municipal line floods both banks
BORDER_SLACK_M = 50.0


@dataclass(frozen=True)
class AreaPlacement:
    """Where a drawn area belongs: ``municipality`` (None: outside every boundary), ``beyond_m`` how far
    it reaches past that municipality's border (None: no boundary for it, not checked)."""

    municipality: str | None
    beyond_m: float | None

    @property
    def fits(self) -> bool:
        """Within the municipality, :data:`BORDER_SLACK_M` across its border allowed (or not checkable)."""
        return self.beyond_m is None or self.beyond_m <= BORDER_SLACK_M


class BoundaryIndex:
    """Point-in-polygon over municipal boundaries (an STRtree of prepared polygons)."""

    def __init__(self, boundaries: Iterable[Boundary]) -> None:
        self.boundaries = {b.code: b for b in boundaries}
        self._codes = list(self.boundaries)
        geoms = [self.boundaries[c].geometry for c in self._codes]
        for g in geoms:
            shapely.prepare(g)
        self._tree = shapely.STRtree(geoms)

    def __len__(self) -> int:
        return len(self._codes)

    def municipality_at(self, lat: float, lon: float) -> str | None:
        """The code of the municipality covering (lat, lon), or None outside every boundary."""
        found = self._tree.query(Point(lon, lat), predicate="covered_by")
        return self._codes[int(min(found))] if len(found) else None

    def touching(self, geometry: BaseGeometry) -> list[str]:
        """Codes of the municipalities a lon/lat geometry intersects, sorted."""
        return sorted(self._codes[int(i)] for i in self._tree.query(geometry, predicate="intersects"))

    def touching_circle(self, lat: float, lon: float, radius_m: float) -> list[str]:
        """Codes of the municipalities a circle of ``radius_m`` around (lat, lon) touches."""
        kx = _M_PER_DEG_LON_EQ * math.cos(math.radians(lat))
        circle = affinity.scale(Point(0, 0).buffer(radius_m, quad_segs=16), 1 / kx, 1 / _M_PER_DEG_LAT,
                                        origin=(0, 0))
        return self.touching(affinity.translate(circle, lon, lat))

    def beyond_m(self, code: str, geometry: BaseGeometry) -> float | None:
        """How far (metres) a lon/lat geometry reaches outside municipality ``code``: 0 when inside;
        None when Sonae has no boundary for ``code``. Measured at the outside part's outline, sampled
        every 5 m (equirectangular metres at the geometry's latitude), or at :data:`MAX_SAMPLES` points
        when the outline is longer than that allows (the answer is then low by at most half a step:
        such an area lies kilometres beyond the border either way)."""
        boundary = self.boundaries.get(code)
        if boundary is None:
            return None
        outside = geometry.difference(boundary.geometry)
        if outside.is_empty:
            return 0.0
        kx = _M_PER_DEG_LON_EQ * math.cos(math.radians(geometry.centroid.y))
        municipality = _scale(boundary.geometry, kx, _M_PER_DEG_LAT)
        outline = _scale(outside.boundary if outside.area else outside, kx, _M_PER_DEG_LAT)
        samples = shapely.segmentize(outline, max(5.0, outline.length / MAX_SAMPLES))
        points = shapely.points(shapely.get_coordinates(samples))
        return float(shapely.distance(points, municipality).max())

    def reaching_into(self, geometry: BaseGeometry) -> list[str]:
        """Codes of the municipalities a lon/lat area reaches more than :data:`BORDER_SLACK_M` into, sorted:
        those whose boundary, shrunk by the slack (equirectangular metres at the area's latitude), the area
        meets. For an area drawn for a municipality Sonae has no boundary for (:meth:`beyond_m` None).
        Shapely work of up to a second: call it off an event loop."""
        kx = _M_PER_DEG_LON_EQ * math.cos(math.radians(geometry.centroid.y))
        area = _scale(geometry, kx, _M_PER_DEG_LAT)
        return [code for code in self.touching(geometry)
                if area.intersects(_scale(self.boundaries[code].geometry, kx, _M_PER_DEG_LAT).buffer(-BORDER_SLACK_M))]

    def place_area(self, geometry: BaseGeometry, municipality: str | None) -> AreaPlacement:
        """Where a staff-drawn lon/lat area belongs: the ``municipality`` given, or without one the
        municipality holding its largest part (:meth:`largest_share`), with how far it reaches past that
        border (:meth:`beyond_m`; :attr:`AreaPlacement.fits` applies :data:`BORDER_SLACK_M`). Shapely
        work of up to a second for a large area: call it off an event loop."""
        code = self.largest_share(geometry) if municipality is None else municipality
        return AreaPlacement(code, None if code is None else self.beyond_m(code, geometry))

    def largest_share(self, geometry: BaseGeometry) -> str | None:
        """The municipality holding the largest part of a lon/lat area (None outside every boundary)."""
        best, best_area = None, 0.0
        for code in self.touching(geometry):
            share = geometry.intersection(self.boundaries[code].geometry).area
            if share > best_area:
                best, best_area = code, share
        return best



# -- comparing an import with what is loaded ---------------------------------------------------------

#: the widest strip (metres) between a loaded border and an imported one that still counts as the same
#: border: re-importing the N03 data the shipped boundaries come from (simplified at :data:`TOLERANCE_M`,
#: coordinates to 6 decimals) moves no border by more than 1.4 m; the 1 % simplification of N03-21 in
#: ``shared/data/boundaries`` moves Fukushima's by up to 5.7 km (11.8 km² of 郡山市, 1.6 % of its area).
REPLACE_TOLERANCE_M = 10.0

#: how :func:`compare_boundaries` classes a municipality of an import
ADDED, SAME, MOVED = "added", "same", "moved"


@dataclass(frozen=True)
class BoundaryChange:
    """What importing one municipality's boundary does to the loaded one.

    ``kind``: :data:`ADDED` (none loaded), :data:`SAME` (no strip between the two borders wider than
    :data:`REPLACE_TOLERANCE_M`) or :data:`MOVED`. Areas in km² (local equirectangular metres, < 2 %
    off over a prefecture): ``area_km2`` the imported area, ``moved_km2`` the area that changes
    municipality (symmetric difference with the loaded area; 0 when added). ``vertices_*``: coordinate
    counts of the loaded and the imported geometry (a coarser map has fewer). ``loaded_source``: the file
    (or ``package:…``) the loaded boundary came from.
    """

    code: str
    name: str
    kind: str
    area_km2: float
    moved_km2: float = 0.0
    loaded_km2: float | None = None
    vertices_before: int | None = None
    vertices_after: int = 0
    loaded_source: str | None = None

    @property
    def moved_share(self) -> float:
        """``moved_km2`` as a share (0–1) of the loaded area; 0 when added."""
        return self.moved_km2 / self.loaded_km2 if self.loaded_km2 else 0.0

    def describe(self, *, done: bool = True) -> str:
        """One line, of an import ``done`` or one that would be: ``072036 郡山市: replaced, border moved,
        11.85 km² (1.57 %) changed municipality; 10563 → 174 vertices``."""
        if self.kind == ADDED:
            added = "added" if done else "would be added"
            return f"{self.code} {self.name}: {added} ({self.area_km2:.1f} km², {self.vertices_after} vertices)"
        if done:
            what = "replaced, same border" if self.kind == SAME else "replaced, border moved"
            changed = "changed"
        else:
            what, changed = "border would move" if self.kind == MOVED else "same border", "would change"
        return (f"{self.code} {self.name}: {what}, {self.moved_km2:.2f} km² ({100 * self.moved_share:.2f} %) "
                f"{changed} municipality; {self.vertices_before} → {self.vertices_after} vertices")


def compare_boundaries(loaded: dict[str, tuple[Boundary, str | None]], imported: Sequence[Boundary], *,
                       tolerance_m: float = REPLACE_TOLERANCE_M) -> list[BoundaryChange]:
    """Each imported municipality against its loaded boundary (``loaded``: code → (boundary, source)).

    The rule: a border is :data:`MOVED` when the area between the loaded and the imported border (their
    symmetric difference, in local metres) is anywhere wider than ``tolerance_m`` — it still has points
    after shrinking it by half that (``buffer(-tolerance_m / 2)``): a place more than ``tolerance_m / 2``
    from both borders, where a resident would be placed in another municipality. Slivers along the
    whole border (rounding, a finer or coarser line within the tolerance) are :data:`SAME`. Shapely
    work of about 2 s for Fukushima's 59 municipalities at full resolution: call it off an event loop.
    """
    geoms = [b.geometry for b in imported] + [b.geometry for b, _ in loaded.values()]
    if not geoms:
        return []
    kx, ky = _projection(geoms)
    out = []
    for b in imported:
        new = _scale(b.geometry, kx, ky)
        vertices = int(shapely.get_num_coordinates(b.geometry))
        if b.code not in loaded:
            out.append(BoundaryChange(b.code, b.name, ADDED, new.area / 1e6, vertices_after=vertices))
            continue
        before, source = loaded[b.code]
        old = _scale(before.geometry, kx, ky)
        moved = shapely.symmetric_difference(shapely.make_valid(old), shapely.make_valid(new))
        kind = MOVED if not shapely.buffer(moved, -tolerance_m / 2).is_empty else SAME
        out.append(BoundaryChange(b.code, b.name, kind, new.area / 1e6, moved.area / 1e6, old.area / 1e6,
                                  int(shapely.get_num_coordinates(before.geometry)), vertices, source))
    return out


class BoundaryReplaceRefused(BoundaryError):
    """An import that would move loaded borders (:func:`compare_boundaries`), refused without ``replace``:
    the message names the municipalities, the area that moves and how to proceed; ``changes`` has them all."""

    def __init__(self, source: str, changes: Sequence[BoundaryChange], *, shown: int = 10) -> None:
        self.changes = list(changes)
        moved = sorted((c for c in changes if c.kind == MOVED), key=lambda c: -c.moved_km2)
        before = sum(c.vertices_before or 0 for c in moved)
        after = sum(c.vertices_after for c in moved)
        coarser = (f"; the file is coarser: {after:,} vertices for them instead of the loaded {before:,}"
                   if after < before else "")
        loaded_from = sorted({c.loaded_source or "?" for c in moved})
        lines = [f"{source}: refused, it would move the borders of {len(moved)} of the {len(changes)} "
                 f"municipalities it holds by more than {REPLACE_TOLERANCE_M:g} m "
                 f"({sum(c.moved_km2 for c in moved):.1f} km² would change municipality{coarser}):"]
        lines += [f"  {c.describe(done=False)}" for c in moved[:shown]]
        if len(moved) > shown:
            lines.append(f"  … and {len(moved) - shown} more")
        lines.append(f"Residents near these borders would get another municipality's level and orders. The loaded "
                     f"boundaries come from {', '.join(loaded_from)}. Nothing was imported. If this file is the "
                     "better map (a border really changed, a newer N03 year), run the import again with --replace; "
                     "the shipped boundaries are N03-22 at full resolution, simplified within 1.4 m.")
        super().__init__("\n".join(lines))


async def import_boundaries(conn: asyncpg.Connection, boundaries: Sequence[Boundary], *, source: str,
                            replace: bool = False) -> list[BoundaryChange]:
    """Store ``boundaries`` unless they move loaded borders (:func:`compare_boundaries`) and ``replace`` is
    false. Returns what was done per municipality, in the order given. One transaction: the loaded rows
    are locked while compared, and nothing is stored when refused. Municipalities loaded but not in the
    import are kept.

    Raises
    ------
    BoundaryReplaceRefused
        When a loaded border would move by more than :data:`REPLACE_TOLERANCE_M` and ``replace`` is false.
    """
    async with conn.transaction():
        rows = await conn.fetch("SELECT code, name, geometry::text AS geometry, source FROM municipality_boundaries "
                                "WHERE code = any($1::text[]) FOR UPDATE", [b.code for b in boundaries])
        loaded = {r["code"]: (Boundary(r["code"], r["name"], shapely.from_geojson(r["geometry"])), r["source"])
                  for r in rows}
        changes = await asyncio.to_thread(compare_boundaries, loaded, boundaries)
        if not replace and any(c.kind == MOVED for c in changes):
            raise BoundaryReplaceRefused(source, changes)
        await store_boundaries(conn, boundaries, source=source)
    return changes


# -- the database ------------------------------------------------------------------------------------

async def store_boundaries(conn: asyncpg.Connection, boundaries: Iterable[Boundary], *, source: str) -> int:
    """Insert or replace boundaries by code; returns the count."""
    rows = [(b.code, b.name, json.dumps(mapping(b.geometry)), source) for b in boundaries]
    await conn.executemany(
        """INSERT INTO municipality_boundaries (code, name, geometry, source) VALUES ($1, $2, $3::jsonb, $4)
           ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, geometry = EXCLUDED.geometry,
               source = EXCLUDED.source, updated_at = now()""", rows)
    return len(rows)


async def seed_if_empty(conn: asyncpg.Connection) -> int:
    """Load the shipped boundaries when the table is empty; returns the rows loaded (0: none)."""
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM municipality_boundaries)"):
        return 0
    return await store_boundaries(conn, packaged_boundaries(), source=f"package:{PACKAGED}")


def _index_of(rows: Sequence[Any]) -> BoundaryIndex:
    return BoundaryIndex(Boundary(r["code"], r["name"], shapely.from_geojson(r["geometry"])) for r in rows)


async def load_index(conn: asyncpg.Connection) -> BoundaryIndex:
    """The boundary index of the table; parsing and indexing (~0.5 s for Fukushima) run in a thread."""
    rows = await conn.fetch("SELECT code, name, geometry::text AS geometry FROM municipality_boundaries")
    return await asyncio.to_thread(_index_of, rows)


_VERSION = "SELECT count(*), max(updated_at) FROM municipality_boundaries"


class BoundaryCache:
    """One process's :class:`BoundaryIndex`, reloaded when the table changed (checked every ``check_s``)."""

    def __init__(self, *, check_s: float = 30.0) -> None:
        self.check_s = check_s
        self._index: BoundaryIndex | None = None
        self._version: tuple[Any, ...] | None = None
        self._checked = -math.inf
        self._lock = asyncio.Lock()  # one load at a time; the others wait for it

    async def get(self, conn: asyncpg.Connection) -> BoundaryIndex:
        if self._index is not None and time.monotonic() - self._checked < self.check_s:
            return self._index
        async with self._lock:
            if self._index is None or time.monotonic() - self._checked >= self.check_s:
                version = tuple(await conn.fetchrow(_VERSION))
                if self._index is None or version != self._version:
                    self._index = await load_index(conn)
                    self._version = version
                self._checked = time.monotonic()
        assert self._index is not None
        return self._index


# -- building the package data -----------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ingest.boundaries SRC OUT.geojson.xz``: simplify N03 polygons and report size and accuracy."""
    p = argparse.ArgumentParser(prog="python -m ingest.boundaries", description=main.__doc__)
    p.add_argument("source", help="N03 GeoJSON at full resolution (plain, .gz or .xz)")
    p.add_argument("output", help="where to write the simplified GeoJSON, xz-compressed")
    p.add_argument("--tolerance-m", type=float, default=TOLERANCE_M)
    args = p.parse_args(argv)
    started = time.monotonic()
    parts = read_n03(args.source)
    boundaries, report = simplify(parts, tolerance_m=args.tolerance_m, measure=True)
    assert report is not None
    data = lzma.compress(to_geojson(boundaries).encode("utf-8"), preset=9 | lzma.PRESET_EXTREME)
    Path(args.output).write_bytes(data)
    print(json.dumps({"municipalities": len(boundaries), "parts": len(parts),
                      "vertices_before": report.vertices_before, "vertices_after": report.vertices_after,
                      "max_border_displacement_m": round(report.max_displacement_m, 3),
                      "tolerance_m": args.tolerance_m, "source_bytes": Path(args.source).stat().st_size,
                      "output_bytes": len(data), "seconds": round(time.monotonic() - started, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
