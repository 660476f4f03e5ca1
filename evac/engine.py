"""The evacuation engine: nearest safe shelter for every node, recomputed when the hazard picture changes.

For a (profile, hazard type, exercise mode) the engine runs one multi-source Dijkstra from every
qualifying shelter over the *reversed* graph (``scipy.sparse.csgraph.dijkstra(..., min_only=True)``).
That gives, for every node, the travel time to its nearest qualifying shelter, the shelter, and the
next hop towards it; a resident's route is a walk along next hops. Such a result is a :class:`Field`.

Blocked edges
    csgraph treats a stored zero as "no edge" only in dense input, and removing entries means rebuilding
    the CSR structure, so blocked edges keep their place with weight :data:`BLOCKED_WEIGHT` (about 30
    years) and the search runs with ``limit=UNREACHABLE_S``: a node whose every way out crosses a blocked
    edge ends up unreachable (``inf``), and any finite distance uses no blocked edge.

State and swapping
    :class:`HazardState` (shelters, hazard areas, gauge alert levels, version, time) is immutable. An
    update builds a new state, computes the fields that were in use for it, then replaces one reference:
    a query reads that reference once and sees one consistent state. Fields nobody asked for are
    computed on first use and cached with their state. Updates are CPU work with no asyncio: run them in
    an executor (``loop.run_in_executor(None, engine.update, ...)``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from scipy.sparse.csgraph import dijkstra

from evac.hazards import BlockedAreas, HazardArea, active_areas, check_hazard, edge_multipliers
from evac.network import RoadNetwork
from evac.shelters import Shelter

#: Weight given to a blocked edge (seconds); far above any real route.
BLOCKED_WEIGHT = 1e9
#: Distances at or above this (seconds) mean "no safe route"; the search stops there.
UNREACHABLE_S = 1e8

FieldKey = tuple[str, str, bool]  # (profile, hazard, exercise)


@dataclass(frozen=True)
class HazardState:
    """Everything routes depend on, at one version."""

    version: int
    changed_at: datetime
    shelters: Mapping[str, Shelter]
    areas: Mapping[str, HazardArea]
    alert_levels: Mapping[str, int]

    def active(self, *, exercise: bool) -> list[HazardArea]:
        return active_areas(self.areas.values(), self.alert_levels, exercise=exercise)


@dataclass(eq=False)
class Field:
    """Nearest qualifying shelter, time and next hop for every node, for one key at one state."""

    profile: str
    hazard: str
    exercise: bool
    version: int
    computed_at: datetime
    compute_s: float
    dist: np.ndarray  # seconds to the nearest qualifying shelter (inf = none reachable)
    next_node: np.ndarray  # next node towards it (-1 at a shelter or when unreachable)
    source: np.ndarray  # node of that shelter (-1 when unreachable)
    shelter_at: Mapping[int, Shelter]  # source node -> shelter
    de_weight: np.ndarray  # current weight of each directed edge of the profile graph
    pair_weight: np.ndarray
    blocked: BlockedAreas  # blocked areas in force, for point tests

    def path(self, node: int) -> list[int]:
        """Nodes from ``node`` to its shelter (empty when unreachable)."""
        if node < 0 or not self.dist[node] < UNREACHABLE_S:
            return []
        nxt = self.next_node
        out = [node]
        while (node := int(nxt[node])) >= 0:
            out.append(node)
        return out


@dataclass(frozen=True)
class RouteResult:
    """The core answer: status, node path, time and shelter (formatted by :mod:`evac.routes`)."""

    status: str  # ok | no_safe_route | inside_hazard | off_network
    path: list[int]
    duration_s: float
    shelter: Shelter | None
    snap_distance_m: float
    field: Field
    state: HazardState
    hazards_here: tuple[HazardArea, ...] = ()


@dataclass(eq=False)
class _Snapshot:
    state: HazardState
    fields: dict[FieldKey, Field] = field(default_factory=dict)
    mults: dict[bool, np.ndarray] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now() -> datetime:
    return datetime.now(UTC)


class Engine:
    """Hazard-aware routing to shelters over one :class:`~evac.network.RoadNetwork`.

    Parameters
    ----------
    network
        The road network (all profiles share it).
    shelters, areas, alert_levels
        The initial state.
    max_snap_m
        Points (and shelters) further than this from the profile's network are off the network.
    warm
        Keys ``(profile, hazard, exercise)`` always recomputed on update, besides those already in use.
    """

    def __init__(
        self, network: RoadNetwork, *, shelters: Iterable[Shelter] = (), areas: Iterable[HazardArea] = (),
        alert_levels: Mapping[str, int] | None = None, max_snap_m: float = 500.0,
        warm: Iterable[FieldKey] = (),
    ) -> None:
        self.network = network
        self.max_snap_m = float(max_snap_m)
        self.warm: set[FieldKey] = set(warm)
        self._update_lock = threading.Lock()
        self._snap_cache: dict[tuple[str, float, float], tuple[int, float]] = {}
        self._hit_cache: dict[str, tuple[HazardArea, np.ndarray]] = {}
        state = HazardState(1, _now(), {s.id: s for s in shelters}, {a.id: a for a in areas},
                            dict(alert_levels or {}))
        self._snap = _Snapshot(state)
        for key in self.warm:
            self.field(*key)

    # -- state --------------------------------------------------------------------------------------
    @property
    def state(self) -> HazardState:
        return self._snap.state

    def update(
        self, *, shelters: Iterable[Shelter] | None = None, areas: Iterable[HazardArea] | None = None,
        add_areas: Iterable[HazardArea] = (), remove_areas: Iterable[str] = (),
        alert_levels: Mapping[str, int] | None = None, occupancy: Mapping[str, int] | None = None,
        is_open: Mapping[str, bool] | None = None,
    ) -> HazardState:
        """Apply a change, recompute the fields in use, swap them in; returns the new state.

        ``shelters``/``areas`` replace the whole set; ``add_areas`` adds or replaces areas by id;
        ``alert_levels`` merges gauge levels; ``occupancy``/``is_open`` change shelters by id.
        """
        with self._update_lock:
            old = self._snap
            st = old.state
            shel = dict(st.shelters) if shelters is None else {s.id: s for s in shelters}
            for sid, occ in (occupancy or {}).items():
                shel[sid] = replace(self._shelter(shel, sid), occupancy=int(occ))
            for sid, op in (is_open or {}).items():
                shel[sid] = replace(self._shelter(shel, sid), is_open=bool(op))
            ar = dict(st.areas) if areas is None else {a.id: a for a in areas}
            for a in add_areas:
                ar[a.id] = a
            for aid in remove_areas:
                ar.pop(aid, None)
            levels = {**st.alert_levels, **{str(k): int(v) for k, v in (alert_levels or {}).items()}}
            new = _Snapshot(HazardState(st.version + 1, _now(), shel, ar, levels))
            for key in set(old.fields) | self.warm:
                self._compute(new, key)
            self._snap = new  # the atomic swap: one reference assignment
            return new.state

    @staticmethod
    def _shelter(shelters: Mapping[str, Shelter], sid: str) -> Shelter:
        try:
            return shelters[sid]
        except KeyError:
            raise KeyError(f"no shelter with id {sid!r}: add it with update(shelters=...) first") from None

    def set_alert_level(self, station_id: str, level: int) -> HazardState:
        """A gauge's alert level changed (areas linked to it activate at their level)."""
        return self.update(alert_levels={station_id: level})

    # -- fields ---------------------------------------------------------------------------------------
    def field(self, profile: str = "walk", hazard: str = "flood", exercise: bool = False) -> Field:
        """The field for a key at the current state (computed on first use)."""
        snap = self._snap
        f = snap.fields.get((profile, hazard, exercise))
        return f if f is not None else self._compute(snap, (profile, hazard, exercise))

    def _compute(self, snap: _Snapshot, key: FieldKey) -> Field:
        profile, hazard, exercise = key
        check_hazard(hazard)
        pg = self.network.profile(profile)
        with snap.lock:
            if key in snap.fields:
                return snap.fields[key]
            t0 = time.perf_counter()
            active = snap.state.active(exercise=exercise)
            mult = snap.mults.get(exercise)
            if mult is None:
                mult = edge_multipliers(self.network, active, cache=self._hit_cache)
                snap.mults[exercise] = mult
            de_w = pg.de_time * mult[pg.de_base]
            de_w[~np.isfinite(de_w)] = BLOCKED_WEIGHT
            pair_w = pg.pair_weights(de_w)
            blocked = BlockedAreas(active)
            shelter_at = self._qualifying(snap.state, profile, hazard, blocked)
            n = self.network.n_nodes
            if shelter_at:
                sources = np.fromiter(shelter_at, dtype=np.int64)
                dist, pred, src = dijkstra(pg.reverse_csr(pair_w), directed=True, indices=sources,
                                           return_predecessors=True, min_only=True, limit=UNREACHABLE_S)
                pred = np.where(pred < 0, -1, pred).astype(np.int32)
                src = np.where(src < 0, -1, src).astype(np.int32)
            else:
                dist, pred, src = np.full(n, np.inf), np.full(n, -1, np.int32), np.full(n, -1, np.int32)
            f = Field(profile, hazard, exercise, snap.state.version, _now(), time.perf_counter() - t0, dist,
                      pred, src, shelter_at, de_w, pair_w, blocked)
            snap.fields[key] = f
            return f

    def _snap_shelter(self, s: Shelter, profile: str) -> tuple[int, float]:
        nodes, dists = self._snap_shelters([s], profile)
        return int(nodes[0]), float(dists[0])

    def _snap_shelters(self, shelters: list[Shelter], profile: str) -> tuple[np.ndarray, np.ndarray]:
        """Snapped node and distance per shelter (cached by position, misses snapped in one call)."""
        cache = self._snap_cache
        keys = [(profile, s.lon, s.lat) for s in shelters]
        missing = [k for k in keys if k not in cache]
        if missing:
            nodes, dists = self.network.snap_many([k[1] for k in missing], [k[2] for k in missing], profile=profile)
            for k, n, d in zip(missing, nodes.tolist(), dists.tolist(), strict=True):
                cache[k] = (int(n), float(d))
        hits = [cache[k] for k in keys]
        return np.array([h[0] for h in hits], dtype=np.int64), np.array([h[1] for h in hits], dtype=float)

    def _qualifying(self, st: HazardState, profile: str, hazard: str, blocked: BlockedAreas) -> dict[int, Shelter]:
        """Source node -> shelter, for open, non-full shelters rated for ``hazard`` outside blocked areas."""
        shelters = [s for s in st.shelters.values() if s.is_open and hazard in s.hazards and not s.is_full]
        if not shelters:
            return {}
        nodes, dists = self._snap_shelters(shelters, profile)
        ok = (nodes >= 0) & (dists <= self.max_snap_m)
        if blocked and ok.any():
            net = self.network
            idx = np.flatnonzero(ok)
            lon = np.array([shelters[i].lon for i in idx])
            lat = np.array([shelters[i].lat for i in idx])
            inside = blocked.contains_many(lon, lat)
            inside |= blocked.contains_many(net.node_lon[nodes[idx]], net.node_lat[nodes[idx]])
            ok[idx[inside]] = False
        out: dict[int, Shelter] = {}
        for i in np.flatnonzero(ok).tolist():
            s, node = shelters[i], int(nodes[i])
            prev = out.get(node)
            if prev is None or _room(s) > _room(prev):
                out[node] = s
        return out

    # -- queries ------------------------------------------------------------------------------------
    def route_result(
        self, lat: float, lon: float, *, profile: str = "walk", hazard: str = "flood", exercise: bool = False
    ) -> RouteResult:
        """The nearest safe shelter and the node path to it (the core query, no formatting)."""
        snap = self._snap
        key = (profile, hazard, exercise)
        f = snap.fields.get(key) or self._compute(snap, key)
        st = snap.state
        here = tuple(f.blocked.at(lon, lat))
        if here:
            return RouteResult("inside_hazard", [], math.inf, None, math.nan, f, st, here)
        node, d = self.network.snap(lon, lat, profile=profile)
        if node < 0 or d > self.max_snap_m:
            return RouteResult("off_network", [], math.inf, None, d, f, st)
        path = f.path(node)
        if not path:
            return RouteResult("no_safe_route", [], math.inf, None, d, f, st)
        return RouteResult("ok", path, float(f.dist[node]), f.shelter_at[path[-1]], d, f, st)

    def route(
        self, lat: float, lon: float, *, profile: str = "walk", hazard: str = "flood", lang: str | None = None,
        exercise: bool = False,
    ) -> dict[str, Any]:
        """A GeoJSON Feature for a resident (see :func:`evac.routes.route_feature`)."""
        from evac.routes import route_feature

        return route_feature(self.network, self.route_result(lat, lon, profile=profile, hazard=hazard,
                                                             exercise=exercise), lang=lang)

    def nearest_shelters(
        self, lat: float, lon: float, *, k: int = 3, profile: str = "walk", hazard: str = "flood",
        exercise: bool = False, include_full: bool = False,
    ) -> list[dict[str, Any]]:
        """The ``k`` nearest qualifying shelters with travel times (full ones skipped unless asked)."""
        snap = self._snap
        key = (profile, hazard, exercise)
        f = snap.fields.get(key) or self._compute(snap, key)
        if f.blocked.contains(lon, lat):
            return []
        node, d = self.network.snap(lon, lat, profile=profile)
        if node < 0 or d > self.max_snap_m:
            return []
        candidates = dict(f.shelter_at)
        if include_full:
            blocked = f.blocked
            for s in snap.state.shelters.values():
                if s.is_full and s.is_open and s.rated_for(hazard):
                    sn, sd = self._snap_shelter(s, profile)
                    if sn >= 0 and sd <= self.max_snap_m and not blocked.contains(s.lon, s.lat):
                        candidates.setdefault(sn, s)
        times = self._times_from(node, f, k, list(candidates), float(f.dist[node]))
        ranked = sorted((t, n) for n, t in times.items() if t < UNREACHABLE_S)[:k]
        return [{"duration_s": round(t, 1), "shelter": candidates[n].to_dict(),
                 "hazard_version": f.version} for t, n in ranked]

    def _times_from(self, node: int, f: Field, k: int, targets: list[int], nearest: float) -> dict[int, float]:
        if not targets:
            return {}
        csr = self.network.profile(f.profile).forward_csr(f.pair_weight)
        tg = np.asarray(targets)
        limit = min(UNREACHABLE_S, 3.0 * nearest + 900.0) if math.isfinite(nearest) else UNREACHABLE_S
        while True:
            dist = dijkstra(csr, directed=True, indices=node, limit=limit)
            found = np.isfinite(dist[tg]).sum()
            if found >= min(k, len(tg)) or limit >= UNREACHABLE_S:
                return {int(n): float(dist[n]) for n in tg}
            limit = UNREACHABLE_S


def _room(s: Shelter) -> float:
    return math.inf if s.capacity is None else s.capacity - s.occupancy
