"""The deployment's Mosquitto configuration, run for real: who may connect, publish and read what.

Each configuration file that ships (bare metal and Compose) is started with its listeners moved to free
ports and its files to a temporary directory; users come from ``app.provisioning`` exactly as
``sonae devices add`` writes them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.provisioning import add_client, remove_client
from tests.deploy.mqtt_support import DEPLOY, NOT_AUTHORIZED, DeployedBroker, Probe, mosquitto_binary

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")

CONFIGS = {
    "bare-metal": DEPLOY / "mosquitto" / "mosquitto.conf",
    "compose": DEPLOY / "compose" / "mosquitto" / "mosquitto.conf",
}
KORIYAMA, IWAKI = "072036", "072044"
#: a message sent after the ones under test: when it has arrived, any earlier message would have too
MARKER = b'{"marker": true}'


def _self_signed(root: Path) -> tuple[Path, Path] | None:
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = root / "server.crt", root / "server.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class Deployment:
    def __init__(self, broker: DeployedBroker, passwords: dict[str, str], tls: tuple[Path, Path] | None) -> None:
        self.broker = broker
        self.passwords = passwords
        self.tls = tls
        self.probes: list[Probe] = []

    def probe(self, user: str | None, *, password: str | None = None, protocol: str = "5",
              tls: bool = False, **kw: object) -> Probe:
        port = self.broker.tls_port if tls else self.broker.port
        assert port is not None
        p = Probe(port, user, password if password is not None else self.passwords.get(user or "", None),
                  protocol=protocol, tls_ca=self.tls[0] if tls and self.tls else None, **kw)  # type: ignore[arg-type]
        self.probes.append(p)
        return p

    def connected(self, user: str, **kw: object) -> Probe:
        p = self.probe(user, **kw)  # type: ignore[arg-type]
        rc = p.connect()
        assert not rc.is_failure, f"{user} could not connect: {rc}\n{self.broker.logs()}"
        return p


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp(f"mosq-{request.param}")
    tls = _self_signed(root)
    broker = DeployedBroker(CONFIGS[request.param], root, tls=tls)
    files = {"passwd_file": broker.passwd, "acl_file": broker.acl}
    passwords: dict[str, str] = {}
    for name, kw in {
        "sonae-ingest": {"role": "ingest"},
        "sonae-alerts": {"role": "alerts"},
        "koriyama-signage": {"role": "viewer", "municipalities": [KORIYAMA]},
        "gauge-akutsu": {"municipalities": [KORIYAMA], "stations": ["akutsu-01"]},
        "gauge-abukuma": {"municipalities": [KORIYAMA], "stations": ["abukuma-01", "abukuma-02"]},
        "gauge-gone": {"municipalities": [IWAKI]},
    }.items():
        made = add_client(name, **files, **kw)  # type: ignore[arg-type]
        assert made.password
        passwords[name] = made.password
    broker.start()
    dep = Deployment(broker, passwords, tls)
    try:
        yield dep
    finally:
        for p in dep.probes:
            p.close()
        broker.stop()


def _ingest_listener(dep: Deployment, group: str = "sonae-ingest") -> Probe:
    ingest = dep.connected("sonae-ingest")
    codes = ingest.subscribe(f"$share/{group}/sonae/v1/#")
    assert not codes[0].is_failure, f"the ingest user may not take the shared subscription: {codes}"
    return ingest


def test_nobody_gets_in_without_valid_credentials(deployment: Deployment) -> None:
    assert deployment.probe(None).connect().is_failure, "anonymous clients must be refused"
    assert deployment.probe("gauge-akutsu", password="wrong").connect().is_failure
    assert deployment.probe("no-such-device", password="x").connect().is_failure
    # MQTT 3.1.1 clients too
    assert deployment.probe(None, protocol="3.1.1").connect().is_failure


def test_device_publishes_under_its_own_topics_only(deployment: Deployment) -> None:
    ingest = _ingest_listener(deployment)
    device = deployment.connected("gauge-akutsu")
    payload = json.dumps({"ts": "2026-11-29T01:20:00Z", "value": 3.42, "seq": 1})

    allowed = ["sonae/v1/072036/akutsu-01/level", "sonae/v1/072036/akutsu-01/telemetry",
               "sonae/v1/072036/akutsu-01/senml"]
    denied = [
        "sonae/v1/072036/abukuma-01/level",    # another device's station
        "sonae/v1/072044/akutsu-01/level",     # its station id under another municipality
        "sonae/v1/072036/akutsu-01/level/x",   # deeper than the contract
        "sonae/v1/072036/gauge-akutsu/level",  # a station named like the device, which it is not given
        "sonae/alerts/072036/fake-evacuation-order",  # spoofing an alert
        "sonae/v1",
    ]
    for topic in allowed:
        assert not device.publish(topic, payload).is_failure, topic
    for topic in denied:
        rc = device.publish(topic, payload)
        assert rc.is_failure and rc.value == NOT_AUTHORIZED, f"{topic}: PUBACK {rc}, expected Not authorized"
    # a marker after the denied ones: the broker routes one client's messages in order, so once the
    # marker is in, a denied message that got through would be in too
    assert not device.publish(allowed[0], MARKER).is_failure
    got = ingest.wait_for_payload(MARKER)
    assert sorted(m.topic for m in got if m.payload != MARKER) == sorted(allowed)
    assert [m.payload for m in got].index(MARKER) == len(got) - 1


def test_gateway_with_several_stations(deployment: Deployment) -> None:
    ingest = _ingest_listener(deployment, group="gw")
    gateway = deployment.connected("gauge-abukuma")
    for topic in ("sonae/v1/072036/abukuma-01/level", "sonae/v1/072036/abukuma-02/rain"):
        assert not gateway.publish(topic, b"{}").is_failure, topic
    assert gateway.publish("sonae/v1/072036/abukuma-03/level", b"{}").value == NOT_AUTHORIZED
    assert not gateway.publish("sonae/v1/072036/abukuma-01/level", MARKER).is_failure  # after the refused one
    got = ingest.wait_for_payload(MARKER)
    assert sorted(m.topic for m in got if m.payload != MARKER) == ["sonae/v1/072036/abukuma-01/level",
                                                                   "sonae/v1/072036/abukuma-02/rain"]


def test_mqtt311_device_cannot_inject_either(deployment: Deployment) -> None:
    """MQTT 3.1.1 has no negative PUBACK: the broker acknowledges and drops; nothing must arrive."""
    ingest = _ingest_listener(deployment, group="v311")
    device = deployment.connected("gauge-akutsu", protocol="3.1.1")
    device.publish("sonae/v1/072036/abukuma-01/level", b'{"value": 99}')
    device.publish("sonae/v1/072036/akutsu-01/level", b'{"value": 1}')
    device.publish("sonae/v1/072036/akutsu-01/level", MARKER)  # in order after the two above
    got = ingest.wait_for_payload(MARKER)
    assert [(m.topic, m.payload) for m in got] == [("sonae/v1/072036/akutsu-01/level", b'{"value": 1}'),
                                                   ("sonae/v1/072036/akutsu-01/level", MARKER)]


def test_devices_read_nothing(deployment: Deployment) -> None:
    alerts = deployment.connected("sonae-alerts")
    assert not alerts.publish(f"sonae/alerts/{KORIYAMA}/a-devices", b'{"level": 4}', retain=True).is_failure
    device = deployment.connected("gauge-akutsu")
    for topic in ("sonae/alerts/#", "sonae/v1/#", "#", "$share/sonae-ingest/sonae/v1/#"):
        device.subscribe(topic)  # may be granted or refused; either way nothing may be delivered
    other = deployment.connected("gauge-abukuma")
    other.publish("sonae/v1/072036/abukuma-01/level", b"{}")  # routed (or not) before its PUBACK came back
    # a round trip of the device's own after both: the broker answers it after anything it had queued
    # for the device (the retained alert at SUBACK, the other gauge's reading), which would come first
    assert not device.publish("sonae/v1/072036/akutsu-01/level", b"{}").is_failure
    assert device.topics() == [], f"a device received {device.topics()}"


def test_ingest_reads_devices_but_writes_nothing(deployment: Deployment) -> None:
    ingest = deployment.connected("sonae-ingest")
    assert ingest.publish("sonae/v1/072036/akutsu-01/level", b"{}").value == NOT_AUTHORIZED
    assert ingest.publish("sonae/alerts/072036/x", b"{}").value == NOT_AUTHORIZED


def test_alerts_reach_only_the_municipalities_a_viewer_may_see(deployment: Deployment) -> None:
    alerts = deployment.connected("sonae-alerts")
    for muni, alert in ((KORIYAMA, "a-koriyama"), (IWAKI, "a-iwaki")):
        rc = alerts.publish(f"sonae/alerts/{muni}/{alert}", json.dumps({"id": alert}), retain=True)
        assert not rc.is_failure, rc
    viewer = deployment.connected("koriyama-signage")
    viewer.subscribe("sonae/alerts/#")  # retained alerts are queued for it at the SUBACK
    marker = f"sonae/alerts/{KORIYAMA}/marker-{uuid.uuid4().hex[:8]}"
    assert not alerts.publish(marker, MARKER).is_failure  # after the SUBACK: comes after the retained ones
    topics = [m.topic for m in viewer.wait_for_payload(MARKER) if m.payload != MARKER]
    assert f"sonae/alerts/{KORIYAMA}/a-koriyama" in topics
    assert not any(t.startswith(f"sonae/alerts/{IWAKI}/") for t in topics), topics
    assert all(t.startswith(f"sonae/alerts/{KORIYAMA}/") for t in topics), topics
    # a viewer cannot issue or clear alerts
    assert viewer.publish(f"sonae/alerts/{KORIYAMA}/a-koriyama", b"", retain=True).value == NOT_AUTHORIZED


def test_broker_lets_many_messages_wait_for_acks(deployment: Deployment) -> None:
    """Ack-after-commit needs more than mosquitto's default 20 unacknowledged messages per client."""
    ingest = deployment.probe("sonae-ingest", manual_ack=True)
    assert not ingest.connect().is_failure
    ingest.subscribe("$share/window/sonae/v1/072036/akutsu-01/rain")
    device = deployment.connected("gauge-akutsu")
    for i in range(200):
        device.client.publish("sonae/v1/072036/akutsu-01/rain", str(i), qos=1)
    got = ingest.wait_for(200)
    assert len(got) == 200, f"only {len(got)} of 200 messages delivered without acks: the in-flight cap is on"


def test_devices_over_tls(deployment: Deployment) -> None:
    if deployment.tls is None:
        pytest.skip("openssl is not installed: no certificate for the TLS listener")
    device = deployment.probe("gauge-akutsu", tls=True)
    assert not device.connect().is_failure
    assert not device.publish("sonae/v1/072036/akutsu-01/level", b"{}").is_failure
    assert device.publish("sonae/v1/072036/abukuma-01/level", b"{}").value == NOT_AUTHORIZED


def test_removed_device_is_locked_out_after_reload(deployment: Deployment) -> None:
    b = deployment.broker
    assert not deployment.probe("gauge-gone").connect().is_failure
    assert remove_client("gauge-gone", passwd_file=b.passwd, acl_file=b.acl)
    b.reload()
    assert deployment.probe("gauge-gone").connect().is_failure
    # and a device added while the broker runs gets in after a reload
    made = add_client("gauge-new", municipalities=[IWAKI], passwd_file=b.passwd, acl_file=b.acl)
    b.reload()
    deployment.passwords["gauge-new"] = made.password or ""
    newcomer = deployment.connected("gauge-new")
    assert not newcomer.publish(f"sonae/v1/{IWAKI}/gauge-new/level", b"{}").is_failure
    assert newcomer.publish(f"sonae/v1/{KORIYAMA}/gauge-new/level", b"{}").value == NOT_AUTHORIZED
