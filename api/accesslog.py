"""An access log that never records query strings.

aiohttp's default format logs the request line, query included: a route request's latitude and
longitude would end up in the logs. This logger writes method, path (no query), status, size and
time as structured fields.
"""

from __future__ import annotations

import logging

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "http request",
            extra={"method": request.method, "path": request.path, "status": response.status,
                   "bytes": response.body_length, "ms": round(time * 1000, 2)},
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
