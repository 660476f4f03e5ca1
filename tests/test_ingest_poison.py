"""Poison messages against the running ingestor (real broker, real PostgreSQL): one bad message costs one
dead letter, never the service nor the good readings of its batch; a redelivered one is stored once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime

import asyncpg

from ingest.contract import Parsed, Parser, topic_for
from ingest.service import Ingestor
from sonae.config import Settings
from tests.ingest_support import count, publish_raw, readings_for, register, wait_until


@contextlib.asynccontextmanager
async def ingesting(settings: Settings, pool: asyncpg.Pool,
                    parser: Parser | None = None) -> AsyncIterator[tuple[Ingestor, asyncio.Task[None]]]:
    """A running ingestor and its task, which the caller checks is still alive."""
    ingestor = Ingestor.from_settings(settings, pool)
    if parser is not None:
        ingestor.parser = parser
    task = asyncio.create_task(ingestor.run())
    ready = asyncio.create_task(ingestor.ready.wait())
    await asyncio.wait([task, ready], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    try:
        yield ingestor, task
    finally:
        ingestor.stop()
        await asyncio.wait_for(task, 60)


async def stored_while_alive(pool: asyncpg.Pool, task: asyncio.Task[None], sql: str, what: str) -> None:
    async def check() -> bool:
        if task.done():
            raise AssertionError(f"the ingestor stopped: {task.exception()!r}")
        return bool(await count(pool, sql))
    await wait_until(check, timeout=60, what=what)


class FaultyParser(Parser):
    """The real parser with a bug planted: a payload holding b"boom" raises an unexpected exception."""

    def parse(self, topic: str, payload: bytes, *, now: datetime | None = None) -> Parsed:
        if b"boom" in payload:
            raise RuntimeError("planted bug")
        return super().parse(topic, payload, now=now)


async def test_an_unexpected_error_costs_one_message_not_the_batch(settings: Settings, pool: asyncpg.Pool) -> None:
    await register(pool, "p1")
    prefix, topic = settings["mqtt.topic_prefix"], topic_for(settings["mqtt.topic_prefix"], "072036", "p1", "level")
    good = readings_for("p1", 40)
    stream: list[tuple[str, bytes]] = []
    for i, (_, payload) in enumerate(good):
        stream.append((topic, payload))
        if i % 4 == 0:
            stream.append((topic, b'{"boom": %d}' % i))
    parser = Parser(prefix=prefix)
    faulty = FaultyParser(prefix=prefix, max_future_s=parser.max_future.seconds)
    async with ingesting(settings, pool, faulty) as (ingestor, task):
        await publish_raw(settings, stream)
        await stored_while_alive(pool, task, "SELECT count(*) = 40 FROM readings", "the good readings")
        await stored_while_alive(pool, task, "SELECT count(*) = 10 FROM dead_letters", "10 dead letters")
        assert not task.done()
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT reason, detail FROM dead_letters")
    assert {r["reason"] for r in rows} == {"internal_error"}
    assert all("RuntimeError: planted bug" in r["detail"] for r in rows)


async def test_a_reading_the_database_refuses_costs_its_message_only(settings: Settings, pool: asyncpg.Pool) -> None:
    """A non-transient database error used to stop the ingestor (only DataError was caught)."""
    await register(pool, "p2")
    async with pool.acquire() as conn:  # a constraint the parser knows nothing of: 1.13 m is refused
        await conn.execute("ALTER TABLE readings ADD CONSTRAINT test_refuses CHECK (value <> 1.13)")
    good = readings_for("p2", 100)  # values 1.00 .. 1.49: two of them are 1.13
    topic = topic_for(settings["mqtt.topic_prefix"], "072036", "p2", "level")
    async with ingesting(settings, pool) as (_, task):
        await publish_raw(settings, [(topic, p) for _, p in good])
        await stored_while_alive(pool, task, "SELECT count(*) = 98 FROM readings", "98 readings")
        await stored_while_alive(pool, task, "SELECT count(*) = 2 FROM dead_letters", "2 dead letters")
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT topic, payload, reason, detail FROM dead_letters")
    assert {r["reason"] for r in rows} == {"db_rejected"} and all(r["topic"] == topic for r in rows)
    assert {bytes(r["payload"]) for r in rows} == {p for i, (_, p) in enumerate(good) if i % 50 == 13}
    assert all("CheckViolation" in r["detail"] for r in rows)


async def test_a_redelivered_malformed_message_is_stored_once(settings: Settings, pool: asyncpg.Pool) -> None:
    """Issue #23 item 5: the ingestor commits, then dies before its acks reach the broker; the broker
    delivers everything again to the next ingestor of the session. Dead letters stay one per message."""
    await register(pool, "r1")
    settings = settings.replace(ingest__shared_group="", mqtt__client_id=f"redeliver-{uuid.uuid4().hex[:8]}")
    topic = topic_for(settings["mqtt.topic_prefix"], "072036", "r1", "level")
    good = [p for _, p in readings_for("r1", 50)]
    bad = [b'{"ts": "2026-01-01T00:00:00Z", "value": 1' + b"0" * 309 + b', "n": %d}' % i for i in range(25)]
    bad += [b'{"ts": "2026-01-01T00:00:00Z", "value": 1.0, "unit": ["m"], "n": %d}' % i for i in range(25)]
    stream = [(topic, p) for pair in zip(good, bad, strict=True) for p in pair]
    async with ingesting(settings, pool) as (first, task):
        first.client.ack = lambda message: False  # type: ignore[method-assign]  # the acks are lost
        await publish_raw(settings, stream)
        await stored_while_alive(pool, task, "SELECT count(*) = 50 FROM dead_letters", "first delivery")
        await stored_while_alive(pool, task, "SELECT count(*) = 50 FROM readings", "first delivery's readings")
    async with ingesting(settings, pool) as (second, task):
        async def redelivered() -> bool:
            return second.totals["messages"] >= len(stream)
        await wait_until(redelivered, timeout=60, what="the broker delivering the unacknowledged messages again")
        assert not task.done()
    assert await count(pool, "SELECT count(*) FROM dead_letters") == 50
    assert await count(pool, "SELECT sum(deliveries) FROM dead_letters") == 100
    assert await count(pool, "SELECT count(*) FROM readings") == 50
    async with pool.acquire() as conn:
        reasons = sorted(r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters"))
    assert reasons == ["bad_unit"] * 25 + ["not_finite"] * 25
