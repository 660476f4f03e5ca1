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

from app.provisioning import add_client
from tests.deploy.mqtt_support import DEPLOY, WAIT_S, DeployedBroker, Probe, mosquitto_binary

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
    """How the 100 readings a device publishes while one of two shared subscribers is away are split
    between the one that stayed and the one that returns (each wait is on an event, not a pause)."""
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
        away.unsubscribe(topic_filter)  # returns at the UNSUBACK
    gone = b.log_text().count(f"Client {group}-a disconnected")
    away.close()
    b.wait_for_log(f"Client {group}-a disconnected", more_than=gone)  # the broker knows it is away
    device = Probe(b.port, "dev", pw["dev"])
    device.connect()
    for i in range(100):
        device.publish("sonae/v1/072036/dev/level", str(i))  # each routed before its PUBACK
    back = ingestor(f"{group}-a")
    with_all = time.monotonic() + WAIT_S
    while len(staying.messages) + len(back.messages) < 100 and time.monotonic() < with_all:
        staying.wait_for(100 - len(back.messages), timeout=0.1)
    # one more, sent when all are in: what either has before it is all it will get of the 100
    device.publish("sonae/v1/072036/dev/level", "marker")
    ends = time.monotonic() + WAIT_S
    while not any(m.payload == b"marker" for p in (staying, back) for m in p.messages):
        assert time.monotonic() < ends, "the marker did not arrive"
        staying.wait_for(len(staying.messages) + 1, timeout=0.1)
    got = tuple(len([m for m in p.messages if m.payload != b"marker"]) for p in (staying, back))
    for p in (staying, device, back):
        p.close()
    return got[0], got[1]


def test_an_absent_shared_subscriber_keeps_its_share_until_it_returns(broker) -> None:  # type: ignore[no-untyped-def]
    staying, returned = _scenario(broker, "absent", unsubscribe=False)
    assert staying + returned == 100, "a message was lost"
    assert 30 <= returned <= 70, f"expected about half held for the absent session, got {returned}"


def test_unsubscribing_before_leaving_hands_the_whole_stream_to_the_others(broker) -> None:  # type: ignore[no-untyped-def]
    assert _scenario(broker, "retired", unsubscribe=True) == (100, 0)
