"""Where a webhook may point (found: an admin's ``POST /api/v1/webhooks {"url": "http://127.0.0.1:9/x"}``
answered 201, so did 169.254.169.254, the cloud metadata address, 0.0.0.0 and multicast, and the worker
POSTed alert payloads there).

The rule is :mod:`notify.endpoints`' (the push machinery, with ``allow_private``): public and private
(10/8, 172.16/12, 192.168/16, fc00::/7) addresses pass; loopback (unless ``notify.webhook_allow_loopback``),
link-local, unspecified, multicast, reserved and broadcast addresses are refused, in every spelling the
worker's HTTP client would connect to (IPv4-mapped IPv6, ``2130706433``, ``127.1``, ``0x7f.1``), at
registration (422: the URL is well-formed, as for a push endpoint) and again at delivery through the worker's resolver.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.abc import AbstractResolver
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.app import create_app
from notify import store
from notify.endpoints import EndpointError, address_refusal, check_webhook_url, webhook_refusal
from sonae.config import Settings, load_settings
from tests.api_support import start_client
from tests.notify.support import WebhookReceiver
from tests.notify.test_notify import _seed, change, running, settled, staff_token

_counter = itertools.count()

#: a refused network per address kind, and the phrase the 422 names it by
REFUSED = {
    "a loopback address": ("127.0.0.0/8", "::1/128"),
    "a link-local address": ("169.254.0.0/16", "fe80::/10"),
    "the unspecified address": ("0.0.0.0/32", "::/128"),
    "a multicast address": ("224.0.0.0/4", "ff00::/8"),
    "a reserved address": ("240.0.0.0/4",),
}
PRIVATE = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")


@pytest.fixture
def strict(database_url: str) -> Settings:
    """The default webhook rule (notify.webhook_allow_loopback off)."""
    return load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_API_RATE_LIMIT_PER_MINUTE": "0",
                                  "SONAE_LOG_FORMAT": "text"})


@pytest.fixture
async def strict_client(pool: asyncpg.Pool, strict: Settings) -> AsyncIterator[TestClient]:
    c = await start_client(create_app(pool=pool, settings=strict))
    try:
        yield c
    finally:
        await c.close()


def _ipv4_spellings(ip: ipaddress.IPv4Address) -> st.SearchStrategy[str]:
    """What the C library (and so aiohttp, which takes an all-digit host for an address) reads as ``ip``:
    dotted, one decimal number, the short forms a.b.c and a.b (the last part fills the rest), hex and octal."""
    n, (a, b, c, d) = int(ip), ip.packed
    return st.sampled_from([str(ip), str(n), f"{a}.{b}.{(c << 8) | d}", f"{a}.{(b << 16) | (c << 8) | d}",
                            f"0x{n:x}", f"{a:#o}.{b}.{c}.{d}".replace("0o", "0")])


@st.composite
def refused_hosts(draw: st.DrawFn) -> tuple[str, str]:
    """(a URL host the rule refuses, its kind's phrase) for IPv4 hosts (any spelling, as the API's schema
    allows hosts of A-Z a-z 0-9 . -)."""
    kind = draw(st.sampled_from(sorted(REFUSED)))
    v4 = [n for n in REFUSED[kind] if ":" not in n]
    ip = draw(st.ip_addresses(network=draw(st.sampled_from(v4))))
    return draw(_ipv4_spellings(ip)), kind


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=refused_hosts(), scheme=st.sampled_from(["http", "https"]), port=st.integers(1, 65535))
@example(case=("127.0.0.1", "a loopback address"), scheme="http", port=9)
@example(case=("2130706433", "a loopback address"), scheme="http", port=80)
@example(case=("127.1", "a loopback address"), scheme="http", port=80)
@example(case=("0x7f.1", "a loopback address"), scheme="http", port=80)
@example(case=("169.254.169.254", "a link-local address"), scheme="http", port=80)
@example(case=("0", "the unspecified address"), scheme="http", port=80)
@example(case=("255.255.255.255", "a reserved address"), scheme="http", port=80)
@example(case=("localhost", "a loopback name"), scheme="http", port=80)
async def test_registration_refuses_an_address_the_worker_must_not_reach(
        pool: asyncpg.Pool, strict_client: TestClient, case: tuple[str, str], scheme: str, port: int) -> None:
    host, kind = case
    if await pool.fetchval("SELECT count(*) FROM municipalities") == 0:
        await _seed(pool)
    admin = await staff_token(pool, f"admin{next(_counter)}", "admin", None)
    url = f"{scheme}://{host}:{port}/x"
    r = await strict_client.post("/api/v1/webhooks", json={"url": url}, headers=admin)
    answer = await r.json()
    assert r.status == 422, (url, r.status, answer)
    assert answer["field"] == "url" and kind in answer["detail"] and "private network" in answer["detail"], (url, answer["detail"][:60])
    assert await pool.fetchval("SELECT count(*) FROM webhooks") == 0


@settings(max_examples=150, deadline=None)
@given(kind=st.sampled_from(sorted(REFUSED)), data=st.data(), mapped=st.booleans())
def test_the_domain_rule_refuses_every_kind_in_ipv6_and_ipv4_mapped_forms(kind: str, data: Any, mapped: bool) -> None:
    """``sonae webhooks add`` and stored rows meet the rule in notify.store/notify.endpoints, IPv6 too (the API's
    schema already refuses brackets): an IPv4-mapped address (dotted or hex) is judged as the IPv4 it carries."""
    net = data.draw(st.sampled_from(REFUSED[kind]))
    ip = data.draw(st.ip_addresses(network=net))
    if isinstance(ip, ipaddress.IPv4Address) and mapped:
        high, low = divmod(int(ip), 1 << 16)
        host = data.draw(st.sampled_from([f"[::ffff:{ip}]", f"[::FFFF:{high:x}:{low:x}]"]))
    else:
        host = f"[{ip}]" if ip.version == 6 else str(ip)
    url = f"http://{host}:8080/x"
    assert webhook_refusal(url) == kind, url
    if isinstance(ip, ipaddress.IPv4Address):  # a trailing dot, and the C library's spellings
        for spelled in (f"{ip}.", str(int(ip)), f"0x{int(ip):x}"):
            assert webhook_refusal(f"http://{spelled}:8080/x") == kind, spelled
    with pytest.raises(store.WebhookError, match=kind):
        store.check_webhook(url=url)
    if kind != "a loopback address":  # the development switch opens loopback only
        assert webhook_refusal(url, allow_loopback=True) == kind
    else:
        assert webhook_refusal(url, allow_loopback=True) is None


@settings(max_examples=100, deadline=None)
@given(net=st.sampled_from(PRIVATE + ("93.184.216.0/24", "2606:4700::/32")), data=st.data())
def test_private_and_public_addresses_pass_for_webhooks_and_private_stays_refused_for_push(net: str, data: Any) -> None:
    ip = data.draw(st.ip_addresses(network=net))
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    assert webhook_refusal(f"https://{host}/hook") is None
    store.check_webhook(url=f"http://{host}:8080/hook")
    if net in PRIVATE:
        assert address_refusal(ip) is not None  # Web Push stays public-only


async def test_private_addresses_are_registered(pool: asyncpg.Pool, strict_client: TestClient) -> None:
    await _seed(pool)
    admin = await staff_token(pool, "admin1", "admin", None)
    for url in ("http://10.1.2.3:8080/alerts", "https://172.16.0.9/hook", "http://192.168.10.20/x",
                "https://93.184.216.34/hook"):
        r = await strict_client.post("/api/v1/webhooks", json={"url": url}, headers=admin)
        assert r.status == 201, (url, await r.text())


async def test_a_loopback_name_or_a_name_resolving_to_a_refused_address_is_refused_at_registration() -> None:
    """``localhost.`` is refused by name; a name only /etc/hosts knows (this machine's own name, often
    127.0.0.1 or 127.0.1.1; ``ip6-localhost``) by its address."""
    with pytest.raises(EndpointError, match="a loopback name"):
        await check_webhook_url("http://LocalHost.:8080/x")
    for name in (socket.gethostname(), "ip6-localhost", "ip6-loopback"):
        try:
            infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
        except OSError:
            continue
        if not all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos):
            continue
        with pytest.raises(EndpointError, match=f"{name} resolves to a loopback address"):
            await check_webhook_url(f"http://{name}:8080/x")
        await check_webhook_url(f"http://{name}:8080/x", allow_loopback=True)
        return
    pytest.skip("no loopback alias in /etc/hosts here")


class FixedResolver(AbstractResolver):
    """A name service that answers every name with one address (a rebinding attacker's DNS)."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: Any = socket.AF_INET) -> list[dict[str, Any]]:
        self.asked.append(host)
        ip = ipaddress.ip_address(self.address)
        return [{"hostname": host, "host": self.address, "port": port,
                 "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(("address", "kind"), [("127.0.0.1", "a loopback address"),
                                               ("169.254.169.254", "a link-local address"),
                                               ("::ffff:127.0.0.1", "a loopback address")])
async def test_a_name_that_later_resolves_to_a_refused_address_is_not_sent_to(
        pool: asyncpg.Pool, hooks: WebhookReceiver, address: str, kind: str) -> None:
    """Registered while it did not resolve (accepted: the worker checks), it answers a refused address at
    delivery: the real worker records the delivery dead with the reason, sends nothing, and goes on (the
    receiver on 127.0.0.1 serves as the local service that must not be reached)."""
    await _seed(pool)
    url = hooks.url("rebound").replace("127.0.0.1", "partner.invalid")
    await check_webhook_url(url)  # .invalid does not resolve: accepted, the worker checks again
    async with pool.acquire() as conn:
        hook = await store.add_webhook(conn, url=url, created_by="admin")
    names = FixedResolver(address)
    async with running(pool, webhook_allow_loopback=False, name_resolver=names, max_attempts=4):
        c = await change(pool, "akutsu", None, 3)
        rows = await settled(pool, c.event_id, expect=1)
    assert [(r["target_id"], r["state"], r["attempts"]) for r in rows] == [(hook["id"], "dead", 1)], rows
    assert names.asked == ["partner.invalid"]
    assert hooks.seen.get("rebound", 0) == 0 and not hooks.of("rebound")
    error = await pool.fetchval("SELECT last_error FROM notify_queue WHERE alert_event_id = $1", c.event_id)
    assert error.startswith("address refused:") and f"partner.invalid resolves to {kind}" in error, error


async def test_a_private_answer_is_delivered_and_a_stored_literal_is_refused_at_delivery(
        pool: asyncpg.Pool, hooks: WebhookReceiver) -> None:
    """The worker's resolver lets a private address through (a partner on the municipality's network: here
    the answer is the receiver's loopback with the development switch on, and 10.x is judged by the same
    rule), and a webhook stored before the rule, at 169.254.169.254, is dead without a connection."""
    await _seed(pool)
    async with pool.acquire() as conn:
        ok = await store.add_webhook(conn, url=hooks.url("partner").replace("127.0.0.1", "partner.invalid"),
                                     created_by="admin")
        old = await conn.fetchval(
            "INSERT INTO webhooks (url, secret, format, created_by) VALUES ($1, 's', 'json', 'old') RETURNING id",
            "http://169.254.169.254/latest/meta-data/")
    hooks.secrets["partner"] = ok["secret"]
    async with running(pool, webhook_allow_loopback=True, name_resolver=FixedResolver("127.0.0.1")):
        c = await change(pool, "akutsu", None, 3)
        rows = await settled(pool, c.event_id, expect=2)
    states = {r["target_id"]: (r["state"], r["attempts"]) for r in rows}
    assert states == {ok["id"]: ("sent", 1), old: ("dead", 1)}, rows
    error = await pool.fetchval("SELECT last_error FROM notify_queue WHERE target_id = $1 AND kind = 'webhook'", old)
    assert error == "address refused: the url's host is a link-local address", error
    assert len(hooks.of("partner")) == 1 and hooks.of("partner")[0].signature_ok
    assert address_refusal(ipaddress.ip_address("10.20.30.40"), allow_private=True) is None
