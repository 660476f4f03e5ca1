"""Per-client rate limiting for the public endpoints: a token bucket per client address.

The client address is the TCP peer, or the first X-Forwarded-For hop when ``api.trust_forwarded_for``
is on (only behind Sonae's own reverse proxy), taken as the client it stands for: an IPv6 address's /64
(:func:`sonae.ratelimit.client_network`), for every per-client bound alike. Addresses are kept in memory only, for at most a few
minutes, and never logged. Operations endpoints are not limited; Server-Sent Events are not limited
per request but per open stream (``api.alerts.SSE_PER_CLIENT``).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from api.problems import problem_response
from sonae.ratelimit import TokenBuckets, address_network, client_network

#: not counted against a client's requests a minute: probes, the event stream (one long request), and the pages
#: and their files (kept in memory, answered from there, 304 when unchanged): behind one busy address (a
#: shelter's Wi-Fi, a carrier's NAT) the resident page must still load, and then waits out its own answers'
#: Retry-After (found: ``/`` and ``/static/*`` were counted, so the page itself failed to load there)
EXEMPT_PREFIXES = ("/healthz", "/readyz", "/metrics", "/api/v1/events", "/static/")
EXEMPT_PATHS = frozenset({"/", "/staff"})


def client_address(request: web.Request, *, trust_forwarded_for: bool) -> str:
    """The client of ``request`` as every per-client bound counts it (the rate limit, logins per address, event
    streams, cold route fields, push subscriptions): the TCP peer, or with ``trust_forwarded_for`` the first
    X-Forwarded-For hop, an IPv6 address as its /64 (:func:`sonae.ratelimit.client_network`: one household
    or phone has a whole /64, found: a script taking a new address of its /64 for each request was never
    rate limited). Never logged.

    X-Forwarded-For given several times is one comma list, the headers in the order they came (RFC 9110
    §5.3); its first hop is its first non-empty element, and a header of empty elements only (``""``,
    ``" , ,"``) is as if there were none: the peer counts (found: ``X-Forwarded-For: , 1.2.3.4`` made every
    such client the one client ``""``, and only the first of several headers was read). The proxies of
    deploy/ replace the header with the peer they see, so a client cannot choose its bucket there. A first hop
    that holds no IP address (``unknown``, garbage) counts as the peer, the proxy that sent it (found: each new
    garbage text, ``unknown1``, ``unknown2``…, was a client of its own with a full budget)."""
    if trust_forwarded_for:
        hops = (hop for header in request.headers.getall("X-Forwarded-For", ()) for hop in header.split(","))
        first = next((hop for hop in hops if hop.strip()), None)
        network = None if first is None else address_network(first)
        if network is not None:
            return network
    return client_network(request.remote or "unknown")


class ValidTokens:
    """Which bearer tokens are valid, remembered for ``ttl`` seconds so that a logged-in client over its
    limit costs one database lookup a half-minute, not one a request. Lookups of unknown tokens are
    themselves limited per client (``lookups_per_minute``): garbage tokens cannot buy anything."""

    def __init__(self, *, ttl: float = 30.0, lookups_per_minute: int = 30, max_tokens: int = 10_000) -> None:
        self.ttl = ttl
        self.max_tokens = max_tokens
        self._valid: OrderedDict[bytes, float] = OrderedDict()
        self._lookups = TokenBuckets(per_minute=lookups_per_minute, burst=lookups_per_minute)

    async def valid(self, request: web.Request, token: str, client: str) -> bool:
        import hashlib

        from api.auth import account_for_token
        from api.context import POOL

        digest = hashlib.sha256(token.encode()).digest()
        now = time.monotonic()
        until = self._valid.get(digest)
        if until is not None and until > now:
            return True
        if self._lookups.take(client) > 0:
            return False
        async with request.app[POOL].acquire() as conn:
            ok = await account_for_token(conn, token) is not None
        if ok:
            self._valid[digest] = now + self.ttl
            self._valid.move_to_end(digest)
            while len(self._valid) > self.max_tokens:
                self._valid.popitem(last=False)
        return ok


def rate_limit_middleware(*, per_minute: int, trust_forwarded_for: bool) -> Any:
    """Every client gets ``per_minute`` requests; beyond that only requests with a *valid* bearer token
    pass (staff consoles behind a busy address). Any other ``Authorization`` header counts like none."""
    from api.auth import bearer_token

    buckets = TokenBuckets(per_minute=per_minute)
    tokens = ValidTokens()

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        path = request.path
        if path in EXEMPT_PATHS or path.startswith(EXEMPT_PREFIXES):
            return await handler(request)
        client = client_address(request, trust_forwarded_for=trust_forwarded_for)
        wait = buckets.take(client)
        if wait > 0:
            token = bearer_token(request)
            if token is None or len(token) > 200 or not await tokens.valid(request, token, client):
                return problem_response(429, "Too Many Requests", "slow down and retry after the given time",
                                        headers={"Retry-After": str(max(1, round(wait)))})
        return await handler(request)

    return middleware

