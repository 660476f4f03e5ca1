"""The database connection pool: create the database if asked, wait for the server, connect.

Ground layer: imports only ``sonae`` core, never a domain package (the schema is applied by the
caller's ``prepare`` step).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from sonae.config import ConfigError, Settings
from sonae.retry import Backoff, count_failure

log = logging.getLogger("sonae.db")

#: SQLSTATE classes that name the server or the connection, never the statement: 08 connection exception,
#: 53 insufficient resources (53300 too_many_connections, 53100 disk_full, 53200 out_of_memory …)
TRANSIENT_SQLSTATE_CLASSES = ("08", "53")
#: single SQLSTATEs of the same kind: 57P01 admin_shutdown (a terminated session), 57P02 crash_shutdown,
#: 57P03 cannot_connect_now (starting up, shutting down, recovering), 40001 serialization_failure and
#: 40P01 deadlock_detected (the transaction, run again, succeeds)
TRANSIENT_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
#: SQLSTATEs that are transient only as a refused *session* (severity FATAL): 55000
#: object_not_in_prerequisite_state is how PostgreSQL refuses a connection to a database with
#: ``ALLOW_CONNECTIONS false`` ("database … is not currently accepting connections"), but as a statement's
#: ERROR it means the statement cannot ever succeed, and retrying it would stall its caller for good
TRANSIENT_WHEN_FATAL = frozenset({"55000"})

#: everything a database call may raise, transient or not: for loops that log a failed pass and run the next
#: one anyway (housekeeping, the workers' cycles), so no database error ends them. Work that must not be
#: given up (a batch of readings) retries only :func:`is_transient_db_error` and handles the rest.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def is_transient_db_error(exc: BaseException) -> bool:
    """Whether ``exc``, raised by asyncpg while connecting or running a statement, means "the database is
    unavailable for now; the same work, tried again later, can succeed" (the one classification every
    database consumer of Sonae retries on: ingest, housekeeping, the workers, :func:`open_pool`).

    True for: ``OSError`` (refused, reset, unreachable) and ``TimeoutError``; asyncpg's
    ``InterfaceError`` (a connection closed under the caller) and ``PostgresConnectionError``; a server error
    of SQLSTATE class 08 or 53, 57P01–57P03, 40001, 40P01 (:data:`TRANSIENT_SQLSTATES`), or 55000 sent as FATAL
    (a database with ``ALLOW_CONNECTIONS false``). False for anything else — a constraint, a type, a syntax
    error is the statement's fault and is not retried. Sources: PostgreSQL 15 documentation, Appendix A
    "PostgreSQL Error Codes"; ``CheckMyDatabase`` in src/backend/utils/init/postinit.c (the FATAL 55000).
    """
    if isinstance(exc, (OSError, TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)):
        return True
    if not isinstance(exc, asyncpg.PostgresError):
        return False
    state = str(getattr(exc, "sqlstate", "") or "")
    if state[:2] in TRANSIENT_SQLSTATE_CLASSES or state in TRANSIENT_SQLSTATES:
        return True
    severity = str(getattr(exc, "severity_en", None) or getattr(exc, "severity", None) or "")
    return state in TRANSIENT_WHEN_FATAL and severity.upper() in ("FATAL", "PANIC")


async def ensure_database(url: str, *, create: bool = True) -> None:
    """Create the database named in ``url`` when the server lacks it (``create=False``: refuse instead).

    Raises
    ------
    ConfigError
        The database is missing and ``create`` is false.
    """
    parts = urlsplit(url)
    name = parts.path.lstrip("/") or "postgres"
    try:
        conn = await asyncpg.connect(url)
        await conn.close()
        return
    except asyncpg.InvalidCatalogNameError:
        if not create:
            raise ConfigError(
                f"the database {name!r} does not exist on the configured server; check SONAE_DATABASE_URL, "
                "or create it on purpose with `sonae db migrate`") from None
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, parts.fragment))
    conn = await asyncpg.connect(admin)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        log.info("database created", extra={"database": name})
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()


async def open_pool(settings: Settings, *, wait_s: float = 30.0, create: bool = True,
                    prepare: Callable[[asyncpg.Pool], Awaitable[object]] | None = None) -> asyncpg.Pool:
    """Connect (waiting up to ``wait_s`` seconds for the server), then run ``prepare(pool)`` if given.

    ``create=False`` refuses to create a missing database (administrative commands); see
    :func:`ensure_database`. ``prepare`` is how callers apply the schema (e.g.
    ``ingest.schema.prepare_schema``); if it fails the pool is closed and the error raised.

    Raises
    ------
    ConnectionError
        PostgreSQL stayed unreachable for ``wait_s`` seconds.
    """
    url = settings["database.url"]
    deadline = asyncio.get_running_loop().time() + wait_s
    backoff = Backoff(base=0.2, cap=2.0)
    while True:
        try:
            await ensure_database(url, create=create)
            pool = await asyncpg.create_pool(url, min_size=1, max_size=settings["database.pool_size"])
            break
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            count_failure("postgres")
            if asyncio.get_running_loop().time() > deadline:
                raise ConnectionError(f"cannot reach PostgreSQL: {exc}") from exc
            await asyncio.sleep(backoff.next_delay())
    assert pool is not None
    if prepare is not None:
        try:
            await prepare(pool)
        except BaseException:
            await pool.close()
            raise
    return pool



def database_unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception it was raised from, by ``__cause__``/``__context__``, up to 8 deep)
    says the database cannot be reached just now, by :func:`is_transient_db_error` (the one rule), except
    that an ``OSError`` other than ``ConnectionError`` and ``TimeoutError`` counts only with a network errno (refused, reset, unreachable, timed out …)
    or as a resolver failure (``socket.gaierror``: the database's host name does not resolve): an API
    handler's file error is no database outage. Such a fault is temporary: the API answers 503 with
    ``Retry-After`` (:mod:`api.edge`), never 500. A query's own fault (syntax, constraint) is not one.
    """
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, socket.gaierror):
            # the database's host name does not resolve (now): asyncpg reconnects by name, and a container's or
            # Kubernetes service's name goes with its database (found: such an outage answered 500)
            return True
        if isinstance(current, OSError) and not isinstance(current, (ConnectionError, TimeoutError)):
            if current.errno in _NETWORK_ERRNOS:
                return True
        elif is_transient_db_error(current):
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


_NETWORK_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EHOSTUNREACH,
                             errno.ENETUNREACH, errno.ENETDOWN, errno.ETIMEDOUT, errno.EPIPE, errno.ENOTCONN})
