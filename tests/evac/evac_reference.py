"""Independent reference computations for the evac tests (networkx Dijkstra, brute-force shapely)."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import shapely

from evac.graph import get_profile
from evac.network import RoadNetwork


def reference_digraph(G: nx.MultiDiGraph, net: RoadNetwork, profile: str, blocked: list[shapely.Geometry],
                      penalties: list[tuple[shapely.Geometry, float]] = ()) -> nx.DiGraph:  # type: ignore[assignment]
    """A networkx DiGraph of node indices with the profile's times, blocked edges removed (brute force).

    An edge is in an area when its lon/lat line ``intersects`` the area's lon/lat polygon (the boundary
    counts), as the engine decides it (``evac.network.BOUNDARY_RULE``); ``net`` gives only node indices."""
    prof = get_profile(profile)
    index = {int(o): i for i, o in enumerate(net.node_osmid)}
    D = nx.DiGraph()
    D.add_nodes_from(range(net.n_nodes))
    for u, v, data in G.edges(data=True):
        if u == v:
            continue
        geom = data.get("geometry") or shapely.LineString(
            [(G.nodes[u]["x"], G.nodes[u]["y"]), (G.nodes[v]["x"], G.nodes[v]["y"])])
        if any(geom.intersects(b) for b in blocked):
            continue
        factor = max([f for b, f in penalties if geom.intersects(b)], default=1.0)
        fwd, bwd = prof.times(data)
        for a, b, t in ((u, v, fwd), (v, u, bwd)):
            if math.isfinite(t):
                a_i, b_i = index[a], index[b]
                w = t * factor
                if not D.has_edge(a_i, b_i) or D[a_i][b_i]["w"] > w:
                    D.add_edge(a_i, b_i, w=w)
    return D


def reference_dist(D: nx.DiGraph, sources: list[int]) -> np.ndarray:
    """Seconds from every node to its nearest source (inf if none), by networkx multi-source Dijkstra."""
    out = np.full(D.number_of_nodes(), np.inf)
    if sources:
        for n, d in nx.multi_source_dijkstra_path_length(D.reverse(copy=False), set(sources), weight="w").items():
            out[n] = d
    return out


OSM = "/work/shared/data/osm"
EXTRACTS = {
    "monaco": f"{OSM}/graphhopper_monaco.osm.bz2",
    "krems": f"{OSM}/graphhopper_krems.osm.bz2",
    "andorra": f"{OSM}/graphhopper_andorra.osm.bz2",
    "bayreuth": f"{OSM}/graphhopper_north-bayreuth.osm.bz2",
}
_LOADED: dict[str, tuple[nx.MultiDiGraph, RoadNetwork]] = {}


def load_extract(name: str, state_dir: str) -> tuple[nx.MultiDiGraph, RoadNetwork]:
    """The prepared osmnx graph and its arrays for a real extract (loaded once per test session)."""
    from evac.graph import graph_from_file

    if name not in _LOADED:
        G = graph_from_file(EXTRACTS[name], state_dir=state_dir)
        _LOADED[name] = (G, RoadNetwork.from_graph(G))
    return _LOADED[name]


def random_shelters(net: RoadNetwork, rng: np.random.Generator, n: int, *, profile: str = "walk"):
    """Synthetic shelters at random nodes of the profile's main component, with random hazard ratings."""
    from evac.hazards import HAZARD_TYPES
    from evac.shelters import Shelter

    nodes = rng.choice(net.profile(profile).snap_nodes, size=n, replace=False)
    out = []
    for i, node in enumerate(nodes):
        k = int(rng.integers(1, len(HAZARD_TYPES) + 1))
        hz = frozenset(str(h) for h in rng.choice(HAZARD_TYPES, size=k, replace=False))
        out.append(Shelter(id=f"S{i}", name=f"Shelter {i}", lat=float(net.node_lat[node]),
                           lon=float(net.node_lon[node]), hazards=hz, capacity=int(rng.integers(10, 500))))
    return out


def random_polygons(net: RoadNetwork, rng: np.random.Generator, n: int, *, radius_m: tuple[float, float]):
    """Random convex-ish polygons (lon/lat) around random nodes."""
    polys = []
    for _ in range(n):
        i = int(rng.integers(net.n_nodes))
        r = float(rng.uniform(*radius_m))
        dlat = r / 111_320.0
        dlon = dlat / math.cos(math.radians(float(net.node_lat[i])))
        k = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = rng.uniform(0.5, 1.0, k)
        ring = [(float(net.node_lon[i]) + dlon * a * np.cos(t), float(net.node_lat[i]) + dlat * a * np.sin(t))
                for a, t in zip(rad, ang, strict=True)]
        poly = shapely.Polygon(ring)
        polys.append(poly if poly.is_valid else poly.convex_hull)
    return polys


def reference_field(D: nx.DiGraph, sources) -> np.ndarray:
    """Seconds from every node to its nearest shelter through the engine's source rows (``Field.sources``):
    each row is a virtual node joined to its road end with the row's offset (last partial edge + egress),
    searched by networkx from all of them at once."""
    R = D.reverse(copy=True)
    virtual = []
    for k, (end, off) in enumerate(zip(sources.end.tolist(), sources.offset.tolist(), strict=True)):
        if math.isfinite(off):
            R.add_edge(("row", k), int(end), w=float(off))
            virtual.append(("row", k))
    out = np.full(D.number_of_nodes(), np.inf)
    if virtual:
        for n, d in nx.multi_source_dijkstra_path_length(R, set(virtual), weight="w").items():
            if not isinstance(n, tuple):
                out[n] = d
    return out
