"""An event hub per API process: LISTEN on a PostgreSQL channel and fan changes out to live clients.

Generic on purpose: a hub has a channel and a *loader* that turns "something changed" into events by
reading the database after the last position it delivered (NOTIFY only says "look"; the payload is not
trusted to carry everything, and nothing is lost if notifications are merged or a reconnect happens).
Alerts use it today (``sonae_alerts`` → ``alert_events``); route-safety events can use another hub.

A loader must read in an order in which nothing can appear *behind* a position already delivered:
for alerts that is ``alert_events.pos``, given at commit time (see :func:`alerting.store.events_after`),
not the insert-time ``id`` — two transactions can commit their ids out of order, and a reader
following ``id > last`` would skip the later-committed lower id for good. The SSE ``id:`` of an alert
event (and so ``Last-Event-ID``) is that position.

* one dedicated connection per hub (held from the pool), re-established with backoff when lost; after a
  reconnect the loader catches up from the last delivered position;
* each subscriber has a bounded queue; a client too slow to keep up is dropped (its queue is not
  allowed to grow), and it can resume with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import Gauge

from alerting.store import NAMES_CHANGED
from api.context import POOL
from sonae.retry import keep_connected

log = logging.getLogger("sonae.api.events")

SSE_CLIENTS = Gauge("sonae_sse_clients", "Connected Server-Sent Events clients of this process")


@dataclass(frozen=True)
class Event:
    id: int
    type: str
    data: str  # JSON text, as the public may see it
    meta: dict[str, Any] = field(default_factory=dict)  # for filtering (exercise, municipality, audience…)
    staff_data: str | None = None  # JSON text with staff identities and notes, for logged-in staff only

    def encode(self, *, staff: bool = False) -> bytes:
        # id 0: a transient event (route safety) that is not replayed, so it carries no id
        data = self.staff_data if staff and self.staff_data is not None else self.data
        lines = ([f"id: {self.id}"] if self.id else []) + [f"event: {self.type}"]
        lines += [f"data: {part}" for part in data.splitlines() or [""]]
        return ("\n".join(lines) + "\n\n").encode()


Loader = Callable[[asyncpg.Connection, int], Awaitable[list[Event]]]


class Subscription:
    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=size)
        self.dropped = False
        self.woken = asyncio.Event()

    def close(self) -> None:
        """End the subscription now: a waiting reader wakes up and sees ``dropped``."""
        self.dropped = True
        self.woken.set()
        with contextlib.suppress(asyncio.QueueEmpty):
            if self.queue.full():
                self.queue.get_nowait()
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(Event(0, "closed", "{}"))

    def offer(self, event: Event) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
        self.woken.set()


#: a notification payload meaning "the state readers see changed, but there is no event to deliver": the
#: names an alert is shown with changed (``alerting/migrations/025_names_changed.sql``); it changes
#: :attr:`EventHub.version` so that cached answers are made again
STATE_ONLY = NAMES_CHANGED


class EventHub:
    """LISTEN on ``channel``; on each notification load events after the last id and fan them out."""

    def __init__(self, pool: asyncpg.Pool, channel: str, loader: Loader, *,
                 queue_size: int = 256, reconnect_max_s: float = 5.0) -> None:
        self.pool = pool
        self.channel = channel
        self.loader = loader
        self.queue_size = queue_size
        self.reconnect_max_s = reconnect_max_s
        self.last_id = 0
        self.changes = 0  # grows with every delivered event
        self.connects = 0  # grows with every (re)connection: events may have been missed before it
        self.connected = asyncio.Event()
        self._subs: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self, start_id: int | None = None) -> None:
        if start_id is not None:
            self.last_id = start_id
        self._task = asyncio.create_task(self._run(), name=f"event-hub-{self.channel}")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for sub in list(self._subs):
            sub.close()

    def subscribe(self) -> Subscription:
        sub = Subscription(self.queue_size)
        self._subs.add(sub)
        SSE_CLIENTS.inc()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.discard(sub)
            SSE_CLIENTS.dec()

    def publish_local(self, event: Event) -> None:
        """Offer a transient event (id 0) to this process's subscribers."""
        for sub in list(self._subs):
            sub.offer(event)

    @property
    def version(self) -> tuple[int, int] | None:
        """The version of the state this hub follows, for readers' caches (:mod:`api.answers`): it changes
        with every delivered event, every change of the names alerts are shown with, and every reconnection, so an answer read before a change is never
        served after the hub has delivered it. None while disconnected (a change could go unseen)."""
        return (self.connects, self.changes) if self.connected.is_set() else None

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    async def _run(self) -> None:
        await keep_connected(self._listen_once, target="postgres-listen", stopped=lambda: self._stopping,
                             cap=self.reconnect_max_s)

    async def _listen_once(self, connected: Callable[[], None]) -> None:
        async with self.pool.acquire() as conn:
            lost = asyncio.Event()

            def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
                if payload == STATE_ONLY:  # the state changed without an event (see STATE_ONLY)
                    self.changes += 1
                self._wake.set()

            def on_lost(*_: Any, lost: asyncio.Event = lost) -> None:
                lost.set()
                self._wake.set()

            conn.add_termination_listener(on_lost)
            await conn.add_listener(self.channel, on_notify)
            self.connects += 1  # before connected: no reader keys on the old version once it is set
            self.connected.set()
            connected()
            self._wake.set()  # catch up on anything missed while disconnected
            try:
                while not self._stopping and not lost.is_set():
                    await self._wake.wait()
                    self._wake.clear()
                    if lost.is_set() or self._stopping:
                        break
                    await self._deliver(conn)
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await conn.remove_listener(self.channel, on_notify)
            if lost.is_set():
                raise ConnectionError(f"listen connection of {self.channel} lost")

    async def _deliver(self, conn: asyncpg.Connection) -> None:
        while True:
            events = await self.loader(conn, self.last_id)
            self.changes += len(events)
            for event in events:
                self.last_id = max(self.last_id, event.id)
                for sub in list(self._subs):
                    sub.offer(event)
            if len(events) < 500:
                return


# -- alerts --------------------------------------------------------------------------------------
ALERT_HUB = web.AppKey("alert_hub", EventHub)


async def load_alert_events(conn: asyncpg.Connection, last_id: int, *, limit: int = 500) -> list[Event]:
    import json

    from alerting import store
    from api.authorization import public_view

    def dumps(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    rows = await store.events_after(conn, last_id, limit=limit)
    out = []
    for r in rows:
        full = store.event_json(r)
        out.append(Event(r["event_pos"], "alert", dumps(public_view(full)),
                         {"exercise": r["exercise"], "municipality_code": r["municipality_code"],
                          "old_municipality_code": r["event_old_municipality_code"],
                          # the audience at the event, and who it is for (an ending reaches the public told)
                          "audience": r["audience"], "told_audience": r["told_audience"]},
                         staff_data=dumps(full)))
    return out


async def start_alert_hub(app: web.Application) -> None:
    pool = app[POOL]
    from alerting import store

    async with pool.acquire() as conn:
        start = await store.last_position(conn)
    hub = EventHub(pool, "sonae_alerts", load_alert_events)
    await hub.start(start)
    app[ALERT_HUB] = hub


async def stop_alert_hub(app: web.Application) -> None:
    hub = app.get(ALERT_HUB)
    if hub is not None:
        await hub.stop()


# -- route safety ----------------------------------------------------------------------------------
HAZARD_FORWARDER = web.AppKey("hazard_forwarder", asyncio.Task)


async def start_hazard_forwarder(app: web.Application) -> None:
    """Pass this process's hazard-state changes (the evacuation engine swapped in new routes) to its SSE
    clients as ``event: hazard_state``: a page then asks for its route again."""
    from api.evacuation import EVAC

    service = app.get(EVAC)
    hub = app.get(ALERT_HUB)
    if service is None or hub is None:
        return
    queue = service.subscribe(maxsize=256)

    async def forward() -> None:
        try:
            while True:
                change = await queue.get()
                hub.publish_local(Event(0, "hazard_state", json.dumps(change, ensure_ascii=False, default=str)))
        finally:
            service.unsubscribe(queue)

    app[HAZARD_FORWARDER] = asyncio.create_task(forward(), name="hazard-forwarder")


async def _stop_forwarder(app: web.Application, key: web.AppKey[asyncio.Task[None]]) -> None:
    """Cancel the forwarder task kept under ``key`` (if started) and wait for it to end."""
    task = app.get(key)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stop_hazard_forwarder(app: web.Application) -> None:
    await _stop_forwarder(app, HAZARD_FORWARDER)


# -- official information (jma) ---------------------------------------------------------------------
OFFICIAL_HUB = web.AppKey("official_hub", EventHub)
OFFICIAL_FORWARDER = web.AppKey("official_forwarder", asyncio.Task)


async def load_official_events(conn: asyncpg.Connection, last_id: int, *, limit: int = 500) -> list[Event]:
    """Telegrams applied after ``last_id`` (``jma_telegrams.id``), as ``event: official`` payloads."""
    from jma.store import applied_after

    return [Event(row["id"], "official", json.dumps(row, ensure_ascii=False, default=str, separators=(",", ":")))
            for row in await applied_after(conn, last_id, limit=limit)]


async def start_official_forwarder(app: web.Application) -> None:
    """Pass applied JMA telegrams (NOTIFY ``sonae_official``) to SSE clients as transient
    ``event: official`` events (no id: they are not alert positions); a page then asks for its level again."""
    from jma.store import last_telegram_id

    hub = app.get(ALERT_HUB)
    if hub is None:
        return
    pool = app[POOL]
    async with pool.acquire() as conn:
        start = await last_telegram_id(conn)
    official = EventHub(pool, "sonae_official", load_official_events)
    await official.start(start)
    app[OFFICIAL_HUB] = official
    sub = official.subscribe()

    async def forward() -> None:
        try:
            while True:
                event = await sub.queue.get()
                if event.type == "closed":
                    return
                hub.publish_local(Event(0, "official", event.data))
        finally:
            official.unsubscribe(sub)

    app[OFFICIAL_FORWARDER] = asyncio.create_task(forward(), name="official-forwarder")


async def stop_official_forwarder(app: web.Application) -> None:
    await _stop_forwarder(app, OFFICIAL_FORWARDER)
    official = app.get(OFFICIAL_HUB)
    if official is not None:
        await official.stop()
