"""Nearest points on roads and roads under a polygon: a uniform grid over the network's geometry segments.

Positions (residents, shelters) attach to the nearest point of the nearest usable *edge* of a profile's
graph, not to the nearest node: a road passing 20 m away is reached in 20 m even when its nodes are
300 m apart, and loop roads (closed ways with one junction, kept as self-loop edges) are reachable.
Hazard polygons cut the edges whose geometry they intersect.

Layout (flat numpy arrays, no per-edge Python or GEOS objects; issue #21)
    Edge ``e``'s projected geometry is ``xy[offsets[e]:offsets[e+1]]`` (metres in the network's UTM
    zone); segment ``s`` joins points ``s`` and ``s + 1`` of the same edge, and ``along[s]`` is the
    projected metres from the edge's first point to point ``s``. :class:`SegmentGrid` lays square cells
    of ``cell`` metres over the network's extent; ``cell_seg[cell_ptr[c]:cell_ptr[c+1]]`` lists every
    segment whose bounding box meets cell ``c`` (cells numbered row by row, so a row of cells is one
    slice). The arrays can live in memory-mapped files (:mod:`evac.mapped`) shared by every process of
    a host, and one grid serves every profile: :class:`EdgeIndex` adds a profile's usable edges.

Exactness
    A box query returns every segment whose bounding box meets the box, so a nearest point within
    ``radius`` is never missed; distances are exact point-segment projections. Polygon queries test
    shapely ``intersects`` on the candidate edges' linestrings: the same predicate an ``STRtree`` query
    applies (``tests/evac/edge_oracle.py`` keeps that implementation as the oracle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import shapely

#: Bounds of the grid's cell size (metres); within them the size gives about two segments per cell.
MIN_CELL_M = 20.0
MAX_CELL_M = 2000.0


def ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The positions ``lo[i]:hi[i]`` of every range, one range after the other ``(sum(hi - lo),)`` int64."""
    lo = np.asarray(lo, np.int64)
    n = np.asarray(hi, np.int64) - lo
    first = np.cumsum(n) - n  # where each range starts in the output
    return np.arange(int(n.sum()), dtype=np.int64) + np.repeat(lo - first, n)


def rows_of(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the CSR entries of ``rows`` (``indptr``: the CSR pointer, :func:`ranges` of the rows)
    and, for each, its index in ``rows``."""
    lo, hi = np.asarray(indptr[rows]), np.asarray(indptr[rows + 1])
    return ranges(lo, hi), np.repeat(np.arange(len(rows)), hi - lo)


@dataclass(frozen=True)
class EdgePoints:
    """Nearest points of edges near a position, one per geometry segment, nearest first.

    ``edge`` base edge ids; ``along`` projected metres from the edge's first point; ``dist`` metres from
    the position; ``x``/``y`` the point in projected metres.
    """

    edge: np.ndarray
    along: np.ndarray
    dist: np.ndarray
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.edge.shape[0])


def segment_arrays(offsets: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First-point index of every geometry segment ``(S,)`` int64, and ``along`` ``(M,)`` metres from each
    point's edge start (see the module docstring)."""
    m = len(xy)
    starts = np.ones(m, bool)
    if len(offsets) > 1:
        starts[offsets[1:] - 1] = False  # an edge's last point starts no segment
        starts[offsets[:-1][np.diff(offsets) == 1]] = False  # an edge of one point has none
    along = np.zeros(m)
    if m > 1:
        step = np.hypot(xy[1:, 0] - xy[:-1, 0], xy[1:, 1] - xy[:-1, 1])
        step[~starts[:-1]] = 0.0
        along[1:] = np.cumsum(step)
        # back to 0 at each edge's first point
        first = np.asarray(offsets[:-1])
        n_pts = np.diff(offsets)
        along -= np.repeat(along[first], n_pts)
    return np.flatnonzero(starts), along


@dataclass(frozen=True, eq=False)
class SegmentGrid:
    """Cells of ``cell`` metres from ``(x0, y0)``, ``nx`` by ``ny``, listing the segments that meet them.

    ``xy`` ``(M, 2)``, ``offsets`` ``(E+1,)`` and ``along`` ``(M,)`` describe the geometry (module
    docstring); ``cell_ptr`` ``(nx*ny+1,)`` int64 and ``cell_seg`` (segment first-point indices) are the
    CSR lists. Any of them may be a read-only memory map.
    """

    xy: np.ndarray
    offsets: np.ndarray
    along: np.ndarray
    cell_ptr: np.ndarray
    cell_seg: np.ndarray
    x0: float
    y0: float
    cell: float
    nx: int
    ny: int

    @classmethod
    def build(cls, offsets: np.ndarray, xy: np.ndarray, along: np.ndarray | None = None, *,
              cell: float | None = None) -> SegmentGrid:
        """Grid over every segment of the edges ``xy[offsets[e]:offsets[e+1]]`` (projected metres).

        ``cell`` defaults to about two segments per cell on average, within :data:`MIN_CELL_M`–
        :data:`MAX_CELL_M`.
        """
        seg, along_ = segment_arrays(offsets, xy)
        if along is None:
            along = along_
        if len(seg) == 0:
            return cls(xy, offsets, along, np.zeros(2, np.int64), np.zeros(0, np.int64), 0.0, 0.0, MIN_CELL_M, 1, 1)
        ax, ay, bx, by = xy[seg, 0], xy[seg, 1], xy[seg + 1, 0], xy[seg + 1, 1]
        lo_x, hi_x = np.minimum(ax, bx), np.maximum(ax, bx)
        lo_y, hi_y = np.minimum(ay, by), np.maximum(ay, by)
        x0, y0 = float(lo_x.min()), float(lo_y.min())
        w, h = float(hi_x.max()) - x0, float(hi_y.max()) - y0
        if cell is None:
            cell = min(max(2.0 * math.sqrt(max(w * h, 1.0) / len(seg)), MIN_CELL_M), MAX_CELL_M)
            while (w / cell + 1) * (h / cell + 1) > 4 * len(seg) + 16:  # never far more cells than segments
                cell *= 2
        nx, ny = int(w // cell) + 1, int(h // cell) + 1
        ix0 = ((lo_x - x0) // cell).astype(np.int64)
        ix1 = np.minimum(((hi_x - x0) // cell).astype(np.int64), nx - 1)
        iy0 = ((lo_y - y0) // cell).astype(np.int64)
        iy1 = np.minimum(((hi_y - y0) // cell).astype(np.int64), ny - 1)
        del ax, ay, bx, by, lo_x, hi_x, lo_y, hi_y
        wid = ix1 - ix0 + 1
        count = wid * (iy1 - iy0 + 1)
        rep = np.repeat(np.arange(len(seg)), count)
        k = np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
        cell_id = (iy0[rep] + k // wid[rep]) * nx + ix0[rep] + k % wid[rep]
        del k
        order = np.argsort(cell_id, kind="stable")
        dtype = np.int32 if len(xy) < 2**31 else np.int64
        cell_seg = seg[rep[order]].astype(dtype)
        cell_ptr = np.zeros(nx * ny + 1, np.int64)
        np.cumsum(np.bincount(cell_id, minlength=nx * ny), out=cell_ptr[1:])
        return cls(xy, offsets, along, cell_ptr, cell_seg, x0, y0, float(cell), nx, ny)

    # -- storage ------------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """The grid's own arrays (for :mod:`evac.mapped`); ``xy``, ``offsets`` and ``along`` belong to the network."""
        return {"cell_ptr": self.cell_ptr, "cell_seg": self.cell_seg,
                "grid_meta": np.array([self.x0, self.y0, self.cell, self.nx, self.ny], float)}

    @classmethod
    def from_arrays(cls, offsets: np.ndarray, xy: np.ndarray, along: np.ndarray,
                    arrays: dict[str, np.ndarray]) -> SegmentGrid:
        x0, y0, cell, nx, ny = (float(v) for v in arrays["grid_meta"])
        return cls(xy, offsets, along, arrays["cell_ptr"], arrays["cell_seg"], x0, y0, cell, int(nx), int(ny))

    # -- queries ------------------------------------------------------------------------------------
    def segments_in_box(self, xmin: float, ymin: float, xmax: float, ymax: float, *, unique: bool = True) -> np.ndarray:
        """Segments (first-point indices; sorted and unique, else with repeats) whose bounding box may meet
        the box (metres)."""
        return self.segments_in_cells(*self.cells_of(xmin, ymin, xmax, ymax), unique=unique)

    def cells_of(self, xmin: float, ymin: float, xmax: float, ymax: float) -> tuple[int, int, int, int]:
        """The columns ``ix0..ix1`` and rows ``iy0..iy1`` of the cells a box (metres) meets, clamped to the
        grid (empty when ``ix0 > ix1`` or ``iy0 > iy1``)."""
        c = self.cell
        return (max(int((xmin - self.x0) // c), 0), min(int((xmax - self.x0) // c), self.nx - 1),
                max(int((ymin - self.y0) // c), 0), min(int((ymax - self.y0) // c), self.ny - 1))

    def segments_in_cells(self, ix0: int, ix1: int, iy0: int, iy1: int, *, unique: bool = True) -> np.ndarray:
        """Segments (first-point indices; sorted and unique, else with repeats) listed in the cells of
        columns ``ix0..ix1`` and rows ``iy0..iy1`` (within the grid)."""
        if ix0 > ix1 or iy0 > iy1:
            return np.zeros(0, np.int64)
        ptr = self.cell_ptr
        nx = self.nx
        if iy1 - iy0 < 64:
            parts = [self.cell_seg[ptr[r * nx + ix0]:ptr[r * nx + ix1 + 1]] for r in range(iy0, iy1 + 1)]
            segs = np.concatenate(parts) if len(parts) > 1 else parts[0]
        else:  # many rows: gather the row slices in one go
            rows = np.arange(iy0, iy1 + 1) * nx
            segs = self.cell_seg[ranges(ptr[rows + ix0], ptr[rows + ix1 + 1])]
        return np.unique(segs).astype(np.int64, copy=False) if unique else segs.astype(np.int64)

    def segment_edges(self, segs: np.ndarray) -> np.ndarray:
        """Base edge of each segment ``(S,)`` int64."""
        return np.searchsorted(self.offsets, segs, side="right") - 1

    def edges_intersecting(self, geom: shapely.Geometry) -> np.ndarray:
        """Base edges (sorted) whose geometry intersects ``geom`` (projected metres; prepared here): grid
        candidates (:meth:`edges_in_box`), then shapely ``intersects`` on linestrings built for the
        candidates only."""
        if geom.is_empty:
            return np.zeros(0, np.int64)
        edges = self.edges_in_box(*shapely.bounds(geom).tolist())
        if not len(edges):
            return edges
        idx, owner = rows_of(self.offsets, edges)
        lines = shapely.linestrings(np.asarray(self.xy[idx]), indices=owner)
        shapely.prepare(geom)  # as an STRtree query does: one prepared polygon against many lines
        return edges[shapely.intersects(geom, lines)]  # the prepared geometry goes first

    def edges_in_box(self, gx0: float, gy0: float, gx1: float, gy1: float) -> np.ndarray:
        """Base edges (sorted, unique) with a segment whose bounding box meets the box (projected metres)."""
        segs = self.segments_in_box(gx0, gy0, gx1, gy1, unique=False)
        if not len(segs):
            return np.zeros(0, np.int64)
        xy = self.xy
        a, b = xy[segs], xy[segs + 1]
        meets = ((np.minimum(a[:, 0], b[:, 0]) <= gx1) & (np.maximum(a[:, 0], b[:, 0]) >= gx0)
                 & (np.minimum(a[:, 1], b[:, 1]) <= gy1) & (np.maximum(a[:, 1], b[:, 1]) >= gy0))
        return np.unique(self.segment_edges(segs[meets]))


#: Boxes of at most this many grid cells have their candidate segments kept per :class:`EdgeIndex`, and at
#: most this many boxes. A look of radius ``r`` around a position takes the box of the cells within
#: ``ceil(r / cell)`` of the position's own cell when that has at most ``BOX_CELLS`` cells (3 x 3 for the
#: first look on cells of 40 m or more, 5 x 5 on smaller ones): one box per cell, which random positions
#: share (on the 50 x 50 drill town about 3,000 boxes against 7,400 for the exact range of cells the
#: square meets, so that they fit the cache; issue #21). A box holding more segments than the square
#: needs changes nothing but the work: points further than ``r`` are dropped, and a box lists its
#: segments in the order of their ids whatever its size, so ties keep their order.
BOX_CELLS = 25
_maximum, _minimum = np.maximum, np.minimum
BOX_CACHE = 4096


class _Box(NamedTuple):
    """The usable segments of a box of cells and what the nearest-point arithmetic needs of them, each
    ``(K,)``: segment, edge, first point ``ax``/``ay``, direction ``dx``/``dy``, ``l2m`` the squared
    length (at least 1e-12), ``length`` its square root, ``base`` metres along the edge to the first point."""

    segs: np.ndarray
    edges: np.ndarray
    ax: np.ndarray
    ay: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    l2m: np.ndarray
    length: np.ndarray
    base: np.ndarray


@dataclass(eq=False)
class EdgeIndex:
    """Nearest-point queries over a profile's usable edges (``usable``: bool per base edge) of a grid.

    The candidates of small boxes (:data:`BOX_CELLS`) are kept (:data:`BOX_CACHE`): nearby residents ask
    the same few cells, and gathering them is most of a query's cost.
    """

    grid: SegmentGrid
    usable: np.ndarray
    empty: bool = field(init=False)
    _boxes: dict[tuple[int, int, int, int], _Box] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.empty = not bool(np.any(self.usable)) or not len(self.grid.cell_seg)
        self._boxes = {}

    def _box(self, x: float, y: float, r: float) -> _Box:
        """The usable segments whose box meets the square of half-side ``r`` around (``x``, ``y``)."""
        g = self.grid
        c = g.cell
        key = ix0, ix1, iy0, iy1 = g.cells_of(x - r, y - r, x + r, y + r)  # the square's cells
        k = math.ceil(r / c)
        if ix0 <= ix1 and iy0 <= iy1 and (2 * k + 1) ** 2 <= BOX_CELLS:  # the box of the position's cell
            cx, cy = int((x - g.x0) // c), int((y - g.y0) // c)
            around = (max(cx - k, 0), min(cx + k, g.nx - 1), max(cy - k, 0), min(cy + k, g.ny - 1))
            if around[0] <= ix0 and ix1 <= around[1] and around[2] <= iy0 and iy1 <= around[3]:  # it covers them
                key = around
        box = self._boxes.get(key)
        if box is not None:
            return box
        segs = g.segments_in_cells(*key)
        edges = g.segment_edges(segs)
        ok = self.usable[edges]
        segs, edges = segs[ok], edges[ok]
        a, b = g.xy[segs], g.xy[segs + 1]
        dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
        l2 = dx * dx + dy * dy
        box = _Box(segs, edges, a[:, 0], a[:, 1], dx, dy, np.maximum(l2, 1e-12), np.sqrt(l2), g.along[segs])
        if (key[1] - key[0] + 1) * (key[3] - key[2] + 1) <= BOX_CELLS:
            if len(self._boxes) >= BOX_CACHE:
                self._boxes.clear()
            self._boxes[key] = box
        return box

    def _candidates(self, x: float, y: float, r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                                  np.ndarray]:
        """Usable segments whose box meets the square of half-side ``r``: segment, edge, metres along the
        segment to its nearest point, and that point's ``x``, ``y``."""
        box, t, qx, qy = self._nearest_points(x, y, r)
        return box.segs, box.edges, t * box.length, qx, qy

    def _nearest_points(self, x: float, y: float, r: float) -> tuple[_Box, np.ndarray, np.ndarray, np.ndarray]:
        """The box of the square of half-side ``r`` and, per segment in it, the fraction ``t`` (0-1) of the
        segment at its point nearest ``(x, y)``, and that point's ``x``, ``y``."""
        box = self._box(x, y, r)
        t = ((x - box.ax) * box.dx + (y - box.ay) * box.dy) / box.l2m
        _minimum(_maximum(t, 0.0, out=t), 1.0, out=t)  # np.clip(t, 0, 1, out=t): its ufuncs, not its wrapper
        return box, t, box.ax + t * box.dx, box.ay + t * box.dy

    def _reached(self, x: float, y: float, radius: float) -> tuple[_Box, np.ndarray, np.ndarray, np.ndarray,
                                                                   np.ndarray, np.ndarray] | None:
        """:meth:`_nearest_points` within ``radius``: the box, the indices ``ok`` of its segments whose
        nearest point lies within ``radius``, and of those the distance, metres along the edge, ``x``, ``y``
        (None when no segment is within ``radius``)."""
        box, t, qx, qy = self._nearest_points(x, y, radius)
        dist = np.hypot(qx - x, qy - y)
        ok = (dist <= radius).nonzero()[0]  # np.flatnonzero (dist is 1-d), without its wrapper
        if ok.size == 0:
            return None
        return box, ok, dist[ok], box.base[ok] + t[ok] * box.length[ok], qx[ok], qy[ok]

    def nearest_distance(self, x: float, y: float) -> float:
        """Metres to the nearest point of any usable edge (``inf`` when there is none)."""
        if self.empty:
            return math.inf
        g = self.grid
        # start at the grid's edge when the position lies outside it
        out = math.hypot(max(g.x0 - x, 0.0, x - (g.x0 + g.nx * g.cell)), max(g.y0 - y, 0.0, y - (g.y0 + g.ny * g.cell)))
        r = out + g.cell
        span = math.hypot(g.nx * g.cell, g.ny * g.cell) + out + g.cell
        while True:
            _, _, _, qx, qy = self._candidates(x, y, r)
            if len(qx):
                d = float(np.min(np.hypot(qx - x, qy - y)))
                if d <= r:  # every segment within r meets the square: this is the nearest
                    return d
            if r > span:
                return math.inf
            r *= 2

    def within(self, x: float, y: float, radius: float) -> EdgePoints:
        """The nearest point of every geometry segment of the usable edges within ``radius`` metres, nearest
        first, ties by ``along`` (a road that passes twice within reach offers both of its near points)."""
        if self.empty or not radius >= 0:
            return _EMPTY
        reached = self._reached(x, y, radius)
        if reached is None:
            return _EMPTY
        box, ok, dist, along, qx, qy = reached
        order = np.lexsort((along, dist))
        return EdgePoints(box.edges[ok][order].astype(np.int32), along[order], dist[order], qx[order], qy[order])

    def near(self, x: float, y: float, radius: float) -> list[tuple[float, float, int, int, float, float]]:
        """:meth:`within` as a list, for a resident's query: ``(dist, along, k, edge, x, y)`` per point,
        nearest first, ties by ``along``, then by ``k`` (the point's place in the box, which is the order
        ``within``'s stable sort keeps). The same numbers by the same numpy operations; the few points that
        pass are sorted in Python rather than by numpy calls that each cost more than the sort."""
        if self.empty or not radius >= 0:
            return []
        reached = self._reached(x, y, radius)
        if reached is None:
            return []
        box, ok, dist, along, qx, qy = reached
        return sorted(zip(dist.tolist(), along.tolist(), ok.tolist(), box.edges[ok].tolist(), qx.tolist(),
                          qy.tolist(), strict=True))


_EMPTY = EdgePoints(np.zeros(0, np.int32), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))


def cumulative_lengths(xy: np.ndarray) -> np.ndarray:
    """Projected metres from the first point of a polyline ``(K, 2)`` to each point."""
    out = np.zeros(len(xy))
    if len(xy) > 1:
        out[1:] = np.cumsum(np.hypot(*(xy[1:] - xy[:-1]).T))
    return out


def sub_line(xy: np.ndarray, a: float, b: float) -> np.ndarray:
    """The part of polyline ``xy`` from ``a`` to ``b`` projected metres along it (reversed if ``b < a``)."""
    lo, hi = (a, b) if a <= b else (b, a)
    cum = cumulative_lengths(xy)
    total = cum[-1] if len(cum) else 0.0
    lo, hi = min(max(lo, 0.0), total), min(max(hi, 0.0), total)
    inner = (cum > lo) & (cum < hi)
    pts = np.vstack([_point_at(xy, cum, lo), xy[inner], _point_at(xy, cum, hi)])
    return pts if a <= b else pts[::-1]


def _point_at(xy: np.ndarray, cum: np.ndarray, s: float) -> np.ndarray:
    if len(xy) == 1 or cum[-1] <= 0:
        return xy[:1].copy()
    j = min(max(int(cum.searchsorted(s, side="right")) - 1, 0), len(xy) - 2)  # (np.clip costs more on one value)
    seg = cum[j + 1] - cum[j]
    t = 0.0 if seg <= 0 else (s - cum[j]) / seg
    return (xy[j] + (xy[j + 1] - xy[j]) * t)[None, :]
