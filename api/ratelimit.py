"""Per-client rate limiting for the public endpoints: a token bucket per client address.

The client address is the TCP peer, or the first X-Forwarded-For hop when ``api.trust_forwarded_for``
is on (only behind Sonae's own reverse proxy). Addresses are kept in memory only, for at most a few
minutes, and never logged. Server-Sent Events and operations endpoints are not limited.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from api.problems import problem_response

EXEMPT_PREFIXES = ("/healthz", "/readyz", "/metrics", "/api/v1/events")


class TokenBuckets:
    """``rate`` requests a minute with bursts of ``burst``; at most ``max_clients`` tracked."""

    def __init__(self, *, per_minute: int, burst: int | None = None, max_clients: int = 100_000) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst if burst is not None else max(10, per_minute // 6))
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str, now: float | None = None) -> float:
        """Take one token; returns 0 when allowed, else the seconds until the next token."""
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def client_address(request: web.Request, *, trust_forwarded_for: bool) -> str:
    if trust_forwarded_for:
        forwarded = request.headers.get("X-Forwarded-For", "")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.remote or "unknown"


def rate_limit_middleware(*, per_minute: int, trust_forwarded_for: bool) -> Any:
    buckets = TokenBuckets(per_minute=per_minute)

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        if request.path.startswith(EXEMPT_PREFIXES) or "Authorization" in request.headers:
            return await handler(request)
        wait = buckets.take(client_address(request, trust_forwarded_for=trust_forwarded_for))
        if wait > 0:
            return problem_response(429, "Too Many Requests", "slow down and retry after the given time",
                                    headers={"Retry-After": str(max(1, round(wait)))})
        return await handler(request)

    return middleware


def cors_middleware(origins: str) -> Any:
    allowed = {o.strip() for o in origins.split(",") if o.strip()}

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        ok = origin is not None and ("*" in allowed or origin in allowed)
        if request.method == "OPTIONS" and ok and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204)
        else:
            response = await handler(request)
        if ok and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
            response.headers["Vary"] = "Origin"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = "GET, POST, PATCH, DELETE, OPTIONS"
                response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
                response.headers["Access-Control-Max-Age"] = "600"
        return response

    return middleware
