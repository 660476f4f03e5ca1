"""Versioned, idempotent schema migrations, each package owning its own.

A package that owns tables keeps them in ``<package>/migrations/NNN_name.sql``. A file may come in
two variants, ``NNN_name.timescale.sql`` (run when the TimescaleDB extension is available) and
``NNN_name.plain.sql`` (run on plain PostgreSQL); exactly one of them runs. Applied versions are
recorded in ``sonae_migrations``; the whole run holds an advisory lock, so several processes may call
:func:`migrate` at once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

log = logging.getLogger("sonae.migrations")

#: Packages in the order their tables depend on each other.
COMPONENTS: tuple[str, ...] = ("ingest", "alerting", "api", "notify", "evac", "jma")  # notify: issue #10

_LOCK_KEY = 0x50_4E_41_45  # "SNAE"
_NAME = re.compile(r"^(?P<version>\d{3})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>timescale|plain))?\.sql$")


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


async def timescale_available(conn: asyncpg.Connection) -> bool:
    """True when the TimescaleDB extension is installed or can be created."""
    row = await conn.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'timescaledb'")
    return bool(row)


async def uses_timescale(conn: asyncpg.Connection) -> bool:
    """True when this database has the TimescaleDB extension created."""
    return bool(await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"))


async def migrate(conn: asyncpg.Connection, *, components: tuple[str, ...] = COMPONENTS) -> list[str]:
    """Apply every pending migration; returns the names applied (empty when up to date)."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS sonae_migrations (
                   component text NOT NULL, version int NOT NULL, name text NOT NULL,
                   variant text, applied_at timestamptz NOT NULL DEFAULT now(),
                   PRIMARY KEY (component, version))"""
        )
        timescale = await uses_timescale(conn)
        if not timescale and await timescale_available(conn):
            try:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                timescale = True
            except asyncpg.PostgresError as exc:  # e.g. not in shared_preload_libraries
                log.warning("TimescaleDB is available but cannot be created; using plain PostgreSQL",
                            extra={"error": str(exc)})
        variant = "timescale" if timescale else "plain"
        done = {(r["component"], r["version"]) for r in await conn.fetch(
            "SELECT component, version FROM sonae_migrations")}
        for component in components:
            for m in discover(component):
                if (component, m.version) in done or m.variant not in (None, variant):
                    continue
                async with conn.transaction():
                    await conn.execute(m.sql)
                    await conn.execute(
                        "INSERT INTO sonae_migrations (component, version, name, variant) VALUES ($1,$2,$3,$4)",
                        component, m.version, m.name, m.variant,
                    )
                done.add((component, m.version))
                applied_now.append(f"{component}/{m.version:03d}_{m.name}" + (f".{m.variant}" if m.variant else ""))
                log.info("migration applied", extra={"component": component, "version": m.version,
                                                     "migration": m.name, "variant": m.variant})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    return applied_now
