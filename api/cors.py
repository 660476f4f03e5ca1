"""CORS (Fetch standard §3.2): the headers an allowed origin needs, on every answer the API gives it.

:func:`cors_middleware` answers a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from
an allowed origin itself (204). :func:`cors_on_prepare` (an ``on_response_prepare`` signal, at the depth
of :mod:`api.vary`) adds ``Access-Control-Allow-Origin`` when an answer's head is written, so an allowed
origin gets it on every status and form: a 200, a 304, a problem (4xx/5xx, made by :mod:`api.edge` after
the handler raised), and a stream whose head a handler sends itself (``/api/v1/events``). Found: the
headers were added by the middleware to the answer a handler *returned*, so problems (raised) and the
event stream (prepared before it returned) lacked them, and a browser read neither.
``Vary: Origin`` is listed on every answer, allowed or not (whether the header is sent depends on it).

Origins are compared in their serialised form (:func:`sonae.origins.serialised_origin`, RFC 6454 §6.2),
the configured ones and the request's (found: ``https://Other.example/`` configured never matched what a
browser sends, ``https://other.example``). A request with more than one ``Origin`` header, or an origin list or
anything but one origin (or ``null``) in it, is no allowed origin's, also with ``*`` (:func:`request_origin`).
An allowed origin's answers list :data:`EXPOSE_HEADERS` (Fetch §3.2.5: a page reads only the safelisted
response headers otherwise; found: a partner could read neither a 429's ``Retry-After`` nor an ``ETag``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from api.vary import merged
from sonae.origins import serialised_origin

ALLOW_METHODS = "GET, POST, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
MAX_AGE = "600"
#: the response headers of the API a partner's page may read beyond the CORS-safelisted ones (Cache-Control,
#: Content-Language, Content-Length, Content-Type, Expires, Last-Modified, Pragma): Retry-After (429, 503),
#: ETag (alerts, pages), Location, Link (NGSI-LD's context), Content-Disposition (CSV exports),
#: WWW-Authenticate (401), NGSILD-Results-Count (NGSI-LD counts); Content-Language listed all the same
EXPOSE_HEADERS = ("Retry-After, ETag, Location, Link, Content-Language, Content-Disposition, WWW-Authenticate, "
                  "NGSILD-Results-Count")


def allowed_origins(origins: str) -> frozenset[str]:
    """The origins of the setting ``api.cors_origins`` (comma-separated; ``*`` allows any), serialised
    (one that is none, refused when the settings are checked, is left out)."""
    kept: set[str] = set()
    for listed in (o.strip() for o in origins.split(",")):
        origin = "*" if listed == "*" else serialised_origin(listed) if listed else None
        if origin is not None:
            kept.add(origin)
    return frozenset(kept)


def request_origin(request: web.Request) -> str | None:
    """The request's origin, serialised, or ``"null"`` (an opaque origin); None when it sent none, or no one
    origin: two ``Origin`` headers, an origin list (``https://a.example https://b.example``), anything else
    that is no ``origin-or-null`` (Fetch §3.1). Such a request is no browser's: it is answered as a request
    without an origin, whatever ``api.cors_origins`` allows (found: with ``*`` it got ``*``)."""
    sent = request.headers.getall(hdrs.ORIGIN, [])
    if len(sent) != 1:  # none, or two (no browser sends two: which one would be allowed?)
        return None
    return "null" if sent[0].strip() == "null" else serialised_origin(sent[0])


def _allow_origin(request: web.Request, allowed: frozenset[str]) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for ``request``; None when it has no one origin
    (:func:`request_origin`) or its origin is not allowed (``*`` allows any, ``null`` included)."""
    origin = request_origin(request)
    if origin is None:
        return None
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


def cors_middleware(origins: str) -> Any:
    """Answer a preflight of an allowed origin (204); every other request goes on to its handler."""
    allowed = allowed_origins(origins)

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if (request.method == hdrs.METH_OPTIONS and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
                and _allow_origin(request, allowed) is not None):
            return web.Response(status=204)
        return await handler(request)

    return middleware


def cors_on_prepare(origins: str) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """``on_response_prepare``: the CORS response headers of an allowed origin, and ``Vary: Origin``,
    on every answer as its head is written."""
    allowed = allowed_origins(origins)

    async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[hdrs.VARY] = merged(response.headers.get(hdrs.VARY), [hdrs.ORIGIN])
        value = _allow_origin(request, allowed)
        if value is None:
            return
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = value
        response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS
        if request.method == hdrs.METH_OPTIONS:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = ALLOW_METHODS
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = ALLOW_HEADERS
            response.headers[hdrs.ACCESS_CONTROL_MAX_AGE] = MAX_AGE

    return on_prepare
