"""Alert latency: from a reading's MQTT publish to the alert change reaching an SSE client.

    .venv/bin/python bench/alert_latency.py [--trials 200] [--rate 1000] [--stations 1000]

Sets up a fresh database (``SONAE_TEST_DATABASE_URL`` or the PostgreSQL on 127.0.0.1:5432) and Sonae's
own broker on a free port, then runs in this process an ingestor, the rules worker and the API (as
``sonae run`` does), while a *separate process* publishes ``--rate`` background readings a second
(QoS 1, below every threshold, over ``--stations`` gauges).

Each trial uses its own probe gauge, seeded beforehand with a steady rise to level 3; the trial
publishes the next reading (continuing the rise past 氾濫危険水位), which must raise level 4 at once,
and waits for that change on ``GET /api/v1/events``. Prints p50/p90/p99/max in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import asyncpg
from aiohttp import web

from alerting.worker import RulesWorker
from api.app import create_app
from api.server import SERVER_OPTIONS, ApiRunner
from ingest.contract import Reading, encode_reading, topic_for
from ingest.registry import Station, upsert_stations
from ingest.service import Ingestor
from ingest.store import write_batch
from sonae.config import load_settings
from sonae.embedded import EmbeddedBroker, free_port
from sonae.migrations import migrate
from sonae.mqtt import MqttClient

TH = {"th_standby": 3.8, "th_caution": 5.0, "th_evacuation": 5.1, "th_danger": 5.5}
MUNI = "072036"


def background_load(url: str, protocol: str, prefix: str, rate: int, stations: int, stop_at: float) -> None:
    """Publish ``rate`` readings a second (a separate process, so it does not share our event loop)."""

    async def main() -> None:
        async with MqttClient(url, client_id=f"load-{uuid.uuid4().hex[:6]}", protocol=protocol,
                              max_outstanding=5000) as client:
            n = 0
            start = time.monotonic()
            t0 = datetime.now(UTC)
            while time.monotonic() < stop_at:
                due = int((time.monotonic() - start) * rate)
                while n < due:
                    st = n % stations
                    ts = t0 + timedelta(seconds=n / rate)  # in time order for every gauge
                    payload = encode_reading(value=1.0 + random.random() * 0.5, ts=ts, seq=n)
                    await client.publish(topic_for(prefix, MUNI, f"bg-{st}", "level"), payload, qos=1)
                    n += 1
                await asyncio.sleep(0.005)
            await client.flush()

    asyncio.run(main())


async def run(args: argparse.Namespace) -> dict[str, float]:
    server_url = os.environ.get("SONAE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    dbname = f"sonae_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    await admin.close()
    db_url = server_url.rsplit("/", 1)[0] + "/" + dbname
    tmp = tempfile.mkdtemp(prefix="sonae-bench-")
    broker = EmbeddedBroker(Path(tmp), port=free_port(), anonymous=True)
    broker.start()
    api_port = free_port()
    prefix = f"bench{uuid.uuid4().hex[:6]}/v1"
    settings = load_settings(environ={
        "SONAE_DATABASE_URL": db_url, "SONAE_MQTT_URL": broker.url, "SONAE_MQTT_PROTOCOL": broker.protocol,
        "SONAE_MQTT_TOPIC_PREFIX": prefix, "SONAE_MQTT_CLIENT_ID": f"bench-ingest-{uuid.uuid4().hex[:6]}",
        "SONAE_INGEST_SHARED_GROUP": "",  # plain persistent subscription (the default)
        "SONAE_INGEST_BATCH_AGE_MS": str(args.batch_age_ms), "SONAE_API_PORT": str(api_port), "SONAE_STATE_DIR": tmp, "SONAE_LOG_LEVEL": "warning",
    })
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=10)
    proc: multiprocessing.Process | None = None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            stations = [Station(id=f"bg-{i}", name=f"bg {i}", municipality_code=MUNI, **TH)
                        for i in range(args.stations)]
            stations += [Station(id=f"probe-{i}", name=f"probe {i}", municipality_code=MUNI, **TH)
                         for i in range(args.trials)]
            await upsert_stations(conn, stations)
        ingestor = Ingestor.from_settings(settings, pool)
        worker = RulesWorker.from_settings(settings, pool, silent_check_s=3600)
        app = create_app(pool=pool, settings=settings)
        runner = ApiRunner(app, handle_signals=False, **SERVER_OPTIONS)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", api_port).start()
        tasks = [asyncio.create_task(ingestor.run()), asyncio.create_task(worker.run())]
        await asyncio.wait_for(ingestor.ready.wait(), 20)
        await asyncio.wait_for(worker.is_leader.wait(), 20)

        # seed every probe with a steady rise to level 3 (5.0 … 5.4 m, 0.1 m per 10 minutes)
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        async with pool.acquire() as conn:
            await write_batch(conn, [Reading(f"probe-{i}", "level", base + timedelta(minutes=10 * k), 5.0 + 0.1 * k)
                                     for i in range(args.trials) for k in range(5)])
            deadline = time.monotonic() + 60
            while await conn.fetchval("SELECT count(*) FROM alerts WHERE level = 3") < args.trials:
                if time.monotonic() > deadline:
                    raise RuntimeError("probes were not seeded to level 3")
                await asyncio.sleep(0.1)

        arrivals: dict[str, float] = {}
        got = asyncio.Event()
        session = aiohttp.ClientSession()
        sse = await session.get(f"http://127.0.0.1:{api_port}/api/v1/events", timeout=aiohttp.ClientTimeout(total=None))

        async def read_sse() -> None:
            async for raw in sse.content:
                line = raw.decode().strip()
                if line.startswith("data: "):
                    body = json.loads(line[6:])
                    alert = body["alert"]
                    if alert["level"] == 4 and alert["station_id"]:
                        arrivals.setdefault(alert["station_id"], time.perf_counter())
                        got.set()

        reader = asyncio.create_task(read_sse())
        proc = multiprocessing.get_context("spawn").Process(
            target=background_load, args=(broker.url, broker.protocol, prefix, args.rate, args.stations,
                                          time.monotonic() + 10_000), daemon=True)
        proc.start()
        await asyncio.sleep(args.warmup)  # let the background load reach its rate
        async with pool.acquire() as conn:
            before = await conn.fetchval("SELECT count(*) FROM readings WHERE station_id LIKE 'bg-%'")
        t_load = time.perf_counter()

        latencies: list[float] = []
        async with MqttClient(broker.url, client_id=f"probe-{uuid.uuid4().hex[:6]}", protocol=broker.protocol) as pub:
            for i in range(args.trials):
                station = f"probe-{i}"
                payload = encode_reading(value=5.5, ts=base + timedelta(minutes=50))
                sent = time.perf_counter()
                await pub.publish(topic_for(prefix, MUNI, station, "level"), payload, qos=1)
                deadline = sent + 10
                while station not in arrivals:
                    got.clear()
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        raise RuntimeError(f"no level-4 event for {station} within 10 s")
                    try:
                        await asyncio.wait_for(got.wait(), remaining)
                    except TimeoutError:
                        pass
                latencies.append((arrivals[station] - sent) * 1000)
                await asyncio.sleep(random.uniform(0.02, 0.08))
        async with pool.acquire() as conn:
            after = await conn.fetchval("SELECT count(*) FROM readings WHERE station_id LIKE 'bg-%'")
        load_rate = (after - before) / (time.perf_counter() - t_load)
        reader.cancel()
        sse.close()
        await session.close()
        ingestor.stop()
        worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()
        latencies.sort()

        def pct(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(round(p / 100 * (len(latencies) - 1))))]

        return {"trials": len(latencies), "p50_ms": round(statistics.median(latencies), 1),
                "p90_ms": round(pct(90), 1), "p99_ms": round(pct(99), 1), "max_ms": round(latencies[-1], 1),
                "background_readings_per_s_stored": round(load_rate, 0)}
    finally:
        if proc is not None and proc.is_alive():
            proc.terminate()
            proc.join(5)
        await pool.close()
        broker.stop()
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--rate", type=int, default=1000, help="background readings per second")
    parser.add_argument("--stations", type=int, default=1000, help="background gauges")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--batch-age-ms", type=int, default=200,
                        help="ingest.batch_age_ms (the ingest default is 200: most of the latency floor)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    print(f"p99 {'≤' if result['p99_ms'] <= 500 else '>'} 500 ms target")


if __name__ == "__main__":
    main()
