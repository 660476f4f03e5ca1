"""NGSI-LD view benchmark: request time of ``/ngsi-ld/v1/entities`` over the real GSI shelters of Fukushima,
as a ratio to ``/api/v1/shelters?format=geojson`` (the same shelters as open data) measured in the same run.

    .venv/bin/python bench/ngsi.py [--requests 30]

Creates a fresh database (``SONAE_BENCH_DATABASE_URL``, default the PostgreSQL on 127.0.0.1:5432; dropped
afterwards), imports ``shared/data/shelters/gsi_fukushima_designated_emergency_evacuation_sites.geojson``, serves
the API in this process and times sequential requests (after one warm-up each). Prints mean milliseconds per
request and the ratios; the view filters in memory (every entity of the asked types is read per request).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from api.app import create_app
from evac.store import import_shelters_file
from sonae.config import load_settings
from sonae.migrations import migrate
from tests.api_support import start_client

ROOT = Path(__file__).resolve().parents[1]
SHELTERS = ROOT.parent / "shared" / "data" / "shelters" / "gsi_fukushima_designated_emergency_evacuation_sites.geojson"


async def run(requests: int) -> dict[str, float]:
    server = os.environ.get("SONAE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"sonae_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = server.rsplit("/", 1)[0] + "/" + name
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            count = await import_shelters_file(conn, SHELTERS, actor="bench")
        settings = load_settings(environ={"SONAE_DATABASE_URL": url, "SONAE_API_RATE_LIMIT_PER_MINUTE": "0"})
        client = await start_client(create_app(pool=pool, settings=settings))
        centre = json.dumps([140.4748, 37.7503])  # 福島県庁
        targets = {
            "open data /api/v1/shelters?format=geojson": ("/api/v1/shelters", {"format": "geojson"}),
            "ngsi all PointOfInterest (limit 1000)": ("/ngsi-ld/v1/entities", {
                "type": "PointOfInterest", "limit": "1000", "options": "keyValues"}),
            "ngsi near 2 km": ("/ngsi-ld/v1/entities", {
                "type": "PointOfInterest", "georel": "near;maxDistance==2000", "geometry": "Point",
                "coordinates": centre, "limit": "1000"}),
            "ngsi q occupancy>=0 (normalized)": ("/ngsi-ld/v1/entities", {
                "type": "PointOfInterest", "q": "occupancy>=0", "limit": "1000"}),
        }
        out: dict[str, float] = {}
        try:
            for label, (path, params) in targets.items():
                async with client.get(path, params=params) as resp:
                    assert resp.status == 200, await resp.text()
                started = time.perf_counter()
                for _ in range(requests):
                    async with client.get(path, params=params) as resp:
                        await resp.read()
                out[label] = (time.perf_counter() - started) / requests * 1000
        finally:
            await client.close()
        print(f"{count} shelters, {requests} requests each")
        base = out["open data /api/v1/shelters?format=geojson"]
        for label, ms in out.items():
            print(f"  {label:45s} {ms:8.1f} ms  {ms / base:5.2f} × open data")
        return out
    finally:
        await pool.close()
        admin = await asyncpg.connect(server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    asyncio.run(run(args.requests))
