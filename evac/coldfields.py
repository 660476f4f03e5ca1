"""A bounded budget for cold route fields: computations a request causes, not configuration.

A route field (profile, hazard or hazard set, exercise) that is neither configured (``evac.warm``) nor
computed at the current hazard state is *cold*: the first request for it costs a full nearest-shelter
search (issue 21: ~0.5 s of CPU at 1M nodes, ~2 s at 3M). Any anonymous request may name any of the
~1,530 keys (3 profiles × 255 hazard sets × real/exercise), so without a bound one script cycling
through them makes the server search without end, and evicts the on-demand fields residents use.

:class:`ColdFieldBudget` (used by :meth:`evac.service.EvacService.ensure_field`, so every endpoint that
needs a field shares it):

* requests for a key being computed (or waiting to be) join that computation (outcome ``shared``); they
  use no budget; a computation that has ended is never joined (a request after it is a new one);
* a new computation is charged to its client (an address, :func:`sonae.ratelimit.client_network`): at
  most ``per_client_per_minute`` a minute, in a token bucket whose burst is that number; beyond it
  :class:`ColdFieldRefused` with ``reason`` ``client`` (outcome ``refused_client``);
* and to the process: at most ``per_minute`` a minute (same kind of bucket), one at a time (the engine
  computes one field of a state at a time anyway: ``_Snapshot.lock``), with at most ``waiting`` waiting
  for their turn; beyond either, ``reason`` ``busy`` (outcome ``refused_busy``). Waiting computations
  would each hold an executor thread blocked on the engine's lock: the bound keeps the executor free for
  the requests that need no search;
* a refused request uses no token of either bucket.

Callers decide what is cold: warm keys and computed fields never come here, so they are never refused.
Counts by outcome are in :attr:`ColdFieldBudget.counts` (plain integers: ``evac`` does not know
Prometheus; ``api.evacmetrics`` exports them as ``sonae_evac_cold_fields_total{outcome}``). Client
addresses are held in memory only (a bounded number, for about a minute of use), never logged.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from sonae.ratelimit import TokenBuckets, client_network

#: every outcome counted, in the order metrics list them
OUTCOMES = ("computed", "shared", "refused_client", "refused_busy")
#: the longest Retry-After given (s): a refusal never asks a resident to wait longer than this
MAX_RETRY_AFTER_S = 60
_PROCESS = ""  # the process bucket's one key
T = TypeVar("T")


class ColdFieldRefused(Exception):
    """A cold field was not computed: ``reason`` ``client`` (this client's budget is used up) or ``busy``
    (the process's); ``retry_after_s`` (whole seconds, 1 to :data:`MAX_RETRY_AFTER_S`) until it may be."""

    def __init__(self, reason: str, retry_after_s: float) -> None:
        super().__init__(f"cold route field refused ({reason}); retry after {retry_after_s:.0f} s")
        self.reason = reason
        self.retry_after_s = int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(retry_after_s))))


class ColdFieldBudget:
    """Admission of cold field computations (see the module's docstring); one per engine's service.

    ``per_client_per_minute``, ``per_minute``: 0 turns that bound off. ``waiting``: computations that may
    wait for the running one (0: none wait; a second distinct key while one runs is refused).
    """

    def __init__(self, *, per_client_per_minute: int, per_minute: int, waiting: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.per_client_per_minute = int(per_client_per_minute)
        self.per_minute = int(per_minute)
        self.waiting = int(waiting)
        self.clock = clock
        self.counts: Counter[str] = Counter({o: 0 for o in OUTCOMES})
        self._clients = (TokenBuckets(per_minute=self.per_client_per_minute, burst=self.per_client_per_minute)
                         if self.per_client_per_minute > 0 else None)
        self._process = (TokenBuckets(per_minute=self.per_minute, burst=self.per_minute)
                         if self.per_minute > 0 else None)
        self._inflight: dict[Hashable, asyncio.Future[Any]] = {}
        self._turn = asyncio.Lock()  # one computation runs at a time; the others in _inflight wait for it
        self._last_s = 1.0  # how long the last computation took (s): the estimate of a wait's length

    @property
    def last_s(self) -> float:
        """How long the last computation took (s; 0.05 at least, 1 before any): what a wait is estimated by."""
        return self._last_s

    def in_flight(self, key: Hashable) -> bool:
        """Whether ``key`` is being computed or waiting to be."""
        return key in self._inflight

    async def run(self, key: Hashable, client: str | None, compute: Callable[[], Awaitable[T]]) -> T:
        """Compute ``key`` with ``compute`` within the budget, or join its computation in flight; returns what
        ``compute`` returned (the same to every request sharing it).

        ``client``: who asked (None: no per-client bound, e.g. the service itself). Raises
        :class:`ColdFieldRefused`, or what ``compute`` raised (to every request sharing it). A request
        cancelled while it waits does not cancel the computation others may share.
        """
        fut = self._inflight.get(key)
        if fut is not None and fut.done():  # (only a task cancelled before its first step: see _compute)
            self._forget(key, fut)
            fut = None
        if fut is not None:
            self.counts["shared"] += 1
            result: T = await asyncio.shield(fut)
            return result
        self._admit(client)
        self.counts["computed"] += 1
        task = asyncio.ensure_future(self._compute(key, compute))
        self._inflight[key] = task

        def done(t: asyncio.Future[T], key: Hashable = key) -> None:
            self._forget(key, t)
            if not t.cancelled():
                t.exception()  # retrieved: a failure nobody waits for any more is not reported twice

        task.add_done_callback(done)
        return await asyncio.shield(task)

    def _forget(self, key: Hashable, fut: asyncio.Future[Any]) -> None:
        """Take ``fut`` out of the computations in flight (not a later computation of the same key)."""
        if self._inflight.get(key) is fut:
            del self._inflight[key]

    def _admit(self, client: str | None) -> None:
        """Take a token of the client's and of the process's bucket, or raise without taking any."""
        now = self.clock()
        client = client_network(client) if client is not None else None
        if self._clients is not None and client is not None:
            wait = self._clients.wait(client, now)
            if wait > 0:
                self.counts["refused_client"] += 1
                raise ColdFieldRefused("client", wait)
        if len(self._inflight) >= 1 + self.waiting:  # one running, ``waiting`` waiting
            self.counts["refused_busy"] += 1
            raise ColdFieldRefused("busy", len(self._inflight) * self._last_s)
        if self._process is not None:
            wait = self._process.take(_PROCESS, now)
            if wait > 0:
                self.counts["refused_busy"] += 1
                raise ColdFieldRefused("busy", wait)
        if self._clients is not None and client is not None:
            self._clients.take(client, now)

    async def _compute(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """Run ``compute`` in its turn; the computation leaves :attr:`_inflight` in the task itself, before the
        task completes. Found: left to the task's done-callback (``call_soon``, a turn of the loop later), a
        request running in between joined the finished computation: it got the previous computation's failure
        (or result) instead of being admitted anew, and a request for another key was refused ``busy``."""
        try:
            async with self._turn:
                t0 = self.clock()
                result = await compute()
                self._last_s = max(0.05, self.clock() - t0)
                return result
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._forget(key, task)
