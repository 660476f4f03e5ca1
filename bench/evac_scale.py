"""Prefecture-scale run of the evacuation engine: memory, recompute and event-loop lag (issue #21).

Run from the repository root::

    .venv/bin/python bench/evac_scale.py --nodes 100000 300000 1000000

Per size, on a numpy-built drill-town-shaped grid (:mod:`evac.gridtown`), measured in one run:

* engine RSS per node (process peak after building the engine with the configured fields, minus the
  interpreter's RSS before the network was built);
* recompute of one field after a local hazard change (``Engine.update``) against the bare scipy
  floor (``csgraph.dijkstra(min_only=True)`` on the same arrays);
* recompute of all configured fields (walk and reduced mobility x flood, real and exercise);
* event-loop lag while ``Engine.update`` runs in an executor thread, as the API runs it: a task
  sleeping 1 ms records the gap between its ticks; p99 and max of the gaps, with the search in this
  process (the baseline: scipy holds the GIL) and in the worker process (:class:`evac.search.ProcessSearch`).

With ``--incremental``, per size, local changes applied to all configured fields, each timed twice on
the same state: by incremental update (:mod:`evac.incremental`) and by full search (the baseline,
``Engine.incremental = False``): a blocked polygon (radius ``--radius`` m, octagon; the roads it cuts
are counted) added and then removed, and a shelter closed and then reopened. Reported per change, median
and max ms from the call to ``Engine.update`` (all configured fields) until:

* ``reflected``: the new state is swapped in and queries in this process answer from it. Measured by
  route queries run in ``update``'s ``on_swap`` hook: from a probe position (the polygon's centre, the
  shelter's position) in every configured field; included in this time and left out of the next ones.
  Checked: they carry the new state's version, equal the answers after ``update`` returned, and (listed)
  how many of them differ from the answers before it;
* ``shared`` (``--store``): the new entries are in the host-wide field store (:mod:`evac.fieldstore`),
  where another process maps them instead of computing them. Checked after each update: a store object
  of its own (as another process has: files only, CRC-32s checked) maps every configured field's entry
  with the same values;
* ``update``: ``Engine.update`` returned (the old entries pruned); JSON ``<change>_<inc|full>_ms_*``
  (the one figure this bench reported before the split). ``full`` is this for the full search.

Also the updating thread's CPU time to the swap and in all (medians; the search worker's left out: less
disturbed by other load than wall time), the store's writes per update (``.npy`` bytes before and after the swap, the seconds writing them
and MB/s: ``FieldStore.written_bytes``, ``FieldStore.write_s``), and the nodes the incremental updates
re-solved. ``--store`` loads the network mapped from ``.npz`` (as served after ``sonae graph import``),
so that the updates include the host-wide field store's claims and publishing.

Prints a table and writes JSON (``--json``, default ``.state/bench/evac_scale.json``).

``--memory`` measures instead how much memory the engine costs on a host (issue #21, item 4), for this
tree and for a baseline revision (``--baseline``, default ``main``, extracted with ``git archive``) in
the same run. Per size, the grid network is saved as ``.npz`` (as ``sonae graph import`` does); then
process A loads it (:meth:`RoadNetwork.load`), builds the engine with one field, applies one hazard
polygon and answers 200 routes at random positions; then process B does the same while A is still
alive (the same polygon: the API processes of one host follow one database, so they have one hazard
state; its own random positions). Read from ``/proc/<pid>/smaps_rollup`` with both alive, minus each
process's own figures before loading: RSS (A alone), and for each process PSS (shared pages split
between them) and USS (private pages: what that process adds to the host). The processes hand over
through pipes (no sleeps).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from scipy.sparse.csgraph import dijkstra

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evac.engine import Engine  # noqa: E402
from evac.fieldstore import FieldStore  # noqa: E402
from evac.gridtown import grid_network, grid_shelters  # noqa: E402
from evac.hazards import HazardArea, edge_hits  # noqa: E402
from evac.network import RoadNetwork  # noqa: E402
from evac.search import ProcessSearch, search_in_process  # noqa: E402
from sonae.eventloop import freeze_long_lived  # noqa: E402

OPS = ("add", "remove", "close", "open")
FIELDS = [("walk", "flood", False), ("reduced_mobility", "flood", False), ("walk", "flood", True),
          ("reduced_mobility", "flood", True)]


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def polygon(net: RoadNetwork, rng: np.random.Generator, radius_m: float) -> shapely.Polygon:
    i = int(rng.integers(net.n_nodes))
    dlat = radius_m / 111_320.0
    dlon = dlat / np.cos(np.radians(net.node_lat[i]))
    ang = np.linspace(0, 2 * np.pi, 9)[:-1]
    return shapely.Polygon(np.column_stack([net.node_lon[i] + dlon * np.cos(ang),
                                            net.node_lat[i] + dlat * np.sin(ang)]))


async def lag_during(fn: Any) -> dict[str, float]:
    """Run ``fn`` in the default executor while a 1 ms ticker records the gaps between its ticks (ms)."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append((now - last) * 1e3)
            last = now

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)
    gaps.clear()
    t0 = time.perf_counter()
    await loop.run_in_executor(None, fn)
    wall = time.perf_counter() - t0
    done = True
    await t
    return {"p99_ms": float(np.percentile(gaps, 99)), "max_ms": max(gaps), "ticks": len(gaps), "wall_s": wall}


def roads_cut(eng: Engine, area: HazardArea) -> int:
    """Streets (one per pair of nodes, both directions counted once) the area cuts."""
    net = eng.network
    hit = edge_hits(net, area)
    u, v = net.edge_u[hit], net.edge_v[hit]
    return len({(min(a, b), max(a, b)) for a, b in zip(u.tolist(), v.tolist(), strict=True)})


Probe = tuple[float, float]  # (lat, lon) of a position whose routes a change alters


def answers(eng: Engine, probe: Probe, fields: list[tuple[str, str, bool]]) -> list[tuple[Any, ...]]:
    """The route from ``probe`` in each field, as (state version, status, shelter id, seconds)."""
    out = []
    for profile, hazard, exercise in fields:
        r = eng.route_result(probe[0], probe[1], profile=profile, hazard=hazard, exercise=exercise)
        out.append((r.state.version, r.status, r.shelter.id if r.shelter else None, round(r.duration_s, 6)))
    return out


def _store_file(a: np.ndarray) -> Path | None:
    """The field store file ``a`` is mapped from (None: a private array)."""
    while a is not None:
        if isinstance(a, np.memmap) and a.filename:
            return Path(a.filename)
        a = a.base  # type: ignore[assignment]
    return None


def shared_check(eng: Engine, fields: list[tuple[str, str, bool]]) -> bool:
    """Whether every configured field of the current state is an entry of the field store that a store
    of its own (as in another process: files only, CRC-32s checked) maps with the same values."""
    assert eng.store is not None
    other = FieldStore(eng.store.root, eng.network.mapped_key)
    for key in fields:
        f = eng.field(*key)
        where = _store_file(f.dist)
        if where is None:
            return False
        got = other.get(where.parent.parent.name, where.parent.name)
        if got is None or not all(np.array_equal(got[k], v) for k, v in
                                  (("dist", f.dist), ("next_node", f.next_node), ("source", f.source))):
            return False
    return True


def timed_update(eng: Engine, fields: list[tuple[str, str, bool]], probe: Probe, **change: Any) -> dict[str, Any]:
    """One ``Engine.update``, timed (ms from its call) to three points:

    * ``reflected``: the new state is swapped in and a route query from ``probe`` in every configured
      field has answered from it (the queries run in ``on_swap``, right after the swap: their time is
      included here and taken out of the later points);
    * ``shared``: every new entry is in the field store, where another process maps it (the update's
      call to ``FieldStore.prune``, which follows publishing; without a store: ``update``);
    * ``update``: ``update`` returned (old entries pruned).

    Also the field store's writes (bytes of ``.npy`` files and seconds, before and after the swap), and
    the checks: the probes' answers at the swap equal those after the update, carry its version, and
    ``changed`` of them differ from the answers before it."""
    store = eng.store
    before = answers(eng, probe, fields)
    seen: dict[str, Any] = {}

    def written() -> tuple[int, float]:
        return (store.written_bytes, store.write_s) if store is not None else (0, 0.0)

    def on_swap(state: Any) -> None:
        seen["swap_cpu"] = time.thread_time()
        seen["swap"] = time.perf_counter()
        seen["w_swap"] = written()
        seen["answers"] = answers(eng, probe, fields)
        seen["reflected"] = time.perf_counter()

    prune = store.prune if store is not None else None
    if store is not None and prune is not None:
        def timed_prune() -> None:
            if "reflected" in seen and "shared" not in seen:
                seen["shared"] = time.perf_counter()
            prune()
        store.prune = timed_prune  # type: ignore[method-assign]
    w0 = written()
    c0 = time.thread_time()
    t0 = time.perf_counter()
    try:
        state = eng.update(on_swap=on_swap, **change)
    finally:
        if store is not None:
            del store.prune  # the class's method again
    t1 = time.perf_counter()
    c1 = time.thread_time()
    w1 = written()
    probe_s = seen["reflected"] - seen["swap"]
    after = answers(eng, probe, fields)
    ok = seen["answers"] == after and all(a[0] == state.version for a in after)
    return {"reflected_ms": (seen["reflected"] - t0) * 1e3,
            "shared_ms": (seen.get("shared", t1) - t0 - probe_s) * 1e3,
            "update_ms": (t1 - t0 - probe_s) * 1e3, "probe_ms": probe_s * 1e3,
            # CPU of the updating thread (less disturbed by other load than wall time; without the search
            # worker's): to the swap (the probes left out) and in all
            "swap_cpu_ms": (seen["swap_cpu"] - c0) * 1e3, "update_cpu_ms": (c1 - c0) * 1e3,
            "write_pre_swap_mb": (seen["w_swap"][0] - w0[0]) / 1e6, "write_pre_swap_ms": (seen["w_swap"][1] - w0[1]) * 1e3,
            "write_mb": (w1[0] - seen["w_swap"][0]) / 1e6, "write_ms": (w1[1] - seen["w_swap"][1]) * 1e3,
            "reflected_ok": ok, "changed": sum(b != a for b, a in zip(before, after, strict=True)),
            "shared_ok": shared_check(eng, fields) if store is not None else None}


def run_incremental(nodes: int, rounds: int, seed: int, fields: list[tuple[str, str, bool]],
                    radius_m: float, store_dir: Path | None = None) -> dict[str, Any]:
    """Local changes to all configured fields: incremental update against full search, same states.

    With ``store_dir``, the network is saved there as ``.npz`` and loaded mapped, as ``sonae graph
    import`` networks are served: the engine then keeps its fields in the host-wide field store
    (:mod:`evac.fieldstore`, for networks of ``FIELD_STORE_MIN_NODES`` and more), and each update's time
    includes claiming and publishing them."""
    gc.collect()
    net = grid_network(nodes, seed=seed)
    if store_dir is not None:
        net.save(store_dir / f"grid{nodes}.npz")
        del net
        gc.collect()
        net = RoadNetwork.load(store_dir / f"grid{nodes}.npz")
    shelters = grid_shelters(net, seed=seed)
    rng = np.random.default_rng(seed + 1)
    worker = ProcessSearch()
    eng = Engine(net, shelters=shelters, warm=fields, search=worker)
    # as `sonae api` does once its network and application are built (api/server.py): a collection's pause
    # that the service never has would otherwise land in the first change (~110 ms at 3M nodes)
    freeze_long_lived()
    eng.update(add_areas=[HazardArea(id="warmup", hazard="flood", geometry=polygon(net, rng, radius_m))])
    eng.update(remove_areas=["warmup"])  # the edge index and the incremental tables are built
    t: dict[str, list[dict[str, Any]]] = {f"{op}_{mode}": [] for op in OPS for mode in ("inc", "full")}
    cut: list[int] = []
    work0 = eng.incremental_work.copy()
    inc0 = sum(eng.incremental_updates.values())
    for k in range(rounds):
        area = HazardArea(id=f"local{k}", hazard="flood", geometry=polygon(net, rng, radius_m))
        cut.append(roads_cut(eng, area))
        shelter = shelters[int(rng.integers(len(shelters)))]
        centre = area.geometry.centroid
        at_area, at_shelter = (centre.y, centre.x), (shelter.lat, shelter.lon)
        for mode in ("inc", "full"):
            eng.incremental = mode == "inc"
            t[f"add_{mode}"].append(timed_update(eng, fields, at_area, add_areas=[area]))
            t[f"remove_{mode}"].append(timed_update(eng, fields, at_area, remove_areas=[area.id]))
            t[f"close_{mode}"].append(timed_update(eng, fields, at_shelter, is_open={shelter.id: False}))
            t[f"open_{mode}"].append(timed_update(eng, fields, at_shelter, is_open={shelter.id: True}))
    eng.incremental = True
    work = eng.incremental_work - work0
    res: dict[str, Any] = {"nodes": net.n_nodes, "fields": len(fields), "rounds": rounds, "radius_m": radius_m,
                           "field_store": eng.store is not None,
                           "roads_cut_median": statistics.median(cut), "roads_cut_max": max(cut),
                           "incremental_updates": sum(eng.incremental_updates.values()) - inc0,
                           "fallbacks": 4 * rounds * len(fields) - (sum(eng.incremental_updates.values()) - inc0),
                           "resolved_nodes_per_update": (work["increased"] + work["decreased"]) / max(1, 4 * rounds * len(fields)),
                           "worker_region_searches": work["worker_searches"]}
    for name, runs in t.items():
        for what in ("update", "reflected", "shared"):
            vals = [r[f"{what}_ms"] for r in runs]
            # (f"{name}_ms_*": the whole update, as before the split)
            label = f"{name}_ms" if what == "update" else f"{name}_{what}_ms"
            res[f"{label}_median"] = statistics.median(vals)
            res[f"{label}_max"] = max(vals)
        for what in ("probe_ms", "write_mb", "write_ms", "write_pre_swap_mb", "write_pre_swap_ms", "swap_cpu_ms",
                     "update_cpu_ms"):
            res[f"{name}_{what}_median"] = statistics.median(r[what] for r in runs)
        res[f"{name}_write_mb_s"] = (sum(r["write_mb"] + r["write_pre_swap_mb"] for r in runs)
                                     / max(1e-9, sum(r["write_ms"] + r["write_pre_swap_ms"] for r in runs) / 1e3))
        res[f"{name}_reflected_ok"] = all(r["reflected_ok"] for r in runs)
        res[f"{name}_probes_changed"] = [r["changed"] for r in runs]
        res[f"{name}_shared_ok"] = None if eng.store is None else all(r["shared_ok"] for r in runs)
    worker.close()
    return res


def run_size(nodes: int, rounds: int, seed: int, fields: list[tuple[str, str, bool]]) -> dict[str, Any]:
    gc.collect()
    rss0 = rss_mb()
    net = grid_network(nodes, seed=seed)
    shelters = grid_shelters(net, seed=seed)
    rng = np.random.default_rng(seed)
    worker = ProcessSearch()
    eng = Engine(net, shelters=shelters, warm=[FIELDS[0]])
    rss1 = rss_mb()
    res: dict[str, Any] = {"nodes": net.n_nodes, "edges": net.n_edges, "shelters": len(shelters),
                           "rss_mb_one_field": rss1 - rss0, "bytes_per_node_one_field": (rss1 - rss0) * 2**20 / net.n_nodes}
    # one field: recompute vs floor
    one, floor = [], []
    for k in range(rounds):
        eng.update(add_areas=[HazardArea(id=f"b{k}", hazard="flood", geometry=polygon(net, rng, 150.0))])
        one.append(eng.field(*FIELDS[0]).compute_s * 1e3)
        f = eng.field(*FIELDS[0])
        graph = eng.source_graph(f)
        t0 = time.perf_counter()
        dijkstra(graph, directed=True, indices=net.n_nodes + np.arange(len(f.sources)), min_only=True,
                 return_predecessors=True)
        floor.append((time.perf_counter() - t0) * 1e3)
    res["recompute_1_field_ms"] = statistics.median(one)
    res["scipy_floor_ms"] = statistics.median(floor)
    # all configured fields, in process and with the worker; event-loop lag during each
    for name, search in (("in_process", search_in_process), ("worker", worker)):
        eng.search = search
        eng.warm = set(fields)
        for key in fields:
            eng.field(*key)
        eng.search(np.zeros(0), np.zeros(0, np.int32), np.zeros(1, np.int32), 0, 0, 1.0)  # start the worker
        walls, lags = [], []
        for k in range(rounds):
            area = HazardArea(id=f"{name}{k}", hazard="flood", geometry=polygon(net, rng, 150.0))
            lag = asyncio.run(lag_during(lambda a=area: eng.update(add_areas=[a])))
            walls.append(lag["wall_s"] * 1e3)
            lags.append(lag)
        res[f"recompute_all_ms_{name}"] = statistics.median(walls)
        res[f"loop_lag_p99_ms_{name}"] = statistics.median([g["p99_ms"] for g in lags])
        res[f"loop_lag_max_ms_{name}"] = max(g["max_ms"] for g in lags)
    res["fields"] = len(fields)
    res["rss_mb_all_fields"] = rss_mb() - rss0
    worker.close()
    return res


_MEM_CHILD = r"""
import json, sys

# the source tree on PYTHONPATH, not the editable install of this checkout
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
import numpy as np, shapely


def roll():
    out = {}
    for line in open("/proc/self/smaps_rollup"):
        p = line.split()
        if len(p) >= 3 and p[-1] == "kB":
            out[p[0].rstrip(":")] = int(p[1]) * 1024
    return out


import evac
from evac.engine import Engine
from evac.gridtown import grid_shelters
from evac.hazards import HazardArea
from evac.network import RoadNetwork

before = roll()
net = RoadNetwork.load(sys.argv[1])
eng = Engine(net, shelters=grid_shelters(net, seed=7), warm=[("walk", "flood", False)])
rng = np.random.default_rng(0)  # the same hazard polygon in both processes: one host, one hazard state
i = int(rng.integers(net.n_nodes))
dlat = 150 / 111_320.0
dlon = dlat / np.cos(np.radians(net.node_lat[i]))
ang = np.linspace(0, 2 * np.pi, 9)[:-1]
poly = shapely.Polygon(np.column_stack([net.node_lon[i] + dlon * np.cos(ang), net.node_lat[i] + dlat * np.sin(ang)]))
eng.update(add_areas=[HazardArea(id="b", hazard="flood", geometry=poly)])
ok = 0
rng = np.random.default_rng(int(sys.argv[2]) + 1)  # each process its own random positions
for i in rng.integers(net.n_nodes, size=200).tolist():
    r = eng.route_result(float(net.node_lat[i]) + rng.uniform(-4e-4, 4e-4), float(net.node_lon[i]) + rng.uniform(-4e-4, 4e-4))
    ok += r.status == "ok"
print(json.dumps({"evac": evac.__file__, "nodes": net.n_nodes, "ok_routes": ok, "before": before, "after": roll()}),
      flush=True)
sys.stdin.read()  # stay alive (mapping what it mapped) until the parent closes stdin
"""


def _smaps_rollup(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            p = line.split()
            if len(p) >= 3 and p[-1] == "kB":
                out[p[0].rstrip(":")] = int(p[1]) * 1024
    return out


def _private_by_kind(pid: int) -> dict[str, int]:
    """Private bytes (mapped by this process only) per kind of mapping: ``mapped`` (the network's
    ``.npy`` files), ``fields`` (the field store's files, :mod:`evac.fieldstore`), ``anon`` (heap and
    anonymous memory), ``other`` (libraries, other files)."""
    out = {"mapped": 0, "fields": 0, "anon": 0, "other": 0}
    kind = "other"
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            p = line.split()
            if not p:
                continue
            if "-" in p[0] and len(p) >= 5 and not p[0].endswith(":"):  # a mapping's header line
                path = p[5] if len(p) >= 6 else ""
                kind = "fields" if ".mapped/fields/" in path else "mapped" if ".mapped/" in path else "anon" if not path or path.startswith("[") else "other"
            elif p[0] in ("Private_Clean:", "Private_Dirty:"):
                out[kind] += int(p[1]) * 1024
    return out


def _uss(r: dict[str, int]) -> int:
    return r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)


def _source_tree(rev: str, into: Path) -> Path:
    """The repository at ``rev`` as plain files (``git archive``), for the baseline's processes."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", rev], check=True,
                          capture_output=True).stdout
    import io

    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(into, filter="data")
    return into


def memory_size(nodes: int, trees: dict[str, Path], work: Path) -> dict[str, Any]:
    """Memory of processes A and B (see the module docstring) per source tree, for one size."""
    res: dict[str, Any] = {}
    for label, tree in trees.items():
        d = work / f"{label}-{nodes}"
        d.mkdir(parents=True, exist_ok=True)
        net = grid_network(nodes, seed=7)
        n = net.n_nodes
        net.save(d / "grid.npz")
        del net
        gc.collect()
        env = {**os.environ, "PYTHONPATH": str(tree)}
        procs, ready = [], []
        try:
            for k in range(2):  # A, then B while A is alive
                p = subprocess.Popen([sys.executable, "-c", _MEM_CHILD, str(d / "grid.npz"), str(k)], env=env, cwd=d,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                procs.append(p)
                line = p.stdout.readline() if p.stdout else ""
                if not line:
                    raise RuntimeError(f"{label}: process {k} ended early (out of memory?)")
                ready.append(json.loads(line))
            now = [_smaps_rollup(p.pid) for p in procs]
            kinds = [_private_by_kind(p.pid) for p in procs]
        finally:
            for p in procs:
                if p.stdin:
                    p.stdin.close()
                p.wait()
        a, b = ready
        assert Path(a["evac"]).resolve().is_relative_to(tree.resolve()), a["evac"]
        r: dict[str, Any] = {"nodes": n, "ok_routes": [a["ok_routes"], b["ok_routes"]]}
        r["A_rss_B_per_node"] = (a["after"]["Rss"] - a["before"]["Rss"]) / n
        for name, me, alive in (("A", a, now[0]), ("B", b, now[1])):
            r[f"{name}_pss_B_per_node"] = (alive["Pss"] - me["before"]["Pss"]) / n
            r[f"{name}_uss_B_per_node"] = (_uss(alive) - _uss(me["before"])) / n
        r["B_adds_of_A_rss"] = r["B_uss_B_per_node"] / r["A_rss_B_per_node"]
        for name, kb in zip("AB", kinds, strict=True):
            r[f"{name}_private_B_per_node_by_kind"] = {k: v / n for k, v in kb.items()}
        res[label] = r
        print(json.dumps({label: r}), file=sys.stderr, flush=True)
        for f in sorted(d.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
    return res


def memory_main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="evac-mem-", dir=args.workdir) as tmp:
        work = Path(tmp)
        trees = {"baseline": _source_tree(args.baseline, work / "baseline-src"),
                 "this": _source_tree(args.this, work / "this-src") if args.this else ROOT}
        if args.no_baseline:
            trees.pop("baseline")
        results = []
        for n in args.nodes:
            print(f"  .. {n:,} nodes", file=sys.stderr, flush=True)
            results.append(memory_size(n, trees, work))
    print(f"{'nodes':>9} {'tree':>9} {'A RSS B/node':>12} {'A PSS':>7} {'A USS':>7} {'B PSS':>7} {'B USS':>7} "
          f"{'B adds':>7}")
    for res in results:
        for label, r in res.items():
            print(f"{r['nodes']:>9} {label:>9} {r['A_rss_B_per_node']:>12.0f} {r['A_pss_B_per_node']:>7.0f} "
                  f"{r['A_uss_B_per_node']:>7.0f} {r['B_pss_B_per_node']:>7.0f} {r['B_uss_B_per_node']:>7.0f} "
                  f"{r['B_adds_of_A_rss']:>7.1%}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "baseline": args.baseline, "memory": results}, indent=1))
    print(f"wrote {args.json}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fields", type=int, default=len(FIELDS), choices=range(1, len(FIELDS) + 1),
                    help="configured fields recomputed per change (fewer to fit 3M nodes in memory)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--incremental", action="store_true",
                    help="measure local changes: incremental update against full search (see the module doc)")
    ap.add_argument("--radius", type=float, default=120.0, help="radius of the local hazard polygon (m)")
    ap.add_argument("--store", action="store_true",
                    help="with --incremental: the network loaded mapped from .npz, fields in the field store")
    ap.add_argument("--memory", action="store_true", help="measure memory per process and per host instead")
    ap.add_argument("--baseline", default="main", help="git revision compared with this tree by --memory")
    ap.add_argument("--this", default=None, help="git revision measured as this tree (default: the working tree)")
    ap.add_argument("--no-baseline", action="store_true", help="--memory for this tree only (3M nodes)")
    ap.add_argument("--workdir", type=Path, default=None, help="where --memory writes its networks")
    args = ap.parse_args(argv)
    if args.json is None:
        args.json = ROOT / ".state" / "bench" / ("evac_memory.json" if args.memory else "evac_scale.json")
    if args.memory:
        return memory_main(args)
    if args.incremental:
        return main_incremental(args)
    results = []
    for n in args.nodes:
        print(f"  .. {n:,} nodes", file=sys.stderr, flush=True)
        results.append(run_size(n, args.rounds, seed=7, fields=FIELDS[:args.fields]))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    hdr = (f"{'nodes':>9} {'B/node':>7} {'1 field ms':>10} {'floor ms':>8} {'all(thread) ms':>14} "
           f"{'all(worker) ms':>14} {'lag p99/max thread':>19} {'lag p99/max worker':>19}")
    print(hdr)
    for r in results:
        print(f"{r['nodes']:>9} {r['bytes_per_node_one_field']:>7.0f} {r['recompute_1_field_ms']:>10.1f} "
              f"{r['scipy_floor_ms']:>8.1f} {r['recompute_all_ms_in_process']:>14.0f} {r['recompute_all_ms_worker']:>14.0f} "
              f"{r['loop_lag_p99_ms_in_process']:>9.1f}/{r['loop_lag_max_ms_in_process']:<9.1f} "
              f"{r['loop_lag_p99_ms_worker']:>9.1f}/{r['loop_lag_max_ms_worker']:<9.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                     "results": results}, indent=1))
    print(f"wrote {args.json}")
    return 0


def main_incremental(args: argparse.Namespace) -> int:
    results = []
    for n in args.nodes:
        print(f"  .. {n:,} nodes", file=sys.stderr, flush=True)
        if args.store:
            with tempfile.TemporaryDirectory(prefix="sonae-scale-store-", dir=args.workdir) as tmp:
                results.append(run_incremental(n, args.rounds, seed=7, fields=FIELDS[:args.fields],
                                               radius_m=args.radius, store_dir=Path(tmp)))
        else:
            results.append(run_incremental(n, args.rounds, seed=7, fields=FIELDS[:args.fields], radius_m=args.radius))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print("median/max ms from the call to Engine.update, all configured fields; reflected: swapped in, a route query "
          "in every field answers from the new state; shared: the new entries in the field store (another process "
          "maps them); update: returned; full: update with the full search (the baseline)")
    for r in results:
        print(f"{r['nodes']:,} nodes, {r['fields']} fields, roads cut {r['roads_cut_median']:.0f}/{r['roads_cut_max']}, "
              f"re-solved {r['resolved_nodes_per_update']:.0f} nodes/field update")
        print(f"  {'change':<15} {'reflected':>11} {'shared':>11} {'update':>11} {'full':>11} | "
              f"{'store MB before/after swap':>26} {'write ms':>8} {'MB/s':>6} | {'CPU ms swap/all':>15} | checks")
        for op, name in zip(OPS, ("area added", "area removed", "shelter closed", "shelter opened"), strict=True):
            k = f"{op}_inc"
            checks = "reflected " + ("ok" if r[f"{k}_reflected_ok"] else "WRONG")
            checks += f", probes changed {r[f'{k}_probes_changed']}"
            if r[f"{k}_shared_ok"] is not None:
                checks += ", shared " + ("ok" if r[f"{k}_shared_ok"] else "WRONG")
            print(f"  {name:<15} {r[f'{k}_reflected_ms_median']:>5.0f}/{r[f'{k}_reflected_ms_max']:<5.0f} "
                  f"{r[f'{k}_shared_ms_median']:>5.0f}/{r[f'{k}_shared_ms_max']:<5.0f} "
                  f"{r[f'{k}_ms_median']:>5.0f}/{r[f'{k}_ms_max']:<5.0f} "
                  f"{r[f'{op}_full_ms_median']:>5.0f}/{r[f'{op}_full_ms_max']:<5.0f} | "
                  f"{r[f'{k}_write_pre_swap_mb_median']:>12.0f}/{r[f'{k}_write_mb_median']:<13.0f} "
                  f"{r[f'{k}_write_ms_median'] + r[f'{k}_write_pre_swap_ms_median']:>8.0f} "
                  f"{r[f'{k}_write_mb_s']:>6.0f} | {r[f'{k}_swap_cpu_ms_median']:>7.0f}/{r[f'{k}_update_cpu_ms_median']:<7.0f} "
                  f"| {checks}")
        if r["field_store"]:
            print("  (fields kept in the host-wide field store: each update claims and publishes them; the full\n"
                  "   search runs second on each state and maps the incremental pass's entries instead of searching)")
        elif r["fallbacks"]:
            print(f"  ({r['fallbacks']} field updates fell back to the full search)")
    path = args.json.with_name(args.json.stem + "_incremental.json") if args.json.name == "evac_scale.json" else args.json
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "results": results},
                               indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
