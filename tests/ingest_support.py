"""Helpers shared by the ingest tests: publishing over real MQTT and waiting on the database."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.contract import encode_reading, topic_for
from ingest.registry import Station, upsert_stations
from ingest.service import Ingestor
from sonae.config import Settings
from sonae.mqtt import MqttClient


async def register(pool: asyncpg.Pool, *ids: str) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id=i, name=f"Gauge {i}", municipality_code="072036") for i in ids])


def readings_for(station: str, n: int, *, start: datetime | None = None) -> list[tuple[str, bytes]]:
    start = start or datetime.now(UTC) - timedelta(hours=n // 6 + 1)
    return [(station, encode_reading(value=1.0 + (i % 50) / 100, ts=start + timedelta(seconds=10 * i), seq=i))
            for i in range(n)]


async def publish_all(settings: Settings, messages: Iterable[tuple[str, str, bytes]], *,
                      municipality_of: Mapping[str, str] | None = None) -> int:
    """Publish (station, kind, payload) at QoS 1 and wait for every PUBACK.

    Each on its station's municipality's topic: ``municipality_of[station]``, else 072036 (ingest keeps a
    reading only on its station's registered municipality's topic, :mod:`ingest.placement`).
    """
    count = 0
    async with MqttClient(settings["mqtt.url"], client_id=f"pub-{uuid.uuid4().hex[:8]}",
                          protocol=settings["mqtt.protocol"], max_outstanding=2000) as client:
        for station, kind, payload in messages:
            place = "072036" if municipality_of is None else municipality_of.get(station, "072036")
            await client.publish(topic_for(settings["mqtt.topic_prefix"], place, station, kind), payload, qos=1)
            count += 1
        await client.flush()
    return count


async def publish_raw(settings: Settings, items: Iterable[tuple[str, bytes]]) -> None:
    async with MqttClient(settings["mqtt.url"], client_id=f"pub-{uuid.uuid4().hex[:8]}",
                          protocol=settings["mqtt.protocol"]) as client:
        for topic, payload in items:
            await client.publish(topic, payload, qos=1)
        await client.flush()


async def wait_until(check: Callable[[], object], *, timeout: float = 120.0, what: str = "condition") -> None:
    """Poll an async check until it is truthy (the database is the synchronisation point)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():  # type: ignore[misc]
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def count(pool: asyncpg.Pool, sql: str, *args: object) -> int:
    async with pool.acquire() as conn:
        return int(await conn.fetchval(sql, *args))


@contextlib.asynccontextmanager
async def running_ingestor(settings: Settings, pool: asyncpg.Pool, **overrides: object) -> AsyncIterator[Ingestor]:
    ingestor = Ingestor.from_settings(settings, pool)
    for key, value in overrides.items():
        setattr(ingestor, key, value)
    task = asyncio.create_task(ingestor.run())
    ready = asyncio.create_task(ingestor.ready.wait())
    done, _ = await asyncio.wait([task, ready], timeout=120, return_when=asyncio.FIRST_COMPLETED)
    assert done, "the ingestor did not start"
    if task in done:
        task.result()
    try:
        yield ingestor
    finally:
        ingestor.stop()
        await asyncio.wait_for(task, 60)
