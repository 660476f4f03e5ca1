"""Every per-client bound of the API takes an IPv6 client as its /64 (``sonae.ratelimit.client_network``), as the
cold-field budget and the push subscriptions' client key do: one household or phone has a whole /64, so a script
taking a new address for every request escaped the public rate limit (and the login limit per address, the SSE
streams per client) that counted each address of it as a client of its own."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from api.ratelimit import client_address, rate_limit_middleware


def test_client_address_is_an_ipv6_address_s_64() -> None:
    def at(remote: str | None, forwarded: str | None = None, *, trust: bool = False) -> str:
        headers = {"X-Forwarded-For": forwarded} if forwarded else {}
        request = make_mocked_request("GET", "/", headers=headers)
        request = request.clone(remote=remote)
        return client_address(request, trust_forwarded_for=trust)

    assert at("2001:db8:1:2::7") == at("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert at("2001:db8:1:3::7") != at("2001:db8:1:2::7")
    assert at("127.0.0.1", "2001:db8:9:9::1, 10.0.0.1", trust=True) == "2001:db8:9:9::/64"
    assert at("::ffff:192.0.2.5") == "192.0.2.5"
    assert at("192.0.2.5") == "192.0.2.5"


async def test_the_public_rate_limit_counts_an_ipv6_64_as_one_client() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[rate_limit_middleware(per_minute=60, trust_forwarded_for=True)])
    app.router.add_get("/api/v1/municipalities", ok)
    async with TestClient(TestServer(app)) as client:
        codes = [(await client.get("/api/v1/municipalities",
                                   headers={"X-Forwarded-For": f"2001:db8:1:2::{i:x}"})).status for i in range(1, 31)]
        # the burst (10) and no more: a new address of the same /64 is the same client
        assert codes.count(429) >= 15, codes
        other = await client.get("/api/v1/municipalities", headers={"X-Forwarded-For": "2001:db8:1:3::1"})
        assert other.status == 200
