"""A database that refuses connections for a while is an outage, not a fault of the readings (breakit6:
``ALTER DATABASE … ALLOW_CONNECTIONS false`` ended `sonae run` with "ingest failed … ObjectNotInPrerequisiteStateError",
SQLSTATE 55000, missing from ingest's own list of transient errors).

Real PostgreSQL: the classification is checked on errors the server really sends, and ingest on a test database
whose connections are refused and its sessions terminated, then allowed again.
"""

from __future__ import annotations

import asyncpg
import pytest

from ingest import metrics
from sonae.config import Settings
from sonae.db import is_transient_db_error
from tests.conftest import with_database
from tests.ingest_support import count, publish_all, readings_for, register, running_ingestor, wait_until


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


async def _allow(admin_url: str, database: str, allow: bool) -> None:
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {"true" if allow else "false"}')
        if not allow:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
    finally:
        await admin.close()


async def test_the_servers_own_errors_are_classified(database_url: str, pg_server_url: str) -> None:
    """55000 as the server's refusal of a session (FATAL) is transient; 55000 as a statement's ERROR is not
    (retrying it would stall ingest for good); a terminated session (57P01) is; a constraint error is not."""
    admin_url = with_database(pg_server_url, "postgres")
    conn = await asyncpg.connect(database_url)
    try:
        with pytest.raises(asyncpg.PostgresError) as statement:
            await conn.fetchval("SELECT currval('no_such_sequence_yet')")  # 42P01, not transient
        assert not is_transient_db_error(statement.value)
        await conn.execute("CREATE SEQUENCE s")
        with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError) as not_yet:
            await conn.fetchval("SELECT currval('s')")  # 55000 as an ERROR: "not yet defined in this session"
        assert not is_transient_db_error(not_yet.value)
        with pytest.raises(asyncpg.UniqueViolationError) as unique:
            await conn.execute("CREATE TABLE u (x int PRIMARY KEY); INSERT INTO u VALUES (1), (1)")
        assert not is_transient_db_error(unique.value)
    finally:
        await conn.close()
    await _allow(admin_url, _name(database_url), False)
    try:
        with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError) as refused:
            await asyncpg.connect(database_url)
        assert is_transient_db_error(refused.value), refused.value.as_dict()
    finally:
        await _allow(admin_url, _name(database_url), True)
    conn = await asyncpg.connect(database_url)
    try:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                                _name(database_url))
        finally:
            await admin.close()
        async def closed() -> bool:  # the server's FATAL 57P01 and its close have reached the client
            return conn.is_closed()
        await wait_until(closed, timeout=30, what="the terminated session seen closed")
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)) as terminated:
            await conn.fetchval("SELECT 1")
        assert is_transient_db_error(terminated.value)
    finally:
        await conn.close()


async def test_ingest_waits_out_a_database_that_refuses_connections(settings: Settings, pool: asyncpg.Pool,
                                                                    database_url: str, pg_server_url: str) -> None:
    """Connections refused (ALLOW_CONNECTIONS false) and every session terminated while readings arrive: ingest
    keeps running, retries, and once connections are allowed again stores every reading, none a dead letter."""
    admin_url = with_database(pg_server_url, "postgres")
    await register(pool, "r1")
    msgs = [("r1", "level", p) for _, p in readings_for("r1", 1000)]
    async with running_ingestor(settings, pool) as ingestor:
        await publish_all(settings, msgs[:400])
        await wait_until(lambda: count(pool, "SELECT count(*) = 400 FROM readings"), timeout=60, what="first part")
        errors_before = float(metrics.DB_ERRORS._value.get())
        await _allow(admin_url, _name(database_url), False)
        try:
            await publish_all(settings, msgs[400:])

            async def retrying() -> bool:
                return ingestor.client.unacked > 0 and float(metrics.DB_ERRORS._value.get()) >= errors_before + 2
            await wait_until(retrying, timeout=60, what="ingest retrying against the refusing database")
        finally:
            await _allow(admin_url, _name(database_url), True)
        await wait_until(lambda: count(pool, "SELECT count(*) = 1000 FROM readings"), timeout=90,
                         what="every reading once connections are allowed again")
    assert await count(pool, "SELECT count(*) FROM readings") == 1000
    assert await count(pool, "SELECT count(*) FROM dead_letters") == 0
