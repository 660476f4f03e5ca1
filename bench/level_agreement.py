"""Alert levels true to the source: both slices of the real MLIT Fukushima file, end to end.

    .venv/bin/python bench/level_agreement.py [--slice "2025-10 → 11"] [--gauges 0700000003,…]

For each slice (issue #14: 2025-10 → 11 and 2026-06 → 08-23, JST) a fresh database (on
``SONAE_TEST_DATABASE_URL`` or the PostgreSQL on 127.0.0.1:5432) and Sonae's own broker on a free port:
the slice's gauges are registered as ``sonae simulate --replay mlit --register-stations`` registers them,
every reading is published over MQTT in time order to an ingestor and the rules worker running in this
process, and each reading's level is read back from the alert events and compared with the source's
own ``over`` flag (see ``tests/alerting/agreement.py``). Prints the table of the issue; the baseline is
the same command run on the code before the change (``git worktree add /tmp/before <commit>``, copy
this file and ``tests/alerting/agreement.py`` there, run it there).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg

from alerting.worker import RulesWorker
from ingest.service import Ingestor
from sonae.config import load_settings
from sonae.embedded import EmbeddedBroker, free_port
from sonae.migrations import migrate
from tests.alerting import agreement
from tests.conftest import SHARED
from tests.ingest_support import publish_all

DATA = SHARED / "river_levels"
MLIT_FILE = "mlit_kriver_fukushima_gauges_over_threshold_2025-09_to_2026-08.csv.gz"


async def run_slice(name: str, sl: agreement.Slice) -> agreement.Result:
    server_url = os.environ.get("SONAE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    dbname = f"sonae_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server_url)
    await admin.execute(f'CREATE DATABASE "{dbname}"')
    await admin.close()
    db_url = server_url.rsplit("/", 1)[0] + "/" + dbname
    tmp = tempfile.mkdtemp(prefix="sonae-bench-")
    broker = EmbeddedBroker(Path(tmp), port=free_port(), anonymous=True)
    broker.start()
    prefix = f"bench{uuid.uuid4().hex[:6]}/v1"
    settings = load_settings(environ={
        "SONAE_DATABASE_URL": db_url, "SONAE_MQTT_URL": broker.url, "SONAE_MQTT_PROTOCOL": broker.protocol,
        "SONAE_MQTT_TOPIC_PREFIX": prefix, "SONAE_MQTT_CLIENT_ID": f"bench-ingest-{uuid.uuid4().hex[:6]}",
        "SONAE_INGEST_SHARED_GROUP": "", "SONAE_STATE_DIR": tmp, "SONAE_LOG_LEVEL": "warning",
    })
    pool = await asyncpg.create_pool(db_url, min_size=2, max_size=10)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        await agreement.register(pool, sl)
        ingestor = Ingestor.from_settings(settings, pool)
        worker = RulesWorker.from_settings(settings, pool, silent_check_s=3600)
        tasks = [asyncio.create_task(ingestor.run()), asyncio.create_task(worker.run())]
        await asyncio.wait_for(ingestor.ready.wait(), 20)
        await asyncio.wait_for(worker.is_leader.wait(), 20)
        started = time.monotonic()
        await publish_all(settings, agreement.messages(sl), municipality_of=agreement.places(sl))
        deadline = time.monotonic() + 600
        while not await agreement.evaluated(pool, sl):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: the rules worker did not evaluate every reading within 600 s")
            await asyncio.sleep(0.5)
        print(f"{name}: {sl.count:,} readings published and evaluated in {time.monotonic() - started:.1f} s",
              file=sys.stderr)
        ingestor.stop()
        worker.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        return agreement.compare(sl, await agreement.sonae_levels(pool, sl))
    finally:
        await pool.close()
        broker.stop()
        admin = await asyncpg.connect(server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slice", action="append", choices=list(agreement.SLICES), help="default: both")
    parser.add_argument("--gauges", default="", help="comma-separated station codes (default: every gauge)")
    parser.add_argument("--file", type=Path, default=DATA / MLIT_FILE)
    args = parser.parse_args()
    rows = []
    for name in args.slice or list(agreement.SLICES):
        sl = agreement.load_slice(args.file, *agreement.SLICES[name])
        if args.gauges:
            sl = sl.subset(args.gauges.split(","))
        res = asyncio.run(run_slice(name, sl))
        rows.append(res.row(name))
        for line in res.examples:
            print(f"  late: {line}", file=sys.stderr)
    print(agreement.HEADER)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
