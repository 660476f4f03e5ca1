"""Upserting Sonae's public NGSI-LD entities to a context broker (optional: ``ngsi.broker_url``).

Every change notification (``sonae_readings``, ``sonae_alerts``, ``sonae_evac``) wakes the worker, which
re-reads the public entities (the same :func:`ngsi.store.load` the API serves), and queues each whose content
changed since it was queued last (a digest per entity in ``ngsi_push_queue``); entities that vanished (a
cleared alert) are queued for deletion. Due rows are sent in batches: ``POST {broker}/ngsi-ld/v1/
entityOperations/upsert`` (``application/ld+json``, normalized entities each with Sonae's ``@context``) and
``POST …/entityOperations/delete``. A failed try is retried with exponential backoff (``ngsi.retry_base_ms``
doubling to ``ngsi.retry_max_s``, with jitter); after ``ngsi.max_attempts`` tries, or at once on a 4xx that
retrying cannot fix, the row is dead-lettered (state ``dead``) until the entity changes again. Several
processes may run the worker: rows are claimed with ``FOR UPDATE SKIP LOCKED``.

Devices (staff data) are never pushed. No real broker is installable here from PyPI or Debian (Orion-LD,
Scorpio and Stellio ship as Docker images or Java/C++ builds); the tests use an in-process aiohttp stub.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import asyncpg
from prometheus_client import Counter, Gauge

from alerting.cap_identity import profile_from_settings
from ngsi import context as ctx
from ngsi import entities as E
from ngsi import store
from sonae.db import DATABASE_ERRORS
from sonae.retry import keep_connected

log = logging.getLogger("sonae.ngsi.push")

CHANNELS = ("sonae_readings", "sonae_alerts", "sonae_evac")
PUSHED = Counter("sonae_ngsi_pushed_total", "Entities the context broker accepted", ["op"])
FAILED = Counter("sonae_ngsi_push_failed_total", "Failed pushes by what follows", ["outcome"])
DEAD = Gauge("sonae_ngsi_push_dead", "Entities in the NGSI-LD push dead-letter list")
#: statuses worth retrying (the broker is busy or down); any other 4xx is dead-lettered at once
RETRYABLE = {408, 425, 429}


def digest(entity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(entity, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def base_url(settings: Any) -> str:
    """The public URL of Sonae's API (``api.public_url``, else its listening address): the @context's home."""
    configured = settings["api.public_url"]
    if configured:
        return str(configured).rstrip("/")
    host = settings["api.host"]
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{settings['api.port']}"


def backoff(attempts: int, *, base_s: float, max_s: float, jitter: float = 0.0) -> float:
    """Delay before try ``attempts + 1``: ``base_s`` doubling per try, at most ``max_s``, times ``1 + jitter``
    (the worker draws one jitter in [0, 0.25) per batch, so a batch's rows stay due together)."""
    return min(base_s * (2 ** max(attempts - 1, 0)), max_s) * (1 + jitter)


class PushWorker:
    """Keep a context broker's copy of Sonae's public entities up to date. Run with :meth:`run`."""

    def __init__(self, pool: asyncpg.Pool, *, broker_url: str, base: str, max_attempts: int = 8,
                 retry_base_s: float = 2.0, retry_max_s: float = 600.0, batch: int = 100, timeout_s: float = 10.0,
                 sweep_s: float = 60.0, debounce_s: float = 0.5, settings: Any = None) -> None:
        self.pool = pool
        self.broker = broker_url.rstrip("/")
        self.base = base
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.batch = batch
        self.timeout_s = timeout_s
        self.sweep_s = sweep_s
        self.debounce_s = debounce_s
        self.settings = settings  # for the CAP profile (cap.*); None: from the database and ``base``
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Any, pool: asyncpg.Pool, **overrides: Any) -> PushWorker:
        options: dict[str, Any] = {"broker_url": settings["ngsi.broker_url"], "base": base_url(settings),
                                   "max_attempts": settings["ngsi.max_attempts"],
                                   "retry_base_s": settings["ngsi.retry_base_ms"] / 1000.0,
                                   "retry_max_s": float(settings["ngsi.retry_max_s"]), "settings": settings}
        options.update(overrides)
        return cls(pool, **options)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    async def run(self) -> None:
        """Listen for changes, sync and deliver until :meth:`stop`. A lost or refused database connection
        (the listener's included) is opened again with backoff (:func:`sonae.retry.keep_connected`,
        ``sonae_connect_failures_total{target="postgres-listen"}``); found: an outage ended the worker."""
        await keep_connected(self._session, target="postgres-listen", stopped=self._stop.is_set)

    async def _session(self, connected: Any) -> None:
        def on_change(*_: Any) -> None:
            self._wake.set()

        lost = asyncio.Event()

        def on_lost(*_: Any) -> None:
            lost.set()
            self._wake.set()

        async with self.pool.acquire() as listener, aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout_s)) as session:
            listener.add_termination_listener(on_lost)
            for channel in CHANNELS:
                await listener.add_listener(channel, on_change)
            connected()
            try:
                while not self._stop.is_set():
                    if lost.is_set():
                        raise ConnectionError("ngsi push worker's listener connection lost")
                    self._wake.clear()
                    try:
                        await self.sync()
                        while await self.deliver(session):
                            pass
                        wait = await self._next_due()
                    except DATABASE_ERRORS as exc:
                        log.warning("ngsi push cycle failed; retrying", extra={"error": str(exc)})
                        wait = 1.0
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait)
                    if not self._stop.is_set():
                        await asyncio.sleep(self.debounce_s)  # gather a burst of changes into one sync
            finally:
                listener.remove_termination_listener(on_lost)
                for channel in CHANNELS:
                    with contextlib.suppress(Exception):
                        await listener.remove_listener(channel, on_change)

    async def _next_due(self) -> float:
        async with self.pool.acquire() as conn:
            due = await conn.fetchval("SELECT min(next_attempt_at) FROM ngsi_push_queue WHERE state = 'queued'")
        if due is None:
            return self.sweep_s
        return min(max((due - datetime.now(UTC)).total_seconds(), 0.0), self.sweep_s)

    async def sync(self) -> int:
        """Queue the public entities that changed, and deletions of those that vanished; returns how many."""
        async with self.pool.acquire() as conn:
            profile = await profile_from_settings(conn, self.settings) if self.settings is not None else None
            current = await store.load(conn, types=E.PUBLIC_TYPES, base=self.base, profile=profile)
            rows = [(e["id"], e["type"], json.dumps(n := E.normalized(e), ensure_ascii=False), digest(n))
                    for e in current]
            async with conn.transaction():
                queued = await conn.fetch(
                    """INSERT INTO ngsi_push_queue AS q (entity_id, entity_type, op, entity, digest)
                       SELECT t.id, t.kind, 'upsert', t.entity, t.digest
                       FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::text[]) AS t(id, kind, entity, digest)
                       ON CONFLICT (entity_id) DO UPDATE
                         SET op = 'upsert', entity = EXCLUDED.entity, digest = EXCLUDED.digest, state = 'queued',
                             attempts = 0, next_attempt_at = now(), changed_at = now(), last_error = NULL
                         WHERE q.digest <> EXCLUDED.digest
                       RETURNING entity_id""",
                    [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
                gone = await conn.fetch(
                    """UPDATE ngsi_push_queue SET op = 'delete', entity = NULL, digest = 'deleted', state = 'queued',
                              attempts = 0, next_attempt_at = now(), changed_at = now(), last_error = NULL
                       WHERE op = 'upsert' AND NOT (entity_id = ANY ($1::text[])) RETURNING entity_id""",
                    [r[0] for r in rows])
            DEAD.set(await conn.fetchval("SELECT count(*) FROM ngsi_push_queue WHERE state = 'dead'"))
        return len(queued) + len(gone)

    async def deliver(self, session: aiohttp.ClientSession) -> int:
        """Send one batch of due rows (upserts, then deletes); returns how many rows were tried."""
        tried = 0
        for op in ("upsert", "delete"):
            async with self.pool.acquire() as conn, conn.transaction():
                due = await conn.fetch(
                    """SELECT entity_id, entity, attempts FROM ngsi_push_queue
                       WHERE state = 'queued' AND op = $1 AND next_attempt_at <= now()
                       ORDER BY next_attempt_at, entity_id LIMIT $2 FOR UPDATE SKIP LOCKED""", op, self.batch)
                if not due:
                    continue
                tried += len(due)
                ok, failed, status, error = await self._send(session, op, due)
                now = datetime.now(UTC)
                jitter = random.random() / 4
                for row in due:
                    eid = row["entity_id"]
                    if eid in ok:
                        await conn.execute(
                            """UPDATE ngsi_push_queue SET state = 'sent', sent_at = $2, attempts = attempts + 1,
                                      last_status = $3, last_error = NULL WHERE entity_id = $1""", eid, now, status)
                        PUSHED.labels(op).inc()
                        continue
                    permanent, reason = failed.get(eid, (False, error))
                    attempts = row["attempts"] + 1
                    dead = permanent or attempts >= self.max_attempts
                    next_at = now + timedelta(seconds=backoff(attempts, base_s=self.retry_base_s,
                                                              max_s=self.retry_max_s, jitter=jitter))
                    await conn.execute(
                        """UPDATE ngsi_push_queue SET state = $2, attempts = $3, next_attempt_at = $4,
                                  last_status = $5, last_error = $6 WHERE entity_id = $1""",
                        eid, "dead" if dead else "queued", attempts, next_at, status, (reason or "")[:500])
                    FAILED.labels("dead" if dead else "retry").inc()
                    if dead:
                        log.warning("ngsi push dead-lettered", extra={"entity_id": eid, "status": status,
                                                                      "error": (reason or "")[:200]})
        return tried

    async def _send(self, session: aiohttp.ClientSession, op: str, due: list[asyncpg.Record],
                    ) -> tuple[set[str], dict[str, tuple[bool, str]], int | None, str]:
        """POST one batch; returns (ids done, {id: (permanent, reason)} failed, HTTP status, batch error)."""
        ids = [r["entity_id"] for r in due]
        url = f"{self.broker}/ngsi-ld/v1/entityOperations/{op}"
        if op == "upsert":
            context = ctx.context_url(self.base)
            body = [{**json.loads(r["entity"]), "@context": context} for r in due]
            headers = {"Content-Type": "application/ld+json", "Accept": "application/json"}
        else:
            body, headers = ids, {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            async with session.post(url, data=json.dumps(body, ensure_ascii=False).encode(), headers=headers) as resp:
                status = resp.status
                text = await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            return set(), {}, None, f"{type(exc).__name__}: {exc}"[:300]
        if status in (200, 201, 204):
            return set(ids), {}, status, ""
        if status == 207:
            try:
                result = json.loads(text)
                errors = {e["entityId"]: e.get("error", {}) for e in result.get("errors", [])}
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # (nested too deep)
                return set(), {}, status, "unreadable 207 body"
            failed = {eid: (op == "delete" and str(err.get("type", "")).endswith("ResourceNotFound"), json.dumps(err))
                      for eid, err in errors.items()}
            done = {eid for eid, (gone, _) in failed.items() if gone}  # deleting what is not there is done
            return (set(ids) - set(failed)) | done, {k: v for k, v in failed.items() if k not in done}, status, ""
        if op == "delete" and status == 404:
            return set(ids), {}, status, ""
        permanent = 400 <= status < 500 and status not in RETRYABLE
        return set(), {eid: (permanent, f"HTTP {status}: {text[:200]}") for eid in ids}, status, f"HTTP {status}"


async def run_push_worker(settings: Any, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Run the push worker until ``stop`` is set, when ``ngsi.broker_url`` is configured."""
    if not settings["ngsi.broker_url"]:
        return
    worker = PushWorker.from_settings(settings, pool)
    task = asyncio.create_task(worker.run())
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        worker.stop()
        stopper.cancel()
        await task
