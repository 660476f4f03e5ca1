"""Ingest benchmark: committed readings per second, against the ceilings measured in the same run.

    .venv/bin/python bench/ingest.py [--messages 50000] [--naive-messages 10000] [--senml-messages 2000]
                                     [--timescale-url URL | --timescale-url none]

Each consumer drains the same backlog: a separate publisher process first publishes the QoS 1 stream
to a persistent session on Sonae's own Mosquitto (started here with Sonae's configuration), then the
consumer connects and is timed from its CONNECT to its last message (for Sonae: to the commit that
makes the table complete). The consumers:

(a) a paho subscriber that only counts (the Python client's ceiling),
(b) ``mosquitto_sub`` draining the same volume (the broker's ceiling),
(c) a naive ingestor: one INSERT and one ack per message,
(d) Sonae's ingestor (batches, ack after commit), and
(e) Sonae's ingestor with SenML packs of 100 readings per message,
(f), (g) (d) and (e) again with TimescaleDB as the database (a hypertable with compression), reported
beside plain PostgreSQL as the ratios f/d and g/e. The TimescaleDB server is ``--timescale-url`` (or
``SONAE_BENCH_TIMESCALE_URL``), else one started with ``shared/timescaledb/timescaledb-server`` in
``.state/bench-timescaledb``; without either, (f) and (g) are skipped and say why.

A consumer that stops receiving for ``--stall-s`` seconds is stopped and its loss reported (stored
count and how many are missing) instead of waiting for ever.

Targets on a 2-core machine: (d) ≥ 0.7 × (a), (d) ≥ 5 × (c), zero loss, and (e) ≥ 100,000 readings/s.
Results are printed and written to ``.state/bench/ingest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from ingest.registry import Station, upsert_stations  # noqa: E402
from ingest.service import Ingestor  # noqa: E402
from sonae.embedded import EmbeddedBroker, free_port  # noqa: E402
from sonae.migrations import migrate  # noqa: E402
from sonae.mqtt import MqttClient  # noqa: E402

PREFIX = "bench/v1"
STATIONS = [f"st{i:03d}" for i in range(100)]


# -- publisher (runs in its own process) ------------------------------------------------------------
async def publish(url: str, count: int, senml: int) -> None:
    start = datetime.now(UTC) - timedelta(days=30)
    async with MqttClient(url, client_id=f"bench-pub-{uuid.uuid4().hex[:6]}", max_outstanding=5000) as client:
        for i in range(count):
            station = STATIONS[i % len(STATIONS)]
            if senml:
                base = (start + timedelta(seconds=i * senml)).timestamp()
                pack = [{"bn": f"{station}/", "bt": base, "n": "level", "u": "m", "v": 1.0}]
                pack += [{"n": "level", "t": j, "v": 1.0 + j / 1000} for j in range(1, senml)]
                body = json.dumps(pack, separators=(",", ":")).encode()
                topic = f"{PREFIX}/072036/{station}/senml"
            else:
                ts = (start + timedelta(seconds=i)).isoformat().replace("+00:00", "Z")
                body = b'{"ts":"%s","value":%.3f,"unit":"m","seq":%d}' % (ts.encode(), 1 + (i % 97) / 100, i)
                topic = f"{PREFIX}/072036/{station}/level"
            await client.publish(topic, body, qos=1)
        await client.flush(timeout=300)


def run_publisher(url: str, count: int, senml: int = 0) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--publisher", url, str(count), str(senml)], check=True)
    return count / (time.perf_counter() - started)


# -- consumers -----------------------------------------------------------------------------------
def make_session(url: str, client_id: str, topic: str) -> None:
    """Create a persistent session with a subscription, so the broker queues the backlog for it."""
    done = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_subscribe = lambda *a: done.set()
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    host, port = url.removeprefix("mqtt://").split(":")
    c.connect(host, int(port), clean_start=False, properties=props)
    c.loop_start()
    c.subscribe(topic, qos=1)
    assert done.wait(10)
    c.disconnect()
    c.loop_stop()


def paho_counter(url: str, client_id: str, expected: int, stall_s: float) -> float:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    count = 0
    done = threading.Event()

    def on_message(client, userdata, msg):  # type: ignore[no-untyped-def]
        nonlocal count
        count += 1
        if count >= expected:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 20000
    host, port = url.removeprefix("mqtt://").split(":")
    started = time.perf_counter()
    c.connect(host, int(port), clean_start=False, properties=props)
    c.loop_start()
    seen = -1
    while not done.wait(stall_s):
        if count == seen:
            print(f"    paho counter stalled: received {count}/{expected} ({expected - count} lost)", flush=True)
            break
        seen = count
    elapsed = time.perf_counter() - started
    c.disconnect()
    c.loop_stop()
    return count / elapsed


def mosquitto_sub(url: str, client_id: str, topic: str, expected: int) -> float | None:
    exe = shutil.which("mosquitto_sub")
    if exe is None:
        return None
    host, port = url.removeprefix("mqtt://").split(":")
    started = time.perf_counter()
    subprocess.run([exe, "-h", host, "-p", port, "-V", "5", "-i", client_id, "-c", "-x", "3600", "-q", "1",
                    "-t", topic, "-C", str(expected)], check=True, stdout=subprocess.DEVNULL)
    return expected / (time.perf_counter() - started)


async def naive_ingestor(url: str, db: str, client_id: str, expected: int, stall_s: float) -> float:
    conn = await asyncpg.connect(db)
    started = time.perf_counter()
    client = MqttClient(url, client_id=client_id, persistent=True, manual_ack=True, max_inflight=1000)
    await client.connect()
    n = 0
    stream = aiter(client.messages())
    while True:
        try:
            msg = await asyncio.wait_for(anext(stream), stall_s)
        except (TimeoutError, StopAsyncIteration):
            print(f"    naive ingestor stalled: stored {n}/{expected} ({expected - n} lost)", flush=True)
            break
        body = json.loads(msg.payload)
        station = msg.topic.split("/")[3]
        await conn.execute(
            "INSERT INTO readings (station_id, kind, ts, value) VALUES ($1, 'level', $2, $3) ON CONFLICT DO NOTHING",
            station, datetime.fromisoformat(body["ts"].replace("Z", "+00:00")), body["value"])
        client.ack(msg)
        n += 1
        if n >= expected:
            break
    elapsed = time.perf_counter() - started
    await client.close()
    await conn.close()
    return n / elapsed


async def sonae_ingestor(url: str, pool: asyncpg.Pool, client_id: str, expected_rows: int, *,
                         stall_s: float, batch_size: int = 5000) -> tuple[float, int]:
    """Rate (readings/s) until every reading is committed, or until nothing was committed for
    ``stall_s`` seconds (then the rate of what arrived; the caller reports the loss)."""
    ingestor = Ingestor(pool=pool, mqtt_url=url, client_id=client_id, prefix=PREFIX, shared_group="",
                        max_inflight=20000, max_future_s=300, batch_size=batch_size)
    started = time.perf_counter()
    task = asyncio.create_task(ingestor.run())
    progress, last_change = -1, time.perf_counter()
    while (done := ingestor.totals["inserted"] + ingestor.totals["duplicates"]) < expected_rows:
        if task.done():
            task.result()
        if done != progress:
            progress, last_change = done, time.perf_counter()
        elif time.perf_counter() - last_change > stall_s:
            print(f"    Sonae ingestor stalled: committed {done}/{expected_rows} ({expected_rows - done} lost)",
                  flush=True)
            break
        await asyncio.sleep(0.01)
    else:
        last_change = time.perf_counter()
    elapsed = last_change - started
    expected_rows = done
    ingestor.stop()
    await task
    async with pool.acquire() as conn:
        rows = await conn.fetchval("SELECT count(*) FROM readings")
    return expected_rows / elapsed, int(rows)


async def fresh_database(server: str) -> str:
    name = f"sonae_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(server)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    db = server.rsplit("/", 1)[0] + "/" + name
    conn = await asyncpg.connect(db)
    await migrate(conn)
    await upsert_stations(conn, [Station(id=s, name=s) for s in STATIONS])
    await conn.close()
    return db


async def drop_database(server: str, db: str) -> None:
    conn = await asyncpg.connect(server)
    await conn.execute(f'DROP DATABASE IF EXISTS "{db.rsplit("/", 1)[1]}" WITH (FORCE)')
    await conn.close()


def timescale_server(choice: str | None) -> tuple[str | None, str, Callable[[], None]]:
    """(URL or None, why not, stop): the given server, or one started with the shared script."""
    if choice and choice != "none":
        return choice, "", lambda: None
    if choice == "none":
        return None, "--timescale-url none", lambda: None
    script = next((p / "shared" / "timescaledb" / "timescaledb-server" for p in ROOT.parents
                   if (p / "shared" / "timescaledb" / "timescaledb-server").is_file()), None)
    if script is None:
        return None, "no TimescaleDB: give --timescale-url (shared/timescaledb/timescaledb-server not found)", lambda: None
    folder = ROOT / ".state" / "bench-timescaledb"
    conf = folder / "data" / "postgresql.conf"
    ports = re.findall(r"^port = (\d+)", conf.read_text(), re.M) if conf.exists() else []
    port = ports[-1] if ports else str(free_port())
    if subprocess.run([str(script), "status", str(folder)], capture_output=True).returncode == 0:
        return f"postgresql://postgres@127.0.0.1:{port}/postgres", "", lambda: None  # already running
    done = subprocess.run([str(script), "start", str(folder), port], capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"timescaledb-server failed: {done.stderr.strip()[-300:]}", lambda: None

    def stop() -> None:
        subprocess.run([str(script), "stop", str(folder)], capture_output=True, check=False)

    return done.stdout.strip().splitlines()[-1], "", stop


async def main(args: argparse.Namespace) -> dict[str, object]:
    server = os.environ.get("SONAE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    timescale, timescale_reason, stop_timescale = timescale_server(args.timescale_url)
    workdir = Path(tempfile.mkdtemp(prefix="sonae-bench-"))
    broker = EmbeddedBroker(workdir, port=free_port(), anonymous=True)
    broker.start()
    url = broker.url
    topic = f"{PREFIX}/#"
    results: dict[str, object] = {"messages": args.messages, "broker": "mosquitto (Sonae config)"}
    try:
        def backlog(client_id: str, count: int, senml: int = 0) -> float:
            make_session(url, client_id, topic)
            return run_publisher(url, count, senml)

        rate = backlog("a-paho", args.messages)
        results["publisher_msgs_per_s"] = round(rate)
        results["a_paho_counter_msgs_per_s"] = round(paho_counter(url, "a-paho", args.messages, args.stall_s))
        print(f"(a) paho counting subscriber : {results['a_paho_counter_msgs_per_s']:>9,} msg/s", flush=True)

        backlog("b-mosq", args.messages)
        b = mosquitto_sub(url, "b-mosq", topic, args.messages)
        results["b_mosquitto_sub_msgs_per_s"] = round(b) if b else None
        print(f"(b) mosquitto_sub            : {results['b_mosquitto_sub_msgs_per_s']!s:>9} msg/s", flush=True)

        db = await fresh_database(server)
        backlog("c-naive", args.naive_messages)
        c = await naive_ingestor(url, db, "c-naive", args.naive_messages, args.stall_s)
        results["c_naive_insert_per_msg_per_s"] = round(c)
        print(f"(c) naive ingestor           : {round(c):>9,} msg/s", flush=True)
        await drop_database(server, db)

        await sonae_runs(server, url, "plain PostgreSQL", "d", "e", backlog, args, results)
        if timescale is None:
            print(f"(f), (g) skipped: {timescale_reason}", flush=True)
            results["timescale"] = f"skipped: {timescale_reason}"
        else:
            await sonae_runs(timescale, url, "TimescaleDB", "f", "g", backlog, args, results)
    finally:
        broker.stop()
        stop_timescale()
        shutil.rmtree(workdir, ignore_errors=True)

    a = results["a_paho_counter_msgs_per_s"]
    results["ratio_d_over_a"] = round(results["d_readings_per_s"] / a, 2)  # type: ignore[operator]
    results["ratio_d_over_c"] = round(results["d_readings_per_s"] / results["c_naive_insert_per_msg_per_s"], 1)  # type: ignore[operator]
    print(f"d/a = {results['ratio_d_over_a']} (target ≥ 0.7)   d/c = {results['ratio_d_over_c']} (target ≥ 5)   "
          f"e = {results['e_readings_per_s']:,} readings/s (target ≥ 100,000)")
    if "f_readings_per_s" in results:
        results["ratio_timescale_over_plain_single"] = round(results["f_readings_per_s"] / results["d_readings_per_s"], 2)  # type: ignore[operator]
        results["ratio_timescale_over_plain_senml"] = round(results["g_readings_per_s"] / results["e_readings_per_s"], 2)  # type: ignore[operator]
        print(f"TimescaleDB / plain PostgreSQL: f/d = {results['ratio_timescale_over_plain_single']} (one reading "
              f"per message)   g/e = {results['ratio_timescale_over_plain_senml']} (SenML 100/message)")
    lost = {k: v for k, v in results.items() if k.endswith("_lost") and v}
    if lost:
        print(f"LOSS: {lost}")
    return results


async def sonae_runs(server: str, mqtt_url: str, label: str, single: str, senml: str,
                     backlog: Callable[..., float], args: argparse.Namespace, results: dict[str, object]) -> None:
    """Sonae's ingestor on one database server: one reading per message, then SenML 100/message."""
    for key, messages, per_message, batch in ((single, args.messages, 0, 5000),
                                              (senml, args.senml_messages, 100, args.senml_batch_size)):
        db = await fresh_database(server)
        pool = await asyncpg.create_pool(db, min_size=2, max_size=4)
        backlog(f"{key}-sonae", messages, senml=per_message)
        expected = messages * max(per_message, 1)
        rate, rows = await sonae_ingestor(mqtt_url, pool, f"{key}-sonae", expected, stall_s=args.stall_s,
                                          batch_size=batch)
        what = "SenML 100/message" if per_message else "one reading/message"
        results[f"{key}_database"] = label
        results[f"{key}_readings_per_s"] = round(rate)
        results[f"{key}_rows_stored"] = rows
        results[f"{key}_lost"] = expected - rows
        print(f"({key}) Sonae, {label}, {what:<20}: {round(rate):>9,} readings/s, stored {rows}/{expected}",
              flush=True)
        await pool.close()
        await drop_database(server, db)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--publisher":
        asyncio.run(publish(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=50000)
    parser.add_argument("--naive-messages", type=int, default=10000)
    parser.add_argument("--senml-messages", type=int, default=2000)
    parser.add_argument("--senml-batch-size", type=int, default=20000,
                        help="ingest.batch_size for the SenML run (readings per committed batch)")
    parser.add_argument("--timescale-url", default=os.environ.get("SONAE_BENCH_TIMESCALE_URL"),
                        help="TimescaleDB server URL for (f)/(g); 'none' skips them (default: start the shared "
                             "timescaledb-server in .state/bench-timescaledb)")
    parser.add_argument("--stall-s", type=float, default=30.0,
                        help="stop a consumer and report its loss after this long without a message")
    out = asyncio.run(main(parser.parse_args()))
    target = ROOT / ".state" / "bench"
    target.mkdir(parents=True, exist_ok=True)
    (target / "ingest.json").write_text(json.dumps(out, indent=2))
