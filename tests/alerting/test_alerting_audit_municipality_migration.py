"""Migration ``alerting/082_audit_municipality``: audit rows written before it are given the municipality they
concern where it can be told reliably, and keep NULL where it cannot.

The old state is built as it was: every other component up to date, alerting's migrations before 082, audit rows
as the old ``record_audit`` wrote them (no municipality), then today's migrations over it (plain PostgreSQL and
TimescaleDB: ``--backend``)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from api.auth import create_account
from sonae.migrations import migrate, registered_components
from tests.migration_support import schema_before

KORI, FUKU = "072036", "072010"
SQUARE = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.39], [140.37, 37.40], [140.36, 37.40],
                                               [140.36, 37.39]]]}


async def _old(conn: asyncpg.Connection, actor: str, action: str, object_type: str, object_id: Any,
               detail: dict[str, Any] | None = None) -> int:
    """One row as the old ``record_audit`` wrote it."""
    return int(await conn.fetchval(
        "INSERT INTO audit_log (actor, action, object_type, object_id, detail) VALUES ($1, $2, $3, $4, $5) "
        "RETURNING id", actor, action, object_type, str(object_id), json.dumps(detail or {})))


async def test_old_audit_rows_get_their_municipality_where_it_can_be_told(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        for component in registered_components():
            await schema_before(conn, 82 if component == "alerting" else 10**6, component=component)
        assert not await conn.fetchval("SELECT count(*) FROM information_schema.columns "
                                       "WHERE table_name = 'audit_log' AND column_name = 'municipality_code'")
        for name, muni in (("kori-admin", KORI), ("kori-staff", KORI), ("pref-admin", None)):
            await create_account(conn, username=name, password="correct horse battery",
                                 role="admin" if "admin" in name else "staff", municipality_code=muni)
        await conn.execute("INSERT INTO stations (id, name, municipality_code) VALUES ('akutsu', '阿久津', $1)", KORI)
        order = await conn.fetchval("INSERT INTO evacuation_orders (municipality_code, level, issued_by) "
                                    "VALUES ($1, 4, 'pref-admin') RETURNING id", KORI)
        alert = await conn.fetchval(
            """INSERT INTO alerts (station_id, condition, audience, municipality_code, level, max_level, state,
                                   raised_at, changed_at)
               VALUES ('akutsu', 'river_level', 'public', $1, 2, 2, 'raised', now(), now()) RETURNING id""", FUKU)
        await conn.execute("""INSERT INTO hazard_areas (id, hazard, geometry, source, municipality_code, created_by,
                                                        updated_by, removed_by, removed_at)
                              VALUES ('h1', 'flood', $1, 'staff', $2, 'pref-admin', 'pref-admin', 'pref-admin',
                                      now())""", json.dumps(SQUARE), KORI)
        hook = await conn.fetchval("INSERT INTO webhooks (url, secret, municipality_code, created_by, deleted_at) "
                                   "VALUES ('https://partner.example/h', 's', $1, 'pref-admin', now()) RETURNING id",
                                   KORI)
        rows = {
            # an order's rows: from its order (the cancellation's detail names no municipality)
            "order.issued": await _old(conn, "pref-admin", "order.issued", "evacuation_order", order,
                                       {"municipality_code": KORI, "level": 4}),
            "order.cancelled": await _old(conn, "pref-admin", "order.cancelled", "evacuation_order", order),
            # the rule engine's alert of a Koriyama gauge, moved to Fukushima later: Koriyama's before the move
            "alert.raised": await _old(conn, "rules", "alert.raised", "alert", alert, {"station_id": "akutsu"}),
            "alert.moved": await _old(conn, "rules", "alert.moved", "alert", alert, {"from": KORI, "to": FUKU}),
            "alert.escalated": await _old(conn, "rules", "alert.escalated", "alert", alert),
            # a 5-digit code of a detail written before issue #14: the 6-digit code
            "hazard_area.added": await _old(conn, "pref-admin", "hazard_area.added", "hazard_area", "h2",
                                            {"municipality_code": "07201"}),
            "hazard_area.removed": await _old(conn, "pref-admin", "hazard_area.removed", "hazard_area", "h1"),
            "webhook.deleted": await _old(conn, "pref-admin", "webhook.deleted", "webhook", hook),
            "station.moved": await _old(conn, "pref-admin", "station.updated", "station", "akutsu",
                                        {"from": {"municipality_code": KORI}, "to": {"municipality_code": FUKU}}),
            # an account's rows: the account's municipality, whoever acted
            "account.password_changed": await _old(conn, "command line", "account.password_changed", "account",
                                                   "kori-staff"),
            # whatever a municipal account did
            "shelter.by_kori": await _old(conn, "kori-admin", "shelter.updated", "shelter", "s1", {"is_open": True}),
            # cannot be told: a prefecture admin's shelter edit (the shelter's municipality now may not be the one
            # it had), a station edit that did not move it, a prefecture-wide run, a prefecture account's login
            "shelter.by_pref": await _old(conn, "pref-admin", "shelter.updated", "shelter", "s1", {"is_open": False}),
            "station.renamed": await _old(conn, "pref-admin", "station.updated", "station", "akutsu",
                                          {"from": {"name": "a"}, "to": {"name": "b"}}),
            "simulation.started": await _old(conn, "pref-admin", "simulation.started", "simulation", "run-1"),
            "account.login": await _old(conn, "pref-admin", "account.login", "account", "pref-admin"),
        }
        applied = await migrate(conn)
        assert "alerting/082_audit_municipality" in applied, applied
        got = {name: await conn.fetchval("SELECT municipality_code FROM audit_log WHERE id = $1", row_id)
               for name, row_id in rows.items()}
        assert got == {
            "order.issued": KORI, "order.cancelled": KORI,
            "alert.raised": KORI, "alert.moved": FUKU, "alert.escalated": FUKU,
            "hazard_area.added": FUKU, "hazard_area.removed": KORI, "webhook.deleted": KORI, "station.moved": FUKU,
            "account.password_changed": KORI, "shelter.by_kori": KORI,
            "shelter.by_pref": None, "station.renamed": None, "simulation.started": None, "account.login": None,
        }
        assert await migrate(conn) == []  # applied once
        # the audit query's index is there
        assert await conn.fetchval("SELECT count(*) FROM pg_indexes WHERE indexname = 'audit_log_municipality'") == 1
    finally:
        await conn.close()
