"""Real services for the tests.

* PostgreSQL: ``SONAE_TEST_DATABASE_URL`` when set (a server URL; each test gets its own fresh database
  on it), else the server on 127.0.0.1:5432 when one answers, else an embedded PostgreSQL that the
  test session starts in a temporary directory.
* TimescaleDB: with ``--backend=timescale`` (or ``SONAE_TEST_BACKEND=timescale``) every test that
  uses a database (``database_url``, ``pool``, ``settings``; they are marked ``storage``) runs on a
  TimescaleDB server instead: ``SONAE_TEST_TIMESCALE_URL`` when set, else a private one started with
  ``shared/timescaledb/timescaledb-server`` (looked for beside the project or its parent folders) in
  ``.state/test-timescaledb`` (kept between sessions; needs PostgreSQL 15 binaries and root or the
  postgres user). Without one, those tests skip and say why. ``./manage test`` runs the suite on
  plain PostgreSQL, then ``-m storage`` on TimescaleDB.
* MQTT: ``SONAE_TEST_MQTT_URL`` when set, else a broker the session starts with Sonae's own
  configuration (mosquitto when installed, amqtt otherwise) on a free port: ack-after-commit needs
  settings that a default broker lacks. Each test publishes under its own topic prefix.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import socket
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from simulators.replay import shared_data_dir
from sonae.config import Settings, load_settings
from sonae.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from sonae.migrations import migrate

ROOT = Path(__file__).resolve().parents[1]


#: the real public data set: ``$SONAE_SHARED_DATA``, else the product's rule (``shared/data`` beside the project
#: or one of its parent folders, so a git worktree under ``wt/NAME`` finds the one beside the main checkout;
#: :func:`simulators.replay.shared_data_dir`); tests that need it skip where it is not
SHARED = Path(os.environ.get("SONAE_SHARED_DATA") or shared_data_dir())
BACKENDS = ("plain", "timescale")
PG15 = Path("/usr/lib/postgresql/15/bin/postgres")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", choices=BACKENDS, default=os.environ.get("SONAE_TEST_BACKEND") or "plain",
                     help="database backend for tests that use one (default: $SONAE_TEST_BACKEND or plain)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "storage: uses a database (runs on both backends under ./manage test)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "database_url" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.storage)


def pytest_report_header(config: pytest.Config) -> str:
    return f"sonae database backend: {config.getoption('--backend')}"


def shared_data(*parts: str) -> Path:
    """A file of the real public data set beside the project (never copied into it)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is not present", allow_module_level=True)
    return path


def _pg_answers(url: str) -> bool:
    async def probe() -> bool:
        try:
            # refused at once when nothing listens; a busy server gets time to answer instead of
            # being taken for absent (which would start an embedded one)
            conn = await asyncpg.connect(url, timeout=30)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def timescale_script() -> Path | None:
    """``shared/timescaledb/timescaledb-server`` beside the project or one of its parent folders."""
    for folder in ROOT.parents:
        script = folder / "shared" / "timescaledb" / "timescaledb-server"
        if script.is_file():
            return script
    return None


def _timescale_unavailable() -> str | None:
    if timescale_script() is None:
        return "no TimescaleDB: shared/timescaledb/timescaledb-server not found (or set SONAE_TEST_TIMESCALE_URL)"
    if not PG15.exists():
        return f"no TimescaleDB: PostgreSQL 15 binaries are not installed ({PG15.parent})"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != "postgres":
        return "no TimescaleDB: timescaledb-server needs root or the postgres user"
    return None


class TimescaleServer:
    """A private TimescaleDB cluster in ``folder`` (kept between sessions), run by timescaledb-server."""

    def __init__(self, folder: Path, *, preload: bool = True) -> None:
        self.folder = folder
        self.preload = preload
        self.script = timescale_script()
        self.started = False

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.script is not None
        return subprocess.run([str(self.script), *args], capture_output=True, text=True, timeout=180)

    def _port(self) -> int | None:
        conf = self.folder / "data" / "postgresql.conf"
        found = re.findall(r"^port = (\d+)", conf.read_text(), re.M) if conf.exists() else []
        return int(found[-1]) if found else None

    def start(self) -> str:
        port = self._port() or free_port()
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        if self._run("status", str(self.folder)).returncode == 0 and _pg_answers(url):
            return url  # another session of this checkout runs it: share it, leave it running
        done = self._run("start", str(self.folder), str(port))
        if done.returncode != 0:
            raise RuntimeError(f"timescaledb-server start failed: {done.stderr.strip()[-500:]}")
        self.started = True
        conf = self.folder / "data" / "postgresql.conf"
        if not self.preload and "\nshared_preload_libraries = 'timescaledb'" in conf.read_text():
            # the extension stays installed, but the server no longer loads it at start
            self._run("stop", str(self.folder))
            conf.write_text(conf.read_text().replace("\nshared_preload_libraries = 'timescaledb'", "\n"))
            done = self._run("start", str(self.folder), str(port))
            if done.returncode != 0:
                raise RuntimeError(f"timescaledb-server start failed: {done.stderr.strip()[-500:]}")
        return done.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        if self.started:
            self._run("stop", str(self.folder))


@pytest.fixture(scope="session")
def timescale_server_url() -> Iterator[str]:
    """A TimescaleDB server URL (the extension preloaded), or the test skips saying why."""
    configured = os.environ.get("SONAE_TEST_TIMESCALE_URL")
    if configured:
        yield configured
        return
    reason = _timescale_unavailable()
    if reason:
        pytest.skip(reason)
    server = TimescaleServer(ROOT / ".state" / "test-timescaledb")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def timescale_unpreloaded_url() -> Iterator[str]:
    """A server with the TimescaleDB extension installed but not in ``shared_preload_libraries``."""
    reason = _timescale_unavailable()
    if reason:
        pytest.skip(reason)
    server = TimescaleServer(ROOT / ".state" / "test-timescaledb-unpreloaded", preload=False)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this session: ``plain`` or ``timescale``."""
    return str(request.config.getoption("--backend"))


@pytest.fixture(scope="session")
def plain_server_url() -> Iterator[str]:
    """A plain PostgreSQL server: ``SONAE_TEST_DATABASE_URL``, the local one, or an embedded one."""
    configured = os.environ.get("SONAE_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _pg_answers(local):
        yield local
        return
    with tempfile.TemporaryDirectory(prefix="sonae-test-pg-") as where:  # see private_tmp
        server = EmbeddedPostgres(Path(where), database="postgres")
        url = server.start()
        try:
            yield url
        finally:
            server.stop()


@pytest.fixture
def private_tmp() -> Iterator[Path]:
    """A temporary folder outside pytest's own root, for servers that run as another user.

    As root, PostgreSQL runs as an unprivileged user and Sonae opens the folders above its data for
    traversal (o+x); pytest sets its root (``/tmp/pytest-of-root``) back to 0700 whenever another pytest
    session starts on the machine, which would shut such a server out of its data mid-test."""
    with tempfile.TemporaryDirectory(prefix="sonae-test-") as where:
        yield Path(where)


@pytest.fixture(scope="session")
def pg_server_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The server of this session's backend (each test makes its own database on it)."""
    name = "timescale_server_url" if backend == "timescale" else "plain_server_url"
    return str(request.getfixturevalue(name))


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    """A fresh, empty database for one test (dropped afterwards)."""
    name = f"sonae_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield with_database(pg_server_url, name)
    admin = await asyncpg.connect(pg_server_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on a fresh, migrated database."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn)
    yield pool
    await pool.close()


@pytest.fixture
async def served_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on a fresh database prepared as every service prepares it
    (:func:`ingest.schema.prepare_schema`: migrated, with the shipped municipality list of all of Japan and
    Fukushima's 59 boundaries), so the coverage rule (:func:`ingest.municipalities.uncovered`) applies as in a
    deployment. ``pool`` loads no list and no boundaries: there any municipality code is taken, which hid that
    the documented 持世寺 replay could not register its gauge in a deployment."""
    from ingest.schema import prepare_schema

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    await prepare_schema(pool, load_settings(environ={"SONAE_DATABASE_URL": database_url}))
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def sonae_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker | str]:
    configured = os.environ.get("SONAE_TEST_MQTT_URL")
    if configured:
        yield configured
        return
    broker = EmbeddedBroker(tmp_path_factory.mktemp("mqtt"), port=free_port(), anonymous=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def mqtt_url(sonae_broker: EmbeddedBroker | str) -> str:
    return sonae_broker if isinstance(sonae_broker, str) else sonae_broker.url


@pytest.fixture(scope="session")
def mqtt_protocol(sonae_broker: EmbeddedBroker | str) -> str:
    return "5" if isinstance(sonae_broker, str) else sonae_broker.protocol


@pytest.fixture
def topic_prefix() -> str:
    """A topic root of this test's own, so tests never see each other's messages."""
    return f"t{uuid.uuid4().hex[:10]}/v1"


@pytest.fixture
def settings(database_url: str, mqtt_url: str, mqtt_protocol: str, topic_prefix: str, tmp_path: Path) -> Settings:
    env = {
        "SONAE_DATABASE_URL": database_url,
        "SONAE_MQTT_URL": mqtt_url,
        "SONAE_MQTT_PROTOCOL": mqtt_protocol,
        "SONAE_MQTT_TOPIC_PREFIX": topic_prefix,
        "SONAE_MQTT_CLIENT_ID": f"test-ingest-{uuid.uuid4().hex[:8]}",
        "SONAE_INGEST_SHARED_GROUP": "",  # the default: a plain persistent subscription
        "SONAE_STATE_DIR": str(tmp_path / "state"),
        "SONAE_LOG_FORMAT": "text",
    }
    return load_settings(environ=env)


@pytest.fixture
def unlimited_settings(database_url: str, mqtt_url: str, mqtt_protocol: str, topic_prefix: str,
                       tmp_path: Path) -> Settings:
    """Settings of an API for tests that send many requests from one address: as :func:`settings`, with
    the public rate limit off (it is tested on its own, ``tests/api/test_api_abuse.py``)."""
    return load_settings(environ={
        "SONAE_DATABASE_URL": database_url, "SONAE_MQTT_URL": mqtt_url, "SONAE_MQTT_PROTOCOL": mqtt_protocol,
        "SONAE_MQTT_TOPIC_PREFIX": topic_prefix, "SONAE_STATE_DIR": str(tmp_path / "state"),
        "SONAE_LOG_FORMAT": "text", "SONAE_API_RATE_LIMIT_PER_MINUTE": "0"})


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for the whole test.

    A socket is bound to it but never listens: connecting gets ECONNREFUSED, and no other program can
    start listening there meanwhile (a port merely probed free could be taken before the test uses it).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield int(s.getsockname()[1])
