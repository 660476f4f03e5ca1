"""Compact array form of a road graph, for queries that never touch networkx.

:class:`RoadNetwork` holds nodes, edges, edge geometry and per-profile travel times as numpy arrays, built
once from an osmnx graph and cached as ``.npz`` in the state directory. :class:`ProfileGraph` is one
profile's directed graph in CSR form.

Directed edges and parallel edges
    Each osmnx edge gives a directed edge along it when the profile allows it, and one against it when
    the profile may go against the way (pedestrians on one-way streets). Parallel directed edges
    between the same two nodes are grouped into *pairs*; a pair's weight is the minimum of its edges'
    current weights, so blocking one of two parallel roads keeps the other usable.

Disconnected parts
    Origins and shelters attach only to edges of the profile's largest strongly connected component,
    by road length (for the walking profiles, whose graphs are symmetric, that is the largest connected
    part). An
    island of a few nodes (a car park, a private road) can therefore never swallow a route; the
    attaching distance is reported so that a far-off point is answered as ``off_network``.

Edges, not nodes
    :attr:`ProfileGraph.index` (:class:`evac.snapping.EdgeIndex`) finds the nearest points on the
    profile's usable edges, self-loops included (a loop road with one junction is a self-loop after
    simplification: useless for through routes, so it has no place in the CSR, but people live on it).
    One :class:`evac.snapping.SegmentGrid` (:attr:`RoadNetwork.segment_grid`) serves every profile and
    the hazard polygons (:meth:`RoadNetwork.edges_intersecting`). A network of at most
    :data:`TREE_MAX_EDGES` edges also keeps an ``STRtree`` of its edges' linestrings (about 400 bytes an
    edge, in each process) for the polygons: after a search has run, one GEOS query over it costs a
    third of the grid's candidates, linestrings and tests (cold in the caches), and it is the same
    predicate; larger networks keep to the grid (the tree of a few million edges is gigabytes).

Shared memory
    :meth:`RoadNetwork.load` maps the arrays, the projected geometry, the grid and each profile's CSR
    arrays from a directory of ``.npy`` files beside the ``.npz`` (:mod:`evac.mapped`, written by the
    first process that loads it): the API processes of one host share one copy of them. They share it
    when they load the same ``.npz``: point ``evac.network`` at the file ``sonae graph import`` writes
    (an ``.osm`` source is cached per state directory, so per API instance); where the directory beside
    the file cannot be written, each process reads the arrays into its own memory (logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pyproj
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from evac import mapped
from evac.graph import (
    PROFILE_NAMES,
    PROFILES,
    LabelTable,
    Progress,
    graph_from_file,
    names_of,
    report_progress,
)
from evac.osm_import import STREAM_FROM_BYTES, STREAM_SUFFIXES, network_arrays
from evac.snapping import EdgeIndex, SegmentGrid, rows_of, segment_arrays, sub_line

#: Bump when the array layout or the profiles change; old cache files are then rebuilt.
CACHE_FORMAT = 4
#: Bump when the mapped directory's derived arrays (geometry, grid, profile CSR) change.
MAPPED_FORMAT = 1

log = logging.getLogger("sonae.evac.network")

#: The one rule for "is this in a hazard area": shapely ``intersects`` (touching the boundary counts as
#: inside, the safe side for an evacuation) of the area as given in lon/lat degrees (WGS 84, straight
#: sides in degrees) with the thing's own lon/lat: a shelter's or a resident's position, a road edge's
#: geometry. Deciding it in projected metres instead let a point on a side fall either way: the projected
#: polygon joins its projected corners by straight lines, which a side's other points miss by rounding
#: (and by the curvature of a straight line in degrees once projected).
BOUNDARY_RULE = "intersects, in lon/lat degrees"
#: Metres by which the projected box of an area is widened for the grid's candidate edges, besides the
#: network's own measure of how far its longest segments, straight in degrees, bow away from the same
#: segments straight in metres (:attr:`RoadNetwork.curve_pad_m`: about length² / 8 R, R over 6000 km,
#: so 2 m at 10 km but 20 m at 30 km, a ferry line or a long straight road).
BOX_PAD_M = 10.0
#: Segments at least this long (projected metres) are measured for :attr:`RoadNetwork.curve_pad_m`;
#: shorter ones bow by under 0.1 m, well inside :data:`BOX_PAD_M`.
CURVE_MIN_M = 2_000.0
#: A road point within this many metres (along its edge) of one of the edge's own points is that point, in
#: lon/lat as given (:meth:`RoadNetwork.point_lonlat`): a snap to a road end or bend gives its ``along``
#: as a sum of segment lengths, which may differ from the point's own by rounding.
VERTEX_SNAP_M = 1e-6
#: Networks with at most this many edges answer polygon queries through an STRtree of their edges (see
#: the module docstring): about 20 MB and 50 ms to build at the limit, on first use.
TREE_MAX_EDGES = 50_000

_BASE_ARRAYS = ("node_osmid", "node_lon", "node_lat", "edge_u", "edge_v", "edge_length", "edge_name", "edge_highway",
                "coord_offsets", "coords")


def utm_epsg(lon: float, lat: float) -> int:
    """EPSG code of the UTM zone (WGS 84) containing a point."""
    zone = int((lon + 180.0) // 6.0) % 60 + 1
    return (32600 if lat >= 0 else 32700) + zone


@dataclass(eq=False)
class RoadNetwork:
    """A road graph as arrays. Node ``i`` is ``node_osmid[i]``; edge ``e`` runs ``edge_u[e] -> edge_v[e]``."""

    node_osmid: np.ndarray
    node_lon: np.ndarray
    node_lat: np.ndarray
    edge_u: np.ndarray
    edge_v: np.ndarray
    edge_length: np.ndarray
    edge_name: np.ndarray  # index into names, -1 = unnamed
    edge_highway: np.ndarray  # index into names
    coord_offsets: np.ndarray  # edge e's geometry is coords[coord_offsets[e]:coord_offsets[e+1]]
    coords: np.ndarray  # (M, 2) lon, lat
    names: list[str]
    times: dict[str, tuple[np.ndarray, np.ndarray]]  # profile -> (along, against) seconds, inf = no
    epsg: int
    _profiles: dict[str, ProfileGraph] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _xy: np.ndarray | None = field(default=None, repr=False)
    _along: np.ndarray | None = field(default=None, repr=False)
    _plen: np.ndarray | None = field(default=None, repr=False)
    _grid: SegmentGrid | None = field(default=None, repr=False)
    _edge_tree: shapely.STRtree | None = field(default=None, repr=False)
    _tree_edges: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)  # tree item -> edge
    #: The mapped directory the arrays come from (profiles are mapped from and written to it), and its key.
    mapped_dir: Path | None = field(default=None, repr=False)
    mapped_key: str = field(default="", repr=False)

    @property
    def n_nodes(self) -> int:
        return int(self.node_osmid.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.edge_u.shape[0])

    # -- projection -------------------------------------------------------------------------------
    def transformer(self, *, inverse: bool = False) -> pyproj.Transformer:
        """lon/lat -> projected metres (or back with ``inverse=True``)."""
        a, b = ("EPSG:4326", f"EPSG:{self.epsg}")
        return pyproj.Transformer.from_crs(b, a, always_xy=True) if inverse else pyproj.Transformer.from_crs(
            a, b, always_xy=True
        )

    def project(self, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
        x, y = _TRANSFORMERS.get(self.epsg).transform(np.asarray(lon, float), np.asarray(lat, float))
        return np.asarray(x), np.asarray(y)

    def project_geometry(self, geom: shapely.Geometry) -> shapely.Geometry:
        """Project a lon/lat shapely geometry into the network's metric CRS."""
        return shapely.transform(geom, _TRANSFORMERS.get(self.epsg).transform, interleaved=False)

    @property
    def segment_grid(self) -> SegmentGrid:
        """The grid over every edge's projected geometry segments (built once, or mapped)."""
        if self._grid is None:
            with self._lock:
                if self._grid is None:
                    self._grid = SegmentGrid.build(self.coord_offsets, self.coords_xy, self.coord_along)
        return self._grid

    def edges_intersecting(self, geom: shapely.Geometry) -> np.ndarray:
        """Base edges (sorted) whose geometry intersects ``geom``, both in lon/lat degrees as given (the
        boundary counts: shapely ``intersects``, prepared here; see :data:`BOUNDARY_RULE`).

        On a network of at most :data:`TREE_MAX_EDGES` edges through a tree of the edges' lon/lat
        linestrings; on larger ones the projected grid gives candidates (:meth:`SegmentGrid.edges_in_box`:
        the box of the area's lon/lat box and the network's, projected and widened by :data:`BOX_PAD_M`
        and :attr:`curve_pad_m`) and the test is made on their lon/lat lines. Only the part of the area's
        box over the network is projected: far from the projection's zone (an area reaching across the
        globe) projected coordinates are distorted past use, or infinite.
        """
        if geom.is_empty:
            return np.zeros(0, np.int64)
        shapely.prepare(geom)  # one prepared polygon against the lines the tree or the grid finds
        if self.n_edges > TREE_MAX_EDGES:
            g0, g1, g2, g3 = shapely.bounds(geom).tolist()
            n0, n1, n2, n3 = self.lonlat_bounds
            box = (max(g0, n0), max(g1, n1), min(g2, n2), min(g3, n3))
            if not (box[0] <= box[2] and box[1] <= box[3]):
                return np.zeros(0, np.int64)
            x0, y0, x1, y1 = self.projected_bounds(shapely.box(*box))
            pad = BOX_PAD_M + self.curve_pad_m
            edges = self.segment_grid.edges_in_box(x0 - pad, y0 - pad, x1 + pad, y1 + pad)
            if not len(edges):
                return edges
            idx, owner = rows_of(np.asarray(self.coord_offsets), edges)
            lines = shapely.linestrings(np.asarray(self.coords)[idx], indices=owner)
            return edges[shapely.intersects(geom, lines)]  # the prepared geometry goes first
        if self._edge_tree is None:
            with self._lock:
                if self._edge_tree is None:
                    # edges of one point have no segment: the grid never gives them, nor does the tree
                    n = np.diff(np.asarray(self.coord_offsets))
                    lined = np.flatnonzero(n >= 2)
                    idx, _ = rows_of(np.asarray(self.coord_offsets), lined)
                    lines = shapely.linestrings(np.asarray(self.coords)[idx],
                                                indices=np.repeat(np.arange(len(lined)), n[lined]))
                    self._edge_tree, self._tree_edges = shapely.STRtree(lines), lined.astype(np.int64)
        return self._tree_edges[np.sort(self._edge_tree.query(geom, predicate="intersects"))]

    @cached_property
    def _unproject(self) -> pyproj.Transformer:
        return self.transformer(inverse=True)

    def point_lonlat(self, e: int, s: float, xy: tuple[float, float] | None = None) -> tuple[float, float]:
        """The road point ``s`` projected metres along base edge ``e`` in lon/lat: the edge's own point as
        given when ``s`` is within :data:`VERTEX_SNAP_M` of one (a road end or a bend), else the projected
        point (``xy`` when the caller has it, else interpolated on the projected edge) brought back to
        lon/lat. The one definition of where a leg meets its road and a part of an edge ends, for the hazard
        tests (:data:`BOUNDARY_RULE`)."""
        o0, o1 = int(self.coord_offsets[e]), int(self.coord_offsets[e + 1])
        along = np.asarray(self.coord_along[o0:o1])
        if o1 - o0 == 1:
            return float(self.coords[o0][0]), float(self.coords[o0][1])
        k = int(np.searchsorted(along, s))
        for j in (k - 1, k):
            if 0 <= j < o1 - o0 and abs(float(along[j]) - s) <= VERTEX_SNAP_M:
                return float(self.coords[o0 + j][0]), float(self.coords[o0 + j][1])
        if xy is None:
            xy = tuple(sub_line(self.edge_xy(e), s, s)[0].tolist())
        lon, lat = self._unproject.transform(float(xy[0]), float(xy[1]))
        return float(lon), float(lat)

    def part_meets(self, e: int, a: float, b: float, geom: shapely.Geometry) -> bool:
        """Whether the part of base edge ``e`` between ``a`` and ``b`` projected metres along it meets
        ``geom`` (lon/lat) by :data:`BOUNDARY_RULE`, on the very line :meth:`edges_intersecting` tests.

        The whole segments of the part (between the edge's own points) are tested as given. A segment the
        part covers only a fraction ``[s0, s1]`` of (an end of the part falls inside it, at the fraction
        it has of the projected segment) is hit when ``geom`` meets that segment's lon/lat line at a
        fraction within ``[s0, s1]`` widened by :data:`PART_END_TOL` (toward the safe side): so a corner
        of an area exactly on the edge's line counts for every part that covers it, which a cut point
        rounded or brought back from metres (a hair off the line) can miss.
        """
        o0, o1 = int(self.coord_offsets[e]), int(self.coord_offsets[e + 1])
        ll, along = np.asarray(self.coords[o0:o1], float), np.asarray(self.coord_along[o0:o1], float)
        if len(ll) == 0:
            return False
        if len(ll) == 1:
            return bool(shapely.intersects_xy(geom, float(ll[0, 0]), float(ll[0, 1])))
        lo, hi = (a, b) if a <= b else (b, a)
        total = float(along[-1])
        lo, hi = min(max(lo, 0.0), total), min(max(hi, 0.0), total)
        inner = np.flatnonzero((along >= lo) & (along <= hi))
        if len(inner) >= 2 and shapely.intersects(geom, shapely.LineString(ll[inner[0]:inner[-1] + 1])):
            return True
        cut = sorted({k for s in (lo, hi) for k in np.flatnonzero((along[:-1] < s) & (s < along[1:])).tolist()})
        if len(inner) == 1 and not cut:  # the part is one of the edge's own points
            return bool(shapely.intersects_xy(geom, float(ll[inner[0], 0]), float(ll[inner[0], 1])))
        for k in cut:
            span = along[k + 1] - along[k]
            s0, s1 = max((lo - along[k]) / span, 0.0), min((hi - along[k]) / span, 1.0)
            if _segment_meets(geom, ll[k], ll[k + 1], s0, s1):
                return True
        return False

    @cached_property
    def lonlat_bounds(self) -> tuple[float, float, float, float]:
        """``(lon_min, lat_min, lon_max, lat_max)`` of every edge's geometry (degrees); an empty box
        (``inf, inf, -inf, -inf``) for a network without geometry."""
        c = np.asarray(self.coords)
        if not len(c):
            return math.inf, math.inf, -math.inf, -math.inf
        lo, hi = c.min(axis=0), c.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @cached_property
    def curve_pad_m(self) -> float:
        """Metres by which a segment straight in degrees may leave the box of the same segment straight in
        metres (its projected ends), over the network's segments of at least :data:`CURVE_MIN_M`: twice the
        largest distance of a point at 1/4, 1/2 or 3/4 of such a segment (projected) from its chord (the
        bow of a short arc peaks at its middle; twice covers uneven curvature). 0 without such segments."""
        xy, ll = np.asarray(self.coords_xy), np.asarray(self.coords)
        seg, _ = segment_arrays(np.asarray(self.coord_offsets), xy)
        if not len(seg):
            return 0.0
        d = xy[seg + 1] - xy[seg]
        length = np.hypot(d[:, 0], d[:, 1])
        long = length >= CURVE_MIN_M
        if not long.any():
            return 0.0
        seg, d, length = seg[long], d[long], length[long]
        worst = 0.0
        for t in (0.25, 0.5, 0.75):
            p = ll[seg] + (ll[seg + 1] - ll[seg]) * t
            x, y = self.project(p[:, 0], p[:, 1])
            off = np.abs((x - xy[seg, 0]) * d[:, 1] - (y - xy[seg, 1]) * d[:, 0]) / length
            worst = max(worst, float(off.max()))
        return 2.0 * worst

    def projected_bounds(self, geom: shapely.Geometry) -> tuple[float, float, float, float]:
        """Bounds in projected metres ``(xmin, ymin, xmax, ymax)`` of a lon/lat geometry's box: the box's
        sides (straight in degrees, curved once projected) are cut every 0.001 degree or finer before
        projecting, so the result falls short of the true bounds by well under a millimetre. The box may
        be a line or a point. Far from the projection's zone the result is meaningless or infinite: cut
        the geometry to the region first (as :meth:`edges_intersecting` does)."""
        x0, y0, x1, y1 = shapely.bounds(geom).tolist()
        kx = max(2, math.ceil((x1 - x0) / 1e-3) + 1)
        ky = max(2, math.ceil((y1 - y0) / 1e-3) + 1)
        xs, ys = np.linspace(x0, x1, kx), np.linspace(y0, y1, ky)
        lon = np.concatenate([xs, xs, np.full(ky, x0), np.full(ky, x1)])
        lat = np.concatenate([np.full(kx, y0), np.full(kx, y1), ys, ys])
        x, y = self.project(lon, lat)
        return float(x.min()), float(y.min()), float(x.max()), float(y.max())

    @property
    def coords_xy(self) -> np.ndarray:
        """``coords`` projected into the network's metric CRS, ``(M, 2)`` metres (computed once)."""
        if self._xy is None:
            x, y = self.project(self.coords[:, 0], self.coords[:, 1])
            self._xy = np.column_stack([x, y])
        return self._xy

    @property
    def coord_along(self) -> np.ndarray:
        """Projected metres from each coordinate's edge start ``(M,)`` (computed once)."""
        if self._along is None:
            self._along = segment_arrays(self.coord_offsets, self.coords_xy)[1]
        return self._along

    @property
    def edge_plen(self) -> np.ndarray:
        """Projected length of each base edge's geometry, metres (computed once)."""
        if self._plen is None:
            off = np.asarray(self.coord_offsets)
            self._plen = self.coord_along[np.maximum(off[1:] - 1, off[:-1])] if len(off) > 1 else np.zeros(0)
        return self._plen

    def edge_xy(self, e: int) -> np.ndarray:
        """Projected geometry of base edge ``e``, ``(K, 2)`` metres."""
        return self.coords_xy[self.coord_offsets[e]:self.coord_offsets[e + 1]]

    def edge_coords(self, e: int, *, reverse: bool = False) -> np.ndarray:
        c = self.coords[self.coord_offsets[e]:self.coord_offsets[e + 1]]
        return c[::-1] if reverse else c

    # -- profiles ---------------------------------------------------------------------------------
    def profile(self, name: str) -> ProfileGraph:
        """The CSR graph of one profile (built once, then shared)."""
        if name not in self.times:
            raise ValueError(f"unknown profile {name!r}: use one of {', '.join(sorted(self.times))}")
        pg = self._profiles.get(name)
        if pg is None:
            with self._lock:
                pg = self._profiles.get(name)
            if pg is None:
                pg = self._mapped_profile(name) or ProfileGraph.build(self, name)
                with self._lock:
                    pg = self._profiles.setdefault(name, pg)
        return pg

    def _mapped_profile(self, name: str) -> ProfileGraph | None:
        """The profile's arrays from the mapped directory (written there first when missing)."""
        if self.mapped_dir is None:
            return None
        where = self.mapped_dir / f"profile-{name}"
        got = mapped.read(where, key=self.mapped_key)
        if got is None:
            try:
                mapped.write(where, ProfileGraph.build(self, name).arrays(), key=self.mapped_key)
            except OSError as exc:
                log.warning("cannot write %s (%s): profile %s stays in this process's memory", where, exc, name)
                return None
            got = mapped.read(where, key=self.mapped_key)
        return None if got is None else ProfileGraph.from_arrays(self, name, got[0])

    def project_point(self, lon: float, lat: float) -> tuple[float, float]:
        """One lon/lat position (degrees) in the network's metric CRS (metres, ``x``, ``y``): pyproj's
        scalar path, about 1 µs, with the very numbers :meth:`project` gives for it in an array."""
        x, y = _TRANSFORMERS.get(self.epsg).transform(float(lon), float(lat))
        return x, y

    def snap(self, lon: float, lat: float, *, profile: str = "walk") -> tuple[int, float]:
        """Nearest node of the profile's main component and its distance in metres (-1 if none)."""
        pg = self.profile(profile)
        if pg.snap_nodes.size == 0:
            return -1, math.inf
        x, y = self.project_point(lon, lat)
        d, i = pg.snap_tree.query((x, y))
        return int(pg.snap_nodes[i]), float(d)

    def snap_many(self, lon: Any, lat: Any, *, profile: str = "walk") -> tuple[np.ndarray, np.ndarray]:
        """Vectorised :meth:`snap`: node indices and distances in metres."""
        pg = self.profile(profile)
        x, y = self.project(lon, lat)
        if pg.snap_nodes.size == 0:
            return np.full(np.size(x), -1), np.full(np.size(x), np.inf)
        d, i = pg.snap_tree.query(np.column_stack([np.ravel(x), np.ravel(y)]))
        return pg.snap_nodes[i], d

    # -- building and caching ---------------------------------------------------------------------
    @classmethod
    def from_graph(cls, G: nx.MultiDiGraph, *, progress: Progress | None = None) -> RoadNetwork:
        """Build the arrays from a prepared osmnx graph (see :func:`evac.graph.prepare_graph`)."""
        report_progress(progress, f"building arrays for {len(G):,} nodes")
        osmids = np.fromiter(G.nodes, dtype=np.int64, count=len(G))
        index = {n: i for i, n in enumerate(osmids.tolist())}
        lon = np.array([G.nodes[n]["x"] for n in osmids.tolist()], dtype=float)
        lat = np.array([G.nodes[n]["y"] for n in osmids.tolist()], dtype=float)
        labels = LabelTable()
        names, intern = labels.labels, labels.index

        m = G.number_of_edges()
        eu = np.empty(m, np.int32)
        ev = np.empty(m, np.int32)
        length = np.empty(m, float)
        ename = np.empty(m, np.int32)
        ehw = np.empty(m, np.int32)
        times = {p: (np.empty(m, float), np.empty(m, float)) for p in PROFILE_NAMES}
        parts: list[np.ndarray] = []
        for e, (u, v, data) in enumerate(G.edges(data=True)):
            eu[e], ev[e] = index[u], index[v]
            length[e] = float(data.get("length", 0.0) or 0.0)
            label = names_of([data.get("name")]) or names_of([data.get("ref")])
            ename[e] = intern(label) if label else -1
            ehw[e] = intern(names_of([data.get("highway")]))
            geom = data.get("geometry")
            if geom is not None:
                parts.append(np.asarray(geom.coords)[:, :2])
            else:
                parts.append(np.array([[lon[eu[e]], lat[eu[e]]], [lon[ev[e]], lat[ev[e]]]]))
            for p in PROFILE_NAMES:
                fwd, bwd = PROFILES[p].times(data)
                times[p][0][e], times[p][1][e] = fwd, bwd
        counts = np.array([len(p) for p in parts], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        coords = np.concatenate(parts) if parts else np.empty((0, 2))
        epsg = utm_epsg(float(np.median(lon)), float(np.median(lat)))
        return cls(osmids, lon, lat, eu, ev, length, ename, ehw, offsets, coords, names, times, epsg)

    @classmethod
    def from_osm_file(cls, path: Path | str, *, clip: Any = None, progress: Progress | None = None) -> RoadNetwork:
        """Build the arrays straight from ``.osm``, ``.osm.bz2`` or ``.osm.pbf`` in bounded memory, without
        networkx (:mod:`evac.osm_import`; the same network as ``from_graph(graph_from_file(path))``).

        Raises ``FileNotFoundError`` or ``ValueError`` (unreadable file, no highway ways).
        """
        arrays = network_arrays(path, clip=clip, progress=progress)
        lon, lat = arrays["node_lon"], arrays["node_lat"]
        return cls(**arrays, epsg=utm_epsg(float(np.median(lon)), float(np.median(lat))))

    def save(self, path: Path | str) -> None:
        """Write the arrays to one ``.npz`` file (atomically: written aside, then renamed)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {
            k: getattr(self, k)
            for k in ("node_osmid", "node_lon", "node_lat", "edge_u", "edge_v", "edge_length", "edge_name",
                      "edge_highway", "coord_offsets", "coords")
        }
        for p, (fwd, bwd) in self.times.items():
            arrays[f"times_{p}_fwd"], arrays[f"times_{p}_bwd"] = fwd, bwd
        arrays["names"] = np.array(self.names, dtype=str)
        arrays["meta"] = np.array(json.dumps({"format": CACHE_FORMAT, "epsg": self.epsg, "profiles": list(self.times)}))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str, *, shared: bool = True) -> RoadNetwork:
        """Read a file written by :meth:`save`; raises ``ValueError`` for an older format.

        ``shared``: map the arrays (and the derived geometry, grid and profile arrays) from the directory
        ``<path>.mapped`` beside the file, writing it first when it is missing or older than the file
        (see :mod:`evac.mapped`); when it cannot be written the arrays are read into this process.
        """
        path = Path(path)
        if shared:
            st = path.stat()
            key = f"{CACHE_FORMAT}.{MAPPED_FORMAT}|{st.st_size}|{st.st_mtime_ns}"
            where = path.with_name(path.name + ".mapped")
            got = mapped.read(where / "network", key=key)
            if got is None:
                net = cls._read_npz(path)
                try:
                    mapped.write(where / "network", net._arrays(), key=key,
                                 extra={"epsg": net.epsg, "profiles": list(net.times)})
                except OSError as exc:
                    log.warning("cannot write %s (%s): the network stays in this process's memory", where, exc)
                    return net
                got = mapped.read(where / "network", key=key)
            if got is not None:
                return cls._from_mapped(got[0], got[1], where, key)
        return cls._read_npz(path)

    def _arrays(self) -> dict[str, Any]:
        """Every array to map: the saved ones, the projected geometry and the grid."""
        arrays: dict[str, Any] = {k: getattr(self, k) for k in _BASE_ARRAYS}
        for p, (fwd, bwd) in self.times.items():
            arrays[f"times_{p}_fwd"], arrays[f"times_{p}_bwd"] = fwd, bwd
        arrays["names"] = np.array(self.names, dtype=str)
        arrays.update(coords_xy=self.coords_xy, coord_along=self.coord_along, edge_plen=self.edge_plen,
                      **self.segment_grid.arrays())
        return arrays

    @classmethod
    def _from_mapped(cls, a: dict[str, np.ndarray], extra: dict[str, Any], where: Path, key: str) -> RoadNetwork:
        times = {p: (a[f"times_{p}_fwd"], a[f"times_{p}_bwd"]) for p in extra["profiles"]}
        net = cls(a["node_osmid"], a["node_lon"], a["node_lat"], a["edge_u"], a["edge_v"], a["edge_length"],
                  a["edge_name"], a["edge_highway"], a["coord_offsets"], a["coords"], [str(s) for s in a["names"]],
                  times, int(extra["epsg"]), mapped_dir=where, mapped_key=key)
        net._xy, net._along, net._plen = a["coords_xy"], a["coord_along"], a["edge_plen"]
        net._grid = SegmentGrid.from_arrays(net.coord_offsets, net._xy, net._along, a)
        return net

    @classmethod
    def _read_npz(cls, path: Path) -> RoadNetwork:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != CACHE_FORMAT:
                raise ValueError(f"{path} has cache format {meta.get('format')}, expected {CACHE_FORMAT}: rebuild it")
            times = {p: (z[f"times_{p}_fwd"], z[f"times_{p}_bwd"]) for p in meta["profiles"]}
            return cls(z["node_osmid"], z["node_lon"], z["node_lat"], z["edge_u"], z["edge_v"], z["edge_length"],
                       z["edge_name"], z["edge_highway"], z["coord_offsets"], z["coords"], [str(s) for s in z["names"]],
                       times, int(meta["epsg"]))


class _TransformerCache:
    def __init__(self) -> None:
        self._by_epsg: dict[int, pyproj.Transformer] = {}

    def get(self, epsg: int) -> pyproj.Transformer:
        tr = self._by_epsg.get(epsg)
        if tr is None:
            tr = pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
            self._by_epsg[epsg] = tr
        return tr


_TRANSFORMERS = _TransformerCache()


@dataclass(eq=False)
class ProfileGraph:
    """One profile's directed graph.

    Directed edges ``d`` (sorted by tail, then head) come from base edge ``de_base[d]``, against its
    direction when ``de_rev[d]``. Pairs ``p`` group the parallel directed edges
    ``de_*[pair_start[p]:pair_start[p+1]]``; ``fwd_indptr``/``pair_head`` is the forward CSR over pairs and
    ``rev_indptr``/``rev_indices`` with ``rev_perm`` the reversed one.
    """

    name: str
    n_nodes: int
    de_base: np.ndarray
    de_rev: np.ndarray
    de_tail: np.ndarray
    de_head: np.ndarray
    de_time: np.ndarray
    pair_start: np.ndarray
    pair_tail: np.ndarray
    pair_head: np.ndarray
    fwd_indptr: np.ndarray
    rev_perm: np.ndarray
    rev_indptr: np.ndarray
    rev_indices: np.ndarray
    snap_nodes: np.ndarray
    in_main: np.ndarray  # bool per node: in the largest strongly connected component
    usable: np.ndarray  # bool per base edge: usable by the profile and in the main component
    index: EdgeIndex  # nearest points on usable edges
    _net: RoadNetwork | None = field(default=None, repr=False)  # for snap_tree

    @cached_property
    def snap_tree(self) -> cKDTree:
        """k-d tree over :attr:`snap_nodes` (projected; built on first use: only node snapping needs it)."""
        net = self._net
        if net is None or len(self.snap_nodes) == 0:
            return cKDTree(np.zeros((1, 2)))
        return cKDTree(np.column_stack(net.project(net.node_lon[self.snap_nodes], net.node_lat[self.snap_nodes])))

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays :meth:`from_arrays` needs (for :mod:`evac.mapped`)."""
        return {k: getattr(self, k) for k in _PROFILE_ARRAYS}

    @classmethod
    def from_arrays(cls, net: RoadNetwork, name: str, a: dict[str, np.ndarray]) -> ProfileGraph:
        return cls(name, net.n_nodes, a["de_base"], a["de_rev"], a["de_tail"], a["de_head"], a["de_time"],
                   a["pair_start"], a["pair_tail"], a["pair_head"], a["fwd_indptr"], a["rev_perm"], a["rev_indptr"],
                   a["rev_indices"], a["snap_nodes"], a["in_main"], a["usable"], EdgeIndex(net.segment_grid, a["usable"]),
                   net)

    @classmethod
    def build(cls, net: RoadNetwork, name: str) -> ProfileGraph:
        fwd, bwd = net.times[name]
        ok_f = np.isfinite(fwd) & (net.edge_u != net.edge_v)
        ok_b = np.isfinite(bwd) & (net.edge_u != net.edge_v)
        base = np.concatenate([np.flatnonzero(ok_f), np.flatnonzero(ok_b)]).astype(np.int32)
        rev = np.concatenate([np.zeros(ok_f.sum(), bool), np.ones(ok_b.sum(), bool)])
        tail = np.where(rev, net.edge_v[base], net.edge_u[base]).astype(np.int32)
        head = np.where(rev, net.edge_u[base], net.edge_v[base]).astype(np.int32)
        time = np.where(rev, bwd[base], fwd[base])
        order = np.lexsort((head, tail))
        base, rev, tail, head, time = base[order], rev[order], tail[order], head[order], time[order]
        n = net.n_nodes
        new_pair = np.ones(len(tail), bool)
        if len(tail):
            new_pair[1:] = (tail[1:] != tail[:-1]) | (head[1:] != head[:-1])
        starts = np.flatnonzero(new_pair)
        pair_start = np.append(starts, len(tail)).astype(np.int64)
        pair_tail, pair_head = tail[starts], head[starts]
        fwd_indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(pair_tail, minlength=n), out=fwd_indptr[1:])
        rev_perm = np.lexsort((pair_tail, pair_head))
        rev_indptr = np.zeros(n + 1, np.int64)
        np.cumsum(np.bincount(pair_head, minlength=n), out=rev_indptr[1:])
        rev_indices = pair_tail[rev_perm].astype(np.int32)
        # the largest strongly connected component is where snapping is allowed
        adj = csr_matrix((np.ones(len(pair_tail)), pair_head.astype(np.int32), fwd_indptr), shape=(n, n))
        in_main = np.zeros(n, bool)
        if len(pair_tail):
            _, labels = connected_components(adj, directed=True, connection="strong")
            has_edge = np.zeros(n, bool)
            has_edge[pair_tail] = True
            # the largest part by road length (node counts change with simplification, lengths do not);
            # self-loops (loop lanes, rings) count with their node
            loops = np.flatnonzero((net.edge_u == net.edge_v) & (np.isfinite(fwd) | np.isfinite(bwd)))
            has_edge[net.edge_u[loops]] = True
            same = labels[tail] == labels[head]
            road = np.bincount(np.concatenate([labels[tail[same]], labels[net.edge_u[loops]]]),
                               weights=np.concatenate([net.edge_length[base[same]], net.edge_length[loops]]),
                               minlength=int(labels.max()) + 1)
            main = int(np.argmax(road)) if road.max() > 0 else int(np.argmax(np.bincount(labels[has_edge])))
            in_main = (labels == main) & has_edge
        snap_nodes = np.flatnonzero(in_main).astype(np.int32)
        usable = (np.isfinite(fwd) | np.isfinite(bwd)) & in_main[net.edge_u] & in_main[net.edge_v]
        index = EdgeIndex(net.segment_grid, usable)
        return cls(name, n, base, rev, tail, head, time, pair_start, pair_tail, pair_head, fwd_indptr, rev_perm,
                   rev_indptr, rev_indices, snap_nodes, in_main, usable, index, net)

    def pair_weights(self, de_weight: np.ndarray) -> np.ndarray:
        """Minimum weight of each pair's parallel edges."""
        if de_weight.size == 0:
            return de_weight
        return np.minimum.reduceat(de_weight, self.pair_start[:-1])

    def forward_csr(self, pair_w: np.ndarray | PairWeights) -> csr_matrix:
        return csr_matrix((np.asarray(pair_w), self.pair_head, self.fwd_indptr), shape=(self.n_nodes, self.n_nodes))

    def reverse_csr(self, pair_w: np.ndarray | PairWeights) -> csr_matrix:
        return csr_matrix((np.asarray(pair_w)[self.rev_perm], self.rev_indices, self.rev_indptr),
                          shape=(self.n_nodes, self.n_nodes))

    @cached_property
    def edge_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where each base edge's weight goes (built on first use; :meth:`PairWeights.patched` reads it):
        the directed edges of each base edge ``(E, 2)`` (along it, against it; -1: none), the pair of
        each directed edge ``(D,)``, and whether a pair holds parallel directed edges ``(P,)``."""
        n_edges = self._net.n_edges if self._net is not None else int(self.de_base.max(initial=-1)) + 1
        directed = np.full((n_edges, 2), -1, np.int64)
        directed[self.de_base, self.de_rev.astype(np.int64)] = np.arange(len(self.de_base))
        sizes = np.diff(self.pair_start)
        return directed, np.repeat(np.arange(len(sizes)), sizes), sizes > 1

    def best_edge(self, tail: int, head: int, de_weight: np.ndarray | DirectedWeights) -> int:
        """The directed edge with the least current weight from ``tail`` to ``head`` (-1 if none)."""
        lo, hi = int(self.fwd_indptr[tail]), int(self.fwd_indptr[tail + 1])
        j = lo + int(np.searchsorted(self.pair_head[lo:hi], head))
        if j >= hi or self.pair_head[j] != head:
            return -1
        a, b = int(self.pair_start[j]), int(self.pair_start[j + 1])
        return a if b - a == 1 else a + int(np.argmin(de_weight[a:b]))


def edge_weights(de_time: np.ndarray, de_base: np.ndarray, mult: np.ndarray, blocked: float, d: Any = slice(None)) -> Any:
    """The current weight of directed edges ``d`` (an index, a slice or an index array; all by default):
    ``de_time[d] * mult[de_base[d]]`` seconds (``mult``: the hazard factor per base edge), ``blocked``
    where that is not finite (a blocked edge: 0 s times inf included).

    The one formula of :class:`DirectedWeights` and :class:`PairWeights`. Returns a float for an index,
    else a fresh float array of ``d``'s shape.
    """
    with np.errstate(invalid="ignore"):  # 0 s times inf: not finite, so blocked
        w = de_time[d] * mult[de_base[d]]
    if np.ndim(w) == 0:
        return float(w) if math.isfinite(w) else blocked
    w = np.asarray(w, dtype=float)
    w[~np.isfinite(w)] = blocked
    return w


@dataclass(frozen=True, eq=False)
class DirectedWeights:
    """The current weight of each directed edge of a profile graph, computed when read.

    Directed edge ``d`` weighs ``de_time[d] * mult[de_base[d]]`` seconds (``mult``: the hazard factor per
    base edge), or ``blocked`` where that is not finite (a blocked edge): :func:`edge_weights`. Pair weights (what searches
    use) are kept as arrays; these are read only for a route's few edges (:meth:`ProfileGraph.best_edge`),
    so a hazard change does not build and hold another array as long as the directed edges.
    ``w[d]`` takes an index (a float back), a slice or an index array (a fresh array back);
    ``np.asarray(w)`` gives the whole array ``(D,)``.
    """

    de_time: np.ndarray
    de_base: np.ndarray
    mult: np.ndarray
    blocked: float

    def __len__(self) -> int:
        return int(self.de_time.shape[0])

    def __getitem__(self, d: Any) -> Any:
        return edge_weights(self.de_time, self.de_base, self.mult, self.blocked, d)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        w = self[:]
        return w if dtype is None else w.astype(dtype)


#: Profile graphs with at most this many pairs hold their pair weights as one array (cheaper to read
#: than to compute on each read, and cheap to build); larger ones compute them when read.
EAGER_PAIRS = 1 << 18


class PairWeights:
    """The weight of each pair of a profile graph under hazard factors ``mult`` (per base edge): the least
    of its directed edges' weights (:class:`DirectedWeights`), seconds, ``blocked`` for a blocked pair.

    A graph of at most :data:`EAGER_PAIRS` pairs holds them as one read-only array. A larger one computes
    them when read: ``w[pairs]`` for the pairs an incremental update looks at, or the whole array
    (``np.asarray(w)``, :meth:`whole`) for a full search. So a hazard change, which patches ``mult`` on the
    edges it touches, builds no array as long as the graph per profile: at 3M nodes that is 90 MB per
    profile and, in a process that has churned through gigabytes, 100-300 ms of page faults to first write
    it. Reads are bit for bit the whole-array rebuild (same products, same minimum).
    """

    def __init__(self, pg: ProfileGraph, mult: np.ndarray, blocked: float) -> None:
        self.pg = pg
        self.mult = mult
        self.blocked = float(blocked)
        self._single = len(pg.de_time) == len(pg.pair_tail)  # every pair is one directed edge
        self._whole: np.ndarray | None = None
        if len(pg.pair_tail) <= EAGER_PAIRS:
            self._whole = self.whole()

    def __len__(self) -> int:
        return int(self.pg.pair_tail.shape[0])

    def whole(self) -> np.ndarray:
        """All pair weights ``(P,)`` (read-only; built when the graph is large)."""
        if self._whole is not None:
            return self._whole
        pg = self.pg
        w = edge_weights(pg.de_time, pg.de_base, self.mult, self.blocked)
        out = w if self._single else pg.pair_weights(w)
        out.setflags(write=False)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        w = self.whole()
        return w if dtype is None else w.astype(dtype)

    @property
    def held(self) -> bool:
        """Whether the weights are held as one array (a small graph) rather than computed when read."""
        return self._whole is not None

    @classmethod
    def patched(cls, old: PairWeights, mult: np.ndarray, edges: np.ndarray) -> PairWeights:
        """The weights for factors ``mult`` that differ from ``old.mult`` only on base ``edges``: when ``old``
        holds an array, a copy of it with the pairs of those edges' directed edges computed again (equal
        to building it whole: a pair of one directed edge weighs that edge, others are read again)."""
        new = cls.__new__(cls)
        pg = old.pg
        new.pg, new.mult, new.blocked, new._single = pg, mult, old.blocked, old._single
        new._whole = None
        if old._whole is not None:
            w = old._whole.copy()
            if len(edges):
                directed, pair, multiple = pg.edge_pairs
                d = directed[edges].ravel()
                d = d[d >= 0]
                p = pair[d]
                w[p] = edge_weights(pg.de_time, pg.de_base, mult, new.blocked, d)
                p = p[multiple[p]]
                if len(p):
                    p = np.unique(p)
                    w[p] = new._read(p)
            w.setflags(write=False)
            new._whole = w
        return new

    def _read(self, flat: np.ndarray) -> np.ndarray:
        """Weights of the pairs ``flat`` (1-d int64), computed from the factors."""
        pg = self.pg
        d = flat if self._single else rows_of(pg.pair_start, flat)[0]
        w = edge_weights(pg.de_time, pg.de_base, self.mult, self.blocked, d)
        if not self._single and len(flat):
            counts = pg.pair_start[flat + 1] - pg.pair_start[flat]
            w = np.minimum.reduceat(w, np.cumsum(counts) - counts)
        return w

    def __getitem__(self, pairs: Any) -> Any:
        if self._whole is not None:
            return self._whole[pairs]
        p = np.arange(len(self))[pairs] if isinstance(pairs, slice) else np.asarray(pairs)
        if p.dtype == bool:
            p = np.flatnonzero(p)
        w = self._read(p.reshape(-1).astype(np.int64, copy=False))
        return float(w[0]) if p.ndim == 0 else w.reshape(p.shape)


_PROFILE_ARRAYS = ("de_base", "de_rev", "de_tail", "de_head", "de_time", "pair_start", "pair_tail", "pair_head",
                   "fwd_indptr", "rev_perm", "rev_indptr", "rev_indices", "snap_nodes", "in_main", "usable")


def network_cache_path(source: Path | str, *, state_dir: Path | str) -> Path:
    """Where the arrays built from ``source`` are cached (keyed by path, size, mtime and format)."""
    p = Path(source).resolve()
    st = p.stat()
    key = hashlib.sha1(f"{p}|{st.st_size}|{st.st_mtime_ns}|{CACHE_FORMAT}".encode()).hexdigest()[:16]
    return Path(state_dir) / "evac" / "networks" / f"{p.name.split('.')[0]}-{key}.npz"


def load_network(
    source: Path | str, *, state_dir: Path | str = ".state", progress: Progress | None = None, rebuild: bool = False
) -> RoadNetwork:
    """Road network from a file: the ``.npz`` arrays ``sonae graph import`` writes, or an ``.osm(.bz2)``,
    ``.osm.pbf`` or ``.graphml`` file (through the cache in ``state_dir``).

    Raises ``FileNotFoundError``/``ValueError`` with one line saying what is wrong and what to do.
    """
    if str(source).lower().endswith(".npz"):
        if not Path(source).exists():
            raise FileNotFoundError(f"road network {source} does not exist: make it with `sonae graph import`")
        try:
            net = RoadNetwork.load(source)
        except (KeyError, OSError, EOFError, ValueError) as exc:
            raise ValueError(f"{source} is not a road network Sonae can read ({exc}): make it again with "
                             "`sonae graph import`") from None
        report_progress(progress, f"loaded network {Path(source).name}")
        return net
    cache = network_cache_path(source, state_dir=state_dir)
    if cache.exists() and not rebuild:
        try:
            net = RoadNetwork.load(cache)
            report_progress(progress, f"loaded cached network {cache.name}")
            return net
        except (ValueError, KeyError, OSError):
            pass  # stale or damaged: rebuild below
    if str(source).lower().endswith(STREAM_SUFFIXES) and Path(source).stat().st_size >= STREAM_FROM_BYTES:
        net = RoadNetwork.from_osm_file(source, progress=progress)  # large files: bounded memory
    else:
        net = RoadNetwork.from_graph(graph_from_file(source, state_dir=state_dir, progress=progress),
                                     progress=progress)
    net.save(cache)
    report_progress(progress, f"cached network as {cache}")
    return net


def network_report(net: RoadNetwork, shelters: list[Any], *, max_snap_m: float = 500.0) -> dict[str, Any]:
    """What a network covers: nodes, edges, road km, area (km², convex hull of its nodes), and per hazard
    how many of ``shelters`` (:class:`evac.shelters.Shelter`) lie on it (within ``max_snap_m`` of a
    walkable road)."""
    x, y = net.project(net.node_lon, net.node_lat)
    hull = shapely.MultiPoint(np.column_stack([x, y])).convex_hull if net.n_nodes >= 3 else shapely.Point()
    idx = net.profile("walk").index
    inside: dict[str, int] = {}
    on = 0
    for s in shelters:
        sx, sy = _TRANSFORMERS.get(net.epsg).transform(s.lon, s.lat)
        if idx.nearest_distance(float(sx), float(sy)) <= max_snap_m:
            on += 1
            for h in s.hazards:
                inside[h] = inside.get(h, 0) + 1
    fwd, bwd = net.times["walk"]
    walk_m = float((net.edge_length * np.where(np.isfinite(fwd), np.where(np.isfinite(bwd), 1.0, 0.5), 0.0)).sum())
    return {"nodes": net.n_nodes, "edges": net.n_edges, "walkable_km": round(walk_m / 1000, 1),
            "area_km2": round(float(hull.area) / 1e6, 2), "epsg": net.epsg,
            "bounds": [float(net.node_lon.min()), float(net.node_lat.min()), float(net.node_lon.max()),
                       float(net.node_lat.max())] if net.n_nodes else None,
            "shelters": len(shelters), "shelters_on_network": on, "shelters_by_hazard": dict(sorted(inside.items()))}


#: Fraction of a segment by which the cut ends of a part of an edge are widened when the part is tested
#: against a hazard area (:meth:`RoadNetwork.part_meets`): a nanometre on a segment of a kilometre, toward
#: the safe side, for the rounding of the cut's position.
PART_END_TOL = 1e-9


def _segment_meets(geom: shapely.Geometry, a: np.ndarray, b: np.ndarray, s0: float, s1: float) -> bool:
    """Whether ``geom`` meets the segment from ``a`` to ``b`` (lon/lat ``(2,)`` each) at a fraction of it
    within ``[s0 - PART_END_TOL, s1 + PART_END_TOL]``: where ``geom`` meets the whole segment
    (shapely ``intersects``, as for whole edges), the fractions of the pieces of their intersection."""
    seg = shapely.LineString([a, b])
    if not shapely.intersects(geom, seg):
        return False
    inter = shapely.intersection(geom, seg)
    pieces = [p for p in shapely.get_parts(shapely.get_parts(inter)) if not p.is_empty]
    if not pieces:  # the predicate and the overlay disagree (a touch at rounding level): the safe side
        return True
    d = b - a
    dd = float(d @ d)
    if dd <= 0.0:
        return True  # a segment of no length: the point meets geom
    for p in pieces:
        t = (shapely.get_coordinates(p) - a) @ d / dd
        if float(t.min()) <= s1 + PART_END_TOL and float(t.max()) >= s0 - PART_END_TOL:
            return True
    return False
