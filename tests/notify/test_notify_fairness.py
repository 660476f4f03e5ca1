"""breakit6 (repro/push_flood.py): anonymous push subscriptions to endpoints that never answer stalled every
later resident's alert (one FIFO queue), and endpoints on 127.0.0.1 / 169.254.169.254 were accepted and
connected to (SSRF). Real PostgreSQL, real local servers: a tarpit that accepts and never answers, the
RFC 8030 push service stand-in and the webhook receiver of :mod:`tests.notify.support`."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.notifications import PUSH_CLIENT_FULL_RETRY_AFTER_S
from notify.endpoints import PublicResolver, address_refusal, host_allowed, parse_hosts
from sonae.config import Settings, load_settings
from tests.api_support import start_client
from tests.notify.support import PushService, WebhookReceiver, unb64u
from tests.notify.test_notify import KORIYAMA, _seed, change, running, staff_token, subscribe


class Tarpit:
    """A server that accepts every connection and never answers (the attacker's push endpoint)."""

    def __init__(self) -> None:
        self.accepted = 0
        self._held: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        async def hold(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            self._held.append(w)

        self.server = await asyncio.start_server(hold, "127.0.0.1", 0, backlog=1024)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for w in self._held:
            w.close()
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def tarpit() -> AsyncIterator[Tarpit]:
    t = Tarpit()
    await t.start()
    yield t
    await t.close()


def _settings(database_url: str, **env: str) -> Settings:
    return load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_API_RATE_LIMIT_PER_MINUTE": "0",
                                  "SONAE_LOG_FORMAT": "text", **env})


async def _client(pool: asyncpg.Pool, s: Settings) -> TestClient:
    return await start_client(create_app(pool=pool, settings=s))


def _sub(endpoint: str, push: PushService) -> dict[str, object]:
    b = push.browser()
    return {"subscription": {**b.subscription(), "endpoint": endpoint}, "areas": [{"municipality_code": KORIYAMA}]}


# -- SSRF ----------------------------------------------------------------------------------------------------
#: endpoints that aim at Sonae's own network: loopback, the cloud metadata address, private, shared, link-local,
#: unique-local, multicast, reserved, unspecified, IPv4 inside IPv6
INTERNAL = ["https://127.0.0.1:8443/push/x", "https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/p",
            "https://192.168.1.1/p", "https://172.16.0.1/p", "https://100.64.0.1/p", "https://[::1]/p",
            "https://[fe80::1]/p", "https://[fd00::1]/p", "https://224.0.0.1/p", "https://240.0.0.1/p",
            "https://0.0.0.0/p", "https://[::ffff:127.0.0.1]/p", "https://[::ffff:169.254.169.254]/p",
            "https://localhost/p", "https://LocalHost/p", "https://[ff02::1]/p"]


async def test_a_push_endpoint_must_be_a_public_https_push_service(pool: asyncpg.Pool, database_url: str,
                                                                    push: PushService) -> None:
    await _seed(pool)
    # '*': any public host, so that only the address rule refuses
    client = await _client(pool, _settings(database_url, SONAE_NOTIFY_PUSH_HOSTS="*"))
    try:
        for endpoint in INTERNAL:
            r = await client.post("/api/v1/push/subscriptions", json=_sub(endpoint, push))
            if "[" in endpoint:  # an IPv6 literal host is outside the endpoint's schema pattern already: 400
                assert r.status in (400, 422), (endpoint, await r.text())
                continue
            assert r.status == 422, (endpoint, await r.text())
            assert "public address" in (await r.json())["detail"], endpoint
        # a name that resolves to a loopback or private address (this machine's own name, /etc/hosts)
        name = socket.gethostname()
        addrs = {i[4][0] for i in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)}
        if all(address_refusal(ipaddress.ip_address(a)) is None for a in addrs):
            pytest.skip(f"{name} resolves to public addresses only here")
        r = await client.post("/api/v1/push/subscriptions", json=_sub(f"https://{name}/push/x", push))
        assert r.status == 422 and "resolves to" in (await r.json())["detail"], await r.text()
    finally:
        await client.close()
    # the default push_hosts: the browsers' push services only
    client = await _client(pool, _settings(database_url))
    try:
        r = await client.post("/api/v1/push/subscriptions", json=_sub("https://attacker.example/tarpit/1", push))
        assert r.status == 422 and "not a push service" in (await r.json())["detail"], await r.text()
        for ok in ("https://fcm.googleapis.com/fcm/send/abc", "https://updates.push.services.mozilla.com/wpush/v2/x",
                   "https://web.push.apple.com/QK", "https://db5p.notify.windows.com/w/?token=x"):
            r = await client.post("/api/v1/push/subscriptions", json=_sub(ok, push))
            assert r.status == 201, (ok, await r.text())
    finally:
        await client.close()


NETS = ["127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10",
        "224.0.0.0/4", "240.0.0.0/4", "0.0.0.0/8", "::1/128", "fe80::/10", "fc00::/7", "ff00::/8"]


@settings(max_examples=300, deadline=None)
@given(net=st.sampled_from(NETS), offset=st.integers(min_value=0, max_value=2**64), mapped=st.booleans())
def test_every_address_of_an_internal_network_is_refused(net: str, offset: int, mapped: bool) -> None:
    n = ipaddress.ip_network(net)
    ip = n.network_address + offset % n.num_addresses
    if mapped and isinstance(ip, ipaddress.IPv4Address):
        ip = ipaddress.IPv6Address(f"::ffff:{ip}")
    assert address_refusal(ip) is not None, ip


def test_push_hosts_patterns() -> None:
    hosts = parse_hosts("")
    assert host_allowed("db5p.notify.windows.com", hosts) and host_allowed("FCM.googleapis.com.", hosts)
    assert not host_allowed("notify.windows.com.evil.example", hosts) and not host_allowed("evilnotify.windows.com",
                                                                                              hosts)
    assert not host_allowed("fcm.googleapis.com.evil.example", hosts)
    assert host_allowed("push.city.example", parse_hosts("push.city.example")) and host_allowed("x.y", ("*",))


async def test_the_worker_never_connects_to_an_internal_address_whatever_is_stored(
        pool: asyncpg.Pool, tarpit: Tarpit, push: PushService) -> None:
    """Rows stored before the rule, or a name that resolves to an internal address at delivery (DNS rebinding):
    the worker refuses before connecting."""
    await _seed(pool)
    name = socket.gethostname()
    if all(address_refusal(ipaddress.ip_address(i[4][0])) is None
           for i in socket.getaddrinfo(name, 443, type=socket.SOCK_STREAM)):
        pytest.skip(f"{name} resolves to public addresses only here")
    with pytest.raises(OSError, match="resolves to a loopback"):
        await PublicResolver().resolve(name, 443)
    b = push.browser()
    async with pool.acquire() as conn:
        for endpoint in (f"http://127.0.0.1:{tarpit.port}/literal", f"http://{name}:{tarpit.port}/rebound",
                         f"http://[::ffff:127.0.0.1]:{tarpit.port}/mapped"):
            await conn.execute(
                "INSERT INTO push_subscriptions (endpoint, p256dh, auth, lang, token_hash) "
                "VALUES ($1, $2, $3, 'ja-JP', '\\x00')", endpoint, unb64u(b.subscription()["keys"]["p256dh"]), b.auth)
        await conn.execute("INSERT INTO push_areas (subscription_id, municipality_code) "
                           "SELECT id, $1 FROM push_subscriptions", KORIYAMA)
    async with running(pool, allow_loopback=False, push_hosts="*", max_attempts=2, retry_base_s=0.05):
        c = await change(pool, "akutsu", None, 3)
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            async with pool.acquire() as conn:
                states = [r["state"] for r in await conn.fetch(
                    "SELECT state FROM notify_queue WHERE alert_event_id = $1", c.event_id)]
            if len(states) == 3 and "queued" not in states:
                break
            assert asyncio.get_running_loop().time() < deadline, states
            await asyncio.sleep(0.05)  # polling the database under a deadline
    assert states == ["dead"] * 3
    assert tarpit.accepted == 0  # not one connection to the internal address


# -- fairness ------------------------------------------------------------------------------------------------
async def test_many_dead_endpoints_do_not_delay_a_live_one(
        pool: asyncpg.Pool, client: TestClient, tarpit: Tarpit, push: PushService, hooks: WebhookReceiver) -> None:
    """60 subscriptions to a tarpit queued ahead of a resident's and of a partner's webhook: the resident and
    the partner are served in the first round, while the tarpit holds at most per_host_concurrency
    connections; the tarpit's host is then paused, and the next alert reaches the resident without one more
    connection to it."""
    await _seed(pool)
    for i in range(60):
        r = await client.post("/api/v1/push/subscriptions",
                              json=_sub(f"http://127.0.0.1:{tarpit.port}/attacker/{i}", push))
        assert r.status == 201, await r.text()
    resident = push.browser()
    await subscribe(client, resident, [{"municipality_code": KORIYAMA}], "ja-JP")
    admin = await staff_token(pool, "admin1", "admin", None)
    r = await client.post("/api/v1/webhooks", json={"url": hooks.url("partner")}, headers=admin)
    hooks.secrets["partner"] = (await r.json())["secret"]
    async with running(pool, concurrency=4, per_host_concurrency=2, timeout_s=2.0, connect_timeout_s=1.0,
                       breaker_failures=3, breaker_s=600, max_attempts=50) as worker:
        c = await change(pool, "akutsu", None, 3)
        await push.wait_for(lambda: len(resident.received) == 1, timeout=120)
        at_resident = tarpit.accepted
        for _ in range(1200):  # the webhook, under a deadline
            if hooks.of("partner"):
                break
            await asyncio.sleep(0.05)
        at_partner = tarpit.accepted
        assert hooks.of("partner"), "the partner's webhook was not delivered"
        # queue position: the resident's and the partner's rows went out in the first round, behind at most
        # per_host_concurrency rows of the tarpit's host (without the fix: every one of the 60, FIFO)
        assert at_resident <= 2 and at_partner <= 2, (at_resident, at_partner)
        tarpit_host = f"127.0.0.1:{tarpit.port}"
        for _ in range(1200):  # three timeouts in a row pause the host
            if worker.host_paused(tarpit_host):
                break
            await asyncio.sleep(0.05)
        assert worker.host_paused(tarpit_host)
        paused_at = tarpit.accepted
        c2 = await change(pool, "akutsu", 3, 4)
        await push.wait_for(lambda: len(resident.received) == 2, timeout=120)
        assert resident.received[1]["level"] == 4
        assert tarpit.accepted == paused_at  # a paused host gets no connection while others are served
    async with pool.acquire() as conn:
        waiting = await conn.fetchval(
            "SELECT count(*) FROM notify_queue WHERE alert_event_id = ANY($1::bigint[]) AND state = 'queued'",
            [c.event_id, c2.event_id])
    assert waiting >= 60  # the tarpit's rows wait (queued, not dead-lettered by the pause)


# -- limits --------------------------------------------------------------------------------------------------
async def test_subscriptions_are_bounded_per_client_and_per_host(pool: asyncpg.Pool, database_url: str,
                                                                 push: PushService,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    await _seed(pool)
    s = _settings(database_url, SONAE_NOTIFY_PUSH_ALLOW_HTTP="true", SONAE_API_TRUST_FORWARDED_FOR="true",
                  SONAE_NOTIFY_PUSH_SUBSCRIPTIONS_PER_CLIENT="3", SONAE_NOTIFY_PUSH_SUBSCRIPTIONS_PER_HOST="7",
                  SONAE_NOTIFY_PUSH_HOSTS="*")
    client = await _client(pool, s)
    caplog.set_level(logging.DEBUG)

    retry_after: list[str | None] = []

    async def post(endpoint: str, client_ip: str) -> tuple[int, str]:
        body = _sub(endpoint, push)
        body["areas"] = [{"lat": 37.4123, "lon": 140.3876, "radius_m": 500}]
        r = await client.post("/api/v1/push/subscriptions", json=body, headers={"X-Forwarded-For": client_ip})
        if r.status == 429:
            retry_after.append(r.headers.get("Retry-After"))
        return r.status, await r.text()

    try:
        a = f"{push.origin}/push/a"
        for i in range(3):
            assert (await post(f"{push.origin}/push/{i}", "203.0.113.5"))[0] == 201
        status, text = await post(f"{push.origin}/push/3", "203.0.113.5")
        assert status == 429 and "already has 3 subscriptions" in text, text
        assert (await post(f"{push.origin}/push/0", "203.0.113.5"))[0] == 201  # replacing one's own: not more
        # an IPv6 client is its /64
        for i in range(3):
            assert (await post(f"{push.origin}/push/v6-{i}", f"2001:db8:1:2::{i + 1}"))[0] == 201
        assert (await post(f"{push.origin}/push/v6-x", "2001:db8:1:2:ffff::9"))[0] == 429
        # per endpoint host (allowed by "*" only): 7 at most, whoever sends them (6 so far)
        assert (await post(a, "198.51.100.7"))[0] == 201
        status, text = await post(f"{push.origin}/push/b", "198.51.100.8")
        assert status == 422 and "push endpoint host already has 7" in text, text
        # each 429 says when to ask again (found: none did; every other 429 of the API does)
        assert retry_after == [str(PUSH_CLIENT_FULL_RETRY_AFTER_S)] * 2, retry_after
    finally:
        await client.close()
    async with pool.acquire() as conn:
        stored = await conn.fetch("SELECT client_key FROM push_subscriptions")
    assert all(r["client_key"] is not None and b"203.0.113" not in r["client_key"] for r in stored)
    logged = "\n".join(rec.getMessage() + str(rec.__dict__) for rec in caplog.records)
    assert "37.41" not in logged and "140.38" not in logged and "203.0.113" not in logged


async def test_a_burst_of_failures_pauses_a_host_once_for_the_first_pause(
        pool: asyncpg.Pool, client: TestClient, tarpit: Tarpit, push: PushService) -> None:
    """review7: deliveries to one host fail together (a push service's outage: every connection in flight times
    out at once). Each failure after the pause began counted a new pause, doubling it: 6 timeouts in flight with
    breaker_failures=2 gave pauses 2, 4, 8, 16, 32 s in one burst, so the host was paused 32 s at once instead of
    the first pause's breaker_s (README: "paused for this long, doubling with each pause"). A failure that ends
    while its host is paused began before the pause: it is not a new failure of the host."""
    await _seed(pool)
    for i in range(6):
        r = await client.post("/api/v1/push/subscriptions",
                              json=_sub(f"http://127.0.0.1:{tarpit.port}/outage/{i}", push))
        assert r.status == 201, await r.text()
    host = f"127.0.0.1:{tarpit.port}"
    loop = asyncio.get_running_loop()
    async with running(pool, concurrency=8, per_host_concurrency=6, timeout_s=1.0, connect_timeout_s=1.0,
                       breaker_failures=2, breaker_s=2, max_attempts=50) as worker:
        await change(pool, "akutsu", None, 3)
        deadline = loop.time() + 60
        while not worker.host_paused(host):  # the burst of 6 timeouts, under a deadline
            assert loop.time() < deadline, "the failing host was never paused"
            await asyncio.sleep(0.02)
        paused_at = loop.time()
        while worker.host_paused(host):  # the first pause: breaker_s (2 s), not 2 s doubled per failure
            assert loop.time() - paused_at < 2 + 1.5, "the first pause lasted beyond breaker_s"
            await asyncio.sleep(0.02)
        # after the pause the host gets one try, not per_host_concurrency connections at once
        accepted = tarpit.accepted
        deadline = loop.time() + 30
        while not worker.host_paused(host):
            assert loop.time() < deadline, "the host failing again was not paused again"
            await asyncio.sleep(0.02)
        assert tarpit.accepted - accepted <= 1, (accepted, tarpit.accepted)
