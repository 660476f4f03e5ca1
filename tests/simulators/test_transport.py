"""The paho transport's ``outstanding`` reads :attr:`sonae.mqtt.MqttClient.outstanding` (a public count,
not the client's private set) against a real broker."""

from __future__ import annotations

import uuid

from simulators.transport import PahoPublisher


async def test_outstanding_counts_publishes_until_the_broker_acknowledges_them(mqtt_url: str,
                                                                               mqtt_protocol: str) -> None:
    pub = PahoPublisher(mqtt_url, client_id=f"out-{uuid.uuid4().hex[:8]}", protocol=mqtt_protocol,
                        max_outstanding=100)
    await pub.connect()
    try:
        assert pub.outstanding == 0
        n = 25
        # no await yields to the event loop between these publishes (the window has room), so no PUBACK
        # can have been read yet: each one is outstanding
        for i in range(n):
            await pub.publish(f"t{uuid.uuid4().hex[:6]}/outstanding", str(i).encode())
        assert pub.outstanding == n == pub.client.outstanding
        await pub.flush(timeout=30)
        assert pub.outstanding == 0
    finally:
        await pub.close()
