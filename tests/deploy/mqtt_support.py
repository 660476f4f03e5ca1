"""A real Mosquitto run with one of the deployment's configuration files, and paho probes to try what a
client may and may not do."""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from app.provisioning import adapt_mosquitto_config
from sonae.embedded import free_port, port_open

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NOT_AUTHORIZED = 0x87
#: how long a probe waits for an answer or a message; waits end as soon as it comes (the machine may be busy)
WAIT_S = 60.0
#: what mosquitto logs when a SIGHUP makes it re-read its configuration, password and ACL files
RELOADING = "Reloading config."


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


class DeployedBroker:
    """``mosquitto -c <deploy config adapted to a free port and a temporary directory>``."""

    def __init__(self, config: Path, root: Path, *, tls: tuple[Path, Path] | None = None) -> None:
        self.root = root
        self.passwd = root / "passwd"
        self.acl = root / "acl"
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.log = root / "mosquitto.log"
        ports = [self.port] + ([self.tls_port] if self.tls_port else [])
        self.conf = root / "mosquitto.conf"
        self.conf.write_text(adapt_mosquitto_config(
            config.read_text(), ports=ports, passwd_file=self.passwd, acl_file=self.acl,
            persistence_dir=root / "data", certfile=tls[0] if tls else None, keyfile=tls[1] if tls else None,
            log_file=self.log))
        (root / "data").mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = mosquitto_binary()
        assert binary, "mosquitto is not installed"
        for f in (self.passwd, self.acl):
            if not f.exists():
                f.write_text("")
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.root / "stderr.log", "ab"), start_new_session=True)
        deadline = time.monotonic() + WAIT_S
        while not port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mosquitto did not start:\n{self.logs()}")
            time.sleep(0.05)

    def reload(self) -> None:
        """SIGHUP, then wait until mosquitto logs that it re-reads its configuration.

        It reloads on its one thread before it handles the next packet, so a client that connects after
        the log line is judged by the new password and ACL files (no guess at how long a reload takes).
        """
        assert self.proc is not None
        before = self.log_text().count(RELOADING)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for_log(RELOADING, more_than=before)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, text: str, *, more_than: int = 0) -> None:
        """Wait until ``text`` occurs in the broker's log more than ``more_than`` times."""
        deadline = time.monotonic() + WAIT_S
        while self.log_text().count(text) <= more_than:
            assert self.proc is not None and self.proc.poll() is None, f"mosquitto exited:\n{self.logs()}"
            assert time.monotonic() < deadline, f"mosquitto never logged {text!r}:\n{self.logs()}"
            time.sleep(0.05)  # polling the log under a deadline

    def logs(self) -> str:
        text = ""
        for f in (self.log, self.root / "stderr.log"):
            if f.exists():
                text += f.read_text(errors="replace")[-4000:]
        return text

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class Probe:
    """A paho client with synchronous helpers: connect, publish (returns the PUBACK reason code),
    subscribe (returns the SUBACK reason codes) and the messages received."""

    def __init__(self, port: int, username: str | None, password: str | None, *, protocol: str = "5",
                 client_id: str | None = None, manual_ack: bool = False, tls_ca: Path | None = None) -> None:
        self.port = port
        self.protocol = protocol
        version = paho.MQTTv5 if protocol == "5" else paho.MQTTv311
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
                                  protocol=version, manual_ack=manual_ack)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls_ca is not None:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.messages: list[paho.MQTTMessage] = []
        self.connack: Any = None
        self._connected = threading.Event()
        self._pubacks: dict[int, Any] = {}
        self._subacks: dict[int, list[Any]] = {}
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self._unsubacks: set[int] = set()
        self.session_present: bool | None = None

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connack = reason_code
        self.session_present = bool(flags.session_present)
        self._connected.set()

    def _on_message(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        with self._cond:
            self._pubacks[mid] = reason_code
            self._cond.notify_all()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._cond:
            self._subacks[mid] = list(reason_codes)
            self._cond.notify_all()

    def _on_unsubscribe(self, client: Any, userdata: Any, mid: int, reason_codes: Any, properties: Any) -> None:
        with self._cond:
            self._unsubacks.add(mid)
            self._cond.notify_all()

    def connect(self, *, clean_start: bool = True, session_expiry: int = 0) -> Any:
        """Connect and return the CONNACK reason code (a failure when the broker refused us)."""
        kwargs: dict[str, Any] = {}
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
            kwargs = {"clean_start": clean_start, "properties": props}
        self.client.connect("127.0.0.1", self.port, keepalive=30, **kwargs)
        self.client.loop_start()
        if not self._connected.wait(WAIT_S):
            raise AssertionError(f"no CONNACK within {WAIT_S} s")
        return self.connack

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> Any:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return None
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._pubacks, WAIT_S):
                raise AssertionError(f"no PUBACK for {topic} within {WAIT_S} s")
            return self._pubacks.pop(info.mid)

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        _, mid = self.client.subscribe(topic, qos=qos)
        assert mid is not None, f"subscribe to {topic} was not sent"
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, WAIT_S):
                raise AssertionError(f"no SUBACK for {topic} within {WAIT_S} s")
            return self._subacks.pop(mid)

    def unsubscribe(self, topic: str) -> None:
        """Unsubscribe and wait for the UNSUBACK: from then on the broker sends this client nothing new."""
        _, mid = self.client.unsubscribe(topic)
        assert mid is not None, f"unsubscribe from {topic} was not sent"
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._unsubacks, WAIT_S):
                raise AssertionError(f"no UNSUBACK for {topic} within {WAIT_S} s")

    def wait_for(self, count: int, timeout: float = WAIT_S) -> list[paho.MQTTMessage]:
        """The messages once there are ``count`` (or all there are when ``timeout`` runs out)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def wait_for_payload(self, payload: bytes, timeout: float = WAIT_S) -> list[paho.MQTTMessage]:
        """The messages up to and including the first with ``payload`` (a marker), which must come."""
        with self._cond:
            if not self._cond.wait_for(lambda: any(m.payload == payload for m in self.messages), timeout):
                raise AssertionError(f"the marker {payload!r} did not arrive within {timeout} s")
            return list(self.messages)

    def topics(self) -> list[str]:
        with self._cond:
            return [m.topic for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
