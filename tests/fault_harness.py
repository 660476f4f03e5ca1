"""Broker and network fault trials on real processes (issue #23), shared by
``tests/test_broker_faults.py`` (small trials) and ``bench/broker_faults.py`` (20,000 readings).

Parts, all real:

* a Mosquitto started here with Sonae's own configuration (:func:`sonae.embedded.mosquitto_config`:
  persistence on, no in-flight cap, deep queue) on a free port, restarted or stopped by the trial;
* one or two real ``sonae ingest`` subprocesses with the default settings (or ``ingest.partition``
  ``0/2`` and ``1/2``), their own ``/metrics`` read for the inbox and unacknowledged counts;
* :class:`TcpProxy`, a small TCP relay between an ingestor and the broker (only in the cut trial) or
  the database, that a trial cuts (every connection aborted) or takes down (new connections refused)
  and up again;
* :class:`Publisher`, an independent QoS 1 publisher (paho directly, MQTT 5, not Sonae's client)
  with a unique timestamp per reading that records the PUBACK reason code of every message.

The oracle is the publisher's own list: every reading it published must be in ``readings`` exactly
once (counted by distinct timestamp per station), and no PUBACK may say 0x10 "no matching
subscribers" (the broker telling a device that nobody received its reading).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ingest.contract import encode_reading, topic_for
from ingest.registry import Station, upsert_stations
from sonae.embedded import EmbeddedBroker, free_port

#: station → municipality; 072010 falls to partition 0/2 and 072036 to 1/2 (CRC-32 of the code)
STATIONS = {"fa1": "072010", "fa2": "072010", "fb1": "072036", "fb2": "072036"}


class TcpProxy:
    """A TCP relay to ``target`` on a free local port that can cut or refuse connections."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.listen_port = 0
        self.up = True
        self.cuts = 0
        self.accepted = 0  # connections relayed so far
        self._server: asyncio.AbstractServer | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._relayed: asyncio.Event | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self.listen_port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        self.accepted += 1
        if self._relayed is not None:
            self._relayed.set()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._pairs.discard(pair)

    async def relaying_since(self, accepted: int, *, timeout: float = 60.0) -> None:
        """Wait until a connection accepted after the first ``accepted`` is being relayed (a client that
        reconnected since): a cut before that would cut nothing new (found under load: cuts in quick succession
        while the ingestor was still backing off, so 20 cuts made 16 connections)."""
        if self._relayed is None:
            self._relayed = asyncio.Event()
        async with asyncio.timeout(timeout):
            while not (self.accepted > accepted and self._pairs):
                self._relayed.clear()
                await self._relayed.wait()

    def cut(self) -> None:
        """Abort every relayed connection (both sides see a reset)."""
        self.cuts += 1
        self._abort_all()

    def _abort_all(self) -> None:
        for a, b in list(self._pairs):
            a.transport.abort()
            b.transport.abort()

    def down(self) -> None:
        """Cut, and refuse new connections until :meth:`restore`."""
        self.up = False
        self._abort_all()

    def restore(self) -> None:
        self.up = True

    async def stop(self) -> None:
        self.down()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Publisher:
    """Independent MQTT 5 QoS 1 publisher (paho in its own thread) recording each PUBACK reason.

    Messages published while the broker is away wait in paho's queue and go out on reconnect, as a
    device flushing its buffer would; :meth:`wait_all_acked` waits for every PUBACK.
    """

    def __init__(self, port: int, prefix: str) -> None:
        self.prefix = prefix
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"device-{uuid.uuid4().hex[:8]}",
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.client.on_publish = self._on_publish
        self.reasons: dict[int, int] = {}  # mid → PUBACK reason code
        self.published: list[tuple[str, datetime]] = []  # (station, ts) in publishing order
        self._mid_of: dict[int, int] = {}
        self._lock = threading.Lock()
        self.port = port

    def start(self) -> None:
        self.client.connect("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: object, props: object) -> None:
        with self._lock:
            self.reasons[mid] = int(getattr(reason, "value", 0))

    def publish(self, station: str, ts: datetime, seq: int) -> None:
        payload = encode_reading(value=1.0 + (seq % 97) / 100, ts=ts, seq=seq)
        info = self.client.publish(topic_for(self.prefix, STATIONS[station], station, "level"), payload, qos=1)
        with self._lock:
            self.published.append((station, ts))
            self._mid_of[len(self.published) - 1] = info.mid

    def outcome(self) -> Counter[int]:
        """PUBACK reason codes so far (0 success, 16 = 0x10 no matching subscribers)."""
        with self._lock:
            return Counter(self.reasons.values())

    def all_acked(self) -> bool:
        with self._lock:
            return len(self.reasons) >= len(self.published)

    def stop(self) -> None:
        self.client.loop_stop()
        with contextlib.suppress(Exception):
            self.client.disconnect()


def _tcp_url(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, f"{netloc[0]}@{host}" if len(netloc) == 2 else host, parts.path,
                       parts.query, parts.fragment))


@dataclass
class Ingestor:
    """A real ``sonae ingest`` process."""

    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    async def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                timeout=aiohttp.ClientTimeout(total=30)) as resp:
                for line in (await resp.text()).splitlines():
                    if line.startswith("sonae_") and " " in line:
                        name, value = line.rsplit(" ", 1)
                        with contextlib.suppress(ValueError):
                            out[name] = float(value)
        return out

    async def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"ingest exited ({self.proc.returncode}): {self.log.read_text()[-3000:]}")
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{self.metrics_port}/readyz",
                                    timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Trial:
    """One run of a fault against the real processes; :meth:`result` is what the oracle compares."""

    name: str
    published: int = 0
    stored: int = 0
    distinct: int = 0
    pubacks: dict[str, int] = field(default_factory=dict)
    peak_unacked: float = 0
    peak_inbox: float = 0
    max_inflight: int = 0
    connections: list[float] = field(default_factory=list)
    seconds: float = 0
    rss_mb: list[float] = field(default_factory=list)
    redeliveries_dropped: float = 0

    @property
    def lost(self) -> int:
        return self.published - self.distinct

    @property
    def duplicates(self) -> int:
        return self.stored - self.distinct

    def result(self) -> dict[str, object]:
        return {"trial": self.name, "published": self.published, "stored": self.stored, "lost": self.lost,
                "duplicates": self.duplicates, "pubacks": self.pubacks, "peak_unacked": self.peak_unacked,
                "peak_inbox": self.peak_inbox, "max_inflight": self.max_inflight,
                "ingest_connections": self.connections, "redeliveries_dropped": self.redeliveries_dropped,
                "seconds": round(self.seconds, 1),
                "rss_mb": _rss_summary(self.rss_mb)}


def _rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) / 1024


def _rss_summary(samples: list[float]) -> dict[str, float]:
    """First, median and last quarter's peak of the sampled resident memory (flat = bounded)."""
    if not samples:
        return {}
    q = max(1, len(samples) // 4)
    return {"first": round(samples[0], 1), "median": round(sorted(samples)[len(samples) // 2], 1),
            "peak_first_quarter": round(max(samples[:q]), 1), "peak_last_quarter": round(max(samples[-q:]), 1),
            "peak": round(max(samples), 1)}


async def wait_for(check: Callable[[], Awaitable[bool]], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Rig:
    """Broker, proxies, ingestors and database of one trial."""

    def __init__(self, *, workdir: Path, database_url: str, ingestors: int = 1, max_inflight: int = 20000,
                 keepalive_s: int = 30, via_db_proxy: bool = False, shared_group: str | None = "",
                 code_root: Path | None = None, mqtt_via_proxy: bool = False) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.n_ingestors = ingestors
        self.max_inflight = max_inflight
        self.keepalive_s = keepalive_s
        self.via_db_proxy = via_db_proxy
        self.shared_group = shared_group  # None: leave the variable unset (the code's own default)
        self.code_root = code_root  # run another checkout's `sonae ingest` (the before of a comparison)
        # Only the connection-cut trial puts the proxy between ingestor and broker: behind it a
        # reconnect attempt while the broker is down "succeeds" at TCP level, which would hide the
        # ingestor's real reconnect delay from the broker-restart trials.
        self.mqtt_via_proxy = mqtt_via_proxy
        self.prefix = f"f{uuid.uuid4().hex[:8]}/v1"
        self.broker = EmbeddedBroker(workdir / "broker", port=free_port(), anonymous=True)
        self.mqtt_proxies: list[TcpProxy] = []
        self.db_proxy: TcpProxy | None = None
        self.ingestors: list[Ingestor] = []
        self.pool: asyncpg.Pool | None = None
        self._samples: list[asyncio.Task[None]] = []
        self.peak_unacked = 0.0
        self.peak_inbox = 0.0
        self.rss_mb: list[float] = []  # resident memory of the ingestors, sampled (MB)

    async def __aenter__(self) -> Rig:
        self.broker.start()
        if self.broker.kind != "mosquitto":
            self.broker.stop()
            raise RuntimeError("these trials need mosquitto (apt-get install mosquitto)")
        self.pool = await asyncpg.create_pool(self.database_url, min_size=1, max_size=4)
        async with self.pool.acquire() as conn:
            await upsert_stations(conn, [Station(id=s, name=s, municipality_code=m) for s, m in STATIONS.items()])
        db_url = self.database_url
        if self.via_db_proxy:
            parts = urlsplit(db_url)
            if not parts.hostname or parts.hostname.startswith("/"):
                raise RuntimeError("the database proxy needs a TCP database URL")
            self.db_proxy = TcpProxy(parts.hostname, parts.port or 5432)
            db_url = _tcp_url(db_url, await self.db_proxy.start())
        for i in range(self.n_ingestors):
            mqtt_url = self.broker.url
            if self.mqtt_via_proxy:
                proxy = TcpProxy("127.0.0.1", self.broker.port)
                self.mqtt_proxies.append(proxy)
                mqtt_url = f"mqtt://127.0.0.1:{await proxy.start()}"
            self.ingestors.append(self._spawn(i, db_url, mqtt_url))
        for ing in self.ingestors:
            await wait_for(ing.ready, timeout=60, what="ingest ready")
        self._samples.append(asyncio.create_task(self._sample()))
        return self

    def _spawn(self, i: int, db_url: str, mqtt_url: str) -> Ingestor:
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "SONAE_DATABASE_URL": db_url,
            "SONAE_MQTT_URL": mqtt_url,
            "SONAE_MQTT_PROTOCOL": "5",
            "SONAE_MQTT_TOPIC_PREFIX": self.prefix,
            "SONAE_MQTT_CLIENT_ID": f"fault-ingest-{self.prefix[:9]}-{i}",
            "SONAE_INGEST_MAX_INFLIGHT": str(self.max_inflight),
            "SONAE_INGEST_BATCH_SIZE": str(min(500, self.max_inflight)),
            "SONAE_INGEST_METRICS_PORT": str(port),
            "SONAE_NOTIFY_ENABLED": "false",
            "SONAE_STATE_DIR": str(self.workdir / f"state{i}"),
            "SONAE_LOG_FORMAT": "text",
            "SONAE_LOG_LEVEL": "warning",
        }
        if self.keepalive_s != 30:
            env["SONAE_MQTT_KEEPALIVE_S"] = str(self.keepalive_s)
        if self.shared_group is not None:
            # the default (plain) subscription, said out loud: an empty variable really means empty;
            # a group only for the before/after comparison of bench/broker_faults.py
            env["SONAE_INGEST_SHARED_GROUP"] = self.shared_group
        if self.n_ingestors > 1 and not self.shared_group:
            env["SONAE_INGEST_PARTITION"] = f"{i}/{self.n_ingestors}"
        if self.code_root is not None:
            env["PYTHONPATH"] = str(self.code_root)
        log = self.workdir / f"ingest{i}.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", "ingest", "--instance", str(i)], env=env,
                                    stdout=subprocess.DEVNULL, stderr=err, cwd=self.code_root)
        return Ingestor(proc, port, log)

    async def _sample(self) -> None:
        """Peak unacknowledged and inbox counts of every ingestor, read from its /metrics."""
        while True:
            for ing in self.ingestors:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    m = await ing.metrics()
                    self.peak_unacked = max(self.peak_unacked, m.get("sonae_ingest_unacked_messages_max", 0),
                                            m.get("sonae_ingest_unacked_messages", 0))
                    self.peak_inbox = max(self.peak_inbox, m.get("sonae_ingest_inbox_messages", 0))
                with contextlib.suppress(OSError, ValueError, IndexError, StopIteration):
                    self.rss_mb.append(_rss_mb(ing.proc.pid))
            await asyncio.sleep(0.25)

    async def __aexit__(self, *exc: object) -> None:
        for task in self._samples:
            task.cancel()
        # off the loop: the proxies run on it, and an ingestor stopping (cancelling its queries through the
        # database proxy) waited on them until it was killed 20 s later
        await asyncio.gather(*(asyncio.to_thread(ing.stop) for ing in self.ingestors))
        for proxy in self.mqtt_proxies:
            await proxy.stop()
        if self.db_proxy is not None:
            await self.db_proxy.stop()
        self.broker.stop()
        if self.pool is not None:
            await self.pool.close()

    def publisher(self) -> Publisher:
        pub = Publisher(self.broker.port, self.prefix)
        pub.start()
        return pub

    async def stored(self) -> tuple[int, int]:
        assert self.pool is not None
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow("SELECT count(*) AS n, count(DISTINCT (station_id, ts)) AS d FROM readings "
                                      "WHERE station_id = ANY($1::text[])", list(STATIONS))
        return int(row["n"]), int(row["d"])

    async def run(self, name: str, *, readings: int, rate: float,
                  faults: Callable[[Rig, Publisher, Callable[[], float]], Awaitable[None]],
                  settle_s: float = 120) -> Trial:
        """Publish ``readings`` at ``rate``/s while ``faults`` runs; then wait for every PUBACK and for the
        database to hold them (or ``settle_s``), and return what was found."""
        started = time.monotonic()
        pub = self.publisher()
        stations = list(STATIONS)
        t0 = datetime.now(UTC) - timedelta(days=2)
        sent = 0

        def progress() -> float:
            return sent / readings

        async def publish() -> None:
            nonlocal sent
            begin = time.monotonic()
            for seq in range(readings):
                station = stations[seq % len(stations)]
                pub.publish(station, t0 + timedelta(seconds=seq), seq)
                sent = seq + 1
                ahead = begin + sent / rate - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)  # pacing the load, not synchronisation

        try:
            await asyncio.gather(publish(), faults(self, pub, progress))

            async def acked() -> bool:
                return pub.all_acked()

            await wait_for(acked, timeout=settle_s, what="every PUBACK")

            async def settled() -> bool:
                return (await self.stored())[1] >= readings

            with contextlib.suppress(AssertionError):
                await wait_for(settled, timeout=settle_s, what="every reading stored")
            await asyncio.sleep(0)
            stored, distinct = await self.stored()
            connections = []
            dropped = 0.0
            for ing in self.ingestors:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    m = await ing.metrics()
                    connections.append(m.get("sonae_ingest_mqtt_connections", 0))
                    dropped += m.get("sonae_ingest_redeliveries_dropped", 0)
        finally:
            pub.stop()
        codes = pub.outcome()
        return Trial(name=name, published=readings, stored=stored, distinct=distinct,
                     pubacks={f"0x{k:02x}": v for k, v in sorted(codes.items())},
                     peak_unacked=self.peak_unacked, peak_inbox=self.peak_inbox, max_inflight=self.max_inflight,
                     connections=connections, seconds=time.monotonic() - started, rss_mb=list(self.rss_mb),
                     redeliveries_dropped=dropped)


async def at(progress: Callable[[], float], fraction: float) -> None:
    """Wait until the publisher is ``fraction`` of the way through."""
    async def reached() -> bool:
        return progress() >= fraction

    await wait_for(reached, timeout=600, what=f"the publisher {fraction:.0%} through")


async def fault_broker_restarts(rig: Rig, pub: Publisher, progress: Callable[[], float], *, times: int = 2) -> None:
    """Restart the broker (SIGTERM, start again at once) ``times`` times, spread over the stream."""
    for k in range(times):
        await at(progress, (k + 1) / (times + 1))
        await asyncio.to_thread(rig.broker.stop)
        await asyncio.to_thread(rig.broker.start)


async def fault_broker_down(rig: Rig, pub: Publisher, progress: Callable[[], float], *, seconds: float = 15) -> None:
    """Stop the broker for ``seconds`` at a third of the stream (devices keep publishing into paho's queue)."""
    await at(progress, 1 / 3)
    await asyncio.to_thread(rig.broker.stop)
    await asyncio.sleep(seconds)  # the length of the outage is the fault itself
    await asyncio.to_thread(rig.broker.start)


async def fault_connection_cuts(rig: Rig, pub: Publisher, progress: Callable[[], float], *, cuts: int = 20) -> None:
    """Abort the ingestors' broker connections ``cuts`` times, evenly over the stream, each once the ingestor has
    reconnected since the cut before."""
    cut_at = [0] * len(rig.mqtt_proxies)
    for k in range(cuts):
        await at(progress, (k + 1) / (cuts + 1))
        for i, proxy in enumerate(rig.mqtt_proxies):
            await proxy.relaying_since(cut_at[i])
            cut_at[i] = proxy.accepted
            proxy.cut()
    # and after the last: the trial reads the ingestors' connection counts once the stream is stored, which the
    # last cut may come after (found: 20 of 21 counted, the last reconnect not yet made)
    for i, proxy in enumerate(rig.mqtt_proxies):
        await proxy.relaying_since(cut_at[i])

    async def reconnected() -> bool:
        counts = [(await ing.metrics()).get("sonae_ingest_mqtt_connections", 0) for ing in rig.ingestors]
        return all(c >= cuts + 1 for c in counts)

    await wait_for(reconnected, timeout=60, what="the ingestors' reconnect after the last cut")


async def fault_database_down(rig: Rig, pub: Publisher, progress: Callable[[], float], *, seconds: float = 25) -> None:
    """Take the database away from the ingestors for ``seconds`` (connections cut, new ones refused)."""
    assert rig.db_proxy is not None
    await at(progress, 0.2)
    rig.db_proxy.down()
    await asyncio.sleep(seconds)  # the length of the outage is the fault itself
    rig.db_proxy.restore()


def report(trials: list[Trial]) -> str:
    return json.dumps([t.result() for t in trials], indent=2)
