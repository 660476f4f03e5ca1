"""What the staff console shows of silent stations, for the silence tests."""

from __future__ import annotations

import asyncpg

from api.app import create_app
from sonae.config import Settings
from tests.api_support import start_client


async def console_silent(settings: Settings, pool: asyncpg.Pool, token: str) -> set[tuple[str, bool]]:
    """``(station id, exercise)`` of every station ``GET /api/v1/sensors/health`` marks ``silent`` for the
    account of ``token`` (a real server over ``pool``)."""
    client = await start_client(create_app(pool=pool, settings=settings))
    try:
        r = await client.get("/api/v1/sensors/health", headers={"Authorization": f"Bearer {token}"})
        assert r.status == 200, await r.text()
        return {(s["station_id"], s["exercise"]) for s in (await r.json())["stations"] if "silent" in s["problems"]}
    finally:
        await client.close()
