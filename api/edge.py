"""The API's outermost middleware: what every answer gets on its way out, in one pass.

One middleware instead of four (issue #21: the route and alert endpoints are measured per CPU second
against a bare aiohttp endpoint, and each layer of coroutines costs every request):

1. **problems** (RFC 9457): a request holding a NUL character is refused; a :class:`~api.problems.Problem`,
   an ``HTTPException`` of 400 or more, or any other error becomes an ``application/problem+json``
   answer (an unexpected error is logged with the path, never the query: residents' positions are in
   it); a database that cannot be reached (:func:`sonae.db.database_unreachable`: down, restarting, refusing
   connections, a connection lost) is a ``503`` with ``Retry-After`` (:data:`UNREACHABLE_RETRY_AFTER_S`),
   not a 500; a redirect (``HTTPException`` under 400) passes through;
2. **security headers** (``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
   ``X-Frame-Options: DENY``, unless the handler set its own, e.g. the pages' CSP answers) are not added
   here but by :func:`secure_on_prepare`, an ``on_response_prepare`` signal at the depth of :mod:`api.vary`
   and :mod:`api.cors`, as each answer's head is written: problems, 304s and a stream whose head its
   handler sends itself (``/api/v1/events``; found: its GET lacked them, added here after the handler
   returned, while its HEAD carried them);
3. **compression** (:mod:`api.compression`): gzip for compressible bodies of :data:`~api.compression.MIN_BYTES`
   or more when the client accepts it, with ``Vary: Accept-Encoding`` either way;
4. **metrics**: ``sonae_api_requests_total{route,method,status}`` and the latency histogram
   ``sonae_api_request_seconds{route}`` (seconds, :data:`LATENCY_BUCKETS`), counted in plain integers
   by this process's event loop and read by Prometheus through :class:`RequestStats` (a collector), so
   a request pays a dict lookup and two additions rather than three locked metric updates. A request
   whose client left before its answer counts as :data:`CLIENT_CLOSED_REQUEST` (499), not as a 500.
   A request aiohttp could not parse never reaches this middleware: :class:`api.server.ProblemRequestHandler`
   answers it (a problem, with :func:`secured`'s headers) and counts it under route :data:`UNPARSABLE`.
   A request whose head was read but whose body cannot be (:func:`api.parsefaults.body_fault`: its chunked
   framing broke after the head, or its Content-Encoding cannot be decoded) is answered here, with a 400
   problem and ``Connection: close``, and counted the same way, under :data:`UNPARSABLE` and ``UNKNOWN``
   with no latency: whether the handler read the body (and got the fault) or answered before looking at it
   (the fault already set on the payload when its answer is made).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping

from aiohttp import hdrs, web
from aiohttp.web_response import ContentCoding
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from api.compression import COMPRESSIBLE, MIN_BYTES, accepts_gzip
from api.parsefaults import body_fault
from api.problems import Problem, problem_response
from api.vary import merge_recorded
from sonae.db import database_unreachable

log = logging.getLogger("sonae.api")

#: upper bounds (seconds) of the latency histogram's buckets (``+Inf`` is added)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

#: the status counted for a request whose client left before its answer (nginx's 499 "client closed
#: request"; no HTTP status exists for it): a resident closing the page during a long answer, or every
#: open event stream when a server stops, is no server error (the 5xx alert rule reads these counts)
CLIENT_CLOSED_REQUEST = 499

_SECURITY_HEADERS = (("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"),
                     ("X-Frame-Options", "DENY"))

#: the route label of a request that aiohttp could not parse (no route was ever matched; its method label is
#: aiohttp's "UNKNOWN"): counted by :class:`api.server.ProblemRequestHandler`
UNPARSABLE = "unparsable"

#: headers of an aiohttp HTTPException that describe its plain-text body, not the problem answer's
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


class RequestStats(Collector):
    """This process's request counts and latencies, exposed as Prometheus metrics when scraped.

    ``counts[(route, method, status)]`` is a count of answers; ``latency[route]`` is a list of
    per-bucket counts (one per :data:`LATENCY_BUCKETS` bound, then one for ``+Inf``) followed by the sum
    of seconds. Only the event loop writes them; :meth:`collect` reads copies (``dict.copy`` and
    ``list`` copies hold the GIL throughout, so a scrape from another thread sees a consistent value
    per key).
    """

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, list[float]] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answer of ``status`` to ``method`` on ``route`` that took ``seconds``."""
        self.count(route, method, status)
        row = self.latency.get(route)
        if row is None:
            row = self.latency[route] = [0] * (len(LATENCY_BUCKETS) + 2)
        row[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        row[-1] += seconds

    def count(self, route: str, method: str, status: int) -> None:
        """Count one answer of ``status`` to ``method`` on ``route`` in the request counts only: for an
        answer whose time is not known (a request aiohttp could not parse: :data:`UNPARSABLE`)."""
        key = (route, method, status)
        self.counts[key] = self.counts.get(key, 0) + 1

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("sonae_api_requests", "HTTP requests", labels=["route", "method", "status"])
        for (route, method, status), n in self.counts.copy().items():
            requests.add_metric([route, method, str(status)], n)
        yield requests
        latency = HistogramMetricFamily("sonae_api_request_seconds", "HTTP request latency", labels=["route"])
        for route, row in self.latency.copy().items():
            copy = list(row)
            cumulative, buckets = 0.0, []
            for bound, k in zip((*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf"), copy[:-1], strict=True):
                cumulative += k
                buckets.append((bound, cumulative))
            latency.add_metric([route], buckets, sum_value=copy[-1])
        yield latency


#: the one collector of this process (registered once, whatever number of applications it builds)
STATS = RequestStats()
REGISTRY.register(STATS)


#: seconds a client is asked to wait (``Retry-After``) when the database cannot be reached
#: (:func:`sonae.db.database_unreachable`): every handler's such fault is a 503, never a 500
UNREACHABLE_RETRY_AFTER_S = 10
UNREACHABLE_DETAIL = ("the service cannot reach its database just now; the information could not be read. "
                      "Try again shortly; until then, follow your municipality's announcements.")

_BODIES = (bytes, bytearray)


def _media_type(headers: Mapping[str, str]) -> str:
    """The media type of a Content-Type header (before ";", lower case; "" without one): what
    ``response.content_type`` gives, without its parse of the parameters."""
    return headers.get(hdrs.CONTENT_TYPE, "").partition(";")[0].strip().lower()


def secured(response: web.StreamResponse) -> web.StreamResponse:
    """``response`` (not yet prepared) with the security headers of every answer (see the module's text)
    that it does not set itself."""
    headers = response.headers
    for name, value in _SECURITY_HEADERS:
        if name not in headers:
            headers[name] = value
    return response


async def secure_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: :func:`secured`'s headers on every answer of the application as its head is
    written (a stream's included), those a handler set itself kept."""
    secured(response)


async def answer_on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` of the API's application: ``Vary`` (:func:`api.vary.merge_recorded`), then
    :func:`secured`'s headers, as :func:`api.vary.on_prepare` and :func:`secure_on_prepare` did in that order, in
    one receiver (issue #21: each receiver is one more coroutine made and awaited per answer; measured 1.22 µs
    for the two, 0.80 µs for this one)."""
    merge_recorded(request, response)
    secured(response)


def _problem(exc: BaseException, request: web.Request) -> web.Response | None:
    """The problem answer for an exception a handler raised; None for one that passes (a redirect)."""
    if isinstance(exc, Problem):
        return problem_response(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)
    if isinstance(exc, web.HTTPException):
        if exc.status_code < 400:
            return None
        # its own headers (a 405's Allow, RFC 9110 §15.5.6; a 401's WWW-Authenticate), not its body's
        kept = {k: v for k, v in exc.headers.items() if k.lower() not in _BODY_HEADERS}
        return problem_response(exc.status_code, exc.reason, headers=kept)
    if database_unreachable(exc):
        # the database is down, restarting or refusing connections: a temporary fault of this service, not
        # a broken request or a bug (found: /api/v1/level answered 500 during an outage, and the resident
        # page could not tell "try again" from "wrong"); logged without a traceback, with the path only
        log.warning("database unreachable: answered 503", extra={"path": request.path, "error": type(exc).__name__})
        return problem_response(503, "Service Unavailable", UNREACHABLE_DETAIL,
                                headers={"Retry-After": str(UNREACHABLE_RETRY_AFTER_S)},
                                retry_after_s=UNREACHABLE_RETRY_AFTER_S, reason="database_unreachable")
    log.error("unhandled error", exc_info=exc, extra={"path": request.path})
    return problem_response(500, "Internal Server Error", "the error was logged")


def _abort(exc: BaseException, request: web.Request) -> web.Response:
    """Log a handler's failure after its answer began and close the connection; the 500 it counts as.

    No problem answer can follow a head already sent: written into the stream it would be read as body
    (chunked framing broken, an SSE client's parser fed an HTTP status line). Closing the connection ends
    the stream without its last chunk, which every client reads as an interrupted answer (an SSE client
    reconnects with ``Last-Event-ID``). The answer returned is never sent: aiohttp finds the connection
    closed, takes it for a client gone and logs nothing more.
    """
    log.error("unhandled error after the answer began: connection closed", exc_info=exc,
              extra={"path": request.path})
    if request.transport is not None:
        request.transport.close()
    return problem_response(500, "Internal Server Error", "the error was logged")


def _unreadable(detail: str) -> web.Response:
    """The answer to a request whose body cannot be read: a 400 problem, and the connection closed after
    it (the parser cannot find where the next request would begin)."""
    response = problem_response(400, "Bad Request", detail, headers={"Connection": "close"})
    response.force_close()
    return response


@web.middleware
async def edge_middleware(request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Problems, compression and metrics for every request (see the module's text)."""
    started = time.perf_counter()
    status = 500
    unparsable = False
    try:
        try:
            # the target as sent (path and query, undecoded): a NUL is "%00" there, or the byte itself, in
            # either part (one look instead of decoding the path and the query for it)
            raw = request.raw_path
            if "%00" in raw or "\x00" in raw:
                raise Problem(400, "Bad Request", "the request contains a NUL character")
            response = await handler(request)
            if not response.prepared and (detail := body_fault(request.content.exception())) is not None:
                response, unparsable = _unreadable(detail), True  # the body broke before the answer went out
        except asyncio.CancelledError:  # the client went away (or the server is stopping): not the server's error
            status = CLIENT_CLOSED_REQUEST
            raise
        except Exception as exc:
            if request.writer.output_size:  # (aiohttp's own test) a stream failed after its head went out
                response = _abort(exc, request)
            elif (detail := body_fault(exc)) is not None:
                response, unparsable = _unreadable(detail), True
            else:
                answer = _problem(exc, request)
                if answer is None:
                    status = exc.status  # type: ignore[attr-defined]  # (an HTTPException under 400)
                    raise
                response = answer
        status = response.status
        if response.prepared:  # a stream (SSE) or an answer already sent: nothing more to add
            return response
        headers = response.headers  # (security headers: secure_on_prepare, as the head is written)
        if (status == 200 and isinstance(response, web.Response) and hdrs.CONTENT_ENCODING not in headers
                and isinstance(body := response.body, _BODIES) and len(body) >= MIN_BYTES
                and "accept-encoding" not in (vary := headers.get(hdrs.VARY, "")).lower()
                and _media_type(headers) in COMPRESSIBLE):
            # (a handler naming Accept-Encoding in Vary chose the encoding itself: api.answers, the
            # pages' files, the road network)
            headers[hdrs.VARY] = f"{vary}, Accept-Encoding" if vary else "Accept-Encoding"
            if accepts_gzip(request.headers.get(hdrs.ACCEPT_ENCODING, "")):
                response.enable_compression(ContentCoding.gzip)
        return response
    finally:
        if unparsable:
            STATS.count(UNPARSABLE, "UNKNOWN", status)
        else:
            resource = request.match_info.route.resource
            STATS.observe(resource.canonical if resource is not None else "unmatched", request.method, status,
                          time.perf_counter() - started)
