"""CPU per request through the API application in this process, against a bare aiohttp application
through the same path, measured in one run (issue #21: what Sonae adds to aiohttp per request).

    .venv/bin/python bench/api_path.py [--requests 20000] [--rounds 5]

``bench/api.py`` measures whole servers over sockets with ``wrk``; on a shared 2-core machine its ratios
move by ±0.1 between runs. This bench takes the sockets, the HTTP parser and the response's writing out
(they are aiohttp's, the same for both) and times what is left: the router, the middlewares and the
handler, called as aiohttp calls them (``Application._handle``) on requests made ahead
(``aiohttp.test_utils.make_mocked_request``), in rounds alternating with the bare application. Reported
per endpoint: µs of CPU per request (``time.process_time``, median of rounds) for Sonae and for the bare
``web.json_response({"status": "ok"})`` handler, and their difference.

Also (issue #21: why the route at random positions costs more than the in-process answer plus the cached
request): ``evac.routes.route_body`` at fresh ~10 m cells alone, the cached route request alone, and the two
alternated, in the same rounds; ``interference`` is how much the alternated pair costs over the sum of the two
(each run alone keeps its own working set in the CPU's caches; alternated they evict each other's). The
requests made ahead and the application are frozen out of the garbage collector's sight while timing, as the
server freezes its start-up objects.

Endpoints: ``/api/v1/alerts`` with 48 active alerts (kept answer), ``/api/v1/route`` at one position (the
cached answer) and at fresh positions of the drill town (every request a new ~10 m cell), ``/healthz``.
Needs a PostgreSQL (``SONAE_BENCH_DATABASE_URL``, default the local server on 127.0.0.1:5432; a fresh
database is created and dropped). Results go to ``.state/bench/api_path.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # first: bench/api.py beside this file must not stand for the api package

import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402

from api.app import create_app  # noqa: E402
from sonae.config import load_settings  # noqa: E402
from sonae.migrations import migrate  # noqa: E402


async def _bare(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def _bare_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/", _bare)
    return app


async def cpu_us(app: web.Application, paths: Callable[[int], str], n: int) -> float:
    """µs of CPU per request of ``app._handle`` over ``n`` requests made ahead (``paths(i)``)."""
    requests = [make_mocked_request("GET", paths(i), app=app, headers={"Host": "127.0.0.1"}) for i in range(n)]
    with _frozen():
        t0 = time.process_time()
        for req in requests:
            resp = await app._handle(req)
            assert resp.status < 400, (resp.status, req.path_qs[:40])
        return (time.process_time() - t0) / n * 1e6


@contextlib.contextmanager
def _frozen() -> Iterator[None]:
    """The objects alive so far (the application, and the requests made ahead with their mocks: some 600,000)
    out of the garbage collector's sight while timing, as the server freezes its start-up objects
    (``sonae.eventloop.freeze_long_lived``): unfrozen, a full collection over the mocks (0.1-0.9 s each)
    landed in some rounds and added tens of µs per request that a server never pays."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def interleaved_us(app: web.Application, engine: Any, cells: Callable[[], tuple[float, float]], cached: str,
                         n: int) -> dict[str, float]:
    """µs of CPU per call of ``route_body`` at fresh cells (``cells()``) alone, of the cached route request alone,
    and of the two alternated (one answer, one request): whether the costs measured apart add up."""
    from evac.routes import route_body

    out = {}
    for kind in ("route_body", "cached_request", "alternated"):
        positions = [cells() for _ in range(n)]
        requests = [make_mocked_request("GET", cached, app=app, headers={"Host": "127.0.0.1"}) for _ in range(n)]
        with _frozen():
            t0 = time.process_time()
            if kind == "route_body":
                for lat, lon in positions:
                    route_body(engine, lat, lon, hazard="flood", lang="ja")
            elif kind == "cached_request":
                for req in requests:
                    await app._handle(req)
            else:
                for (lat, lon), req in zip(positions, requests, strict=True):
                    route_body(engine, lat, lon, hazard="flood", lang="ja")
                    await app._handle(req)
            out[kind] = (time.process_time() - t0) / n * 1e6
    return out


def _bench_api() -> Any:
    """bench/api.py, loaded by path (its name is the api package's): its database set-up and its realistic
    alert set."""
    spec = importlib.util.spec_from_file_location("bench_api", ROOT / "bench" / "api.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def run(args: argparse.Namespace) -> dict[str, object]:
    server = os.environ.get("SONAE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    bench_api = _bench_api()
    db = await bench_api.prepare_db(server)
    state = tempfile.mkdtemp(prefix="sonae-bench-path-")
    pool = await asyncpg.create_pool(db, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        active = await bench_api.seed_alerts(db)
        settings = load_settings(environ={"SONAE_DATABASE_URL": db, "SONAE_STATE_DIR": state,
                                          "SONAE_EVAC_NETWORK": "drilltown", "SONAE_API_RATE_LIMIT_PER_MINUTE": "0",
                                          "SONAE_LOG_LEVEL": "warning"})
        app = create_app(pool=pool, settings=settings)
        runner = web.AppRunner(app)
        await runner.setup()  # the application's startup: event hubs, the evacuation engine
        bare = _bare_app()
        bare_runner = web.AppRunner(bare)
        await bare_runner.setup()
        try:
            from api.evacuation import EVAC

            service = app[EVAC]
            await asyncio.wait_for(service.loaded.wait(), 600)  # the engine is built in the background at startup
            shelters = service.require().state.shelters.values()
            lats, lons = [s.lat for s in shelters], [s.lon for s in shelters]
            south, north, west, east = min(lats), max(lats), min(lons), max(lons)
            rnd = random.Random(7)

            def fresh(i: int) -> str:
                return (f"/api/v1/route?lat={rnd.uniform(south, north):.6f}&lon={rnd.uniform(west, east):.6f}"
                        "&hazard=flood&lang=ja")

            one = f"/api/v1/route?lat={south + 0.003:.5f}&lon={west + 0.004:.5f}&hazard=flood&lang=ja"
            endpoints: dict[str, Callable[[int], str]] = {
                "healthz": lambda i: "/healthz", "alerts": lambda i: "/api/v1/alerts",
                "route_cached": lambda i: one, "route_random": fresh}
            for paths in endpoints.values():  # warm: kept answers made, fields computed
                await cpu_us(app, paths, 50)
            results: dict[str, object] = {"active_alerts": active, "requests": args.requests, "rounds": args.rounds}
            for ep, paths in endpoints.items():
                n = args.requests if ep != "route_random" else max(1000, args.requests // 4)
                ours, base = [], []
                for _ in range(args.rounds):
                    base.append(await cpu_us(bare, lambda i: "/", n))
                    ours.append(await cpu_us(app, paths, n))
                o, b = statistics.median(ours), statistics.median(base)
                results[ep] = {"sonae_us": round(o, 1), "bare_us": round(b, 1), "added_us": round(o - b, 1)}
                print(f"{ep:13} Sonae {o:7.1f} µs   bare aiohttp {b:5.1f} µs   added {o - b:7.1f} µs per request",
                      flush=True)
            engine = service.require()
            rounds = [await interleaved_us(app, engine, lambda: (round(rnd.uniform(south, north), 4),
                                                                  round(rnd.uniform(west, east), 4)),
                                           one, max(1000, args.requests // 4)) for _ in range(args.rounds)]
            parts = {k: round(statistics.median(r[k] for r in rounds), 1) for k in rounds[0]}
            parts["interference"] = round(parts["alternated"] - parts["route_body"] - parts["cached_request"], 1)
            results["route_apart_and_alternated"] = parts
            print(f"route_body at fresh cells {parts['route_body']} µs + cached route request {parts['cached_request']} µs"
                  f", alternated {parts['alternated']} µs: {parts['interference']} µs more than their sum", flush=True)
            return results
        finally:
            await runner.cleanup()
            await bare_runner.cleanup()
    finally:
        await pool.close()
        await bench_api.drop_db(server, db)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    out = asyncio.run(run(parser.parse_args()))
    target = ROOT / ".state" / "bench"
    target.mkdir(parents=True, exist_ok=True)
    (target / "api_path.json").write_text(json.dumps(out, indent=2))
