"""Benchmark of the evacuation engine against osmnx routing and the bare scipy Dijkstra floor.

Run from the repository root::

    .venv/bin/python bench/evac.py            # real extract (north Bayreuth) + 100k-node drill town
    .venv/bin/python bench/evac.py --quick    # Monaco + 10k-node drill town, fewer queries

Measured in the same run, per graph:

* route query latency (p50/p99) in process: ``Engine.route_result`` (the nearest road points of a
  lon/lat, hazard tests of the access leg and partial edges, walk the next hops, shelter) and the full GeoJSON answer ``Engine.route``; against ``osmnx.routing.shortest_path`` from the
  same origin node to the nearest qualifying shelter (given to it), on a networkx graph of the same
  profile edges with the same blocked edges removed;
* full recomputation after a hazard change (``Engine.update``: hazard->edge lookup, weights, shelter
  attachments, multi-source Dijkstra, swap) against a bare ``scipy.sparse.csgraph.dijkstra(min_only=True,
  return_predecessors=True)`` on the same reversed CSR arrays with the shelters' virtual source nodes
  (the floor).

Prints a table and writes JSON (``--json``, default ``.state/bench/evac.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import osmnx as ox
import shapely
from scipy.sparse.csgraph import dijkstra

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evac.drilltown import generate, size_for_nodes  # noqa: E402
from evac.engine import BLOCKED_WEIGHT, Engine  # noqa: E402
from evac.hazards import HAZARD_TYPES, HazardArea, load_hazard_geojson  # noqa: E402
from evac.network import RoadNetwork, load_network  # noqa: E402
from evac.routes import route  # noqa: E402
from evac.shelters import Shelter, load_shelters  # noqa: E402

EXTRACTS = {
    "monaco": "/work/shared/data/osm/graphhopper_monaco.osm.bz2",
    "krems": "/work/shared/data/osm/graphhopper_krems.osm.bz2",
    "andorra": "/work/shared/data/osm/graphhopper_andorra.osm.bz2",
    "bayreuth": "/work/shared/data/osm/graphhopper_north-bayreuth.osm.bz2",
}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def random_polygon(net: RoadNetwork, rng: np.random.Generator, radius_m: float) -> shapely.Polygon:
    i = int(rng.integers(net.n_nodes))
    dlat = radius_m / 111_320.0
    dlon = dlat / np.cos(np.radians(net.node_lat[i]))
    ang = np.linspace(0, 2 * np.pi, 9)[:-1]
    return shapely.Polygon(np.column_stack([net.node_lon[i] + dlon * np.cos(ang), net.node_lat[i] + dlat * np.sin(ang)]))


def synthetic_shelters(net: RoadNetwork, rng: np.random.Generator, n: int) -> list[Shelter]:
    nodes = rng.choice(net.profile("walk").snap_nodes, size=n, replace=False)
    out = []
    for i, node in enumerate(nodes):
        hz = {str(h) for h in rng.choice(HAZARD_TYPES, size=4, replace=False)} | ({"flood"} if i % 2 else set())
        out.append(Shelter(id=f"S{i}", name=f"S{i}", lat=float(net.node_lat[node]), lon=float(net.node_lon[node]),
                           hazards=frozenset(hz), capacity=500))
    return out


def baseline_graph(eng: Engine, profile: str, hazard: str) -> nx.MultiDiGraph:
    """The profile's directed edges with their current weights, blocked ones removed (for osmnx routing)."""
    f = eng.field(profile, hazard)
    pg = eng.network.profile(profile)
    de_w = np.asarray(f.de_weight)
    ok = de_w < BLOCKED_WEIGHT
    G = nx.MultiDiGraph()
    G.add_nodes_from(range(eng.network.n_nodes))
    G.add_weighted_edges_from(zip(pg.de_tail[ok].tolist(), pg.de_head[ok].tolist(), de_w[ok].tolist(),
                                  strict=True), weight="travel_time")
    return G


def bench_graph(label: str, net: RoadNetwork, shelters: list[Shelter], areas: list[HazardArea], *,
                queries: int, baseline_queries: int, recomputes: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    profile, hazard = "walk", "flood"
    eng = Engine(net, shelters=shelters, areas=areas, warm=[(profile, hazard, False)])
    f = eng.field(profile, hazard)
    walk_nodes = net.profile(profile).snap_nodes
    nodes = rng.choice(walk_nodes, size=queries)
    lon = net.node_lon[nodes] + rng.uniform(-3e-4, 3e-4, queries)
    lat = net.node_lat[nodes] + rng.uniform(-3e-4, 3e-4, queries)
    # warm-up (first call builds the KD-tree etc.)
    for i in range(min(200, queries)):
        eng.route_result(float(lat[i]), float(lon[i]))
    core, full = [], []
    statuses: dict[str, int] = {}
    pairs: list[tuple[int, int, float]] = []
    for i in range(queries):
        la, lo = float(lat[i]), float(lon[i])
        t0 = time.perf_counter_ns()
        r = eng.route_result(la, lo)
        t1 = time.perf_counter_ns()
        route(eng, la, lo, lang="ja")
        t2 = time.perf_counter_ns()
        core.append((t1 - t0) / 1e6)
        full.append((t2 - t1) / 1e6)
        statuses[r.status] = statuses.get(r.status, 0) + 1
        if r.status == "ok" and len(r.path) and len(pairs) < baseline_queries:
            # node-to-node part of the route (the legs and partial edges at both ends aside)
            row = int(r.field.next_node[r.path[-1]]) - net.n_nodes
            pairs.append((r.path[0], r.path[-1], float(r.field.dist[r.path[0]] - r.field.sources.offset[row])))
    # osmnx baseline on the same edges and blocked set, told the destination
    G = baseline_graph(eng, profile, hazard)
    base, mismatches = [], 0
    for orig, dest, ours in pairs:
        t0 = time.perf_counter_ns()
        path = ox.routing.shortest_path(G, orig, dest, weight="travel_time")
        base.append((time.perf_counter_ns() - t0) / 1e6)
        cost = sum(min(d["travel_time"] for d in G[a][b].values()) for a, b in zip(path, path[1:], strict=False))
        mismatches += abs(cost - ours) > 1e-6 * max(1.0, ours)
    # recomputation after a hazard change vs the scipy floor on the same arrays
    pg = net.profile(profile)
    upd, floor = [], []
    for k in range(recomputes):
        poly = random_polygon(net, rng, 150.0)
        t0 = time.perf_counter()
        eng.update(add_areas=[HazardArea(id=f"bench-{k}", hazard="flood", geometry=poly)])
        upd.append((time.perf_counter() - t0) * 1e3)
        f = eng.field(profile, hazard)
        # the same search on the same arrays: the reversed graph plus one virtual node per shelter attachment
        graph = eng.source_graph(f)
        sources = net.n_nodes + np.arange(len(f.sources))
        t0 = time.perf_counter()
        dijkstra(graph, directed=True, indices=sources, min_only=True, return_predecessors=True)
        floor.append((time.perf_counter() - t0) * 1e3)
    res = {
        "graph": label, "nodes": net.n_nodes, "edges": net.n_edges, "profile_edges": int(len(pg.de_base)),
        "shelters_qualifying": len(f.shelters), "source_rows": len(f.sources), "hazard_areas": len(eng.state.areas), "statuses": statuses,
        "query_core_ms": {"p50": pct(core, 50), "p99": pct(core, 99), "n": len(core)},
        "query_geojson_ms": {"p50": pct(full, 50), "p99": pct(full, 99), "n": len(full)},
        "osmnx_shortest_path_ms": {"p50": pct(base, 50) if base else None, "p99": pct(base, 99) if base else None,
                                   "n": len(base), "cost_mismatches": int(mismatches)},
        "recompute_ms": {"median": statistics.median(upd), "min": min(upd), "n": len(upd)},
        "scipy_floor_ms": {"median": statistics.median(floor), "min": min(floor), "n": len(floor)},
    }
    if base:
        res["speedup_p50_vs_osmnx"] = res["osmnx_shortest_path_ms"]["p50"] / res["query_core_ms"]["p50"]
        res["speedup_p99_vs_osmnx"] = res["osmnx_shortest_path_ms"]["p99"] / res["query_core_ms"]["p99"]
    res["recompute_over_floor"] = res["recompute_ms"]["median"] / res["scipy_floor_ms"]["median"]
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="Monaco + 10k-node town, fewer queries")
    ap.add_argument("--extract", choices=sorted(EXTRACTS), default=None, help="real extract (default bayreuth)")
    ap.add_argument("--nodes", type=int, default=None, help="intersections in the drill town (default 100000)")
    ap.add_argument("--queries", type=int, default=None)
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".state")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    extract = args.extract or ("monaco" if args.quick else "bayreuth")
    nodes = args.nodes or (10_000 if args.quick else 100_000)
    queries = args.queries or (1000 if args.quick else 5000)
    baseline_q = 30 if args.quick else 100
    recomputes = 5 if args.quick else 10

    def say(msg: str) -> None:
        print(f"  .. {msg}", file=sys.stderr, flush=True)

    results = []
    t0 = time.perf_counter()
    net = load_network(EXTRACTS[extract], state_dir=args.state_dir, progress=say)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    shelters = synthetic_shelters(net, rng, max(20, net.n_nodes // 150))
    areas = [HazardArea(id=f"h{i}", hazard="flood", geometry=random_polygon(net, rng, 200.0)) for i in range(5)]
    r = bench_graph(f"{extract} (OSM)", net, shelters, areas, queries=queries, baseline_queries=baseline_q,
                    recomputes=recomputes, seed=2)
    r["load_s"] = load_s
    results.append(r)

    rows, cols = size_for_nodes(nodes)
    town_dir = args.state_dir / "bench" / f"drilltown-{rows}x{cols}-seed7"
    if not (town_dir / "town.osm").exists():
        say(f"generating drill town {rows} x {cols}")
        generate(town_dir, rows=rows, cols=cols, seed=7)
    t0 = time.perf_counter()
    net = load_network(town_dir / "town.osm", state_dir=args.state_dir, progress=say)
    load_s = time.perf_counter() - t0
    shelters = load_shelters(town_dir / "shelters.geojson")
    areas = [a for a in load_hazard_geojson(town_dir / "hazards.geojson")]
    # the gauge areas are drill areas; for the benchmark make them real and raise every gauge to level 4
    areas = [HazardArea(**{**a.__dict__, "exercise": False, "source": "staff", "station_id": None,
                           "activation_level": None}) for a in areas if a.activation_level == 4]
    r = bench_graph(f"drill town {rows}x{cols} (OSM XML)", net, shelters, areas, queries=queries,
                    baseline_queries=baseline_q, recomputes=recomputes, seed=3)
    r["load_s"] = load_s
    results.append(r)

    hdr = (f"{'graph':34} {'nodes':>7} {'core p50/p99 ms':>16} {'geojson p50/p99':>16} {'osmnx p50/p99 ms':>17} "
           f"{'x p99':>6} {'recomp ms':>9} {'floor ms':>8} {'ratio':>5}")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        q, g, b = r["query_core_ms"], r["query_geojson_ms"], r["osmnx_shortest_path_ms"]
        print(f"{r['graph']:34} {r['nodes']:>7} {q['p50']:>7.3f}/{q['p99']:<8.3f} {g['p50']:>7.3f}/{g['p99']:<8.3f} "
              f"{(b['p50'] or 0):>8.2f}/{(b['p99'] or 0):<8.2f} {r.get('speedup_p99_vs_osmnx', 0):>6.0f} "
              f"{r['recompute_ms']['median']:>9.1f} {r['scipy_floor_ms']['median']:>8.1f} {r['recompute_over_floor']:>5.2f}")
    out = args.json or (args.state_dir / "bench" / "evac.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "python": platform.python_version(), "machine": platform.machine(),
                               "quick": args.quick, "results": results}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
