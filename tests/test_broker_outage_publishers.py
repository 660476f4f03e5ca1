"""Publishers survive a broker outage (breakit6: a 10 s outage ended `sonae run --simulate` and `sonae simulate`
with ``MqttError: publish … The client is not currently connected``).

Real mosquitto throughout. Every publisher — Sonae's paho client (the demo, the rules worker's alert publisher,
the ``paho`` fleet transport) and the lean fleet transport — holds what it cannot send while the broker is away
and sends it after the reconnect; the process keeps running. No sleeps as synchronisation: each step waits on a
condition (a connection state, a failure counter, a message received, a log line).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

from simulators.transport import FastPublisher
from sonae.embedded import EmbeddedBroker, free_port
from sonae.mqtt import PUBLISHES_HELD, MqttClient
from sonae.retry import CONNECT_FAILURES
from tests.fault_harness import TcpProxy
from tests.ingest_support import wait_until

needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                     reason="mosquitto is not installed (apt-get install mosquitto)")


def _failures(target: str) -> float:
    return CONNECT_FAILURES.labels(target)._value.get()


async def _collector(url: str, topic: str) -> tuple[MqttClient, list[bytes]]:
    sub = MqttClient(url, client_id=f"collect-{uuid.uuid4().hex[:8]}")
    await sub.connect()
    await sub.subscribe(topic, qos=1)
    got: list[bytes] = []

    async def collect() -> None:
        async for msg in sub.messages():
            got.append(msg.payload)

    asyncio.get_running_loop().create_task(collect())
    return sub, got


@needs_mosquitto
async def test_paho_client_holds_publishes_while_the_broker_is_away(tmp_path: Path) -> None:
    """Sonae's MQTT client: a publish while disconnected is held and sent after the reconnect, never an error."""
    broker = EmbeddedBroker(tmp_path / "b", port=free_port(), anonymous=True)
    broker.start()
    proxy = TcpProxy("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
    port = await proxy.start()
    topic = f"t{uuid.uuid4().hex[:8]}/held"
    sub, got = await _collector(broker.url, topic)
    pub = MqttClient(f"mqtt://127.0.0.1:{port}", client_id=f"held-{uuid.uuid4().hex[:8]}", target="mqtt-test")
    await pub.connect()
    held_before = PUBLISHES_HELD.labels("mqtt-test")._value.get()
    try:
        await pub.publish(topic, b"before")
        proxy.down()

        async def disconnected() -> bool:
            return not pub.is_connected
        await wait_until(disconnected, timeout=30, what="the client noticing the outage")
        for i in range(5):
            await pub.publish(topic, f"during-{i}".encode())  # raised MqttError before the fix
        assert pub.held_publishes == 5
        assert PUBLISHES_HELD.labels("mqtt-test")._value.get() == held_before + 5
        proxy.restore()
        await pub.publish(topic, b"after")
        await pub.flush(timeout=60)

        async def all_arrived() -> bool:
            return {b"before", b"after", *(f"during-{i}".encode() for i in range(5))} <= set(got)
        await wait_until(all_arrived, timeout=30, what="every message, those held during the outage included")
    finally:
        await pub.close()
        await sub.close()
        await proxy.stop()
        broker.stop()


@needs_mosquitto
async def test_fast_publisher_survives_reconnect_attempts_cut_before_connack(tmp_path: Path) -> None:
    """The lean fleet transport: reconnect attempts whose socket is closed before CONNACK (a broker starting or
    stopping) no longer end the publisher for good; publishes wait and everything arrives."""
    broker = EmbeddedBroker(tmp_path / "b", port=free_port(), anonymous=True)
    broker.start()
    proxy = TcpProxy("127.0.0.1", int(broker.url.rsplit(":", 1)[1]))
    port = await proxy.start()
    topic = f"t{uuid.uuid4().hex[:8]}/fast"
    sub, got = await _collector(broker.url, topic)
    pub = FastPublisher(f"mqtt://127.0.0.1:{port}", client_id=f"fast-{uuid.uuid4().hex[:8]}", max_outstanding=100)
    await pub.connect()
    try:
        await pub.publish(topic, b"0")
        await pub.flush(timeout=30)
        before = _failures("mqtt-simulator")
        proxy.down()  # accepts and aborts: each reconnect attempt loses its socket during CONNECT

        async def attempts_failed() -> bool:
            return _failures("mqtt-simulator") >= before + 2
        await wait_until(attempts_failed, timeout=60, what="two reconnect attempts cut before CONNACK")
        waiting = asyncio.create_task(pub.publish(topic, b"1"))  # waits for the connection
        proxy.restore()
        await asyncio.wait_for(waiting, 60)  # raised "publisher failed" before the fix
        for i in range(2, 20):
            await pub.publish(topic, str(i).encode())
        await pub.flush(timeout=60)

        async def all_arrived() -> bool:
            return {str(i).encode() for i in range(20)} <= set(got)
        await wait_until(all_arrived, timeout=30, what="every message after the outage")
    finally:
        await pub.close()
        await sub.close()
        await proxy.stop()
        broker.stop()


class _Lines:
    """A child's combined output, read on a thread; :meth:`seen` for waiting on a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text: list[str] = []
        assert proc.stdout is not None
        stream = proc.stdout
        threading.Thread(target=lambda: self.text.extend(stream), daemon=True).start()

    def seen(self, needle: str) -> bool:
        return any(needle in line for line in list(self.text))


def _simulate(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "app.cli", "simulate", "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@needs_mosquitto
async def test_sonae_simulate_keeps_running_and_publishing_across_a_broker_outage(database_url: str,
                                                                                   tmp_path: Path) -> None:
    """`sonae simulate` (the demo) as a user runs it: the broker is stopped under it and started again; the
    process keeps running, and the demo's readings continue with every sequence number (none lost: those of
    the outage were held and sent after the reconnect)."""
    broker = EmbeddedBroker(tmp_path / "b", port=free_port(), anonymous=True)
    broker.start()
    prefix = f"t{uuid.uuid4().hex[:8]}/v1"
    # persistent and QoS 1: what the demo sends right after the restart waits in the broker for this session
    sub = MqttClient(broker.url, client_id=f"watch-{uuid.uuid4().hex[:8]}", persistent=True)
    await sub.connect()
    await sub.subscribe(f"{prefix}/#", qos=1)
    seqs: dict[str, list[int]] = {}

    async def collect() -> None:
        async for msg in sub.messages():
            seqs.setdefault(msg.topic, []).append(int(json.loads(msg.payload)["seq"]))
    collecting = asyncio.create_task(collect())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": database_url, "SONAE_MQTT_URL": broker.url, "SONAE_MQTT_TOPIC_PREFIX": prefix,
           "SONAE_STATE_DIR": str(tmp_path / "state")}
    proc = _simulate(env)
    lines = _Lines(proc)
    try:
        async def publishing() -> bool:
            assert proc.poll() is None, "".join(lines.text)
            return bool(seqs) and all(len(v) >= 2 for v in seqs.values())
        await wait_until(publishing, timeout=180, what="the demo publishing")
        broker.stop()

        async def held() -> bool:
            assert proc.poll() is None, "".join(lines.text)
            return lines.seen("held until the reconnect")
        await wait_until(held, timeout=60, what="the demo publishing while the broker is away")
        top = max(max(v) for v in seqs.values())
        broker.start()

        async def resumed() -> bool:
            assert proc.poll() is None, "".join(lines.text)
            return all(max(v) >= top + 3 for v in seqs.values())
        await wait_until(resumed, timeout=120, what="the demo publishing again after the broker came back")
        assert proc.poll() is None, "".join(lines.text)
        for topic, got in seqs.items():
            assert set(range(min(got), max(got) + 1)) <= set(got), f"{topic}: readings lost in the outage"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        collecting.cancel()
        await sub.close()
        broker.stop()
