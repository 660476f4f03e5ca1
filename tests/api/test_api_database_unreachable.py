"""A database that cannot be reached is a 503 with ``Retry-After`` and a readable problem, never a 500.

Found (breakit6): during a database outage ``GET /api/v1/level`` answered 500 "Internal Server Error", which
the resident page could not tell from a bug and so kept showing an old level as current. The kind: every
handler that reads the database (api.edge maps the fault, :func:`sonae.db.database_unreachable`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from ingest.schema import migrate
from sonae.config import Settings
from sonae.db import database_unreachable
from tests.api_support import start_client
from tests.db_outage import DatabaseLink

#: what residents' pages and apps ask (a point in Koriyama; no data is needed for the answer to need the database)
RESIDENT_READS = ("/api/v1/level?lat=37.395&lon=140.365", "/api/v1/level?municipality=072036", "/api/v1/alerts",
                  "/api/v1/stations", "/api/v1/shelters?bbox=140.30,37.35,140.45,37.45&limit=10",
                  "/api/v1/alerts/feed.atom")


@pytest.fixture
async def link(database_url: str) -> AsyncIterator[DatabaseLink]:
    relay = DatabaseLink(database_url)
    await relay.start()
    yield relay
    await relay.cut()


def _app(pool: asyncpg.Pool, settings: Settings):  # type: ignore[no-untyped-def]
    from api.app import create_app

    return create_app(pool=pool, settings=settings)


async def _assert_unavailable(client: TestClient, path: str) -> None:
    resp = await client.get(path)
    body = await resp.text()
    assert resp.status == 503, (path, resp.status, body[:300])
    assert resp.content_type == "application/problem+json", path
    assert resp.headers["Retry-After"].isdigit() and int(resp.headers["Retry-After"]) > 0, path
    problem = await resp.json()
    assert problem["status"] == 503 and problem["reason"] == "database_unreachable"
    assert "database" in problem["detail"] and "Try again" in problem["detail"]


async def test_resident_reads_answer_503_while_the_database_server_is_unreachable_and_200_after(
        database_url: str, link: DatabaseLink, settings: Settings) -> None:
    """The pool reaches the real server through a relay; cutting it is a server gone (refused, reset)."""
    async with asyncpg.create_pool(database_url) as direct:
        async with direct.acquire() as conn:
            await migrate(conn)
    pool = await asyncpg.create_pool(link.url, min_size=1, max_size=4)
    client = await start_client(_app(pool, settings))
    try:
        for path in RESIDENT_READS:
            resp = await client.get(path)
            assert resp.status == 200, (path, resp.status, (await resp.text())[:300])
        await link.cut()
        for path in RESIDENT_READS:
            await _assert_unavailable(client, path)
        await link.restore()
        for path in RESIDENT_READS:  # the pool reconnects by itself: nothing stays broken
            resp = await client.get(path)
            assert resp.status == 200, (path, resp.status)
    finally:
        await client.close()
        await link.cut()
        pool.terminate()


async def test_a_database_closed_to_connections_answers_503(
        database_url: str, pg_server_url: str, settings: Settings) -> None:
    """``ALLOW_CONNECTIONS false`` and its sessions ended (a database taken out for maintenance): the pool's
    connections are gone (57P01) and new ones refused (55000 "not currently accepting connections")."""
    name = database_url.rsplit("/", 1)[1]
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=8)
    async with pool.acquire() as conn:
        await migrate(conn)
    client = await start_client(_app(pool, settings))
    admin = await asyncpg.connect(pg_server_url)
    try:
        assert (await client.get(RESIDENT_READS[0])).status == 200
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        # with a timeout, pg_terminate_backend waits until each session has ended (PostgreSQL 14+)
        await admin.execute("SELECT pg_terminate_backend(pid, 20000) FROM pg_stat_activity WHERE datname = $1", name)
        for path in RESIDENT_READS[:3]:
            await _assert_unavailable(client, path)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await admin.close()
        await client.close()
        pool.terminate()


def test_query_faults_are_not_taken_for_an_outage() -> None:
    """Pure classification: a wrong query or value stays a 500 (a bug to fix), not "try again"."""
    assert not database_unreachable(asyncpg.UndefinedColumnError("column x does not exist"))
    assert not database_unreachable(ValueError("bad"))
    assert not database_unreachable(FileNotFoundError(2, "No such file"))  # a handler's file, not the database
    assert database_unreachable(ConnectionRefusedError(111, "Connection refused"))
    assert database_unreachable(asyncpg.AdminShutdownError("terminating connection due to administrator command"))
    try:
        try:
            raise ConnectionResetError(104, "reset")
        except ConnectionResetError as exc:
            raise RuntimeError("while reading") from exc
    except RuntimeError as wrapped:
        assert database_unreachable(wrapped)


async def test_a_database_host_name_that_no_longer_resolves_answers_503(
        database_url: str, settings: Settings) -> None:
    """review7: the pool reconnects by the database's host name (a container or Kubernetes service name that
    stops resolving while the database is down). asyncpg raises ``socket.gaierror``, an ``OSError`` whose errno
    is a resolver code (EAI_NONAME, EAI_AGAIN), not a network errno: :func:`sonae.db.is_transient_db_error`
    retried it (open_pool, ingest) but :func:`sonae.db.database_unreachable` did not count it, so the API
    answered 500. The same fault is one kind for every consumer."""
    async with asyncpg.create_pool(database_url) as direct:
        async with direct.acquire() as conn:
            await migrate(conn)
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    client = await start_client(_app(pool, settings))
    try:
        assert (await client.get(RESIDENT_READS[0])).status == 200
        # the name stops resolving (".invalid" never does, RFC 6761) and the pool's connections are gone
        pool.set_connect_args("postgresql://sonae@sonae-db.invalid:5432/sonae")
        await pool.expire_connections()
        for path in RESIDENT_READS[:3]:
            await _assert_unavailable(client, path)
    finally:
        await client.close()
        pool.terminate()


def test_a_resolver_failure_is_an_outage_and_a_file_error_is_not() -> None:
    import socket

    assert database_unreachable(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"))
    assert database_unreachable(socket.gaierror(socket.EAI_NONAME, "Name or service not known"))
    assert not database_unreachable(PermissionError(13, "Permission denied"))
