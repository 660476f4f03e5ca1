"""The delivery worker: alert changes → queue rows → Web Push, webhooks and email.

* **Fan-out.** The worker LISTENs on ``sonae_alerts``; on each notification (and every ``sweep_s``,
  for a lost one) it runs :func:`notify.store.fan_out`, which turns each committed alert event into
  queue rows with one ``INSERT … SELECT`` per channel. Passes of several processes are serialised by
  a row lock; the queue's unique key makes a repeated pass harmless.
* **Delivery.** Any number of workers (one per ``sonae run``/``sonae ingest`` process) take due rows
  with ``FOR UPDATE SKIP LOCKED`` and lease them for ``lease_s`` by moving ``next_attempt_at``: a
  process that dies mid-send leaves its rows to be taken again when the lease ends. At most
  ``concurrency`` requests are open at once (a semaphore), and each push service origin and each
  webhook has its own token bucket (``push_rate_per_s``, ``webhook_rate_per_s``).
* **Fairness between hosts** (found: 400 anonymous subscriptions to a server that accepts connections
  and never answers delayed a resident's alert by 2 min 9 s, behind one FIFO queue). Rows are claimed
  round-robin over endpoint hosts (a host's n-th due row after every host's (n-1)-th), at most
  ``per_host_concurrency`` per host in flight; a connection must open within ``connect_timeout_s``; a host
  whose connections fail or time out ``breaker_failures`` times in a row is paused (not claimed) for
  ``breaker_s``, doubling to 10 minutes, while the others proceed. The order of an alert's events to one
  receiver is kept (see :func:`_claim`).
* **Only public addresses** for Web Push: an endpoint is resolved by :class:`notify.endpoints.PublicResolver`
  and connected to at the address checked (DNS rebinding), IP literals are checked before sending, and
  redirects are not followed; a host not in ``push_hosts`` is refused. Webhooks are registered by admins
  and may be partner systems on a private network: private addresses (10/8, 172.16/12, 192.168/16,
  fc00::/7) pass, while loopback (unless ``notify.webhook_allow_loopback``), link-local (the cloud metadata
  address), unspecified, multicast and reserved ones are refused by the same resolver and literal check
  (:func:`notify.endpoints.webhook_refusal`; found: a webhook to ``http://127.0.0.1:9/x`` or
  ``http://169.254.169.254/`` was registered and posted to). A refused address is not connected to: the
  delivery is dead at once, its reason in the delivery log.
* **Outcomes** are written in batches. Push: 2xx sent; 404/410 the subscription has expired and is
  deleted; 429/5xx/network errors are retried (``Retry-After`` honoured); other 4xx are dead. Webhooks
  and email: anything but success is retried with exponential backoff (``retry_base_ms`` × 2^n, capped
  at ``retry_max_s``, ±20 % jitter) until ``max_attempts``, then the row is dead (the dead-letter list).
* **Metrics**: ``sonae_notify_{queued,sent,failed}_total``, ``sonae_notify_latency_seconds`` (from the
  alert change's commit-time transaction start to the receiver's answer) and the queue depth.

Nothing here logs a subscriber's endpoint or areas; log lines carry queue ids only.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import json
import logging
import smtplib
import time
from collections.abc import Callable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiohttp
import asyncpg
from aiohttp.abc import AbstractResolver
from prometheus_client import Counter, Gauge, Histogram

from alerting.cap_identity import CapProfile, load_profile
from alerting.store import NOTIFY_CHANNEL as ALERTS_CHANNEL
from notify import store
from notify.endpoints import (
    AddressRefused,
    PublicResolver,
    parse_hosts,
    push_refusal,
    webhook_refusal,
)
from notify.webpush import Vapid, encrypt, generate_private_pem, load_private_key, origin_of
from sonae.config import Settings
from sonae.db import DATABASE_ERRORS
from sonae.ratelimit import TokenBuckets
from sonae.retry import backoff_delay, count_failure, keep_connected

log = logging.getLogger("sonae.notify")

QUEUED = Counter("sonae_notify_queued_total", "Messages queued for delivery", ["kind"])
SENT = Counter("sonae_notify_sent_total", "Messages delivered", ["kind"])
FAILED = Counter("sonae_notify_failed_total", "Failed delivery attempts by what follows", ["kind", "outcome"])
LATENCY = Histogram("sonae_notify_latency_seconds", "From an alert change to its delivery", ["kind"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600))
DEPTH = Gauge("sonae_notify_queue_depth", "Messages waiting (queued or being sent)", ["kind"])

USER_AGENT = "Sonae-Notify/1"


async def vapid_private_pem(conn: asyncpg.Connection, configured: str | None) -> str:
    """The configured VAPID key, else the one kept in the database (made on first use)."""
    if configured:
        return configured
    pem = await conn.fetchval("SELECT private_pem FROM push_vapid")
    if pem is None:
        await conn.execute("INSERT INTO push_vapid (id, private_pem) VALUES (true, $1) ON CONFLICT DO NOTHING",
                           generate_private_pem())
        pem = await conn.fetchval("SELECT private_pem FROM push_vapid")
    return str(pem)


def base_url_of(settings: Settings) -> str:
    configured = settings["api.public_url"]
    if configured:
        return str(configured).rstrip("/")
    host = settings["api.host"]
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{settings['api.port']}"


class DeliveryWorker:
    """Fan alert changes out and deliver them. Run with :meth:`run`; stop with :meth:`stop`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        base_url: str,
        vapid_private_key: str | None = None,
        vapid_subject: str = "mailto:sonae@example.jp",
        smtp_url: str | None = None,
        smtp_from: str = "sonae@localhost",
        concurrency: int = 64,
        batch_size: int = 500,
        max_attempts: int = 8,
        retry_base_s: float = 2.0,
        retry_max_s: float = 3600.0,
        push_rate_per_s: int = 500,
        webhook_rate_per_s: int = 5,
        push_ttl_s: int = 21600,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 3.0,
        per_host_concurrency: int = 16,
        breaker_failures: int = 5,
        breaker_s: float = 30.0,
        push_hosts: tuple[str, ...] | str | None = None,
        allow_loopback: bool = False,
        webhook_allow_loopback: bool = False,
        name_resolver: AbstractResolver | None = None,
        lease_s: float = 60.0,
        sweep_s: float = 5.0,
        cap_sender: str = "",
        cap_installation_id: str = "",
        cap_expires_hours: int = 24,
    ) -> None:
        self.pool = pool
        self.base_url = base_url
        self.vapid_private_key = vapid_private_key
        self.vapid_subject = vapid_subject
        self.smtp_url = smtp_url
        self.smtp_from = smtp_from
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.push_ttl_s = push_ttl_s
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.per_host_concurrency = per_host_concurrency
        self.breaker_failures = breaker_failures
        self.breaker_s = breaker_s
        self.push_hosts = parse_hosts(push_hosts)
        self.allow_loopback = allow_loopback
        self.webhook_allow_loopback = webhook_allow_loopback
        #: the name lookup behind both sessions' address checks (None: getaddrinfo; tests give fixed answers)
        self.name_resolver = name_resolver
        #: deliveries claimed and not finished, per endpoint host (as :func:`_claim` names hosts)
        self._host_inflight: dict[str, int] = {}
        #: per host: failures in a row, paused until (monotonic), pauses so far
        self._breaker: dict[str, tuple[int, float, int]] = {}
        self.lease_s = lease_s
        self.sweep_s = sweep_s
        self.cap_sender = cap_sender
        self.cap_installation_id = cap_installation_id
        self.cap_expires_hours = cap_expires_hours
        self._cap_profile: CapProfile | None = None
        self._push_buckets = TokenBuckets(per_minute=push_rate_per_s * 60, burst=max(1, push_rate_per_s))
        self._hook_buckets = TokenBuckets(per_minute=webhook_rate_per_s * 60, burst=max(1, webhook_rate_per_s))
        self._sem = asyncio.Semaphore(concurrency)
        self._stop = asyncio.Event()
        self._fan_wake = asyncio.Event()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        #: outcomes not recorded yet, each with its kind and the seconds from its alert change (metrics)
        self._outcomes: list[tuple[store.Outcome, str, float]] = []
        self._session: aiohttp.ClientSession | None = None
        self._push_session: aiohttp.ClientSession | None = None
        self.vapid: Vapid | None = None
        self.ready = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings, pool: asyncpg.Pool, **overrides: Any) -> DeliveryWorker:
        kwargs: dict[str, Any] = dict(
            base_url=base_url_of(settings), vapid_private_key=settings["notify.vapid_private_key"],
            vapid_subject=settings["notify.vapid_subject"], smtp_url=settings["notify.smtp_url"],
            smtp_from=settings["notify.smtp_from"], concurrency=settings["notify.concurrency"],
            max_attempts=settings["notify.max_attempts"], retry_base_s=settings["notify.retry_base_ms"] / 1000,
            retry_max_s=float(settings["notify.retry_max_s"]), push_rate_per_s=settings["notify.push_rate_per_s"],
            webhook_rate_per_s=settings["notify.webhook_rate_per_s"], push_ttl_s=settings["notify.push_ttl_s"],
            timeout_s=float(settings["notify.timeout_s"]),
            connect_timeout_s=float(settings["notify.connect_timeout_s"]),
            per_host_concurrency=settings["notify.per_host_concurrency"],
            breaker_failures=settings["notify.breaker_failures"], breaker_s=float(settings["notify.breaker_s"]),
            push_hosts=settings["notify.push_hosts"], allow_loopback=settings["notify.push_allow_http"],
            webhook_allow_loopback=settings["notify.webhook_allow_loopback"],
            cap_sender=settings["cap.sender"],
            cap_installation_id=settings["cap.installation_id"], cap_expires_hours=settings["cap.expires_hours"])
        kwargs.update(overrides)
        return cls(pool, **kwargs)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._fan_wake.set()

    # -- life cycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        async with self.pool.acquire() as conn:
            pem = await vapid_private_pem(conn, self.vapid_private_key)
        self.vapid = Vapid(load_private_key(pem), self.vapid_subject)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s, sock_connect=min(self.connect_timeout_s, self.timeout_s))
        # webhooks: public or private addresses, never loopback (unless allowed), link-local, multicast, reserved
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.per_host_concurrency,
                                         resolver=PublicResolver(allow_loopback=self.webhook_allow_loopback,
                                                                 allow_private=True, inner=self.name_resolver),
                                         use_dns_cache=False)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, headers={"User-Agent": USER_AGENT})
        # Web Push: endpoints come from anyone; only public addresses, resolved once and connected to as checked
        push_connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.per_host_concurrency,
                                              resolver=PublicResolver(allow_loopback=self.allow_loopback,
                                                                      inner=self.name_resolver),
                                              use_dns_cache=False)
        self._push_session = aiohttp.ClientSession(connector=push_connector, timeout=timeout,
                                                   headers={"User-Agent": USER_AGENT})
        listener = asyncio.create_task(self._listen(), name="notify-listen")
        fan = asyncio.create_task(self._fan_loop(), name="notify-fanout")
        try:
            await self._deliver_loop()
        finally:
            self._stop.set()
            fan.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(listener), 5)  # it removes its listeners itself
            listener.cancel()
            await asyncio.gather(listener, fan, return_exceptions=True)
            for task in list(self._inflight):
                task.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
            # what was cancelled mid-send stays leased and is taken again when the lease ends
            with contextlib.suppress(Exception):
                await self._flush()
            await self._session.close()
            await self._push_session.close()

    async def _listen(self) -> None:
        """A dedicated connection LISTENing for alert changes and newly queued messages (reconnects with
        backoff from the first attempt, :func:`sonae.retry.keep_connected`)."""
        await keep_connected(self._listen_once, target="postgres-listen", stopped=self._stop.is_set)

    async def _listen_once(self, connected: Callable[[], None]) -> None:
        async with self.pool.acquire() as conn:
            lost = asyncio.Event()

            def on_alert(*_: Any) -> None:
                self._fan_wake.set()

            def on_queued(*_: Any) -> None:
                self._wake.set()

            def on_lost(*_: Any, lost: asyncio.Event = lost) -> None:
                lost.set()

            conn.add_termination_listener(on_lost)
            await conn.add_listener(ALERTS_CHANNEL, on_alert)
            await conn.add_listener(store.NOTIFY_CHANNEL, on_queued)
            self.ready.set()
            connected()
            self._fan_wake.set()  # catch up on anything missed while not listening
            try:
                stop = asyncio.create_task(self._stop.wait())
                gone = asyncio.create_task(lost.wait())
                await asyncio.wait([stop, gone], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                gone.cancel()
            finally:
                with contextlib.suppress(Exception):
                    await conn.remove_listener(ALERTS_CHANNEL, on_alert)
                with contextlib.suppress(Exception):
                    await conn.remove_listener(store.NOTIFY_CHANNEL, on_queued)
        if lost.is_set() and not self._stop.is_set():
            raise ConnectionError("notify listen connection lost")

    async def _fan_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._fan_wake.wait(), self.sweep_s)
            self._fan_wake.clear()
            if self._stop.is_set():
                return
            try:
                await self.fan_out_pending()
            except DATABASE_ERRORS as exc:
                log.warning("notify fan-out failed; retrying", extra={"error": str(exc)})

    async def fan_out_pending(self) -> dict[str, int]:
        totals = {"push": 0, "webhook": 0, "email": 0, "events": 0}
        while True:
            async with self.pool.acquire() as conn:
                if self._cap_profile is None:
                    self._cap_profile = await load_profile(
                        conn, sender=self.cap_sender, installation=self.cap_installation_id,
                        public_url=self.base_url, expires_hours=self.cap_expires_hours)
                done = await store.fan_out(conn, base_url=self.base_url, email=bool(self.smtp_url),
                                           profile=self._cap_profile)
            for kind, n in done.items():
                totals[kind] += n
                if kind != "events" and n:
                    QUEUED.labels(kind).inc(n)
            if done["push"] or done["webhook"] or done["email"]:
                self._wake.set()
            if done["events"] < 200:
                return totals

    async def _deliver_loop(self) -> None:
        next_house = 0.0
        while not self._stop.is_set():
            try:
                await self._flush()
                room = self.concurrency * 2 - len(self._inflight)
                claimed = 0
                if room > 0:
                    busy = self._busy_hosts()
                    async with self.pool.acquire() as conn:
                        rows = await _claim(conn, min(room, self.batch_size), self.lease_s,
                                            per_host=self.per_host_concurrency, busy=busy)
                    claimed = len(rows)
                    for row in rows:
                        host = str(row["host"])
                        self._host_inflight[host] = self._host_inflight.get(host, 0) + 1
                        task = asyncio.create_task(self._deliver(row))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
                        task.add_done_callback(functools.partial(self._host_done, host))
                if time.monotonic() >= next_house:
                    next_house = time.monotonic() + 60
                    await self._housekeeping()
                if claimed and claimed == min(room, self.batch_size):
                    continue  # there may be more due right now
                timeout = self.sweep_s
                if not self._inflight:
                    async with self.pool.acquire() as conn:
                        due = await conn.fetchval(
                            "SELECT extract(epoch FROM min(next_attempt_at) - now()) FROM notify_queue "
                            "WHERE state = 'queued'")
                    if due is not None and (claimed or float(due) > 0):
                        timeout = min(timeout, max(0.0, float(due)))
                    # rows due but none claimable (their hosts are paused): wait for the first pause to end
                    now = time.monotonic()
                    for _, until, _ in self._breaker.values():
                        if until > now:
                            timeout = min(timeout, until - now + 0.01)
                if timeout > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                self._wake.clear()
            except DATABASE_ERRORS as exc:
                log.warning("notify delivery loop: database error; retrying", extra={"error": str(exc)})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        try:
            async with self.pool.acquire() as conn:
                await store.record(conn, [outcome for outcome, _, _ in outcomes])
        except BaseException:
            self._outcomes = outcomes + self._outcomes
            raise
        # counted once recorded: whoever sees a metric move finds the delivery log saying the same
        for outcome, kind, latency_s in outcomes:
            if outcome.state == "sent":
                SENT.labels(kind).inc()
                LATENCY.labels(kind).observe(latency_s)
            else:
                FAILED.labels(kind, "retry" if outcome.state == "queued" else outcome.state).inc()

    async def _housekeeping(self) -> None:
        async with self.pool.acquire() as conn:
            await store.housekeeping(conn)
            rows = await conn.fetch("SELECT kind, count(*) AS n FROM notify_queue WHERE state = 'queued' GROUP BY kind")
        depth = {r["kind"]: int(r["n"]) for r in rows}
        for kind in ("push", "webhook", "email"):
            DEPTH.labels(kind).set(depth.get(kind, 0))

    # -- fairness between hosts -------------------------------------------------------------------
    def _host_done(self, host: str, _task: object = None) -> None:
        n = self._host_inflight.get(host, 0) - 1
        if n > 0:
            self._host_inflight[host] = n
        else:
            self._host_inflight.pop(host, None)

    def _busy_hosts(self) -> dict[str, int]:
        """Per host, the slots of ``per_host_concurrency`` taken: its deliveries in flight, or all of them
        while the host is paused (circuit open). A paused host whose pause has ended gets one try (half open:
        one slot, while its failure count stays one short of a new pause and no delivery has answered)."""
        busy = dict(self._host_inflight)
        now = time.monotonic()
        for host, (_, until, pauses) in self._breaker.items():
            if until > now:
                busy[host] = self.per_host_concurrency
            elif pauses:  # half open: one delivery at a time until the host answers (or is paused again)
                busy[host] = min(self.per_host_concurrency, self.per_host_concurrency - 1 + busy.get(host, 0))
        return busy

    def host_paused(self, host: str) -> bool:
        """Whether deliveries to ``host`` are paused now (for tests and operators)."""
        state = self._breaker.get(host)
        return state is not None and state[1] > time.monotonic()

    def _host_answered(self, host: str) -> None:
        self._breaker.pop(host, None)

    def _host_failed(self, host: str) -> None:
        """One delivery to ``host`` failed to connect or timed out. A failure that ends while the host is paused
        began before the pause (nothing is claimed for a paused host): it is not counted, so a burst of
        deliveries failing together (a push service's outage: every one in flight times out at once) pauses
        the host once, for ``breaker_s`` first (found: 6 in flight gave 5 pauses at once, 32 s instead of 2 s)."""
        failures, until, pauses = self._breaker.get(host, (0, 0.0, 0))
        if until > time.monotonic():
            return
        failures += 1
        until = 0.0
        if failures >= self.breaker_failures:
            until = time.monotonic() + min(600.0, self.breaker_s * 2 ** pauses)
            pauses += 1
            failures = self.breaker_failures - 1  # after the pause, one more failure pauses it again
            log.warning("notify: a receiving host keeps failing; its deliveries are paused",
                        extra={"pause_s": round(until - time.monotonic(), 1), "pauses": pauses})
        self._breaker[host] = (failures, until, pauses)

    # -- one message -----------------------------------------------------------------------------
    async def _deliver(self, row: asyncpg.Record) -> None:
        kind = row["kind"]
        try:
            if kind == "push":
                outcome = await self._push(row)
            elif kind == "webhook":
                outcome = await self._webhook(row)
            else:
                outcome = await self._email(row)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not stop the others; the row is retried
            log.exception("notify delivery failed unexpectedly", extra={"queue_id": row["id"]})
            outcome = self._retry(row, None, f"internal error: {type(exc).__name__}")
        self._outcomes.append((outcome, kind, max(0.0, time.time() - row["event_at"].timestamp())))
        self._wake.set()

    def _retry(self, row: asyncpg.Record, status: int | None, error: str, *, retry_after: float | None = None,
               duration_ms: int | None = None) -> store.Outcome:
        attempts = int(row["attempts"])
        log_it = row["kind"] != "push"
        if attempts >= self.max_attempts:
            return store.Outcome(row["id"], "dead", status, error[:500], duration_ms=duration_ms, attempt=attempts,
                                 log=log_it)
        delay = backoff_delay(attempts, base=self.retry_base_s, cap=self.retry_max_s)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_max_s))
        return store.Outcome(row["id"], "queued", status, error[:500], retry_in_s=delay, duration_ms=duration_ms,
                             attempt=attempts, log=log_it)

    async def _post(self, session: aiohttp.ClientSession, row: asyncpg.Record, target: str, url: str, body: bytes,
                    headers: dict[str, str]) -> store.Outcome | tuple[int, float | None, int]:
        """POST one delivery (at most ``concurrency`` at once, no redirects followed, at most 4 KiB of the answer
        read). Returns ``(status, Retry-After seconds or None, duration in ms)``, or the retry outcome when the
        receiver could not be reached (connection refused or reset, DNS, timeout), which also counts against its
        host's breaker and in ``sonae_connect_failures_total{target}``."""
        started = time.perf_counter()
        try:
            async with self._sem, session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                await resp.content.read(4096)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            refused = _refused(exc)
            if refused is not None:  # the name resolved to an address the policy refuses: nothing was sent
                return store.Outcome(row["id"], "dead", None, f"address refused: {refused}"[:500],
                                     attempt=int(row["attempts"]), log=row["kind"] != "push")
            count_failure(target)
            self._host_failed(str(row["host"]))
            ms = int((time.perf_counter() - started) * 1000)
            return self._retry(row, None, f"{type(exc).__name__}: {exc}"[:300], duration_ms=ms)
        self._host_answered(str(row["host"]))
        return status, retry_after, int((time.perf_counter() - started) * 1000)

    async def _take(self, buckets: TokenBuckets, key: str) -> None:
        for _ in range(10_000):  # a token bucket: wait for the next token (bounded, never forever)
            wait = buckets.take(key)
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    def endpoint_refusal(self, endpoint: str) -> str | None:
        """Why this worker will not send to a subscription's ``endpoint`` (:func:`notify.endpoints.push_refusal`
        with its ``push_hosts`` and ``allow_loopback``), or None."""
        return push_refusal(endpoint, hosts=self.push_hosts, allow_loopback=self.allow_loopback)

    async def _push(self, row: asyncpg.Record) -> store.Outcome:
        if row["endpoint"] is None:
            return store.Outcome(row["id"], "gone", None, "the subscription was removed")
        assert self.vapid is not None and self._push_session is not None
        why = self.endpoint_refusal(row["endpoint"])
        if why:
            # a subscription stored before these rules, or the rules changed: never connect
            return store.Outcome(row["id"], "dead", None, f"endpoint refused: {why}")
        payload = row["payload"]
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False).encode()
        body = encrypt(data, bytes(row["p256dh"]), bytes(row["auth"]))
        level = json.loads(data).get("level") or 0
        headers = {"TTL": str(self.push_ttl_s), "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream", "Urgency": "high" if level >= 4 else "normal",
                   "Topic": f"sonae-alert-{row['alert_id']}"[:32],
                   "Authorization": self.vapid.authorization(row["endpoint"])}
        await self._take(self._push_buckets, origin_of(row["endpoint"]))
        sent = await self._post(self._push_session, row, "push", row["endpoint"], body, headers)
        if isinstance(sent, store.Outcome):
            return sent
        status, retry_after, ms = sent
        if 200 <= status < 300:
            return store.Outcome(row["id"], "sent", status, None, duration_ms=ms)
        if status in (404, 410):
            return store.Outcome(row["id"], "gone", status, "the push subscription has expired",
                                 remove_subscription=int(row["target_id"]))
        if status == 429 or status >= 500:
            return self._retry(row, status, f"push service answered {status}", retry_after=retry_after,
                               duration_ms=ms)
        return store.Outcome(row["id"], "dead", status, f"push service refused the message ({status})",
                             duration_ms=ms)

    async def _webhook(self, row: asyncpg.Record) -> store.Outcome:
        if row["url"] is None:
            return store.Outcome(row["id"], "gone", None, "the webhook was deleted", attempt=row["attempts"],
                                 log=True)
        assert self._session is not None
        why = webhook_refusal(row["url"], allow_loopback=self.webhook_allow_loopback)
        if why:  # an IP literal never reaches the resolver; a webhook stored before this rule is refused here
            return store.Outcome(row["id"], "dead", None, f"address refused: the url's host is {why}",
                                 attempt=row["attempts"], log=True)
        payload = row["payload"]
        doc = json.loads(payload) if isinstance(payload, str) else payload
        if row["format"] == "cap":
            body, ctype = doc["cap"].encode(), "application/cap+xml; charset=utf-8"
        else:
            body, ctype = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode(), "application/json"
        signature = hmac.new(row["secret"].encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": ctype, "X-Sonae-Signature": f"sha256={signature}",
                   "X-Sonae-Event-Id": str(row["alert_event_id"]), "X-Sonae-Delivery": str(row["id"]),
                   "X-Sonae-Exercise": "true" if row["exercise"] else "false"}
        await self._take(self._hook_buckets, f"webhook:{row['target_id']}")
        sent = await self._post(self._session, row, "webhook", row["url"], body, headers)
        if isinstance(sent, store.Outcome):
            return sent
        status, retry_after, ms = sent
        if 200 <= status < 300:
            return store.Outcome(row["id"], "sent", status, None, duration_ms=ms, attempt=row["attempts"], log=True)
        return self._retry(row, status, f"receiver answered {status}", retry_after=retry_after, duration_ms=ms)

    async def _email(self, row: asyncpg.Record) -> store.Outcome:
        if row["email"] is None or not self.smtp_url:
            return store.Outcome(row["id"], "gone", None, "no roster entry or no SMTP server",
                                 attempt=row["attempts"], log=True)
        payload = row["payload"]
        doc = json.loads(payload) if isinstance(payload, str) else payload
        started = time.perf_counter()
        try:
            async with self._sem:
                await asyncio.to_thread(send_mail, self.smtp_url, self.smtp_from, row["email"], doc["subject"],
                                        doc["body"], self.timeout_s)
        except smtplib.SMTPRecipientsRefused as exc:
            return store.Outcome(row["id"], "dead", None, f"recipient refused: {exc}"[:500],
                                 attempt=row["attempts"], log=True)
        except (smtplib.SMTPException, OSError) as exc:
            count_failure("smtp")
            ms = int((time.perf_counter() - started) * 1000)
            return self._retry(row, None, f"{type(exc).__name__}: {exc}", duration_ms=ms)
        ms = int((time.perf_counter() - started) * 1000)
        return store.Outcome(row["id"], "sent", 250, None, duration_ms=ms, attempt=row["attempts"], log=True)


async def _claim(conn: asyncpg.Connection, limit: int, lease_s: float, *, per_host: int = 1_000_000,
                 busy: dict[str, int] | None = None) -> list[asyncpg.Record]:
    """Claim due rows with what each channel needs to send them, and each row's ``host``.

    A target hears an alert's events in their order: a row is not claimed while an earlier event of the same
    alert to the same target is still queued — waiting for a retry after its receiver failed, or in flight
    (a claimed row stays ``queued`` under its lease until its outcome is recorded). So a receiver that was
    down gets the backlog in order (raised, escalated, de-escalated), each as it was (the payload is
    rendered at fan-out from the alert at its event), and a push service never shows an older message of
    an alert over a newer one (the same ``tag``).

    Hosts take turns: rows are ranked within their endpoint host (oldest due first) and claimed by rank, so
    a host with a backlog of thousands does not hold back another host's first row (found: one FIFO, 400
    subscriptions to a server that never answers ahead of a resident's). At most ``per_host`` minus
    ``busy[host]`` (the worker's deliveries in flight to it, or all of ``per_host`` while it is paused) rows
    of a host are claimed. Each queued row carries its host (``notify_queue.host``, :data:`notify.store.QUEUE_HOST`);
    the hosts with queued rows are found by a skip scan of ``notify_queue_host_due``, and each host's oldest due
    rows by the same index, so a claim costs (hosts × rows taken), not the backlog."""
    busy = busy or {}
    return list(await conn.fetch(
        """WITH RECURSIVE hosts AS (
               (SELECT host FROM notify_queue WHERE state = 'queued' ORDER BY host LIMIT 1)
               UNION ALL
               SELECT (SELECT q.host FROM notify_queue q WHERE q.state = 'queued' AND q.host > h.host
                       ORDER BY q.host LIMIT 1)
               FROM hosts h WHERE h.host IS NOT NULL),
           fair AS (
               SELECT c.id, c.rank, c.next_attempt_at FROM hosts h
               LEFT JOIN unnest($3::text[], $4::int[]) AS b(host, used) ON b.host = h.host
               CROSS JOIN LATERAL (
                   SELECT q.id, q.next_attempt_at, row_number() OVER (ORDER BY q.next_attempt_at, q.id) AS rank
                   FROM notify_queue q
                   WHERE q.host = h.host AND q.state = 'queued' AND q.next_attempt_at <= now()
                     AND NOT EXISTS (SELECT 1 FROM notify_queue p WHERE p.kind = q.kind AND p.target_id = q.target_id
                                     AND p.alert_id = q.alert_id AND p.state = 'queued'
                                     AND p.alert_event_id < q.alert_event_id)
                   ORDER BY q.next_attempt_at, q.id
                   LIMIT greatest(0, $5::int - coalesce(b.used, 0))) c
               WHERE h.host IS NOT NULL
               ORDER BY c.rank, c.next_attempt_at, c.id LIMIT $1),
           due AS (
               SELECT q.id FROM notify_queue q JOIN fair f ON f.id = q.id
               WHERE q.state = 'queued' AND q.next_attempt_at <= now()
               ORDER BY f.rank, f.next_attempt_at, q.id FOR UPDATE OF q SKIP LOCKED),
           claimed AS (
               UPDATE notify_queue q SET attempts = q.attempts + 1,
                      next_attempt_at = now() + make_interval(secs => $2)
               FROM due WHERE q.id = due.id
               RETURNING q.id, q.kind, q.target_id, q.alert_event_id, q.alert_id, q.exercise, q.payload,
                         q.attempts, q.event_at, q.host)
           SELECT c.*, s.endpoint, s.p256dh, s.auth, w.url, w.secret, w.format, r.email
           FROM claimed c
           LEFT JOIN push_subscriptions s ON c.kind = 'push' AND s.id = c.target_id
           LEFT JOIN webhooks w ON c.kind = 'webhook' AND w.id = c.target_id AND w.deleted_at IS NULL
           LEFT JOIN notify_roster r ON c.kind = 'email' AND r.account_id = c.target_id
           ORDER BY c.id""", limit, lease_s, list(busy), list(busy.values()), per_host))


def _refused(exc: BaseException) -> AddressRefused | None:
    """The :class:`notify.endpoints.AddressRefused` behind an aiohttp connection error, if that is its cause."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, AddressRefused):
            return seen
        os_error = getattr(seen, "os_error", None)
        if isinstance(os_error, AddressRefused):
            return os_error
        seen = seen.__cause__ or seen.__context__
    return None


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 9:
        return float(value.strip())
    return None


def send_mail(smtp_url: str, sender: str, to: str, subject: str, body: str, timeout: float = 10.0) -> None:
    """Send one plain-text UTF-8 message through ``smtp://[user:pass@]host[:port][?starttls=true]``
    (``smtps://`` for implicit TLS)."""
    parts = urlsplit(smtp_url)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = to
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="sonae")
    msg.set_content(body)
    host = parts.hostname or "localhost"
    cls = smtplib.SMTP_SSL if parts.scheme == "smtps" else smtplib.SMTP
    port = parts.port or (465 if parts.scheme == "smtps" else 25)
    with cls(host, port, timeout=timeout) as smtp:
        if parts.scheme == "smtp" and parse_qs(parts.query).get("starttls", ["false"])[0] == "true":
            smtp.starttls()
        if parts.username:
            smtp.login(unquote(parts.username), unquote(parts.password or ""))
        smtp.send_message(msg)


async def run_delivery_worker(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Run a delivery worker until ``stop`` is set (for ``sonae run`` / ``sonae ingest``)."""
    if not settings["notify.enabled"]:
        return
    from sonae.workers import run_until_stopped

    worker = DeliveryWorker.from_settings(settings, pool)
    await run_until_stopped(worker.run(), stop, worker.stop)
