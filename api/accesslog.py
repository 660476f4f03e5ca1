"""An access log that never records query strings, nor the path as the client sent it.

aiohttp's default format logs the request line, query included: a route request's latitude and
longitude would end up in the logs. This logger writes method, route, status, size and time as
structured fields. The route is the template the request matched (``/api/v1/stations/{station_id}``),
``unmatched`` when none did: the label the request metrics use (:mod:`api.edge`). The path itself is
never written: a client can put anything in it, a resident's position too (found by break33:
``/api/v1/level%3Flat=37.39&lon=140.35``, a link whose ``?`` a messenger app encoded, was logged as
``/api/v1/level?lat=37.39&lon=140.35``; so were ``/api/v1/route/37.39,140.35`` and a position taken for
a station id).
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

#: the route of a request that matched none (a 404 or 405 from the router, a request that could not be parsed)
UNMATCHED = "unmatched"


def route_of(request: BaseRequest) -> str:
    """The route template ``request`` matched, or :data:`UNMATCHED`: never text of its path."""
    match_info = getattr(request, "_match_info", None)  # None before routing (an unparsable request)
    resource = match_info.route.resource if match_info is not None else None
    return resource.canonical if resource is not None else UNMATCHED


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "http request",
            extra={"method": request.method, "route": route_of(request), "status": response.status,
                   "bytes": response.body_length, "ms": round(time * 1000, 2)},
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
