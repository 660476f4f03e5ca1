"""Broker and network faults at full size (issue #23): 20,000 readings per trial, real processes.

    .venv/bin/python bench/broker_faults.py [--readings 20000] [--rate 250] [--db-outage-s 150]
        [--arrangements before,shared,default,partitions] [--before-code ../../main]
        [--trials restarts,down,cuts,db] [--json out.json]

Each trial publishes ``--readings`` readings at ``--rate``/s from an independent paho MQTT 5 publisher
(recording every PUBACK reason code) while a fault happens, against real ``sonae ingest`` processes
and a Mosquitto configured by Sonae's own configuration (see ``tests/fault_harness.py``):

* ``restarts``: the broker restarted twice; ``down``: the broker stopped for 15 s;
* ``cuts``: 20 cuts of the ingestors' broker connections (a TCP proxy aborts them);
* ``db``: the database taken away for ``--db-outage-s`` (TCP proxy) with ``ingest.max_inflight`` 2,000.

Arrangements, measured in the same run: ``before`` — the ``sonae ingest`` of another checkout
(``--before-code``, e.g. the main branch before this change) with its own defaults, the baseline;
``shared`` — this code with the opt-in ``$share/…`` subscription; ``default`` — one ingestor,
plain persistent subscription;
``partitions`` — two ingestors with ``ingest.partition`` 0/2 and 1/2. For each trial it prints
published, stored, lost, duplicates, PUBACK reason codes (0x10 = "no matching subscribers"), the
peak unacknowledged and inbox counts against the limit, the ingestors' connection counts and resident
memory (first sample, peak of the first and last quarter: flat means bounded).

Needs mosquitto and a PostgreSQL reachable over TCP (``--database-url``, default the local one); a
fresh database is made and dropped. Exit status 0 when every non-baseline trial stored every reading
exactly once with no 0x10, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from sonae.migrations import migrate  # noqa: E402
from tests.fault_harness import (  # noqa: E402
    Publisher,
    Rig,
    Trial,
    fault_broker_down,
    fault_broker_restarts,
    fault_connection_cuts,
    fault_database_down,
)

ARRANGEMENTS: dict[str, dict[str, object]] = {
    "before": {"shared_group": None}, "shared": {"shared_group": "sonae-ingest"}, "default": {},
    "partitions": {"ingestors": 2}}
BASELINES = ("before", "shared")
Fault = Callable[[Rig, Publisher, Callable[[], float]], Awaitable[None]]


def _with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


async def _trial(args: argparse.Namespace, server: str, arrangement: str, trial: str) -> Trial:
    name = f"sonae_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(server)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = _with_db(server, name)
    try:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()
        options: dict[str, object] = dict(ARRANGEMENTS[arrangement])
        if arrangement == "before":
            options["code_root"] = args.before_code
        all_faults: dict[str, Fault] = {
            "restarts": fault_broker_restarts, "down": partial(fault_broker_down, seconds=15),
            "cuts": partial(fault_connection_cuts, cuts=20),
            "db": partial(fault_database_down, seconds=args.db_outage_s)}
        faults = all_faults[trial]
        if trial == "db":
            options.update(max_inflight=2000, via_db_proxy=True)
        if trial == "cuts":
            options.update(mqtt_via_proxy=True)
        with tempfile.TemporaryDirectory() as tmp:
            async with Rig(workdir=Path(tmp), database_url=url, **options) as rig:  # type: ignore[arg-type]
                return await rig.run(f"{arrangement}: {trial}", readings=args.readings, rate=args.rate,
                                     faults=faults, settle_s=300)
    finally:
        admin = await asyncpg.connect(server)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def main(args: argparse.Namespace) -> tuple[int, list[Trial]]:
    results: list[Trial] = []
    ok = True
    for arrangement in args.arrangements.split(","):
        for trial in args.trials.split(","):
            if arrangement == "shared" and trial == "db":
                continue  # the database outage does not involve the subscription kind
            t = await _trial(args, args.database_url, arrangement, trial)
            results.append(t)
            r = t.result()
            print(f"{r['trial']:<24} published {t.published:>6}  stored {t.stored:>6}  lost {t.lost:>5}  "
                  f"dup {t.duplicates}  pubacks {r['pubacks']}  peak unacked {t.peak_unacked:.0f}/{t.max_inflight}  "
                  f"peak inbox {t.peak_inbox:.0f}  connections {t.connections}  "
                  f"redeliveries dropped {t.redeliveries_dropped:.0f}  rss {r['rss_mb']}  "
                  f"{t.seconds:.0f} s", flush=True)
            if arrangement not in BASELINES:
                ok &= (t.lost == 0 and t.duplicates == 0 and "0x10" not in t.pubacks
                       and t.peak_unacked <= t.max_inflight and t.peak_inbox <= t.max_inflight)
    print("every trial lossless" if ok else "LOSS OR UNBOUNDED MEMORY in a trial above")
    return (0 if ok else 1), results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=250)
    parser.add_argument("--db-outage-s", type=float, default=150)
    parser.add_argument("--arrangements", default="before,default,partitions")
    parser.add_argument("--before-code", type=lambda p: Path(p).resolve(), default=ROOT.parent.parent / "main",
                        help="checkout whose `sonae ingest` is the baseline (default: ../../main)")
    parser.add_argument("--trials", default="restarts,down,cuts,db")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--json")
    arguments = parser.parse_args()
    status, trials = asyncio.run(main(arguments))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps([t.result() for t in trials], indent=2))
    sys.exit(status)
