"""sonae.eventloop: the lag the loop's timer sees, and start-up objects kept out of the garbage collector's way."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time

import pytest

from sonae.eventloop import lag_watched, watch_lag

STALL_S = 0.3


def _compute_for(seconds: float) -> None:
    """The stall under test: a handler computing without yielding to the loop."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_stalled_loop_is_seen_as_lag() -> None:
    seen: list[float] = []
    watching = asyncio.Event()
    stalled = asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        watching.set()
        if lag >= STALL_S * 0.9:
            stalled.set()

    async with lag_watched(interval_s=0.01, observe=observe):
        await asyncio.wait_for(watching.wait(), 30)
        _compute_for(STALL_S)
        await asyncio.wait_for(stalled.wait(), 30)
    assert all(lag >= 0 for lag in seen)
    # the timer woke late once, by about the stall: the lag is not summed into later wake-ups
    assert sum(lag >= STALL_S * 0.9 for lag in seen) == 1, seen


async def test_the_watch_ends_with_its_block() -> None:
    async with lag_watched(interval_s=0.01, observe=lambda lag: None):
        assert any(t.get_name() == "event loop lag" for t in asyncio.all_tasks())
    assert not any(t.get_name() == "event loop lag" for t in asyncio.all_tasks())


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
async def test_a_non_positive_interval_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        await watch_lag(interval_s=interval, observe=lambda lag: None)


def test_start_up_objects_are_frozen_and_garbage_is_not() -> None:
    # its own interpreter: freezing is for the whole process
    script = textwrap.dedent("""
        import gc, weakref
        from sonae.eventloop import freeze_long_lived

        class Node:
            pass

        kept = [Node() for _ in range(1000)]   # built at start-up, used for the process's life
        a, b = Node(), Node()
        a.other, b.other = b, a                # a reference cycle only the collector frees
        gone = weakref.ref(a)
        del a, b
        frozen = freeze_long_lived()
        print(frozen >= len(kept), gone() is None, any(o is kept for o in gc.get_objects()))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    # frozen, the cycle collected first (not kept forever), and the collector no longer visits what is kept
    assert out == ["True", "True", "False"], out
