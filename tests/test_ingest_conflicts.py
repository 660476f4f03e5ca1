"""A different value at a stored reading's time is a conflict kept as a dead letter, not a redelivery.

Found by a break-it pass: ``{"ts":T,"value":2.0}`` then ``{"ts":T,"value":2.5}`` (or both in one array)
stored the first and counted the second as a duplicate, with no dead letter.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest import metrics
from ingest.contract import topic_for
from ingest.registry import release_quarantine
from ingest.service import Ingestor
from sonae.config import Settings
from sonae.mqtt import Message
from tests.ingest_support import register


def _message(prefix: str, station: str, body: object) -> Message:
    return Message(topic_for(prefix, "072036", station, "level"), json.dumps(body).encode(), 0, False, 0, 0)


def _conflicts() -> float:
    return metrics.DEAD_LETTERS.labels("conflicting_value")._value.get()  # type: ignore[no-any-return]


async def test_a_second_value_for_the_same_time_is_a_dead_letter(settings: Settings, pool: asyncpg.Pool) -> None:
    await register(pool, "c1", "c2")
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0).isoformat()
    ingestor = Ingestor.from_settings(settings, pool)
    before = _conflicts()
    first = await ingestor.process([_message(prefix, "c1", {"ts": ts, "value": 2.0})])
    again = await ingestor.process([_message(prefix, "c1", {"ts": ts, "value": 2.0})])  # a redelivery
    other = await ingestor.process([_message(prefix, "c1", {"ts": ts, "value": 2.5})])
    both = await ingestor.process([_message(prefix, "c2", [{"ts": ts, "value": 2.0}, {"ts": ts, "value": 2.5}])])
    assert (first.inserted, again.duplicates, again.dead_letters) == (1, 1, 0)
    assert (other.inserted, other.duplicates, other.dead_letters) == (0, 0, 1)
    assert (both.inserted, both.duplicates, both.dead_letters) == (1, 0, 1)
    async with pool.acquire() as conn:
        stored = {r["station_id"]: r["value"] for r in await conn.fetch("SELECT station_id, value FROM readings")}
        dead = await conn.fetch("SELECT topic, reason, detail FROM dead_letters ORDER BY topic")
    assert stored == {"c1": 2.0, "c2": 2.0}
    assert [d["reason"] for d in dead] == ["conflicting_value"] * 2
    assert all("2.5 differs from the stored 2.0" in d["detail"] for d in dead)
    assert _conflicts() - before == 2


async def test_a_second_value_in_quarantine_is_a_dead_letter(settings: Settings, pool: asyncpg.Pool) -> None:
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    ingestor = Ingestor.from_settings(settings, pool)
    await ingestor.process([_message(prefix, "q1", {"ts": ts, "value": 2.0})])
    result = await ingestor.process([_message(prefix, "q1", {"ts": ts, "value": 2.5})])
    assert result.dead_letters == 1
    async with pool.acquire() as conn:
        detail = await conn.fetchval("SELECT detail FROM dead_letters WHERE reason = 'conflicting_value'")
    assert "differs from the quarantined 2.0" in detail


_values = st.floats(min_value=-100, max_value=2000, allow_nan=False).map(lambda v: round(v, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(_values, min_size=1, max_size=6), offset=st.integers(0, 10_000))
async def test_one_value_per_instant_and_every_other_kept(settings: Settings, pool: asyncpg.Pool,
                                                          values: list[float], offset: int) -> None:
    """Whatever values a device sends for one instant (in one array, or message by message), the first is
    stored, each repeat of it is a duplicate and each message with another value is one dead letter."""
    await register(pool, "hx")
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=offset)).isoformat()
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT value FROM readings WHERE station_id = 'hx' AND ts = $1",
                                     datetime.fromisoformat(ts))
    ingestor = Ingestor.from_settings(settings, pool)
    result = await ingestor.process([_message(prefix, "hx", {"ts": ts, "value": v}) for v in values])
    kept = values[0] if stored is None else stored
    assert result.inserted == (1 if stored is None else 0)
    others = sum(1 for v in values if v != kept)
    assert result.dead_letters == others
    assert result.duplicates == len(values) - result.inserted - others


async def test_a_released_reading_with_another_value_is_a_dead_letter(settings: Settings, pool: asyncpg.Pool) -> None:
    """A quarantined reading whose time was stored meanwhile with another value (the station registered by SQL,
    then a second value sent) is kept as ``conflicting_value`` on release, not dropped by ON CONFLICT."""
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    ingestor = Ingestor.from_settings(settings, pool)
    await ingestor.process([_message(prefix, "r1", {"ts": ts, "value": 2.0})])
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO stations (id, name, municipality_code) VALUES ('r1', 'r1', '072036')")
    assert (await ingestor.process([_message(prefix, "r1", {"ts": ts, "value": 2.5})])).inserted == 1
    async with pool.acquire() as conn:
        assert await release_quarantine(conn, ["r1"]) == 0
        dead = await conn.fetch("SELECT reason, detail FROM dead_letters")
        left = await conn.fetchval("SELECT count(*) FROM quarantined_readings")
    assert [d["reason"] for d in dead] == ["conflicting_value"] and "differs from the stored 2.5" in dead[0]["detail"]
    assert left == 0
