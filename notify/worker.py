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
from prometheus_client import Counter, Gauge, Histogram

from alerting.cap_identity import CapProfile, load_profile
from alerting.store import NOTIFY_CHANNEL as ALERTS_CHANNEL
from notify import store
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
            timeout_s=float(settings["notify.timeout_s"]), cap_sender=settings["cap.sender"],
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
        connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s),
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
                    async with self.pool.acquire() as conn:
                        rows = await _claim(conn, min(room, self.batch_size), self.lease_s)
                    claimed = len(rows)
                    for row in rows:
                        task = asyncio.create_task(self._deliver(row))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
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
                    if due is not None:
                        timeout = min(timeout, max(0.0, float(due)))
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

    async def _take(self, buckets: TokenBuckets, key: str) -> None:
        for _ in range(10_000):  # a token bucket: wait for the next token (bounded, never forever)
            wait = buckets.take(key)
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def _push(self, row: asyncpg.Record) -> store.Outcome:
        if row["endpoint"] is None:
            return store.Outcome(row["id"], "gone", None, "the subscription was removed")
        assert self.vapid is not None and self._session is not None
        payload = row["payload"]
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False).encode()
        body = encrypt(data, bytes(row["p256dh"]), bytes(row["auth"]))
        level = json.loads(data).get("level") or 0
        headers = {"TTL": str(self.push_ttl_s), "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream", "Urgency": "high" if level >= 4 else "normal",
                   "Topic": f"sonae-alert-{row['alert_id']}"[:32],
                   "Authorization": self.vapid.authorization(row["endpoint"])}
        await self._take(self._push_buckets, origin_of(row["endpoint"]))
        started = time.perf_counter()
        try:
            async with self._sem, self._session.post(row["endpoint"], data=body, headers=headers) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            count_failure("push")
            return self._retry(row, None, f"{type(exc).__name__}: {exc}")
        ms = int((time.perf_counter() - started) * 1000)
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
        started = time.perf_counter()
        try:
            async with self._sem, self._session.post(row["url"], data=body, headers=headers,
                                                     allow_redirects=False) as resp:
                status = resp.status
                retry_after = _retry_after(resp.headers.get("Retry-After"))
                await resp.content.read(4096)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            count_failure("webhook")
            ms = int((time.perf_counter() - started) * 1000)
            return self._retry(row, None, f"{type(exc).__name__}: {exc}" [:300], duration_ms=ms)
        ms = int((time.perf_counter() - started) * 1000)
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


async def _claim(conn: asyncpg.Connection, limit: int, lease_s: float) -> list[asyncpg.Record]:
    """Claim due rows with what each channel needs to send them.

    A target hears an alert's events in their order: a row is not claimed while an earlier event of the same
    alert to the same target is still queued — waiting for a retry after its receiver failed, or in flight
    (a claimed row stays ``queued`` under its lease until its outcome is recorded). So a receiver that was
    down gets the backlog in order (raised, escalated, de-escalated), each as it was (the payload is
    rendered at fan-out from the alert at its event), and a push service never shows an older message of
    an alert over a newer one (the same ``tag``)."""
    return list(await conn.fetch(
        """WITH due AS (
               SELECT id FROM notify_queue q WHERE state = 'queued' AND next_attempt_at <= now()
                 AND NOT EXISTS (SELECT 1 FROM notify_queue p WHERE p.kind = q.kind AND p.target_id = q.target_id
                                 AND p.alert_id = q.alert_id AND p.state = 'queued'
                                 AND p.alert_event_id < q.alert_event_id)
               ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED),
           claimed AS (
               UPDATE notify_queue q SET attempts = q.attempts + 1,
                      next_attempt_at = now() + make_interval(secs => $2)
               FROM due WHERE q.id = due.id
               RETURNING q.id, q.kind, q.target_id, q.alert_event_id, q.alert_id, q.exercise, q.payload,
                         q.attempts, q.event_at)
           SELECT c.*, s.endpoint, s.p256dh, s.auth, w.url, w.secret, w.format, r.email
           FROM claimed c
           LEFT JOIN push_subscriptions s ON c.kind = 'push' AND s.id = c.target_id
           LEFT JOIN webhooks w ON c.kind = 'webhook' AND w.id = c.target_id AND w.deleted_at IS NULL
           LEFT JOIN notify_roster r ON c.kind = 'email' AND r.account_id = c.target_id
           ORDER BY c.id""", limit, lease_s))


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
