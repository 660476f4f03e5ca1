"""A service's event loop kept responsive, and seen to be: its lag in Prometheus, and the garbage
collector kept off the objects built at start-up.

Ground layer: :func:`lag_watched` wraps the long-running commands of ``app.cli`` (``run``, ``api``,
``ingest``); ``api.server.serve`` calls :func:`freeze_long_lived` once the road network is loaded.

* **Lag** (:func:`watch_lag`, :func:`lag_watched`): a timer asks to wake every :data:`INTERVAL_S`; how much
  later than that it woke is observed in ``sonae_event_loop_lag_seconds`` (a histogram, seconds,
  :data:`LAG_BUCKETS`). A loop that is late delays every request, event-stream heartbeat and health check
  of its process at once, whatever the cause (a long computation in a handler, a large garbage
  collection, a blocking call). Issue #21 sets the bar: p99 at most 20 ms, also during a recompute.
* **Garbage collection** (:func:`freeze_long_lived`): CPython's full collection visits every object it
  tracks, all at once. The API process builds some 160,000 at start-up that live as long as it does
  (the road network's Python side, compiled OpenAPI schemas, modules), and each full collection visited
  them all. Measured on the development machine with ``sonae api`` on the drill town during a minute of
  routes at random positions (``gc.callbacks`` timing each collection): objects tracked 190,462, one full
  collection 349 ms; once they are moved to the permanent generation after start-up (:func:`gc.freeze`,
  as the Python documentation advises for this case), 48,185 tracked and the full collection 101 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Callable

from prometheus_client import Gauge, Histogram

#: seconds between the lag timer's wake-ups (20 a second: too few to cost anything, enough for a p99)
INTERVAL_S = 0.05

#: upper bounds (seconds) of the lag histogram's buckets (``+Inf`` is added); 0.02 is #21's p99 bar
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

EVENT_LOOP_LAG = Histogram(
    "sonae_event_loop_lag_seconds",
    f"How much later than asked this process's event loop woke a timer of {INTERVAL_S} s: while it is late, "
    "every request, event-stream heartbeat and health check of the process waits",
    buckets=LAG_BUCKETS)

FROZEN_OBJECTS = Gauge(
    "sonae_gc_frozen_objects",
    "Objects this process moved out of the garbage collector's way once start-up was over (0: not yet)")


async def watch_lag(*, interval_s: float = INTERVAL_S,
                    observe: Callable[[float], None] = EVENT_LOOP_LAG.observe) -> None:
    """Observe the running loop's lag until cancelled: every ``interval_s`` seconds, ``observe(lag)`` with
    how many seconds later than asked the timer woke (0 or more).

    Raises
    ------
    ValueError
        ``interval_s`` is not positive.
    """
    if not interval_s > 0:
        raise ValueError(f"interval_s must be a positive number of seconds, not {interval_s!r}")
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - asked))


@contextlib.asynccontextmanager
async def lag_watched(*, interval_s: float = INTERVAL_S,
                      observe: Callable[[float], None] = EVENT_LOOP_LAG.observe) -> AsyncIterator[None]:
    """:func:`watch_lag` as a task for the duration of the ``async with`` block."""
    task = asyncio.create_task(watch_lag(interval_s=interval_s, observe=observe), name="event loop lag")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def freeze_long_lived() -> int:
    """Collect the garbage there is, then move every object still alive into the permanent generation
    (:func:`gc.freeze`), which collections never visit; call it once start-up is over. Returns how many
    objects are frozen (:func:`gc.get_freeze_count`), also
    exported as ``sonae_gc_frozen_objects``.

    What is frozen is still freed by reference counting when it is no longer used; only a reference cycle
    among frozen objects would stay (for instance the first hazard state's, once replaced), which bounds
    what can be kept to what existed at the call, once.
    """
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    FROZEN_OBJECTS.set(frozen)
    return frozen
