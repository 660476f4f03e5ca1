"""Helpers for the alerting tests: a running rules worker, and waiting on the alert tables."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from aiohttp import ClientResponse

from alerting.worker import RulesWorker


@contextlib.asynccontextmanager
async def running_worker(pool: asyncpg.Pool, **kwargs: Any) -> AsyncIterator[RulesWorker]:
    kwargs.setdefault("silent_check_s", 3600.0)
    worker = RulesWorker(pool, **kwargs)
    task = asyncio.create_task(worker.run())
    # its first whole pass made: that pass checks silent stations and ticks states at the real "now", which
    # must not land among a test's own readings and ticks
    leader = asyncio.create_task(worker.first_pass_done.wait())
    done, _ = await asyncio.wait([task, leader], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert leader in done, "the rules worker did not become leader"
    try:
        yield worker
    finally:
        worker.stop()
        leader.cancel()
        await asyncio.wait_for(task, 60)


async def events_of(pool: asyncpg.Pool, station_id: str, *, exercise: bool | None = None,
                    condition: str = "river_level") -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(
            """SELECT e.*, a.condition FROM alert_events e JOIN alerts a ON a.id = e.alert_id
               WHERE a.station_id = $1 AND a.condition = $2 AND ($3::bool IS NULL OR a.exercise = $3)
               ORDER BY e.id""", station_id, condition, exercise))


async def read_event(resp: ClientResponse, timeout: float = 60) -> dict[str, str]:
    """The next server-sent event of a stream (its fields by name; comments such as keep-alives skipped),
    failing when a line takes more than ``timeout`` s."""
    fields: dict[str, str] = {}
    while True:
        line = (await asyncio.wait_for(resp.content.readline(), timeout)).decode().rstrip("\n")
        if not line:
            if "data" in fields:
                return fields
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(": ")
        fields[name] = value
