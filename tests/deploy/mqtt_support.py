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

from sonae.embedded import free_port, port_open
from sonae.provisioning import adapt_mosquitto_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
NOT_AUTHORIZED = 0x87


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
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mosquitto did not start:\n{self.logs()}")
            time.sleep(0.05)

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)

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

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connack = reason_code
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

    def connect(self, *, clean_start: bool = True, session_expiry: int = 0) -> Any:
        """Connect and return the CONNACK reason code (a failure when the broker refused us)."""
        kwargs: dict[str, Any] = {}
        if self.protocol == "5":
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
            kwargs = {"clean_start": clean_start, "properties": props}
        self.client.connect("127.0.0.1", self.port, keepalive=30, **kwargs)
        self.client.loop_start()
        if not self._connected.wait(10):
            raise AssertionError("no CONNACK within 10 s")
        return self.connack

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> Any:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if qos == 0:
            return None
        with self._cond:
            if not self._cond.wait_for(lambda: info.mid in self._pubacks, 10):
                raise AssertionError(f"no PUBACK for {topic} within 10 s")
            return self._pubacks.pop(info.mid)

    def subscribe(self, topic: str, qos: int = 1) -> list[Any]:
        _, mid = self.client.subscribe(topic, qos=qos)
        assert mid is not None, f"subscribe to {topic} was not sent"
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._subacks, 10):
                raise AssertionError(f"no SUBACK for {topic} within 10 s")
            return self._subacks.pop(mid)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[paho.MQTTMessage]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.messages) >= count, timeout)
            return list(self.messages)

    def topics(self) -> list[str]:
        with self._cond:
            return [m.topic for m in self.messages]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
