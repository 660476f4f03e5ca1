"""Reading Sonae's entities from the database (the same on plain PostgreSQL and TimescaleDB).

Used by the API's NGSI-LD view and by the push worker: both see exactly the same entities.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg

from alerting import store as alerts_store
from alerting.cap_identity import CapProfile, load_profile
from alerting.texts import text_for
from evac.store import shelter_rows
from ingest import queries
from ingest.registry import shown_station
from ngsi import entities as E

#: as the staff sensor-health view reads them (api/staff.py); the last reading is of a measurement
_DEVICES = """
SELECT s.id, s.name, s.kind, s.lat, s.lon, s.municipality_code, s.exercise,
       (SELECT max(ts) FROM readings r WHERE r.station_id = s.id AND r.kind IN ('level', 'rain')) AS last_reading,
       (SELECT value FROM readings r WHERE r.station_id = s.id AND r.kind = 'battery_pct' ORDER BY ts DESC LIMIT 1) AS battery_pct,
       (SELECT value FROM readings r WHERE r.station_id = s.id AND r.kind = 'rssi_dbm' ORDER BY ts DESC LIMIT 1) AS rssi_dbm,
       (SELECT value FROM readings r WHERE r.station_id = s.id AND r.kind = 'status' ORDER BY ts DESC LIMIT 1) AS status
FROM stations s
WHERE ($1::text IS NULL OR s.id = $1) AND ($2::text IS NULL OR s.municipality_code = $2)
ORDER BY s.id
"""


def alert_description(a: dict[str, Any]) -> str:
    """The alert's Japanese headline (the CAP ``headline`` wording)."""
    text = text_for(a["condition"], int(a["level"] or 0), "ja-JP", reason=a.get("reason"),
                    falling=a.get("state") == "de-escalated", dwell_s=a.get("dwell_s"))
    return text.headline.format(place=a.get("station_name") or a.get("river") or a.get("municipality_name") or "")


async def load(conn: asyncpg.Connection, *, types: Iterable[str], base: str, profile: CapProfile | None = None,
               device_municipality: str | None = None, station_id: str | None = None) -> list[dict[str, Any]]:
    """Every entity of ``types`` (key-values), ordered by type then id. ``profile``: the installation's CAP
    profile (alert ids and CAP identifiers; default: from the database and ``base``). ``device_municipality``
    limits devices to one municipality (staff bound to it); ``station_id`` limits gauges and devices to one."""
    wanted = set(types)
    out: list[dict[str, Any]] = []
    active: list[dict[str, Any]] | None = None
    if wanted & {E.WATER, E.ALERT, E.MUNICIPALITY}:
        active = [a for a in await alerts_store.list_active(conn, audience="public") if E.is_public_alert(a)]
    if E.WATER in wanted:
        levels = E.river_levels(active or [])
        for row in await queries.stations_with_latest(conn):
            if station_id is not None and row["id"] != station_id:
                continue
            entity = E.gauge(row, level=levels.get(row["id"]))
            if entity is not None:
                out.append(entity)
    if E.DEVICE in wanted:
        for row in await conn.fetch(_DEVICES, station_id, device_municipality):
            out.append(E.device(shown_station(dict(row))))  # its name as it shows, as the gauges'
    if E.ALERT in wanted and active:
        profile = profile or await load_profile(conn, public_url=base)
        out.extend(E.alert(a, base=base, description=alert_description(a), incident=profile.incident(a["id"]),
                           cap_identifier=profile.identifier(a["id"], a["version"])) for a in active)
    if E.POI in wanted:
        out.extend(E.shelter(r) for r in await shelter_rows(conn))
    if E.MUNICIPALITY in wanted:
        rows = await conn.fetch("SELECT code, name_ja FROM municipalities ORDER BY code")
        out.extend(E.municipality_levels([dict(r) for r in rows], active or []))
    order = {t: i for i, t in enumerate(E.TYPES)}
    out.sort(key=lambda e: (order[e["type"]], e["id"]))
    return out


async def load_one(conn: asyncpg.Connection, eid: str, *, base: str,
                   profile: CapProfile | None = None) -> dict[str, Any] | None:
    """One entity by id (any type), or None."""
    parsed = E.local_id(eid)
    if parsed is None:
        return None
    kind, local = parsed
    station = local if kind in (E.WATER, E.DEVICE) else None
    for e in await load(conn, types=[kind], base=base, profile=profile, station_id=station):
        if e["id"] == eid:
            return e
    return None
