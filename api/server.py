"""Serving the API: the runner options every deployment uses (path-only access log), and a
``serve`` coroutine for the CLI."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from api.accesslog import PathOnlyAccessLogger
from api.app import create_app
from sonae.config import ConfigError, Settings

log = logging.getLogger("sonae.api")

#: a connection must send a complete request head within this many seconds of opening (or of its
#: previous response): slow-header (slowloris) clients are closed. aiohttp arms its keep-alive timer
#: when a connection is made and closes the connection when it fires while no request is being handled.
HEADER_TIMEOUT_S = 10.0



class _NoRequestLine(logging.Filter):
    """Keeps a request that aiohttp could not parse out of the logs but for its kind and status.

    aiohttp logs such a request ("Error handling request", ERROR) with its parse error, whose text quotes
    the raw request line, query included: a resident's position (``lat``/``lon``) would reach the logs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "unparsable request: %s (%s)", (type(exc).__name__, exc.code)
            record.exc_info, record.exc_text = None, None
        return True


#: aiohttp's server logger for this API (its parse errors without the request line)
SERVER_LOG = logging.getLogger("sonae.api.server")
SERVER_LOG.addFilter(_NoRequestLine())

#: how every server of the API is run (AppRunner, TestServer.start_server): never log query strings
#: (the access log and aiohttp's own errors); close connections that send their request head too
#: slowly (bodies: ``api.bodies.BODY_TIMEOUT_S``)
SERVER_OPTIONS: dict[str, Any] = {"access_log_class": PathOnlyAccessLogger, "keepalive_timeout": HEADER_TIMEOUT_S,
                                  "logger": SERVER_LOG}


async def serve(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    app = create_app(pool=pool, settings=settings)
    runner = web.AppRunner(app, handle_signals=False, **SERVER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, settings["api.host"], settings["api.port"], reuse_address=True)
    await site.start()
    url = f"http://{settings['api.host']}:{settings['api.port']}/"
    log.info("api listening", extra={"url": url})
    try:
        await _network_checked(app, stop)
        print(f"Sonae is up: residents {url}  staff {url}staff  API {url}api/v1/openapi.json", flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()


async def _network_checked(app: web.Application, stop: asyncio.Event) -> None:
    """Wait for the first load of ``evac.network`` (health and readiness answer meanwhile); a file that
    passed the setting's quick look but cannot be read (truncated, damaged, the wrong arrays) stops
    start-up like every other bad setting.

    Raises
    ------
    ConfigError
        ``SONAE_EVAC_NETWORK='…': <what is wrong>``, for the CLI's one line (exit 2).
    """
    from api.evacuation import EVAC

    service = app.get(EVAC)
    if service is None or not service.enabled:
        return
    settled, stopping = asyncio.ensure_future(service.settled.wait()), asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({settled, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (settled, stopping):
            task.cancel()
    if service.file_fault is not None:
        raise ConfigError(f"SONAE_EVAC_NETWORK={service.source!r}: {service.file_fault}")
