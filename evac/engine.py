"""The evacuation engine: nearest safe shelter for every node, recomputed when the hazard picture changes.

For a (profile, hazard type, exercise mode) the engine runs one multi-source Dijkstra from every
qualifying shelter (open, not full, rated for the hazard; for a set of hazards in force at once,
``flood,landslide`` made by :func:`evac.hazards.hazard_set`, rated for every one of them: a field of its own,
kept like any other on-demand key within ``max_fields``; every area in force is avoided whatever its hazard)
over the *reversed* graph (``scipy.sparse.csgraph.dijkstra(..., min_only=True)``).
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

Reuse between recomputes
    A recompute rebuilds only what its inputs changed, each part keyed by exactly what it is built from:
    the hazard index (edge factors, weights, line and point tests) by the areas in force (the very same
    objects), the shelters' road points by the shelters' ids and positions, the areas' effect on those
    by both, the source rows by those and which shelters qualify, the search by weights and source rows.
    So a gauge level that activates nothing new, a shelter opening, closing or filling, or a drill area
    (for the real fields) costs little more than the search, and a new area costs its own spatial tests.
    A new set of areas patches the edge factors of the nearest kept set on the edges of the areas added
    or removed; pair weights are read from the factors (whole on small graphs, when read on large ones:
    :class:`evac.network.PairWeights`), so a local change touches no array as long as the graph except
    one copy of the factors and of each field (:class:`evac.incremental.ArrayPool`).
    Shared arrays are read-only.

Shared between processes
    On a network loaded from a file (:meth:`RoadNetwork.load`), the edge factors and each field's search
    result live in the host-wide field store (:mod:`evac.fieldstore`), named by a digest of what they are
    computed from (the store format, the network file, the areas' edges, severities and penalties; the
    profile and the source rows): an engine maps an entry another process published instead of computing
    it, and publishes what it computes, keeping the mapped copy, not its own. Two engines that need one entry at once compute it
    once: the first holds the entry's lock until it has published, the other waits (bounded) and maps it
    (:meth:`evac.fieldstore.FieldStore.claim`). Mapped arrays are read-only: a change copies them
    first (:class:`evac.incremental.ArrayPool`), and the copy is free for the next change once published.
    An update swaps its new state in first and publishes after (``Engine.update(on_swap=...)`` marks the
    point between; ``bench/evac_scale.py --incremental --store`` times both): its fields, which then map
    their entries, and its new edge factors, which the hazard index keeps as its own (its weights are
    read from that very array).
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from evac.fieldstore import Claim, FieldStore
from evac.graph import PROFILES
from evac.hazards import (
    AreaLines,
    BlockedAreas,
    HazardArea,
    active_areas,
    check_hazard_set,
)
from evac.incremental import ArrayPool, Copy, Seeds, pairs_of_edges, update_field
from evac.network import BOX_PAD_M, DirectedWeights, PairWeights, ProfileGraph, RoadNetwork
from evac.search import Search, search_in_process
from evac.shelters import Shelter
from evac.snapping import EdgePoints

#: Weight given to a blocked edge (seconds); far above any real route.
BLOCKED_WEIGHT = 1e9
#: Distances at or above this (seconds) mean "no safe route"; the search stops there.
UNREACHABLE_S = 1e8

#: Edges whose nearest point is at most this much further than the nearest road's are candidates too
#: (the same road seen through two edges at a junction, or two roads at about the same distance); the
#: route takes the one with the least total time.
TIE_M = 10.0
#: When every candidate near the nearest road is cut by a blocked area, roads up to this far are tried.
SEARCH_M = 150.0
#: Radius of the first look for roads around a position (metres); further roads take a second search.
FIRST_LOOK_M = 40.0
#: Speed on the straight legs to and from the road for the car profile (people walk to the car).
ACCESS_SPEED_MPS = 1.0
#: A resident this close to a suitable shelter (metres, straight, in the network's projected CRS) is told they
#: are at it (status ``at_shelter``, distance 0), not routed out to the road and back (found: 39.5 m from a
#: shelter's own position). The API rounds positions to 1e-4 degrees (``evac.service.POSITION_DECIMALS``):
#: 11.1 m of latitude by 8.9 m of longitude at Fukushima's 37.4 degrees N (9.1 m at 35 N), so a resident
#: standing on a shelter's point is answered for a point up to half a cell away on each axis, at most
#: sqrt(5.55² + 4.55²) = 7.2 m from it (any latitude of Japan). 10 m takes every such resident with ~3 m to
#: spare for the shelter's own coordinates (GSI's are given to 1e-6 degrees, < 0.1 m), and says "you are
#: there" only to someone at most 17 m (10 m plus the rounding) from its point: inside the grounds of a
#: school or community centre, the usual 指定緊急避難場所. Further out, the route is walked as before.
AT_SHELTER_M = 10.0
#: Suitable shelters by grid cell of AT_SHELTER_M in projected metres: ``(x, y, shelter)`` (:meth:`Engine.at_shelter`).
_ShelterCells = dict[tuple[int, int], list[tuple[float, float, Shelter]]]
#: Positions further than this outside the network's bounding box are ``outside_area``.
AREA_MARGIN_M = 1000.0
#: Degrees beyond the network's box past which an area's box is cut off before it is projected to metres
#: (:meth:`Engine._projected_box`): transverse Mercator stays usable some 20 degrees from its zone.
REACH_MAX_DEG = 10.0
#: Sets of areas in force whose hazard index (edge factors, weights, line tests) is kept: the current
#: ones of both exercise modes and the one before each (the base for the next one, and an area drawn and
#: then withdrawn again). Each holds an edge array and two directed-edge arrays per profile in use. With a
#: field store, an index an update built keeps its own edge factors (8 B per base edge, published after
#: the swap; :class:`_Unpublished`), not the mapped copy: up to this many such copies per process.
HAZARD_INDEXES = 4
#: Picks of qualifying shelters whose source rows are kept per set of shelter positions.
SOURCE_SETS = 8
#: Graphs with fewer nodes are searched whole after a change (measured on the Bayreuth extract, 2.6k
#: nodes: an incremental update cost 1.5-3x the full search; at 100k nodes it costs a tenth of it).
INCREMENTAL_MIN_NODES = 20_000
#: Graphs with fewer nodes keep their fields to themselves (no field store): a field is then under
#: ~5 MB a process and its search a few milliseconds, less than publishing it (measured on Bayreuth,
#: 2.6k nodes: a new area's recompute 0.6 ms without the store, 2.5 ms with it; bench/evac.py).
FIELD_STORE_MIN_NODES = 50_000
#: Per hazard index, the other indexes whose difference from it (the base edges changed) is remembered.
EDITS_KEPT = 8
#: Base edges (per profile) whose nodes, lengths and times are kept as Python numbers for queries (about
#: 400 bytes each; the candidates near the residents asking, emptied when full).
EDGE_INFO_CACHE = 20_000
FieldKey = tuple[str, str, bool]  # (profile, hazard or hazard set (evac.hazards.hazard_set), exercise)


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


@dataclass(frozen=True)
class Sources:
    """Where qualifying shelters join the road graph: one row per (shelter, edge point, edge end).

    Row ``k`` is a virtual node ``n + k`` of the search: shelter ``shelters[shelter[k]]`` stands
    ``egress_m[k]`` metres (``egress_s[k]`` seconds) from the point ``along[k]`` projected metres along
    base edge ``edge[k]``; from node ``end[k]`` (``end_along[k]`` along the same edge) to that point is
    ``partial_s[k]`` seconds and ``partial_m[k]`` metres; ``offset[k]`` is their sum with the egress.
    """

    shelter: np.ndarray
    end: np.ndarray
    edge: np.ndarray
    along: np.ndarray
    end_along: np.ndarray
    partial_s: np.ndarray
    partial_m: np.ndarray
    egress_s: np.ndarray
    egress_m: np.ndarray
    offset: np.ndarray

    def __len__(self) -> int:
        return int(self.shelter.shape[0])

    @cached_property
    def seeds(self) -> Seeds:
        """The cheapest row at each end node (for incremental updates; built once per set of rows)."""
        return Seeds.of(self.end, self.offset)


@dataclass(frozen=True)
class _Attachment:
    """A shelter's road points (``pts``) and the rows from their edge ends, before hazards: row ``k``
    joins point ``point[k]`` from node ``end[k]`` (``end_along[k]`` along the edge) in ``partial_s[k]``
    seconds over ``partial_m[k]`` metres."""

    sx: float
    sy: float
    pts: EdgePoints
    point: np.ndarray
    end: np.ndarray
    end_along: np.ndarray
    partial_s: np.ndarray
    partial_m: np.ndarray


@dataclass(frozen=True)
class Stops:
    """Shelter road points sorted by base edge (egress leg safe): :meth:`on` lists one edge's."""

    edge: np.ndarray
    shelter: np.ndarray
    along: np.ndarray
    egress_s: np.ndarray
    egress_m: np.ndarray
    has: np.ndarray  # bool per base edge: some stop lies on it

    def on(self, e: int) -> list[Stop]:
        if not self.has[e]:
            return []
        lo = int(np.searchsorted(self.edge, e, side="left"))
        hi = int(np.searchsorted(self.edge, e, side="right"))
        return [Stop(int(self.shelter[k]), float(self.along[k]), float(self.egress_s[k]), float(self.egress_m[k]))
                for k in range(lo, hi)]


class Stop(NamedTuple):
    """A shelter attached to a point of an edge: ``along`` projected metres, then the egress leg."""

    shelter: int  # index into Field.shelters
    along: float
    egress_s: float
    egress_m: float


class Walks(dict[Any, Any]):
    """Formatted walks kept by :mod:`evac.routes` on a field (by node, never by position), oldest first;
    ``nbytes`` is about the text they hold, so that the module can bound them by memory as well as count."""

    __slots__ = ("nbytes",)

    def __init__(self) -> None:
        super().__init__()
        self.nbytes = 0


@dataclass(eq=False)
class Field:
    """Nearest qualifying shelter, time and next hop for every node, for one key at one state.

    ``next_node[i] >= n_nodes`` means that from node ``i`` the route leaves the graph for source row
    ``next_node[i] - n_nodes`` (see :class:`Sources`): the last partial edge and the egress leg.
    """

    profile: str
    hazard: str
    exercise: bool
    version: int
    computed_at: datetime
    compute_s: float
    dist: np.ndarray  # seconds to the nearest qualifying shelter (inf = none reachable)
    next_node: np.ndarray  # next node towards it (>= n: the source row n + k; -1 when unreachable)
    source: np.ndarray  # source row reached from each node (-1 when unreachable)
    shelters: list[Shelter]  # qualifying shelters attached to the graph (hazards not applied)
    sources: Sources
    stops: Stops  # shelters attached to edge points (for routes along one edge)
    mult: np.ndarray  # hazard multiplier per base edge (1, a penalty factor, or inf)
    de_weight: DirectedWeights  # current weight of each directed edge of the profile graph (read lazily)
    pair_weight: PairWeights  # current weight of each pair (read lazily on large graphs)
    blocked: BlockedAreas  # blocked areas in force, for point tests
    lines: AreaLines  # the areas in force, for partial edges and legs (lon/lat, boxes in metres)
    access_speed: float  # metres per second on the straight legs to and from the road
    #: formatted walks from nodes to the shelter, filled by :mod:`evac.routes` (by node, never by position).
    #: They depend on nothing but the network and this field's next hops, directed-edge weights, source
    #: rows and shelters, so a field with the very same of those (carried over to a new version, or
    #: recomputed to the same search and shelters) shares them; any other field starts empty.
    tails: Walks = field(default_factory=lambda: Walks(), repr=False)

    @property
    def shelter_at(self) -> dict[int, Shelter]:
        """Node -> shelter reached when a route ends through that node (for inspection and tests)."""
        n = len(self.dist)
        out: dict[int, Shelter] = {}
        for i in np.flatnonzero(self.next_node >= n).tolist():
            out[i] = self.shelters[int(self.sources.shelter[int(self.next_node[i]) - n])]
        return out

    def path(self, node: int) -> list[int]:
        """Nodes from ``node`` to where its route leaves the graph (empty when unreachable)."""
        if node < 0 or not self.dist[node] < UNREACHABLE_S:
            return []
        nxt = self.next_node
        n = len(nxt)
        out = [node]
        while 0 <= (node := int(nxt[node])) < n:
            out.append(node)
        return out


@dataclass(frozen=True)
class Partial:
    """Part of base edge ``edge`` from ``a`` to ``b`` projected metres along it (against it if ``b < a``)."""

    edge: int
    a: float
    b: float
    seconds: float
    metres: float


@dataclass(frozen=True)
class RouteResult:
    """The core answer: status, legs, time and shelter (formatted by :func:`evac.routes.route_feature`).

    A route is: the access leg (straight, from the position to ``first``'s start), ``first`` (the part
    of the resident's edge to a node, or straight to the shelter's point on the same edge), the node
    ``path``, ``last`` (from the last node along the shelter's edge) and the egress leg to the shelter.
    """

    status: str  # ok | at_shelter | no_safe_route | no_shelter_in_area | no_shelter_for_all_hazards | inside_hazard
    #              | off_network | outside_area
    path: list[int]
    duration_s: float
    shelter: Shelter | None
    snap_distance_m: float
    field: Field
    state: HazardState
    hazards_here: tuple[HazardArea, ...] = ()
    origin: tuple[float, float] | None = None  # lon, lat of the position (as given)
    access_s: float = 0.0
    first: Partial | None = None
    last: Partial | None = None
    egress_m: float = 0.0
    egress_s: float = 0.0


@dataclass(frozen=True)
class RouteStart:
    """An ``ok`` answer up to node ``end``, where the walk joins ``field``'s next hops (see
    :meth:`Engine.route_start`): the total seconds to the shelter, the access leg (metres, seconds) and
    the ``first`` partial edge to ``end``."""

    duration_s: float
    snap_distance_m: float
    field: Field
    state: HazardState
    origin: tuple[float, float]  # lon, lat of the position (as given)
    access_s: float
    first: Partial
    end: int


class FieldAt(NamedTuple):
    """A field and the hazard state it was computed for (:meth:`Engine.field_at`, :meth:`Engine.computed`).

    A query given one (``at=``) answers from this field at this state, whatever the engine's state is by then,
    and computes nothing: an update swapping in a new state, or another key pushing this one out of the fields
    kept, meanwhile (both happen in other threads) cannot make it search. What the API answers with, after
    computing off its event loop (:meth:`evac.service.EvacService.ensure_field`)."""

    state: HazardState
    field: Field


@dataclass(eq=False)
class _Snapshot:
    state: HazardState
    fields: dict[FieldKey, Field] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(eq=False)
class _Unpublished:
    """A field store entry an update computed, published once the new state is swapped in
    (:meth:`Engine.update`); ``claim`` (the entry's lock) is held until then."""

    name: str
    dig: str
    claim: Claim
    #: a field's search result: published, then the field's arrays are the mapped ones
    field: Field | None = None
    #: a hazard index's edge factors: published, and kept by the index (its weights and the record of
    #: which edges differ from other indexes' factors are tied to this very array)
    mult: np.ndarray | None = None


def _frozen(a: np.ndarray) -> np.ndarray:
    """``a`` made read-only (it is shared between fields, states and caches)."""
    a.setflags(write=False)
    return a


def _lru_put(cache: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


@dataclass(eq=False)
class _HazardIndex:
    """What fields take from one set of areas in force, built once per set.

    Kept while the areas in force are the very same (immutable) objects, whatever else changes: an
    alert level that activates or clears nothing, a shelter that opens, closes or fills, the other
    exercise mode when no drill area is in force. ``weights`` holds per profile the directed-edge weights
    (:class:`evac.network.DirectedWeights`) and the pair weights (:class:`evac.network.PairWeights`) in
    seconds (blocked: :data:`BLOCKED_WEIGHT`), both read from ``mult`` (on large graphs, when read).
    """

    areas: tuple[HazardArea, ...]
    ids: frozenset[int]  # id() of each area
    hits: tuple[np.ndarray, ...]  # per area, the base edges it touches
    mult: np.ndarray  # (E,) hazard factor per base edge: 1, a penalty factor or inf
    blocked: BlockedAreas
    lines: AreaLines
    weights: dict[str, tuple[DirectedWeights, PairWeights]] = field(default_factory=dict)
    #: What ``mult`` is computed from (for the field store: :meth:`Engine._share`), or "" without a store.
    digest: str = ""
    #: (another index's ``mult``, held weakly; the base edges, sorted, outside which both are equal): an
    #: incremental update between fields of the two finds its changed pairs from these edges alone.
    edits: list[tuple[weakref.ref[np.ndarray], np.ndarray]] = field(default_factory=list)

    def edges_changed_from(self, mult: np.ndarray) -> np.ndarray | None:
        """Base edges (sorted) outside which ``mult`` equals this index's factors, when known."""
        if mult is self.mult:
            return np.zeros(0, np.int64)
        for ref, edges in self.edits:
            if ref() is mult:
                return edges
        return None


@dataclass(eq=False)
class _SiteRows:
    """Hazards applied to every road point of a :class:`_Sites` (shared by hazard indexes that touch them alike).

    Per area the factors combine as for edges (blocked wins, else the largest penalty): ``leg`` ``(M,)``
    per egress leg, ``inside`` ``(S,)`` per shelter (in a blocked area), ``r_fac`` ``(R,)`` per partial edge.
    From them ``egress_s`` ``(M,)`` seconds per point (inf: shelter in a blocked area or egress leg
    blocked), ``partial_s`` ``(R,)`` seconds per row (inf: blocked), ``ok`` ``(R,)``: both finite.
    """

    leg: np.ndarray
    inside: np.ndarray
    r_fac: np.ndarray
    egress_s: np.ndarray
    partial_s: np.ndarray
    ok: np.ndarray


@dataclass(eq=False)
class _Sites:
    """Every shelter's road points and rows for one profile, open or not and of any hazard, before hazards.

    Built once per set of shelter positions ``key`` (ids and coordinates, sorted by id): opening,
    closing or filling a shelter and hazard changes only select among these rows. ``attached`` ``(S,)``
    indexes the shelters (sorted by id) that reach the graph; ``arrays`` are as :meth:`Engine._concat`,
    with ``p_shelter`` indexing ``attached``. The caches below depend on the sites and are dropped with them.
    """

    key: tuple[tuple[str, float, float], ...]
    attached: np.ndarray
    arrays: tuple[np.ndarray, ...]
    row_sort: np.ndarray  # (R,) rows in the order of their point's base edge (stable)
    row_sorted_edge: np.ndarray  # (R,) that base edge, in that order (sorted)
    lonlat: np.ndarray  # (S, 2) each attached shelter's lon, lat (degrees, as given)
    legs: shapely.STRtree | None = None  # over the egress legs (LineStrings, one per road point)
    effects: dict[str, tuple[HazardArea, tuple[np.ndarray, np.ndarray, np.ndarray]]] = field(default_factory=dict)
    # by id() of the hazard index (kept with them); indexes whose areas touch the same rows share them
    rows: OrderedDict[int, tuple[_HazardIndex, _SiteRows]] = field(default_factory=OrderedDict)
    sources: OrderedDict[tuple[int, bytes], tuple[_SiteRows, Sources, Stops]] = field(
        default_factory=OrderedDict)  # by (id() of the rows, candidate mask)


def _same_geometry(a: HazardArea, b: HazardArea) -> bool:
    """Whether two areas have the same geometry: the same object, or equal coordinates in the same order
    (an area given again: withdrawn and drawn again, changed in its other fields, or read again)."""
    return a.geometry is b.geometry or bool(shapely.equals_exact(a.geometry, b.geometry, 0.0))


def _now() -> datetime:
    return datetime.now(UTC)


def _apply_area(mult: np.ndarray, area: HazardArea, edges: np.ndarray) -> None:
    """Apply ``area`` to the factors of base ``edges`` in place: blocked wins, else the largest penalty
    (the rule of :func:`evac.hazards.edge_multipliers`, which does not depend on the order of areas)."""
    if area.severity == "blocked":
        mult[edges] = np.inf
    else:
        mult[edges] = np.maximum(mult[edges], area.penalty_factor)


def _patched_mult(parent: _HazardIndex, active: Sequence[HazardArea], hits: Sequence[np.ndarray],
                  copy: Copy = np.copy) -> tuple[np.ndarray, np.ndarray]:
    """Edge factors ``(E,)`` of the areas ``active`` (``hits``: the base edges each touches, sorted) from
    those of ``parent``, and the base edges (sorted) outside which the two are equal.

    Where an area of the parent's was removed the factor is reset to 1 and the areas kept are applied
    again (on all their edges: elsewhere the factor already holds theirs, and the rule is idempotent);
    then the added areas are applied. By the order-free rule the result is the factors built from nothing.
    """
    mult = copy(parent.mult)
    new_ids = {id(a) for a in active}
    removed = [h for a, h in zip(parent.areas, parent.hits, strict=True) if id(a) not in new_ids]
    parts: list[np.ndarray] = []
    if removed:
        touched = np.unique(np.concatenate(removed))
        mult[touched] = 1.0
        for a, h in zip(active, hits, strict=True):
            if id(a) in parent.ids and len(h):
                _apply_area(mult, a, h)
        parts.append(touched)
    for a, h in zip(active, hits, strict=True):
        if id(a) not in parent.ids:
            _apply_area(mult, a, h)
            parts.append(h)
    if len(parts) == 1:  # one area added (the usual change): its edges are already sorted and unique
        changed = np.asarray(parts[0], np.int64)
    else:
        changed = np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)
    return mult, changed


def _edges_between(parent: _HazardIndex, active: Sequence[HazardArea], hits: Sequence[np.ndarray]) -> np.ndarray:
    """The base edges (sorted) outside which the factors of ``active`` (``hits``: each one's edges) equal
    ``parent``'s: those of the areas one of them has and the other has not (the edges
    :func:`_patched_mult` reports, without building the factors)."""
    new_ids = {id(a) for a in active}
    parts = [h for a, h in zip(parent.areas, parent.hits, strict=True) if id(a) not in new_ids]
    parts += [h for a, h in zip(active, hits, strict=True) if id(a) not in parent.ids]
    return np.unique(np.concatenate(parts)).astype(np.int64) if parts else np.zeros(0, np.int64)


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
    max_fields
        Fields kept besides ``warm``: keys asked for on demand, least recently used dropped first (so a
        client cycling through every combination cannot grow memory or update work without bound).
    search
        Runs the nearest-shelter search (:mod:`evac.search`): in this process by default, or
        :class:`evac.search.ProcessSearch` to keep a server's interpreter free while it runs.
    incremental
        Bring a field whose inputs changed up to date by an incremental update (:mod:`evac.incremental`)
        instead of a full search, when the change touches at most ``incremental_fraction`` of the nodes
        and the graph has at least ``incremental_min_nodes`` nodes (on a town of a few thousand nodes a
        full search takes a few hundred microseconds, less than the bookkeeping of an update).
    shared_fields
        Keep the fields' search results and the edge factors in the host-wide field store beside the
        mapped network (:mod:`evac.fieldstore`; only for a network loaded with
        :meth:`RoadNetwork.load`): a field another process of the host has computed for the same state
        is mapped instead of searched, and one computed here is published and mapped, so N processes
        hold one copy. Off, for a network built in memory, or for one of fewer than
        ``field_store_min_nodes`` nodes (:data:`FIELD_STORE_MIN_NODES`), each process holds its own.
    """

    def __init__(
        self, network: RoadNetwork, *, shelters: Iterable[Shelter] = (), areas: Iterable[HazardArea] = (),
        alert_levels: Mapping[str, int] | None = None, max_snap_m: float = 500.0,
        warm: Iterable[FieldKey] = (), max_fields: int = 8, search: Search = search_in_process,
        incremental: bool = True, incremental_fraction: float = 0.3,
        incremental_min_nodes: int = INCREMENTAL_MIN_NODES, shared_fields: bool = True,
        field_store_min_nodes: int = FIELD_STORE_MIN_NODES,
    ) -> None:
        self.network = network
        #: The host-wide store of fields and edge factors (None: every array is this process's own).
        self.store: FieldStore | None = None
        if shared_fields and network.mapped_dir is not None and network.n_nodes >= field_store_min_nodes:
            self.store = FieldStore(network.mapped_dir / "fields", network.mapped_key)
            self.store.clean()
        self.max_fields = int(max_fields)
        self._recent: OrderedDict[FieldKey, None] = OrderedDict()  # on-demand keys, least recent first
        self._recent_lock = threading.Lock()
        self._edge_info: dict[tuple[str, int], tuple[int, int, float, float, float, float]] = {}
        self.search = search
        #: Searches run per field key (a field reused unchanged after an update is not counted).
        self.recomputes: Counter[FieldKey] = Counter()
        #: Of those, the ones done by an incremental update.
        self.incremental_updates: Counter[FieldKey] = Counter()
        #: Their work: ``increased``/``decreased`` nodes re-solved, ``worker_searches`` sent to ``search``.
        self.incremental_work: Counter[str] = Counter()
        self.incremental = bool(incremental)
        self.incremental_fraction = float(incremental_fraction)
        self.incremental_min_nodes = int(incremental_min_nodes)
        self.max_snap_m = float(max_snap_m)
        self.warm: set[FieldKey] = set(warm)
        self._update_lock = threading.Lock()
        self._attach_cache: dict[tuple[str, float, float], tuple[float, EdgePoints]] = {}
        self._hit_cache: dict[str, tuple[HazardArea, np.ndarray]] = {}
        self._box_cache: dict[str, tuple[HazardArea, tuple[float, float, float, float]]] = {}
        self._shelter_cache: dict[tuple[str, float, float], _Attachment | None] = {}
        # What a recompute can reuse (see _compute): per set of areas in force, per profile's shelter
        # positions, per search structure; each keyed by exactly the inputs it is built from.
        self._cache_lock = threading.Lock()
        # copies made per change (edge factors, pair weights, fields) reuse arrays nothing refers to any more
        self._pool = ArrayPool()
        self._hazard_indexes: OrderedDict[tuple[int, ...], _HazardIndex] = OrderedDict()  # by id() of the areas
        self._sites: dict[str, _Sites] = {}  # per profile: the latest shelter positions
        # per (profile, hazard): the shelters mapping last seen, its sites, qualifying mask and shelters
        self._picks: dict[tuple[str, str], tuple[Mapping[str, Shelter], _Sites, np.ndarray, list[Shelter]]] = {}
        self._structs: dict[FieldKey, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # per key: ends, indptr, indices
        # per key: the suitable shelters of a field at a state, by AT_SHELTER_M grid cell (:meth:`at_shelter`)
        self._at_cells: dict[FieldKey, tuple[HazardState, Field, _ShelterCells]] = {}
        lon, lat = network.node_lon, network.node_lat
        if len(lon):
            mid = math.radians(float(lat.min() + lat.max()) / 2)
            dlat = AREA_MARGIN_M / 111_320.0
            dlon = dlat / max(math.cos(mid), 0.01)
            self._bounds = (float(lon.min()) - dlon, float(lat.min()) - dlat, float(lon.max()) + dlon,
                            float(lat.max()) + dlat)
        else:
            self._bounds = (math.inf, math.inf, -math.inf, -math.inf)
        self._reach = self._reach_box()
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
        is_open: Mapping[str, bool] | None = None, on_swap: Callable[[HazardState], None] | None = None,
    ) -> HazardState:
        """Apply a change, recompute the fields in use, swap them in; returns the new state.

        Fields in use are ``warm`` and the ``max_fields`` most recently asked for; one whose inputs (the
        areas in force for its exercise mode, the shelters rated for its hazard) did not change is
        carried over without a search.

        ``shelters``/``areas`` replace the whole set; ``add_areas`` adds or replaces areas by id;
        ``alert_levels`` merges gauge levels; ``occupancy``/``is_open`` change shelters by id.

        ``on_swap(state)`` is called in this thread right after the swap, before the fields are published
        to the field store: queries in this process already answer from ``state``, other processes map
        the new entries only once this returns (``bench/evac_scale.py`` times both). It holds the update
        lock: keep it short, and do not call :meth:`update` from it.
        """
        with self._update_lock:
            old = self._snap
            st = old.state
            # unchanged shelters keep their mapping (never changed in place): what is built from it is reused
            shel: Mapping[str, Shelter] = (st.shelters if shelters is None and not occupancy and not is_open
                                           else dict(st.shelters) if shelters is None
                                           else {s.id: s for s in shelters})
            if occupancy or is_open:
                shel = dict(shel)
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
            with self._recent_lock:
                keys = self.warm | set(self._recent)
            unpublished: list[_Unpublished] = []
            try:
                for key in sorted(keys):  # (one order in every process: their entry locks cannot cross)
                    f = old.fields.get(key)
                    if f is not None and self._same_inputs(st, new.state, key):
                        new.fields[key] = replace(f, version=new.state.version)
                    else:
                        self._compute(new, key, prev=f, unpublished=unpublished)
                self._snap = new  # the atomic swap: one reference assignment
                if on_swap is not None:
                    on_swap(new.state)
                if self.store is not None:
                    # published once the new state is in use (writing the files takes longer than an
                    # incremental update: at 3M nodes 91 MB of edge factors and 48 MB per field): the edge
                    # factors first (another process needs them before its fields), then each field, which
                    # drops its own arrays for the mapped ones, holding the same values, so a query reading
                    # either answers the same; another process that needs an entry meanwhile waits for it
                    # (the claim's lock) and then maps it
                    for u in sorted(unpublished, key=lambda u: u.field is not None):
                        if u.field is not None:
                            f = u.field
                            f.dist, f.next_node, f.source = self._share(u.name, u.dig, dist=f.dist,
                                                                        next_node=f.next_node, source=f.source)
                        elif u.mult is not None:
                            self._share(u.name, u.dig, mult=u.mult)
                        u.claim.release()
                    self.store.prune()  # old entries go too
            finally:
                for u in unpublished:
                    u.claim.release()
            return new.state

    @staticmethod
    def _same_inputs(old: HazardState, new: HazardState, key: FieldKey) -> bool:
        """Whether a field of ``key`` is the same at both states: same areas in force, same shelters."""
        _, hazard, exercise = key
        if old.active(exercise=exercise) != new.active(exercise=exercise):
            return False

        if old.shelters is new.shelters:
            return True
        if old.shelters.keys() == new.shelters.keys():
            # an update replaces only the shelters it changes (the others are the same objects): compare
            # those (sorting and comparing every rated shelter cost ~2 ms per field at 5,000 shelters)
            was = old.shelters
            return all(s is (o := was[sid]) or not (s.rated_for(hazard) or o.rated_for(hazard)) or s == o
                       for sid, s in new.shelters.items())

        def rated(st: HazardState) -> list[Shelter]:
            return sorted((s for s in st.shelters.values() if s.rated_for(hazard)), key=lambda s: s.id)

        return rated(old) == rated(new)

    def _touch(self, key: FieldKey) -> None:
        """Mark an on-demand key as just used (warm keys are always kept)."""
        if key in self.warm:
            return
        with self._recent_lock:
            self._recent[key] = None
            self._recent.move_to_end(key)
            while len(self._recent) > self.max_fields:
                self._recent.popitem(last=False)

    def has_field(self, profile: str, hazard: str, exercise: bool) -> bool:
        """Whether the field of a key is computed at the current state (a query then does no search)."""
        return (profile, hazard, exercise) in self._snap.fields

    def computed(self, profile: str, hazard: str, exercise: bool) -> FieldAt | None:
        """The field of a key at the current state with that state, when it is computed (never computes)."""
        snap = self._snap  # (one read: the field and the state it is for belong together)
        f = snap.fields.get((profile, hazard, exercise))
        return None if f is None else FieldAt(snap.state, f)

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
        return self.field_at(profile, hazard, exercise).field

    def field_at(self, profile: str = "walk", hazard: str = "flood", exercise: bool = False) -> FieldAt:
        """:meth:`field` with the state it is for (computed on first use: call it off an event loop). The
        state may be the previous one by the time this returns (an update swapped a new one in meanwhile);
        a query given it (``at=``) still answers for it, consistently."""
        snap = self._snap
        key = (profile, hazard, exercise)
        f = snap.fields.get(key)
        if f is None:
            f = self._compute(snap, key)
            if self.store is not None:
                self.store.prune()
        self._touch(key)
        return FieldAt(snap.state, f)

    def _compute(self, snap: _Snapshot, key: FieldKey, *, prev: Field | None = None,
                 unpublished: list[_Unpublished] | None = None) -> Field:
        """The field of ``key`` at ``snap``'s state (stored in ``snap``).

        Reused, never rebuilt, when their inputs are the same: the hazard index (by the areas in force),
        the weights (by hazard index and profile), the shelters' road points (by shelter positions),
        the hazards applied to them (by sites and hazard index), the source rows (by those and which
        shelters qualify), the search's CSR structure (by source rows). When ``prev`` (the key's field
        at the previous state) has the very same weights and source rows, its search result is reused;
        otherwise, with ``incremental``, it is brought up to date by an incremental update
        (:mod:`evac.incremental`) when the change is local. With a field store, the search result is
        claimed there first (:meth:`FieldStore.claim`: mapped when published, waited for while another
        process computes it); one computed here is published and mapped, or, when ``unpublished`` is
        given, left to the caller (appended to it, with the claim it releases once published), as are the
        edge factors of a new hazard index (:meth:`_hazard_index`).
        """
        profile, hazard, exercise = key
        check_hazard_set(hazard)
        net = self.network
        pg = net.profile(profile)
        with snap.lock:
            if key in snap.fields:
                return snap.fields[key]
            t0 = time.perf_counter()
            hz = self._hazard_index(snap.state.active(exercise=exercise), unpublished=unpublished)
            de_w, pair_w = self._weights(hz, pg)
            prof = PROFILES[profile]
            speed = prof.speed_mps if prof.walking else ACCESS_SPEED_MPS
            shelters, sources, on_edge = self._sources(snap.state, profile, hazard, hz, speed)
            n = net.n_nodes
            k = len(sources)
            inc = None
            tails = Walks()
            # what the search result follows from, besides the network (in the store's key): a change to
            # how it is computed from these must bump evac.fieldstore.STORE_FORMAT
            shared = None if self.store is None or not hz.digest else (  # (no digest: built before the store)
                f"{profile}-{hazard}-{'exercise' if exercise else 'real'}",
                self.store.digest(prof, ACCESS_SPEED_MPS, hz.digest, sources.end, sources.offset, UNREACHABLE_S,
                                  BLOCKED_WEIGHT))
            claim = Claim()  # the entry's lock while this process computes it
            try:
                got = None
                if prev is not None and prev.sources is sources and prev.pair_weight is pair_w:
                    dist, pred, src = prev.dist, prev.next_node, prev.source  # the same search
                    if prev.shelters == shelters and prev.de_weight is de_w:  # and the same shelters: the same walks
                        tails = prev.tails
                    shared = None
                elif shared is not None and self.store is not None and (
                        got := (claim := self.store.claim(*shared)).arrays) is not None:
                    dist, pred, src = got["dist"], got["next_node"], got["source"]  # another process's search
                    shared = None
                elif k and prev is not None and self.incremental and n >= self.incremental_min_nodes and (
                        inc := self._incremental(pg, prev, hz, pair_w, shelters, sources)) is not None:
                    dist, pred, src = (_frozen(a) for a in inc)
                    self.recomputes[key] += 1
                    self.incremental_updates[key] += 1
                elif k:
                    indptr, indices = self._struct(key, pg, sources)
                    nnz = len(pg.rev_indices)
                    data = np.empty(nnz + k)
                    np.take(pair_w.whole(), pg.rev_perm, out=data[:nnz], mode="clip")  # "raise" would buffer
                    np.maximum(sources.offset, 1e-9, out=data[nnz:])
                    dist, pred, src = (_frozen(a) for a in self.search(data, indices, indptr, n, k, UNREACHABLE_S))
                    self.recomputes[key] += 1
                else:
                    dist, pred, src = (_frozen(np.full(n, np.inf)), _frozen(np.full(n, -1, np.int32)),
                                       _frozen(np.full(n, -1, np.int32)))
                if shared is not None and unpublished is None:  # computed here: publish it, keep the mapped copy
                    dist, pred, src = self._share(*shared, dist=dist, next_node=pred, source=src)
                f = Field(profile, hazard, exercise, snap.state.version, _now(), time.perf_counter() - t0, dist,
                          pred, src, shelters, sources, on_edge, hz.mult, de_w, pair_w, hz.blocked, hz.lines, speed,
                          tails)
                if shared is not None and unpublished is not None:
                    # the caller publishes it once the state is swapped in
                    unpublished.append(_Unpublished(*shared, claim, field=f))
                snap.fields[key] = f
                self._touch(key)
                with self._recent_lock:
                    keep = self.warm | set(self._recent)
                for old_key in [k2 for k2 in snap.fields if k2 not in keep]:  # dropped from the on-demand set
                    snap.fields.pop(old_key, None)
                for old_key in [k2 for k2 in list(self._structs) if k2 not in keep]:
                    self._structs.pop(old_key, None)
                return f
            finally:
                if not (unpublished and unpublished[-1].claim is claim):
                    claim.release()  # published (or failed): others may take it

    def _share(self, name: str, dig: str, **arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """``arrays`` (computed here) as the field store's entry ``name``/``dig``, mapped read-only (the
        entry another process published first, when there is one), in the order given."""
        assert self.store is not None
        got = self.store.get(name, dig) or self.store.put(name, dig, arrays)
        return tuple(_frozen(got[k]) for k in arrays)

    def _incremental(self, pg: ProfileGraph, prev: Field, hz: _HazardIndex, pair_w: PairWeights,
                     shelters: list[Shelter], sources: Sources) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """``(dist, pred, src)`` updated from ``prev`` to the weights ``pair_w`` (of ``hz``) and rows
        ``sources``, or ``None`` when the change is not local (the caller then searches the whole graph).

        The pairs that may have changed come from the base edges ``hz`` knows to differ from the
        previous field's factors (:meth:`_HazardIndex.edges_changed_from`); otherwise from comparing
        the whole weight arrays."""
        net = self.network
        n = net.n_nodes
        if len(prev.dist) != n or prev.profile != pg.name:
            return None
        edges = None if pair_w is prev.pair_weight else hz.edges_changed_from(prev.mult)
        if pair_w is prev.pair_weight:
            changed = np.zeros(0, np.int64)
        elif edges is not None:
            changed = pairs_of_edges(pg, net.edge_u, net.edge_v, edges)
        else:
            changed = np.flatnonzero(pair_w.whole() != prev.pair_weight.whole())
        old, new = prev.sources, sources
        rows_same = old is new or (
            len(old) == len(new) and np.array_equal(old.end, new.end) and np.array_equal(old.offset, new.offset)
            and np.array_equal(old.shelter, new.shelter) and [s.id for s in prev.shelters] == [s.id for s in shelters])
        out = update_field(pg, dist=prev.dist, pred=prev.next_node, src=prev.source, old_w=prev.pair_weight,
                           new_w=pair_w, changed=changed, old_seeds=old.seeds, old_end=old.end,
                           new_seeds=new.seeds, rows_same=rows_same, limit=UNREACHABLE_S,
                           search=self.search, max_nodes=int(self.incremental_fraction * n), copy=self._pool.copy)
        if out is None:
            return None
        dist, pred, src, stats = out
        self.incremental_work.update(increased=stats.increased, decreased=stats.decreased,
                                     worker_searches=stats.worker_solves)
        return dist, pred, src

    def _hazard_index(self, active: list[HazardArea], *,
                      unpublished: list[_Unpublished] | None = None) -> _HazardIndex:
        """The hazard index of a set of areas in force (the last :data:`HAZARD_INDEXES` sets are kept).

        A new set starts from the kept index nearest to it (fewest areas added or removed): its edge
        factors are patched on the edges of those areas only (:func:`_patched_mult`: one copy of the
        array, then work in proportion to the edges the change touches). The weights are read from the
        factors (:meth:`_weights`), and the edges changed are remembered for the incremental update of
        the fields (:meth:`_HazardIndex.edges_changed_from`). The factors and weights equal a rebuild
        from nothing (``tests/evac/test_evac_weight_patch.py`` holds them to that).

        With a field store, new factors are published and the index keeps the mapped copy; with
        ``unpublished`` (an update), they are appended to it instead, holding the entry's lock, and the
        index keeps them: the update publishes them once its state is swapped in.
        """
        key = tuple(id(a) for a in active)  # the index holds the areas: their ids stay theirs while it is kept
        with self._cache_lock:
            hit = self._hazard_indexes.get(key)
            if hit is not None:
                self._hazard_indexes.move_to_end(key)
                return hit
            kept = list(self._hazard_indexes.values())
        geoms = self._area_boxes(active)  # the projected boxes, for the line tests' cheap filter
        hits = tuple(self._edge_hits(a) for a, _ in geoms)
        ids = frozenset(key)
        net = self.network
        # the nearest kept set (the most recent of equals): usually the one just before this change
        parent = min(reversed(kept), key=lambda p: len(p.ids ^ ids), default=None)
        with self._cache_lock:  # make room first: the pool can then write the new factors into the oldest's
            for old_key in list(self._hazard_indexes)[:max(0, len(self._hazard_indexes) - HAZARD_INDEXES + 1)]:
                if self._hazard_indexes[old_key] is not parent:
                    del self._hazard_indexes[old_key]
        changed: np.ndarray | None = None
        dig = ""
        claim = Claim()
        if self.store is not None:  # the factors follow from each area's edges, severity and penalty
            parts: list[Any] = []  # (a change to how they are computed from these must bump STORE_FORMAT)
            for a, h in sorted(zip(active, hits, strict=True), key=lambda ah: ah[0].id):
                parts += [a.id, a.severity, float(a.penalty_factor), np.asarray(h, np.int64)]
            dig = self.store.digest("mult", net.n_edges, *parts)
            claim = self.store.claim("mult", dig)  # mapped, or ours to build (others wait meanwhile)
        deferred = False
        try:
            if claim.arrays is not None:  # published by another process: mapped, not built
                mult = claim.arrays["mult"]
                changed = None if parent is None else _edges_between(parent, active, hits)
            elif parent is None:
                mult = self._pool.copy(np.broadcast_to(np.float64(1.0), (net.n_edges,)))
                for a, h in zip(active, hits, strict=True):
                    _apply_area(mult, a, h)
            else:
                mult, changed = _patched_mult(parent, active, hits, self._pool.copy)
            if self.store is not None and claim.arrays is None:
                if unpublished is not None:  # published by the update once its state is in use
                    unpublished.append(_Unpublished("mult", dig, claim, mult=_frozen(mult)))
                    deferred = True
                else:
                    mult = self._share("mult", dig, mult=mult)[0]  # published; the private copy is dropped
        finally:
            if not deferred:
                claim.release()
        idx = _HazardIndex(tuple(active), ids, hits, _frozen(mult), BlockedAreas(active),
                           AreaLines(net, [(a.geometry, b) for a, b in geoms if a.severity == "blocked"],
                                     [(a.geometry, b, a.penalty_factor) for a, b in geoms if a.severity == "penalty"]),
                           digest=dig)
        if parent is not None and changed is not None:
            with self._cache_lock:
                for one, other in ((idx, parent), (parent, idx)):
                    one.edits = [(r, e) for r, e in one.edits if r() is not None][-(EDITS_KEPT - 1):]
                    one.edits.append((weakref.ref(other.mult), changed))
                held = [(name, pw) for name, (_, pw) in parent.weights.items() if pw.held]
            for name, pw in held:  # a small graph's weights: the parent's array with the changed pairs patched
                pg = net.profile(name)
                idx.weights[name] = (DirectedWeights(pg.de_time, pg.de_base, idx.mult, BLOCKED_WEIGHT),
                                     PairWeights.patched(pw, idx.mult, changed))
        with self._cache_lock:
            _lru_put(self._hazard_indexes, key, idx, HAZARD_INDEXES)
        return idx

    def _parent(self, areas: Sequence[HazardArea], ids: frozenset[int],
                usable: Callable[[_HazardIndex], bool]) -> tuple[_HazardIndex, list[HazardArea]] | None:
        """Of the kept hazard indexes whose areas are all among ``areas`` (``ids``: their id()s) and that
        ``usable`` accepts, the one with the most areas, and the areas it lacks (None if there is none)."""
        with self._cache_lock:
            kept = list(self._hazard_indexes.values())
        best: _HazardIndex | None = None
        for p in kept:
            if p.ids != ids and p.ids <= ids and usable(p) and (best is None or len(p.ids) > len(best.ids)):
                best = p
        if best is None:
            return None
        return best, [a for a in areas if id(a) not in best.ids]

    @staticmethod
    def _weights(hz: _HazardIndex, pg: ProfileGraph) -> tuple[DirectedWeights, PairWeights]:
        """``(de_weight, pair_weight)`` of a profile's graph under ``hz`` (cached in it): both read from
        ``hz.mult``, so they cost nothing per change on a large graph (:class:`evac.network.PairWeights`)."""
        hit = hz.weights.get(pg.name)
        if hit is None:
            hit = (DirectedWeights(pg.de_time, pg.de_base, hz.mult, BLOCKED_WEIGHT),
                   PairWeights(pg, hz.mult, BLOCKED_WEIGHT))
            hz.weights[pg.name] = hit
        return hit

    def _edge_hits(self, area: HazardArea) -> np.ndarray:
        """Base edges (sorted) whose geometry meets ``area``, judged in lon/lat
        (:meth:`RoadNetwork.edges_intersecting`), cached per area id while the area's geometry stays the
        same (:func:`_same_geometry`)."""
        hit = self._hit_cache.get(area.id)
        if hit is None or hit[0] is not area:
            hit = (area, hit[1] if hit is not None and _same_geometry(hit[0], area)
                   else _frozen(self.network.edges_intersecting(area.geometry)))
            self._hit_cache[area.id] = hit
        return hit[1]

    def _reach_box(self) -> tuple[float, float, float, float] | None:
        """The lon/lat box ``(west, south, east, north)`` every line the engine tests against an area lies
        in (None: no network): the network's box widened by the furthest a position
        (:data:`AREA_MARGIN_M`) or an attached shelter (``max_snap_m``) may lie from it, and 1 km, at most
        :data:`REACH_MAX_DEG`."""
        n0, n1, n2, n3 = self.network.lonlat_bounds
        if not n0 <= n2:
            return None
        dlat = min((max(AREA_MARGIN_M, self.max_snap_m) + 1000.0) / 111_320.0, REACH_MAX_DEG)
        dlon = min(dlat / max(math.cos(math.radians((n1 + n3) / 2)), 0.01), REACH_MAX_DEG)
        return max(n0 - dlon, -180.0), max(n1 - dlat, -90.0), min(n2 + dlon, 180.0), min(n3 + dlat, 90.0)

    def _projected_box(self, geom: shapely.Geometry) -> tuple[float, float, float, float]:
        """The projected box (metres) of the part of a lon/lat geometry's box within :meth:`_reach_box`
        (:meth:`RoadNetwork.projected_bounds`); an empty box ``(inf, inf, -inf, -inf)`` when they do not
        meet. Far from the projection's zone projected coordinates are distorted past use or infinite: the
        box of an area across half the globe missed the town, or was NaN."""
        g0, g1, g2, g3 = shapely.bounds(geom).tolist()
        reach = self._reach
        if reach is not None:
            g0, g1, g2, g3 = max(g0, reach[0]), max(g1, reach[1]), min(g2, reach[2]), min(g3, reach[3])
        if not (g0 <= g2 and g1 <= g3):
            return math.inf, math.inf, -math.inf, -math.inf
        return self.network.projected_bounds(shapely.box(g0, g1, g2, g3))

    def _area_boxes(self, active: list[HazardArea]) -> list[tuple[HazardArea, tuple[float, float, float, float]]]:
        """Each area in force with its box in the network's projected metres ``(xmin, ymin, xmax, ymax)``
        (:meth:`_projected_box`, widened by :data:`evac.network.BOX_PAD_M` on each side: it
        holds every line straight in metres whose lon/lat form meets the area), cached per area id while
        the area's geometry stays the same (:func:`_same_geometry`)."""
        cache = self._box_cache
        out = []
        for a in active:
            hit = cache.get(a.id)
            if hit is None or hit[0] is not a:
                if hit is not None and _same_geometry(hit[0], a):
                    hit = (a, hit[1])
                else:
                    x0, y0, x1, y1 = self._projected_box(a.geometry)
                    hit = (a, (x0 - BOX_PAD_M, y0 - BOX_PAD_M, x1 + BOX_PAD_M, y1 + BOX_PAD_M))
                cache[a.id] = hit
            out.append((a, hit[1]))
        return out

    def _area_effect(self, sites: _Sites, area: HazardArea,
                     box: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shelters inside ``area``, egress legs and rows (partial edges) touching it, over all of ``sites``
        (cached with the sites per area id while the area's geometry stays the same).

        All three are decided in lon/lat against the area as given (:data:`evac.network.BOUNDARY_RULE`), as
        whole edges are: a shelter by its position, an egress leg from the shelter's position to its road
        point (:meth:`RoadNetwork.point_lonlat`), a partial edge by :meth:`RoadNetwork.part_meets` (on the
        edge's own lon/lat line, as whole edges). The
        legs to test are those of the tree of projected legs whose box meets ``box`` (the area's projected
        box, widened: :meth:`_area_boxes`)."""
        hit = sites.effects.get(area.id)
        if hit is not None and hit[0] is area:
            return hit[1]
        if hit is not None and _same_geometry(hit[0], area):
            sites.effects[area.id] = (area, hit[1])
            return hit[1]
        p_shelter, p_edge, p_along, _, p_qx, p_qy, sx, sy, r_point, _, r_end_along, _, _ = sites.arrays
        net = self.network
        legs = sites.legs
        if legs is None:
            legs = sites.legs = shapely.STRtree(shapely.linestrings(np.stack(
                [np.column_stack([sx[p_shelter], sy[p_shelter]]), np.column_stack([p_qx, p_qy])], axis=1)))
        # one GEOS query for the legs near the area (after a search the caches are cold: one call costs less
        # than numpy box tests), then the exact test of the few found, in lon/lat
        cand = np.sort(legs.query(shapely.box(*box)))
        if len(cand):
            leg_ll = [shapely.LineString([sites.lonlat[int(p_shelter[k])],
                                          net.point_lonlat(int(p_edge[k]), float(p_along[k]),
                                                           (float(p_qx[k]), float(p_qy[k])))])
                      for k in cand.tolist()]
            legs_hit = cand[shapely.intersects(area.geometry, np.array(leg_ll, dtype=object))]
        else:
            legs_hit = cand
        # shelters in lon/lat: a box test, then the exact one (a shelter on a side of the area is inside,
        # which its projected point against the projected area may not be)
        lon, lat = sites.lonlat[:, 0], sites.lonlat[:, 1]
        b0, b1, b2, b3 = shapely.bounds(area.geometry).tolist()
        near = np.flatnonzero((b0 <= lon) & (lon <= b2) & (b1 <= lat) & (lat <= b3))
        pts_in = near[shapely.intersects_xy(area.geometry, lon[near], lat[near])] if len(near) else near
        # rows whose partial edge lies on an edge the area meets
        edges = self._edge_hits(area)
        at = np.searchsorted(sites.row_sorted_edge, edges, side="left")
        span = np.searchsorted(sites.row_sorted_edge, edges, side="right") - at
        if span.any():
            rows = np.sort(sites.row_sort[np.repeat(at - (np.cumsum(span) - span), span) + np.arange(span.sum())])
            meets = [net.part_meets(int(p_edge[r_point[k]]), float(r_end_along[k]), float(p_along[r_point[k]]),
                                    area.geometry) for k in rows.tolist()]
            rows_hit = rows[np.array(meets, bool)]
        else:
            rows_hit = np.zeros(0, np.int64)
        effect = (pts_in, legs_hit, rows_hit)
        if len(sites.effects) > 10_000:
            sites.effects.clear()
        sites.effects[area.id] = (area, effect)
        return effect

    def attach(self, lon: float, lat: float, *, profile: str) -> tuple[float, EdgePoints]:
        """Distance to the nearest usable edge and the edge points within :data:`TIE_M` of it.

        Raises nothing; an empty graph gives ``(inf, empty)``.
        """
        key = (profile, lon, lat)
        hit = self._attach_cache.get(key)
        if hit is None:
            x, y = self.network.project_point(lon, lat)
            idx = self.network.profile(profile).index
            d0 = idx.nearest_distance(x, y)
            pts = idx.within(x, y, d0 + TIE_M) if np.isfinite(d0) else idx.within(x, y, 0.0)
            hit = (d0, pts)
            if len(self._attach_cache) > 200_000:
                self._attach_cache.clear()
            self._attach_cache[key] = hit
        return hit

    def _attachment(self, s: Shelter, profile: str) -> _Attachment | None:
        """Where a shelter meets a profile's roads, before hazards (cached by position)."""
        key = (profile, s.lon, s.lat)
        hit = self._shelter_cache.get(key)
        if hit is not None or key in self._shelter_cache:
            return hit
        d0, pts = self.attach(s.lon, s.lat, profile=profile)
        att = None
        if d0 <= self.max_snap_m:
            net = self.network
            sx, sy = net.project_point(s.lon, s.lat)
            e = pts.edge.astype(np.int64)
            plen = net.edge_plen[e]
            frac = np.divide(pts.along, plen, out=np.zeros(len(e)), where=plen > 0).clip(0.0, 1.0)
            fwd, bwd = net.times[profile]
            # rows: from end u (walking along the edge to the point), from end v (against it)
            with np.errstate(invalid="ignore"):
                t_u = np.where(frac > 0, fwd[e] * frac, 0.0)
                t_v = np.where(frac < 1, bwd[e] * (1 - frac), 0.0)
            point = np.concatenate([np.arange(len(e)), np.arange(len(e))])
            end = np.concatenate([net.edge_u[e], net.edge_v[e]]).astype(np.int32)
            end_along = np.concatenate([np.zeros(len(e)), plen])
            ps = np.concatenate([t_u, t_v])
            pm = np.concatenate([net.edge_length[e] * frac, net.edge_length[e] * (1 - frac)])
            ok = np.isfinite(ps)
            att = _Attachment(float(sx), float(sy), pts, point[ok], end[ok], end_along[ok], ps[ok], pm[ok])
        if len(self._shelter_cache) > 100_000:
            self._shelter_cache.clear()
        self._shelter_cache[key] = att
        return att

    def _sources(self, st: HazardState, profile: str, hazard: str, hz: _HazardIndex,
                 speed: float) -> tuple[list[Shelter], Sources, Stops]:
        """Qualifying shelters attached to the graph, their source rows and their stops per edge (hazards
        applied: a shelter in a blocked area, a blocked egress leg or a blocked partial edge gives no row).

        Built from the profile's :class:`_Sites` (all shelters' road points) and the hazard index's
        effect on them, both cached; here only the qualifying shelters are picked (open, rated for
        ``hazard``, not full), and that pick is cached too.
        """
        pick = self._picks.get((profile, hazard))
        if pick is not None and pick[0] is st.shelters and pick[1] is self._sites.get(profile):
            _, sites, cand, shelters = pick
        else:
            ordered = sorted(st.shelters.values(), key=lambda s: s.id)
            sites = self._sites_for(profile, ordered)
            cand = np.fromiter((s.is_open and s.rated_for(hazard) and not s.is_full
                                for s in (ordered[i] for i in sites.attached.tolist())), bool, len(sites.attached))
            shelters = [ordered[i] for i in sites.attached[cand].tolist()]
            self._picks[(profile, hazard)] = (st.shelters, sites, cand, shelters)
        shelters = list(shelters)
        rows = self._site_rows(sites, hz, speed)
        skey = (id(rows), cand.tobytes())
        with self._cache_lock:
            hit = sites.sources.get(skey)
            if hit is not None:
                sites.sources.move_to_end(skey)
                return shelters, hit[1], hit[2]
        p_shelter, p_edge, p_along, p_dist, _, _, _, _, r_point, r_end, r_end_along, _, r_pm = sites.arrays
        field_index = (np.cumsum(cand) - 1).astype(np.int32)  # attached shelter -> index in ``shelters``
        pt_cand = cand[p_shelter]
        r = np.flatnonzero(rows.ok & pt_cand[r_point])
        rp = r_point[r]
        ps, egress = rows.partial_s[r], rows.egress_s[rp]
        src = Sources(field_index[p_shelter[rp]], r_end[r], p_edge[rp], p_along[rp], r_end_along[r], ps, r_pm[r],
                      egress, p_dist[rp], ps + egress)
        ok = pt_cand & np.isfinite(rows.egress_s)
        order = np.flatnonzero(ok)[np.argsort(p_edge[ok], kind="stable")]
        has = np.zeros(self.network.n_edges, bool)
        has[p_edge[order]] = True
        stops = Stops(p_edge[order], field_index[p_shelter[order]], p_along[order], rows.egress_s[order],
                      p_dist[order], has)
        with self._cache_lock:
            _lru_put(sites.sources, skey, (rows, src, stops), SOURCE_SETS)
        return shelters, src, stops

    def _sites_for(self, profile: str, ordered: list[Shelter]) -> _Sites:
        """The road points of every shelter in ``ordered`` (sorted by id) for a profile, kept while the
        shelters' ids and positions stay the same."""
        key = tuple((s.id, s.lon, s.lat) for s in ordered)
        sites = self._sites.get(profile)
        if sites is not None and sites.key == key:
            return sites
        atts = [self._attachment(s, profile) for s in ordered]
        attached = np.array([i for i, a in enumerate(atts) if a is not None], np.int64)
        arrays = self._concat([a for a in atts if a is not None])
        row_edge = arrays[1][arrays[8]]
        order = np.argsort(row_edge, kind="stable")
        lonlat = np.array([key[i][1:] for i in attached.tolist()], float).reshape(-1, 2)
        sites = _Sites(key, attached, arrays, _frozen(order), _frozen(row_edge[order]), _frozen(lonlat))
        self._sites[profile] = sites
        return sites

    def _site_rows(self, sites: _Sites, hz: _HazardIndex, speed: float) -> _SiteRows:
        """The areas of ``hz`` applied to every point and row of ``sites`` (cached with the sites).

        Per area (its effect cached while the area and the sites stay the same): which shelters it
        covers, which egress legs and which partial edges it touches; blocked wins, else the largest
        penalty. From the rows of a kept index with fewer areas when there are some.
        """
        with self._cache_lock:
            hit = sites.rows.get(id(hz))
            if hit is not None and hit[0] is hz:
                sites.rows.move_to_end(id(hz))
                return hit[1]
        p_shelter, p_edge, _, p_dist, _, _, sx, _, r_point, _, _, r_ps0, _ = sites.arrays

        def kept(p: _HazardIndex) -> _SiteRows | None:
            entry = sites.rows.get(id(p))
            return entry[1] if entry is not None and entry[0] is p else None

        found = self._parent(hz.areas, hz.ids, lambda p: kept(p) is not None)
        prev = None if found is None else kept(found[0])
        if found is None or prev is None:
            areas = list(hz.areas)
        else:
            areas = found[1]
        effects = [(area, self._area_effect(sites, area, box)) for area, box in self._area_boxes(areas)]
        if prev is not None and not any(len(x) for _, eff in effects for x in eff):
            rows = prev  # the new areas touch no shelter, leg or partial edge: the same rows (and source rows)
        else:
            if prev is None:
                leg, r_fac, inside = np.ones(len(p_edge)), np.ones(len(r_point)), np.zeros(len(sx), bool)
            else:
                leg, r_fac, inside = prev.leg.copy(), prev.r_fac.copy(), prev.inside.copy()
            for area, (pts_in, legs_hit, rows_hit) in effects:
                if area.severity == "blocked":
                    inside[pts_in] = True
                    leg[legs_hit] = np.inf
                    r_fac[rows_hit] = np.inf
                else:
                    leg[legs_hit] = np.maximum(leg[legs_hit], area.penalty_factor)
                    r_fac[rows_hit] = np.maximum(r_fac[rows_hit], area.penalty_factor)
            eff = np.where(inside[p_shelter], np.inf, leg)
            egress_s = np.where(np.isfinite(eff), p_dist / speed * np.where(np.isfinite(eff), eff, 1.0), np.inf)
            with np.errstate(invalid="ignore"):  # 0 s (a point at the node) times inf: no partial edge to block
                r_ps = np.where(r_ps0 > 0, r_ps0 * r_fac, r_ps0)
            rows = _SiteRows(_frozen(leg), _frozen(inside), _frozen(r_fac), _frozen(egress_s), _frozen(r_ps),
                             _frozen(np.isfinite(r_ps) & np.isfinite(egress_s[r_point])))
        with self._cache_lock:
            _lru_put(sites.rows, id(hz), (hz, rows), HAZARD_INDEXES)  # hz kept: its id() stays its own
        return rows

    def _struct(self, key: FieldKey, pg: ProfileGraph, sources: Sources) -> tuple[np.ndarray, np.ndarray]:
        """``(indptr, indices)`` of the search's CSR for a key: the reversed graph plus one virtual node per
        source row (kept while the source rows are the same object)."""
        hit = self._structs.get(key)
        if hit is not None and (hit[0] is sources.end or np.array_equal(hit[0], sources.end)):
            return hit[1], hit[2]
        k = len(sources)
        rev = pg.rev_indptr
        small = rev[-1] + k < np.iinfo(np.int32).max  # int32 when it fits: scipy would convert it anyway
        dt = np.int32 if small else np.int64
        indptr = np.concatenate([rev, rev[-1] + np.arange(1, k + 1)]).astype(dt)
        indices = np.concatenate([pg.rev_indices, sources.end]).astype(np.int32)
        self._structs[key] = (sources.end, _frozen(indptr), _frozen(indices))
        return indptr, indices

    @staticmethod
    def _concat(atts: list[_Attachment]) -> tuple[np.ndarray, ...]:
        """The attachments of a set of shelters as flat arrays.

        Returns ``p_shelter, p_edge, p_along, p_dist, p_qx, p_qy`` per road point ``(M,)`` (``p_shelter``
        indexes ``atts``), ``sx, sy`` per shelter ``(S,)`` and ``r_point, r_end, r_end_along, r_ps, r_pm``
        per row ``(R,)`` (see :class:`_Attachment`).
        """
        if not atts:
            z, zi = np.zeros(0), np.zeros(0, np.int32)
            return (zi, zi, z, z, z, z, z, z, zi, zi, z, z, z)
        n_pts = np.array([len(a.pts) for a in atts])
        base = np.concatenate([[0], np.cumsum(n_pts)[:-1]]).astype(np.int64)
        arrays = (
            np.repeat(np.arange(len(atts)), n_pts),
            np.concatenate([a.pts.edge for a in atts]).astype(np.int32),
            np.concatenate([a.pts.along for a in atts]),
            np.concatenate([a.pts.dist for a in atts]),
            np.concatenate([a.pts.x for a in atts]),
            np.concatenate([a.pts.y for a in atts]),
            np.array([a.sx for a in atts]),
            np.array([a.sy for a in atts]),
            np.concatenate([a.point + base[i] for i, a in enumerate(atts)]),
            np.concatenate([a.end for a in atts]).astype(np.int32),
            np.concatenate([a.end_along for a in atts]),
            np.concatenate([a.partial_s for a in atts]),
            np.concatenate([a.partial_m for a in atts]),
        )
        return tuple(_frozen(a) for a in arrays)

    # -- queries ------------------------------------------------------------------------------------
    def route_result(
        self, lat: float, lon: float, *, profile: str = "walk", hazard: str = "flood", exercise: bool = False,
        at_shelter: bool = True, at: FieldAt | None = None,
    ) -> RouteResult:
        """The nearest safe shelter by total walk, from the nearest usable road (the core query).

        ``at_shelter``: a position within :data:`AT_SHELTER_M` of a suitable shelter answers ``at_shelter``
        (:meth:`at_shelter`); False walks from the road all the same (capacity planning, the other shelters
        near a resident who is at one). ``at``: answer from this field and state (see :meth:`route_start`).
        """
        start = self.route_start(lat, lon, profile=profile, hazard=hazard, exercise=exercise, at_shelter=at_shelter,
                                 at=at)
        if isinstance(start, RouteResult):
            return start
        f = start.field
        path = f.path(start.end)
        last, shelter, egress_m, egress_s = self.route_exit(f, path[-1])
        return RouteResult("ok", path, start.duration_s, shelter, start.snap_distance_m, f, start.state, (),
                           start.origin, start.access_s, start.first, last, egress_m, egress_s)

    def route_exit(self, f: Field, node: int) -> tuple[Partial, Shelter, float, float]:
        """Where a walk along ``f``'s next hops leaves the graph at ``node`` (the last node of a
        :meth:`Field.path`): the partial edge from it to the shelter's road point, the shelter, and the
        egress leg's metres and seconds."""
        row = int(f.next_node[node]) - self.network.n_nodes
        src = f.sources
        last = Partial(int(src.edge[row]), float(src.end_along[row]), float(src.along[row]),
                       float(src.partial_s[row]), float(src.partial_m[row]))
        return last, f.shelters[int(src.shelter[row])], float(src.egress_m[row]), float(src.egress_s[row])

    def route_start(
        self, lat: float, lon: float, *, profile: str = "walk", hazard: str = "flood", exercise: bool = False,
        at_shelter: bool = True, at: FieldAt | None = None,
    ) -> RouteResult | RouteStart:
        """:meth:`route_result` up to the node where the walk joins the field's next hops.

        Returns the complete :class:`RouteResult` when there is no such node (every status but ``ok``,
        and ``ok`` straight along the resident's own edge to a shelter on it), else a :class:`RouteStart`
        (the walk from its ``end`` node on is the field's: the same for every position that joins there).
        A position at a suitable shelter (:meth:`at_shelter`, unless ``at_shelter`` is False) is answered
        ``at_shelter``: that shelter, 0 s, no walk; after ``inside_hazard`` and ``outside_area``, before
        the roads are looked at (a shelter far from any road is still where the resident is).

        ``at`` (a :class:`FieldAt` of this key): answer from that field at that state and never compute;
        without it, from the current state's field, computed here when it is not yet (a search: never on
        an event loop).
        """
        key = (profile, hazard, exercise)
        if at is None:
            snap = self._snap
            f = snap.fields.get(key)
            if f is None:
                f = self._compute(snap, key)
                if self.store is not None:
                    self.store.prune()
            st = snap.state
        else:
            st, f = at
            if (f.profile, f.hazard, f.exercise) != key:
                raise ValueError(f"the field given is for {(f.profile, f.hazard, f.exercise)}, not {key}")
        self._touch(key)
        here = tuple(f.blocked.at(lon, lat))
        if here:
            return RouteResult("inside_hazard", [], math.inf, None, math.nan, f, st, here)
        if not self.in_area(lat, lon):
            return RouteResult("outside_area", [], math.inf, None, math.nan, f, st)
        net = self.network
        x, y = net.project_point(lon, lat)
        if at_shelter and (there := self._at_shelter(key, f, st, lon, lat, x, y)) is not None:
            return RouteResult("at_shelter", [], 0.0, there, 0.0, f, st, (), (float(lon), float(lat)))
        idx = net.profile(profile).index
        if idx.empty:
            return RouteResult("off_network", [], math.inf, None, math.inf, f, st)
        # most positions are near a road: one ball query of FIRST_LOOK_M covers the nearest and its band
        pts = idx.near(x, y, FIRST_LOOK_M)
        if not pts or pts[0][0] + TIE_M > FIRST_LOOK_M:
            dmid = idx.nearest_distance(x, y)
            pts = idx.near(x, y, dmid + TIE_M)
            if not pts:
                return RouteResult("off_network", [], math.inf, None, dmid, f, st)
        d_near = pts[0][0]
        if d_near > self.max_snap_m:
            return RouteResult("off_network", [], math.inf, None, d_near, f, st)
        if not f.shelters:  # a set of hazards: none is rated for all of them (each may have its own)
            status = "no_shelter_for_all_hazards" if "," in hazard else "no_shelter_in_area"
            return RouteResult(status, [], math.inf, None, d_near, f, st)
        band = d_near + TIE_M
        options = [self._best_from(f, lon, lat, x, y, e, along, d, qx, qy) for d, along, _, e, qx, qy in pts
                   if d <= band]
        if options[0] is None:  # the nearest road gives no safe way: look further, up to SEARCH_M
            wide = idx.near(x, y, max(SEARCH_M, d_near + TIE_M))
            options = []
            d_valid = math.inf
            for d, along, _, e, qx, qy in wide:  # nearest first: stop TIE_M beyond the first road with a safe way
                if d > d_valid + TIE_M:
                    break
                o = self._best_from(f, lon, lat, x, y, e, along, d, qx, qy)
                if o is not None:
                    d_valid = min(d_valid, o[1])
                    options.append(o)
        best = min((o for o in options if o is not None), key=lambda o: o[0], default=None)
        if best is None:
            return RouteResult("no_safe_route", [], math.inf, None, d_near, f, st)
        total, d, access_s, (e, a, b, ps, pm), end, stop = best
        first = Partial(e, a, b, ps, pm)
        if stop is not None:  # straight along the resident's own edge to the shelter
            return RouteResult("ok", [], total, f.shelters[stop.shelter], d, f, st, (), (float(lon), float(lat)),
                               access_s, first, None, stop.egress_m, stop.egress_s)
        return RouteStart(total, d, f, st, (float(lon), float(lat)), access_s, first, end)

    def at_shelter(self, lat: float, lon: float, *, profile: str = "walk", hazard: str = "flood",
                   exercise: bool = False, at: FieldAt | None = None) -> Shelter | None:
        """The suitable shelter a resident at (``lat``, ``lon``) (degrees, WGS 84) is at, or None.

        Suitable as a route's shelter is (the same pick as the field's, :meth:`_sources`): open, rated for
        ``hazard`` by its GSI flags (``Shelter.hazards``), not full; and neither it nor the straight line from
        the position to it touches a blocked area in force (``exercise`` picks the areas, as for routes), by
        the one boundary rule (``evac.network.BOUNDARY_RULE``). "At" is within :data:`AT_SHELTER_M` metres
        (straight, in the network's projected CRS); of several, the nearest (then the least id). Shelters
        need not lie on the road network. Raises ``ValueError`` for an unknown profile or hazard, as routes.
        ``at``: from that field and state, computing nothing (:meth:`route_start`).
        """
        st, f = at if at is not None else self.field_at(profile, hazard, exercise)
        if (f.profile, f.hazard, f.exercise) != (profile, hazard, exercise):
            raise ValueError(f"the field given is for {(f.profile, f.hazard, f.exercise)}, not "
                             f"{(profile, hazard, exercise)}")
        x, y = self.network.project_point(lon, lat)
        return self._at_shelter((profile, hazard, exercise), f, st, lon, lat, x, y)

    def _at_shelter(self, key: FieldKey, f: Field, st: HazardState, lon: float, lat: float, x: float,
                    y: float) -> Shelter | None:
        """:meth:`at_shelter` for field ``f`` at state ``st``, the position also projected (``x``, ``y``)."""
        hit = self._at_cells.get(key)
        if hit is None or hit[0] is not st or hit[1] is not f:
            hit = (st, f, self._shelter_cells(f, st))
            self._at_cells[key] = hit
        cells = hit[2]
        if not cells:
            return None
        r = AT_SHELTER_M
        cx, cy = math.floor(x / r), math.floor(y / r)
        best: tuple[float, str, Shelter] | None = None
        for i in (cx - 1, cx, cx + 1):
            for j in (cy - 1, cy, cy + 1):
                for sx, sy, s in cells.get((i, j), ()):
                    d = math.hypot(sx - x, sy - y)
                    if d <= r and (best is None or (d, s.id) < best[:2]):
                        if f.lines and f.lines.factor_lonlat(np.array([[lon, lat], [s.lon, s.lat]])) == math.inf:
                            continue  # a blocked area between: walk around it by the roads
                        best = (d, s.id, s)
        return None if best is None else best[2]

    def _shelter_cells(self, f: Field, st: HazardState) -> _ShelterCells:
        """The shelters a resident may be told they are at, for field ``f`` at ``st``, by grid cell."""
        hazard = f.hazard
        found = [s for s in st.shelters.values() if s.is_open and s.rated_for(hazard) and not s.is_full]
        if f.blocked and found:
            inside = f.blocked.contains_many(np.array([s.lon for s in found]), np.array([s.lat for s in found]))
            found = [s for s, bad in zip(found, inside.tolist(), strict=True) if not bad]
        cells: _ShelterCells = {}
        r = AT_SHELTER_M
        for s in found:
            sx, sy = self.network.project_point(s.lon, s.lat)
            cells.setdefault((math.floor(sx / r), math.floor(sy / r)), []).append((float(sx), float(sy), s))
        return cells

    def _edge(self, profile: str, e: int) -> tuple[int, int, float, float, float, float]:
        """Base edge ``e`` as plain numbers for a query: its nodes ``u``, ``v``, projected length, the
        profile's seconds along and against it, and its metres (kept: :data:`EDGE_INFO_CACHE`)."""
        key = (profile, e)
        got = self._edge_info.get(key)
        if got is None:
            net = self.network
            fwd, bwd = net.times[profile]
            got = (int(net.edge_u[e]), int(net.edge_v[e]), net_edge_plen(net, e), float(fwd[e]), float(bwd[e]),
                   float(net.edge_length[e]))
            if len(self._edge_info) >= EDGE_INFO_CACHE:
                self._edge_info.clear()
            self._edge_info[key] = got
        return got

    def _best_from(self, f: Field, lon: float, lat: float, x: float, y: float, e: int, along: float, dist: float,
                   qx: float, qy: float) -> tuple[float, float, float, tuple[int, float, float, float, float], int,
                                                  Stop | None] | None:
        """Least total time from the position (``lon``, ``lat``; projected ``x``, ``y``) leaving from point
        ``along`` of edge ``e`` (projected ``qx``, ``qy``, ``dist`` metres away): (total, access m,
        access s, first partial as ``(edge, a, b, seconds, metres)``, end node or -1 for a shelter on the
        same edge, that shelter's stop). :func:`part_cost` on the edge's numbers kept as floats; the access
        leg and the partial edge are tested against the areas in lon/lat (:class:`AreaLines`), only when
        an area is near."""
        lines = f.lines
        any_lines = bool(lines)
        leg = lines.leg_factor(x, y, qx, qy, lon, lat, e, along) if any_lines else 1.0
        if leg == math.inf:
            return None
        access_s = dist / f.access_speed * leg
        u, v, plen, t_fwd, t_bwd, length = self._edge(f.profile, e)
        mult = f.mult
        # on an edge the areas touch, the part itself is tested (partial_cost); else its factor is 1
        touched = any_lines and mult is not None and mult[e] != 1.0

        def factor_to(b: float) -> Callable[[], float] | None:
            return (lambda: lines.part_factor(e, along, b)) if touched else None

        dist_to = f.dist
        best: tuple[float, float, float, tuple[int, float, float, float, float], int, Stop | None] | None = None
        for end, end_along in ((u, 0.0), (v, plen)):
            d_end = float(dist_to[end])
            if not d_end < UNREACHABLE_S:
                continue
            if touched:
                ps, pm = part_cost(along, end_along, plen, t_fwd, t_bwd, length, factor_to(end_along))
            else:  # part_cost without a factor, inline (most candidates: no area near; issue #21)
                span = abs(end_along - along)
                if span <= 1e-9:
                    ps = pm = 0.0
                else:
                    frac = min(1.0, span / plen) if plen > 0 else 0.0
                    t = t_fwd if end_along > along else t_bwd
                    if not math.isfinite(t):
                        continue  # part_cost's inf: never the best
                    ps, pm = t * frac, length * frac
            total = access_s + ps + d_end
            if math.isfinite(total) and (best is None or total < best[0]):
                best = (total, dist, access_s, (e, along, end_along, ps, pm), end, None)
        if not f.stops.has[e]:
            return best
        for stop in f.stops.on(e):
            ps, pm = part_cost(along, stop.along, plen, t_fwd, t_bwd, length, factor_to(stop.along))
            total = access_s + ps + stop.egress_s
            if math.isfinite(total) and (best is None or total < best[0]):
                best = (total, dist, access_s, (e, along, stop.along, ps, pm), -1, stop)
        return best

    def in_area(self, lat: float, lon: float) -> bool:
        """Whether a position lies within the network's bounding box widened by :data:`AREA_MARGIN_M`."""
        b = self._bounds
        return b[0] <= lon <= b[2] and b[1] <= lat <= b[3]

    def nearest_shelters(
        self, lat: float, lon: float, *, k: int = 3, profile: str = "walk", hazard: str = "flood",
        exercise: bool = False, include_full: bool = False, route: RouteResult | None = None,
        at: FieldAt | None = None,
    ) -> list[dict[str, Any]]:
        """The ``k`` nearest qualifying shelters with travel times (full ones skipped unless asked).

        Times run from the same road point as :meth:`route_result` (access leg included) to each shelter
        (its last partial edge and egress leg included). ``route``: that :meth:`route_result`, when the
        caller has it already (it must be for the same position, profile, hazard and exercise flag; an
        ``at_shelter`` one is walked from the road again, ``at_shelter=False``). ``at``: from that field and
        state (:meth:`route_start`); ``include_full`` still computes a field of its own (a search).
        """
        r = route if route is not None else self.route_result(lat, lon, profile=profile, hazard=hazard,
                                                                exercise=exercise, at_shelter=False, at=at)
        if r.status == "at_shelter":  # times from the road all the same: the shelter it is at is one of them
            r = self.route_result(lat, lon, profile=profile, hazard=hazard, exercise=exercise, at_shelter=False,
                                  at=at if at is not None else FieldAt(r.state, r.field))
        if r.status != "ok" or r.first is None:
            return []
        f = r.field
        st = r.state
        net = self.network
        if include_full:
            full = [s for s in st.shelters.values() if s.is_full and s.is_open and s.rated_for(hazard)]
            if full:
                f = self._compute(_Snapshot(HazardState(st.version, st.changed_at, {
                    s.id: replace(s, occupancy=0) if s.is_full else s for s in st.shelters.values()},
                    st.areas, st.alert_levels)), (profile, hazard, exercise))
                f = replace(f, version=r.field.version)
        src = f.sources
        if not len(src):
            return []
        starts, direct = self.starts(r, f)
        best: dict[int, float] = {}
        if starts:
            csr = net.profile(profile).forward_csr(f.pair_weight)
            dist = np.atleast_2d(dijkstra(csr, directed=True, indices=[s for s, _ in starts], limit=UNREACHABLE_S))
            for i, (_, off) in enumerate(starts):
                tot = off + dist[i][src.end] + src.offset
                for row in np.flatnonzero(tot < UNREACHABLE_S).tolist():
                    j = int(src.shelter[row])
                    best[j] = min(best.get(j, math.inf), float(tot[row]))
        for j, tot in direct:
            best[j] = min(best.get(j, math.inf), tot)
        ranked = sorted((t, f.shelters[j].id, j) for j, t in best.items())[:k]
        return [{"duration_s": round(t, 1), "shelter": f.shelters[j].to_dict(), "hazard_version": r.field.version}
                for t, _, j in ranked]

    def starts(self, r: RouteResult, f: Field | None = None) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
        """Where an ``ok`` answer's walk joins the graph: ``(node, seconds to it)`` for each end of its first
        edge that is safe to walk to, and ``(shelter index, total seconds)`` for shelters on that same edge."""
        f = f or r.field
        assert r.first is not None
        net = self.network
        e = r.first.edge
        plen = net_edge_plen(net, e)
        out: list[tuple[int, float]] = []
        for end, end_along in ((int(net.edge_u[e]), 0.0), (int(net.edge_v[e]), plen)):
            ps, _ = partial_cost(net, f.profile, f.mult, f.lines, e, r.first.a, end_along, plen)
            if math.isfinite(ps):
                out.append((end, r.access_s + ps))
        direct: list[tuple[int, float]] = []
        for stop in f.stops.on(e):
            ps, _ = partial_cost(net, f.profile, f.mult, f.lines, e, r.first.a, stop.along, plen)
            if math.isfinite(ps):
                direct.append((stop.shelter, r.access_s + ps + stop.egress_s))
        return out, direct

    def source_graph(self, f: Field) -> csr_matrix:
        """The reversed graph of ``f`` with one virtual node ``n + k`` per source row ``k`` (see :class:`Sources`)."""
        n = self.network.n_nodes
        k = len(f.sources)
        rev = self.network.profile(f.profile).reverse_csr(f.pair_weight)
        indptr = np.concatenate([rev.indptr, rev.indptr[-1] + np.arange(1, k + 1)])
        return csr_matrix((np.concatenate([rev.data, np.maximum(f.sources.offset, 1e-9)]),
                           np.concatenate([rev.indices, f.sources.end]).astype(np.int32), indptr),
                          shape=(n + k, n + k))


def net_edge_plen(net: RoadNetwork, e: int) -> float:
    """Projected length of base edge ``e`` (metres in the network's CRS)."""
    return float(net.edge_plen[e])


def partial_cost(net: RoadNetwork, profile: str, mult: np.ndarray | None, lines: AreaLines, e: int, a: float,
                 b: float, plen: float) -> tuple[float, float]:
    """Seconds and metres from ``a`` to ``b`` projected metres along base edge ``e``.

    Along the edge when ``b > a`` (its forward time), against it otherwise: that fraction of the edge's
    time and length. ``mult`` holds the hazard multipliers per base edge (``None``: no areas in force).
    On an edge the areas touch, the part itself is tested against them (:meth:`AreaLines.part_factor`, in
    lon/lat), so the dry part of a flooded street stays usable.
    """
    fwd, bwd = net.times[profile]
    touched = mult is not None and mult[e] != 1.0
    return part_cost(a, b, plen, float(fwd[e]), float(bwd[e]), float(net.edge_length[e]),
                     (lambda: lines.part_factor(e, a, b)) if touched else None)


def part_cost(a: float, b: float, plen: float, t_fwd: float, t_bwd: float, length: float,
              factor: Callable[[], float] | None) -> tuple[float, float]:
    """:func:`partial_cost` on an edge's numbers: seconds and metres from ``a`` to ``b`` projected metres
    along an edge of projected length ``plen``, whole-edge seconds ``t_fwd`` along and ``t_bwd`` against
    it, and ``length`` metres; ``factor`` gives the hazard factor of that part (None: 1, the areas do not
    touch the edge), asked only when the part is walkable."""
    span = abs(b - a)
    if span <= 1e-9:
        return 0.0, 0.0
    frac = min(1.0, span / plen) if plen > 0 else 0.0
    t = t_fwd if b > a else t_bwd
    if not math.isfinite(t):
        return math.inf, math.inf
    return t * frac * (factor() if factor is not None else 1.0), length * frac
