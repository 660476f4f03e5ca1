"""Cost of commit positions on alert events (issue #15 item 4): concurrent writers of alert events,
with the commit-position trigger against the same workload without it, in the same run.

    .venv/bin/python bench/alert_commit_order.py [--writers 8] [--orders 100] [--trials 3]

Sets up a fresh database (``SONAE_TEST_DATABASE_URL`` or the PostgreSQL on 127.0.0.1:5432). Each
trial runs ``--writers`` connections that each issue and cancel ``--orders`` evacuation orders (two
alert events per order, each in its own transaction, as staff actions are), once with the trigger
(``alert_events_commit_pos``: an advisory lock and an UPDATE at commit) and once with it disabled —
the baseline, which is what the code did before. Prints events/s for both and their ratio (median of
the trials); the machine's absolute speed cancels out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from alerting import store
from sonae.migrations import migrate


async def _writer(pool: asyncpg.Pool, orders: int) -> int:
    async with pool.acquire() as conn:
        for _ in range(orders):
            order_id, _ = await store.issue_order(conn, municipality_code="072036", level=3, issued_by="bench")
            await store.cancel_order(conn, order_id, cancelled_by="bench")
    return 2 * orders


async def _trial(pool: asyncpg.Pool, writers: int, orders: int, *, trigger: bool) -> float:
    async with pool.acquire() as conn:
        await conn.execute(f"ALTER TABLE alert_events {'ENABLE' if trigger else 'DISABLE'} TRIGGER "
                           "alert_events_commit_pos")
    started = time.perf_counter()
    events = sum(await asyncio.gather(*(_writer(pool, orders) for _ in range(writers))))
    return events / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    server = os.environ.get("SONAE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"sonae_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = server.rsplit("/", 1)[0] + f"/{name}"
    try:
        pool = await asyncpg.create_pool(url, min_size=args.writers + 1, max_size=args.writers + 1)
        async with pool.acquire() as conn:
            await migrate(conn)
        with_trigger, baseline = [], []
        for i in range(args.trials):
            print(f"trial {i + 1}/{args.trials}", file=sys.stderr, flush=True)
            baseline.append(await _trial(pool, args.writers, args.orders, trigger=False))
            with_trigger.append(await _trial(pool, args.writers, args.orders, trigger=True))
        await pool.close()
    finally:
        admin = await asyncpg.connect(server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    b, t = statistics.median(baseline), statistics.median(with_trigger)
    print(f"writers={args.writers} orders/writer={args.orders} trials={args.trials}")
    print(f"baseline (no commit positions): {b:,.0f} alert events/s")
    print(f"commit positions:               {t:,.0f} alert events/s")
    print(f"ratio commit positions / baseline: {t / b:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
