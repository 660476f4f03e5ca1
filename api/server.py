"""Serving the API: the runner options every deployment uses (path-only access log), and a
``serve`` coroutine for the CLI."""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import asyncpg
from aiohttp import http_exceptions as hx
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from api.accesslog import PathOnlyAccessLogger
from api.app import create_app
from api.edge import STATS, UNPARSABLE, secured
from api.problems import problem_response
from sonae.config import ConfigError, Settings
from sonae.eventloop import freeze_long_lived

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

#: how every server of the API is run (:class:`ApiRunner`, ``ApiTestServer.start_server``): never log query strings
#: (the access log and aiohttp's own errors); close connections that send their request head too
#: slowly (bodies: ``api.bodies.BODY_TIMEOUT_S``)
SERVER_OPTIONS: dict[str, Any] = {"access_log_class": PathOnlyAccessLogger, "keepalive_timeout": HEADER_TIMEOUT_S,
                                  "logger": SERVER_LOG}


#: what a problem answer says of a request aiohttp could not parse, by the class of aiohttp's parse error
#: (aiohttp.http_exceptions; the most specific class first): a fixed text, never the error's own message,
#: which quotes the request line or header (a resident's position may be in the query)
FAULTS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (hx.BadHttpMethod, "the request line's method is not a valid HTTP method"),
    (hx.BadStatusLine, "the request line is malformed (expected: METHOD target HTTP/1.x)"),
    (hx.InvalidURLError, "the request target is not a valid URL"),
    (hx.LineTooLong, "a line of the request head (the request line or a header) is too long"),
    (hx.InvalidHeader, "a header's name or value has bytes HTTP does not allow"),
    (hx.TransferEncodingError, "the chunked body's framing is malformed"),
    (hx.ContentLengthError, "the body does not match its Content-Length"),
    (hx.ContentEncodingError, "the body cannot be decoded with its Content-Encoding"),
    (hx.DecompressSizeError, "the body is too large once decompressed"),
)
#: what it says of any other parse error (llhttp reports most faults of headers and framing as a
#: plain BadHttpMessage: a bad chunk size, a bad Content-Length, a header byte, a missing Host)
FAULT_OTHER = "the request could not be parsed as HTTP/1.1 (its request line, a header or the body's framing)"


def unparsable_detail(exc: BaseException) -> str:
    """The problem detail for aiohttp's parse error ``exc``: its kind in words (:data:`FAULTS`), never
    its message (which quotes the request)."""
    for cls, text in FAULTS:
        if isinstance(exc, cls):
            return text
    return FAULT_OTHER


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, with every request it could not parse answered like every other error
    of the API and counted.

    aiohttp answers such a request itself, in :meth:`RequestHandler.handle_error` (called with the parse
    error and the status aiohttp chose, 400, before any application code runs), with a ``text/plain`` body
    that quotes the raw request line, query included. Here that answer is an RFC 9457 problem
    (:func:`~api.problems.problem_response`, detail :func:`unparsable_detail`) with the API's security
    headers, and it is counted in ``sonae_api_requests_total{route="unparsable",method="UNKNOWN",status}``
    (:data:`api.edge.UNPARSABLE`; aiohttp's method for a request it could not read; no latency is observed:
    aiohttp does not time its parsing). The connection is still closed after it (aiohttp's rule). Other
    errors (a handler's 500 or 504, which the API's edge middleware already turns into problems) keep
    aiohttp's behaviour; aiohttp's logging (through ``SERVER_LOG``, without the request line) is kept.
    """

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs; raises if an answer began
        if not isinstance(exc, HttpProcessingError):
            return plain
        status = plain.status
        response = secured(problem_response(status, HTTPStatus(status).phrase, unparsable_detail(exc)))
        response.force_close()
        STATS.count(UNPARSABLE, request.method, status)
        return response


class ProblemServer(web.Server):
    """aiohttp's low-level server making :class:`ProblemRequestHandler` connections (``web.Server`` makes
    its ``RequestHandler`` by name: no option chooses the class)."""

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """``web.AppRunner`` for the API: the same application server, answered by :class:`ProblemServer`.
    Run it with :data:`SERVER_OPTIONS` (``serve``; tests: ``tests.api_support.ApiTestServer``)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the app started and frozen, its handler and options
        return ProblemServer(server.request_handler, request_factory=server.request_factory,
                             handler_cancellation=server.handler_cancellation, loop=server._loop,
                             **server._kwargs)


async def serve(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set."""
    app = create_app(pool=pool, settings=settings)
    runner = ApiRunner(app, handle_signals=False, **SERVER_OPTIONS)
    await runner.setup()
    site = web.TCPSite(runner, settings["api.host"], settings["api.port"], reuse_address=True)
    await site.start()
    url = f"http://{settings['api.host']}:{settings['api.port']}/"
    log.info("api listening", extra={"url": url})
    try:
        await _network_checked(app, stop)
        # the road network and the application are built: the garbage collector never visits them again
        log.info("start-up objects frozen", extra={"objects": freeze_long_lived()})
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
