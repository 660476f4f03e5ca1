"""Benchmark of ``sonae graph import``: the streamed import (pyosmium + numpy) against the osmnx path.

Run from the repository root::

    .venv/bin/python bench/osm_import.py                          # largest shared extract, both paths
    .venv/bin/python bench/osm_import.py --synthetic-nodes 3000000 # + a synthetic grid PBF, streamed only

Each import runs in its own child process, so its peak RSS (``resource.getrusage``: ``ru_maxrss``) is its
own; both paths run in the same invocation. The child reports the RSS after its imports (the interpreter
and libraries) beside the peak, and the import's wall time.

The synthetic town is a grid of ``K x K`` intersections (``K = ceil(sqrt(N))``, so the imported graph has
about N nodes), 100 m blocks with ``--shape-nodes`` shape nodes per block (a real walking network has
about 4 raw nodes per simplified node), node ids spread over 12 billion like real OSM ids, row streets
split into ways of 8 blocks with a few tag changes (names, classes). It is written as OSM XML with numpy
and converted to PBF by libosmium's ``WriteHandler`` (C++), then cached in ``.state/bench``.

Writes JSON (``--json``, default ``.state/bench/osm_import.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
LARGEST_SHARED = ROOT.parent / "shared" / "data" / "osm" / "graphhopper_north-bayreuth.osm.bz2"


def _child(via: str, path: str) -> None:
    """Import ``path`` once and print a JSON line: seconds, peak and base RSS (MB), nodes, edges."""
    from evac.graph import graph_from_file
    from evac.network import RoadNetwork

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    if via == "stream":
        net = RoadNetwork.from_osm_file(path, progress=lambda m: print(f"  .. {m}", file=sys.stderr, flush=True))
    else:
        state = ROOT / ".state" / "bench"
        state.mkdir(parents=True, exist_ok=True)
        net = RoadNetwork.from_graph(graph_from_file(path, state_dir=state))
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"via": via, "seconds": seconds, "peak_rss_mb": peak, "base_rss_mb": base,
                      "nodes": net.n_nodes, "edges": net.n_edges, "raw_file_mb": os.path.getsize(path) / 2**20}))


def run(via: str, path: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", via, str(path)], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise SystemExit(f"{via} import of {path.name} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def synthetic_pbf(n_nodes: int, *, shape_nodes: int, out_dir: Path) -> Path:
    """A grid town of about ``n_nodes`` intersections as OSM PBF (cached)."""
    import osmium

    k = math.ceil(math.sqrt(n_nodes))
    s = shape_nodes
    out = out_dir / f"grid-{k}x{k}-s{s}.osm.pbf"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    dlat = 100.0 / 111_320.0
    dlon = dlat / math.cos(math.radians(37.4))
    n_h = k * (k - 1) * s  # shape nodes of the row streets, then of the column streets
    total = k * k + 2 * n_h
    ids = 1_000_000 + np.arange(total, dtype=np.int64) * (12_000_000_000 // max(total, 1))
    lon = np.empty(total)
    lat = np.empty(total)
    r, c = np.divmod(np.arange(k * k), k)
    lon[:k * k], lat[:k * k] = 140.0 + c * dlon, 37.0 + r * dlat
    j = np.arange(n_h)
    block, step = np.divmod(j, s)
    f = (step + 1) / (s + 1)
    wiggle = 0.15 * np.sin((step + 1) * 2.1 + block)  # curved streets: geometry the simplification keeps
    rr, cc = np.divmod(block, k - 1)  # row street rr, block cc
    lon[k * k:k * k + n_h], lat[k * k:k * k + n_h] = 140.0 + (cc + f) * dlon, 37.0 + (rr + wiggle) * dlat
    cc2, rr2 = np.divmod(block, k - 1)  # column street cc2, block rr2
    lon[k * k + n_h:], lat[k * k + n_h:] = 140.0 + (cc2 + wiggle) * dlon, 37.0 + (rr2 + f) * dlat
    xml = out.with_suffix("").with_suffix(".osm")
    with open(xml, "w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="sonae bench">\n')
        for a in range(0, total, 1_000_000):
            b = min(total, a + 1_000_000)
            fh.write("".join(f'<node id="{i}" version="1" lat="{y:.7f}" lon="{x:.7f}"/>\n'
                             for i, x, y in zip(ids[a:b].tolist(), lon[a:b].tolist(), lat[a:b].tolist(), strict=True)))
        way_id = 1
        for street in range(2 * k):
            row = street < k
            q = street % k
            for b0 in range(0, k - 1, 8):
                b1 = min(k - 1, b0 + 8)
                refs: list[int] = []
                for blk in range(b0, b1):
                    refs.append(q * k + blk if row else blk * k + q)
                    base = k * k + (0 if row else n_h) + (q * (k - 1) + blk) * s
                    refs.extend(range(base, base + s))
                refs.append(q * k + b1 if row else b1 * k + q)
                hw = "secondary" if q % 10 == 0 else ("footway" if (q + b0) % 7 == 3 else "residential")
                tags = f'<tag k="highway" v="{hw}"/>'
                if q % 3 == 0:
                    tags += f'<tag k="name" v="{"Street" if row else "Avenue"} {q}"/>'
                fh.write(f'<way id="{way_id}" version="1">' + "".join(f'<nd ref="{ids[i]}"/>' for i in refs)
                         + tags + "</way>\n")
                way_id += 1
        fh.write("</osm>\n")
    tmp = out.with_name(out.name + ".tmp.pbf")
    osmium.apply(str(xml), osmium.WriteHandler(str(tmp)))  # C++ all the way
    tmp.replace(out)
    xml.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--child", nargs=2, metavar=("VIA", "FILE"), help=argparse.SUPPRESS)
    ap.add_argument("--file", type=Path, default=LARGEST_SHARED, help="extract for the stream vs osmnx comparison")
    ap.add_argument("--synthetic-nodes", type=int, nargs="*", default=[],
                    help="also import synthetic grid PBFs of about these many graph nodes (streamed)")
    ap.add_argument("--shape-nodes", type=int, default=2, help="shape nodes per 100 m block (default 2)")
    ap.add_argument("--osmnx-synthetic-max", type=int, default=50_000,
                    help="also run the osmnx path on synthetic towns up to this many nodes (default 50000)")
    ap.add_argument("--json", type=Path, default=ROOT / ".state" / "bench" / "osm_import.json")
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    rows = []
    for via in ("stream", "osmnx"):
        rows.append({"file": args.file.name, **run(via, args.file)})
    for n in args.synthetic_nodes:
        t = time.perf_counter()
        pbf = synthetic_pbf(n, shape_nodes=args.shape_nodes, out_dir=ROOT / ".state" / "bench")
        print(f"synthetic {pbf.name}: {pbf.stat().st_size / 2**20:.0f} MB ({time.perf_counter() - t:.0f} s to make)",
              file=sys.stderr)
        for via in ("stream", "osmnx") if n <= args.osmnx_synthetic_max else ("stream",):
            rows.append({"file": pbf.name, **run(via, pbf)})
    print(f"{'file':38} {'via':7} {'nodes':>10} {'edges':>10} {'seconds':>8} {'peak RSS MB':>12} {'base MB':>8} "
          f"{'B/node':>7}")
    for r in rows:
        per = (r["peak_rss_mb"] - r["base_rss_mb"]) * 2**20 / max(r["nodes"], 1)
        print(f"{r['file']:38} {r['via']:7} {r['nodes']:>10,} {r['edges']:>10,} {r['seconds']:>8.1f} "
              f"{r['peak_rss_mb']:>12.0f} {r['base_rss_mb']:>8.0f} {per:>7.0f}")
    by = {(r["file"], r["via"]): r for r in rows}
    for f in dict.fromkeys(r["file"] for r in rows):
        if (f, "osmnx") in by:
            s, o = by[(f, "stream")], by[(f, "osmnx")]
            print(f"{f}: stream/osmnx time {s['seconds'] / o['seconds']:.2f}, peak RSS "
                  f"{s['peak_rss_mb'] / o['peak_rss_mb']:.2f} (above base: "
                  f"{(s['peak_rss_mb'] - s['base_rss_mb']) / max(o['peak_rss_mb'] - o['base_rss_mb'], 1e-9):.2f})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": platform.node(), "cpus": os.cpu_count(),
                                     "load_avg": os.getloadavg(), "rows": rows}, indent=1))
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (2 cores)")


if __name__ == "__main__":
    main()
