"""Fixtures of the API's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from sonae.config import Settings
from tests.api_support import start_client


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    """A started client of the whole API (:func:`api.app.create_app`) over the test's fresh database and
    settings (a test module with other needs defines its own ``client``)."""
    c = await start_client(create_app(pool=pool, settings=settings))
    try:
        yield c
    finally:
        await c.close()
