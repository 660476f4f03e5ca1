"""Real services for the tests.

* PostgreSQL: ``SONAE_TEST_DATABASE_URL`` when set (a server URL; each test gets its own fresh database
  on it), else the server on 127.0.0.1:5432 when one answers, else an embedded PostgreSQL that the
  test session starts in a temporary directory.
* MQTT: ``SONAE_TEST_MQTT_URL`` when set, else a broker the session starts with Sonae's own
  configuration (mosquitto when installed, amqtt otherwise) on a free port: ack-after-commit needs
  settings that a default broker lacks. Each test publishes under its own topic prefix.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from sonae.config import Settings, load_settings
from sonae.embedded import EmbeddedBroker, EmbeddedPostgres, free_port
from sonae.migrations import migrate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """A file of the real public data set beside the project (never copied into it)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is not present")
    return path


def _pg_answers(url: str) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncpg.connect(url, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    configured = os.environ.get("SONAE_TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _pg_answers(local):
        yield local
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg"), database="postgres")
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


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


@pytest.fixture(scope="session")
def sonae_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker | str]:
    configured = os.environ.get("SONAE_TEST_MQTT_URL")
    if configured:
        yield configured
        return
    broker = EmbeddedBroker(tmp_path_factory.mktemp("mqtt"), port=free_port())
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


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
