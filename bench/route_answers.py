"""In-process cost of a resident's route answer at random positions (issue #21): the answer as the API
sends it (``evac.routes.route_body``: walks kept per field and node) against the same bytes formatted
from scratch (``json`` of ``evac.routes.route``, the former path, kept as the oracle), in the same run.

    .venv/bin/python bench/route_answers.py [--positions 3000] [--size 50] [--seed 7]

The network is the API's drill town (``--size`` x ``--size`` intersections, ``--seed``; the bench of
``bench/api.py`` serves the 50 x 50 one) with its shelters; positions are drawn uniformly in the shelters'
box, rounded to 1e-4 degrees as the API rounds them, and asked in random order: first on cold walks (as
the first requests after a change), then again (warm). Reports per answer: CPU time (``process_time``,
which others' load on the machine disturbs least) and wall p50/p99, plus the core query alone
(``Engine.route_start``: snapping and the choice of road). Every answer is compared byte for byte with
the oracle's. Results go to ``.state/bench/route_answers.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from evac.drilltown import generate  # noqa: E402
from evac.engine import Engine  # noqa: E402
from evac.hazards import load_hazard_geojson  # noqa: E402
from evac.network import load_network  # noqa: E402
from evac.routes import dumps, route, route_body  # noqa: E402
from evac.shelters import load_shelters  # noqa: E402


def timed(fn: Callable[[float, float], object], positions: list[tuple[float, float]]) -> dict[str, float]:
    """CPU ms per call and wall p50/p99 ms of ``fn(lat, lon)`` over ``positions``."""
    walls = []
    cpu0 = time.process_time()
    for lat, lon in positions:
        t0 = time.perf_counter()
        fn(lat, lon)
        walls.append(time.perf_counter() - t0)
    cpu = (time.process_time() - cpu0) / len(positions)
    walls.sort()
    return {"cpu_ms": round(cpu * 1e3, 3), "p50_ms": round(walls[len(walls) // 2] * 1e3, 3),
            "p99_ms": round(walls[min(len(walls) - 1, int(len(walls) * 0.99))] * 1e3, 3)}


def main(args: argparse.Namespace) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="sonae-bench-routes-") as tmp:
        town = generate(Path(tmp) / "town", rows=args.size, cols=args.size, seed=args.seed)
        net = load_network(town.osm, state_dir=Path(tmp) / "state")
        shelters = load_shelters(town.shelters)
        areas = load_hazard_geojson(town.hazards, source_kind="gauge")

        def engine() -> Engine:
            return Engine(net, shelters=shelters, areas=areas)

        rng = np.random.default_rng(args.seed)
        lats, lons = [s.lat for s in shelters], [s.lon for s in shelters]
        positions = [(round(float(a), 4), round(float(b), 4)) for a, b in zip(
            rng.uniform(min(lats), max(lats), args.positions), rng.uniform(min(lons), max(lons), args.positions),
            strict=True)]
        kw = {"hazard": "flood", "lang": "ja"}
        old_engine, new_engine = engine(), engine()
        old_engine.field(), new_engine.field()
        results: dict[str, object] = {"nodes": net.n_nodes, "positions": len(positions)}
        results["oracle_cold"] = timed(lambda la, lo: dumps(route(old_engine, la, lo, **kw)).encode(), positions)
        results["route_body_cold"] = timed(lambda la, lo: route_body(new_engine, la, lo, **kw), positions)
        results["oracle_warm"] = timed(lambda la, lo: dumps(route(old_engine, la, lo, **kw)).encode(), positions)
        results["route_body_warm"] = timed(lambda la, lo: route_body(new_engine, la, lo, **kw), positions)
        results["route_start"] = timed(lambda la, lo: new_engine.route_start(la, lo, hazard="flood"), positions)
        differ = sum(dumps(route(new_engine, la, lo, **kw)).encode() != route_body(new_engine, la, lo, **kw)
                     for la, lo in positions)
        results["answers_differing"] = differ
        for name in ("cold", "warm"):
            results[f"cpu_ratio_{name}"] = round(results[f"oracle_{name}"]["cpu_ms"]  # type: ignore[index]
                                                 / results[f"route_body_{name}"]["cpu_ms"], 2)  # type: ignore[index]
    for k, v in results.items():
        print(f"{k:18} {v}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=3000)
    parser.add_argument("--size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    out = main(parser.parse_args())
    target = ROOT / ".state" / "bench"
    target.mkdir(parents=True, exist_ok=True)
    (target / "route_answers.json").write_text(json.dumps(out, indent=2))
    if out["answers_differing"]:
        sys.exit(f"{out['answers_differing']} answers differ from the oracle's")
