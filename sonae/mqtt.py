"""paho-mqtt 2.x wrapped for asyncio: an async context manager, an async iterator of messages with
manual acknowledgement, and publishing with a bounded window.

paho runs on the event loop's own thread (its socket is registered with ``add_reader``/``add_writer``,
as in paho's ``loop_asyncio`` example), so no locks are needed and nothing blocks the loop except the
TCP connect itself.

Backpressure, not unbounded queues:

* receiving: with MQTT 5 the client announces ``Receive Maximum`` = ``max_inflight``, so a compliant
  broker never has more unacknowledged QoS 1 messages out to us. The client does not rely on it
  (MQTT 3.1.1 has no such property, and Mosquitto 2.0.11 overshoots it after acks): while
  ``max_inflight`` messages are unacknowledged it stops reading its socket, so TCP pushes back, and
  keeps the connection alive with its own PINGREQs meanwhile, so a consumer may hold its messages for
  as long as it needs (a database outage) without the keep-alive dropping the connection.
* redeliveries never double the inbox: a message is held (counted in :attr:`MqttClient.unacked`)
  from receipt to :meth:`MqttClient.ack`; when the broker sends a held packet id again after a
  reconnect (DUP), the copy is dropped and the held one is acknowledged on the resumed session.
* publishing: :meth:`MqttClient.publish` waits while ``max_outstanding`` QoS 1 publishes await PUBACK;
  one made while the broker is away is held (paho's queue, inside that window) and sent after the
  reconnect, so a broker outage slows a publisher down and never ends it.

Acknowledgements are tied to a *session*, not a connection: a persistent session resumed after a
reconnect (CONNACK session present) keeps the packet ids of its unacknowledged messages, so those
are acknowledged normally. When the session is lost, acks of its messages are not sent (the broker
has forgotten them; storage is idempotent anyway).

Connecting retries from the first attempt (:mod:`sonae.retry`): a broker that is down at start-up is
waited for like one that goes away later, and every failed attempt is counted in
``sonae_connect_failures_total{target="mqtt"}``. Reconnecting never unsubscribes a plain
subscription: a persistent session keeps its subscriptions and queue in the broker, and only a lost
session is subscribed anew.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from prometheus_client import Counter

from sonae.retry import Backoff, connect_with_retry, count_failure

log = logging.getLogger("sonae.mqtt")


PUBLISHES_HELD = Counter(
    "sonae_mqtt_publishes_held_total",
    "QoS 1 publishes made while the broker connection was down: held in the client's window and sent after "
    "the reconnect (none is dropped; when the window is full, publish waits); by client target",
    ["target"])


class MqttError(RuntimeError):
    """The broker refused us, or the connection failed."""


class MqttRefused(MqttError):
    """The broker answered CONNECT with a failure (bad credentials, not authorised…): not retried."""


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        parts = urlsplit(url)
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if tls else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            tls=tls,
        )


@dataclass(frozen=True)
class Message:
    """A received message. Pass it back to :meth:`MqttClient.ack` once it is safely stored."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    mid: int
    generation: int
    """The session the message belongs to (see :attr:`MqttClient.sessions`)."""


class _Unreachable(MqttError):
    """No TCP connection or no CONNACK: worth another attempt."""


def default_client_id(role: str) -> str:
    """A fresh client id for a connection without a persistent session: 128 random bits, so no other
    client can guess it and take the connection over (MQTT brokers drop the older of two connections
    with the same client id)."""
    return f"sonae-{role}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex}"


def bound_client_id(role: str, url: str | None, instance: str) -> str:
    """A stable client id for a persistent session, bound to the connection's credentials.

    ``sonae-<role>-<instance>-<tag>`` where ``tag`` is the first 96 bits of
    HMAC-SHA256(password, "<role>|<username>|<host>|<instance>"): the same after every restart (the
    session and its queued messages survive), and unguessable for any client that does not hold the
    service's password, so a device cannot connect with it and take the session over (MQTT 5 §3.1.3.1:
    a server should check that a client is authorised to use its client id; Mosquitto does not). Without
    a password (the embedded, local-only broker) the tag is derived from the host name alone.
    """
    import hashlib
    import hmac

    parts = urlsplit(url or "")
    secret = unquote(parts.password or "")
    message = f"{role}|{unquote(parts.username or '')}|{socket.gethostname()}|{instance}"
    tag = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()[:24]
    return f"sonae-{role}-{instance}-{tag}"


class MqttClient:
    """An asyncio MQTT client.

    Parameters
    ----------
    url
        ``mqtt://user:password@host:port`` (``mqtts://`` for TLS).
    client_id
        Stable id for a persistent session (needed for at-least-once across restarts).
    protocol
        ``"5"`` or ``"3.1.1"``.
    persistent
        Keep the session (subscriptions and queued QoS 1 messages) while disconnected.
    manual_ack
        Received QoS 1 messages are acknowledged only by :meth:`ack`.
    max_inflight
        Bound on received, unacknowledged messages (Receive Maximum with MQTT 5).
    max_outstanding
        Bound on our own QoS 1 publishes awaiting PUBACK.
    retry
        Retry the first connect with backoff until it succeeds (the default); ``False`` raises
        :class:`MqttError` at once when the broker cannot be reached.
    target
        Label of this client's failed attempts in ``sonae_connect_failures_total``.
    """

    def __init__(
        self,
        url: str,
        *,
        client_id: str,
        protocol: str = "5",
        persistent: bool = False,
        manual_ack: bool = False,
        max_inflight: int = 1000,
        max_outstanding: int = 1000,
        keepalive: int = 30,
        session_expiry_s: int = 7 * 24 * 3600,
        retry: bool = True,
        target: str = "mqtt",
    ) -> None:
        self.address = BrokerAddress.from_url(url)
        self.client_id = client_id
        self.protocol = protocol
        self.persistent = persistent
        self.manual_ack = manual_ack
        self.max_inflight = max_inflight
        self.max_outstanding = max_outstanding
        self.keepalive = keepalive
        self.session_expiry_s = session_expiry_s
        self.retry = retry
        self.target = target

        version = paho.MQTTv5 if protocol == "5" else paho.MQTTv311
        kwargs: dict[str, Any] = {"protocol": version, "manual_ack": manual_ack}
        if version == paho.MQTTv311:
            kwargs["clean_session"] = not persistent
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, **kwargs)
        # Our own bounds replace paho's: its in-flight limit rescans a queue on every ack.
        self._client.max_inflight_messages_set(0)
        self._client.max_queued_messages_set(0)
        if self.address.username:
            self._client.username_pw_set(self.address.username, self.address.password)
        if self.address.tls:
            self._client.tls_set_context(ssl.create_default_context())
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_socket_open = self._on_socket_open
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_socket_register_write
        self._client.on_socket_unregister_write = self._on_socket_unregister_write

        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[None] | None = None
        self._connected_event = asyncio.Event()
        self._closing = False
        self._interrupted = False
        self._generation = 0  # CONNACKs received
        self._session = 0  # sessions begun (CONNACK without session present)
        self._held: dict[int, Message] = {}  # received and not yet acknowledged, by packet id
        self._owed: set[int] = set()  # acks made while disconnected, sent when the session resumes
        self.peak_unacked = 0
        self.redeliveries_dropped = 0
        self._sock: socket.socket | None = None
        self._reading = False
        self._misc_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self._inbox: collections.deque[Message] = collections.deque()
        self._inbox_event = asyncio.Event()
        self._subscriptions: dict[str, int] = {}
        self._pending_subs: dict[int, asyncio.Future[list[int]]] = {}
        self._publish_window = asyncio.Semaphore(max_outstanding)
        self._pending_pubs: dict[int, asyncio.Future[None]] = {}
        self._outstanding: set[int] = set()
        self.refused_publishes = 0
        self.held_publishes = 0  # QoS 1 publishes made while disconnected, sent after the reconnect
        self._warned_held = False
        self.broker_limits: dict[str, Any] = {}
        self.session_present = False

    # -- lifecycle -----------------------------------------------------------------------------
    async def __aenter__(self) -> MqttClient:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self, *, timeout: float = 10.0) -> None:
        """Connect and wait for CONNACK.

        With :attr:`retry` (the default) an unreachable or silent broker is retried with backoff
        until it answers; a CONNACK refusal (:class:`MqttRefused`) is raised at once either way.
        """
        if not self.retry:
            await self._connect_once(timeout=timeout)
            return
        await connect_with_retry(lambda: self._connect_once(timeout=timeout), target=self.target,
                                 retry_on=(OSError, TimeoutError, _Unreachable))

    async def _connect_once(self, *, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        properties = None
        if self.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)
            properties.ReceiveMaximum = self.max_inflight
            if self.persistent:
                properties.SessionExpiryInterval = self.session_expiry_s
        try:
            if self.protocol == "5":
                self._client.connect(
                    self.address.host, self.address.port, keepalive=self.keepalive,
                    clean_start=not self.persistent, properties=properties,
                )
            else:
                self._client.connect(self.address.host, self.address.port, keepalive=self.keepalive)
        except (OSError, ValueError) as exc:
            raise _Unreachable(f"cannot reach MQTT broker {self.address.host}:{self.address.port}: {exc}") from exc
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), timeout)
        except TimeoutError:
            self._client.disconnect()
            self._teardown_socket()
            raise _Unreachable(
                f"MQTT broker {self.address.host}:{self.address.port} did not answer CONNECT") from None
        except MqttRefused:
            self._teardown_socket()
            raise

    async def close(self) -> None:
        self._closing = True
        if self._reconnect_task:
            self._reconnect_task.cancel()
        with contextlib.suppress(Exception):
            self._client.disconnect()
        # let the DISCONNECT packet go out
        for _ in range(20):
            if self._sock is None:
                break
            await asyncio.sleep(0.01)
        self._teardown_socket()
        self._inbox_event.set()
        for fut in list(self._pending_pubs.values()):
            if not fut.done():
                fut.set_exception(MqttError("client closed"))

    @property
    def sessions(self) -> int:
        """How many sessions were begun: 1 after the first connect, more only when a reconnect
        found the broker without our session (clean start, expiry, or a broker that lost it)."""
        return self._session

    @property
    def connections(self) -> int:
        """How many times a CONNACK was received (1 after the first connect)."""
        return self._generation

    @property
    def outstanding(self) -> int:
        """QoS 1 publishes sent and not yet acknowledged by the broker (at most ``max_outstanding``)."""
        return len(self._outstanding)

    @property
    def is_connected(self) -> bool:
        return self._connected_event.is_set()

    async def wait_connected(self) -> None:
        await self._connected_event.wait()

    # -- paho callbacks (all on the loop thread) -------------------------------------------------
    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            err = MqttRefused(f"MQTT broker refused the connection: {reason}")
            if self._connected and not self._connected.done():
                self._connected.set_exception(err)
            count_failure(self.target)
            log.error("mqtt connect refused", extra={"reason": str(reason)})
            return
        first = self._generation == 0
        self._generation += 1
        self.session_present = bool(getattr(flags, "session_present", False))
        if first or not self.session_present:
            # A new session: the broker forgot the packet ids we hold, so their acks must not be sent
            # (they could name new messages). The messages themselves are still stored by the caller.
            self._session += 1
            self._held.clear()
            self._owed.clear()
            self._resume_reading()
        else:
            for mid in self._owed:
                client.ack(mid, 1)
                self._held.pop(mid, None)
            self._owed.clear()
        if props is not None:
            for name in ("ReceiveMaximum", "MaximumQoS", "MaximumPacketSize", "SharedSubscriptionAvailable"):
                if hasattr(props, name):
                    self.broker_limits[name] = getattr(props, name)
        self._connected_event.set()
        if self._warned_held:
            self._warned_held = False
            log.info("mqtt reconnected: held publishes are sent", extra={"target": self.target,
                                                                         "outstanding": len(self._outstanding)})
        if self._connected and not self._connected.done():
            self._connected.set_result(None)
        elif self._subscriptions:
            # A resumed session keeps its subscriptions and its queue in the broker: nothing is sent,
            # and never an UNSUBSCRIBE, which would open a window where messages find no subscriber
            # (PUBACK 0x10). A lost session is subscribed anew. The one exception is the opt-in shared
            # subscription: Mosquitto 2.0 restores it from its persistence file after a restart without
            # ever delivering to it again, and only UNSUBSCRIBE + SUBSCRIBE revives it (with the window
            # that makes shared subscriptions lossy; see ingest/partition.py).
            for topic, qos in self._subscriptions.items():
                if not self.session_present or not self.persistent:
                    self._client.subscribe(topic, qos)
                elif topic.startswith("$share/"):
                    self._client.unsubscribe(topic)
                    self._client.subscribe(topic, qos)
        log.info("mqtt connected", extra={"broker": f"{self.address.host}:{self.address.port}",
                                          "session_present": self.session_present,
                                          "unacked": len(self._held)})

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self._connected_event.clear()
        for fut in list(self._pending_pubs.values()):
            if not fut.done():
                fut.set_exception(MqttError("disconnected before PUBACK"))
        self._pending_pubs.clear()
        # paho re-sends unacknowledged publishes after a reconnect; the window keeps counting them.
        if self._closing:
            return
        log.warning("mqtt disconnected", extra={"reason": str(reason)})
        if self._loop is not None and (self._reconnect_task is None or self._reconnect_task.done()):
            self._reconnect_task = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        backoff = Backoff(base=0.2, cap=5.0)
        while not self._closing and not self.is_connected:
            await asyncio.sleep(backoff.next_delay())
            if self._closing or self.is_connected:
                return
            try:
                self._client.reconnect()
                return
            except Exception as exc:  # OSError mostly; anything else must not end reconnecting for good
                count_failure(self.target)
                log.warning("mqtt reconnect failed", extra={"error": str(exc)})

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        message = Message(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), msg.mid, self._session)
        held = msg.qos > 0 and self.manual_ack
        if held:
            previous = self._held.get(msg.mid)
            if previous is not None and previous.topic == message.topic and previous.payload == message.payload:
                # The broker resent a message we still hold (DUP after a reconnect): the held copy is
                # acknowledged on this resumed session; a second copy would only grow the inbox.
                self.redeliveries_dropped += 1
                return
            # (A different message under a held packet id means the broker renumbered its queue: the
            # new one takes the id, and the old copy is stored without an ack of its own.)
            self._held[msg.mid] = message
            self.peak_unacked = max(self.peak_unacked, len(self._held))
        self._inbox.append(message)
        if held and len(self._held) >= self.max_inflight:
            # MQTT 5's Receive Maximum should have stopped the broker already, but Mosquitto 2.0.11
            # sends up to Receive Maximum more messages for *each* PUBACK (measured: 5 acks with a
            # window of 10 brought 50 more): so the bound is enforced here too, for every protocol.
            self._pause_reading()
        self._inbox_event.set()

    def _on_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        fut = self._pending_pubs.pop(mid, None)
        refused = bool(getattr(reason, "is_failure", False))
        if refused:
            # MQTT 5 PUBACK with a failure reason, e.g. 0x87 Not authorized by the broker's ACL
            self.refused_publishes += 1
            log.warning("publish refused by the broker", extra={"reason": str(reason)})
        if fut is not None and not fut.done():
            if refused:
                fut.set_exception(MqttError(f"the broker refused the publish: {reason}"))
            else:
                fut.set_result(None)
        if mid in self._outstanding:
            self._outstanding.discard(mid)
            self._publish_window.release()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, props: Any) -> None:
        fut = self._pending_subs.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result([getattr(r, "value", r) for r in reasons])

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._sock = sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._resume_reading()
        if self._misc_task is None or self._misc_task.done():
            self._misc_task = self._loop.create_task(self._misc_loop())

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._teardown_socket()

    def _on_socket_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.add_writer(sock, self._client.loop_write)

    def _on_socket_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert self._loop is not None
        self._loop.remove_writer(sock)

    def _teardown_socket(self) -> None:
        if self._sock is not None and self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock)
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._sock)
        self._reading = False
        self._sock = None

    def _pause_reading(self) -> None:
        if self._reading and self._sock is not None and self._loop is not None:
            self._loop.remove_reader(self._sock)
            self._reading = False

    def _resume_reading(self) -> None:
        if not self._reading and self._sock is not None and self._loop is not None:
            self._loop.add_reader(self._sock, self._client.loop_read)
            self._reading = True

    async def _misc_loop(self) -> None:
        pinged = 0.0
        while not self._closing:
            if self._sock is not None and not self._reading and self.is_connected:
                # Backpressure: the socket is not read, so paho would miss PINGRESP and drop the
                # connection. Keep it alive with our own PINGREQ (the PINGRESPs wait in the socket
                # buffer and are read when reading resumes).
                now = time.monotonic()  # paho's clock
                if now - pinged >= self.keepalive / 2:
                    pinged = now
                    # paho has no public "ping now": its private send and keep-alive clock are used
                    with contextlib.suppress(Exception):
                        self._client._send_pingreq()
                        self._client._ping_t = 0  # the PINGRESP is read when reading resumes
                        with self._client._msgtime_mutex:
                            self._client._last_bytes_received = now
            else:
                rc = self._client.loop_misc()
                if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
                    log.debug("mqtt loop_misc", extra={"rc": int(rc)})
            await asyncio.sleep(1.0)

    # -- API -------------------------------------------------------------------------------------
    async def subscribe(self, topic: str, *, qos: int = 1, timeout: float = 10.0) -> list[int]:
        """Subscribe and wait for SUBACK; returns the granted QoS (or reason codes)."""
        assert self._loop is not None
        rc, mid = self._client.subscribe(topic, qos)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe {topic!r} failed: {paho.error_string(rc)}")
        fut: asyncio.Future[list[int]] = self._loop.create_future()
        self._pending_subs[mid] = fut
        granted = await asyncio.wait_for(fut, timeout)
        if any(g >= 0x80 for g in granted):
            raise MqttError(f"broker refused subscription {topic!r} (reason {granted})")
        self._subscriptions[topic] = qos
        return granted

    async def messages(self) -> AsyncIterator[Message]:
        """Received messages, in order, until the client is closed."""
        while True:
            while self._inbox:
                yield self._inbox.popleft()
            if self._closing:
                return
            self._inbox_event.clear()
            await self._inbox_event.wait()

    def drain(self, limit: int) -> list[Message]:
        """Take up to ``limit`` waiting messages without awaiting."""
        out: list[Message] = []
        while self._inbox and len(out) < limit:
            out.append(self._inbox.popleft())
        return out

    async def wait_message(self) -> None:
        """Wait until at least one message is waiting, the client closes, or :meth:`interrupt`."""
        while not self._inbox and not self._closing and not self._interrupted:
            self._inbox_event.clear()
            await self._inbox_event.wait()
        self._interrupted = False

    def interrupt(self) -> None:
        """Make a pending :meth:`wait_message` return now."""
        self._interrupted = True
        self._inbox_event.set()

    def ack(self, message: Message) -> bool:
        """Acknowledge a QoS 1 message (while disconnected: as soon as the session is resumed).

        Returns False (and sends nothing) for a message of an earlier session: the broker has
        forgotten it, or delivers it again under a new packet id."""
        if message.qos == 0 or not self.manual_ack:
            return True
        if self._held.get(message.mid) is not message:
            return False
        if not self.is_connected:
            # sent once the session is resumed; until then the broker's redelivery is dropped as held
            self._owed.add(message.mid)
            return True
        self._client.ack(message.mid, message.qos)
        del self._held[message.mid]
        if len(self._held) < self.max_inflight // 2:
            self._resume_reading()
        return True

    @property
    def waiting(self) -> int:
        """Messages received and not yet taken."""
        return len(self._inbox)

    @property
    def unacked(self) -> int:
        """Messages received and not yet acknowledged (≤ ``max_inflight``)."""
        return len(self._held)

    async def publish(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False, wait: bool = False
    ) -> None:
        """Publish; waits for room in the outstanding window. With ``wait`` also waits for PUBACK.

        While the broker is away a QoS 1 message is held and sent after the reconnect (counted in
        :attr:`held_publishes` and ``sonae_mqtt_publishes_held_total{target}``); once ``max_outstanding``
        messages are held or unacknowledged, this waits for the broker. So a broker outage never raises here.

        Raises
        ------
        MqttError
            paho refused the message itself (a topic or payload it cannot send), not a lost connection.
        """
        if qos == 0:  # at most once: while disconnected paho sends it after the reconnect, or not at all
            self._client.publish(topic, payload, qos=0, retain=retain)
            return
        await self._publish_window.acquire()
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            # Disconnected (the broker went away): paho keeps the message in its queue and sends it after the
            # reconnect (its CONNACK handler), so it is held, inside the window, not lost and not an error
            # (found: `sonae run --simulate` died of a 10 s broker outage on exactly this).
            self._held_while_disconnected(topic)
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._publish_window.release()
            raise MqttError(f"publish to {topic!r} failed: {paho.error_string(info.rc)}")
        elif info.is_published():  # (paho raises from is_published() for a held one)
            self._publish_window.release()
            return
        self._outstanding.add(info.mid)
        if wait:
            assert self._loop is not None
            fut: asyncio.Future[None] = self._loop.create_future()
            self._pending_pubs[info.mid] = fut
            await fut

    def _held_while_disconnected(self, topic: str) -> None:
        self.held_publishes += 1
        PUBLISHES_HELD.labels(self.target).inc()
        if not self._warned_held:
            self._warned_held = True
            log.warning("mqtt publish while the broker is away: held until the reconnect (at most max_outstanding, "
                        "then publish waits)", extra={"target": self.target, "topic": topic,
                                                      "max_outstanding": self.max_outstanding})

    async def flush(self, *, timeout: float = 30.0) -> None:
        """Wait until every QoS 1 publish has been acknowledged by the broker."""
        deadline = asyncio.get_running_loop().time() + timeout
        while self._outstanding:
            if asyncio.get_running_loop().time() > deadline:
                raise MqttError("timed out waiting for PUBACKs")
            await asyncio.sleep(0.005)
