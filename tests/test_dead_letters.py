"""Dead letters: a bounded prefix of the raw bytes with length and SHA-256, stored once per message, retained
for a set time; the migration that brings older databases there (plain PostgreSQL and TimescaleDB)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from ingest.housekeeping import housekeeping_loop
from ingest.retention import delete_expired_dead_letters
from ingest.store import DeadLetter, write_batch
from sonae.migrations import migrate
from tests.conftest import with_database
from tests.ingest_support import count, wait_until
from tests.migration_support import schema_before

TOPIC = "sonae/v1/072036/g1/level"


async def test_a_big_payload_keeps_a_prefix_its_length_and_hash(pool: asyncpg.Pool) -> None:
    payload = os.urandom(1 << 20)  # a 1 MB payload, as in issue #15 item 7
    async with pool.acquire() as conn:
        await write_batch(conn, [], dead_letters=[DeadLetter(TOPIC, payload, "oversized", "too big")],
                          dead_letter_bytes=4096)
        row = await conn.fetchrow("SELECT payload, payload_length, payload_sha256, octet_length(payload) AS kept, "
                                  "payload_sha256 = sha256($1::bytea) AS same_hash FROM dead_letters", payload)
    assert bytes(row["payload"]) == payload[:4096] and row["kept"] == 4096
    assert row["payload_length"] == 1 << 20
    assert row["same_hash"], "the stored hash is PostgreSQL's sha256 of the whole payload"


async def test_the_bound_is_a_setting(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await write_batch(conn, [], dead_letters=[DeadLetter(TOPIC, b"x" * 100, "bad_json", "d")], dead_letter_bytes=10)
        assert await conn.fetchval("SELECT octet_length(payload) FROM dead_letters") == 10


async def test_a_message_delivered_again_is_one_dead_letter(pool: asyncpg.Pool) -> None:
    bad = DeadLetter(TOPIC, b'{"value": [1]}', "bad_value", "value (a list, length 1) is not a number")
    other_topic = DeadLetter(TOPIC.replace("g1", "g2"), bad.payload, "bad_value", bad.detail)
    async with pool.acquire() as conn:
        await write_batch(conn, [], dead_letters=[bad, bad])  # twice in one batch
        await write_batch(conn, [], dead_letters=[bad, other_topic])  # and again in the next
        rows = await conn.fetch("SELECT topic, deliveries, last_received_at >= received_at AS ordered "
                                "FROM dead_letters ORDER BY topic")
    assert [(r["topic"], r["deliveries"]) for r in rows] == [(TOPIC, 3), (other_topic.topic, 1)]
    assert all(r["ordered"] for r in rows)


async def test_one_message_with_two_reasons_is_two_dead_letters(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await write_batch(conn, [], dead_letters=[DeadLetter(TOPIC, b"{}", "partial_bad_value", "a"),
                                                  DeadLetter(TOPIC, b"{}", "foreign_station", "b")])
    assert await count(pool, "SELECT count(*) FROM dead_letters") == 2


async def test_text_postgresql_cannot_hold_is_escaped(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await write_batch(conn, [], dead_letters=[DeadLetter(TOPIC, b"x", "bad_value", "nul \x00 and \udcff")])
        detail = await conn.fetchval("SELECT detail FROM dead_letters")
    assert detail == "nul \\x00 and \\udcff"


async def test_retention_deletes_old_dead_letters_in_the_housekeeping_loop(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await write_batch(conn, [], dead_letters=[DeadLetter(TOPIC, str(i).encode(), "bad_json", "d") for i in range(6)])
        await conn.execute("UPDATE dead_letters SET last_received_at = now() - interval '31 days' "
                           "WHERE payload IN ('0', '1', '2')")
        assert await delete_expired_dead_letters(conn, days=0) == 0, "0 keeps everything"
    task = asyncio.create_task(housekeeping_loop(pool, retention_days=0, dead_letter_retention_days=30, every_s=0.05))
    try:
        await wait_until(lambda: count(pool, "SELECT count(*) = 3 FROM dead_letters"), what="old dead letters deleted")
    finally:
        task.cancel()
    async with pool.acquire() as conn:
        left = sorted(bytes(r["payload"]) for r in await conn.fetch("SELECT payload FROM dead_letters"))
    assert left == [b"3", b"4", b"5"]


@pytest.fixture
async def old_database(pg_server_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A database migrated up to ingest 004, as before dead letters were bounded."""
    name = f"sonae_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(with_database(pg_server_url, name))
    try:
        await schema_before(conn, 5)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_migration_bounds_and_deduplicates_older_dead_letters(old_database: asyncpg.Connection) -> None:
    conn = old_database
    big = b"y" * 200_000
    rows = [(TOPIC, b"{bad", "bad_json"), (TOPIC, b"{bad", "bad_json"), (TOPIC, b"{bad", "bad_json"),
            (TOPIC, big, "oversized"), (TOPIC, b"{bad", "not_utf8")]
    await conn.executemany("INSERT INTO dead_letters (topic, payload, reason, detail) VALUES ($1, $2, $3, 'd')", rows)
    applied = await migrate(conn)
    assert "ingest/005_dead_letter_bounds" in applied
    got = await conn.fetch("SELECT reason, deliveries, octet_length(payload) AS kept, payload_length, payload_sha256, "
                           "message_key FROM dead_letters ORDER BY reason")
    assert [(r["reason"], r["deliveries"], r["kept"], r["payload_length"]) for r in got] == [
        ("bad_json", 3, 4, 4), ("not_utf8", 1, 4, 4), ("oversized", 1, 4096, 200_000)]
    assert bytes(got[2]["payload_sha256"]) == hashlib.sha256(big).digest()
    # the key computed in SQL for old rows is the one the ingestor computes: a redelivery lands on it
    assert bytes(got[0]["message_key"]) == DeadLetter(TOPIC, b"{bad", "bad_json", "d").message_key
    await write_batch(conn, [], dead_letters=[DeadLetter(TOPIC, b"{bad", "bad_json", "d")])
    assert await conn.fetchval("SELECT deliveries FROM dead_letters WHERE reason = 'bad_json'") == 4
    assert await migrate(conn) == [], "idempotent"
