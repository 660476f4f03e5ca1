"""One loopback rule for push endpoints (``notify.endpoints.is_loopback_host``), at subscription and at delivery.

Found: the subscription API checked ``http://`` hosts inline (``host == "localhost" or
ip_address(host).is_loopback``) while the delivery worker used ``notify.endpoints``: with
``notify.push_allow_http`` on, ``http://[::ffff:127.0.0.1]:…/`` (IPv4-mapped loopback, which Python 3.11's
``is_loopback`` calls False and ``address_refusal`` unwraps) and ``http://localhost.:…/`` were refused by the API
(400) while the worker would send to them. And the VAPID ``aud`` of an IPv6 endpoint lacked its brackets.
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notify.endpoints import address_refusal, is_loopback_host
from notify.webpush import origin_of
from notify.worker import DeliveryWorker
from sonae.config import Settings, load_settings
from tests.notify.support import PushService
from tests.notify.test_notify import KORIYAMA, _seed, change, running, settled, subscribe

#: public literals named in push_hosts (accepted over https without any lookup), and one public literal not named
LISTED_V4, LISTED_V6, UNLISTED_V4 = "93.184.216.34", "2606:4700::1111", "8.8.4.4"
_counter = itertools.count()


@pytest.fixture
def nsettings(database_url: str) -> Settings:
    """The notify tests' settings (http:// to loopback on), with two public literals as push hosts and no
    per-client bound (every example subscribes from 127.0.0.1)."""
    return load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_NOTIFY_PUSH_ALLOW_HTTP": "true",
                                  "SONAE_API_RATE_LIMIT_PER_MINUTE": "0", "SONAE_LOG_FORMAT": "text",
                                  "SONAE_NOTIFY_PUSH_HOSTS": f"{LISTED_V4},{LISTED_V6}",
                                  "SONAE_NOTIFY_PUSH_SUBSCRIPTIONS_PER_CLIENT": "0"})


def _cased(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda ups: "".join(c.upper() if u else c for c, u in zip(text, ups, strict=True)))


_V4 = st.one_of(st.ip_addresses(network="127.0.0.0/8"), st.ip_addresses(network="10.0.0.0/8"),
                st.ip_addresses(network="169.254.0.0/16"),
                st.sampled_from([ipaddress.IPv4Address(a) for a in ("0.0.0.0", LISTED_V4, UNLISTED_V4)]))


@st.composite
def hosts(draw: st.DrawFn) -> str:
    """A URL's host as residents' browsers (or an attacker) might write one: IPv4, IPv4-mapped IPv6 (dotted or
    hex), IPv6 (loopback, link-local, unspecified, public), loopback names in any case with or without the root's
    trailing dot, names that merely contain "localhost"."""
    kind = draw(st.sampled_from(["v4", "mapped", "mapped-hex", "v6", "name"]))
    if kind == "v4":
        return str(draw(_V4))
    if kind in ("mapped", "mapped-hex"):
        v4 = draw(_V4)
        high, low = divmod(int(v4), 1 << 16)
        text = f"::ffff:{v4}" if kind == "mapped" else f"::ffff:{high:x}:{low:x}"
        return f"[{draw(_cased(text))}]"
    if kind == "v6":
        return f"[{draw(st.sampled_from(['::1', '0:0:0:0:0:0:0:1', 'fe80::1', '::', LISTED_V6, '::127.0.0.1']))}]"
    name = draw(st.sampled_from(["localhost", "localhost.localdomain", "push.localhost", "localhost.example",
                                 "notlocalhost", "push.invalid"]))
    return draw(_cased(name)) + draw(st.sampled_from(["", "."]))


@settings(max_examples=150, deadline=None)
@given(st.ip_addresses())
def test_an_address_is_loopback_exactly_when_address_refusal_calls_it_so(ip: Any) -> None:
    """The rule's IP half is address_refusal's (an IPv4-mapped address judged as the IPv4 address it carries)."""
    loopback = address_refusal(ip) == "a loopback address"
    assert is_loopback_host(str(ip)) is loopback and is_loopback_host(f"[{ip}]") is loopback
    if isinstance(ip, ipaddress.IPv4Address):
        assert is_loopback_host(f"::ffff:{ip}") is loopback and is_loopback_host(f"[::FFFF:{ip}]") is loopback


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scheme=st.sampled_from(["http", "https"]), host=hosts(), port=st.integers(1, 65535))
@example(scheme="http", host="[::ffff:127.0.0.1]", port=8080)
@example(scheme="http", host="[::ffff:7f00:1]", port=8080)
@example(scheme="http", host="localhost.", port=8080)
@example(scheme="http", host="LOCALHOST", port=8080)
@example(scheme="http", host="push.localhost", port=8080)
@example(scheme="http", host="[::1]", port=8080)
@example(scheme="http", host="[::ffff:10.0.0.1]", port=8080)
@example(scheme="https", host=LISTED_V4, port=443)
@example(scheme="http", host=LISTED_V4, port=80)
async def test_the_subscription_api_accepts_exactly_the_endpoints_the_worker_sends_to(
        pool: asyncpg.Pool, client: TestClient, push: PushService, nsettings: Settings,
        scheme: str, host: str, port: int) -> None:
    """With notify.push_allow_http on: POST /api/v1/push/subscriptions stores an endpoint (201) exactly when the
    delivery worker (made from the same settings) would send to it; otherwise a 400/422 saying why."""
    if await pool.fetchval("SELECT count(*) FROM municipalities WHERE code = $1", KORIYAMA) == 0:
        await _seed(pool)
    endpoint = f"{scheme}://{host}:{port}/push/x{next(_counter)}"
    body = {"subscription": {**push.browser().subscription(), "endpoint": endpoint},
            "areas": [{"municipality_code": KORIYAMA}], "lang": "ja-JP"}
    r = await client.post("/api/v1/push/subscriptions", json=body)
    answer = await r.json()
    refusal = DeliveryWorker.from_settings(nsettings, pool).endpoint_refusal(endpoint)
    assert (r.status == 201) is (refusal is None), (endpoint, r.status, answer, refusal)
    if r.status != 201:
        assert r.status in (400, 422) and "subscription.endpoint" in answer["detail"], (endpoint, answer)


class MappedPushService(PushService):
    """The push service stand-in, its browsers' endpoints at the IPv4-mapped loopback ``[::ffff:127.0.0.1]``
    (it listens on 127.0.0.1; an IPv6 socket reaches it there)."""

    @property
    def origin(self) -> str:
        return f"http://[::ffff:127.0.0.1]:{self.server.port}"


async def test_a_push_endpoint_at_ipv4_mapped_loopback_is_subscribed_and_delivered(
        pool: asyncpg.Pool, client: TestClient) -> None:
    """The API took it only after the fix (400 before); the worker sends to it with a VAPID aud that is the
    endpoint's origin, brackets and all (the stand-in checks the aud against its own origin)."""
    assert origin_of("http://[::ffff:127.0.0.1]:8080/push/x") == "http://[::ffff:127.0.0.1]:8080"
    service = MappedPushService()
    await service.start()
    try:
        await _seed(pool)
        browser = service.browser()
        assert browser.endpoint.startswith("http://[::ffff:127.0.0.1]:")
        await subscribe(client, browser, [{"municipality_code": KORIYAMA}], "ja-JP")
        async with running(pool):
            c = await change(pool, "akutsu", None, 3)
            rows = await settled(pool, c.event_id, expect=1)
        assert [r["state"] for r in rows] == ["sent"], rows
        assert len(browser.received) == 1 and browser.received[0]["level"] == 3
        assert not service.errors, service.errors
    finally:
        await service.close()
