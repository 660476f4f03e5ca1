"""Official information (気象庁防災情報XML) over HTTP: ``GET /api/v1/official`` and this process's
feed reader (on when ``jma.feeds`` is set; ``/readyz`` reports ``jma feed`` not ready while a feed
fails). The information and the rules live in ``jma`` and ``alerting.level``; this module parses and
serialises only.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from alerting.level import official_source
from api import params
from api.context import POOL, SETTINGS
from api.language import language_tag
from api.ops import READINESS_CHECKS
from jma.areas import municipality_names
from jma.reader import FeedReader
from jma.store import in_force

routes = web.RouteTableDef()
READER = web.AppKey("jma_reader", FeedReader)
@routes.get("/api/v1/official")
async def official(request: web.Request) -> web.Response:
    language = language_tag(request)
    municipality = params.municipality(request)
    async with request.app[POOL].acquire() as conn:
        rows = await in_force(conn, municipality=municipality)
    items = []
    for row in rows:
        item = official_source(row).as_json(language)
        item["municipality_code"] = row["municipality_code"]
        item["municipality_name"] = municipality_names().get(row["municipality_code"], "")
        items.append(item)
    return web.json_response({"official": items}, headers={"Cache-Control": "no-store"})


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    reader = app[READER]
    task = asyncio.create_task(reader.run())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    """Start a feed reader with the application when feeds are configured, and register its readiness."""
    settings = app[SETTINGS]
    feeds = [u.strip() for u in (settings["jma.feeds"] or "").split(",") if u.strip()]
    if not feeds:
        return
    interval = settings["jma.poll_interval_s"]
    reader = FeedReader(app[POOL], feeds=feeds, interval_s=interval, retry_base_s=min(2.0, interval))
    app[READER] = reader
    app.cleanup_ctx.append(_lifecycle)
    checks = app.get(READINESS_CHECKS)
    if checks is None:
        checks = app[READINESS_CHECKS] = {}
    checks["jma feed"] = reader.ready
