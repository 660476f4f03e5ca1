"""The implementation of edge queries before issue #21 (item 4), kept as the oracle for :mod:`evac.snapping`.

Snapping: a ``cKDTree`` over the midpoints of edge pieces of at most 25 m, per profile. Hazard areas:
a shapely ``STRtree`` over one projected ``LineString`` per base edge, ``predicate="intersects"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy.spatial import cKDTree

from evac.network import RoadNetwork
from evac.snapping import EdgePoints

PIECE_M = 25.0


def strtree_edge_hits(net: RoadNetwork, geom_xy: shapely.Geometry, tree: shapely.STRtree | None = None) -> np.ndarray:
    """Base edges whose projected geometry intersects ``geom_xy`` (projected), sorted."""
    if tree is None:
        tree = edge_strtree(net)
    return np.sort(tree.query(geom_xy, predicate="intersects"))


def lonlat_edge_hits(net: RoadNetwork, geom_ll: shapely.Geometry) -> np.ndarray:
    """Base edges (of two points or more) whose lon/lat line intersects ``geom_ll`` (lon/lat), sorted: one
    shapely test per edge, the rule of ``evac.network.BOUNDARY_RULE``."""
    off = np.asarray(net.coord_offsets)
    return np.array([e for e in range(net.n_edges) if off[e + 1] - off[e] >= 2
                     and shapely.LineString(net.coords[off[e]:off[e + 1]]).intersects(geom_ll)], np.int64)


def edge_strtree(net: RoadNetwork) -> shapely.STRtree:
    xy = np.asarray(net.coords_xy)
    idx = np.repeat(np.arange(net.n_edges), np.diff(net.coord_offsets))
    return shapely.STRtree(shapely.linestrings(xy, indices=idx))


@dataclass(eq=False)
class PieceIndex:
    """Nearest-point queries over a subset of a network's edges (projected coordinates, metres)."""

    edge: np.ndarray
    seg: np.ndarray  # the geometry segment (index of its first point in the network's coords) of each piece
    x0: np.ndarray
    y0: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    len2: np.ndarray
    along0: np.ndarray
    half: float
    tree: cKDTree | None

    @classmethod
    def build(cls, coord_offsets: np.ndarray, xy: np.ndarray, usable: np.ndarray, *,
              piece_m: float = PIECE_M) -> PieceIndex:
        """Index the edges ``usable`` (bool per base edge) whose geometry is ``xy[coord_offsets[e]:...]``."""
        n_edges = len(coord_offsets) - 1
        counts = np.diff(coord_offsets)
        seg_edge = np.repeat(np.arange(n_edges), np.maximum(counts - 1, 0))
        # segment s joins point i and i+1 of the same edge
        starts = np.ones(len(xy), bool)
        starts[coord_offsets[1:] - 1] = False  # the last point of an edge starts no segment
        i0 = np.flatnonzero(starts[:len(xy)])
        keep = usable[seg_edge]
        seg_edge, i0 = seg_edge[keep], i0[keep]
        a, b = xy[i0], xy[i0 + 1]
        seg_len = np.hypot(*(b - a).T)
        # projected metres from the edge start to each segment start
        cum = np.zeros(len(xy))
        if len(xy) > 1:
            step = np.hypot(*(xy[1:] - xy[:-1]).T)
            step[~starts[:-1]] = 0.0
            cum[1:] = np.cumsum(step)
        seg_along = cum[i0] - cum[coord_offsets[seg_edge]]
        n_sub = np.maximum(1, np.ceil(seg_len / piece_m)).astype(np.int64)
        rep = np.repeat(np.arange(len(i0)), n_sub)
        k = np.arange(len(rep)) - np.repeat(np.cumsum(n_sub) - n_sub, n_sub)
        t0 = k / n_sub[rep]
        t1 = (k + 1) / n_sub[rep]
        d = b[rep] - a[rep]
        p0 = a[rep] + d * t0[:, None]
        p1 = a[rep] + d * t1[:, None]
        dxy = p1 - p0
        along0 = seg_along[rep] + seg_len[rep] * t0
        plen = np.hypot(dxy[:, 0], dxy[:, 1])
        tree = cKDTree((p0 + p1) / 2) if len(rep) else None
        return cls(seg_edge[rep].astype(np.int32), i0[rep].astype(np.int64), p0[:, 0].copy(), p0[:, 1].copy(), dxy[:, 0].copy(),
                   dxy[:, 1].copy(), plen**2, along0, float(plen.max() / 2) if len(plen) else 0.0, tree)

    def nearest_distance(self, x: float, y: float) -> float:
        """Metres to the nearest point of any indexed edge (``inf`` when the index is empty)."""
        if self.tree is None:
            return float("inf")
        dmid, _ = self.tree.query((x, y))
        pts = self.within(x, y, float(dmid))
        return float(pts.dist[0]) if len(pts) else float(dmid)

    def within(self, x: float, y: float, radius: float) -> EdgePoints:
        """The nearest point of every geometry segment of the indexed edges within ``radius`` metres,
        nearest first (a road that passes twice within reach offers both of its near points)."""
        if self.tree is None:
            return _EMPTY
        idx = np.asarray(self.tree.query_ball_point((x, y), radius + self.half), dtype=np.int64)
        if idx.size == 0:
            return _EMPTY
        px, py = self.x0[idx], self.y0[idx]
        dx, dy = self.dx[idx], self.dy[idx]
        l2 = self.len2[idx]
        t = ((x - px) * dx + (y - py) * dy) / np.maximum(l2, 1e-12)
        np.clip(t, 0.0, 1.0, out=t)
        qx, qy = px + t * dx, py + t * dy
        dist = np.hypot(qx - x, qy - y)
        ok = np.flatnonzero(dist <= radius)
        if ok.size == 0:
            return _EMPTY
        idx, t, qx, qy, dist = idx[ok], t[ok], qx[ok], qy[ok], dist[ok]
        along = self.along0[idx] + t * np.sqrt(self.len2[idx])
        # one point per segment (its nearest; ties keep the smaller along), nearest first
        order = np.lexsort((along, dist))
        seg = self.seg[idx[order]]
        _, first = np.unique(seg, return_index=True)
        sel = order[np.sort(first)]
        return EdgePoints(self.edge[idx[sel]], along[sel], dist[sel], qx[sel], qy[sel])



_EMPTY = EdgePoints(np.zeros(0, np.int32), np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
