"""The streamed import (evac.osm_import, pyosmium + numpy) against the osmnx path as the oracle.

Oracle: ``RoadNetwork.from_graph(graph_from_file(path))`` (osmnx ``graph_from_xml`` + ``simplify_graph``) and
networkx shortest paths on that osmnx graph. Checked: the same node set (OSM ids of intersections and dead
ends), the same edges (u, v; parallel edges compared as sorted lists) with lengths within 0.01 m, the same
geometry, labels and profile times, and the same shortest-path distances between random node pairs.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path

import networkx as nx
import numpy as np
import osmium
import pytest
import shapely
from evac_reference import EXTRACTS
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import dijkstra

from app.cli import main
from evac.graph import get_profile, graph_from_file
from evac.network import RoadNetwork

OSM = Path(EXTRACTS["monaco"]).parent
SHARED = {
    "bayreuth": EXTRACTS["bayreuth"],
    "monaco": EXTRACTS["monaco"],
    "aguascalientes": str(OSM / "osmnx_aguascalientes.osm.pbf"),
}


def _by_pair(net: RoadNetwork) -> dict[tuple[int, int], list[int]]:
    pairs: dict[tuple[int, int], list[int]] = defaultdict(list)
    ids = net.node_osmid.tolist()
    for e, (u, v) in enumerate(zip(net.edge_u.tolist(), net.edge_v.tolist(), strict=True)):
        pairs[(ids[u], ids[v])].append(e)
    return pairs


def _label_parts(net: RoadNetwork, e: int) -> frozenset[str]:
    i = int(net.edge_name[e])
    return frozenset(net.names[i].split(" / ")) if i >= 0 else frozenset()


def assert_same_network(oracle: RoadNetwork, streamed: RoadNetwork) -> None:
    """Same nodes, edges (key-insensitive), lengths within 0.01 m, geometry, labels and profile times."""
    assert set(oracle.node_osmid.tolist()) == set(streamed.node_osmid.tolist())
    a, b = _by_pair(oracle), _by_pair(streamed)
    assert set(a) == set(b)
    for key, ea in a.items():
        eb = b[key]
        assert len(ea) == len(eb), key

        def described(net: RoadNetwork, es: list[int]) -> list[tuple]:  # type: ignore[type-arg]
            return sorted((round(float(net.edge_length[e]), 2), net.names[int(net.edge_highway[e])],
                           tuple(sorted(_label_parts(net, e))), net.edge_coords(e).round(7).tobytes(),
                           *(round(float(net.times[p][d][e]), 6) for p in sorted(net.times) for d in (0, 1)))
                          for e in es)

        da, db = described(oracle, ea), described(streamed, eb)
        for x, y in zip(da, db, strict=True):
            assert abs(x[0] - y[0]) <= 0.01 and x[1:] == y[1:], (key, x, y)
    assert streamed.epsg == oracle.epsg


def _csr_dist(n: int, u: np.ndarray, v: np.ndarray, weight: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """scipy Dijkstra over directed edges ``u -> v`` (the least weight of parallel edges; loops and inf left out)."""
    from scipy.sparse import csr_matrix

    ok = np.isfinite(weight) & (u != v)
    order = np.argsort(weight[ok], kind="stable")
    u, v, w = u[ok][order], v[ok][order], weight[ok][order]
    _, first = np.unique(u.astype(np.int64) * n + v, return_index=True)  # csr_matrix would add parallels up
    m = csr_matrix((w[first], (u[first], v[first])), shape=(n, n))
    return dijkstra(m, directed=True, indices=sources)


def assert_same_distances(G: nx.MultiDiGraph, streamed: RoadNetwork, *, seed: int, pairs: int = 40) -> None:
    """Shortest paths on the streamed arrays equal networkx's on the osmnx graph (length, and walk time)."""
    rng = np.random.default_rng(seed)
    index = {int(o): i for i, o in enumerate(streamed.node_osmid.tolist())}
    src = rng.choice(list(G.nodes), size=min(8, len(G)), replace=False).tolist()
    dst = rng.choice(list(G.nodes), size=min(pairs, len(G)), replace=True).tolist()
    walk = get_profile("walk")
    D = nx.DiGraph()
    for u, v, data in G.edges(data=True):
        f, r = walk.times(data)
        for x, y, t in ((u, v, f), (v, u, r)):
            if math.isfinite(t) and (not D.has_edge(x, y) or D[x][y]["t"] > t):
                D.add_edge(x, y, t=t)
    sources = np.array([index[s] for s in src])
    n, u, v = streamed.n_nodes, streamed.edge_u, streamed.edge_v
    by_len = _csr_dist(n, u, v, streamed.edge_length, sources)
    fwd, bwd = streamed.times["walk"]
    by_walk = _csr_dist(n, np.concatenate([u, v]), np.concatenate([v, u]), np.concatenate([fwd, bwd]), sources)
    checked = 0
    for i, s in enumerate(src):
        lengths = nx.single_source_dijkstra_path_length(G, s, weight="length")
        times = nx.single_source_dijkstra_path_length(D, s, weight="t") if s in D else {s: 0.0}
        for t in dst:
            want = lengths.get(t, math.inf)
            got = by_len[i, index[t]]
            assert (math.isinf(want) and math.isinf(got)) or abs(want - got) <= 0.01, (s, t, want, got)
            want_t = times.get(t, math.inf)
            got_t = by_walk[i, index[t]]
            assert (math.isinf(want_t) and math.isinf(got_t)) or abs(want_t - got_t) <= 0.01, (s, t, want_t, got_t)
            checked += math.isfinite(want)
    assert checked > 0


@pytest.mark.parametrize("name", list(SHARED))
def test_streamed_import_is_the_osmnx_graph_on_the_shared_extracts(name: str, tmp_path: Path) -> None:
    path = SHARED[name]
    G = graph_from_file(path, state_dir=tmp_path)
    oracle = RoadNetwork.from_graph(G)
    said: list[str] = []
    streamed = RoadNetwork.from_osm_file(path, progress=said.append)
    assert_same_network(oracle, streamed)
    assert_same_distances(G, streamed, seed=len(name))
    # progress: the passes and the result are reported
    assert any("reading highway ways" in m for m in said) and any("road graph ready" in m for m in said)
    assert streamed.n_nodes > 500


def test_clipping_keeps_what_osmnx_truncate_by_edge_keeps(tmp_path: Path) -> None:
    """A polygon cutting the town: the same roads as osmnx's ``truncate_graph_polygon(truncate_by_edge=True)``
    (the PBF path's semantics: only highway ways count as neighbours)."""
    src = tmp_path / "krems.osm.pbf"
    _write_pbf(Path(EXTRACTS["krems"]), src)
    full = RoadNetwork.from_osm_file(src)
    w, s, n = float(full.node_lon.min()), float(full.node_lat.min()), float(full.node_lat.max())
    mid, q3 = (float(q) for q in np.quantile(full.node_lon, [0.5, 0.75]))
    clip = shapely.Polygon([(w, s), (mid, s), (q3, n), (w, n)])  # a slanted cut through the town
    G = graph_from_file(src, state_dir=tmp_path, clip=clip)
    streamed = RoadNetwork.from_osm_file(src, clip=clip)
    assert 0 < streamed.n_nodes < full.n_nodes
    assert_same_network(RoadNetwork.from_graph(G), streamed)
    with pytest.raises(ValueError, match="no road node lies inside"):
        RoadNetwork.from_osm_file(src, clip=shapely.box(0, 0, 1, 1))


def _write_pbf(src: Path, out: Path) -> Path:
    with osmium.SimpleWriter(str(out)) as writer:
        for obj in osmium.FileProcessor(str(src)):
            if isinstance(obj, osmium.osm.Node):
                writer.add_node(obj)
            elif isinstance(obj, osmium.osm.Way):
                writer.add_way(obj)
    return out


# -- random small towns: every simplification pattern osmnx knows ----------------------------------------
_TAGS = st.fixed_dictionaries({
    "highway": st.sampled_from(["residential", "footway", "steps", "motorway", "service"]),
}, optional={
    "oneway": st.sampled_from(["yes", "-1", "no", "reverse"]),
    "junction": st.just("roundabout"),
    "name": st.sampled_from(["A", "B", "C"]),
    "maxspeed": st.sampled_from(["30", "50", "20 mph"]),
    "foot": st.sampled_from(["yes", "no"]),
    "oneway:foot": st.just("yes"),
    "surface": st.sampled_from(["asphalt", "gravel"]),
})


@st.composite
def towns(draw: st.DrawFn) -> tuple[list[list[int]], list[dict[str, str]]]:
    n_nodes = draw(st.integers(3, 14))
    ways = draw(st.lists(st.lists(st.integers(1, n_nodes), min_size=2, max_size=8), min_size=1, max_size=7))
    tags = [draw(_TAGS) for _ in ways]
    return ways, tags


def _write_osm(path: Path, ways: list[list[int]], tags: list[dict[str, str]]) -> None:
    used = sorted({n for w in ways for n in w})
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="test">']
    for n in used:  # nodes on a coarse lattice, 7 decimals as in OSM files
        lines.append(f'<node id="{n}" version="1" lat="{35 + (n % 5) * 0.0007:.7f}" lon="{139 + (n // 5) * 0.0009:.7f}"/>')
    for i, (w, t) in enumerate(zip(ways, tags, strict=True)):
        lines.append(f'<way id="{100 + i}" version="1">')
        lines += [f'<nd ref="{n}"/>' for n in w]
        lines += [f'<tag k="{k}" v="{v}"/>' for k, v in t.items()]
        lines.append("</way>")
    lines.append("</osm>")
    path.write_text("\n".join(lines), encoding="utf-8")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(town=towns())
# a chain that stops at a node another chain passes through (osmnx removes it with that node)
@example(town=([[1, 3], [2, 1, 3, 1]], [{"highway": "residential", "oneway": "yes"}] * 2))
# a loop through one junction, and a ring without any
@example(town=([[1, 2, 3, 4, 2, 5], [6, 7, 8, 6]], [{"highway": "footway"}, {"highway": "residential"}]))
def test_random_towns_match_osmnx(town: tuple[list[list[int]], list[dict[str, str]]], tmp_path: Path) -> None:
    """Junctions, dead ends, one-way changes, roundabouts, loops with one junction, rings without any,
    repeated nodes in a way, tag changes that stop simplification: the same graph as osmnx's."""
    ways, tags = town
    path = tmp_path / "town.osm"
    _write_osm(path, ways, tags)
    if not any(len(set(w)) > 1 for w in ways):
        with pytest.raises(ValueError):
            RoadNetwork.from_osm_file(path)
        return
    G = graph_from_file(path, state_dir=tmp_path)
    streamed = RoadNetwork.from_osm_file(path)
    assert_same_network(RoadNetwork.from_graph(G), streamed)
    assert_same_distances(G, streamed, seed=len(ways), pairs=10)


def test_a_way_with_a_node_missing_from_the_file_loses_only_those_segments(tmp_path: Path) -> None:
    """osmnx stops on such a file ("Some edges missing nodes"); the streamed import leaves out the segments
    that touch the missing node, says how many references were missing, and keeps the rest."""
    path = tmp_path / "cut.osm"
    _write_osm(path, [[1, 2, 3, 4], [4, 5, 6]], [{"highway": "residential"}, {"highway": "footway"}])
    path.write_text(re.sub(r'<node id="5"[^>]*/>\n', "", path.read_text(encoding="utf-8")), encoding="utf-8")
    said: list[str] = []
    net = RoadNetwork.from_osm_file(path, progress=said.append)
    assert any("1 node references are not in the file" in m for m in said)
    assert set(net.node_osmid.tolist()) == {1, 4}  # 1-2-3-4 is one edge; 4-5-6 lost both its segments
    assert set(_by_pair(net)) == {(1, 4), (4, 1)}


def test_unreadable_and_empty_files_say_what_is_wrong(tmp_path: Path) -> None:
    bad = tmp_path / "cut.osm.pbf"
    bad.write_bytes(b"\x00\x00\x00\x0d" + b"\x01" * 40)
    with pytest.raises(ValueError, match="cannot read cut.osm.pbf as OSM PBF"):
        RoadNetwork.from_osm_file(bad)
    empty = tmp_path / "empty.osm"
    empty.write_text('<?xml version="1.0"?><osm version="0.6"></osm>', encoding="utf-8")
    with pytest.raises(ValueError, match="empty.osm holds no highway ways"):
        RoadNetwork.from_osm_file(empty)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        RoadNetwork.from_osm_file(tmp_path / "missing.osm.pbf")


@pytest.mark.parametrize("via", ["stream", "osmnx"])
def test_graph_import_command_streams_by_default_and_keeps_the_osmnx_path(
        via: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = SHARED["aguascalientes"]
    out = tmp_path / f"{via}.npz"
    args = ["graph", "import", src, "--out", str(out), "--shelters", str(tmp_path / "none.geojson"),
            "--state-dir", str(tmp_path / "state")]
    (tmp_path / "none.geojson").write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    assert main([*args, "--via", via] if via == "osmnx" else args) == 0
    err = capsys.readouterr().err
    assert ("streamed with pyosmium" in err) == (via == "stream")
    net = RoadNetwork.load(out)
    assert_same_network(RoadNetwork.from_graph(graph_from_file(src, state_dir=tmp_path)), net)
