"""An ingestor's own operations endpoints (``ingest.metrics_port``): ``/metrics`` for Prometheus,
``/healthz`` (the process answers) and ``/readyz`` (subscribed to the broker, and the database answers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ingest.service import Ingestor

log = logging.getLogger("sonae.ingest.health")


def health_app(ingestor: Ingestor, pool: asyncpg.Pool) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        checks = {"mqtt": "ok" if ingestor.ready.is_set() and ingestor.client.is_connected else "not subscribed"}
        try:
            async with asyncio.timeout(2), pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return web.json_response({"status": "ready" if ready else "not ready", "checks": checks},
                                 status=200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serving_health(ingestor: Ingestor, pool: asyncpg.Pool, *, host: str, port: int) -> AsyncIterator[None]:
    """Serve the endpoints while the block runs (nothing when ``port`` is 0)."""
    if port == 0:
        yield
        return
    runner = web.AppRunner(health_app(ingestor, pool), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    log.info("ingest metrics listening", extra={"port": port})
    try:
        yield
    finally:
        await runner.cleanup()
