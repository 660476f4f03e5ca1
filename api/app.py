"""The aiohttp application: ``create_app`` wires routes, middlewares and shared state."""

from __future__ import annotations

import collections

import asyncpg
from aiohttp import web

from api import accounts, boundaries, level, openapi, ops, simulations, staff, stations
from api.alerts import ACTIVE_CACHE as alerts_cache
from api.answers import AnswerCache
from api.context import POOL, SETTINGS
from api.cors import cors_middleware, cors_on_prepare
from api.edge import answer_on_prepare, edge_middleware
from api.evacuation import ROUTE_CACHE as evacuation_cache
from api.ratelimit import rate_limit_middleware
from sonae.config import Settings


def create_app(*, pool: asyncpg.Pool, settings: Settings) -> web.Application:
    """Build the API application over an open connection pool."""
    # problems, compression and metrics in one pass (api/edge.py), outermost
    middlewares = [edge_middleware]
    if settings["api.cors_origins"]:
        middlewares.append(cors_middleware(settings["api.cors_origins"]))
    if settings["api.rate_limit_per_minute"] > 0:
        middlewares.append(rate_limit_middleware(per_minute=settings["api.rate_limit_per_minute"],
                                                 trust_forwarded_for=settings["api.trust_forwarded_for"]))
    from api.auth import account_of_request
    from api.authorization import authorization_middleware, operation_key
    from api.validation import COMPILED, validation_middleware

    middlewares.append(authorization_middleware(account_of_request))
    # after the login check (no body is read for a caller that may not call the operation)
    middlewares.append(validation_middleware(operation_key))
    app = web.Application(middlewares=middlewares, client_max_size=1 << 20)
    # Vary: the request headers each answer was chosen by (api/vary.py), on every form of it, 304s included;
    # then the security headers on every answer, streams included, a handler's own kept (api/edge.py): one receiver
    app.on_response_prepare.append(answer_on_prepare)
    if settings["api.cors_origins"]:
        # CORS headers on every answer of an allowed origin, problems and streams included (api/cors.py)
        app.on_response_prepare.append(cors_on_prepare(settings["api.cors_origins"]))
    app[POOL] = pool
    app[SETTINGS] = settings
    app[COMPILED] = {}
    # per-process memory the handlers fill (an app's state cannot be added once it runs)
    app[evacuation_cache] = collections.OrderedDict()
    app[alerts_cache] = AnswerCache()
    app[simulations.MANAGER] = {}
    app[accounts.LOGIN_LIMITS] = accounts.LoginLimits()
    app.router.add_routes(ops.routes)
    app.router.add_routes(stations.routes)
    app.router.add_routes(accounts.routes)
    app.router.add_routes(staff.routes)
    app.router.add_routes(simulations.routes)
    app.router.add_routes(openapi.routes)
    app.router.add_routes(level.routes)
    boundaries.setup(app)  # municipal boundaries (issue #14): point → municipality, attribution
    app.on_cleanup.append(simulations.stop_simulations)
    # -- alerting (issue #4): public alert endpoints, SSE, and the per-process alert event hub --
    from api import alerts, events

    app.router.add_routes(alerts.routes)
    app[alerts.SSE_OPEN] = collections.Counter()
    app.on_startup.append(events.start_alert_hub)
    # on shutdown, before aiohttp waits for handlers: ends open SSE streams at once
    app.on_shutdown.append(events.stop_alert_hub)
    # -- end alerting --
    # -- evac: residents' routes and shelters; the per-process engine (evac/service.py) --
    from api import evacuation

    app.router.add_routes(evacuation.routes)
    evacuation.setup(app)
    app.on_startup.append(events.start_hazard_forwarder)
    app.on_cleanup.insert(0, events.stop_hazard_forwarder)
    # -- end evac --
    # -- jma (issue #19): official information in force, and the feed reader of this process --
    from api import official

    app.router.add_routes(official.routes)
    official.setup(app)
    app.on_startup.append(events.start_official_forwarder)
    app.on_shutdown.append(events.stop_official_forwarder)
    # -- end jma --
    # -- pages (issue #8): the resident page (/), the staff console (/staff) and their static files --
    from api import web as pages

    app.router.add_routes(pages.routes)
    # -- end pages --
    # -- notify (issue #10): Web Push subscriptions, webhooks, the on-call roster --
    from api import notifications as notify_http

    notify_http.setup(app)
    # -- end notify --
    # -- ngsi (issue #22): the read-only NGSI-LD view under /ngsi-ld/v1/ --
    from api import ngsi_ld

    app.router.add_routes(ngsi_ld.routes)
    # -- end ngsi --
    return app
