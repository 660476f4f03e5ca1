"""RFC 9457 problem details: every error the API returns is ``application/problem+json``."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

log = logging.getLogger("sonae.api")


class Problem(Exception):
    """Raise in a handler to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str = "", *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(status: int, title: str, detail: str = "", *, headers: dict[str, str] | None = None,
                     **extra: Any) -> web.Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra)
    return web.Response(status=status, body=json.dumps(body, ensure_ascii=False).encode(),
                        content_type="application/problem+json", headers=headers)


@web.middleware
async def problem_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        if "\x00" in request.path or "%00" in request.query_string or "\x00" in request.query_string:
            raise Problem(400, "Bad Request", "the request contains a NUL character")
        return await handler(request)
    except Problem as exc:
        return problem_response(exc.status, exc.title, exc.detail, headers=exc.headers, **exc.extra)
    except web.HTTPException as exc:
        if exc.status_code < 400:
            raise
        return problem_response(exc.status_code, exc.reason)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return problem_response(500, "Internal Server Error", "the error was logged")
