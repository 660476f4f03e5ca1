"""Every outgoing connection retries from the first attempt and counts its failures (issue #15, item 5).

Real broker and database: the broker is started only after the client (or the rules worker) has
failed to reach it, and the alert state must appear on MQTT within seconds of it coming up.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import asyncpg
import pytest

from alerting import store
from alerting.worker import alert_topic_root
from sonae.embedded import EmbeddedBroker, free_port
from sonae.mqtt import MqttClient
from sonae.retry import CONNECT_FAILURES, backoff_delay, keep_connected
from tests.alerting.support import running_worker
from tests.ingest_support import wait_until

needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                     reason="mosquitto is not installed (apt-get install mosquitto)")


def _failures(target: str) -> float:
    return CONNECT_FAILURES.labels(target)._value.get()


@needs_mosquitto
async def test_first_connect_waits_for_a_broker_that_is_down(tmp_path: Path) -> None:
    broker = EmbeddedBroker(tmp_path, port=free_port(), anonymous=True)
    before = _failures("mqtt")
    client = MqttClient(broker.url, client_id=f"first-{uuid.uuid4().hex[:6]}")
    connecting = asyncio.create_task(client.connect())
    try:
        async def failed_twice() -> bool:
            return _failures("mqtt") >= before + 2
        await wait_until(failed_twice, timeout=120, what="two failed attempts counted")
        assert not connecting.done()
        broker.start()
        await asyncio.wait_for(connecting, 120)
        assert client.is_connected
    finally:
        connecting.cancel()
        await client.close()
        broker.stop()


async def test_without_retry_an_unreachable_broker_is_an_error(refusing_port: int) -> None:
    from sonae.mqtt import MqttError

    client = MqttClient(f"mqtt://127.0.0.1:{refusing_port}", client_id="no-retry", retry=False)
    with pytest.raises(MqttError, match="cannot reach"):
        await client.connect()


@needs_mosquitto
async def test_rules_worker_publishes_alert_state_once_the_broker_comes_up(pool: asyncpg.Pool,
                                                                           tmp_path: Path) -> None:
    """The broker is down when the worker becomes leader: the active order is published (retained)
    within seconds of the broker starting; an order cancelled while the broker is down again has its
    retained copy removed after the broker is back."""
    broker = EmbeddedBroker(tmp_path, port=free_port(), anonymous=True)
    root = alert_topic_root(f"t{uuid.uuid4().hex[:8]}/v1")
    ring = [[140.35, 37.39], [140.40, 37.39], [140.40, 37.42], [140.35, 37.42], [140.35, 37.39]]
    async with pool.acquire() as conn:
        order_id, change = await store.issue_order(
            conn, municipality_code="072036", level=4, issued_by="tanaka", area_desc="阿久津地区",
            area={"type": "Polygon", "coordinates": [ring]}, note="阿武隈川増水のため")
    topic = f"{root}/072036/{change.alert_id}"
    before = _failures("mqtt-alerts")
    try:
        async with running_worker(pool, mqtt_url=broker.url, mqtt_protocol="5", topic_root=root, sweep_s=0.5):
            async def failing() -> bool:
                return _failures("mqtt-alerts") > before
            await wait_until(failing, timeout=120, what="the publisher failing to connect")
            broker.start()
            # a persistent observer: the broker queues what the worker sends while it reconnects
            async with MqttClient(broker.url, client_id=f"obs-{uuid.uuid4().hex[:6]}", persistent=True) as obs:
                await obs.subscribe(topic)
                messages = obs.messages()
                first = await asyncio.wait_for(messages.__anext__(), 60)
                assert first.retain or json.loads(first.payload)["active"]
                assert json.loads(first.payload)["id"] == change.alert_id
                broker.stop()
                async with pool.acquire() as conn:
                    await store.cancel_order(conn, order_id, cancelled_by="tanaka", note="水位低下")
                broker.start()
                seen = []
                while not any(m.payload == b"" for m in seen):  # the retained copy removed
                    seen.append(await asyncio.wait_for(messages.__anext__(), 60))
                assert any(m.payload and json.loads(m.payload)["active"] is False for m in seen)
    finally:
        broker.stop()


async def test_keep_connected_retries_from_the_first_attempt_and_counts() -> None:
    """Pure logic of the loop shared by the LISTEN connections: failures counted, backoff reset once
    a session was established."""
    attempts: list[str] = []
    before = _failures("unit-test")

    async def session(connected):  # type: ignore[no-untyped-def]
        attempts.append("try")
        if len(attempts) <= 2:
            raise OSError("refused")
        connected()
        if len(attempts) == 3:
            raise ConnectionError("lost")

    await keep_connected(session, target="unit-test", stopped=lambda: len(attempts) >= 4, base=0.001, cap=0.002)
    assert len(attempts) == 4
    assert _failures("unit-test") == before + 3
    delays = [backoff_delay(n, base=1.0, cap=8.0) for n in (1, 2, 3, 4, 5, 9)]
    assert [round(d / b, 1) <= 1.2 and d / b >= 0.8 for d, b in zip(delays, [1, 2, 4, 8, 8, 8], strict=True)] \
        == [True] * 6
