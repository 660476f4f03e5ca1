"""An old database for migration tests: a component's schema as it was before a given migration."""

from __future__ import annotations

import asyncpg

from sonae.migrations import choose_backend, discover


async def schema_before(conn: asyncpg.Connection, version: int, *, component: str = "ingest") -> str:
    """Apply ``component``'s migrations older than ``version`` on ``conn`` (an empty database), each recorded
    in ``sonae_migrations`` as :func:`sonae.migrations.migrate` records it, so a later ``migrate`` goes on
    from ``version`` as it would on a database loaded before that migration existed.

    Call it once per component to build several (e.g. every component but one up to date, and that one before
    ``version``): the record table is made by the first call.

    Returns the variant used (``"timescale"`` or ``"plain"``: :func:`sonae.migrations.choose_backend`, which
    creates the extension where the server can load it).
    """
    variant = await choose_backend(conn)
    await conn.execute("""CREATE TABLE IF NOT EXISTS sonae_migrations (component text NOT NULL, version int NOT NULL,
                          name text NOT NULL, variant text, applied_at timestamptz NOT NULL DEFAULT now(),
                          PRIMARY KEY (component, version))""")
    for m in discover(component):
        if m.version < version and m.variant in (None, variant):
            await conn.execute(m.sql)
            await conn.execute("INSERT INTO sonae_migrations (component, version, name, variant) VALUES ($1, $2, $3, $4)",
                               component, m.version, m.name, m.variant)
    return variant
