"""Start-up on every realistic server: TimescaleDB absent, installed but not preloaded, present from
the start, added later to a database migrated as plain, and a database from before rollups became
tables (continuous aggregates). Each runs on a real server (tests/conftest.py)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from app.cli import main
from ingest.contract import Reading
from ingest.retention import apply_retention_policy, delete_expired
from ingest.rollups import BUCKETS, refresh_rollups
from ingest.store import write_batch
from sonae.migrations import MigrationError, migrate, timescale_available
from tests.conftest import ROOT, TimescaleServer, _timescale_unavailable, with_database
from tests.test_ingest_rollups import WIDTHS, assert_same, recompute, stored_rollups


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    name = f"sonae_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


async def _facts(conn: asyncpg.Connection) -> dict[str, object]:
    return {
        "extension": bool(await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")),
        "variants": {r["variant"] for r in await conn.fetch("SELECT variant FROM sonae_migrations WHERE variant IS NOT NULL")},
        "rollups": {r["relname"]: r["relkind"] for r in await conn.fetch(
            "SELECT relname, relkind::text FROM pg_class WHERE relname = ANY($1::text[]) AND relnamespace = 'public'::regnamespace",
            [t for t, _ in BUCKETS.values()])},
    }


async def _is_hypertable(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval(
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'readings'"))


def _history(now: datetime) -> list[Reading]:
    return [Reading("g", "level", now - timedelta(hours=5 * i), float(i % 11)) for i in range(200)]


async def _rollups_equal_raw(conn: asyncpg.Connection, readings: list[Reading]) -> None:
    for name, (table, _) in BUCKETS.items():
        assert_same(await stored_rollups(conn, table), recompute(readings, WIDTHS[name]), name)


def test_db_migrate_says_what_it_applied(plain_server_url: str, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str], tmp_path: object) -> None:
    async def make() -> str:
        name = f"sonae_test_{uuid.uuid4().hex[:12]}"
        admin = await asyncpg.connect(plain_server_url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        return name

    name = asyncio.run(make())
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # main() installs its own handler
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setenv("SONAE_DATABASE_URL", with_database(plain_server_url, name))
    monkeypatch.setenv("SONAE_STATE_DIR", str(tmp_path))
    try:
        assert main(["db", "migrate"]) == 0
        first = capsys.readouterr().out
        assert "applied" in first and "ingest/017_rollups_japan_days" in first and "up to date" not in first
        assert main(["db", "migrate"]) == 0
        assert capsys.readouterr().out.strip() == "schema is up to date"
    finally:
        async def drop() -> None:
            admin = await asyncpg.connect(plain_server_url)
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

        asyncio.run(drop())


async def test_without_the_extension_the_plain_schema_is_used(plain_server_url: str) -> None:
    async with fresh_database(plain_server_url) as url:
        conn = await asyncpg.connect(url)
        try:
            if await timescale_available(conn):
                pytest.skip("this PostgreSQL server has TimescaleDB installed")
            assert "ingest/003_timeseries.plain" in await migrate(conn)
            facts = await _facts(conn)
            assert facts == {"extension": False, "variants": {"plain"},
                             "rollups": {"readings_10m": "r", "readings_1h": "r", "readings_1d": "r"}}
        finally:
            await conn.close()


async def test_installed_but_not_preloaded_falls_back_to_plain_with_a_warning(
        timescale_unpreloaded_url: str, caplog: pytest.LogCaptureFixture) -> None:
    async with fresh_database(timescale_unpreloaded_url) as url:
        conn = await asyncpg.connect(url)
        try:
            assert await timescale_available(conn)
            with caplog.at_level(logging.WARNING, logger="sonae.migrations"):
                applied = await migrate(conn)
            assert "ingest/003_timeseries.plain" in applied
            assert any("shared_preload_libraries" in r.getMessage() for r in caplog.records)
            assert not conn.is_closed() and await migrate(conn) == []
            assert (await _facts(conn))["variants"] == {"plain"}
            now = datetime.now(UTC)
            await write_batch(conn, _history(now))
            assert await refresh_rollups(conn)
            await _rollups_equal_raw(conn, _history(now))
        finally:
            await conn.close()


async def test_timescaledb_from_the_start(timescale_server_url: str) -> None:
    async with fresh_database(timescale_server_url) as url:
        conn = await asyncpg.connect(url)
        try:
            assert "ingest/003_timeseries.timescale" in await migrate(conn)
            facts = await _facts(conn)
            assert facts == {"extension": True, "variants": {"timescale"},
                             "rollups": {"readings_10m": "r", "readings_1h": "r", "readings_1d": "r"}}
            assert await _is_hypertable(conn)
            await apply_retention_policy(conn, days=20)
            assert not await conn.fetchval(
                "SELECT count(*) FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'")
            now = datetime.now(UTC)
            await write_batch(conn, _history(now))
            assert await refresh_rollups(conn)  # rolled up while inside retention
            await _rollups_equal_raw(conn, _history(now))
            assert await delete_expired(conn, days=20) > 0  # whole chunks before the horizon
            await _rollups_equal_raw(conn, _history(now))  # rollups kept
        finally:
            await conn.close()


async def test_timescaledb_added_to_a_database_migrated_as_plain(plain_server_url: str,
                                                                 timescale_server_url: str) -> None:
    """Migrate on plain PostgreSQL, restore the dump onto a TimescaleDB server, migrate again:
    readings become a hypertable with every row, the rollups stay, and the service runs on."""
    now = datetime.now(UTC).replace(microsecond=0)
    history = _history(now)
    async with fresh_database(plain_server_url) as plain_url, fresh_database(timescale_server_url) as ts_url:
        conn = await asyncpg.connect(plain_url)
        try:
            if await timescale_available(conn):
                pytest.skip("the plain server has TimescaleDB installed")
            await migrate(conn)
            await write_batch(conn, history)
            await refresh_rollups(conn)
        finally:
            await conn.close()
        await asyncio.to_thread(_copy_database, plain_url, ts_url)
        conn = await asyncpg.connect(ts_url)
        try:
            applied = await migrate(conn)
            assert applied == ["ingest/003_timeseries.timescale"]
            assert await _is_hypertable(conn)
            assert (await _facts(conn))["variants"] == {"timescale"}
            assert await conn.fetchval("SELECT count(*) FROM readings") == len(history)
            assert await conn.fetchval("SELECT count(*) FROM show_chunks('readings')") > 1
            await _rollups_equal_raw(conn, history)
            await apply_retention_policy(conn, days=0)  # failed here before: "not a hypertable"
            late = Reading("g", "level", now - timedelta(days=30, minutes=3), 42.0)
            await write_batch(conn, [late])
            assert await refresh_rollups(conn)
            await _rollups_equal_raw(conn, [*history, late])
            assert await migrate(conn) == []
        finally:
            await conn.close()


def _copy_database(source: str, target: str) -> None:
    """pg_dump | psql, as an operator moving a database onto another server would."""
    dump = subprocess.run(["pg_dump", "--no-owner", source], capture_output=True, check=True, timeout=120)
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", target], input=dump.stdout,
                   capture_output=True, check=True, timeout=120)


_OLD_CAGG = """
CREATE MATERIALIZED VIEW {table} WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT station_id, kind, exercise, time_bucket(INTERVAL '{width}', ts) AS bucket,
       min(value) AS min, max(value) AS max, avg(value) AS avg, last(value, ts) AS last, count(*) AS n
FROM readings GROUP BY station_id, kind, exercise, bucket WITH NO DATA
"""


async def test_continuous_aggregates_of_earlier_versions_become_rollup_tables(timescale_server_url: str) -> None:
    """A database migrated before rollups were tables (continuous aggregates, UTC days, no sum)."""
    now = datetime.now(UTC).replace(microsecond=0)
    history = _history(now)
    async with fresh_database(timescale_server_url) as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await conn.execute("DROP TABLE readings_10m, readings_1h, readings_1d")
            await conn.execute("DELETE FROM sonae_migrations WHERE component = 'ingest' AND version = 17")
            for table, width in BUCKETS.values():
                await conn.execute(_OLD_CAGG.format(table=table, width=width))
            await write_batch(conn, history)
            for table, _ in BUCKETS.values():
                await conn.execute(f"CALL refresh_continuous_aggregate('{table}', NULL, NULL)")
            assert await migrate(conn) == ["ingest/017_rollups_japan_days"]
            assert (await _facts(conn))["rollups"] == {"readings_10m": "r", "readings_1h": "r", "readings_1d": "r"}
            # kept contents (sum = avg × n, days rebuilt as Japanese days from the hours) ...
            await _rollups_equal_raw(conn, history)
            # ... and the next refresh recomputes every bucket that has raw rows
            assert await refresh_rollups(conn)
            await _rollups_equal_raw(conn, history)
        finally:
            await conn.close()


async def test_a_timescaledb_database_on_a_server_that_no_longer_preloads_it_is_refused_clearly() -> None:
    """A database with the extension, on a server whose shared_preload_libraries lost it (a restore onto
    another server, a config change): any DDL fires TimescaleDB's event trigger, the server ends the
    connection, and migrate used to fail with InterfaceError ("released back to the pool"). It cannot
    run as plain (readings is a hypertable): it must stop with a MigrationError saying what to do."""
    reason = _timescale_unavailable()
    if reason:
        pytest.skip(reason)
    folder = ROOT / ".state" / f"test-timescaledb-preload-lost-{uuid.uuid4().hex[:8]}"  # its own: preload toggles
    server = TimescaleServer(folder)
    url = await asyncio.to_thread(server.start)
    try:
        async with fresh_database(url) as db_url:
            conn = await asyncpg.connect(db_url)
            try:
                assert "ingest/003_timeseries.timescale" in await migrate(conn)
            finally:
                await conn.close()
            await asyncio.to_thread(server.stop)
            unloaded = TimescaleServer(folder, preload=False)
            await asyncio.to_thread(unloaded.start)
            server = unloaded
            pool = await asyncpg.create_pool(db_url, min_size=1, max_size=1)
            try:
                async with pool.acquire() as pooled:  # sonae runs migrate on a pool's connection
                    with pytest.raises(MigrationError, match="shared_preload_libraries"):
                        await migrate(pooled)
            finally:
                pool.terminate()
    finally:
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(shutil.rmtree, folder, True)
