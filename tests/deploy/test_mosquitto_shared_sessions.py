"""What Mosquitto does with a shared subscriber that is away, for operators who opt in to
``ingest.shared_group`` (the deployment itself uses plain subscriptions partitioned by municipality
since issue #23: see ingest/partition.py and tests/test_broker_faults.py).

A persistent session that disconnects keeps receiving its share of ``$share/<group>/...`` (queued
until it returns) while another member is connected; when *all* members are away (a broker restart)
readings are answered 0x10 and lost, which is why shared subscriptions are no longer the default.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from sonae.provisioning import add_client
from tests.deploy.mqtt_support import DEPLOY, DeployedBroker, Probe, mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DeployedBroker, dict[str, str]]]:
    b = DeployedBroker(DEPLOY / "mosquitto" / "mosquitto.conf", tmp_path_factory.mktemp("shared"))
    pw = {"ing": add_client("ing", role="ingest", passwd_file=b.passwd, acl_file=b.acl).password or "",
          "dev": add_client("dev", municipalities=["072036"], passwd_file=b.passwd, acl_file=b.acl).password or ""}
    b.start()
    yield b, pw
    b.stop()


def _scenario(broker: tuple[DeployedBroker, dict[str, str]], group: str, *, unsubscribe: bool) -> tuple[int, int]:
    b, pw = broker
    topic_filter = f"$share/{group}/sonae/v1/#"

    def ingestor(cid: str) -> Probe:
        p = Probe(b.port, "ing", pw["ing"], client_id=cid)
        assert not p.connect(clean_start=False, session_expiry=3600).is_failure
        return p

    away, staying = ingestor(f"{group}-a"), ingestor(f"{group}-b")
    away.subscribe(topic_filter)
    staying.subscribe(topic_filter)
    if unsubscribe:
        away.client.unsubscribe(topic_filter)
        time.sleep(0.3)
    away.close()
    time.sleep(0.3)
    device = Probe(b.port, "dev", pw["dev"])
    device.connect()
    for i in range(100):
        device.publish("sonae/v1/072036/dev/level", str(i))
    staying.wait_for(100, timeout=2)
    back = ingestor(f"{group}-a")
    back.wait_for(100 - len(staying.messages), timeout=3)
    time.sleep(0.2)
    got = len(staying.messages), len(back.messages)
    for p in (staying, device, back):
        p.close()
    return got


def test_an_absent_shared_subscriber_keeps_its_share_until_it_returns(broker) -> None:  # type: ignore[no-untyped-def]
    staying, returned = _scenario(broker, "absent", unsubscribe=False)
    assert staying + returned == 100, "a message was lost"
    assert 30 <= returned <= 70, f"expected about half held for the absent session, got {returned}"


def test_unsubscribing_before_leaving_hands_the_whole_stream_to_the_others(broker) -> None:  # type: ignore[no-untyped-def]
    assert _scenario(broker, "retired", unsubscribe=True) == (100, 0)
