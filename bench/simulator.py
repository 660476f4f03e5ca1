"""How fast one simulator process publishes QoS 1 messages, against baselines measured in the same run.

    .venv/bin/python bench/simulator.py            # full run (~1 minute)
    .venv/bin/python bench/simulator.py --quick    # smaller counts

Starts its own mosquitto (Sonae's embedded configuration, a temporary directory, a free port) and
measures, each publishing QoS 1 and counting a message only when its PUBACK is back:

1. ``paho default``   — a plain paho-mqtt client as most examples use it (loop thread, MQTT 3.1.1,
                        default ``max_inflight_messages`` of 20): the trap;
2. ``mosquitto_pub``  — the C client, ``-q 1 -l`` (one message per stdin line), when installed;
3. ``fleet / paho``   — the whole fleet (scenario, payloads, faults check, pacing loop) publishing
                        through :class:`sonae.mqtt.MqttClient` (paho, window 20,000, MQTT 3.1.1);
4. ``fleet / fast``   — the same fleet through :class:`simulators.transport.FastPublisher` (the default).

The fleet runs ``docs/scenarios/load-5000.toml`` (5,000 level gauges reporting every minute plus
their telemetry) at ``accel = "max"``. The target is ≥ 20,000 msg/s for ``fleet / fast``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from ingest.contract import encode_reading  # noqa: E402
from simulators.fleet import Fleet  # noqa: E402
from simulators.scenario import load_scenario  # noqa: E402
from simulators.transport import make_publisher  # noqa: E402
from sonae.embedded import EmbeddedBroker, free_port  # noqa: E402

PREFIX = "bench/v1"


def paho_default(host: str, port: int, n: int) -> float:
    """A plain paho client: loop thread, default in-flight window (20)."""
    done = threading.Event()
    acked = 0

    def on_publish(client, userdata, mid, reason, props):  # type: ignore[no-untyped-def]
        nonlocal acked
        acked += 1
        if acked >= n:
            done.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{uuid.uuid4().hex[:6]}",
                         protocol=paho.MQTTv311)
    client.on_publish = on_publish
    client.connect(host, port)
    client.loop_start()
    payload = encode_reading(value=1.23, ts=datetime.now(UTC), seq=1, exercise=True)
    started = time.perf_counter()
    for i in range(n):
        client.publish(f"{PREFIX}/072036/dev{i % 1000}/level", payload, qos=1)
    done.wait(600)
    took = time.perf_counter() - started
    client.loop_stop()
    client.disconnect()
    return n / took


def mosquitto_pub(port: int, n: int) -> float | None:
    exe = shutil.which("mosquitto_pub")
    if exe is None:
        return None
    line = encode_reading(value=1.23, ts=datetime.now(UTC), seq=1, exercise=True) + b"\n"
    data = line * n
    started = time.perf_counter()
    subprocess.run([exe, "-h", "127.0.0.1", "-p", str(port), "-q", "1", "-t", f"{PREFIX}/072036/pub/level", "-l"],
                   input=data, check=True, timeout=600)
    return n / (time.perf_counter() - started)


async def fleet_run(url: str, transport: str, duration_s: float) -> tuple[float, int]:
    scenario = load_scenario(ROOT / "docs" / "scenarios" / "load-5000.toml").with_overrides(
        accel=math.inf, duration_s=duration_s)
    fleet = Fleet(scenario, prefix=PREFIX)
    publisher = make_publisher(url, client_id=f"bench-{uuid.uuid4().hex[:6]}", transport=transport,
                               protocol="3.1.1", max_outstanding=20000)
    await publisher.connect()
    try:
        started = time.perf_counter()
        stats = await fleet.run(publisher)  # ends after the last PUBACK (flush)
        took = time.perf_counter() - started
    finally:
        await publisher.close()
    return stats.published / took, stats.published


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller message counts")
    args = parser.parse_args()
    n_base = 20000 if args.quick else 50000
    fleet_span = 900.0 if args.quick else 3600.0  # load-5000: ~88 messages per scenario second

    with tempfile.TemporaryDirectory(prefix="sonae-bench-sim-") as tmp:
        broker = EmbeddedBroker(Path(tmp), port=free_port(), prefer="mosquitto", anonymous=True)
        url = broker.start()
        if broker.kind != "mosquitto":
            print("mosquitto is not installed; the figures below are for amqtt", file=sys.stderr)
        try:
            results: list[tuple[str, float | None, int]] = []
            results.append(("paho default (max_inflight 20)", paho_default("127.0.0.1", broker.port, n_base), n_base))
            results.append(("mosquitto_pub -q 1 -l (C client)", mosquitto_pub(broker.port, n_base), n_base))
            rate, n = asyncio.run(fleet_run(url, "paho", fleet_span))
            results.append(("fleet via sonae.mqtt.MqttClient (paho)", rate, n))
            rate, n = asyncio.run(fleet_run(url, "fast", fleet_span))
            results.append(("fleet via FastPublisher (default)", rate, n))
        finally:
            broker.stop()

    base = results[0][1] or 1.0
    print(f"\nQoS 1 publishing to a local {broker.kind} (PUBACK received for every message), one process:\n")
    print(f"{'publisher':<42} {'messages':>9} {'msg/s':>10} {'× paho default':>15}")
    for name, rate, n in results:
        if rate is None:
            print(f"{name:<42} {'—':>9} {'not installed':>10}")
            continue
        print(f"{name:<42} {n:>9,} {rate:>10,.0f} {rate / base:>14.1f}×")
    fast = results[-1][1] or 0.0
    verdict = "meets" if fast >= 20000 else "MISSES"
    print(f"\nfleet / fast: {fast:,.0f} msg/s — {verdict} the 20,000 msg/s target")
    return 0 if fast >= 20000 else 1


if __name__ == "__main__":
    sys.exit(main())
