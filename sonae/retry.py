"""Connect with retry: the one way every outgoing connection of Sonae is (re)established.

The MQTT client (first connect and reconnects), the rules worker's MQTT publisher, the database
LISTEN connections and the SMTP, webhook and push senders all use :func:`connect_with_retry` or
:class:`Backoff` and count each failed attempt in ``sonae_connect_failures_total{target}``, so an
unreachable service at start-up is retried like one that went away later (issue #15, item 5).

Delays double from ``base`` up to ``cap`` with ±20 % jitter (so a fleet of processes does not
reconnect in lock-step after a broker restart), as in the AWS Architecture Blog's "Exponential
Backoff And Jitter" (2015).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter

log = logging.getLogger("sonae.retry")

T = TypeVar("T")

CONNECT_FAILURES = Counter(
    "sonae_connect_failures_total",
    "Failed attempts to connect to (or use) an outside service, retried with backoff; by target "
    "(mqtt, mqtt-ingest, mqtt-alerts, mqtt-simulator, postgres, postgres-listen, smtp, webhook, push)",
    ["target"])


def count_failure(target: str) -> None:
    """Count one failed connection attempt to ``target`` (a short, bounded label)."""
    CONNECT_FAILURES.labels(target).inc()


class Backoff:
    """Exponential backoff with jitter: ``base``, 2×``base``, … up to ``cap`` seconds.

    Parameters
    ----------
    base
        First delay in seconds.
    cap
        Longest delay in seconds.
    """

    def __init__(self, *, base: float = 0.2, cap: float = 10.0) -> None:
        self.base = base
        self.cap = cap
        self._attempt = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (and double the one after)."""
        self._attempt += 1
        return backoff_delay(self._attempt, base=self.base, cap=self.cap)

    def reset(self) -> None:
        """Start again from ``base`` (after a success)."""
        self._attempt = 0


async def connect_with_retry(
    connect: Callable[[], Awaitable[T]],
    *,
    target: str,
    stop: asyncio.Event | None = None,
    base: float = 0.2,
    cap: float = 10.0,
    retry_on: tuple[type[BaseException], ...] = (Exception,),
) -> T | None:
    """Call ``connect`` until it succeeds, waiting a growing delay after each failure.

    Parameters
    ----------
    connect
        Makes one attempt; returns the connection (or anything) on success.
    target
        Label of ``sonae_connect_failures_total`` and of the log lines (``mqtt``, ``smtp`` …).
    stop
        When set, give up and return ``None`` (checked between attempts and during the wait).
    base, cap
        Backoff delays in seconds (see :class:`Backoff`).
    retry_on
        Exceptions that mean "try again"; anything else propagates.

    Returns
    -------
    The result of the first successful attempt, or ``None`` when ``stop`` was set first.
    """
    backoff = Backoff(base=base, cap=cap)
    attempt = 0
    while stop is None or not stop.is_set():
        attempt += 1
        try:
            return await connect()
        except asyncio.CancelledError:
            raise
        except retry_on as exc:
            count_failure(target)
            delay = backoff.next_delay()
            log.warning("cannot connect to %s; retrying", target,
                        extra={"target": target, "attempt": attempt, "error": str(exc)[:300],
                               "retry_s": round(delay, 2)})
        if stop is None:
            await asyncio.sleep(delay)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
    return None


def backoff_delay(attempt: int, *, base: float, cap: float) -> float:
    """The delay before retry number ``attempt`` (1 = after the first failure): ``base`` doubling up to
    ``cap`` seconds, ±20 % jitter. Used where the attempt count is stored (the delivery queue)."""
    return min(cap, base * 2 ** max(0, attempt - 1)) * random.uniform(0.8, 1.2)


async def keep_connected(
    session: Callable[[Callable[[], None]], Awaitable[None]],
    *,
    target: str,
    stopped: Callable[[], bool],
    base: float = 0.1,
    cap: float = 5.0,
) -> None:
    """Run ``session`` again and again until ``stopped()``: a long-lived connection (a LISTEN).

    ``session(connected)`` opens the connection, calls ``connected()`` once it is established (which
    resets the backoff), and returns or raises when the connection is lost. Each failure — to open,
    or a loss — is counted in ``sonae_connect_failures_total{target}`` and followed by a growing
    delay, from the very first attempt.
    """
    backoff = Backoff(base=base, cap=cap)
    while not stopped():
        try:
            await session(backoff.reset)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if stopped():
                return
            count_failure(target)
            delay = backoff.next_delay()
            log.warning("%s connection lost or refused; reconnecting", target,
                        extra={"target": target, "error": str(exc)[:300], "retry_s": round(delay, 2)})
            await asyncio.sleep(delay)
