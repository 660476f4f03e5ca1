"""Fixtures of the API's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from sonae.config import Settings
from tests.api_support import signed_in, start_client


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    """A started client of the whole API (:func:`api.app.create_app`) over the test's fresh database and
    settings (a test module with other needs defines its own ``client``)."""
    c = await start_client(create_app(pool=pool, settings=settings))
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def admin_client(pool: asyncpg.Pool, unlimited_settings: Settings) -> AsyncIterator[tuple[TestClient, str]]:
    """A started client of the whole API without the per-client rate limit, and the bearer token of a
    prefecture-wide admin (no operation is refused for its role or scope)."""
    client = await start_client(create_app(pool=pool, settings=unlimited_settings))
    async with pool.acquire() as conn:
        token = (await signed_in(conn, (("pref-admin", "admin", None),), "correct horse battery"))["pref-admin"]
    try:
        yield client, token
    finally:
        await client.close()
