"""Hazard types and hazard areas.

The eight hazard types are GSI's (国土地理院 指定緊急避難場所 data), with English ids. A
:class:`HazardArea` is a lon/lat polygon with a type and a severity, from one of three sources:

``gauge``
    linked to a river gauge (``station_id``) and active while the gauge's alert level is at least
    ``activation_level``;
``staff``
    drawn by staff (a flooded underpass, a landslide, a closed bridge), active while ``active``;
``import``
    from a hazard map (GeoJSON), active while ``active``.

``severity="blocked"`` removes every road edge the polygon touches; ``"penalty"`` multiplies their
travel time by ``penalty_factor``. ``exercise=True`` marks drill areas: they only count for routes asked
for in exercise mode, and answers say they are an exercise.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely

from evac.network import RoadNetwork
from sonae.geojson import GeometryError, shape_of
from sonae.jsonkeys import read_json_file
from sonae.nametext import refused_text

HAZARD_TYPES = ("flood", "landslide", "storm_surge", "earthquake", "tsunami", "large_fire", "inland_flooding",
                "volcano")
#: English hazard id -> the GSI flag (property name) for it.
GSI_FLAGS: dict[str, str] = {
    "flood": "洪水",
    "landslide": "崖崩れ、土石流及び地滑り",
    "storm_surge": "高潮",
    "earthquake": "地震",
    "tsunami": "津波",
    "large_fire": "大規模な火事",
    "inland_flooding": "内水氾濫",
    "volcano": "火山現象",
}

Severity = Literal["blocked", "penalty"]
Source = Literal["gauge", "staff", "import"]


def check_hazard(hazard: str) -> str:
    """Return ``hazard`` if it is one of :data:`HAZARD_TYPES`, else raise with the valid ids."""
    if hazard not in HAZARD_TYPES:
        raise ValueError(f"unknown hazard {hazard!r}: use one of {', '.join(HAZARD_TYPES)}")
    return hazard


#: Separator of a hazard set in a field key and in ``?hazard=`` (``flood,landslide``).
HAZARD_SET_SEPARATOR = ","


def hazard_set(text: str) -> str:
    """The canonical key of a set of hazards: ids of :data:`HAZARD_TYPES`, separated by commas, each once,
    in :data:`HAZARD_TYPES` order (``"landslide,flood,flood"`` → ``"flood,landslide"``); one hazard is its id.

    A route for a set ends at a shelter rated for every hazard of it (:meth:`Shelter.rated_for`).
    Raises ``ValueError`` naming the valid ids for an empty set or an unknown id.
    """
    parts = {p.strip() for p in str(text).split(HAZARD_SET_SEPARATOR)}
    unknown = sorted(p for p in parts if p not in HAZARD_TYPES)
    if unknown or not parts:
        raise ValueError(f"unknown hazard {', '.join(map(repr, unknown)) or repr(text)}: use one of "
                         f"{', '.join(HAZARD_TYPES)}, or several joined by {HAZARD_SET_SEPARATOR!r}")
    return HAZARD_SET_SEPARATOR.join(h for h in HAZARD_TYPES if h in parts)


def hazard_parts(key: str) -> tuple[str, ...]:
    """The hazards of a key made by :func:`hazard_set` (one hazard: a tuple of it)."""
    return tuple(key.split(HAZARD_SET_SEPARATOR))


def check_hazard_set(key: str) -> str:
    """Return ``key`` if it is a canonical :func:`hazard_set` key (one hazard or several), else raise ``ValueError``."""
    if hazard_set(key) != key:
        raise ValueError(f"hazard set {key!r} is not canonical: use {hazard_set(key)!r}")
    return key


@dataclass(frozen=True)
class HazardArea:
    """A polygon (lon/lat) where a hazard is, or may become, active."""

    id: str
    hazard: str
    geometry: shapely.Geometry
    severity: Severity = "blocked"
    penalty_factor: float = 1.0
    source: Source = "staff"
    station_id: str | None = None
    activation_level: int | None = None
    active: bool = True
    exercise: bool = False
    label: str = ""

    def __post_init__(self) -> None:
        check_hazard(self.hazard)
        if self.severity not in ("blocked", "penalty"):
            raise ValueError(f"hazard area {self.id}: severity must be 'blocked' or 'penalty'")
        if self.severity == "penalty" and not self.penalty_factor >= 1.0:
            raise ValueError(f"hazard area {self.id}: penalty_factor must be at least 1")
        if self.source == "gauge" and (self.station_id is None or self.activation_level is None):
            raise ValueError(f"hazard area {self.id}: a gauge area needs station_id and activation_level")
        if not isinstance(self.geometry, shapely.Polygon | shapely.MultiPolygon) or self.geometry.is_empty:
            raise ValueError(f"hazard area {self.id}: geometry must be a non-empty Polygon or MultiPolygon")

    def is_active(self, alert_levels: Mapping[str, int]) -> bool:
        """Whether the area applies now, given each gauge's current alert level."""
        if self.source == "gauge":
            return alert_levels.get(str(self.station_id), 0) >= int(self.activation_level or 0)
        return self.active

    def to_feature(self) -> dict[str, Any]:
        props = {k: getattr(self, k) for k in ("id", "hazard", "severity", "penalty_factor", "source",
                                                "station_id", "activation_level", "active", "exercise", "label")}
        return {"type": "Feature", "geometry": shapely.geometry.mapping(self.geometry), "properties": props}


def active_areas(
    areas: Iterable[HazardArea], alert_levels: Mapping[str, int], *, exercise: bool
) -> list[HazardArea]:
    """Areas in force: real ones always, drill ones only in exercise mode."""
    return [a for a in areas if a.is_active(alert_levels) and (exercise or not a.exercise)]


def edge_hits(net: RoadNetwork, area: HazardArea) -> np.ndarray:
    """Base edges (sorted) whose geometry intersects the area, in lon/lat (:meth:`RoadNetwork.edges_intersecting`)."""
    return net.edges_intersecting(area.geometry)


def edge_multipliers(
    net: RoadNetwork, areas: Iterable[HazardArea], *, cache: dict[str, tuple[HazardArea, np.ndarray]] | None = None,
    base: np.ndarray | None = None,
) -> np.ndarray:
    """Travel-time factor per base edge ``(E,)``: 1, a penalty factor, or ``inf`` (blocked).

    ``cache`` (area id -> (area, hits)) avoids repeating the spatial query for areas seen before; an
    entry is used only for the very same (immutable) area object. ``base`` (not changed) holds the
    factors of other areas to add these to: the rule (blocked wins, else the largest penalty) does not
    depend on the order in which areas are applied.
    """
    mult = np.ones(net.n_edges) if base is None else base.copy()
    for area in areas:
        hit_entry = cache.get(area.id) if cache is not None else None
        if hit_entry is not None and hit_entry[0] is area:
            hit = hit_entry[1]
        else:
            hit = edge_hits(net, area)
            if cache is not None:
                cache[area.id] = (area, hit)
        if area.severity == "blocked":
            mult[hit] = np.inf
        else:
            mult[hit] = np.maximum(mult[hit], area.penalty_factor)
    return mult


def _prepared(geoms: list[shapely.Geometry]) -> np.ndarray:
    """``geoms`` as an object array, each prepared (one call: preparing a prepared geometry is a no-op)."""
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = geoms
    if len(arr):
        shapely.prepare(arr)
    return arr


class BlockedAreas:
    """Point-in-area tests against the blocked areas in force (lon/lat), through an STRtree.

    Built on every recompute whose areas changed: the tree is built on first use of :meth:`contains_many`.
    """

    def __init__(self, areas: Iterable[HazardArea]) -> None:
        self.areas = [a for a in areas if a.severity == "blocked"]
        geoms = _prepared([a.geometry for a in self.areas])
        self._geoms = geoms
        self._bounds = shapely.bounds(geoms) if len(geoms) else np.zeros((0, 4))

    @cached_property
    def _tree(self) -> shapely.STRtree:
        return shapely.STRtree(self._geoms)

    def __bool__(self) -> bool:
        return bool(self.areas)

    def at(self, lon: float, lat: float) -> list[HazardArea]:
        """The blocked areas containing (or touching) a point."""
        b = self._bounds
        if not len(b):
            return []
        near = np.flatnonzero((b[:, 0] <= lon) & (lon <= b[:, 2]) & (b[:, 1] <= lat) & (lat <= b[:, 3]))
        return [self.areas[i] for i in near.tolist() if shapely.intersects_xy(self.areas[i].geometry, lon, lat)]

    def contains(self, lon: float, lat: float) -> bool:
        return bool(self.at(lon, lat))

    def contains_many(self, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
        out = np.zeros(np.size(lon), bool)
        if self.areas and out.size:
            pts = shapely.points(np.asarray(lon, float), np.asarray(lat, float))
            idx = self._tree.query(pts, predicate="intersects")
            out[idx[0]] = True
        return out


def load_hazard_geojson(
    source: Path | str | Mapping[str, Any], *, hazard: str | None = None, source_kind: Source = "import",
    exercise: bool = False, id_prefix: str = "import",
) -> list[HazardArea]:
    """Hazard areas from a GeoJSON FeatureCollection (a file path or a parsed object).

    Feature properties may give ``id``, ``hazard``, ``severity``, ``penalty_factor``, ``station_id``,
    ``activation_level``, ``active``, ``exercise`` and ``label``; ``hazard`` overrides a missing one.
    """
    data = read_json_file(source) if isinstance(source, str | Path) else source
    features = data.get("features", [data] if data.get("type") == "Feature" else [])
    out: list[HazardArea] = []
    for i, feat in enumerate(features):
        props = feat.get("properties") or {}
        kind = props.get("hazard") or hazard
        if kind is None:
            raise ValueError(f"feature {i} has no 'hazard' property: pass hazard= for the whole file")
        src = props.get("source") or source_kind
        label = str(props.get("label", ""))
        if why := refused_text(f"feature {i}: label", label):  # shown to people: sonae.nametext's rule
            raise ValueError(why)
        try:
            geometry = shape_of(feat["geometry"])
        except GeometryError as exc:
            raise ValueError(f"feature {i}: {exc}") from None
        out.append(HazardArea(
            id=str(props.get("id") or f"{id_prefix}-{i}"),
            hazard=kind,
            geometry=geometry,
            severity=props.get("severity", "blocked"),
            penalty_factor=float(props.get("penalty_factor", 1.0)),
            source=src,
            station_id=None if props.get("station_id") is None else str(props["station_id"]),
            activation_level=None if props.get("activation_level") is None else int(props["activation_level"]),
            active=bool(props.get("active", True)),
            exercise=bool(props.get("exercise", exercise)),
            label=label,
        ))
    return out


class AreaLines:
    """Line tests against the areas in force, by the one boundary rule (:data:`evac.network.BOUNDARY_RULE`):
    shapely ``intersects`` in lon/lat degrees against the areas as given, touching counts.

    :meth:`leg_factor` and :meth:`part_factor` give ``inf`` for a line touching a blocked area, else the
    largest penalty factor of the penalty areas it touches (1 when none): the rule of
    :func:`edge_multipliers` for whole edges, applied to the straight legs between a position and its road
    and to parts of edges. ``boxes`` are the areas' bounds in the network's projected metres, widened so
    that they hold the areas' lon/lat outline once projected (the engine widens by
    :data:`evac.network.BOX_PAD_M`): a leg given in metres whose box meets none of them touches no area,
    and needs no lon/lat work (no pyproj call).
    """

    def __init__(self, net: RoadNetwork, blocked: list[tuple[shapely.Geometry, tuple[float, float, float, float]]],
                 penalties: list[tuple[shapely.Geometry, tuple[float, float, float, float], float]]) -> None:
        self.net = net
        self.blocked = [g for g, _ in blocked]
        self.penalties = [(g, f) for g, _, f in penalties]
        geoms = _prepared(self.blocked + [g for g, _ in self.penalties])
        self._ll_bounds = shapely.bounds(geoms) if len(geoms) else np.zeros((0, 4))
        self._bounds_list = [tuple(map(float, b)) for _, b in blocked] + [tuple(map(float, b)) for _, b, _ in penalties]

    # the trees are built on first use: most recomputes are followed by few line tests near an area
    @cached_property
    def _btree(self) -> shapely.STRtree:
        return shapely.STRtree(self.blocked)

    @cached_property
    def _ptree(self) -> shapely.STRtree:
        return shapely.STRtree([p for p, _ in self.penalties])

    def __bool__(self) -> bool:
        return bool(self.blocked or self.penalties)

    def leg_factor(self, ax: float, ay: float, bx: float, by: float, lon: float, lat: float, e: int,
                   along: float) -> float:
        """Factor of the straight leg from a position (``lon``, ``lat`` as given; ``ax``, ``ay`` projected)
        to its road point ``along`` metres along base edge ``e`` (``bx``, ``by`` projected): judged in
        lon/lat on the leg from the position to :meth:`RoadNetwork.point_lonlat`, only when the leg's
        projected box meets an area's (most legs: 1, in plain Python)."""
        if not self:
            return 1.0
        lx, hx, ly, hy = min(ax, bx), max(ax, bx), min(ay, by), max(ay, by)
        if not any(lx <= b2 and hx >= b0 and ly <= b3 and hy >= b1 for b0, b1, b2, b3 in self._bounds_list):
            return 1.0
        return self.factor_lonlat(np.array([[lon, lat], self.net.point_lonlat(e, along, (bx, by))]))

    def part_factor(self, e: int, a: float, b: float) -> float:
        """Factor of the part of base edge ``e`` from ``a`` to ``b`` projected metres along it, judged on
        the edge's own lon/lat line (:meth:`RoadNetwork.part_meets`, as shelters' parts of edges are): a
        corner of an area exactly on the road counts for the part that covers it, which cut points brought
        back from metres (a hair off the line) can miss. The areas tested are those whose box meets the
        edge's (the part lies on the edge's line, within its box)."""
        if not self:
            return 1.0
        ll = self.net.edge_coords(e)
        lo, hi = ll.min(axis=0), ll.max(axis=0)
        bx = self._ll_bounds
        near = np.flatnonzero((lo[0] <= bx[:, 2]) & (hi[0] >= bx[:, 0]) & (lo[1] <= bx[:, 3]) & (hi[1] >= bx[:, 1]))
        n_blocked = len(self.blocked)
        factor = 1.0
        for i in near.tolist():
            if i < n_blocked:
                if self.net.part_meets(e, a, b, self.blocked[i]):
                    return math.inf
            elif self.penalties[i - n_blocked][1] > factor and self.net.part_meets(e, a, b,
                                                                                  self.penalties[i - n_blocked][0]):
                factor = self.penalties[i - n_blocked][1]
        return factor

    def factor_lonlat(self, ll: np.ndarray) -> float:
        """Factor of a lon/lat polyline ``(K, 2)`` (a single point, or all points equal: tested as a point)."""
        if not self:
            return 1.0
        b = self._ll_bounds
        lo, hi = ll.min(axis=0), ll.max(axis=0)
        if not ((lo[0] <= b[:, 2]) & (hi[0] >= b[:, 0]) & (lo[1] <= b[:, 3]) & (hi[1] >= b[:, 1])).any():
            return 1.0
        geom = shapely.Point(ll[0]) if len(ll) == 1 or (lo == hi).all() else shapely.LineString(ll)
        if self.blocked and len(self._btree.query(geom, predicate="intersects")):
            return math.inf
        if self.penalties:
            hit = self._ptree.query(geom, predicate="intersects")
            if len(hit):
                return max(self.penalties[int(i)][1] for i in hit)
        return 1.0
