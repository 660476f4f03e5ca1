"""Recompute cost per trigger against the scipy floor, many times over (issue #13).

Run from the repository root::

    .venv/bin/python bench/evac_recompute.py --extract bayreuth          # real extract
    .venv/bin/python bench/evac_recompute.py --town .state/bench/drilltown-100x100-seed7/town.osm

For each trigger, ``--n`` times: ``Engine.update`` (one warm field, walk/flood) and then, on the same
arrays, the bare ``scipy.sparse.csgraph.dijkstra(min_only=True, return_predecessors=True)`` that
``bench/evac.py`` calls the floor. Triggers:

* ``add area``: a new 150 m blocked area, five per fresh engine (as ``bench/evac.py --quick``);
* ``alert level``: a gauge area switched on and off by its gauge's level;
* ``shelter close/open``: a flood shelter closed and opened again.

Medians of wall time and of the thread's CPU time are printed with their ratios to the floor's: on a
shared machine the CPU-time ratio is the steadier one (a few-millisecond update is often preempted).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.sparse.csgraph import dijkstra

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evac.engine import Engine  # noqa: E402
from evac.hazards import HazardArea  # noqa: E402
from evac.network import load_network  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_evac", ROOT / "bench" / "evac.py")
assert _spec is not None and _spec.loader is not None
bench_evac = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_evac)


def _timed(fn: Any) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - t0, time.thread_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extract", choices=sorted(bench_evac.EXTRACTS), default="bayreuth")
    ap.add_argument("--town", type=Path, default=None, help="an OSM file instead of --extract (e.g. a drill town)")
    ap.add_argument("--n", type=int, default=100, help="recomputes per trigger")
    ap.add_argument("--state-dir", type=Path, default=ROOT / ".state")
    args = ap.parse_args(argv)
    source = args.town or bench_evac.EXTRACTS[args.extract]
    net = load_network(source, state_dir=args.state_dir)
    rng = np.random.default_rng(1)
    shelters = bench_evac.synthetic_shelters(net, rng, max(20, net.n_nodes // 150))
    areas = [HazardArea(id=f"h{i}", hazard="flood", geometry=bench_evac.random_polygon(net, rng, 200.0))
             for i in range(5)]
    gauge = HazardArea(id="gauge", hazard="flood", geometry=bench_evac.random_polygon(net, rng, 200.0),
                       source="gauge", station_id="st", activation_level=3)
    flood = next(s for s in shelters if "flood" in s.hazards)
    key = ("walk", "flood", False)
    print(f"{Path(source).name}: {net.n_nodes} nodes, {len(shelters)} shelters, n={args.n}")
    for trigger in ("add area", "alert level", "shelter close/open"):
        eng = Engine(net, shelters=shelters, areas=[*areas, gauge], warm=[key])
        upd, floor = [], []
        for k in range(args.n):
            if trigger == "add area":
                if k % 5 == 0:
                    eng = Engine(net, shelters=shelters, areas=[*areas, gauge], warm=[key])
                area = HazardArea(id=f"bench-{k}", hazard="flood",
                                  geometry=bench_evac.random_polygon(net, rng, 150.0))
                change: dict[str, Any] = {"add_areas": [area]}
            elif trigger == "alert level":
                change = {"alert_levels": {"st": 4 if k % 2 == 0 else 1}}
            else:
                change = {"is_open": {flood.id: k % 2 == 1}}
            upd.append(_timed(lambda change=change, eng=eng: eng.update(**change)))
            f = eng.field(*key)
            graph = eng.source_graph(f)
            sources = net.n_nodes + np.arange(len(f.sources))
            floor.append(_timed(lambda graph=graph, sources=sources: dijkstra(
                graph, directed=True, indices=sources, min_only=True, return_predecessors=True)))
        med = [statistics.median(x[j] for x in v) * 1e3 for j in (0, 1) for v in (upd, floor)]
        print(f"  {trigger:20} wall {med[0]:7.2f} / {med[1]:6.2f} ms = {med[0] / med[1]:5.2f}x   "
              f"cpu {med[2]:7.2f} / {med[3]:6.2f} ms = {med[2] / med[3]:5.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
