"""The packed edge grid gives the same answers as the shapely/cKDTree implementation it replaced, and the
mapped network arrays are shared between processes (issue #21, item 4).

Oracles: shapely brute force (distance to every usable edge), the former piece index
(``edge_oracle.PieceIndex``) for the set of near road points, and an ``STRtree`` over one ``LineString``
per edge for hazard polygons.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
import shapely
from edge_oracle import PieceIndex, edge_strtree, lonlat_edge_hits, strtree_edge_hits
from evac_reference import EXTRACTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import evac.network
from evac.drilltown import generate
from evac.engine import TIE_M, Engine
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea, edge_hits
from evac.network import RoadNetwork, load_network
from evac.snapping import SegmentGrid

ROOT = Path(__file__).resolve().parents[2]
_CASES: dict[str, tuple[RoadNetwork, dict[str, object]]] = {}


def _case(name: str, tmp: Path) -> tuple[RoadNetwork, dict[str, object]]:
    """A real network with its oracles (built once per session)."""
    if name not in _CASES:
        if name == "drilltown":
            t = generate(tmp / "town", rows=24, cols=24, seed=3)
            net = load_network(t.osm, state_dir=tmp / "state")
        else:
            net = load_network(EXTRACTS[name], state_dir=tmp / "state")
        usable = net.profile("walk").usable
        xy = np.asarray(net.coords_xy)
        lines = shapely.linestrings(xy, indices=np.repeat(np.arange(net.n_edges), np.diff(net.coord_offsets)))
        _CASES[name] = (net, {
            "pieces": PieceIndex.build(net.coord_offsets, xy, usable),
            "tree": edge_strtree(net),
            "usable_lines": lines[usable],
            "lo": xy.min(axis=0), "hi": xy.max(axis=0),
        })
    return _CASES[name]


@pytest.fixture(scope="module")
def tmp_nets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("edge_grid")


_frac = st.floats(-0.05, 1.05, allow_nan=False)


@pytest.mark.parametrize("name", ["drilltown", "bayreuth"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fx=_frac, fy=_frac, extra=st.sampled_from([0.0, TIE_M, 40.0, 150.0]))
def test_snapping_matches_brute_force_and_the_piece_index(name: str, tmp_nets: Path, fx: float, fy: float,
                                                          extra: float) -> None:
    net, o = _case(name, tmp_nets)
    lo, hi = o["lo"], o["hi"]
    x, y = float(lo[0] + fx * (hi[0] - lo[0])), float(lo[1] + fy * (hi[1] - lo[1]))
    idx = net.profile("walk").index
    d = idx.nearest_distance(x, y)
    brute = float(shapely.distance(o["usable_lines"], shapely.Point(x, y)).min())
    assert d == pytest.approx(brute, abs=1e-6)
    reach = d + extra
    got = idx.within(x, y, reach)
    assert len(got) >= 1 and got.dist[0] == pytest.approx(d, abs=1e-6)
    assert np.all(np.diff(got.dist) >= 0)  # nearest first
    assert np.allclose(np.hypot(got.x - x, got.y - y), got.dist)
    # the same road points as the former index: one per geometry segment within reach (a point at the
    # very reach may fall on either side of it by rounding: compared up to 1 mm inside it)
    want = o["pieces"].within(x, y, reach + 1.0)

    def points(p):
        keep = p.dist < reach - 1e-3
        order = np.lexsort((p.dist[keep], p.along[keep], p.edge[keep]))
        return p.edge[keep][order], p.along[keep][order], p.dist[keep][order]

    (ge, ga, gd), (we, wa, wd) = points(got), points(want)
    assert np.array_equal(ge, we)
    assert np.allclose(ga, wa, atol=1e-6) and np.allclose(gd, wd, atol=1e-6)


@pytest.mark.parametrize("name", ["drilltown", "bayreuth"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fx=_frac, fy=_frac, radius=st.floats(1.0, 2500.0), k=st.integers(3, 9), seed=st.integers(0, 2**16),
       hole=st.booleans())
def test_polygon_edges_equal_the_strtree(name: str, tmp_nets: Path, fx: float, fy: float, radius: float, k: int,
                                         seed: int, hole: bool) -> None:
    net, o = _case(name, tmp_nets)
    lo, hi = o["lo"], o["hi"]
    x, y = float(lo[0] + fx * (hi[0] - lo[0])), float(lo[1] + fy * (hi[1] - lo[1]))
    rng = np.random.default_rng(seed)
    ang = np.sort(rng.uniform(0, 2 * np.pi, k))
    rad = radius * rng.uniform(0.3, 1.0, k)
    poly = shapely.Polygon(np.column_stack([x + rad * np.cos(ang), y + rad * np.sin(ang)]))
    poly = poly if poly.is_valid else poly.convex_hull
    if hole and poly.area > 1:
        poly = poly.difference(shapely.Point(x, y).buffer(radius * 0.2))
    want = strtree_edge_hits(net, poly, o["tree"])
    assert np.array_equal(net.segment_grid.edges_intersecting(poly), want)  # the grid, in projected metres
    # the network and the hazard layer, in lon/lat (evac.network.BOUNDARY_RULE): through the network's
    # edge tree (a small network) and through the grid's candidates (large ones)
    if not poly.is_empty and isinstance(poly, shapely.Polygon):
        inv = net.transformer(inverse=True)
        ll = shapely.transform(poly, lambda xy: np.column_stack(inv.transform(xy[:, 0], xy[:, 1])))
        want_ll = lonlat_edge_hits(net, ll)
        assert net.n_edges <= evac.network.TREE_MAX_EDGES
        got = edge_hits(net, HazardArea(id="p", hazard="flood", geometry=ll))
        assert np.array_equal(got, want_ll) and got.dtype == np.int64
        with mock.patch.object(evac.network, "TREE_MAX_EDGES", -1):
            assert np.array_equal(net.edges_intersecting(ll), want_ll)


def _drawn_network(xy: np.ndarray, offsets: np.ndarray) -> RoadNetwork:
    """A network whose edges' projected geometry is exactly ``xy[offsets[e]:offsets[e+1]]`` (metres; only
    the geometry is meaningful: what polygon queries read)."""
    m = len(offsets) - 1
    net = RoadNetwork(np.zeros(1, np.int64), np.zeros(1), np.zeros(1), np.zeros(m, np.int32), np.zeros(m, np.int32),
                      np.ones(m), np.full(m, -1, np.int32), np.zeros(m, np.int32), offsets.astype(np.int64),
                      np.zeros((len(xy), 2)), [""], {"walk": (np.ones(m), np.ones(m))}, 32654)
    net._xy = xy
    return net


#: Lattice of :func:`_lattice_network`: its step (degrees) and its origin (lon, lat).
LATTICE_DEG = 1e-4
LATTICE_ORIGIN = np.array([140.36, 37.40])


def _lattice_network(steps: np.ndarray, offsets: np.ndarray) -> RoadNetwork:
    """A network whose edges' lon/lat geometry is ``steps`` (lattice steps, ``(M, 2)``) on the
    :data:`LATTICE_DEG` lattice from :data:`LATTICE_ORIGIN`, projected as usual (only the geometry is
    meaningful)."""
    m = len(offsets) - 1
    return RoadNetwork(np.zeros(1, np.int64), np.zeros(1), np.zeros(1), np.zeros(m, np.int32), np.zeros(m, np.int32),
                       np.ones(m), np.full(m, -1, np.int32), np.zeros(m, np.int32), offsets.astype(np.int64),
                       steps * LATTICE_DEG + LATTICE_ORIGIN, [""], {"walk": (np.ones(m), np.ones(m))}, 32654)


@st.composite
def _edges_and_polygon(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, shapely.Geometry]:
    """Edges on a coarse lattice (so that they touch, cross and run along each other and the polygon),
    one-point edges and repeated points included, and a polygon with holes whose vertices are lattice
    points and often edge points."""
    lattice = st.tuples(st.integers(0, 12), st.integers(0, 12))
    edges = draw(st.lists(st.lists(lattice, min_size=1, max_size=5), min_size=1, max_size=40))
    pts = np.array([p for e in edges for p in e], float) * 25.0
    offsets = np.concatenate([[0], np.cumsum([len(e) for e in edges])])
    shell = draw(st.lists(lattice, min_size=3, max_size=8, unique=True))
    poly = shapely.Polygon(np.array(shell, float) * 25.0)
    if not poly.is_valid or poly.area == 0:
        poly = shapely.MultiPoint(np.array(shell, float) * 25.0).convex_hull.buffer(draw(st.sampled_from([0.0, 12.5])))
    for hole in draw(st.lists(st.tuples(lattice, st.integers(1, 3)), max_size=2)):
        (hx, hy), r = hole
        poly = poly.difference(shapely.box(hx * 25.0, hy * 25.0, (hx + r) * 25.0, (hy + r) * 25.0))
    return pts, offsets, poly


@settings(max_examples=300, deadline=None)
@given(case=_edges_and_polygon())
def test_polygon_edges_equal_plain_shapely_on_drawn_edges(case: tuple[np.ndarray, np.ndarray, shapely.Geometry]) -> None:
    """Through the edge tree and through the grid, the edges cut by a polygon (holes, touching, along an
    edge, through a vertex) are those whose linestring shapely ``intersects`` one by one; one-point edges
    (no segment) never."""
    xy, offsets, poly = case
    net = _drawn_network(xy, offsets)
    want = [e for e in range(net.n_edges) if offsets[e + 1] - offsets[e] >= 2
            and shapely.LineString(xy[offsets[e]:offsets[e + 1]]).intersects(poly)]
    for cell in (None, 10.0):
        grid = SegmentGrid.build(offsets, net.coords_xy, cell=cell)
        assert grid.edges_intersecting(poly).tolist() == want
    # the network decides in lon/lat: the same drawing on a 1e-4 degree lattice, through its edge tree
    # and through the grid's candidates
    ll = _lattice_network(xy / 25.0, offsets)
    poly_ll = shapely.transform(poly, lambda p: p / 25.0 * LATTICE_DEG + LATTICE_ORIGIN)
    want_ll = [e for e in range(ll.n_edges) if offsets[e + 1] - offsets[e] >= 2
               and shapely.LineString(ll.coords[offsets[e]:offsets[e + 1]]).intersects(poly_ll)]
    assert ll.edges_intersecting(poly_ll).tolist() == want_ll
    with mock.patch.object(evac.network, "TREE_MAX_EDGES", -1):
        assert ll.edges_intersecting(poly_ll).tolist() == want_ll


def test_grid_edge_cases() -> None:
    """Long diagonal segments, one-point queries far away, an empty network, and tiny cells."""
    xy = np.array([[0.0, 0.0], [5000.0, 3000.0], [10.0, 10.0], [10.0, 20.0], [30.0, 20.0]])
    off = np.array([0, 2, 5])
    for cell in (None, 7.0, 5000.0):
        g = SegmentGrid.build(off, xy, cell=cell)
        near = g.segments_in_box(2400, 1400, 2600, 1600).tolist()
        assert near == [0] if cell == 7.0 else 0 in near  # candidates: a superset, exact with small cells
        assert g.segment_edges(np.array([0, 2, 3])).tolist() == [0, 1, 1]
        assert g.along.tolist() == pytest.approx([0, math.hypot(5000, 3000), 0, 10, 30])
        from evac.snapping import EdgeIndex

        idx = EdgeIndex(g, np.array([True, True]))
        assert idx.nearest_distance(-3000.0, 0.0) == pytest.approx(3000.0)
        assert idx.nearest_distance(10.0, 25.0) == pytest.approx(5.0)
        pts = idx.within(10.0, 25.0, 5.0)
        assert pts.edge.tolist() == [1, 1] and pts.along.tolist() == pytest.approx([10.0, 10.0])
        assert EdgeIndex(g, np.array([False, False])).nearest_distance(0.0, 0.0) == math.inf
        line = shapely.LineString([(2500, 1400), (2500, 1600)])
        assert g.edges_intersecting(line).tolist() == [0]
    empty = SegmentGrid.build(np.array([0]), np.zeros((0, 2)))
    assert EdgeIndex(empty, np.zeros(0, bool)).within(0.0, 0.0, 100.0).edge.size == 0
    assert empty.edges_intersecting(shapely.box(-1, -1, 1, 1)).size == 0


def is_mapped(a: Any) -> bool:
    """Whether array ``a`` is (a view of) a memory map of a file."""
    while a is not None:
        if isinstance(a, np.memmap | mmap.mmap):
            return True
        a = getattr(a, "base", None)
    return False


def test_mapped_network_equals_the_npz_and_answers_the_same(tmp_path: Path) -> None:
    net = grid_network(3000, seed=5)
    path = tmp_path / "grid.npz"
    net.save(path)
    plain = RoadNetwork.load(path, shared=False)
    first = RoadNetwork.load(path)  # writes grid.npz.mapped/
    assert (tmp_path / "grid.npz.mapped" / "network" / "meta.json").exists()
    again = RoadNetwork.load(path)  # maps what the first wrote
    for m in (first, again):
        assert m.mapped_dir is not None and is_mapped(m.coords)
        for attr in ("node_osmid", "node_lon", "edge_u", "edge_v", "edge_length", "coord_offsets", "coords"):
            assert np.array_equal(getattr(m, attr), getattr(plain, attr))
        assert np.array_equal(m.coords_xy, plain.coords_xy) and np.array_equal(m.edge_plen, plain.edge_plen)
        with pytest.raises(ValueError):
            m.coords[0, 0] = 0.0  # read-only: a process cannot change what others map
    pa, pm = plain.profile("walk"), again.profile("walk")
    assert (tmp_path / "grid.npz.mapped" / "profile-walk" / "meta.json").exists()
    assert is_mapped(RoadNetwork.load(path).profile("walk").rev_indptr)
    for k in ("pair_head", "fwd_indptr", "rev_indices", "rev_perm", "usable", "snap_nodes"):
        assert np.array_equal(getattr(pa, k), getattr(pm, k))
    shelters = grid_shelters(net, per=100, seed=5)
    area = HazardArea(id="a", hazard="flood", geometry=shapely.Point(float(net.node_lon[1500]),
                                                                   float(net.node_lat[1500])).buffer(0.002))
    e1, e2 = Engine(plain, shelters=shelters, areas=[area]), Engine(again, shelters=shelters, areas=[area])
    f1, f2 = e1.field(), e2.field()
    assert np.array_equal(f1.dist, f2.dist) and np.array_equal(f1.next_node, f2.next_node)
    assert np.isfinite(f1.dist).sum() > net.n_nodes // 2
    rng = np.random.default_rng(2)
    for i in rng.choice(net.n_nodes, 30, replace=False).tolist():
        lat, lon = float(net.node_lat[i]) + 2e-4, float(net.node_lon[i]) - 1e-4
        r1, r2 = e1.route_result(lat, lon), e2.route_result(lat, lon)
        assert (r1.status, r1.path, r1.duration_s) == (r2.status, r2.path, r2.duration_s)
    # a stale directory (the .npz changed) is written again
    grid_network(2000, seed=6).save(path)
    assert RoadNetwork.load(path).n_nodes == RoadNetwork.load(path, shared=False).n_nodes != net.n_nodes


_CHILD = """
import json, sys
from evac.network import RoadNetwork
from evac.engine import Engine
from evac.gridtown import grid_shelters
net = RoadNetwork.load(sys.argv[1])
eng = Engine(net, shelters=grid_shelters(net, per=100, seed=5))
pts = [(float(net.node_lat[i]) + 2e-4, float(net.node_lon[i]) - 1e-4) for i in range(0, net.n_nodes, 97)]
routes = [[r.status, r.path, r.duration_s] for r in (eng.route_result(lat, lon) for lat, lon in pts)]
files = {}
for line in open("/proc/self/maps"):
    parts = line.split()
    if len(parts) >= 6 and ".mapped/" in parts[5]:
        files[parts[5]] = parts[4]  # inode
print(json.dumps({"routes": routes, "files": files}))
"""


def test_two_processes_map_the_same_files(tmp_path: Path) -> None:
    """Two processes loading one network map the same files (same inodes) and answer alike."""
    grid_network(3000, seed=5).save(tmp_path / "grid.npz")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    outs = [json.loads(subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "grid.npz")], env=env,
                                      check=True, capture_output=True, text=True, timeout=300).stdout)
            for _ in range(2)]
    a, b = outs
    assert a["routes"] == b["routes"] and sum(r[0] == "ok" for r in a["routes"]) > 10
    shared = set(a["files"]) & set(b["files"])
    assert any("/network/coords_xy.npy" in f for f in shared)
    assert any("/profile-walk/rev_indptr.npy" in f for f in shared)
    assert all(a["files"][f] == b["files"][f] for f in shared)  # the very same files, not copies


@given(st.lists(st.integers(0, 6), min_size=1, max_size=30), st.data())
def test_ranges_and_rows_of_gather_what_slices_do(counts: list[int], data: st.DataObject) -> None:
    """``ranges``/``rows_of`` (the one CSR gather of the grid, the edges' lines and the graph) give the
    positions a loop of slices gives, in order, and each one's row."""
    from evac.snapping import ranges, rows_of

    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    rows = np.array(data.draw(st.lists(st.integers(0, len(counts) - 1), max_size=20)), np.int64)
    pos, owner = rows_of(indptr, rows)
    want = [(p, i) for i, r in enumerate(rows.tolist()) for p in range(indptr[r], indptr[r + 1])]
    assert pos.tolist() == [p for p, _ in want] and owner.tolist() == [i for _, i in want]
    lo, hi = indptr[rows], indptr[rows + 1]
    assert ranges(lo, hi).tolist() == [p for p, _ in want]


def _uncached_within(idx: Any, x: float, y: float, radius: float) -> Any:
    """``EdgeIndex.within`` as it was before boxes were kept: every array gathered for the query (oracle)."""
    from evac.snapping import _EMPTY, EdgePoints

    if idx.empty or not radius >= 0:
        return _EMPTY
    g = idx.grid
    segs = g.segments_in_box(x - radius, y - radius, x + radius, y + radius)
    edges = g.segment_edges(segs)
    ok = idx.usable[edges]
    segs, edges = segs[ok], edges[ok]
    a, b = g.xy[segs], g.xy[segs + 1]
    dx, dy = b[:, 0] - a[:, 0], b[:, 1] - a[:, 1]
    l2 = dx * dx + dy * dy
    t = ((x - a[:, 0]) * dx + (y - a[:, 1]) * dy) / np.maximum(l2, 1e-12)
    np.clip(t, 0.0, 1.0, out=t)
    qx, qy = a[:, 0] + t * dx, a[:, 1] + t * dy
    along_seg = t * np.sqrt(l2)
    dist = np.hypot(qx - x, qy - y)
    keep = np.flatnonzero(dist <= radius)
    if keep.size == 0:
        return _EMPTY
    along = g.along[segs[keep]] + along_seg[keep]
    dist, qx, qy = dist[keep], qx[keep], qy[keep]
    order = np.lexsort((along, dist))
    return EdgePoints(edges[keep][order].astype(np.int32), along[order], dist[order], qx[order], qy[order])


def _uncached_nearest(idx: Any, x: float, y: float) -> float:
    """``EdgeIndex.nearest_distance`` as it was before boxes were kept (oracle)."""
    if idx.empty:
        return math.inf
    g = idx.grid
    out = math.hypot(max(g.x0 - x, 0.0, x - (g.x0 + g.nx * g.cell)), max(g.y0 - y, 0.0, y - (g.y0 + g.ny * g.cell)))
    r = out + g.cell
    span = math.hypot(g.nx * g.cell, g.ny * g.cell) + out + g.cell
    while True:
        p = _uncached_within(idx, x, y, r)
        if len(p) and float(p.dist[0]) <= r:
            return float(p.dist[0])
        if r > span:
            return math.inf
        r *= 2


@pytest.mark.parametrize("name", ["drilltown", "bayreuth"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fx=_frac, fy=_frac, radius=st.sampled_from([0.0, TIE_M, 40.0, 150.0, 900.0]),
       near=st.lists(st.floats(-30.0, 30.0), min_size=2, max_size=6))
def test_kept_boxes_give_the_very_same_points(name: str, tmp_nets: Path, fx: float, fy: float, radius: float,
                                              near: list[float]) -> None:
    """``within`` and ``nearest_distance`` with candidate boxes kept (and reused by nearby positions) give
    bit for bit what gathering every array per query gave (:func:`_uncached_within`, the former code)."""
    net, o = _case(name, tmp_nets)
    lo, hi = o["lo"], o["hi"]
    idx = net.profile("walk").index
    x0, y0 = float(lo[0] + fx * (hi[0] - lo[0])), float(lo[1] + fy * (hi[1] - lo[1]))
    for x, y in [(x0, y0), *zip([x0 + d for d in near], [y0 - d for d in reversed(near)], strict=True), (x0, y0)]:
        got, want = idx.within(x, y, radius), _uncached_within(idx, x, y, radius)
        for field in ("edge", "along", "dist", "x", "y"):
            g, w = getattr(got, field), getattr(want, field)
            assert g.dtype == w.dtype and np.array_equal(g, w), field
        assert idx.nearest_distance(x, y) == _uncached_nearest(idx, x, y)


@pytest.mark.parametrize("meta", ['{"key": "K", "arrays": 5}', '{"key": "K", "arrays": [], "extra": 5}',
                                  '{"key": "K", "arrays": [], "extra": "ab"}', '{"key": "K", "arrays": [7]}'])
def test_mapped_meta_of_another_shape_is_damage_not_a_crash(tmp_path: Path, meta: str) -> None:
    """The same kind of fault break21 found in the field store: a meta.json that is JSON of another shape
    raised TypeError out of the network load; it is damage, written again."""
    from evac import mapped

    mapped.write(tmp_path / "m", {"a": np.arange(3)}, key="K")
    assert mapped.read(tmp_path / "m", key="K") is not None
    (tmp_path / "m" / "meta.json").write_text(meta)
    assert mapped.read(tmp_path / "m", key="K") is None
