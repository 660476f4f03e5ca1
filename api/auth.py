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

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiohttp import web
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from api.problems import Problem
from sonae.municipality_code import MunicipalityCodeError, normalise_optional

ROLES = ("staff", "operator", "admin")
TOKEN_TTL = timedelta(hours=12)
_hasher = PasswordHasher()  # argon2id, 64 MiB, t=3 (argon2-cffi's RFC 9106 low-memory profile)
# A hash to verify against when the user does not exist, so timing does not reveal valid usernames.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))

ACCOUNT = web.AppKey("account", object)


class AccountError(ValueError):
    """An account operation was refused; the message says why."""


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    role: str
    municipality_code: str | None
    display_name: str | None = None

    @property
    def prefecture_wide(self) -> bool:
        return self.municipality_code is None

    def may_act_in(self, municipality_code: str | None) -> bool:
        """True when this account's scope covers ``municipality_code``."""
        return self.prefecture_wide or (municipality_code is not None and municipality_code == self.municipality_code)

    def as_json(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role, "municipality_code": self.municipality_code,
                "display_name": self.display_name}


def hash_password(password: str) -> str:
    if len(password) < 10:
        raise AccountError("a password needs at least 10 characters")
    return _hasher.hash(password)


async def create_account(conn: asyncpg.Connection, *, username: str, password: str, role: str,
                         municipality_code: str | None = None, display_name: str | None = None) -> Account:
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    try:
        municipality_code = normalise_optional(municipality_code)
    except MunicipalityCodeError as exc:
        raise AccountError(str(exc)) from None
    try:
        row = await conn.fetchrow(
            """INSERT INTO accounts (username, display_name, password_hash, role, municipality_code)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            username, display_name, hash_password(password), role, municipality_code)
    except asyncpg.UniqueViolationError:
        raise AccountError(f"account {username!r} exists already") from None
    except asyncpg.CheckViolationError:
        raise AccountError("a username is 3-64 characters of letters, digits and _.@-") from None
    return Account(row["id"], username, role, municipality_code, display_name)


async def set_password(conn: asyncpg.Connection, username: str, password: str) -> None:
    status = await conn.execute(
        "UPDATE accounts SET password_hash = $2, updated_at = now() WHERE username = $1",
        username, hash_password(password))
    if status.endswith(" 0"):
        raise AccountError(f"no account {username!r}")
    await conn.execute(
        "UPDATE access_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND account_id = "
        "(SELECT id FROM accounts WHERE username = $1)", username)


async def set_disabled(conn: asyncpg.Connection, username: str, disabled: bool) -> None:
    status = await conn.execute("UPDATE accounts SET disabled = $2, updated_at = now() WHERE username = $1",
                                username, disabled)
    if status.endswith(" 0"):
        raise AccountError(f"no account {username!r}")
    if disabled:
        await conn.execute(
            "UPDATE access_tokens SET revoked_at = now() WHERE revoked_at IS NULL AND account_id = "
            "(SELECT id FROM accounts WHERE username = $1)", username)


async def list_accounts(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch("SELECT username, role, municipality_code, display_name, disabled, created_at "
                            "FROM accounts ORDER BY username")
    return [dict(r) for r in rows]


async def login(conn: asyncpg.Connection, username: str, password: str, *,
                ttl: timedelta = TOKEN_TTL) -> tuple[str, datetime, Account] | None:
    """Check a password; on success return a new bearer token, its expiry and the account."""
    row = await conn.fetchrow(
        "SELECT id, username, password_hash, role, municipality_code, display_name, disabled "
        "FROM accounts WHERE username = $1", username)
    try:
        _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row["disabled"]:
        return None
    if _hasher.check_needs_rehash(row["password_hash"]):
        await conn.execute("UPDATE accounts SET password_hash = $2 WHERE id = $1", row["id"], _hasher.hash(password))
    token = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + ttl
    await conn.execute("INSERT INTO access_tokens (token_hash, account_id, expires_at) VALUES ($1, $2, $3)",
                       _digest(token), row["id"], expires)
    return token, expires, Account(row["id"], row["username"], row["role"], row["municipality_code"],
                                   row["display_name"])


async def revoke(conn: asyncpg.Connection, token: str) -> None:
    await conn.execute("UPDATE access_tokens SET revoked_at = now() WHERE token_hash = $1", _digest(token))


async def account_for_token(conn: asyncpg.Connection, token: str) -> Account | None:
    row = await conn.fetchrow(
        """SELECT a.id, a.username, a.role, a.municipality_code, a.display_name
           FROM access_tokens t JOIN accounts a ON a.id = t.account_id
           WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > now() AND NOT a.disabled""",
        _digest(token))
    return Account(row["id"], row["username"], row["role"], row["municipality_code"], row["display_name"]) if row else None


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


async def authenticate(request: web.Request, *roles: str) -> Account:
    """The account behind the request's bearer token, which must hold one of ``roles`` (admin always
    passes). Raises 401 without a valid token and 403 with the wrong role."""
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
    if roles and account.role not in roles and account.role != "admin":
        raise Problem(403, "Forbidden", f"this action needs the role {' or '.join(roles)}")
    return account


def require_scope(account: Account, municipality_code: str | None) -> None:
    """Refuse (403) an action on something outside the account's municipality."""
    if not account.may_act_in(municipality_code):
        raise Problem(403, "Forbidden", "this belongs to another municipality than your account's")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
