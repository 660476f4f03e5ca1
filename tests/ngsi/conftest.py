"""Fixtures of the NGSI-LD tests: the shared SDM validator and an API client on a fresh database."""

from __future__ import annotations

import sys
from typing import Any

import asyncpg
import pytest

from api.app import create_app
from sonae.config import Settings
from tests.api_support import start_client
from tests.conftest import shared_data


@pytest.fixture
def sdm() -> Any:
    folder = shared_data("sdm")
    sys.path.insert(0, str(folder))
    try:
        import validate  # the shared offline validator (../shared/data/sdm/validate.py)
    finally:
        sys.path.remove(str(folder))
    return validate


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings):  # type: ignore[no-untyped-def]
    c = await start_client(create_app(pool=pool, settings=settings))
    try:
        yield c
    finally:
        await c.close()
