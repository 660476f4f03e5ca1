"""Incremental update of a nearest-shelter field after a local change (issue #21 item 3).

A field (see :mod:`evac.engine`) is a shortest-path forest over the *reversed* profile graph: every
node ``v`` has ``dist[v]`` (seconds to the nearest qualifying shelter), ``pred[v]`` (its next hop: a node,
or ``n + k`` for source row ``k``) and ``src[v]`` (the source row its route ends through). A hazard area
that cuts a few roads, or a shelter that closes or opens, changes that forest only near the change.
:func:`update_field` brings an exact field from the old inputs to the new ones in two phases, as in the
classic dynamic shortest-path algorithms (Ramalingam & Reps 1996; Frigioni, Marchetti-Spaccamela &
Nanni 2000), with numpy doing the set work and scipy's Dijkstra the searches:

1. **Increases** (weights raised, source rows dearer or gone). With the weights ``max(old, new)`` and
   each node's seed the larger of its old and new one, only nodes whose route used a raised edge or a
   dearer seed can change: the *subtree* below those edges in the next-hop tree, found level by level
   (children of ``a`` are the tails ``t`` of its reversed-graph row with ``pred[t] == a``). Those nodes
   are solved again by :func:`solve_region`.
2. **Decreases** (weights lowered, new or cheaper source rows). A label-correcting sweep from the
   improved edges' tails and the improved seeds, relaxing only while a distance improves, finds the
   nodes whose distance drops; they are solved again by :func:`solve_region` for exact next hops.

:func:`solve_region` solves a set ``A`` of nodes when every node outside ``A`` is final: a graph of ``A``'s
internal edges plus one virtual source per way out of ``A`` (an edge to a node outside, at that node's
distance plus the edge, or a source row ending in ``A``). Every shortest route from a node of ``A`` runs
inside ``A`` and leaves it once, through one of those, so the answer is exact; it is computed by the same
:class:`evac.search.Search` as the full field (in this process for a small region, in the worker process
for a large one), and the distances are the same sums in the same order as a full search's.

Either phase gives up (returns ``None``) when it would touch more than ``max_nodes`` nodes; the caller
then recomputes the whole field. The full recompute stays the oracle (``tests/evac/test_evac_incremental.py``).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from evac.network import PairWeights, ProfileGraph, rows_of
from evac.search import Search, search_in_process

#: Regions up to this many nodes are solved in the calling process (a few milliseconds of scipy holding
#: the GIL); larger ones go to the field's search (the worker process, when the server runs one).
IN_PROCESS_NODES = 50_000
#: The improving sweep gives up after this many visits per node it may improve.
SWEEP_VISITS = 4

Copy = Callable[[np.ndarray], np.ndarray]
#: Pair weights: an array, or computed when read (:class:`evac.network.PairWeights`).
Weights = np.ndarray | PairWeights


class ArrayPool:
    """Copies of large arrays, written into arrays handed out before that nothing refers to any more.

    Every hazard change copies the edge factors ``(E,)``, each profile's pair weights ``(P,)`` and three
    ``(n,)`` arrays per field, and changes only a few entries of each. A fresh array of tens of
    megabytes costs a page fault per page when first written: measured on the 2-core VM in a process
    that has churned through gigabytes, 1-3 ms per MB, ten times the copy itself (260 ms for one
    pair-weight array at 3M nodes). Copying into an array that has been written before costs only the copy.

    An array handed out is free again when only the pool refers to it: CPython's reference count,
    compared with that of a sentinel array only the pool holds (a field, a cached index, a view or a
    computation running in another thread holds a reference, so an array is never overwritten while
    anything can read it). Up to ``spare`` free arrays per shape and dtype are kept (memory that would
    otherwise be returned); arrays under ``min_bytes`` are plain copies. Thread-safe.
    """

    def __init__(self, *, spare: int = 4, min_bytes: int = 1 << 20) -> None:
        self.spare = int(spare)
        self.min_bytes = int(min_bytes)
        self._arrays: list[np.ndarray] = [np.zeros(1)]  # [0]: the sentinel, never handed out
        self._lock = threading.Lock()
        #: Copies made into a recycled array, and into a fresh one.
        self.reused = 0
        self.fresh = 0

    def copy(self, a: np.ndarray) -> np.ndarray:
        """A writable copy of ``a`` (a plain ndarray; ``a`` is not modified)."""
        if a.nbytes < self.min_bytes:
            return np.array(a, copy=True, subok=False)
        with self._lock:
            got: np.ndarray | None = None
            kept: list[np.ndarray] = []
            spare: dict[tuple[tuple[int, ...], str], int] = {}
            base = -1
            for b in self._arrays:
                refs = sys.getrefcount(b)
                if base < 0:  # the sentinel: what "only the pool" looks like from here
                    base = refs
                    kept.append(b)
                    continue
                free = refs <= base
                if free and got is None and b.shape == a.shape and b.dtype == a.dtype:
                    got = b
                elif free:
                    k = (b.shape, b.dtype.str)
                    spare[k] = spare.get(k, 0) + 1
                    if spare[k] > self.spare:
                        continue  # let go
                kept.append(b)
            if got is None:
                got = np.array(a, copy=True, subok=False)
                kept.append(got)
                self.fresh += 1
            else:
                got.setflags(write=True)
                np.copyto(got, a)
                self.reused += 1
            self._arrays = kept
            return got



@dataclass(frozen=True)
class Seeds:
    """The cheapest source row at each node that has one: ``node`` (sorted), its ``weight`` (seconds,
    as the search uses it: at least 1e-9) and the ``row``."""

    node: np.ndarray
    weight: np.ndarray
    row: np.ndarray

    @classmethod
    def of(cls, end: np.ndarray, offset: np.ndarray) -> Seeds:
        w = np.maximum(np.asarray(offset, float), 1e-9)
        order = np.lexsort((w, end))
        e = np.asarray(end)[order]
        first = np.ones(len(e), bool)
        first[1:] = e[1:] != e[:-1]
        return cls(e[first].astype(np.int64), w[order][first], order[first].astype(np.int64))

    def at(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weight (``inf`` when none) and row (-1) of the seeds at ``nodes``."""
        if not len(self.node):
            return np.full(len(nodes), np.inf), np.full(len(nodes), -1, np.int64)
        i = np.searchsorted(self.node, nodes).clip(0, len(self.node) - 1)
        hit = self.node[i] == nodes
        return np.where(hit, self.weight[i], np.inf), np.where(hit, self.row[i], -1)

    def within(self, region: np.ndarray) -> np.ndarray:
        """Indices (into these arrays) of the seeds at nodes of ``region`` (sorted)."""
        if not len(region) or not len(self.node):
            return np.zeros(0, np.int64)
        i = np.searchsorted(region, self.node).clip(0, len(region) - 1)
        return np.flatnonzero(region[i] == self.node)


@dataclass(frozen=True)
class Stats:
    """What an update touched: nodes re-solved in each phase and how many went to the worker."""

    increased: int
    decreased: int
    worker_solves: int


def pairs_of_edges(pg: ProfileGraph, edge_u: np.ndarray, edge_v: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The pairs (sorted, unique) that hold a directed edge of one of the base ``edges``.

    ``edge_u``/``edge_v`` are the network's base edge ends (``(E,)``). A base edge ``u -> v`` gives at most
    the directed edges ``u -> v`` and ``v -> u``; their pairs are found in the forward CSR rows of ``u`` and
    ``v`` (a few entries each), so the cost is that of the edges asked for, not of the graph. A pair found
    may also hold parallel edges of other base edges: recomputing those gives their current weight again.
    """
    if not len(edges):
        return np.zeros(0, np.int64)
    e = np.asarray(edges, np.int64)
    u, v = np.asarray(edge_u[e], np.int64), np.asarray(edge_v[e], np.int64)
    tails, heads = np.concatenate([u, v]), np.concatenate([v, u])
    pos, owner = rows_of(pg.fwd_indptr, tails)
    return np.unique(pos[pg.pair_head[pos] == heads[owner]])


def _member(sorted_set: np.ndarray, x: np.ndarray) -> np.ndarray:
    if not len(sorted_set):
        return np.zeros(len(x), bool)
    i = np.searchsorted(sorted_set, x).clip(0, len(sorted_set) - 1)
    return sorted_set[i] == x


def subtree(pg: ProfileGraph, pred: np.ndarray, roots: np.ndarray, *, max_nodes: int) -> np.ndarray | None:
    """The nodes whose next-hop chain passes through one of ``roots`` (roots included), sorted; ``None``
    when more than ``max_nodes``."""
    seen = np.zeros(len(pred), bool)  # a root below another root is walked once
    parts: list[np.ndarray] = []
    front = np.unique(roots)
    total = 0
    while front.size:
        front = front[~seen[front]]
        seen[front] = True
        total += len(front)
        if total > max_nodes:
            return None
        parts.append(front)
        pos, owner = rows_of(pg.rev_indptr, front)
        tails = pg.rev_indices[pos]
        front = tails[pred[tails] == front[owner]].astype(np.int64)
    return np.unique(np.concatenate(parts))


def solve_region(
    pg: ProfileGraph, region: np.ndarray, w: Weights, seeds: Seeds, dist: np.ndarray, pred: np.ndarray,
    src: np.ndarray, *, seed_floor: np.ndarray | None, limit: float, search: Search,
    patch: tuple[np.ndarray, np.ndarray] | None = None,
) -> bool:
    """Solve the nodes of ``region`` (sorted) in place, all others being final. Returns whether the
    field's search (rather than one in this process) ran.

    ``w`` is the pair weight in force, except at the pairs ``patch[0]`` (sorted), which weigh ``patch[1]``;
    ``seed_floor`` (per seed, or ``None``) raises seed weights for the
    increase phase (the old seed where it was dearer).
    """
    n = len(dist)
    m = len(region)
    # internal edges of the reversed graph: a -> t for forward pairs t -> a, both in the region
    pos, owner = rows_of(pg.rev_indptr, region)
    tails = pg.rev_indices[pos]
    wt = _weights(w, pg.rev_perm[pos], patch)
    keep = _member(region, tails) & (wt < limit)
    owner, tails, wt = owner[keep], tails[keep], wt[keep]
    local = np.searchsorted(region, tails)
    # ways out: forward pairs b -> h with h outside and reachable; source rows ending in the region
    fpos, fown = rows_of(pg.fwd_indptr, region)
    heads = pg.pair_head[fpos]
    out = ~_member(region, heads)
    fpos, fown, heads = fpos[out], fown[out], heads[out]
    via = dist[heads] + _weights(w, fpos, patch)
    ok = via < limit
    fown, heads, via = fown[ok], heads[ok], via[ok]
    si = seeds.within(region)
    sw = seeds.weight[si] if seed_floor is None else np.maximum(seeds.weight[si], seed_floor[si])
    finite = sw < limit
    si, sw = si[finite], sw[finite]
    s_local = np.searchsorted(region, seeds.node[si])
    entry_node = np.concatenate([fown, s_local]).astype(np.int32)
    entry_w = np.concatenate([via, sw])
    entry_pred = np.concatenate([heads.astype(np.int64), n + seeds.row[si]])
    entry_src = np.concatenate([src[heads].astype(np.int64), seeds.row[si]])
    k = len(entry_node)
    if not k:
        dist[region], pred[region], src[region] = np.inf, -1, -1
        return False
    indptr = np.zeros(m + k + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=m), out=indptr[1:m + 1])
    indptr[m + 1:] = indptr[m] + np.arange(1, k + 1)
    data = np.concatenate([wt, entry_w])
    indices = np.concatenate([local, entry_node]).astype(np.int32)
    runner = search_in_process if m <= IN_PROCESS_NODES else search
    sd, sp, ss = runner(data, indices, indptr.astype(np.int32) if indptr[-1] < 2**31 - 1 else indptr, m, k, limit)
    reached = sd < limit
    dist[region] = np.where(reached, sd, np.inf)
    inner = reached & (sp >= 0) & (sp < m)
    outer = reached & (sp >= m)
    p = np.full(m, -1, np.int64)
    p[inner] = region[sp[inner]]
    p[outer] = entry_pred[sp[outer] - m]
    pred[region] = p
    s = np.full(m, -1, np.int64)
    s[reached] = entry_src[ss[reached]]
    src[region] = s
    return runner is not search_in_process


def _weights(w: Weights, pairs: np.ndarray, patch: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    out = w[pairs]
    if patch is not None and len(patch[0]):
        hit = _member(patch[0], pairs)
        out[hit] = patch[1][np.searchsorted(patch[0], pairs[hit])]
    return out


def improved(
    pg: ProfileGraph, w: Weights, dist: np.ndarray, start: np.ndarray, start_d: np.ndarray, *, limit: float,
    max_nodes: int,
) -> np.ndarray | None:
    """Relax from candidate distances ``start_d`` at nodes ``start`` while distances improve; ``dist`` is
    lowered in place (to upper bounds). Returns the nodes improved (sorted), or ``None`` past ``max_nodes``
    of them (or :data:`SWEEP_VISITS` times as many visits: the sweep goes by edges, not by distance, so a
    node can improve more than once)."""
    parts: list[np.ndarray] = []
    total = 0
    t, d = start.astype(np.int64), start_d
    while True:
        better = (d < dist[t]) & (d < limit)
        t, d = t[better], d[better]
        if not t.size:
            break
        np.minimum.at(dist, t, d)
        front = np.unique(t)
        total += len(front)
        if total > SWEEP_VISITS * max_nodes:
            return None
        parts.append(front)
        pos, owner = rows_of(pg.rev_indptr, front)
        t = pg.rev_indices[pos].astype(np.int64)
        d = dist[front][owner] + w[pg.rev_perm[pos]]
    out = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return None if len(out) > max_nodes else out


def update_field(
    pg: ProfileGraph, *, dist: np.ndarray, pred: np.ndarray, src: np.ndarray, old_w: Weights,
    new_w: Weights, changed: np.ndarray, old_seeds: Seeds, old_end: np.ndarray,
    new_seeds: Seeds, rows_same: bool, limit: float, search: Search, max_nodes: int, copy: Copy = np.copy,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Stats] | None:
    """The field for new pair weights and source rows, from the exact field for the old ones.

    Parameters
    ----------
    pg
        The profile graph.
    dist, pred, src
        The old field (``n``; not modified): seconds, next hop (``>= n``: source row ``pred - n``), row.
    old_w, new_w
        Pair weights (``len(pg.pair_tail)``), old and new; they differ only at pairs ``changed``.
    old_seeds, new_seeds
        The cheapest source row per node, old and new; ``old_end`` is each old row's end node;
        ``rows_same`` says the rows did not change (same rows, same numbers).
    limit
        Distances at or above it are unreachable (``inf``), as in the full search.
    search
        Runs the searches of large regions (the engine's :class:`evac.search.Search`).
    max_nodes
        Give up (``None``) when a phase would touch more nodes than this.
    copy
        Makes the writable copies of the old field (e.g. :meth:`ArrayPool.copy`).

    Returns
    -------
    New ``dist``, ``pred``, ``src`` (fresh arrays) and what the update touched, or ``None``.
    """
    n = len(dist)
    dist = copy(dist)
    pred = copy(pred)
    dearer = np.zeros(0, np.int64)
    if rows_same:
        src = copy(src)
    else:
        # rows are renumbered when the source set changes: a node keeps its route's end node and takes the
        # cheapest new row there; a root whose new row is dearer (or gone) starts the increase phase
        new_w_at, row_at = new_seeds.at(old_end.astype(np.int64))
        src = np.append(row_at, -1).astype(np.int32)[src]  # row -1 stays -1
        root_rows = np.flatnonzero(pred[old_end] == n + np.arange(len(old_end)))
        rn = old_end[root_rows].astype(np.int64)
        pred[rn] = np.where(row_at[root_rows] >= 0, n + row_at[root_rows], -1)
        dearer = rn[new_w_at[root_rows] > dist[rn]]
    worker = 0
    # -- phase 1: increases ------------------------------------------------------------------------------
    up = changed[new_w[changed] > old_w[changed]]
    down = changed[new_w[changed] < old_w[changed]]
    cut = pg.pair_tail[up][pred[pg.pair_tail[up]] == pg.pair_head[up]].astype(np.int64)
    start = np.unique(np.concatenate([cut, dearer]))
    increased = 0
    if len(start):
        region = subtree(pg, pred, start, max_nodes=max_nodes)
        if region is None:
            return None
        increased = len(region)
        # the middle weights: max(old, new), i.e. the old weight on pairs that got cheaper
        floor = _old_seed_floor(new_seeds, old_seeds)
        worker += solve_region(pg, region, new_w, new_seeds, dist, pred, src, seed_floor=floor, limit=limit,
                               search=search, patch=(down, old_w[down]))
    # -- phase 2: decreases ------------------------------------------------------------------------------
    d_t = pg.pair_tail[down].astype(np.int64)
    d_d = dist[pg.pair_head[down]] + new_w[down]
    starts = np.concatenate([d_t, new_seeds.node])
    starts_d = np.concatenate([d_d, new_seeds.weight])
    # the sweep lowers only the nodes it returns, which are then solved exactly
    region2 = improved(pg, new_w, dist, starts, starts_d, limit=limit, max_nodes=max_nodes)
    if region2 is None:
        return None
    if len(region2):
        worker += solve_region(pg, region2, new_w, new_seeds, dist, pred, src, seed_floor=None, limit=limit,
                               search=search)
    return dist, pred, src, Stats(increased, len(region2), worker)


def _old_seed_floor(new: Seeds, old: Seeds) -> np.ndarray:
    """Per new seed, the old seed weight at its node (``inf`` where none: a new seed is a decrease, for
    phase 2): phase 1 uses the larger one."""
    return old.at(new.node)[0]
