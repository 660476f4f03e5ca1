"""Scale-out rehearsal: two ingestors and two API processes behind nginx, with the real programs.

    .venv/bin/python bench/scaleout.py [--devices 8] [--messages 12000] [--rate 1500] [--json out.json]

What runs (all on 127.0.0.1, all started and stopped here):

* Mosquitto with ``deploy/mosquitto/mosquitto.conf`` (ports and paths swapped, nothing else), users
  made by ``app.provisioning`` as ``sonae devices add`` makes them: every simulated device logs in
  as itself and may publish only its own station's topics;
* a fresh database on the local PostgreSQL (``--database-url``, default
  ``postgresql://postgres@127.0.0.1:5432/postgres``; dropped at the end);
* ``sonae ingest --instance a`` and ``--instance b`` with ``ingest.partition`` ``0/2`` and ``1/2``:
  devices alternate between two municipalities whose codes fall to the two partitions, and each
  ingestor subscribes plainly to its municipality (no shared subscription, see ingest/partition.py);
* ``sonae api`` twice, behind nginx configured with ``deploy/nginx/sonae-http.conf`` and
  ``deploy/nginx/sonae-locations.conf`` (TLS with a throwaway certificate when openssl exists).

What it does and checks:

1. devices publish ``--messages`` readings at ``--rate``/s (QoS 1) while HTTP clients read through
   nginx; at 35 % ingestor *a* is killed with SIGKILL and restarted 3 s later; at 60 % API process 1
   is killed with SIGKILL and restarted 3 s later;
2. **ingest**: every published reading is in the table exactly once (nothing lost, nothing doubled),
   and both ingestors took a share of the stream;
3. **API**: HTTP clients through nginx saw no failed request across the API kill (nginx retries
   the other replica), and the longest gap between two successful answers is printed;
4. **events** (when ``GET /api/v1/events`` exists): SSE clients through nginx survive the API kill
   with one reconnect, and an alert raised through API process 1 — a staff account issues an
   exercise evacuation order with ``POST /api/v1/orders`` — reaches the SSE clients of API process 2
   and those behind nginx (the database NOTIFYs every API process).

Exit status: 0 every check passed, 1 a check failed, 2 the rehearsal cannot run here (a program is
missing; the message says which and how to install it).

The ingest processes expose Prometheus metrics so that the split can be measured: with the setting
``ingest.metrics_port`` (``SONAE_INGEST_METRICS_PORT``) when Sonae has it, else by starting the
real ``sonae ingest`` entry point under a two-line wrapper that first starts prometheus_client's HTTP
server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402

from app.provisioning import adapt_mosquitto_config, add_client  # noqa: E402
from sonae.embedded import free_port, port_open  # noqa: E402

MUNICIPALITY = "072036"
#: devices alternate between these; 072010 falls to partition 0/2 and 072036 to 1/2 (ingest/partition.py)
DEVICE_MUNICIPALITIES = ("072010", "072036")
PARTITION = {"a": "0/2", "b": "1/2"}


def municipality_of(index: int) -> str:
    return DEVICE_MUNICIPALITIES[index % len(DEVICE_MUNICIPALITIES)]
INGEST_METRICS_WRAPPER = (
    "import sys; from prometheus_client import start_http_server; "
    "start_http_server(int(sys.argv[1]), addr='127.0.0.1'); "
    "from app.cli import main; sys.exit(main(sys.argv[2:]))"
)


class CannotRun(RuntimeError):
    """A program the rehearsal needs is missing."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- processes ----------------------------------------------------------------------------------------
@dataclass
class Proc:
    name: str
    cmd: list[str]
    env: dict[str, str]
    logfile: Path
    popen: subprocess.Popen[bytes] | None = None
    lives: int = 0

    def start(self) -> None:
        self.lives += 1
        with open(self.logfile, "ab") as fh:
            fh.write(f"\n--- start {self.lives} ---\n".encode())
            fh.flush()
            self.popen = subprocess.Popen(self.cmd, env=self.env, stdout=fh, stderr=fh, stdin=subprocess.DEVNULL,
                                          cwd=ROOT, start_new_session=True)

    def kill9(self) -> None:
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(10)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(15)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.logfile.read_text(errors="replace")[-n:] if self.logfile.exists() else ""


@dataclass
class Results:
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    measured: dict[str, Any] = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] = (ok, detail)
        log(f"{'PASS' if ok else 'FAIL'} {name}: {detail}")


def _sonae_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "sonae"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "app.cli"]


def _has_setting(name: str) -> bool:
    from sonae.config import SCHEMA

    return any(s.name == name for s in SCHEMA)


def _with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


class Rehearsal:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="sonae-scaleout-"))
        self.procs: dict[str, Proc] = {}
        self.results = Results()
        self.db_name = f"sonae_scaleout_{uuid.uuid4().hex[:10]}"
        self.server_url = args.database_url
        self.db_url = _with_db(self.server_url, self.db_name)
        self.devices = [f"gauge-{i:02d}" for i in range(args.devices)]
        self.stations = {d: f"so-{d[-2:]}" for d in self.devices}
        self.passwords: dict[str, str] = {}
        self.mqtt_port = free_port()
        self.api_ports = [free_port(), free_port()]
        self.ingest_metrics = {"a": free_port(), "b": free_port()}
        self.proxy_port = free_port()
        self.tls = False
        self.published: dict[tuple[str, datetime], float] = {}  # (station, ts) -> publish wall time
        self.acked_history: dict[str, list[float]] = {"a": [], "b": []}  # last scrape of each life
        self.events_available = False

    # -- preconditions and set-up ---------------------------------------------------------------------
    def preflight(self) -> None:
        missing = []
        self.mosquitto = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists()
                                                       else None)
        self.nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if not self.mosquitto:
            missing.append("mosquitto (apt-get install -y mosquitto)")
        if not self.nginx:
            missing.append("nginx, the reverse proxy in front of the two API processes (apt-get install -y nginx)")
        if missing:
            raise CannotRun("missing: " + "; ".join(missing))
        self.openssl = shutil.which("openssl")

    async def setup_database(self) -> None:
        try:
            admin = await asyncpg.connect(self.server_url, timeout=5)
        except (OSError, asyncpg.PostgresError) as exc:
            raise CannotRun(f"no PostgreSQL at {self.server_url} ({exc}); pass --database-url") from exc
        try:
            await admin.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            await admin.close()
        log(f"database {self.db_name} created")

    async def drop_database(self) -> None:
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(self.server_url, timeout=5)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            finally:
                await admin.close()

    def setup_broker(self) -> None:
        root = self.work / "mosquitto"
        (root / "data").mkdir(parents=True)
        passwd, acl = root / "passwd", root / "acl"
        files = {"passwd_file": passwd, "acl_file": acl}
        self.passwords["sonae-ingest"] = add_client("sonae-ingest", role="ingest", **files).password or ""  # type: ignore[arg-type]
        for i, d in enumerate(self.devices):
            made = add_client(d, municipalities=[municipality_of(i)], stations=[self.stations[d]], **files)  # type: ignore[arg-type]
            self.passwords[d] = made.password or ""
        conf = root / "mosquitto.conf"
        conf.write_text(adapt_mosquitto_config(
            (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text(), ports=[self.mqtt_port],
            passwd_file=passwd, acl_file=acl, persistence_dir=root / "data", log_file=root / "mosquitto.log"))
        assert self.mosquitto
        p = Proc("mosquitto", [self.mosquitto, "-c", str(conf)], dict(os.environ), self.work / "mosquitto.out")
        self.procs["mosquitto"] = p
        p.start()
        self._wait(lambda: port_open("127.0.0.1", self.mqtt_port), 10, "mosquitto", p)
        log(f"mosquitto (deploy/mosquitto/mosquitto.conf) on :{self.mqtt_port} with {len(self.devices) + 1} users")

    def _env(self, role: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
        env.update({
            "SONAE_DATABASE_URL": self.db_url,
            "SONAE_MQTT_URL": f"mqtt://sonae-ingest:{self.passwords['sonae-ingest']}@127.0.0.1:{self.mqtt_port}",
            "SONAE_MQTT_PROTOCOL": "5",
            "SONAE_LOG_FORMAT": "json",
            "SONAE_STATE_DIR": str(self.work / f"state-{role}"),
            "SONAE_DATABASE_POOL_SIZE": "4",
        })
        env.update(extra or {})
        return env

    def _wait(self, check: Any, timeout: float, what: str, proc: Proc | None = None) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if proc is not None and not proc.alive():
                raise RuntimeError(f"{what} exited while starting:\n{proc.tail()}")
            time.sleep(0.05)
        raise RuntimeError(f"{what} not ready within {timeout} s" + (f":\n{proc.tail()}" if proc else ""))

    async def migrate_and_register(self) -> None:
        out = await asyncio.to_thread(subprocess.run, _sonae_cmd() + ["db", "migrate"], env=self._env("migrate"),
                                      cwd=ROOT, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"sonae db migrate failed:\n{out.stderr[-3000:]}")
        from ingest.registry import Station, upsert_stations

        conn = await asyncpg.connect(self.db_url)
        try:
            await upsert_stations(conn, [Station(id=self.stations[d], name=f"Rehearsal {self.stations[d]}",
                                                 municipality_code=municipality_of(i))
                                         for i, d in enumerate(self.devices)])
        finally:
            await conn.close()
        log(f"schema migrated, {len(self.stations)} stations registered")

    def start_ingestor(self, instance: str) -> None:
        port = self.ingest_metrics[instance]
        if _has_setting("ingest.metrics_port"):
            cmd = _sonae_cmd() + ["ingest", "--instance", instance]
            env = self._env(f"ingest-{instance}", {"SONAE_INGEST_METRICS_PORT": str(port),
                                                   "SONAE_INGEST_PARTITION": PARTITION[instance]})
        else:
            cmd = [sys.executable, "-c", INGEST_METRICS_WRAPPER, str(port), "ingest", "--instance", instance]
            env = self._env(f"ingest-{instance}", {"SONAE_INGEST_PARTITION": PARTITION[instance]})
        name = f"ingest-{instance}"
        p = self.procs.get(name) or Proc(name, cmd, env, self.work / f"{name}.log")
        self.procs[name] = p
        before = p.tail(10**7).count('"ingest subscribed"')
        p.start()
        self._wait(lambda: p.tail(10**7).count('"ingest subscribed"') > before, 60, name, p)

    def start_api(self, index: int) -> None:
        port = self.api_ports[index]
        name = f"api-{index + 1}"
        extra = {"SONAE_API_HOST": "127.0.0.1"}
        if _has_setting("api.trust_forwarded_for"):
            extra["SONAE_API_TRUST_FORWARDED_FOR"] = "true"  # behind nginx, as deployed
        p = self.procs.get(name) or Proc(name, _sonae_cmd() + ["api", "--port", str(port)], self._env(name, extra),
                                         self.work / f"{name}.log")
        self.procs[name] = p
        p.start()

        def ready() -> bool:
            import urllib.request

            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        self._wait(ready, 60, name, p)

    def start_proxy(self) -> None:
        root = self.work / "nginx"
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (root / "tmp" / d).mkdir(parents=True)
        listen = f"listen 127.0.0.1:{self.proxy_port}"
        tls_lines = ""
        if self.openssl:
            cert, key = root / "cert.pem", root / "key.pem"
            subprocess.run([self.openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                            "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
            listen += " ssl"
            tls_lines = f"ssl_certificate {cert};\n        ssl_certificate_key {key};"
            self.tls = True
            self.cert = cert
        upstreams = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=10s;" for p in self.api_ports)
        conf = root / "nginx.conf"
        conf.write_text(f"""\
{'user root;' if os.geteuid() == 0 else ''}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {root}/tmp/body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    include {ROOT}/deploy/nginx/sonae-http.conf;
    upstream sonae_api {{
{upstreams}
        keepalive 16;
    }}
    server {{
        {listen};
        {tls_lines}
        include {ROOT}/deploy/nginx/sonae-locations.conf;
    }}
}}
""")
        assert self.nginx
        test = subprocess.run([self.nginx, "-t", "-c", str(conf), "-p", str(root)], capture_output=True, text=True)
        if test.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{test.stderr}")
        p = Proc("nginx", [self.nginx, "-c", str(conf), "-p", str(root)], dict(os.environ), self.work / "nginx.log")
        self.procs["nginx"] = p
        p.start()
        self._wait(lambda: port_open("127.0.0.1", self.proxy_port), 10, "nginx", p)
        log(f"nginx ({'TLS' if self.tls else 'plain HTTP: no openssl'}) on :{self.proxy_port} → API :{self.api_ports[0]}, "
            f":{self.api_ports[1]}")

    @property
    def proxy_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.proxy_port}"

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.tls:
            return False
        return ssl.create_default_context(cafile=str(self.cert))

    # -- measuring ------------------------------------------------------------------------------------
    async def scrape(self, session: aiohttp.ClientSession, url: str) -> dict[str, float]:
        out: dict[str, float] = {}
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                text = await r.text()
        except (aiohttp.ClientError, TimeoutError):
            return out
        for line in text.splitlines():
            if line.startswith("sonae_") and " " in line:
                key, _, value = line.rpartition(" ")
                with contextlib.suppress(ValueError):
                    out[key] = float(value)
        return out

    async def ingest_counter(self, session: aiohttp.ClientSession, instance: str, name: str) -> float:
        m = await self.scrape(session, f"http://127.0.0.1:{self.ingest_metrics[instance]}/metrics")
        return m.get(name, 0.0)

    async def publish(self, stop_at: asyncio.Event, progress: list[int]) -> None:
        from ingest.contract import encode_reading, topic_for
        from sonae.mqtt import MqttClient

        per_device = self.args.messages // len(self.devices)
        total = per_device * len(self.devices)
        interval = len(self.devices) / self.args.rate
        clients = []
        for d in self.devices:
            c = MqttClient(f"mqtt://{d}:{self.passwords[d]}@127.0.0.1:{self.mqtt_port}", client_id=d, protocol="5",
                           max_outstanding=200)
            await c.__aenter__()
            clients.append(c)
        last_ts: dict[str, datetime] = {}

        async def device(i: int, client: Any) -> None:
            station = self.stations[self.devices[i]]
            topic = topic_for("sonae/v1", municipality_of(i), station, "level")
            start = time.monotonic() + i * interval / len(self.devices)
            for seq in range(per_device):
                await asyncio.sleep(max(0.0, start + seq * interval - time.monotonic()))
                now = datetime.now(UTC)
                ts = max(now, last_ts.get(station, now - timedelta(seconds=1)) + timedelta(microseconds=1))
                last_ts[station] = ts
                await client.publish(topic, encode_reading(value=1.0 + (seq % 50) / 100, ts=ts, seq=seq), qos=1)
                self.published[(station, ts)] = time.time()
                progress[0] += 1
            await client.flush(timeout=60)

        try:
            await asyncio.gather(*(device(i, c) for i, c in enumerate(clients)))
        finally:
            for c in clients:
                await c.__aexit__(None, None, None)
        log(f"published {progress[0]} of {total} readings (all PUBACKed)")
        stop_at.set()

    async def http_client(self, n: int, stop: asyncio.Event, stats: dict[str, Any]) -> None:
        """A resident's browser: ~5 requests/s from its own loopback address (127.0.0.10+n), so the API's
        per-client rate limit sees separate clients through nginx's X-Forwarded-For, as in production."""
        stations = list(self.stations.values())
        rng = random.Random(n)
        last_ok = time.monotonic()
        connector = aiohttp.TCPConnector(ssl=self.ssl_context(), local_addr=(f"127.0.0.{10 + n}", 0))
        async with aiohttp.ClientSession(connector=connector) as s:
            while not stop.is_set():
                station = rng.choice(stations)
                url = f"{self.proxy_url}/api/v1/stations/{station}/readings"
                t0 = time.monotonic()
                try:
                    async with s.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                        await r.read()
                        ok = r.status == 200
                        if not ok:
                            stats["errors"].append(f"{r.status} {time.strftime('%H:%M:%S')}")
                except (aiohttp.ClientError, TimeoutError) as exc:
                    ok = False
                    stats["errors"].append(f"{type(exc).__name__} {time.strftime('%H:%M:%S')}")
                t1 = time.monotonic()
                stats["requests"] += 1
                if ok:
                    stats["latency"].append(t1 - t0)
                    stats["max_gap"] = max(stats["max_gap"], t1 - last_ok)
                    last_ok = t1
                await asyncio.sleep(0.2)

    async def events_exist(self) -> bool:
        async with aiohttp.ClientSession() as s:
            try:
                async with s.get(f"http://127.0.0.1:{self.api_ports[0]}/api/v1/events",
                                 headers={"Accept": "text/event-stream"},
                                 timeout=aiohttp.ClientTimeout(total=5, sock_read=2)) as r:
                    return r.status == 200 and r.content_type == "text/event-stream"
            except (aiohttp.ClientError, TimeoutError):
                return False

    async def sse_client(self, base: str, name: str, stop: asyncio.Event, stats: dict[str, Any]) -> None:
        """Follow /api/v1/events like a browser's EventSource: reconnect with Last-Event-ID."""
        last_id: str | None = None
        connector = aiohttp.TCPConnector(ssl=self.ssl_context() if base.startswith("https") else False)
        me = stats["clients"].setdefault(name, {"connects": 0, "events": [], "reconnect_s": []})
        async with aiohttp.ClientSession(connector=connector) as s:
            dropped_at: float | None = None
            while not stop.is_set():
                headers = {"Accept": "text/event-stream"}
                if last_id:
                    headers["Last-Event-ID"] = last_id
                try:
                    async with s.get(f"{base}/api/v1/events", headers=headers,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as r:
                        if r.status != 200:
                            await asyncio.sleep(0.2)
                            continue
                        me["connects"] += 1
                        if dropped_at is not None:
                            me["reconnect_s"].append(time.monotonic() - dropped_at)
                            dropped_at = None
                        data: list[str] = []
                        async for raw in r.content:
                            line = raw.decode("utf-8", "replace").rstrip("\r\n")
                            if line.startswith("id:"):
                                last_id = line[3:].strip()
                            elif line.startswith("data:"):
                                data.append(line[5:].strip())
                            elif not line and data:
                                me["events"].append((time.monotonic(), "\n".join(data)))
                                data = []
                            if stop.is_set():
                                break
                except (aiohttp.ClientError, TimeoutError, ConnectionError):
                    pass
                if not stop.is_set() and dropped_at is None:
                    dropped_at = time.monotonic()
                await asyncio.sleep(0.1)

    # -- the rehearsal --------------------------------------------------------------------------------
    async def run(self) -> None:
        await self.setup_database()
        self.setup_broker()
        await self.migrate_and_register()
        for instance in ("a", "b"):
            self.start_ingestor(instance)
        log("ingestors a (partition 0/2) and b (1/2) subscribed plainly to their municipalities")
        for i in (0, 1):
            self.start_api(i)
        log(f"API processes ready on :{self.api_ports[0]} and :{self.api_ports[1]}")
        self.start_proxy()
        self.events_available = await self.events_exist()
        log("GET /api/v1/events: " + ("available, SSE checks enabled" if self.events_available else
                                      "not available (404 or not an event stream): SSE and alert checks skipped"))

        stop_http = asyncio.Event()
        published_all = asyncio.Event()
        progress = [0]
        http_stats: dict[str, Any] = {"requests": 0, "errors": [], "latency": [], "max_gap": 0.0}
        sse_stats: dict[str, Any] = {"clients": {}}
        background = [asyncio.create_task(self.http_client(n, stop_http, http_stats))
                      for n in range(self.args.http_clients)]
        if self.events_available:
            for n in range(self.args.sse_clients):
                background.append(asyncio.create_task(self.sse_client(self.proxy_url, f"proxy-{n}", stop_http,
                                                                      sse_stats)))
            for i, port in enumerate(self.api_ports):
                background.append(asyncio.create_task(self.sse_client(f"http://127.0.0.1:{port}", f"direct-api-{i + 1}",
                                                                      stop_http, sse_stats)))
        total = (self.args.messages // len(self.devices)) * len(self.devices)
        t_start = time.monotonic()
        publisher = asyncio.create_task(self.publish(published_all, progress))
        timeline: list[str] = []
        async with aiohttp.ClientSession() as metrics_session:
            async def at(fraction: float) -> None:
                while progress[0] < fraction * total and not publisher.done():  # noqa: ASYNC110 - polls a counter
                    await asyncio.sleep(0.02)

            # kill ingestor a at 35 %
            await at(0.35)
            acked_a = await self.ingest_counter(metrics_session, "a", "sonae_ingest_messages_acked_total")
            self.procs["ingest-a"].kill9()
            self.acked_history["a"].append(acked_a)
            timeline.append(f"{time.monotonic() - t_start:5.1f}s kill -9 ingest-a after {progress[0]} published "
                            f"(it had acked {acked_a:.0f})")
            log(timeline[-1])
            await asyncio.sleep(3)
            await asyncio.to_thread(self.start_ingestor, "a")
            timeline.append(f"{time.monotonic() - t_start:5.1f}s ingest-a restarted (same instance: its session and "
                            "queued messages resume)")
            log(timeline[-1])

            # kill API 1 at 60 %
            await at(0.60)
            self.procs["api-1"].kill9()
            timeline.append(f"{time.monotonic() - t_start:5.1f}s kill -9 api-1 after {progress[0]} published")
            log(timeline[-1])
            await asyncio.sleep(3)
            await asyncio.to_thread(self.start_api, 0)
            timeline.append(f"{time.monotonic() - t_start:5.1f}s api-1 restarted")
            log(timeline[-1])

            await publisher
            publish_s = time.monotonic() - t_start

            # every published reading stored?
            conn = await asyncpg.connect(self.db_url)
            try:
                deadline = time.monotonic() + 90
                stored = 0
                while time.monotonic() < deadline:
                    stored = int(await conn.fetchval("SELECT count(*) FROM readings WHERE station_id LIKE 'so-%'"))
                    if stored >= len(self.published):
                        break
                    await asyncio.sleep(0.25)
                drained_s = time.monotonic() - t_start - publish_s
                rows = await conn.fetch("SELECT station_id, ts, received_at FROM readings WHERE station_id LIKE 'so-%'")
                distinct = int(await conn.fetchval(
                    "SELECT count(DISTINCT (station_id, kind, ts)) FROM readings WHERE station_id LIKE 'so-%'"))
                dead = int(await conn.fetchval("SELECT count(*) FROM dead_letters"))
                quarantined = int(await conn.fetchval("SELECT count(*) FROM quarantined_readings"))
            finally:
                await conn.close()

            final = {i: await self.scrape(metrics_session, f"http://127.0.0.1:{self.ingest_metrics[i]}/metrics")
                     for i in ("a", "b")}
            if self.events_available:
                await self.check_alert_across_apis(sse_stats)
        stop_http.set()
        await asyncio.sleep(0.1)
        for t in background:
            t.cancel()
        await asyncio.gather(*background, return_exceptions=True)

        self.report_ingest(total, rows, distinct, dead, quarantined, final, publish_s, drained_s, timeline)
        self.report_http(http_stats)
        if self.events_available:
            self.report_sse(sse_stats)

    async def check_alert_across_apis(self, sse_stats: dict[str, Any]) -> None:
        """A staff member issues an (exercise) evacuation order through API process 1; the alert must
        reach the SSE clients of API process 2 and those behind nginx (via PostgreSQL NOTIFY)."""
        try:
            from api.auth import create_account
        except ImportError:
            self.results.check("alert reaches SSE clients of both API processes", False,
                               "api.auth.create_account is missing: cannot make a staff account")
            return
        password = uuid.uuid4().hex
        conn = await asyncpg.connect(self.db_url)
        try:
            await create_account(conn, username="rehearsal-staff", password=password, role="staff",
                                 municipality_code=MUNICIPALITY)
        finally:
            await conn.close()
        api1 = f"http://127.0.0.1:{self.api_ports[0]}"
        before = {n: len(c["events"]) for n, c in sse_stats["clients"].items()}
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{api1}/api/v1/auth/token",
                              json={"username": "rehearsal-staff", "password": password}) as r:
                if r.status != 201:
                    self.results.check("alert reaches SSE clients of both API processes", False,
                                       f"login on api-1 answered {r.status}: {(await r.text())[:200]}")
                    return
                token = (await r.json())["access_token"]
            t0 = time.monotonic()
            async with s.post(f"{api1}/api/v1/orders", headers={"Authorization": f"Bearer {token}"},
                              json={"municipality_code": MUNICIPALITY, "level": 3, "exercise": True,
                                    "note": "scale-out rehearsal"}) as r:
                body = await r.text()
                if r.status != 201:
                    self.results.check("alert reaches SSE clients of both API processes", False,
                                       f"POST /api/v1/orders on api-1 answered {r.status}: {body[:200]}")
                    return
                alert_id = json.loads(body)["alert_id"]
        needle = f'"id": {alert_id},'
        compact = f'"id":{alert_id},'
        deadline = t0 + 20
        seen: dict[str, float] = {}
        while time.monotonic() < deadline and len(seen) < len(sse_stats["clients"]):
            for n, c in sse_stats["clients"].items():
                for ts, data in c["events"][before.get(n, 0):]:
                    if n not in seen and (needle in data or compact in data):
                        seen[n] = ts - t0
            await asyncio.sleep(0.05)
        self.results.measured["alert_to_sse_s"] = {n: round(v, 3) for n, v in seen.items()}
        wanted = set(sse_stats["clients"])
        self.results.check(
            "alert raised through api-1 reaches SSE clients of api-2 and behind nginx",
            "direct-api-2" in seen and seen.keys() == wanted,
            f"alert {alert_id} (exercise evacuation order, POST /api/v1/orders on api-1) seen by "
            f"{len(seen)}/{len(wanted)} SSE clients: "
            + (", ".join(f"{n} {v * 1000:.0f} ms" for n, v in sorted(seen.items())) or "none"))

    # -- reporting ------------------------------------------------------------------------------------
    def report_ingest(self, total: int, rows: list[Any], distinct: int, dead: int, quarantined: int,
                      final: dict[str, dict[str, float]], publish_s: float, drained_s: float,
                      timeline: list[str]) -> None:
        stored = {(r["station_id"], r["ts"]): r["received_at"] for r in rows}
        published = set(self.published)
        missing = published - set(stored)
        extra = set(stored) - published
        lags = [(stored[k] - k[1]).total_seconds() for k in published & set(stored)]
        m = self.results.measured
        acked = {i: sum(self.acked_history[i]) + final[i].get("sonae_ingest_messages_acked_total", 0.0)
                 for i in ("a", "b")}
        dups = sum(final[i].get("sonae_ingest_duplicates_total", 0.0) for i in ("a", "b"))
        m.update({
            "published": len(published), "rows": len(rows), "distinct_rows": distinct, "missing": len(missing),
            "unexpected_rows": len(extra), "dead_letters": dead, "quarantined": quarantined,
            "acked_by_instance": {k: int(v) for k, v in acked.items()},
            "redelivered_duplicates_skipped": int(dups),
            "publish_seconds": round(publish_s, 2), "publish_rate_per_s": round(len(published) / publish_s, 1),
            "drain_after_publish_seconds": round(drained_s, 2),
            "lag_p50_s": round(percentile(lags, 0.5), 3), "lag_p99_s": round(percentile(lags, 0.99), 3),
            "lag_max_s": round(max(lags), 3) if lags else None,
            "timeline": timeline,
        })
        log("timeline:\n    " + "\n    ".join(timeline))
        self.results.check("nothing lost", not missing and len(published) == total,
                           f"{len(published)} published, {len(published) - len(missing)} stored, {len(missing)} missing")
        self.results.check("nothing doubled", len(rows) == distinct == len(published) and not extra,
                           f"{len(rows)} rows, {distinct} distinct, {len(extra)} not published; "
                           f"{int(dups)} redelivered messages skipped as duplicates")
        share = {k: v / max(1.0, sum(acked.values())) for k, v in acked.items()}
        self.results.check("both ingestors share the stream", all(s > 0.1 for s in share.values()),
                           ", ".join(f"ingest-{k} acked {int(v)} ({share[k]:.0%})" for k, v in acked.items()))
        self.results.check("no dead letters or quarantine", dead == 0 and quarantined == 0,
                           f"{dead} dead letters, {quarantined} quarantined")
        log(f"rate {m['publish_rate_per_s']}/s over {m['publish_seconds']} s; publish→commit lag p50 "
            f"{m['lag_p50_s']} s, p99 {m['lag_p99_s']} s, max {m['lag_max_s']} s (the max is the killed "
            f"ingestor's share waiting for it); drained {m['drain_after_publish_seconds']} s after the last publish")

    def report_http(self, s: dict[str, Any]) -> None:
        m = self.results.measured
        m["http"] = {"requests": s["requests"], "failed": len(s["errors"]), "errors": s["errors"][:20],
                     "latency_p50_ms": round(percentile(s["latency"], 0.5) * 1000, 1),
                     "latency_p99_ms": round(percentile(s["latency"], 0.99) * 1000, 1),
                     "longest_gap_between_successes_s": round(s["max_gap"], 3)}
        self.results.check("HTTP clients through nginx survive kill -9 of an API process", not s["errors"],
                            f"{s['requests']} requests, {len(s['errors'])} failed; p50 {m['http']['latency_p50_ms']} ms, "
                            f"p99 {m['http']['latency_p99_ms']} ms, longest gap "
                            f"{m['http']['longest_gap_between_successes_s']} s")

    def report_sse(self, s: dict[str, Any]) -> None:
        proxy = {n: c for n, c in s["clients"].items() if n.startswith("proxy-")}
        reconnects = [r for c in proxy.values() for r in c["reconnect_s"]]
        worst = max(reconnects) if reconnects else 0.0
        dropped = sum(1 for c in proxy.values() if c["connects"] > 1)
        self.results.measured["sse"] = {"clients_via_proxy": len(proxy), "clients_that_reconnected": dropped,
                                        "reconnect_s_max": round(worst, 3),
                                        "connects": {n: c["connects"] for n, c in s["clients"].items()}}
        ok = all(c["connects"] >= 1 for c in proxy.values()) and all(len(c["reconnect_s"]) <= 1 for c in proxy.values()) \
            and worst < 5
        self.results.check("SSE clients through nginx lose at most one reconnect", ok,
                           f"{dropped}/{len(proxy)} reconnected once (they were on the killed API), longest "
                           f"reconnect {worst:.2f} s")

    def stop(self) -> None:
        for name in sorted(self.procs, key=lambda n: n == "mosquitto"):  # the broker last
            self.procs[name].stop()


async def amain(args: argparse.Namespace) -> int:
    r = Rehearsal(args)
    try:
        r.preflight()
    except CannotRun as exc:
        print(f"scaleout: cannot run here: {exc}", file=sys.stderr)
        return 2
    try:
        await r.run()
    except CannotRun as exc:
        print(f"scaleout: cannot run here: {exc}", file=sys.stderr)
        return 2
    except Exception:
        for p in r.procs.values():
            print(f"--- {p.name} (tail of {p.logfile}) ---\n{p.tail(2000)}", file=sys.stderr)
        raise
    finally:
        r.stop()
        await r.drop_database()
        if args.keep:
            log(f"work directory kept: {r.work}")
        else:
            shutil.rmtree(r.work, ignore_errors=True)
    failed = [n for n, (ok, _) in r.results.checks.items() if not ok]
    if args.json:
        report = json.dumps({"checks": {n: {"ok": ok, "detail": d} for n, (ok, d) in r.results.checks.items()},
                             "measured": r.results.measured, "events_available": r.events_available},
                            indent=2, default=str)
        await asyncio.to_thread(Path(args.json).write_text, report)
    print(json.dumps(r.results.measured, indent=2, default=str))
    passed = len(r.results.checks) - len(failed)
    print(f"{passed} passed, {len(failed)} failed" + ("" if r.events_available else
                                                      " (SSE/alert checks skipped: no GET /api/v1/events)"))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=8, help="simulated devices (each its own MQTT user)")
    p.add_argument("--messages", type=int, default=12000, help="readings to publish in all")
    p.add_argument("--rate", type=float, default=1500.0, help="readings per second in all")
    p.add_argument("--http-clients", type=int, default=8, help="simulated residents, ~5 requests/s each")
    p.add_argument("--sse-clients", type=int, default=4)
    p.add_argument("--database-url", default=os.environ.get("SONAE_TEST_DATABASE_URL",
                                                            "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="a PostgreSQL server URL; a fresh database is created on it and dropped afterwards")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = p.parse_args(argv)
    if args.devices < 2 or args.messages < args.devices * 10:
        p.error("need at least 2 devices and 10 messages per device")
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
