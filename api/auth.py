"""Accounts, roles and bearer tokens for staff, operators and admins.

Roles
-----
``staff``    municipal disaster staff: acknowledge alerts, issue/cancel orders, shelters, hazard areas;
``operator`` runs simulators and drills;
``admin``    everything, and manages accounts and partner integrations.

Every account has a scope: one municipality (its 6-digit 団体コード) or, with no municipality, the
whole prefecture. Staff act only inside their scope; residents' endpoints need no account.

Passwords are hashed with argon2id (memory-hard); tokens are 256-bit random strings of which only the
SHA-256 is stored, with an expiry, and can be revoked.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from alerting.audit import SYSTEM_ACTORS
from api.problems import Problem
from api.vary import vary
from ingest.municipalities import uncovered
from sonae.municipality_code import MunicipalityCodeError, normalise_municipality
from sonae.nametext import refused_text

ROLES = ("staff", "operator", "admin")
#: The shortest password an account may have, in characters: the one rule of the API (and of its OpenAPI
#: document's ``minLength``), of ``sonae users add|passwd`` and of the README (found: the README said 12 while
#: the code and the OpenAPI document said 10; ``tests/api/test_api_password_rule.py`` holds them to this constant).
MIN_PASSWORD_LENGTH = 10
#: what a refused password is told (the API's 400, the command's one line)
PASSWORD_RULE = f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
TOKEN_TTL = timedelta(hours=12)
_hasher = PasswordHasher()  # argon2id, 64 MiB, t=3 (argon2-cffi's RFC 9106 low-memory profile)
# A hash to verify against when the user does not exist, so timing does not reveal valid usernames.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

ACCOUNT = web.AppKey("account", object)
def _lower_priority() -> None:
    """Run this hashing thread (and the lanes libargon2 starts from it, which inherit it) at the lowest CPU
    priority: on a busy machine the event loop's thread wins, so health checks and SSE heartbeats stay
    prompt while logins wait a little. Linux applies nice values per thread."""
    import contextlib
    import os
    import threading

    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


#: argon2id needs 64 MiB and tens of ms of CPU per hash (4 lanes): never on the event loop (SSE heartbeats
#: and health checks would stall). argon2-cffi releases the GIL while hashing; 2 workers bound memory.
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="sonae-argon2", initializer=_lower_priority)


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(_HASHING, fn, *args)


def _verify(hashed: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(hashed, password))
    except (VerificationError, InvalidHashError):
        return False


class AccountError(ValueError):
    """An account operation was refused; the message says why."""


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    role: str
    municipality_code: str | None
    display_name: str | None = None
    #: an operator an admin allowed to inject real (non-exercise) readings (api.authorization)
    may_inject_real: bool = False

    @property
    def prefecture_wide(self) -> bool:
        return self.municipality_code is None

    def may_act_in(self, municipality_code: str | None) -> bool:
        """True when this account's scope covers ``municipality_code``."""
        return self.prefecture_wide or (municipality_code is not None and municipality_code == self.municipality_code)

    def as_json(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role, "municipality_code": self.municipality_code,
                "display_name": self.display_name}


#: the characters no password may hold: controls (Unicode Cc: line breaks, tab, NUL, escape, DEL, C1) and the
#: line and paragraph separators (Zl, Zp), which the console's password field cannot send
_UNTYPABLE = frozenset({"Cc", "Zl", "Zp"})


def check_password(password: str) -> None:
    """Refuse a password holding a control character or line break (:data:`_UNTYPABLE`), or shorter than
    :data:`MIN_PASSWORD_LENGTH` (:class:`AccountError`, :data:`PASSWORD_RULE`), so that the length counts only
    what a user can type.

    Found: ``SONAE_NEW_PASSWORD=$'123456789\\n' sonae users add`` (and the same through ``POST /api/v1/accounts``)
    made an account whose 10th character was the newline, which then logged in only with it: the staff
    console's password field cannot send one. Decided: such a password is refused, the same way by the API
    and the command line (whose prompt, ``getpass``, never returns the line break typed to end it); no final
    newline is stripped silently: a password is the characters given or none."""
    for i, ch in enumerate(password):
        if unicodedata.category(ch) in _UNTYPABLE:
            name = unicodedata.name(ch, "a control character")
            raise AccountError(f"a password may not hold control characters or line breaks: U+{ord(ch):04X} "
                               f"{name} at position {i + 1}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(PASSWORD_RULE)


def hash_password(password: str) -> str:
    check_password(password)
    return _hasher.hash(password)


async def create_account(conn: asyncpg.Connection, *, username: str, password: str, role: str,
                         municipality_code: str | None = None, display_name: str | None = None) -> Account:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    if username.casefold() in SYSTEM_ACTORS:
        raise AccountError(f"the username {username!r} names the rule engine in the audit log: choose another")
    # shown to other staff (the console, the audit log): the rule of every text staff write (sonae.nametext)
    if display_name is not None and (why := refused_text("display_name", display_name)):
        raise AccountError(why)
    password_hash = await _off_loop(hash_password, password)
    try:
        municipality_code = (normalise_municipality(municipality_code)
                             if municipality_code else None)
    except MunicipalityCodeError as exc:
        raise AccountError(str(exc)) from None
    # staff of the drill town run its exercises: an account may name it (decided by uncovered, staff=True)
    if municipality_code is not None and (why := await uncovered(conn, municipality_code, exercise=False,
                                                                  staff=True)):
        raise AccountError(why)
    try:
        row = await conn.fetchrow(
            """INSERT INTO accounts (username, display_name, password_hash, role, municipality_code)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            username, display_name, password_hash, role, municipality_code)
    except asyncpg.UniqueViolationError:
        raise AccountError(f"account {username!r} exists already") from None
    except asyncpg.CheckViolationError:
        raise AccountError("a username is 3-64 characters of letters, digits and _.@-") from None
    return Account(row["id"], username, role, municipality_code, display_name)


async def set_password(conn: asyncpg.Connection, username: str, password: str) -> None:
    """Set an account's password and revoke its tokens, in one transaction: a login checking the old password
    meanwhile either wrote its token first (revoked here) or finds the hash changed (:func:`login`)."""
    password_hash = await _off_loop(hash_password, password)
    async with conn.transaction():
        status = await conn.execute(
            "UPDATE accounts SET password_hash = $2, updated_at = now() WHERE username = $1", username, password_hash)
        if status.endswith(" 0"):
            raise AccountError(f"no account {username!r}")
        await conn.execute(
            "UPDATE access_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND account_id = "
            "(SELECT id FROM accounts WHERE username = $1)", username)


async def set_disabled(conn: asyncpg.Connection, username: str, disabled: bool) -> None:
    """Disable (revoking its tokens, in one transaction, as :func:`set_password`) or enable an account."""
    async with conn.transaction():
        status = await conn.execute("UPDATE accounts SET disabled = $2, updated_at = now() WHERE username = $1",
                                    username, disabled)
        if status.endswith(" 0"):
            raise AccountError(f"no account {username!r}")
        if disabled:
            await conn.execute(
                "UPDATE access_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND account_id = "
                "(SELECT id FROM accounts WHERE username = $1)", username)


async def list_accounts(conn: asyncpg.Connection, *, municipality: str | None = None) -> list[dict[str, Any]]:
    """All accounts, or (``municipality``) those of one municipality."""
    rows = await conn.fetch("SELECT username, role, municipality_code, display_name, disabled, may_inject_real, "
                            "created_at "
                            "FROM accounts WHERE $1::text IS NULL OR municipality_code = $1 ORDER BY username",
                            municipality)
    return [dict(r) for r in rows]


async def login(conn: asyncpg.Connection, username: str, password: str, *,
                ttl: timedelta = TOKEN_TTL) -> tuple[str, datetime, Account] | None:
    """Check a password; on success return a new bearer token, its expiry and the account."""
    row = await conn.fetchrow(
        "SELECT id, username, password_hash, role, municipality_code, display_name, disabled, may_inject_real "
        "FROM accounts WHERE username = $1", username)
    if not await _off_loop(_verify, row["password_hash"] if row else _DUMMY_HASH, password):
        return None
    if row is None or row["disabled"]:
        return None
    rehashed = await _off_loop(_hasher.hash, password) if _hasher.check_needs_rehash(row["password_hash"]) else None
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + ttl
    async with conn.transaction():
        # the account as the password was checked against, locked until the token is written: a password change
        # or a disable that landed during the check (argon2id, off the loop) revoked every token there was, so
        # a token written now would outlive it (found by break33: 12 hours of the old password after `users
        # passwd`); one waiting for this lock revokes the token written here, as it is committed first
        if await conn.fetchval("SELECT 1 FROM accounts WHERE id = $1 AND password_hash = $2 AND NOT disabled "
                               "FOR SHARE", row["id"], row["password_hash"]) is None:
            return None
        if rehashed is not None:  # the same password's hash with today's parameters, never over a changed one
            await conn.execute("UPDATE accounts SET password_hash = $2 WHERE id = $1", row["id"], rehashed)
        await conn.execute("INSERT INTO access_tokens (token_hash, account_id, expires_at) VALUES ($1, $2, $3)",
                           _digest(token), row["id"], expires)
    return token, expires, Account(row["id"], row["username"], row["role"], row["municipality_code"],
                                   row["display_name"], row["may_inject_real"])


async def revoke(conn: asyncpg.Connection, token: str) -> None:
    await conn.execute("UPDATE access_tokens SET revoked_at = now() WHERE token_hash = $1", _digest(token))


async def account_for_token(conn: asyncpg.Connection, token: str) -> Account | None:
    row = await conn.fetchrow(
        """SELECT a.id, a.username, a.role, a.municipality_code, a.display_name, a.may_inject_real
           FROM access_tokens t JOIN accounts a ON a.id = t.account_id
           WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now() AND NOT a.disabled""",
        _digest(token))
    if row is None:
        return None
    return Account(row["id"], row["username"], row["role"], row["municipality_code"], row["display_name"],
                   row["may_inject_real"])


async def set_real_injection(conn: asyncpg.Connection, username: str, *, allowed: bool) -> dict[str, Any] | None:
    """Allow (or stop) an account injecting real readings; the account's scope and role, or None when
    there is no such account. The caller checks who may do this (:mod:`api.authorization`)."""
    row = await conn.fetchrow("UPDATE accounts SET may_inject_real = $2, updated_at = now() WHERE username = $1 "
                              "RETURNING username, role, municipality_code, may_inject_real", username, allowed)
    return dict(row) if row is not None else None


async def account_scope(conn: asyncpg.Connection, username: str, *, lock: bool = False) -> dict[str, Any] | None:
    """An account's ``username``, ``role``, ``municipality_code`` and ``may_inject_real`` (None when there is no
    such account). ``lock``: lock its row until the transaction ends (call in one), so that changes decided
    on what was read here (a grant and its audit) are made one after the other."""
    row = await conn.fetchrow("SELECT username, role, municipality_code, may_inject_real FROM accounts "
                              "WHERE username = $1" + (" FOR UPDATE" if lock else ""), username)
    return dict(row) if row is not None else None


def _digest(token: str) -> bytes:
    """SHA-256 of the token's bytes as sent. aiohttp reads header bytes that are not UTF-8 as lone
    surrogates (surrogateescape); they are hashed as the bytes they were (such a token matches none),
    where a strict encode raised UnicodeEncodeError, a 500."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def bearer_token(request: web.Request) -> str | None:
    """The bearer token of ``request``'s ``Authorization``, or None. Every read of the token is here (the
    authorization middleware for each operation whose rule reads the account, a public operation's optional
    staff view, the rate limit), so ``Vary: Authorization`` is recorded here (:mod:`api.vary`): whatever the
    token chooses (401 or 200, a staff or public view, 429 or not) is listed on every form of the answer
    (found: staff-only operations answered 401/200 without it)."""
    vary(request, "Authorization")
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def account_of_request(request: web.Request) -> Account:
    """The account behind the request's bearer token; 401 without a valid one."""
    from api.context import POOL

    token = bearer_token(request)
    if token is None:
        raise Problem(401, "Unauthorized", "this action needs a staff login: send 'Authorization: Bearer <token>'",
                      headers={"WWW-Authenticate": 'Bearer realm="sonae"'})
    async with request.app[POOL].acquire() as conn:
        account = await account_for_token(conn, token)
    if account is None:
        raise Problem(401, "Unauthorized", "the token is unknown, expired or revoked; log in again",
                      headers={"WWW-Authenticate": 'Bearer realm="sonae", error="invalid_token"'})
    return account


async def authenticate(request: web.Request, *roles: str) -> Account:
    """The account of the request. For operations with a rule in :data:`api.authorization.POLICY` the
    middleware has already checked token and role; ``roles`` (admin always passes) serve public
    operations with an optional staff view (e.g. ``audience=staff``). 401 without a valid token, 403
    with the wrong role."""
    from api.authorization import ACCOUNT_KEY, check_role

    account = request.get(ACCOUNT_KEY)
    if account is None:
        account = await account_of_request(request)
        request[ACCOUNT_KEY] = account
    if roles:
        check_role(account, (*roles, "admin"))
    return account  # type: ignore[no-any-return]


def require_scope(account: Account, municipality_code: str | None) -> None:
    """Refuse (403) an action naming a municipality outside the account's scope
    (:func:`api.authorization.require_target_scope`)."""
    from api.authorization import require_target_scope

    require_target_scope(account, municipality_code)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
