"""The aiohttp application: ``create_app`` wires routes, middlewares and shared state."""

from __future__ import annotations

import time

import asyncpg
from aiohttp import web
from prometheus_client import Counter, Histogram

from api import ops, stations
from api.context import POOL, SETTINGS
from api.problems import problem_middleware
from sonae.config import Settings

REQUESTS = Counter("sonae_api_requests_total", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram("sonae_api_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5))


@web.middleware
async def metrics_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        REQUESTS.labels(route, request.method, str(status)).inc()
        LATENCY.labels(route).observe(time.perf_counter() - started)


@web.middleware
async def security_headers(request: web.Request, handler):  # type: ignore[no-untyped-def]
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response


def create_app(*, pool: asyncpg.Pool, settings: Settings) -> web.Application:
    """Build the API application over an open connection pool."""
    app = web.Application(middlewares=[metrics_middleware, problem_middleware, security_headers], client_max_size=1 << 20)
    app[POOL] = pool
    app[SETTINGS] = settings
    app.router.add_routes(ops.routes)
    app.router.add_routes(stations.routes)
    return app
