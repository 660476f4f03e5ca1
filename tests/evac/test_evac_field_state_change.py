"""A route field asked for is computed at the state the answer is made at: a hazard change landing while it is
computed (off the event loop) made ``EvacService.ensure_field`` return with no field at the new state, and the
route handler then computed it on the event loop (``route_body`` → ``Engine.field``: a full search, 0.5-2 s
at scale, stalling every request and event stream, outside the cold-field budget)."""

from __future__ import annotations

import threading
from typing import Any

from evac.service import EvacService
from sonae.config import load_settings

KEY = ("walk", "flood,landslide", False)


class _Engine:
    """Fields by (state version, key); the first computation's state is replaced while it runs."""

    warm: frozenset[Any] = frozenset()

    def __init__(self) -> None:
        self.version = 1
        self.fields: set[tuple[int, tuple[str, str, bool]]] = set()
        self.threads: list[str] = []

    def has_field(self, *key: Any) -> bool:
        return (self.version, key) in self.fields

    def field(self, *key: Any) -> None:
        self.threads.append(threading.current_thread().name)
        self.fields.add((self.version, key))
        if len(self.threads) == 1:
            self.version += 1  # a hazard change landed while this was computed


async def test_a_state_change_during_the_computation_is_followed_off_the_event_loop() -> None:
    service = EvacService(None, load_settings(environ={"SONAE_EVAC_SEARCH_WORKER": "false"}))  # type: ignore[arg-type]
    engine = _Engine()
    service.engine = engine  # type: ignore[assignment]
    await service.ensure_field(KEY, client="192.0.2.1")
    assert engine.has_field(*KEY), engine.fields
    assert len(engine.threads) == 2 and threading.main_thread().name not in engine.threads
    # charged once: the change was not the client's doing
    assert service.cold.counts["computed"] == 2
    assert service.cold._clients is not None
    assert service.cold._clients._buckets["192.0.2.1"][0] == service.cold.per_client_per_minute - 1
