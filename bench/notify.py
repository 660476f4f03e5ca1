"""Notification latency: from an alert change to Web Push delivery, for 10,000 push subscriptions.

    .venv/bin/python bench/notify.py [--subs 10000] [--concurrency 64] [--trials 3]

Sets up a fresh database (``SONAE_TEST_DATABASE_URL`` or the PostgreSQL on 127.0.0.1:5432) with
``--subs`` push subscriptions (80 % for the municipality, 20 % circles near the gauge; three
languages), and a push service stand-in in a *separate process* (RFC 8030 receiving side: it checks
each request's headers and decrypts every 250th message with that browser's private key, as a real
browser would). Then, per trial, one river alert change is committed and the in-process
:class:`notify.worker.DeliveryWorker` fans it out and delivers it; the receiver timestamps each
message. Latency = receipt time − the alert change's commit.

Baseline in the same run: a naive sender — one request at a time, no queue (read the subscriptions,
encrypt, POST, next) — over the same subscriptions and receiver.

The per-push-service rate limit (``notify.push_rate_per_s``, 500/s by default, a courtesy to real push
services) is lifted here: the stand-in is the only "push service", so the default would measure the
limit, not the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import asyncpg
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from alerting import store as alerts
from alerting.rules import Transition
from ingest.registry import Station, upsert_stations
from notify.webpush import Vapid, encrypt, load_private_key
from notify.worker import DeliveryWorker, vapid_private_pem
from sonae.embedded import free_port
from sonae.migrations import migrate

MUNI = "072036"
SAMPLE_EVERY = 250


def receiver(port: int, samples: dict[str, tuple[bytes, bytes]], conn: Any) -> None:
    """The push service stand-in (its own process): counts, timestamps, checks and sometimes decrypts."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.notify.support import rfc8291_decrypt

    keys = {t: (ec.derive_private_key(int.from_bytes(k, "big"), ec.SECP256R1()), a) for t, (k, a) in samples.items()}
    state: dict[str, Any] = {"times": [], "bad": 0, "checked": 0, "expect": None}

    async def push(request: web.Request) -> web.Response:
        body = await request.read()
        token = request.match_info["token"]
        ok = (request.headers.get("Content-Encoding") == "aes128gcm" and "TTL" in request.headers
              and request.headers.get("Authorization", "").startswith("vapid t="))
        if token in keys:
            try:
                json.loads(rfc8291_decrypt(body, *keys[token]))
                state["checked"] += 1
            except Exception:
                ok = False
        if not ok:
            state["bad"] += 1
        state["times"].append(time.time())
        if state["expect"] is not None and len(state["times"]) >= state["expect"]:
            done.set()
        return web.Response(status=201)

    async def main() -> None:
        nonlocal done
        done = asyncio.Event()
        app = web.Application()
        app.router.add_post("/push/{token}", push)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        conn.send("ready")
        loop = asyncio.get_running_loop()
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            if cmd == "stop":
                break
            state.update(times=[], bad=0, checked=0, expect=int(cmd))
            done.clear()
            await done.wait()
            conn.send({"times": state["times"], "bad": state["bad"], "checked": state["checked"]})
        await runner.cleanup()

    done: asyncio.Event
    asyncio.run(main())


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server_url = os.environ.get("SONAE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    dbname = f"sonae_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    await admin.close()
    url = server_url.rsplit("/", 1)[0] + "/" + dbname
    pool = await asyncpg.create_pool(url, min_size=2, max_size=12)
    port = free_port()
    parent, child = multiprocessing.Pipe()
    proc = None
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
            await upsert_stations(conn, [Station(id="akutsu", name="阿久津", river="阿武隈川", municipality_code=MUNI,
                                                 lat=37.41, lon=140.38, th_standby=4.0, th_caution=5.5,
                                                 th_evacuation=5.7, th_danger=6.8)])
        # the browsers: a P-256 key pair and an auth secret each
        t = time.perf_counter()
        rows, samples = [], {}
        langs = ("ja-JP", "en-US", "ja-JP-x-easy")
        for i in range(args.subs):
            key = ec.generate_private_key(ec.SECP256R1())
            auth = os.urandom(16)
            token = f"b{i}"
            pub = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
            rows.append((f"http://127.0.0.1:{port}/push/{token}", pub, auth, langs[i % 3], os.urandom(32)))
            if i % SAMPLE_EVERY == 0:
                samples[token] = (key.private_numbers().private_value.to_bytes(32, "big"), auth)
        async with pool.acquire() as conn:
            await conn.copy_records_to_table("push_subscriptions", records=rows,
                                             columns=["endpoint", "p256dh", "auth", "lang", "token_hash"])
            await conn.execute(
                """INSERT INTO push_areas (subscription_id, municipality_code, lat, lon, radius_m)
                   SELECT id, CASE WHEN id % 5 = 0 THEN NULL ELSE $1 END,
                          CASE WHEN id % 5 = 0 THEN round((37.40 + (id % 50) * 0.0005)::numeric, 3) END,
                          CASE WHEN id % 5 = 0 THEN round((140.37 + (id % 40) * 0.0005)::numeric, 3) END,
                          CASE WHEN id % 5 = 0 THEN 2000 END
                   FROM push_subscriptions""", MUNI)
        setup_s = time.perf_counter() - t
        proc = multiprocessing.get_context("spawn").Process(target=receiver, args=(port, samples, child), daemon=True)
        proc.start()
        assert await asyncio.get_running_loop().run_in_executor(None, parent.recv) == "ready"

        worker = DeliveryWorker(pool, base_url="https://sonae.example.jp", concurrency=args.concurrency,
                                push_rate_per_s=1_000_000, batch_size=1000, allow_loopback=True,
                                per_host_concurrency=args.concurrency)  # one receiver, on 127.0.0.1
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.ready.wait(), 20)
        trials = []
        level = None
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        for trial in range(args.trials):
            parent.send(str(args.subs))
            new = 3 + trial % 2
            async with pool.acquire() as conn, conn.transaction():
                change = await alerts.apply_transition(
                    conn, station_id="akutsu", municipality_code=MUNI, exercise=False,
                    t=Transition("river_level", level, new, datetime.now(UTC).timestamp(), 5.8, 5.7, "threshold"))
                assert change is not None
                recorded = await conn.fetchval("SELECT recorded_at FROM alert_events WHERE id = $1", change.event_id)
            committed = time.time()
            level = new
            got = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
            lat = [x - committed for x in got["times"]]
            async with pool.acquire() as conn:
                sent = await conn.fetchval("SELECT count(*) FROM notify_queue WHERE alert_event_id = $1 AND "
                                           "state = 'sent'", change.event_id)
            trials.append({"p50_ms": pct(lat, 50) * 1000, "p90_ms": pct(lat, 90) * 1000,
                           "p99_ms": pct(lat, 99) * 1000, "last_ms": max(lat) * 1000,
                           "first_ms": min(lat) * 1000, "bad": got["bad"], "decrypted": got["checked"],
                           "received": len(lat), "recorded_to_commit_ms": (committed - recorded.timestamp()) * 1000})
            # the queue rows are marked sent in batches just after the receipts; wait for them
            deadline = time.monotonic() + 30
            while sent < args.subs and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
                async with pool.acquire() as conn:
                    sent = await conn.fetchval("SELECT count(*) FROM notify_queue WHERE alert_event_id = $1 AND "
                                               "state = 'sent'", change.event_id)
            trials[-1]["marked_sent"] = sent
            print(f"trial {trial + 1}: {json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in trials[-1].items()})}",
                  flush=True)
        if profiler is not None:
            import pstats

            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        worker.stop()
        await asyncio.wait_for(task, 30)

        # baseline: one at a time, no queue
        async with pool.acquire() as conn:
            pem = await vapid_private_pem(conn, None)
            subs = await conn.fetch("SELECT endpoint, p256dh, auth FROM push_subscriptions")
        vapid = Vapid(load_private_key(pem), "mailto:bench@example.jp")
        parent.send(str(len(subs)))
        payload = json.dumps({"title": "警戒レベル3", "body": "baseline", "url": "https://sonae.example.jp/"}).encode()
        started = time.time()
        async with aiohttp.ClientSession() as session:
            for s in subs:
                body = encrypt(payload, bytes(s["p256dh"]), bytes(s["auth"]))
                async with session.post(s["endpoint"], data=body, headers={
                        "TTL": "60", "Content-Encoding": "aes128gcm", "Authorization": vapid.authorization(s["endpoint"])}
                        ) as resp:
                    assert resp.status == 201
        got = await asyncio.get_running_loop().run_in_executor(None, parent.recv)
        base = [x - started for x in got["times"]]
        baseline = {"p50_ms": pct(base, 50) * 1000, "last_ms": max(base) * 1000}
        # the encryption alone, per message (CPU)
        t = time.perf_counter()
        for s in subs[:2000]:
            encrypt(payload, bytes(s["p256dh"]), bytes(s["auth"]))
        encrypt_us = (time.perf_counter() - t) / min(2000, len(subs)) * 1e6
        parent.send("stop")
        return {"subs": args.subs, "concurrency": args.concurrency, "cpus": os.cpu_count(), "setup_s": setup_s,
                "trials": trials, "baseline_serial": baseline, "encrypt_us_per_message": encrypt_us}
    finally:
        if proc is not None and proc.pid is not None:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
        await pool.close()
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subs", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print where the trials spend their time")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    t = result["trials"]
    print(json.dumps(result, indent=1, default=lambda v: round(v, 1)))
    print(f"\n{args.subs} push subscriptions, {result['cpus']} CPUs, concurrency {args.concurrency}: "
          f"alert change → delivery p50 {statistics.median(x['p50_ms'] for x in t):.0f} ms, "
          f"p99 {statistics.median(x['p99_ms'] for x in t):.0f} ms, last {statistics.median(x['last_ms'] for x in t):.0f} ms "
          f"(median of {len(t)} trials); naive serial sender: last {result['baseline_serial']['last_ms']:.0f} ms; "
          f"encryption {result['encrypt_us_per_message']:.0f} µs/message")


if __name__ == "__main__":
    main()
