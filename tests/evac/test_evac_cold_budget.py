"""The cold-field budget (evac/coldfields.py) on its own, at the moment a computation finishes.

Found: a finished computation stayed in the budget's table of computations in flight until its done-callback ran
(``call_soon``, one turn of the event loop later). A request that ran in that gap joined the finished computation:
it received the previous computation's failure (or its result) instead of being admitted anew, and counted as
``shared``; a request for another key was refused ``busy`` (waiting=0) by a computation already over.

The request "arriving in the gap" is a task created from inside the computation: its first step is queued before
the computation's task completes, so it runs after the computation ended and before the task's done-callbacks.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from evac.coldfields import ColdFieldBudget


def _budget() -> ColdFieldBudget:
    return ColdFieldBudget(per_client_per_minute=0, per_minute=0, waiting=0)


async def test_a_request_arriving_as_a_computation_fails_is_computed_anew_not_given_the_old_failure() -> None:
    budget = _budget()
    late: list[asyncio.Future[Any]] = []

    async def fresh() -> str:
        return "fresh"

    async def failing() -> str:
        late.append(asyncio.ensure_future(budget.run("k", "192.0.2.1", fresh)))  # runs once this has ended
        raise RuntimeError("the first computation failed")

    with pytest.raises(RuntimeError, match="first computation failed"):
        await budget.run("k", "192.0.2.1", failing)
    assert await late[0] == "fresh"
    assert (budget.counts["computed"], budget.counts["shared"]) == (2, 0)
    assert not budget.in_flight("k")


async def test_a_request_arriving_as_a_computation_succeeds_is_computed_anew_not_joined() -> None:
    budget = _budget()
    late: list[asyncio.Future[Any]] = []

    async def second() -> str:
        return "second"

    async def first() -> str:
        late.append(asyncio.ensure_future(budget.run("k", None, second)))
        return "first"

    assert await budget.run("k", None, first) == "first"
    assert await late[0] == "second"
    assert (budget.counts["computed"], budget.counts["shared"]) == (2, 0)


async def test_a_finished_computation_does_not_make_another_key_busy() -> None:
    budget = _budget()  # waiting=0: a second key while one runs is refused
    late: list[asyncio.Future[Any]] = []

    async def other() -> str:
        return "other"

    async def first() -> str:
        late.append(asyncio.ensure_future(budget.run("j", "192.0.2.1", other)))
        return "first"

    assert await budget.run("k", None, first) == "first"
    assert await late[0] == "other"  # not ColdFieldRefused("busy") for a computation already over
    assert budget.counts["refused_busy"] == 0


async def test_a_request_while_the_computation_runs_still_shares_it() -> None:
    budget = _budget()
    started, gate = asyncio.Event(), asyncio.Event()
    runs = 0

    async def compute() -> str:
        nonlocal runs
        runs += 1
        started.set()
        await gate.wait()
        return "one"

    first = asyncio.ensure_future(budget.run("k", None, compute))
    await started.wait()
    second = asyncio.ensure_future(budget.run("k", None, compute))
    asyncio.get_running_loop().call_soon(gate.set)  # queued after second's first step: second joins first
    assert await asyncio.gather(first, second) == ["one", "one"]
    assert runs == 1 and (budget.counts["computed"], budget.counts["shared"]) == (1, 1)
    assert not budget.in_flight("k")
