"""Sonae's domain objects as NGSI-LD entities (key-values form), and the normalized form of any of them.

Pure functions over the rows the stores return; no I/O. Which Smart Data Model, and why:

* a river gauge → **WaterObserved** (dataModel.Environment). It is an observation at a place and time
  (``location`` and ``dateObserved`` are required), which is what a gauge's latest reading is; FloodMonitoring
  carries only two thresholds (``alertLevel``, ``dangerLevel``) and a free-text ``floodLevelStatus``, where a
  Japanese gauge has four (水防団待機/氾濫注意/避難判断/氾濫危険) or, for a 危機管理型水位計, three, plus the
  警戒レベル相当 they imply. Sonae adds them as its own terms (see :mod:`ngsi.context`). SDM's ``waterLevel``
  has ``minimum: 0``: a stage below the gauge's zero is only in ``riverLevel`` (always present with a reading).
  Gauges without a position are left out (``location`` is required).
* a device (every station, gateways included) → **Device**: ``batteryLevel`` (0–1, from battery_pct),
  ``rssi`` (dBm), ``deviceState`` (ok, low_battery, fault, maintenance, from the ``status`` reading).
* an active public alert → **Alert** with ``capIdentifier`` and ``capDocument``. Unconfirmed readings
  (``river_level_unconfirmed``) and staff-only alerts never become entities; who acknowledged or issued
  an alert is never included.
* a shelter → **PointOfInterest** (there is no SDM shelter model) with ``capacity`` (absent when unknown),
  ``occupancy``, ``shelterHazards`` and ``shelterStatus``.
* a municipality → Sonae's own type **MunicipalityWarningLevel** (no SDM model; no geometry yet).
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from alerting.rules import ORDER, RIVER
from ingest.contract import STATUS_NAMES

WATER = "WaterObserved"
DEVICE = "Device"
ALERT = "Alert"
POI = "PointOfInterest"
MUNICIPALITY = "MunicipalityWarningLevel"
TYPES = (WATER, DEVICE, ALERT, POI, MUNICIPALITY)
#: entity types anyone may read; Device is staff data (battery, signal, faults)
PUBLIC_TYPES = frozenset({WATER, ALERT, POI, MUNICIPALITY})

#: registry threshold column → Sonae term
THRESHOLD_TERMS = {
    "th_standby": "standbyWaterLevel", "th_caution": "cautionWaterLevel", "th_evacuation": "evacuationWaterLevel",
    "th_danger": "dangerWaterLevel", "th_obs_start": "observationStartWaterLevel", "th_crisis": "crisisWaterLevel",
    "th_overflow": "overflowWaterLevel",
}
#: the ``status`` reading's codes (SenML ``status``; as in the staff sensor-health view)
DEVICE_STATES = STATUS_NAMES  # the ingest contract's status codes
#: 警戒レベル → CAP-like severity of SDM Alert (informational, low, medium, high, critical)
SEVERITY = {2: "low", 3: "medium", 4: "high", 5: "critical"}
#: attributes that are Relationships in the normalized form
RELATIONSHIPS = frozenset({"refDevice", "alertSource"})


def iso(ts: datetime) -> str:
    """UTC ISO 8601 with ``Z`` (what SDM's ``date-time`` and NGSI-LD expect)."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def entity_id(kind: str, local_id: str) -> str:
    """``urn:ngsi-ld:<Type>:<id>``, the id percent-encoded so that any local id yields a valid URN."""
    return f"urn:ngsi-ld:{kind}:{urllib.parse.quote(local_id, safe='-._~')}"


def local_id(eid: str) -> tuple[str, str] | None:
    """(type, local id) of an entity id made by :func:`entity_id`, else None."""
    parts = eid.split(":", 3)
    if len(parts) != 4 or parts[0] != "urn" or parts[1] != "ngsi-ld" or parts[2] not in TYPES or not parts[3]:
        return None
    return parts[2], urllib.parse.unquote(parts[3])


def _point(lat: Any, lon: Any) -> dict[str, Any] | None:
    if lat is None or lon is None:
        return None
    return {"type": "Point", "coordinates": [float(lon), float(lat)]}


def _finite(value: Any) -> float | None:
    return float(value) if value is not None and math.isfinite(float(value)) else None


def gauge(row: Mapping[str, Any], *, level: int | None = None) -> dict[str, Any] | None:
    """A river gauge (a ``stations`` row with its latest level, as :func:`ingest.queries.stations_with_latest`
    returns) as WaterObserved; ``level`` is the 警戒レベル相当 of its public alert in force. None for a
    gauge without position, or a station that is not a river gauge."""
    location = _point(row.get("lat"), row.get("lon"))
    if location is None or row.get("kind") != "river_level":
        return None
    observed = row.get("latest_ts") or row.get("updated_at") or row.get("created_at")
    e: dict[str, Any] = {"id": entity_id(WATER, row["id"]), "type": WATER, "name": row["name"],
                         "location": location, "dateObserved": iso(observed) if observed else iso(datetime.now(UTC)),
                         "refDevice": entity_id(DEVICE, row["id"]), "gaugeType": row.get("gauge_type") or "none",
                         "exercise": bool(row.get("exercise"))}
    value = _finite(row.get("latest_value"))
    if value is not None:
        e["riverLevel"] = value
        if value >= 0:
            e["waterLevel"] = value
    if row.get("river"):
        e["river"] = row["river"]
    if row.get("municipality_code"):
        e["municipalityCode"] = row["municipality_code"]
    for column, term in THRESHOLD_TERMS.items():
        threshold = _finite(row.get(column))
        if threshold is not None:
            e[term] = threshold
    missing = _finite(row.get("missing_at_or_below"))  # beside the thresholds, as the station API shows it
    if missing is not None:
        e["missingAtOrBelowWaterLevel"] = missing
    if level:
        e["warningLevel"] = int(level)
    return e


#: the temporal attributes of each entity type: NGSI-LD name → (``readings`` kind, divisor from the stored unit),
#: so that a value in the history is the value the entity showed (``batteryLevel`` is 0–1 from battery_pct)
TEMPORAL: dict[str, dict[str, tuple[str, float]]] = {
    WATER: {"riverLevel": ("level", 1.0)},
    DEVICE: {"batteryLevel": ("battery_pct", 100.0), "rssi": ("rssi_dbm", 1.0)},
}


def battery_level(battery_pct: float) -> float:
    """``batteryLevel`` (0–1) of a ``battery_pct`` reading (percent; the ingest contract keeps it in 0–100)."""
    return min(max(battery_pct / TEMPORAL[DEVICE]["batteryLevel"][1], 0.0), 1.0)


def device(row: Mapping[str, Any]) -> dict[str, Any]:
    """A station's device (row: ``stations`` columns plus ``last_reading``, ``battery_pct``, ``rssi_dbm``,
    ``status``) as Device. ``controlledProperty`` follows the station kind."""
    controlled = {"river_level": ["waterLevel"], "rainfall": ["precipitation"]}.get(row.get("kind") or "", [])
    e: dict[str, Any] = {"id": entity_id(DEVICE, row["id"]), "type": DEVICE, "name": row["name"],
                         "controlledProperty": controlled or ["batteryLife"], "exercise": bool(row.get("exercise"))}
    location = _point(row.get("lat"), row.get("lon"))
    if location is not None:
        e["location"] = location
    battery = _finite(row.get("battery_pct"))
    if battery is not None:
        e["batteryLevel"] = battery_level(battery)
    rssi = _finite(row.get("rssi_dbm"))
    if rssi is not None:
        e["rssi"] = rssi
    if row.get("status") is not None:
        e["deviceState"] = DEVICE_STATES.get(int(row["status"]), "unknown")
    if row.get("last_reading") is not None:
        e["dateLastValueReported"] = iso(row["last_reading"])
    if row.get("municipality_code"):
        e["municipalityCode"] = row["municipality_code"]
    return e


def is_public_alert(alert: Mapping[str, Any]) -> bool:
    """Only active public gauge alerts and evacuation orders become Alert entities."""
    return (alert.get("audience") == "public" and alert.get("condition") in (RIVER, ORDER)
            and alert.get("cleared_at") is None)


def alert(a: Mapping[str, Any], *, base: str, description: str, incident: str, cap_identifier: str) -> dict[str, Any]:
    """An active public alert (a row of :func:`alerting.store.list_active`) as Alert, its id made of the
    alert's CAP ``incidents`` value (unique across installations). ``description`` is its Japanese headline,
    ``cap_identifier`` the identifier of its current CAP message, ``base`` the public URL the CAP document
    is served under (the installation's :class:`alerting.cap_identity.CapProfile` gives the two ids)."""
    level = int(a["level"] or 0)
    source = (entity_id(WATER, a["station_id"]) if a.get("station_id")
              else entity_id(MUNICIPALITY, a.get("municipality_code") or "unknown"))
    e: dict[str, Any] = {
        "id": entity_id(ALERT, incident), "type": ALERT, "category": "naturalDisaster",
        "dateIssued": iso(a["raised_at"]), "validFrom": iso(a["raised_at"]), "alertSource": source,
        "description": description, "alertCondition": a["condition"],
        "capIdentifier": cap_identifier,
        "capDocument": f"{base.rstrip('/')}/api/v1/alerts/{a['id']}.cap", "exercise": bool(a["exercise"]),
    }
    if a["condition"] == RIVER:
        # SDM's subCategory is an enum with no evacuation order; an order says so in alertCondition
        e["subCategory"] = "flood"
    if level in SEVERITY:
        e["severity"] = SEVERITY[level]
        e["warningLevel"] = level
    if a.get("municipality_code"):
        e["municipalityCode"] = a["municipality_code"]
    if a.get("area"):
        e["location"] = a["area"]
    else:
        point = _point(a.get("lat"), a.get("lon"))
        if point is not None:
            e["location"] = point
    return e


def shelter(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``shelters`` row as PointOfInterest (capacity absent when the municipality has not given one)."""
    e: dict[str, Any] = {"id": entity_id(POI, row["id"]), "type": POI, "name": row["name"] or row["id"],
                         "category": ["evacuationShelter"], "location": _point(row["lat"], row["lon"]),
                         "occupancy": int(row["occupancy"]), "shelterHazards": sorted(row["hazards"] or []),
                         "shelterStatus": "open" if row["is_open"] else "closed"}
    if row.get("capacity") is not None:
        e["capacity"] = int(row["capacity"])
    if row.get("address"):
        e["address"] = {"streetAddress": row["address"], "addressCountry": "JP"}
    if row.get("municipality_code"):
        e["municipalityCode"] = row["municipality_code"]
    return e


def municipality_levels(municipalities: Iterable[Mapping[str, Any]],
                        alerts: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each municipality's current 警戒レベル: the highest public alert in force of that municipality (its
    gauges' 相当 levels and its evacuation orders, with or without an area), real alerts before drills —
    the municipality rule of ``/api/v1/level``."""
    by_code: dict[str, list[Mapping[str, Any]]] = {}
    for a in alerts:
        if is_public_alert(a) and a.get("municipality_code"):
            by_code.setdefault(a["municipality_code"], []).append(a)
    out = []
    for m in municipalities:
        e: dict[str, Any] = {"id": entity_id(MUNICIPALITY, m["code"]), "type": MUNICIPALITY,
                             "name": m["name_ja"], "municipalityCode": m["code"]}
        in_force = by_code.get(m["code"], [])
        real = [a for a in in_force if not a["exercise"]]
        considered = real or in_force
        top = max((int(a["level"] or 0) for a in considered), default=0)
        if top >= 2:
            e["warningLevel"] = top
            e["exercise"] = not real
        out.append(e)
    return out


def river_levels(alerts: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """station id → 警戒レベル相当 of its public gauge alert in force (a real alert before a drill's)."""
    out: dict[str, tuple[bool, int]] = {}
    for a in alerts:
        if is_public_alert(a) and a["condition"] == RIVER and a.get("station_id"):
            key = (not a["exercise"], int(a["level"] or 0))
            if a["station_id"] not in out or key > out[a["station_id"]]:
                out[a["station_id"]] = key
    return {sid: level for sid, (_, level) in out.items()}


def normalized(e: Mapping[str, Any]) -> dict[str, Any]:
    """The NGSI-LD normalized form of a key-values entity: ``location`` a GeoProperty, ``ref*``/``alertSource``
    Relationships, the rest Properties; the level properties carry ``observedAt`` (the reading time)."""
    out: dict[str, Any] = {"id": e["id"], "type": e["type"]}
    observed = e.get("dateObserved") if e["type"] == WATER else None
    for name, value in e.items():
        if name in ("id", "type", "@context"):
            continue
        if name == "location":
            out[name] = {"type": "GeoProperty", "value": value}
        elif name in RELATIONSHIPS:
            out[name] = {"type": "Relationship", "object": value}
        else:
            attr: dict[str, Any] = {"type": "Property", "value": value}
            if name in ("waterLevel", "riverLevel") and observed:
                attr["observedAt"] = observed
                attr["unitCode"] = "MTR"
            out[name] = attr
    if "@context" in e:
        out["@context"] = e["@context"]
    return out
