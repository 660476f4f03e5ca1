"""Typed keys for what the application shares between handlers."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from sonae.config import Settings

POOL = web.AppKey("pool", asyncpg.Pool)
SETTINGS = web.AppKey("settings", Settings)
