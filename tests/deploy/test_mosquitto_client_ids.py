"""Client ids bound to accounts, on a real Mosquitto run with the deployment's configuration: a device
that connects with the ingestor's client id cannot take the ingestor's session over and discard its
queued readings (the trial of issue #16: 5 of 5 queued readings were lost)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.provisioning import add_client
from sonae.mqtt import bound_client_id
from tests.deploy.mqtt_support import DEPLOY, DeployedBroker, Probe, mosquitto_binary
from tests.deploy.test_mosquitto_acl import CONFIGS, _self_signed

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
KORIYAMA = "072036"
QUEUED = 5


class Broker:
    def __init__(self, broker: DeployedBroker, passwords: dict[str, str], ca: Path) -> None:
        self.broker, self.passwords, self.ca = broker, passwords, ca
        self.probes: list[Probe] = []

    def probe(self, user: str, client_id: str, *, device_listener: bool) -> Probe:
        port = self.broker.tls_port if device_listener else self.broker.port
        assert port is not None
        p = Probe(port, user, self.passwords[user], client_id=client_id, tls_ca=self.ca if device_listener else None)
        self.probes.append(p)
        return p


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def broker(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    root = tmp_path_factory.mktemp(f"ids-{request.param}")
    tls = _self_signed(root)
    if tls is None:
        pytest.skip("openssl is not installed: no certificate for the devices' TLS listener")
    b = DeployedBroker(CONFIGS[request.param], root, tls=tls)
    passwords = {}
    for name, kw in {"sonae-ingest": {"role": "ingest"},
                     "gauge-1": {"municipalities": [KORIYAMA], "stations": ["st-1"]}}.items():
        made = add_client(name, passwd_file=b.passwd, acl_file=b.acl, **kw)  # type: ignore[arg-type]
        passwords[name] = made.password or ""
    b.start()
    out = Broker(b, passwords, tls[0])
    try:
        yield out
    finally:
        for p in out.probes:
            p.close()
        b.stop()


def _queued_after_takeover_attempt(b: Broker, ingest_id: str, attacker_id: str, *, device_listener: bool,
                                   topic: str) -> int:
    """The ingestor leaves a persistent session with a subscription; the device publishes QUEUED
    readings, then connects (clean start) with ``attacker_id``; how many readings the ingestor finds
    queued when it comes back."""
    ingest = b.probe("sonae-ingest", ingest_id, device_listener=False)
    assert not ingest.connect(clean_start=True, session_expiry=3600).is_failure
    assert not ingest.subscribe(f"sonae/v1/{KORIYAMA}/st-1/{topic}")[0].is_failure
    ingest.close()
    device = b.probe("gauge-1", "gauge-1", device_listener=True)
    assert not device.connect().is_failure
    for i in range(QUEUED):
        assert not device.publish(f"sonae/v1/{KORIYAMA}/st-1/{topic}", f'{{"seq": {i}}}'.encode()).is_failure
    device.close()
    attacker = b.probe("gauge-1", attacker_id, device_listener=device_listener)
    assert not attacker.connect(clean_start=True).is_failure, b.broker.logs()
    attacker.close()
    back = b.probe("sonae-ingest", ingest_id, device_listener=False)
    assert not back.connect(clean_start=False, session_expiry=3600).is_failure
    if not back.session_present:  # the broker's own word (CONNACK): the session, and its queue, are gone
        back.close()
        return 0
    got = back.wait_for(QUEUED)  # returns as soon as all are in; waits for nothing that cannot come
    back.close()
    return len(got)


def test_device_with_the_ingestors_client_id_cannot_take_its_session(broker: Broker) -> None:
    ingest_id = bound_client_id("ingest", f"mqtt://sonae-ingest:{broker.passwords['sonae-ingest']}@x:1883", "1")
    # the device-facing listener replaces the client id with the username: nothing is lost
    assert _queued_after_takeover_attempt(broker, ingest_id, ingest_id, device_listener=True, topic="level") == QUEUED


def test_old_predictable_client_id_shows_the_takeover_the_binding_prevents(broker: Broker) -> None:
    """Control: on the internal listener (services only, never published) a client that knows the
    ingestor's id does wipe its session — which is why the services' ids are bound to their passwords."""
    import socket

    predictable = f"sonae-ingest-{socket.gethostname()}-1"
    assert _queued_after_takeover_attempt(broker, predictable, predictable, device_listener=False,
                                          topic="rain") == 0


def test_service_client_ids_are_stable_and_bound_to_the_password() -> None:
    a = bound_client_id("ingest", "mqtt://sonae-ingest:secret-one@broker:1883", "1")
    assert a == bound_client_id("ingest", "mqtt://sonae-ingest:secret-one@broker:1883", "1")  # survives restarts
    assert a != bound_client_id("ingest", "mqtt://sonae-ingest:secret-two@broker:1883", "1")
    assert a != bound_client_id("ingest", "mqtt://sonae-ingest:secret-one@broker:1883", "2")
    assert a.startswith("sonae-ingest-1-") and len(a) == len("sonae-ingest-1-") + 24


def test_every_deployed_device_listener_binds_client_ids_to_usernames() -> None:
    for config in CONFIGS.values():
        blocks = config.read_text().split("\nlistener ")[1:]
        device_listeners = [b for b in blocks if "certfile" in b]
        assert device_listeners, config
        for block in device_listeners:
            assert "\nuse_username_as_clientid true" in block, f"{config}: listener {block.split()[0]}"
    assert (DEPLOY / "mosquitto" / "mosquitto.conf").exists()
