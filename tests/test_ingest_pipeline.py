"""The ingest pipeline on a real broker and a real PostgreSQL."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.contract import topic_for
from ingest.partition import Partition
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.ingest_support import (
    count,
    publish_all,
    publish_raw,
    readings_for,
    register,
    running_ingestor,
    wait_until,
)
from tests.test_contract import MALFORMED


async def test_stream_is_stored_exactly(settings: Settings, pool: asyncpg.Pool) -> None:
    await register(pool, "g1", "g2")
    msgs = [(s, "level", p) for s in ("g1", "g2") for _, p in readings_for(s, 600)]
    async with running_ingestor(settings, pool):
        await publish_all(settings, msgs)
        await wait_until(lambda: count(pool, "SELECT count(*) = 1200 FROM readings"), what="1200 rows")
    assert await count(pool, "SELECT count(*) FROM readings") == 1200
    assert await count(pool, "SELECT count(DISTINCT (station_id, ts)) FROM readings") == 1200


async def test_redelivered_duplicates_are_skipped(settings: Settings, pool: asyncpg.Pool) -> None:
    await register(pool, "dup")
    payloads = readings_for("dup", 100)
    async with running_ingestor(settings, pool) as ingestor:
        await publish_all(settings, [("dup", "level", p) for _, p in payloads])
        await publish_all(settings, [("dup", "level", p) for _, p in payloads[:40]])
        await wait_until(lambda: _total(ingestor, 140), what="140 messages processed")
        assert ingestor.totals["duplicates"] == 40
    assert await count(pool, "SELECT count(*) FROM readings") == 100


async def _total(ingestor, n):  # type: ignore[no-untyped-def]
    return ingestor.totals["messages"] >= n


async def test_malformed_messages_become_dead_letters(settings: Settings, pool: asyncpg.Pool) -> None:
    await register(pool, "akutsu", "a")
    prefix = settings["mqtt.topic_prefix"]
    # the corpus is written for a fixed "now": move its times into the real past
    bad = [(topic.replace("sonae/v1", prefix), payload.replace(b"2026-11-29T02:50:00", b"2020-01-01T00:00:00"),
            reason) for topic, payload, reason in MALFORMED if reason != "future_timestamp"]
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    bad.append((topic_for(prefix, "072036", "akutsu", "level"),
                json.dumps({"ts": future, "value": 1.0}).encode(), "future_timestamp"))
    good = readings_for("akutsu", 10)
    stream: list[tuple[str, bytes]] = []
    for i, (topic, payload, _) in enumerate(bad):
        stream.append((topic, payload))
        if i < len(good):
            stream.append((topic_for(prefix, "072036", "akutsu", "level"), good[i][1]))
    async with running_ingestor(settings, pool):
        await publish_raw(settings, stream)
        await wait_until(lambda: count(pool, "SELECT count(*) >= $1 FROM dead_letters", len(bad)),
                         what="all dead letters")
        await wait_until(lambda: count(pool, "SELECT count(*) = 10 FROM readings"), what="good readings")
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT topic, payload, payload_length, payload_sha256, reason, detail "
                                "FROM dead_letters ORDER BY id")
    got, want = sorted(r["reason"] for r in rows), sorted(reason for _, _, reason in bad)
    assert got == want, ",".join(got) + " != " + ",".join(want)
    # the first 4 KiB of the raw bytes are kept, with the whole payload's length and SHA-256
    stored = {(r["topic"], bytes(r["payload"]), r["payload_length"], bytes(r["payload_sha256"])) for r in rows}
    kept = {(topic, payload[:4096], len(payload), hashlib.sha256(payload).digest()) for topic, payload, _ in bad}
    assert kept <= stored, "topic, raw bytes, length and hash are kept"
    assert all(r["detail"] for r in rows)


async def test_unknown_station_is_quarantined_then_released(settings: Settings, pool: asyncpg.Pool) -> None:
    payloads = readings_for("newcomer", 20)
    async with running_ingestor(settings, pool):
        await publish_all(settings, [("newcomer", "level", p) for _, p in payloads])
        await wait_until(lambda: count(pool, "SELECT count(*) = 20 FROM quarantined_readings"), what="quarantine")
    assert await count(pool, "SELECT count(*) FROM readings") == 0
    await register(pool, "newcomer")
    assert await count(pool, "SELECT count(*) FROM readings WHERE station_id = 'newcomer'") == 20
    assert await count(pool, "SELECT count(*) FROM quarantined_readings") == 0


async def test_senml_gateway_pack(settings: Settings, pool: asyncpg.Pool) -> None:
    await register(pool, "s1", "s2")
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="gw", name="Gateway", kind="gateway",
                                                    municipality_code="072036")])
    base = datetime.now(UTC).timestamp() - 3600
    pack = [{"bn": "s1/", "bt": base, "bu": "cm", "n": "level", "v": 250}]
    pack += [{"n": "level", "t": 60 * i, "v": 250 + i} for i in range(1, 50)]
    pack += [{"bn": "s2/", "n": "rain", "u": "mm", "v": 3.5, "t": 0}]
    # a plain device may report for itself only: its record for s2 is refused, its own is kept
    sneaky = [{"bn": "s1/", "bt": base + 7200 - 3600, "n": "level", "v": 1.0},
              {"bn": "s2/", "n": "level", "v": 9.9}]
    async with running_ingestor(settings, pool):
        await publish_all(settings, [("gw", "senml", json.dumps(pack).encode()),
                                     ("s1", "senml", json.dumps(sneaky).encode())])
        await wait_until(lambda: count(pool, "SELECT count(*) = 52 FROM readings"), what="pack stored")
        await wait_until(lambda: count(pool, "SELECT count(*) = 1 FROM dead_letters"), what="foreign refused")
    async with pool.acquire() as conn:
        top = await conn.fetchval("SELECT max(value) FROM readings WHERE station_id = 's1'")
        reason = await conn.fetchval("SELECT reason FROM dead_letters")
        s2 = await conn.fetchval("SELECT count(*) FROM readings WHERE station_id = 's2' AND kind = 'level'")
    assert abs(top - 2.99) < 1e-9 and reason == "foreign_station" and s2 == 0


async def test_two_partitioned_ingestors_share_the_stream_exactly_once(settings: Settings, pool: asyncpg.Pool) -> None:
    """ingest.partition 0/2 and 1/2: each municipality's readings reach exactly one ingestor, on plain
    subscriptions (the registry's codes 072010 and 072036 hash to partitions 0 and 1)."""
    where = {"pa1": "072010", "pa2": "072010", "pb1": "072036"}
    assert Partition(0, 2).owns("072010") and Partition(1, 2).owns("072036")
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id=s, name=s, municipality_code=m) for s, m in where.items()])
    prefix = settings["mqtt.topic_prefix"]
    msgs = [(topic_for(prefix, where[s], s, "level"), p) for s in where for _, p in readings_for(s, 400)]
    first = settings.replace(ingest__partition="0/2")
    second = settings.replace(ingest__partition="1/2", mqtt__client_id=settings["mqtt.client_id"] + "-b")
    async with running_ingestor(first, pool) as a, running_ingestor(second, pool) as b:
        assert a.topic_filters == [f"{prefix}/072010/#"] and b.topic_filters == [f"{prefix}/072036/#"]
        await publish_raw(settings, msgs)
        await wait_until(lambda: count(pool, "SELECT count(*) = 1200 FROM readings"), what="1200 rows")
        await wait_until(lambda: _sum(a, b, 1200), what="both ingestors done")
        assert a.totals["inserted"] == 800 and b.totals["inserted"] == 400, "split by municipality"
        assert a.totals["duplicates"] + b.totals["duplicates"] == 0
    assert await count(pool, "SELECT count(*) FROM readings") == 1200


async def _sum(a, b, n):  # type: ignore[no-untyped-def]
    return a.totals["messages"] + b.totals["messages"] >= n
