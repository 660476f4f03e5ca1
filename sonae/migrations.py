"""Versioned, idempotent schema migrations, each package owning its own.

A package that owns tables keeps them in ``<package>/migrations/NNN_name.sql``. A file may come in
two variants, ``NNN_name.timescale.sql`` (run when the TimescaleDB extension is usable) and
``NNN_name.plain.sql`` (run on plain PostgreSQL); exactly one of them runs. Applied versions are
recorded in ``sonae_migrations``; the whole run holds an advisory lock, so several processes may call
:func:`migrate` at once.

Which backend (see :func:`choose_backend`):

* the extension is absent from the server → plain PostgreSQL;
* installed but not in ``shared_preload_libraries`` → plain PostgreSQL with a warning (``CREATE
  EXTENSION`` would end the connection with a FATAL error, so it is not attempted);
* already created in the database, or creatable → TimescaleDB;
* created later in a database first migrated as plain: every migration recorded as ``plain`` that
  has a ``timescale`` variant is *upgraded* by running that variant on top of it (so a timescale
  variant must apply on an empty schema and on top of its plain variant, e.g. ``readings`` becomes a
  hypertable with its rows via ``create_hypertable(migrate_data => true)``). It runs in one
  transaction per file: either the database is converted, or it stays plain and the error says why.

Migration numbers are per package; two branches adding ``005`` to one package would collide, so a
migration may take a distinctive number (e.g. the issue that brought it: ``017_...``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.metadata import entry_points

import asyncpg

log = logging.getLogger("sonae.migrations")

#: the entry-point group packages that own tables register in (``pyproject.toml``)
GROUP = "sonae.migrations"


def registered_components() -> tuple[str, ...]:
    """The packages whose migrations Sonae applies, in the order their tables depend on each other.

    They register as entry points of :data:`GROUP` in ``pyproject.toml`` (name: its position, value:
    the package), so the ground names no package above it. Raises :class:`MigrationError` when none
    are registered: Sonae is not installed (``./manage`` or ``pip install -e .`` installs it).
    """
    found = sorted(entry_points(group=GROUP), key=lambda e: e.name)
    if not found:
        raise MigrationError(f"no package registers migrations ({GROUP} entry points): install Sonae with "
                             "./manage (or pip install -e .) rather than running it from the source tree")
    return tuple(e.value for e in found)

_LOCK_KEY = 0x50_4E_41_45  # "SNAE"
_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>timescale|plain))?\.sql\Z")


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    variant: str | None
    sql: str


def discover(component: str) -> list[Migration]:
    """The migrations a package ships, in version order (both variants listed)."""
    try:
        folder = resources.files(component) / "migrations"
    except ModuleNotFoundError:
        return []
    if not folder.is_dir():
        return []
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(component, int(match["version"]), match["name"], match["variant"],
                                   entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: (m.version, m.variant or ""))


class MigrationError(RuntimeError):
    """The schema cannot be brought up to date; the message says what to do."""


async def timescale_available(conn: asyncpg.Connection) -> bool:
    """True when the TimescaleDB extension is installed on the server (it may still not be loadable)."""
    row = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
    return bool(row)


async def timescale_preloaded(conn: asyncpg.Connection) -> bool:
    """True when the server preloads TimescaleDB (``shared_preload_libraries``; it refuses to load otherwise).

    Read from the settings its loader defines (``timescaledb.disable_load``), which any user may see;
    ``shared_preload_libraries`` itself needs superuser or ``pg_read_all_settings``.
    """
    return bool(await conn.fetchval("SELECT count(*) FROM pg_settings WHERE name = 'timescaledb.disable_load'"))


async def uses_timescale(conn: asyncpg.Connection) -> bool:
    """True when this database has the TimescaleDB extension created."""
    return bool(await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"))


async def choose_backend(conn: asyncpg.Connection) -> str:
    """``"timescale"`` or ``"plain"``, creating the extension when the server can load it.

    Raises
    ------
    MigrationError
        When ``CREATE EXTENSION`` closed the connection (nothing else can run on it).
    """
    if await uses_timescale(conn):
        await _warn_if_unsafe_version(conn)
        return "timescale"
    if not await timescale_available(conn):
        return "plain"
    if not await timescale_preloaded(conn):
        log.warning("TimescaleDB is installed but not in shared_preload_libraries; using plain PostgreSQL. "
                    "To use it: add timescaledb to shared_preload_libraries, restart PostgreSQL and run "
                    "`sonae db migrate` (readings become a hypertable with their data).")
        return "plain"
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        if _closed(conn):
            raise MigrationError(f"CREATE EXTENSION timescaledb ended the connection ({exc}); remove the "
                                 "extension from the server or preload it, then migrate again") from exc
        log.warning("TimescaleDB is available but cannot be created; using plain PostgreSQL",
                    extra={"error": str(exc)})
        return "plain"
    await _warn_if_unsafe_version(conn)
    return "timescale"


#: TimescaleDB releases before this lose rows on ON CONFLICT DO NOTHING into compressed chunks.
SAFE_TIMESCALE = (2, 18, 1)


async def _warn_if_unsafe_version(conn: asyncpg.Connection) -> None:
    version = await conn.fetchval("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'") or ""
    parts = tuple(int(p) for p in re.findall(r"\d+", version)[:3])
    if parts and parts < SAFE_TIMESCALE:
        log.warning("TimescaleDB %s loses readings (ON CONFLICT DO NOTHING into a compressed chunk stores neither "
                    "a duplicate nor the new rows beside it; fixed in 2.18.1): upgrade the extension "
                    "(ALTER EXTENSION timescaledb UPDATE)", version)


def _label(m: Migration) -> str:
    return f"{m.component}/{m.version:03d}_{m.name}" + (f".{m.variant}" if m.variant else "")


async def migrate(conn: asyncpg.Connection, *, components: tuple[str, ...] | None = None) -> list[str]:
    """Apply every pending migration of ``components`` (default: :func:`registered_components`);
    returns the names applied (empty when up to date).

    Raises
    ------
    MigrationError
        When the TimescaleDB extension cannot be used on this connection, or upgrading a plain
        migration to its timescale variant failed (the database is left as it was).
    """
    applied_now: list[str] = []
    if components is None:
        components = registered_components()
    if await uses_timescale(conn) and not await timescale_preloaded(conn):
        # Any DDL now fires TimescaleDB's event triggers and the server ends the connection; the
        # database cannot run as plain either (readings is a hypertable).
        raise MigrationError("this database uses TimescaleDB, but the server does not preload it: add "
                             "timescaledb to shared_preload_libraries in postgresql.conf, restart PostgreSQL "
                             "and start Sonae again")
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS sonae_migrations (
                   component text NOT NULL, version int NOT NULL, name text NOT NULL,
                   variant text, applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))"""
        )
        variant = await choose_backend(conn)
        recorded = {(r["component"], r["version"]): r["variant"] for r in await conn.fetch(
            "SELECT component, version, variant FROM sonae_migrations")}
        done = set(recorded)
        for component in components:
            for m in discover(component):
                if variant == "timescale" and m.variant == "timescale" \
                        and recorded.get((component, m.version)) == "plain":
                    # The database was migrated as plain and has TimescaleDB now: upgrade it.
                    try:
                        async with conn.transaction():
                            await conn.execute(m.sql)
                            await conn.execute(
                                "UPDATE sonae_migrations SET variant = 'timescale', applied_at = now() "
                                "WHERE component = $1 AND version = $2", component, m.version)
                    except asyncpg.PostgresError as exc:
                        raise MigrationError(
                            f"upgrading {_label(m)} from plain PostgreSQL to TimescaleDB failed ({exc}); the "
                            "database is unchanged. Fix the cause, or drop the timescaledb extension from "
                            "this database to keep running on plain PostgreSQL") from exc
                    applied_now.append(_label(m))
                    log.info("migration upgraded to TimescaleDB", extra={"component": component,
                                                                         "version": m.version, "migration": m.name})
                    continue
                if (component, m.version) in done or m.variant not in (None, variant):
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO sonae_migrations (component, version, name, variant) VALUES ($1,$2,$3,$4)",
                        component, m.version, m.name, m.variant,
                    )
                done.add((component, m.version))
                applied_now.append(_label(m))
                log.info("migration applied", extra={"component": component, "version": m.version,
                                                     "migration": m.name, "variant": m.variant})
    finally:
        if not _closed(conn):
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now


def _closed(conn: asyncpg.Connection) -> bool:
    """``conn.is_closed()``, also for a pool's connection that the server ended (asyncpg then refuses
    every call on it with InterfaceError, which would hide the error that ended it)."""
    try:
        return conn.is_closed()
    except asyncpg.InterfaceError:
        return True
