"""Running one long-lived worker coroutine until it ends or a stop event is set.

Ground layer: used by the domain workers (alerting, notify) and by the process runner.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


async def run_until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event,
                            on_stop: Callable[[], None]) -> None:
    """Run ``work`` until it ends (its error raised) or ``stop`` is set; then ``on_stop()`` and wait."""
    task = asyncio.create_task(work)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
    finally:
        on_stop()
        stopper.cancel()
        await asyncio.gather(task, stopper, return_exceptions=True)
