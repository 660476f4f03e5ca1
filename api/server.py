"""Serving the API: the runner options every deployment uses (path-only access log), and a
``serve`` coroutine for the CLI."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from http import HTTPStatus
from typing import Any

import asyncpg
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion, HttpVersion10, HttpVersion11, RawRequestMessage
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.http_parser import HttpRequestParser
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import ERROR, RequestHandler, RequestPayloadError, _ErrInfo

from api.accesslog import PathOnlyAccessLogger
from api.app import create_app
from api.edge import STATS, UNPARSABLE, secured
from api.parsefaults import (
    FAULT_CHUNKED,
    FAULT_OTHER,
    FAULTS,
    SUPPORTED_VERSIONS,
    UnreadableBody,
    VersionNotSupported,
    unparsable_detail,
    unsupported_version,
)
from api.problems import problem_response
from sonae.config import ConfigError, Settings
from sonae.eventloop import freeze_long_lived

log = logging.getLogger("sonae.api")

#: a connection must send a complete request head within this many seconds of opening (or of its
#: previous response): slow-header (slowloris) clients are closed. aiohttp arms its keep-alive timer
#: when a connection is made and closes the connection when it fires while no request is being handled.
HEADER_TIMEOUT_S = 10.0



class _NoRequestLine(logging.Filter):
    """Keeps a request that aiohttp could not parse out of the logs but for its kind and status, one
    WARNING line without a traceback: it is the client's fault, not the service's, and anyone can send one.

    aiohttp logs such a request ("Error handling request", ERROR) with its parse error, whose text quotes
    the raw request line, query included: a resident's position (``lat``/``lon``) would reach the logs.
    A body that cannot be decoded (``Content-Encoding: gzip`` that is not), which the API has answered
    with a 400 problem, is met again when aiohttp drains the rest of it after the answer and was logged as
    "Unhandled exception" with a full traceback, on any path, without an account: one line too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "unparsable request: %s (%s)", (type(exc).__name__, exc.code)
        elif isinstance(exc, RequestPayloadError):
            record.msg, record.args = "unreadable request body after its answer: %s", (type(exc).__name__,)
        else:
            return True
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


#: aiohttp's server logger for this API (its parse errors without the request line)
SERVER_LOG = logging.getLogger("sonae.api.server")
SERVER_LOG.addFilter(_NoRequestLine())

#: how every server of the API is run (:class:`ApiRunner`, ``ApiTestServer.start_server``): never log query strings
#: (the access log and aiohttp's own errors); close connections that send their request head too
#: slowly (bodies: ``api.bodies.BODY_TIMEOUT_S``)
SERVER_OPTIONS: dict[str, Any] = {"access_log_class": PathOnlyAccessLogger, "keepalive_timeout": HEADER_TIMEOUT_S,
                                  "logger": SERVER_LOG}


__all__ = ["FAULTS", "FAULT_OTHER", "HEADER_TIMEOUT_S", "SERVER_OPTIONS", "ApiRunner", "ProblemRequestHandler",
           "ProblemServer", "serve", "unparsable_detail"]

#: the end of a request's head (RFC 9112 §2.1: an empty line), after which the next request begins
_HEAD_END = re.compile(rb"\r?\n\r?\n")


def faulted_method(data: bytes, index: int) -> bytes | None:
    """The method token of request ``index`` (0: the first) of the bytes ``data`` a parse fault was met in
    (each request taken to begin where the previous head ended), or None. The method only: the target, which
    may hold a resident's position, is never kept."""
    starts = [0, *(m.end() for m in _HEAD_END.finditer(data))]
    if index >= len(starts):
        return None
    line = data[starts[index]:].split(b"\n", 1)[0]
    return line.split(b" ", 1)[0] if b" " in line else None


class ProblemRequestHandler(RequestHandler):
    """aiohttp's connection handler, with every request it could not parse answered like every other error
    of the API and counted, and a body whose framing breaks after its head failed at once.

    **A request aiohttp could not parse.** aiohttp answers it itself, in :meth:`RequestHandler.handle_error`
    (called with the parse error and the status aiohttp chose, 400, before any application code runs), with
    a ``text/plain`` body that quotes the raw request line, query included, as ``HTTP/1.0`` (the version of
    the placeholder request aiohttp makes for it). Here that answer is an RFC 9457 problem
    (:func:`~api.problems.problem_response`, detail :func:`unparsable_detail`) with the API's security
    headers (:func:`api.edge.secured`) and ``Connection: close`` (the connection is closed after it,
    aiohttp's rule), in the version the client spoke (:meth:`error_message`), and it is counted in
    ``sonae_api_requests_total{route="unparsable",method="UNKNOWN",status}`` (:data:`api.edge.UNPARSABLE`;
    aiohttp's method for a request it could not read; no latency is observed: aiohttp does not time its
    parsing). Other errors (a handler's 500 or 504, which the API's edge middleware already turns into
    problems) keep aiohttp's behaviour; aiohttp's logging (through ``SERVER_LOG``, without the request
    line) is kept.

    **A body whose framing breaks after its head was read** (chunked: an invalid chunk-size line, a chunk
    longer than announced, no CRLF after a chunk, a bad trailer; in a later read of the socket than the
    head). aiohttp's C parser (llhttp) raises the error from ``feed_data`` and forgets the body: its payload
    gets neither the error nor its end, so a handler reading it waited out ``api.bodies.BODY_TIMEOUT_S``
    (a 408 counted under its route), and an answered request's connection lingered for aiohttp's
    ``lingering_time``; aiohttp queued the error as one more request, never answered (its Python parser sets
    the error on the payload and queues it too). Here (:meth:`data_received`) the error is taken off the
    queue and set on that request's payload as :class:`~api.parsefaults.UnreadableBody`, with its end, so
    a reader gets it at once; the edge middleware answers it with a 400 problem counted as unparsable (also
    when the handler answered without reading the body, if that answer was not yet sent). An answer already
    sent stands; the connection is closed after it (nothing after a broken body can be read as a request).
    """

    def __init__(self, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        #: aiohttp's option, which its handler does not keep (for :meth:`_before_the_fault`'s parser)
        self._auto_decompress: bool = kwargs.get("auto_decompress", True)
        #: the last bytes of the connection's first line while it is incomplete (the version ends it; the
        #: target, which may hold a resident's position, is not kept), None once it ended
        self._opening: bytes | None = b""
        #: the connection's first line ended in " HTTP/1.0"
        self._spoke_10 = False
        #: the last request parsed on this connection, and its payload (its body may still be arriving)
        self._parsed: tuple[RawRequestMessage, StreamReader] | None = None
        #: the parser stopped inside a body: the rest of the connection's bytes are no request
        self._body_broken = False
        #: the payload of the last request whose answer was sent
        self._answered: StreamReader | None = None
        #: the bytes read since the parser last held none (aiohttp's parser keeps the rest of a read while
        #: its queue of requests is full, MAX_MSG_QUEUE_SIZE = 32, and parses it later, fed b""), and how
        #: many requests it gave so far: what :meth:`_before_the_fault` parses again
        self._window, self._window_requests = b"", 0
        #: the request a parse fault was met in is a HEAD: its answer has no content (RFC 9110 §9.3.2)
        self._fault_head = False

    @property
    def error_message(self) -> RawRequestMessage:
        """The request aiohttp's answer to an unparsable request is made for: aiohttp's placeholder (method
        ``UNKNOWN``, target ``/``, the connection closed after it), in the version the client spoke: that
        of the connection's last parsed request, else ``HTTP/1.0`` when the connection's first line ends in
        `` HTTP/1.0``, else ``HTTP/1.1`` (RFC 9110 §2.5: a server answers in the highest version it conforms
        to of the client's major version)."""
        version: HttpVersion = HttpVersion11
        if self._parsed is not None and tuple(self._parsed[0].version) in SUPPORTED_VERSIONS:
            version = self._parsed[0].version
        elif self._spoke_10:
            version = HttpVersion10
        return ERROR._replace(version=version)

    def data_received(self, data: bytes) -> None:
        if self._body_broken:
            return
        if self._opening is not None:
            line, lf, _ = (self._opening + data).partition(b"\n")
            if lf:
                self._spoke_10, self._opening = line.rstrip(b"\r").endswith(b" HTTP/1.0"), None
            else:
                self._opening = line[-len(b" HTTP/1.0\r"):]
        if data and not self._buffer_paused:  # (paused: the parser still holds bytes of the window)
            self._window, self._window_requests = data, 0
        elif data:
            self._window += data
        before, queued = self._parsed, len(self._messages)
        super().data_received(data)
        added = len(self._messages) - queued  # (start() pops only between reads)
        if added == 0:  # a head or a body not complete yet: nothing new to look at (as the loop below finds)
            return
        if added == 1:  # the usual read, one whole request: what the loop below does with it, without its lists
            message, payload = self._messages[-1]
            if isinstance(message, RawRequestMessage) and tuple(message.version) in SUPPORTED_VERSIONS:
                self._parsed = (message, payload)
                self._window_requests += 1
                return  # (the last check below: `self._parsed is not before`)
        new = list(itertools.islice(self._messages, queued, None))
        if (len(new) == 1 and isinstance(new[0][0], _ErrInfo) and (before is None or before[1].is_eof())
                and (recovered := self._before_the_fault(self._window, skip=self._window_requests))):
            # the requests complete before the fault in these bytes, which aiohttp's parser dropped with it
            fault = self._messages.pop()
            self._messages.extend(recovered)
            self._messages.append(fault)
            self._request_count += len(recovered)
            new = [*recovered, fault]
        for message, payload in new:
            if isinstance(message, _ErrInfo):
                # (aiohttp's answer is made for a placeholder request of method UNKNOWN: see handle_error)
                self._fault_head = faulted_method(self._window, self._window_requests) == b"HEAD"
                if unsupported_version(message.exc):
                    self._refuse_version(message, payload)
                    break
            if isinstance(message, RawRequestMessage):
                self._parsed = (message, payload)
                self._window_requests += 1
                if tuple(message.version) not in SUPPORTED_VERSIONS:
                    self._fault_head = message.method == "HEAD"
                    self._refuse_version(message, payload)
                    break
        if before is None or before[1].is_eof() or len(new) != 1 or self._parsed is not before:
            return
        # one parse error and no request: the parser failed inside the body of `before`, read earlier
        message, payload = before
        error, _ = self._messages.pop()  # (aiohttp's _ErrInfo: status, exc, message) never answered
        assert isinstance(error, _ErrInfo)
        self._body_broken = True
        if payload is self._answered:  # the end stops aiohttp's lingering read of the body (no one else reads)
            payload.feed_eof()
        else:  # a reader (the handler, or its edge middleware) gets the error at once, never a truncated body
            detail = FAULT_CHUNKED if message.chunked else unparsable_detail(error.exc)
            payload.set_exception(UnreadableBody(detail), error.exc)
            payload.feed_eof()
        if not any(waiting is payload for _, waiting in self._messages):
            self.close()  # after this request's answer, whatever it is (a queued one's answer closes it)

    def _refuse_version(self, message: RawRequestMessage | _ErrInfo, payload: StreamReader) -> None:
        """A request whose line names an HTTP version other than 1.0 and 1.1: parsed (``GET / HTTP/2.0``,
        ``HTTP/0.9``; and any ``HTTP/x.y`` with aiohttp's Python parser), aiohttp answered it, 200 in that
        version (found); refused by llhttp (``HTTP/3.7``, ``HTTP/1.2``: :func:`~api.parsefaults.unsupported_version`),
        a 400 "malformed". Its place in the queue is taken by a 505
        :class:`~api.parsefaults.VersionNotSupported` fault, answered by :meth:`handle_error` like every
        unparsable request (a problem, in HTTP/1.1: :attr:`error_message`; the connection closed after it:
        nothing after it on the connection is read as a request)."""
        fault = VersionNotSupported()
        queued = [m for m, _ in self._messages]
        at = next(i for i, m in enumerate(queued) if m is message)
        while len(self._messages) > at + 1:
            self._messages.pop()  # (requests after it on the connection: never answered, it is closed)
        self._messages[at] = (_ErrInfo(status=fault.code, exc=fault, message=fault.message), payload)

    def _before_the_fault(self, data: bytes, *, skip: int = 0) -> list[tuple[RawRequestMessage, StreamReader]]:
        """The requests ``data`` holds complete before the fault aiohttp's parser met in it, in order, but for
        the first ``skip`` (already queued: aiohttp's parser gave them before its queue filled and it stopped;
        found: of 33 or more pipelined requests before a broken one, those after the 32nd got no answer).

        A parse error in a pipelined request drops the requests parsed before it in the same read: the
        parser raises, and aiohttp queues only the error (found: a good request followed in the same
        bytes by one whose body framing broke got no answer, only the 400). Called when nothing was being
        read before ``data`` (the connection's first bytes, or the last request's body complete), ``data``
        is parsed again by a parser of the same kind made for it that stops after each request
        (``max_msg_queue_size=1``), up to the fault; bytes that do not begin a request there (a head
        split across reads) give nothing, and the error stands alone as before.
        """
        fresh = HttpRequestParser(self, self._loop, self._read_bufsize, max_line_size=self.max_line_size,
                                  max_field_size=self.max_field_size, max_headers=self.max_headers,
                                  payload_exception=RequestPayloadError, auto_decompress=self._auto_decompress,
                                  max_msg_queue_size=1)
        found: list[tuple[RawRequestMessage, StreamReader]] = []
        chunk = data
        try:
            while True:
                messages, upgraded, _ = fresh.feed_data(chunk)
                if not messages or upgraded:
                    break
                for message, payload in messages:
                    if not isinstance(message, RawRequestMessage) or not payload.is_eof():
                        return found  # only whole requests are answered; the fault ends the connection
                    found.append((message, payload))
                    fresh.message_consumed()
                chunk = b""
        except HttpProcessingError:
            pass
        found = found[skip:]
        if found:
            self._parsed = found[-1]
        return found

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._answered = request.content

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        plain = super().handle_error(request, status, exc, message)  # logs; raises if an answer began
        if not isinstance(exc, HttpProcessingError):
            return plain
        status = plain.status
        problem = problem_response(status, HTTPStatus(status).phrase, unparsable_detail(exc),
                                   headers={"Connection": "close"})
        if self._fault_head:
            # RFC 9110 §9.3.2: no content in an answer to HEAD (found: a HEAD in HTTP/1.2 got its 505 with the
            # problem document; aiohttp leaves out a body by the request's method, here its placeholder's).
            # RFC 9110 §8.6: its Content-Length, if any, is the GET's: the length of the problem left out
            # (found: ``Content-Length: 0``, aiohttp's for no body, while the GET's answer was 227 bytes). The
            # connection is closed after the head, so no reader waits for those bytes.
            length = len(problem.body) if isinstance(problem.body, bytes | bytearray) else 0
            problem.body = None
            problem.headers[hdrs.CONTENT_LENGTH] = str(length)
        response = secured(problem)
        response.force_close()
        STATS.count(UNPARSABLE, request.method, status)
        return response


class ProblemServer(web.Server):
    """aiohttp's low-level server making :class:`ProblemRequestHandler` connections (``web.Server`` makes
    its ``RequestHandler`` by name: no option chooses the class), whose answers to unparsable requests are
    made for :attr:`ProblemRequestHandler.error_message` instead of aiohttp's ``HTTP/1.0`` placeholder
    (``web_protocol.ERROR``, handed to the request factory)."""

    def __init__(self, handler: Any, *, request_factory: Any = None, **kwargs: Any) -> None:
        super().__init__(handler, request_factory=request_factory, **kwargs)
        make = self.request_factory

        def made(message: RawRequestMessage, payload: StreamReader, protocol: RequestHandler, writer: Any,
                 task: Any) -> web.BaseRequest:
            if message is ERROR and isinstance(protocol, ProblemRequestHandler):
                message = protocol.error_message
            return make(message, payload, protocol, writer, task)

        self.request_factory = made

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
