"""How the simulator publishes: a lean MQTT 3.1.1 QoS 1 publisher on asyncio, or Sonae's paho client.

Why not paho alone? Two traps, measured with ``bench/simulator.py`` on the 2-core test machine:

* paho's default in-flight limit is 20 unacknowledged QoS 1 messages; each publish then waits a
  round trip, which caps a publisher at a few thousand messages per second;
* even with the window opened (:class:`sonae.mqtt.MqttClient` does that), paho builds a ``Properties``
  and a ``ReasonCode`` object to decode every PUBACK, MQTT 3.1.1 included: about 15 µs per message
  of pure Python, which leaves roughly 20,000 msg/s for everything, payload building included.

A load generator only ever sends ``PUBLISH`` and reads ``PUBACK`` (4 bytes each), so
:class:`FastPublisher` speaks exactly that much MQTT 3.1.1 (CONNECT/CONNACK, PUBLISH QoS 0/1, PUBACK,
PINGREQ/PINGRESP, DISCONNECT). It keeps a bounded window of unacknowledged publishes (packet ids are
never reused while outstanding), coalesces the packets written in one event-loop turn into one
``write``, honours the transport's flow control, and after a lost connection reconnects and sends
the unacknowledged publishes again with the DUP flag (QoS 1 is at-least-once: ingest skips the
copies). ``transport = "paho"`` selects :class:`PahoPublisher`, a thin adapter over
:class:`sonae.mqtt.MqttClient`, when MQTT 5 or a second opinion is wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
from typing import Protocol

from sonae.mqtt import BrokerAddress, MqttClient, MqttError
from sonae.retry import Backoff, connect_with_retry, count_failure

log = logging.getLogger("sonae.simulators.transport")


class _NoBroker(MqttError):
    """Nothing listens at the broker's address (yet): worth another attempt."""

_CONNACK_REASONS = {
    1: "unacceptable protocol version", 2: "client identifier rejected", 3: "server unavailable",
    4: "bad user name or password", 5: "not authorised",
}


class Publisher(Protocol):
    """What the fleet needs from a connection to the broker."""

    async def connect(self) -> None: ...

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None: ...

    async def flush(self, *, timeout: float = 30.0) -> None: ...

    async def close(self) -> None: ...

    @property
    def outstanding(self) -> int: ...


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, *, keepalive: int, username: str | None, password: str | None,
                   clean_session: bool = True) -> bytes:
    flags = 0x02 if clean_session else 0
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive)
    body = variable + payload
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, *, mid: int, qos: int, dup: bool = False) -> bytes:
    """An MQTT PUBLISH packet (``mid`` is ignored for QoS 0)."""
    if qos:
        head = 0x30 | (qos << 1) | (0x08 if dup else 0)
        rest = struct.pack("!H", len(topic)) + topic + struct.pack("!H", mid)
    else:
        head = 0x30
        rest = struct.pack("!H", len(topic)) + topic
    return bytes([head]) + _varint(len(rest) + len(payload)) + rest + payload


class _Wire(asyncio.Protocol):
    def __init__(self, owner: FastPublisher) -> None:
        self.owner = owner
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=4 << 20, low=1 << 20)

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        pos = 0
        end = len(buf)
        owner = self.owner
        while end - pos >= 2:
            kind = buf[pos]
            # remaining length (PUBACK/CONNACK/PINGRESP are short: one length byte)
            length = 0
            mult = 1
            i = pos + 1
            while True:
                if i >= end:
                    length = -1
                    break
                b = buf[i]
                length += (b & 0x7F) * mult
                i += 1
                if not b & 0x80:
                    break
                mult *= 128
            if length < 0 or end - i < length:
                break
            if kind == 0x40:
                owner._acked((buf[i] << 8) | buf[i + 1])
            elif kind == 0x20:
                owner._on_connack(buf[i + 1])
            # PINGRESP (0xD0) and anything else: nothing to do
            pos = i + length
        del buf[:pos]

    def pause_writing(self) -> None:
        self.owner._writable.clear()

    def resume_writing(self) -> None:
        self.owner._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost(exc)


class FastPublisher:
    """A QoS 0/1 MQTT 3.1.1 publisher with a large window of unacknowledged messages."""

    def __init__(self, url: str, *, client_id: str, max_outstanding: int = 20000, keepalive: int = 60,
                 reconnect: bool = True) -> None:
        if not 1 <= max_outstanding <= 60000:
            raise ValueError("max_outstanding must be within 1..60000 (MQTT packet ids are 16-bit)")
        self.address = BrokerAddress.from_url(url)
        self.client_id = client_id
        self.max_outstanding = max_outstanding
        self.keepalive = keepalive
        self.reconnect = reconnect
        self._wire: _Wire | None = None
        self._pending: dict[int, tuple[bytes, bytes]] = {}  # mid → (topic, payload) awaiting PUBACK
        self._next_mid = 0
        self._room = asyncio.Event()
        self._room.set()
        self._writable = asyncio.Event()
        self._writable.set()
        self._connected = asyncio.Event()
        self._connack: asyncio.Future[int] | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._closing = False
        self._error: BaseException | None = None
        self._ping_task: asyncio.Task[None] | None = None
        self._reconnect_task: asyncio.Task[None] | None = None
        self.published = 0
        self.acked = 0
        self.reconnects = 0

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    async def __aenter__(self) -> FastPublisher:
        if self.reconnect:  # retried from the first attempt, like every connection (sonae.retry)
            await connect_with_retry(self.connect, target="mqtt-simulator", retry_on=(_NoBroker,))
        else:
            await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self, *, timeout: float = 10.0) -> None:
        loop = asyncio.get_running_loop()
        ctx = ssl.create_default_context() if self.address.tls else None
        try:
            _, wire = await asyncio.wait_for(
                loop.create_connection(lambda: _Wire(self), self.address.host, self.address.port, ssl=ctx), timeout)
        except (OSError, TimeoutError) as exc:
            raise _NoBroker(f"cannot reach MQTT broker {self.address.host}:{self.address.port}: {exc}") from exc
        self._wire = wire
        self._connack = loop.create_future()
        assert wire.transport is not None
        wire.transport.write(connect_packet(self.client_id, keepalive=self.keepalive,
                                            username=self.address.username, password=self.address.password))
        try:
            code = await asyncio.wait_for(asyncio.shield(self._connack), timeout)
        except TimeoutError:
            wire.transport.close()
            raise MqttError(f"MQTT broker {self.address.host}:{self.address.port} did not answer CONNECT") from None
        if code != 0:
            wire.transport.close()
            raise MqttError(f"MQTT broker refused the connection: {_CONNACK_REASONS.get(code, code)}")
        # resend what the previous connection left unacknowledged (once: packets queued for the lost
        # connection and never written would otherwise go out twice; a QoS 0 one among them is lost, as allowed)
        self._out.clear()
        for mid, (topic, payload) in list(self._pending.items()):
            self._out.append(publish_packet(topic, payload, mid=mid, qos=1, dup=True))
        self._schedule_flush()
        self._connected.set()
        if self._ping_task is None or self._ping_task.done():
            self._ping_task = loop.create_task(self._pinger())

    async def close(self) -> None:
        self._closing = True
        for task in (self._ping_task, self._reconnect_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._write_out()
        if self._wire is not None and self._wire.transport is not None and not self._wire.transport.is_closing():
            self._wire.transport.write(b"\xe0\x00")  # DISCONNECT
            self._wire.transport.close()
        self._connected.clear()
        self._room.set()

    # -- publishing -------------------------------------------------------------------------------
    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Queue one message; waits while the window of unacknowledged messages is full."""
        if self._error is not None:
            raise MqttError(f"publisher failed: {self._error}")
        if not self._connected.is_set():
            await self._wait_connected()
        if not self._writable.is_set():
            await self._writable.wait()
        t = topic.encode()
        if qos == 0:
            self._out.append(publish_packet(t, payload, mid=0, qos=0))
        else:
            while len(self._pending) >= self.max_outstanding:
                self._room.clear()
                self._write_out()
                await self._room.wait()
                if self._error is not None:
                    raise MqttError(f"publisher failed: {self._error}")
            mid = self._next_mid
            pending = self._pending
            while True:
                mid = mid % 65535 + 1
                if mid not in pending:
                    break
            self._next_mid = mid
            pending[mid] = (t, payload)
            self._out.append(publish_packet(t, payload, mid=mid, qos=1))
        self.published += 1
        if not self._flush_scheduled:
            self._schedule_flush()

    async def _wait_connected(self) -> None:
        while not self._connected.is_set():
            if self._error is not None or self._closing:
                raise MqttError(f"publisher is not connected: {self._error or 'closed'}")
            await self._connected.wait()

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._write_out)

    def _write_out(self) -> None:
        self._flush_scheduled = False
        if not self._out or self._wire is None or self._wire.transport is None or not self._connected.is_set():
            return
        if self._wire.transport.is_closing():
            return
        data = b"".join(self._out)
        self._out.clear()
        self._wire.transport.write(data)

    async def flush(self, *, timeout: float = 30.0) -> None:
        """Wait until every QoS 1 message has been acknowledged."""
        self._write_out()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending:
            if self._error is not None:
                raise MqttError(f"publisher failed: {self._error}")
            if loop.time() > deadline:
                raise MqttError(f"timed out waiting for {len(self._pending)} PUBACKs")
            self._room.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), 0.05)

    # -- from the wire ----------------------------------------------------------------------------
    def _acked(self, mid: int) -> None:
        if self._pending.pop(mid, None) is not None:
            self.acked += 1
            if not self._room.is_set() and len(self._pending) < self.max_outstanding:
                self._room.set()

    def _on_connack(self, code: int) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(code)

    def _lost(self, exc: Exception | None) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self._wire = None
        self._writable.set()
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError(f"connection lost during CONNECT: {exc}"))
        if self._closing:
            return
        if self.reconnect:
            if was_connected:
                log.warning("simulator lost its broker connection; publishes wait for the reconnect",
                            extra={"error": str(exc)})
                self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())
            # else: lost during CONNECT (a broker starting or stopping): that attempt fails on the CONNACK
            # future above and its caller tries again (found: this ended the publisher for good when a
            # restarting broker closed a reconnect attempt's socket before CONNACK)
        else:
            log.warning("simulator lost its broker connection", extra={"error": str(exc)})
            self._error = exc or MqttError("connection closed by the broker")
            self._room.set()
            self._connected.set()  # wake waiters so they see the error

    async def _reconnect(self) -> None:
        backoff = Backoff(base=0.2, cap=10.0)
        while not self._closing:
            await asyncio.sleep(backoff.next_delay())
            try:
                await self.connect()
                self.reconnects += 1
                return
            except Exception as exc:  # MqttError mostly; anything else must not end reconnecting for good
                count_failure("mqtt-simulator")
                log.warning("simulator reconnect failed", extra={"error": str(exc)})

    async def _pinger(self) -> None:
        while not self._closing:
            await asyncio.sleep(max(1.0, self.keepalive / 2))
            if self._wire is not None and self._wire.transport is not None and self._connected.is_set():
                self._out.append(b"\xc0\x00")
                self._write_out()


class PahoPublisher:
    """:class:`sonae.mqtt.MqttClient` (paho, MQTT 5 or 3.1.1) behind the :class:`Publisher` interface."""

    def __init__(self, url: str, *, client_id: str, protocol: str = "3.1.1", max_outstanding: int = 20000) -> None:
        self.client = MqttClient(url, client_id=client_id, protocol=protocol, max_outstanding=max_outstanding)

    @property
    def outstanding(self) -> int:
        return self.client.outstanding

    async def connect(self) -> None:
        await self.client.connect()

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        await self.client.publish(topic, payload, qos=qos)

    async def flush(self, *, timeout: float = 30.0) -> None:
        await self.client.flush(timeout=timeout)

    async def close(self) -> None:
        await self.client.close()


def make_publisher(url: str, *, client_id: str, transport: str = "fast", protocol: str = "3.1.1",
                   max_outstanding: int = 20000) -> Publisher:
    if transport == "fast":
        return FastPublisher(url, client_id=client_id, max_outstanding=max_outstanding)
    if transport == "paho":
        return PahoPublisher(url, client_id=client_id, protocol=protocol, max_outstanding=max_outstanding)
    raise ValueError(f"transport must be 'fast' or 'paho', not {transport!r}")
