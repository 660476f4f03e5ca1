"""A login whose password check is under way when the password is changed or the account disabled gives no
token that outlives the change (found by break33).

``login`` read the account's hash, checked the password off the event loop (argon2id, tens of milliseconds)
and then wrote a token without looking at the account again. ``sonae users passwd`` (or ``disable``) landing
during that check revoked every token there was, and the login then added one more: a token of the old
password, valid for 12 hours after the change meant to lock that password out (after ``disable``, dormant
until ``enable`` brought it back). The account changes are made here exactly while the password is checked,
through the same hashing hand-off the login uses, so the order is the one of the race, without timing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from argon2 import PasswordHasher

from api import auth
from api.auth import account_for_token, create_account, login, set_disabled, set_password

PASSWORD = "old-password-1234"
NEW_PASSWORD = "new-password-5678"


class _Rehashing(PasswordHasher):
    """argon2-cffi's hasher, finding every stored hash in need of new parameters."""

    def check_needs_rehash(self, hash: str) -> bool:
        return True


def _during_the_check(monkeypatch: pytest.MonkeyPatch, change: Callable[[], Awaitable[None]]) -> None:
    """Run ``change`` (on its own connection) once, while a login's password is being checked."""
    real = auth._off_loop
    done: list[bool] = []

    async def off_loop(fn: Callable[..., Any], *args: Any) -> Any:
        result = await real(fn, *args)
        if fn is auth._verify and not done:
            done.append(True)
            await change()
        return result

    monkeypatch.setattr(auth, "_off_loop", off_loop)


@pytest.mark.parametrize("change", ["passwd", "disable then enable"])
async def test_a_login_racing_an_account_change_leaves_no_valid_token(pool: asyncpg.Pool,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      change: str) -> None:
    async with pool.acquire() as conn:
        await create_account(conn, username="kori-staff", password=PASSWORD, role="staff",
                             municipality_code="072036")

    async def account_change() -> None:
        async with pool.acquire() as other:
            if change == "passwd":
                await set_password(other, "kori-staff", NEW_PASSWORD)
            else:
                await set_disabled(other, "kori-staff", True)

    _during_the_check(monkeypatch, account_change)
    async with pool.acquire() as conn:
        answer = await login(conn, "kori-staff", PASSWORD)
        if change != "passwd":
            await set_disabled(conn, "kori-staff", False)
        assert answer is None or await account_for_token(conn, answer[0]) is None, (
            f"a token of the old login is valid after {change}")
        monkeypatch.undo()
        # the change itself took: the new password (or the enabled account) logs in, the old password does not
        if change == "passwd":
            assert await login(conn, "kori-staff", PASSWORD) is None
            assert await login(conn, "kori-staff", NEW_PASSWORD) is not None
        else:
            fresh = await login(conn, "kori-staff", PASSWORD)
            assert fresh is not None and await account_for_token(conn, fresh[0]) is not None


async def test_a_rehash_during_a_password_change_does_not_bring_the_old_password_back(
        pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    """A login that finds the stored hash needs new parameters writes the password's new hash: never over a
    password changed while it checked (it would set the old password again)."""
    async with pool.acquire() as conn:
        await create_account(conn, username="kori-staff", password=PASSWORD, role="staff",
                             municipality_code="072036")

    async def account_change() -> None:
        async with pool.acquire() as other:
            await set_password(other, "kori-staff", NEW_PASSWORD)

    _during_the_check(monkeypatch, account_change)
    monkeypatch.setattr(auth, "_hasher", _Rehashing())
    async with pool.acquire() as conn:
        await login(conn, "kori-staff", PASSWORD)
        monkeypatch.undo()
        assert await login(conn, "kori-staff", PASSWORD) is None
        assert await login(conn, "kori-staff", NEW_PASSWORD) is not None
