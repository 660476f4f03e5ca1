"""Every per-client bound of the API takes an IPv6 client as its /64 (``sonae.ratelimit.client_network``), as the
cold-field budget and the push subscriptions' client key do: one household or phone has a whole /64, so a script
taking a new address for every request escaped the public rate limit (and the login limit per address, the SSE
streams per client) that counted each address of it as a client of its own.

X-Forwarded-For (with ``api.trust_forwarded_for``, behind Sonae's own proxy) is read as RFC 9110 reads a list
header: several headers are one comma list in order, the client is its first non-empty element, written with a
port or in brackets or not, and a header of empty elements only is as if it were absent (the peer counts)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request
from multidict import CIMultiDict

from api.app import create_app
from api.ratelimit import client_address, rate_limit_middleware
from sonae.config import load_settings
from tests.api_support import start_client


def _at(remote: str | None, *forwarded: str, trust: bool = False) -> str:
    """The client of a made-up request from ``remote`` with one X-Forwarded-For header per ``forwarded``."""
    headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded)
    request = make_mocked_request("GET", "/", headers=headers).clone(remote=remote)
    return client_address(request, trust_forwarded_for=trust)


def test_client_address_is_an_ipv6_address_s_64() -> None:
    assert _at("2001:db8:1:2::7") == _at("2001:db8:1:2:ffff::1") == "2001:db8:1:2::/64"
    assert _at("2001:db8:1:3::7") != _at("2001:db8:1:2::7")
    assert _at("127.0.0.1", "2001:db8:9:9::1, 10.0.0.1", trust=True) == "2001:db8:9:9::/64"
    assert _at("::ffff:192.0.2.5") == "192.0.2.5"
    assert _at("192.0.2.5") == "192.0.2.5"


def test_the_first_non_empty_forwarded_hop_is_the_client() -> None:
    """Found: ``X-Forwarded-For: , 1.2.3.4`` made the client ``""`` (every such request one bucket)."""
    assert _at("127.0.0.1", ", 1.2.3.4", trust=True) == "1.2.3.4"
    assert _at("127.0.0.1", " ,\t, [2001:db8:5:6::1]:443 , 10.0.0.1", trust=True) == "2001:db8:5:6::/64"
    assert _at("127.0.0.1", "192.0.2.7:5123", trust=True) == "192.0.2.7"


def test_several_forwarded_headers_are_one_list_in_order() -> None:
    """Found: only the first of several X-Forwarded-For headers was read, so an empty first header hid the rest."""
    assert _at("127.0.0.1", "", "1.2.3.4", trust=True) == "1.2.3.4"
    assert _at("127.0.0.1", " , ", "2001:db8:7:7::1, 1.2.3.4", "5.6.7.8", trust=True) == "2001:db8:7:7::/64"
    assert _at("127.0.0.1", "1.2.3.4", "5.6.7.8", trust=True) == "1.2.3.4"


def test_an_all_empty_forwarded_header_counts_as_absent() -> None:
    for empty in ("", " ", ",", " , ,", "\t,"):
        assert _at("192.0.2.9", empty, trust=True) == "192.0.2.9", repr(empty)
        assert _at("192.0.2.9", empty, empty, trust=True) == "192.0.2.9", repr(empty)
    assert _at("2001:db8:3:3::9", " , ,", trust=True) == "2001:db8:3:3::/64"


def test_a_first_hop_without_an_address_counts_as_the_peer_and_odd_spellings_as_the_address() -> None:
    """Found (a tester, trust on): ``unknown1``, ``unknown2``… each got a full budget of its own, and
    ``6.6.6.6:`` (an empty port) or ``"1.1.1.1"`` (quoted) a budget apart from ``6.6.6.6`` and ``1.1.1.1``."""
    for garbage in ("unknown", "unknown1", "unknown2", "1.2.3.4.5", "é", "[::1]:99999", "x" * 500, "_hidden"):
        assert _at("192.0.2.9", garbage, trust=True) == "192.0.2.9", garbage
        assert _at("192.0.2.9", f"{garbage}, 1.2.3.4", trust=True) == "192.0.2.9", garbage  # the first hop counts
    assert _at("192.0.2.9", "6.6.6.6:", trust=True) == "6.6.6.6"
    assert _at("192.0.2.9", '"1.1.1.1"', trust=True) == "1.1.1.1"
    assert _at("192.0.2.9", "[2001:db8::1]:", trust=True) == "2001:db8::/64"
    assert _at("192.0.2.9", '"[2001:db8::1]:443"', trust=True) == "2001:db8::/64"


def test_without_trust_the_forwarded_header_is_never_read() -> None:
    assert _at("192.0.2.9", "1.2.3.4", trust=False) == "192.0.2.9"
    assert _at("192.0.2.9", ", 1.2.3.4", "5.6.7.8", trust=False) == "192.0.2.9"


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


async def test_the_app_counts_a_64_written_in_any_form_as_one_client(
        pool: asyncpg.Pool, database_url: str, mqtt_url: str, mqtt_protocol: str, topic_prefix: str,
        tmp_path: Path) -> None:
    """The whole API as deployed behind its proxy (``api.trust_forwarded_for``, 60 a minute: a burst of 10): two
    clients of one /64, one written ``[v6]:port`` with a new port each time, the other ``[v6]`` or after an empty
    element, share one bucket; a client of another /64, and one whose header is empty (the peer), do not."""
    settings = load_settings(environ={
        "SONAE_DATABASE_URL": database_url, "SONAE_MQTT_URL": mqtt_url, "SONAE_MQTT_PROTOCOL": mqtt_protocol,
        "SONAE_MQTT_TOPIC_PREFIX": topic_prefix, "SONAE_STATE_DIR": str(tmp_path / "state"),
        "SONAE_LOG_FORMAT": "text", "SONAE_API_RATE_LIMIT_PER_MINUTE": "60", "SONAE_API_TRUST_FORWARDED_FOR": "true"})
    client = await start_client(create_app(pool=pool, settings=settings))
    try:
        async def status(*forwarded: str) -> int:
            headers = CIMultiDict(("X-Forwarded-For", value) for value in forwarded)
            async with client.get("/api/v1/municipalities", headers=headers) as r:
                return r.status

        codes = []
        for i in range(1, 16):
            codes.append(await status(f"[2001:db8:a:b::{i:x}]:{40000 + i}"))  # client one, a new port each time
            codes.append(await status(f"[2001:db8:a:b:ffff::{i:x}]" if i % 2 else f", 2001:db8:a:b:eeee::{i:x}"))
        # the burst (10), then refusals (a token comes back a second, so a slow machine may see one or two more)
        assert codes[:10] == [200] * 10 and codes.count(429) >= 15, codes
        assert await status("[2001:db8:a:c::1]:443") == 200  # another /64
        assert await status(" , ,", "") == 200  # no address given: the peer (127.0.0.1), a client of its own
        assert await status("127.0.0.1:5000") == 200  # the peer's own bucket, written with a port
    finally:
        await client.close()
