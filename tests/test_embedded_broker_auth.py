"""The embedded broker as ``sonae run`` configures it: only Sonae's services and the devices of
``sonae devices add`` get in, each kept to its topics.

Found by a break-it pass (breakit7 F1): the embedded broker had ``allow_anonymous true``, so an anonymous
``mosquitto_pub`` (or a wrong password) raised a real level 4 for all of 郡山市, while the device
credentials of the README's step 8 were never used. Each test here starts real brokers (Mosquitto, and
the amqtt fallback that ``./manage run`` uses on a machine without Mosquitto).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alerting.worker import alert_topic_root
from app.provisioning import EMBEDDED_SERVICE_USER, embedded_broker_auth
from app.runtime import BackingServices
from sonae.config import load_settings
from sonae.embedded import EmbeddedBroker, free_port, port_open
from tests.deploy.mqtt_support import NOT_AUTHORIZED, WAIT_S, Probe, mosquitto_binary

ROOT = Path(__file__).resolve().parents[1]
KORIYAMA = "072036"
OWN = f"sonae/v1/{KORIYAMA}/abukuma-motomiya/level"
MARKER = b'{"marker": true}'
needs_mosquitto = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def _settings(state: Path, port: int, database_url: str):  # type: ignore[no-untyped-def]
    return load_settings(environ={"SONAE_STATE_DIR": str(state), "SONAE_EMBEDDED_MQTT_PORT": str(port),
                                  "SONAE_DATABASE_URL": database_url})


def _service_credentials(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return unquote(parts.username or ""), unquote(parts.password or "")


class Running:
    def __init__(self, state: Path, port: int, url: str) -> None:
        self.state, self.port, self.url = state, port, url
        self.probes: list[Probe] = []

    def probe(self, user: str | None, password: str | None = None, *, protocol: str = "5") -> Probe:
        p = Probe(self.port, user, password, protocol=protocol)
        self.probes.append(p)
        return p

    def service(self) -> Probe:
        """A client as Sonae's own processes connect: the services' account on the services' listener."""
        p = Probe(urlsplit(self.url).port or self.port, *_service_credentials(self.url))
        self.probes.append(p)
        assert not p.connect().is_failure
        return p


@pytest.fixture
def running(tmp_path: Path, database_url: str) -> Iterator[Running]:
    """The backing services exactly as ``sonae run`` starts them (the database is the test's)."""
    state, port = tmp_path / "state", free_port()
    services = BackingServices(_settings(state, port, database_url))
    effective = services.start(need_broker=True)
    r = Running(state, port, effective["mqtt.url"])
    try:
        yield r
    finally:
        for p in r.probes:
            p.close()
        services.stop()


def _devices_add(state: Path, *args: str, database_url: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
    env["SONAE_STATE_DIR"] = str(state)
    if database_url:
        env["SONAE_DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, "-m", "app.cli", "devices", "add", *args, "--iterations", "1000",
                           "--dir", str(state / "mosquitto")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


@needs_mosquitto
def test_anonymous_and_wrong_passwords_are_refused(running: Running) -> None:
    user, password = _service_credentials(running.url)
    assert user == EMBEDDED_SERVICE_USER and len(password) >= 32
    assert running.probe(None).connect().is_failure, "anonymous clients must be refused"
    assert running.probe(None, protocol="3.1.1").connect().is_failure
    assert running.probe(user, "wrong").connect().is_failure
    assert running.probe("abukuma-motomiya", "anything").connect().is_failure
    assert not running.probe(user, password).connect().is_failure
    conf = (running.state / "mqtt" / "mosquitto.conf").read_text()
    assert "allow_anonymous false" in conf and "listener " in conf and " 127.0.0.1" in conf


@needs_mosquitto
def test_a_device_added_while_it_runs_gets_in_and_publishes_only_its_own_topics(
        running: Running, database_url: str) -> None:
    ingest = running.service()
    assert ingest.subscribe("sonae/v1/#")[0].value < 0x80
    made = _devices_add(running.state, "abukuma-motomiya", "--municipality", KORIYAMA, "--format", "json",
                        database_url=database_url)
    assert made.returncode == 0, made.stderr
    assert "told to read the files again" in made.stderr
    password = json.loads(made.stdout)["password"]
    # the command sent SIGHUP; mosquitto handles it before its next packet, so one connection after the
    # log line is judged by the new files
    log = running.state / "mqtt" / "broker.log"
    deadline = time.monotonic() + WAIT_S
    while "Reloading config." not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the broker was not reloaded"
        time.sleep(0.05)
    device = running.probe("abukuma-motomiya", password)
    assert not device.connect().is_failure
    assert running.probe("abukuma-motomiya", "wrong").connect().is_failure
    for topic in (f"sonae/v1/{KORIYAMA}/other-gauge/level", "sonae/v1/072010/abukuma-motomiya/level",
                  f"sonae/alerts/{KORIYAMA}/forged", "sonae/v1"):
        assert device.publish(topic, b'{"value": 6.6}').value == NOT_AUTHORIZED, topic
    assert not device.publish(OWN, b'{"value": 1.0}').is_failure
    assert not device.publish(OWN, MARKER).is_failure
    got = ingest.wait_for_payload(MARKER)
    assert [(m.topic, m.payload) for m in got] == [(OWN, b'{"value": 1.0}'), (OWN, MARKER)]


@needs_mosquitto
def test_an_earlier_versions_state_dir_is_upgraded_and_its_anonymous_broker_replaced(
        tmp_path: Path, database_url: str) -> None:
    """A state directory of before this fix: no password files, an anonymous broker left running."""
    state, port = tmp_path / "state", free_port()
    old = EmbeddedBroker(state, port=port, anonymous=True)
    old.start()
    assert not Probe(port, None, None).connect().is_failure  # what the old broker let in
    services = BackingServices(_settings(state, port, database_url))
    try:
        effective = services.start(need_broker=True)
        assert old.proc is not None and old.proc.wait(WAIT_S) is not None, "the anonymous broker still runs"
        anonymous = Probe(port, None, None)
        assert anonymous.connect().is_failure
        service = Probe(port, *_service_credentials(effective["mqtt.url"]))
        assert not service.connect().is_failure
        service.close()
    finally:
        services.stop()
        old.stop()
    # a second start keeps the account's password (persistent sessions are bound to it)
    again = BackingServices(_settings(state, port, database_url))
    try:
        # (the services' listener may take another port at each start: sessions are bound to the client id)
        assert _service_credentials(again.start(need_broker=True)["mqtt.url"]) == \
            _service_credentials(effective["mqtt.url"])
    finally:
        again.stop()


def test_the_amqtt_fallback_checks_the_same_files(tmp_path: Path) -> None:
    """``./manage run`` on a machine without Mosquitto: the amqtt broker, same files, same refusals."""
    from app.provisioning import add_client

    state = tmp_path / "state"
    auth = embedded_broker_auth(state, prefix="sonae/v1", alerts_prefix=alert_topic_root("sonae/v1"))
    add_client("abukuma-motomiya", municipalities=[KORIYAMA], password="device-password-1",
               passwd_file=auth.passwd_file, acl_file=auth.acl_file, iterations=1000)
    broker = EmbeddedBroker(state, port=free_port(), prefer="amqtt", auth=auth)
    broker.start()
    probes: list[Probe] = []

    def probe(user: str | None, password: str | None) -> Probe:
        probes.append(Probe(broker.port, user, password, protocol="3.1.1"))
        return probes[-1]

    try:
        assert broker.kind == "amqtt"
        assert probe(None, None).connect().is_failure
        assert probe(EMBEDDED_SERVICE_USER, "wrong").connect().is_failure
        service = probe(auth.username, auth.password)
        assert not service.connect().is_failure
        service.subscribe("sonae/v1/#")
        device = probe("abukuma-motomiya", "device-password-1")
        assert not device.connect().is_failure
        device.publish(f"sonae/v1/{KORIYAMA}/other-gauge/level", b'{"value": 6.6}')  # 3.1.1: dropped silently
        device.publish(OWN, b'{"value": 1.0}')
        device.publish(OWN, MARKER)
        got = service.wait_for_payload(MARKER)
        assert [(m.topic, m.payload) for m in got] == [(OWN, b'{"value": 1.0}'), (OWN, MARKER)]
    finally:
        for p in probes:
            p.close()
        broker.stop()


def test_an_anonymous_broker_is_for_tests_on_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="auth= .* or anonymous=True"):
        EmbeddedBroker(tmp_path, port=free_port())
    with pytest.raises(ValueError, match="127.0.0.1 only"):
        EmbeddedBroker(tmp_path, port=free_port(), anonymous=True, host="0.0.0.0")


def test_listen_address_setting(tmp_path: Path) -> None:
    from sonae.config import ConfigError
    from sonae.embedded import BrokerAuth, mosquitto_config

    auth = BrokerAuth(tmp_path / "passwd", tmp_path / "acl", "u", "p")
    everywhere = mosquitto_config(port=1234, persistence_dir=None, run_as_root=False, auth=auth, host="0.0.0.0")
    assert "listener 1234\n" in everywhere and "allow_anonymous false" in everywhere
    assert "listener 1234 127.0.0.1\n" in mosquitto_config(port=1234, persistence_dir=None, run_as_root=False,
                                                            auth=auth)
    assert load_settings(environ={"SONAE_EMBEDDED_MQTT_HOST": "0.0.0.0"})["embedded.mqtt_host"] == "0.0.0.0"
    with pytest.raises(ConfigError, match="SONAE_EMBEDDED_MQTT_HOST.*expected an IPv4 address"):
        load_settings(environ={"SONAE_EMBEDDED_MQTT_HOST": "127.0.0.1\nallow_anonymous true"})
    with pytest.raises(ConfigError, match="SONAE_EMBEDDED_MQTT_HOST.*expected an IPv4 address"):
        load_settings(environ={"SONAE_EMBEDDED_MQTT_HOST": "broker.example"})


_LEVEL = st.sampled_from(["sonae", "v1", "072036", "072010", "abukuma-motomiya", "other", "level", "+", "#",
                          "$SYS", "", "alerts"])


@given(levels=st.lists(_LEVEL, min_size=1, max_size=6))
def test_the_amqtt_acl_check_grants_a_device_exactly_its_own_topics(levels: list[str]) -> None:
    """What the amqtt fallback lets a device do (sonae.mosquitto_files.allowed on the ACL devices add writes):
    publish a topic or subscribe a filter only when every topic it can name is under its own grant."""
    from app.provisioning import Client, grants_for, mosquitto_acl_lines
    from sonae.mosquitto_files import allowed, read_acl, topic_matches

    client = Client("abukuma-motomiya", "device", grants_for("device", "abukuma-motomiya",
                                                             municipalities=[KORIYAMA]))
    with tempfile.TemporaryDirectory() as where:
        path = Path(where) / "acl"
        path.write_text("\n".join(mosquitto_acl_lines(client)) + "\n", encoding="utf-8")
        acl = read_acl(path)
    topic = "/".join(levels)
    literal = "+" not in levels and "#" not in levels
    own = f"sonae/v1/{KORIYAMA}/abukuma-motomiya/+"
    assert allowed(acl, "abukuma-motomiya", topic, "write") == (literal and topic_matches(topic, own))
    assert not allowed(acl, "abukuma-motomiya", topic, "read")
    assert not allowed(acl, None, topic, "write") and not allowed(acl, "someone-else", topic, "write")


@needs_mosquitto
def test_a_second_command_on_the_same_state_dir_uses_the_running_broker_whatever_port_it_is_told(
        running: Running, database_url: str) -> None:
    """Found by breakit7 (2026-12-01): with the service started as ``SONAE_EMBEDDED_MQTT_PORT=18897 sonae run
    --state-dir S``, ``sonae simulate --state-dir S --replay jiseiji`` (without the variable) started a second
    Mosquitto on 18830 in the same state directory: it rewrote ``mosquitto.conf`` and ``broker.json``, published
    the whole replay to a broker no ingestor read (the summary said "published 217 messages"), and deleted
    ``broker.json`` when it stopped, so ``sonae status`` said the service's broker was not running and ``sonae
    devices add`` could no longer tell it to reload."""
    record = json.loads((running.state / "mqtt" / "broker.json").read_text())
    other_port = free_port()
    second = BackingServices(_settings(running.state, other_port, database_url))
    try:
        url = second.start(need_broker=True)["mqtt.url"]
        assert url == running.url  # the service's broker, its services' listener
        assert not port_open("127.0.0.1", other_port), "a second broker was started in the same state directory"
        assert f"listener {running.port} " in (running.state / "mqtt" / "mosquitto.conf").read_text()
        # what the second command publishes reaches the service's subscribers
        ingest = running.service()
        assert ingest.subscribe("sonae/v1/#")[0].value < 0x80
        sender = running.service()
        assert not sender.publish(OWN, MARKER).is_failure
        assert [m.payload for m in ingest.wait_for_payload(MARKER)] == [MARKER]
    finally:
        second.stop()
    assert json.loads((running.state / "mqtt" / "broker.json").read_text()) == record
    assert not running.probe(*_service_credentials(running.url)).connect().is_failure


@needs_mosquitto
def test_a_device_cannot_disconnect_another_by_connecting_with_its_client_id(
        running: Running, database_url: str) -> None:
    """Found by breakit7 (2026-12-01): on the embedded broker device ``bkdev1`` (郡山市) connected with client id
    ``bkdev2`` and Mosquitto dropped いわき市's device ``bkdev2`` (session taken over); each reconnect then
    dropped the other. The devices' listener binds a client id to its username (as ``deploy/mosquitto``
    does); Sonae's own processes, one account with a client id each, use their own loopback listener."""
    passwords = {}
    for name, code in (("bkdev1", KORIYAMA), ("bkdev2", "072044")):
        made = _devices_add(running.state, name, "--municipality", code, "--format", "json", database_url=database_url)
        assert made.returncode == 0, made.stderr
        passwords[name] = json.loads(made.stdout)["password"]
    log = running.state / "mqtt" / "broker.log"
    deadline = time.monotonic() + WAIT_S
    while log.read_text(errors="replace").count("Reloading config.") < 2:
        assert time.monotonic() < deadline, "the broker was not reloaded"
        time.sleep(0.05)
    victim = Probe(running.port, "bkdev2", passwords["bkdev2"], client_id="bkdev2")
    running.probes.append(victim)
    assert not victim.connect().is_failure
    dropped = threading.Event()
    victim.client.on_disconnect = lambda *args: dropped.set()
    attacker = Probe(running.port, "bkdev1", passwords["bkdev1"], client_id="bkdev2")
    running.probes.append(attacker)
    assert not attacker.connect().is_failure
    # the victim's connection is still the one the broker serves: its publish is answered on it
    own = "sonae/v1/072044/bkdev2/level"
    assert not victim.publish(own, b'{"value": 1.0}').is_failure
    assert not dropped.is_set(), "the broker dropped the device whose client id another device used"
    # two of Sonae's own clients, one account, one client id each, still share the services' listener
    assert urlsplit(running.url).port != running.port
    first, second = running.service(), running.service()
    assert first.client.is_connected() and second.client.is_connected()
