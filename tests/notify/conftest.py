"""Fixtures of the notify tests: the settings, an API client, and the real receivers of
:mod:`tests.notify.support` (a push service, a webhook receiver)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from sonae.config import Settings, load_settings
from tests.api_support import start_client
from tests.notify.support import PushService, WebhookReceiver


@pytest.fixture
def nsettings(database_url: str) -> Settings:
    return load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_NOTIFY_PUSH_ALLOW_HTTP": "true",
                                  "SONAE_NOTIFY_WEBHOOK_ALLOW_LOOPBACK": "true",  # the receivers are on 127.0.0.1
                                  "SONAE_API_RATE_LIMIT_PER_MINUTE": "0", "SONAE_LOG_FORMAT": "text"})


@pytest.fixture
async def client(pool: asyncpg.Pool, nsettings: Settings) -> AsyncIterator[TestClient]:
    app = create_app(pool=pool, settings=nsettings)
    c = await start_client(app)
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture
async def push() -> AsyncIterator[PushService]:
    service = PushService()
    await service.start()
    yield service
    await service.close()
    assert not service.errors, service.errors  # every request had valid VAPID, headers and encryption


@pytest.fixture
async def hooks() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.close()
