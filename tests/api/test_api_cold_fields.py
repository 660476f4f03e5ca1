"""The budget of cold route fields (evac/coldfields.py) through the route endpoints, on a real database and a
generated drill town, the engine inside the API process as in production (search worker on).

A *cold* field is one neither configured (``evac.warm``) nor computed: any anonymous request may name one of
~1,530 keys (profiles × hazard sets × real/exercise), each a full search. Found: a client cycling through
hazard sets caused one full computation per request without bound. Clients are told apart by
X-Forwarded-For (``api.trust_forwarded_for`` on, as behind Sonae's own proxy).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from api.evacuation import EVAC
from evac import store
from evac.drilltown import DrillTown, generate
from evac.engine import Engine, FieldKey
from evac.service import FIELD_TRIES, EvacService
from sonae.config import Settings
from tests.api_support import start_client
from tests.ingest_support import wait_until

WAIT_S = 180.0
#: hazard sets none of which is warm (evac.warm is walk:flood), each a field of its own
SETS = ("flood,landslide", "flood,earthquake", "landslide,earthquake", "flood,tsunami", "earthquake,tsunami")


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> DrillTown:
    return generate(tmp_path_factory.mktemp("town"), rows=12, cols=12, seed=5)


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("evac-state")


@pytest.fixture
async def seeded(pool: asyncpg.Pool, town: DrillTown) -> asyncpg.Pool:
    async with pool.acquire() as conn:
        await store.import_shelters_file(conn, town.shelters, actor="test")
        await store.import_hazard_file(conn, town.hazards, actor="test")
    return pool


@pytest.fixture
async def served(seeded: asyncpg.Pool, settings: Settings, town: DrillTown,
                 shared_state: Path) -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []

    async def serve(**budget: int) -> TestClient:
        s = settings.replace(evac__network=str(town.osm), state__dir=str(shared_state),
                             api__trust_forwarded_for=True, **{f"evac__cold_fields_{k}": v for k, v in budget.items()})
        c = await start_client(create_app(pool=seeded, settings=s))
        clients.append(c)
        await asyncio.wait_for(c.app[EVAC].loaded.wait(), WAIT_S)
        return c

    yield serve
    for c in clients:
        await c.close()


def _center(service: EvacService) -> dict[str, str]:
    w, s, e, n = service.map.bounds  # type: ignore[union-attr]
    return {"lat": f"{(s + n) / 2 + 0.00011:.5f}", "lon": f"{(w + e) / 2 + 0.00017:.5f}"}


async def _get(c: TestClient, client: str, path: str = "/api/v1/route", **params: str) -> tuple[int, Any, Any]:
    resp = await c.get(path, params={**_center(c.app[EVAC]), **params}, headers={"X-Forwarded-For": client})
    return resp.status, resp.headers, await resp.json(content_type=None)


def _busy(status: int, headers: Any, body: Any, *, code: int, lang: str, words: str) -> None:
    """A refusal: ``code``, Retry-After, a problem whose detail is the request's language's guidance."""
    assert status == code, body
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == code and body["status_code"] == "route_busy"
    assert set(body["guidance"]) == {"ja", "en", "ja-easy"}
    assert body["detail"] == body["guidance"][lang] and words in body["detail"]
    assert "lat" not in body and "37." not in str(body)  # the position is never echoed


async def test_a_client_cycling_hazard_sets_gets_429_after_its_budget_others_and_warm_keys_do_not(
        served: Callable[..., Any]) -> None:
    c = await served(per_client_per_minute=3, per_minute=0)
    service = c.app[EVAC]
    script, resident = "203.0.113.7", "198.51.100.20"
    for hazard in SETS[:3]:
        status, _, body = await _get(c, script, hazard=hazard)
        assert status == 200, body
    status, headers, body = await _get(c, script, hazard=SETS[3], lang="en")
    _busy(status, headers, body, code=429, lang="en", words="flood and tsunami")
    assert "single hazard" in body["detail"]
    status, headers, body = await _get(c, script, hazard=SETS[4], lang="ja-easy")
    _busy(status, headers, body, code=429, lang="ja-easy", words="こんで います")
    status, headers, body = await _get(c, script, "/api/v1/shelters/nearest", hazard=SETS[3])
    _busy(status, headers, body, code=429, lang="ja", words="混み合っています")  # both endpoints share the budget
    assert "地震・津波" not in body["detail"] and "洪水・津波" in body["detail"]
    # a single hazard that is not warm: the same refusal, without the advice to pick one hazard
    status, headers, body = await _get(c, script, hazard="landslide", lang="en")
    _busy(status, headers, body, code=429, lang="en", words="Routes for landslide are busy")
    # never refused: the warm key, and fields already computed (by anyone)
    for params in ({}, {"hazard": "flood"}, {"hazard": SETS[0]}, {"hazard": SETS[2], "lang": "en"}):
        status, _, body = await _get(c, script, **params)
        assert status == 200, (params, body)
    # another client has its own budget; an address of the same IPv6 /64 is the same client
    status, _, body = await _get(c, resident, hazard=SETS[3])
    assert status == 200, body
    for i, hazard in enumerate(SETS[:3]):
        status, _, _ = await _get(c, f"2001:db8:0:1::{i + 1}", "/api/v1/shelters/nearest", hazard=hazard,
                                  profile="car")
        assert status == 200
    status, headers, body = await _get(c, "2001:db8:0:1::99", hazard=SETS[4], profile="car")
    _busy(status, headers, body, code=429, lang="ja", words="混み合っています")
    assert service.cold.counts["refused_client"] == 5 and service.cold.counts["computed"] == 7
    metrics = await (await c.get("/metrics")).text()
    assert 'sonae_evac_cold_fields_total{outcome="refused_client"}' in metrics


async def test_identical_cold_requests_share_one_computation_and_waiting_is_bounded(
        served: Callable[..., Any]) -> None:
    """Five requests for one cold key while it is computed: one search, all answered, charged once (the
    client's budget is 1). A second key meanwhile finds no room to wait (``waiting`` 0): 503."""
    c = await served(per_client_per_minute=1, per_minute=0, waiting=0)
    service = c.app[EVAC]
    engine = service.engine
    assert engine is not None
    gate, calls = threading.Event(), []
    search = engine.search

    def gated(*args: Any) -> Any:
        calls.append(args[3])
        assert gate.wait(WAIT_S)
        return search(*args)

    engine.search = gated
    field_at, entered = engine.field_at, []

    def counted(*args: Any) -> Any:
        entered.append(args)  # one executor thread taken per call: the joiners must take none
        return field_at(*args)

    engine.field_at = counted  # type: ignore[method-assign]
    key = ("walk", SETS[0], False)
    before = engine.recomputes[key]
    tasks = [asyncio.create_task(_get(c, "203.0.113.9", hazard=SETS[0], lang=lang))
             for lang in ("ja", "en", "ja-easy", "ja", "en")]

    async def all_joined() -> bool:
        return service.cold.counts["shared"] == 4 and len(calls) == 1

    try:
        await wait_until(all_joined, timeout=WAIT_S, what="the requests to join one computation")
        status, headers, body = await _get(c, "198.51.100.30", hazard=SETS[1], lang="en")
        _busy(status, headers, body, code=503, lang="en", words="are busy right now")
        assert len(entered) == 1
    finally:
        gate.set()
    answers = await asyncio.gather(*tasks)
    assert [a[0] for a in answers] == [200] * 5
    assert len(calls) == 1 and engine.recomputes[key] == before + 1
    assert service.cold.counts["computed"] == 1 and service.cold.counts["refused_busy"] == 1
    metrics = await (await c.get("/metrics")).text()
    assert 'sonae_evac_cold_fields_total{outcome="shared"}' in metrics


async def test_the_process_budget_gives_503_with_retry_after_warm_and_computed_keys_still_200(
        served: Callable[..., Any]) -> None:
    c = await served(per_client_per_minute=0, per_minute=2)
    service = c.app[EVAC]
    for i, hazard in enumerate(SETS[:2]):
        status, _, body = await _get(c, f"192.0.2.{i + 1}", hazard=hazard)
        assert status == 200, body
    for i, (hazard, lang, words) in enumerate(((SETS[2], "ja", "少し待ってから"), (SETS[3], "en", "Try again in a moment"),
                                               (SETS[4], "ja-easy", "すこし まってから"))):
        status, headers, body = await _get(c, f"192.0.2.{i + 10}", "/api/v1/shelters/nearest", hazard=hazard,
                                           lang=lang)
        _busy(status, headers, body, code=503, lang=lang, words=words)
    for hazard in ("flood", SETS[0], SETS[1]):
        status, _, body = await _get(c, "192.0.2.50", hazard=hazard)
        assert status == 200, body
    assert service.cold.counts["refused_busy"] == 3
    metrics = await (await c.get("/metrics")).text()
    assert 'sonae_evac_cold_fields_total{outcome="refused_busy"}' in metrics


class _ChangeWhileComputing:
    """Hooks on an engine: the first search of a cold field (a request's) waits, and while it waits the test
    changes the hazard state (as :meth:`EvacService.refresh` does, ``engine.update`` in an executor thread);
    every field computation records the thread it ran on, and every search its key."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.loop = asyncio.get_running_loop()
        self.started = asyncio.Event()
        self.gate = threading.Event()
        self.computed: list[tuple[FieldKey, int]] = []  # (key, thread) of every computation
        self.gated = False
        self._key: list[FieldKey] = []
        search, compute = engine.search, engine._compute

        def searched(*args: Any) -> Any:
            if not self.gated:
                self.gated = True
                self.loop.call_soon_threadsafe(self.started.set)
                assert self.gate.wait(WAIT_S)
            return search(*args)

        def recorded(snap: Any, key: FieldKey, **kw: Any) -> Any:
            self.computed.append((key, threading.get_ident()))
            return compute(snap, key, **kw)

        engine.search = searched
        engine._compute = recorded  # type: ignore[method-assign]

    def on_loop(self) -> list[FieldKey]:
        """Keys computed on the event loop's thread (a stall of the whole API: issue 21)."""
        here = threading.get_ident()
        return [k for k, t in self.computed if t == here]


@pytest.mark.parametrize("path", ["/api/v1/route", "/api/v1/shelters/nearest"])
async def test_a_hazard_change_while_a_cold_field_is_computed_is_answered_without_work_on_the_event_loop(
        served: Callable[..., Any], path: str) -> None:
    """Found: the hazard state changed while a request's cold field was computed (in an executor); the request
    then found no field at the new state and the route endpoint computed it on the event loop (0.5 s at 1M
    nodes, 2 s at 3M: every request, SSE heartbeat and health check of the process waits), the nearest-shelters
    endpoint in its executor outside the cold budget. Now the request computes the field again at the new
    state within the budget (off the loop) and answers for that state, saying which (``hazard_version``)."""
    c = await served(per_client_per_minute=0, per_minute=0)
    service = c.app[EVAC]
    engine = service.engine
    assert engine is not None
    hooks = _ChangeWhileComputing(engine)
    key = ("walk", SETS[0], False)
    before = engine.recomputes[key]
    request = asyncio.create_task(_get(c, "203.0.113.40", path, hazard=SETS[0]))
    try:
        await asyncio.wait_for(hooks.started.wait(), WAIT_S)  # the request's field is being computed
        old = engine.state.version
        new = await asyncio.get_running_loop().run_in_executor(
            None, partial(engine.update, alert_levels={"race-gauge": 3}))  # an alert level changed meanwhile
        assert new.version == old + 1
    finally:
        hooks.gate.set()
    status, _, body = await request
    assert status == 200, body
    assert hooks.on_loop() == []
    version = body["properties"]["hazard_version"] if path == "/api/v1/route" else body["hazard_version"]
    assert version == new.version == engine.state.version  # answered for the state now in force
    # every search of the cold key went through the budget (none was done behind it)
    assert engine.recomputes[key] - before == service.cold.counts["computed"] == 2


async def test_a_hazard_state_that_keeps_changing_under_a_cold_field_gives_503_route_busy(
        served: Callable[..., Any]) -> None:
    """Each time the request's field is computed, the state changes and other keys push it out of the fields
    kept (``evac.max_fields`` 1): after a bounded number of tries the request gets 503 route_busy with
    Retry-After, never a computation on the event loop."""
    c = await served(per_client_per_minute=0, per_minute=0)
    service = c.app[EVAC]
    engine = service.engine
    assert engine is not None
    engine.max_fields = 1
    hooks = _ChangeWhileComputing(engine)
    hooks.gate.set()
    search = engine.search
    inside = threading.local()
    changes: list[int] = []

    def changing(*args: Any) -> Any:
        if not getattr(inside, "on", False):
            inside.on = True
            try:
                changes.append(engine.update(alert_levels={"race-gauge": len(changes) + 1}).version)
                engine.field("walk", SETS[1], False)  # another resident's cold key: ours is dropped
            finally:
                inside.on = False
        return search(*args)

    engine.search = changing
    status, headers, body = await _get(c, "203.0.113.41", hazard=SETS[0], lang="en")
    _busy(status, headers, body, code=503, lang="en", words="are busy right now")
    assert hooks.on_loop() == []
    assert len(changes) == FIELD_TRIES
