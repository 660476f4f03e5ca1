"""What staff do, authenticated and scoped to their municipality, every action audited.

* ``POST /api/v1/alerts/{id}/acknowledge`` — acknowledge an alert
* ``POST /api/v1/orders`` / ``POST /api/v1/orders/{id}/cancel`` — issue or cancel an evacuation order
* ``PATCH /api/v1/shelters/{id}`` — open or close a shelter, update its occupancy or capacity
* ``PATCH /api/v1/stations/{id}`` — edit a gauge: its name, municipality, exercise flag, 洪水予報 thresholds
* ``POST /api/v1/hazards`` / ``DELETE /api/v1/hazards/{id}`` — draw or remove a hazard area
* ``GET /api/v1/hazard-maps`` / ``PUT|DELETE /api/v1/hazard-maps/{id}/link`` — imported hazard maps
  (PLATEAU, 国土数値情報) and what puts them in force (a gauge, a river, a JMA warning area)
* ``GET /api/v1/sensors/health`` — silent gauges, batteries, device faults
* ``GET /api/v1/audit`` — the audit log (admins)
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from alerting.audit import SYSTEM_ACTORS
from alerting.audit import record_audit as audit
from alerting.rules import device_problems
from alerting.silence import station_silence
from alerting.store import AlertError, acknowledge_alert, cancel_order, get_alert, issue_order
from api.auth import authenticate
from api.authorization import require_object_scope, require_target_scope, scope_filter
from api.bodies import (
    covered_municipality,
    field,
    int_field,
    json_object,
    municipality_code,
    number_field,
    shown_field,
)
from api.boundaries import area_municipality
from api.context import POOL, SETTINGS
from api.params import path_int, query_int
from api.problems import Problem
from api.stations import station_json
from evac.hazards import HAZARD_TYPES
from evac.store import (
    LINK_KINDS,
    MapLink,
    StoreError,
    add_hazard_area,
    hazard_area,
    hazard_map_json,
    hazard_map_rows,
    link_hazard_map,
    remove_hazard_area,
    set_shelter_state,
)
from ingest.contract import STATION_ID, STATION_ID_RULE, STATUS_NAMES
from ingest.queries import stations_with_latest
from ingest.registry import (
    EDITABLE,
    FLOOD_THRESHOLDS,
    MISSING_RULE,
    RegistryError,
    edit_station,
    shown_station,
)

routes = web.RouteTableDef()
#: the spaces around a name typed into a form, trimmed (patch_station)
FORM_SPACES = " \u3000"
MAX_PEOPLE = 1_000_000  # a shelter's occupancy or capacity (the largest 指定避難所 hold a few thousand)
#: a station's name, characters (the longest 水位観測所 names are a few dozen)
MAX_STATION_NAME = 200
#: the range of a threshold, m on the gauge's datum (gauge zero, or T.P. elevations up to a few hundred m)
THRESHOLD_M = (-100.0, 10000.0)
MAX_PENALTY = 1000.0  # travel-time factor of a penalty area; beyond it the area is as good as blocked


@routes.post("/api/v1/alerts/{alert_id}/acknowledge")
async def acknowledge(request: web.Request) -> web.Response:
    account = await authenticate(request)
    alert_id = path_int(request, "alert_id")
    body = await json_object(request) if request.body_exists else {}
    note = shown_field(body, "note", default=None, line_breaks=True)
    async with request.app[POOL].acquire() as conn:
        alert = await get_alert(conn, alert_id)
        if alert is None:
            raise Problem(404, "Not Found", f"no alert {alert_id}")
        require_object_scope(account, alert.get("municipality_code"), what=f"alert {alert_id}")
        async with conn.transaction():
            # a repeated acknowledgement (a retried request, a second click) is the same fact: answered with
            # the first, nothing written again (found: each wrote another event and audit entry)
            event_id = await _acknowledged_already(conn, alert_id, user=account.username, note=note)
            repeated = event_id is not None
            if event_id is None:
                try:
                    event_id = await acknowledge_alert(conn, alert_id, user=account.username, note=note)
                except AlertError as exc:
                    raise Problem(409, "Conflict", str(exc)) from None
    return web.json_response({"alert_id": alert_id, "event_id": event_id, "acknowledged_by": account.username,
                              "repeated": repeated})


async def _acknowledged_already(conn: Any, alert_id: int, *, user: str, note: str | None) -> int | None:
    """The event id of ``user``'s acknowledgement of the alert as it stands (its version), when ``note`` adds
    nothing to it (None or the same); else None. Locks the alert's row (call in a transaction), so that two
    acknowledgements at once are one. An alert that changed since (a higher level, a move) is acknowledged
    anew: that is news the user has seen."""
    await conn.execute("SELECT 1 FROM alerts WHERE id = $1 FOR UPDATE", alert_id)
    row = await conn.fetchrow(
        """SELECT e.id, e.note FROM alerts a JOIN alert_events e ON e.alert_id = a.id AND e.version = a.version
           WHERE a.id = $1 AND e.kind = 'acknowledged' AND e.actor = $2
           ORDER BY e.id DESC LIMIT 1""", alert_id, user)
    if row is None or (note is not None and note != row["note"]):
        return None
    return int(row["id"])


@routes.post("/api/v1/orders")
async def post_order(request: web.Request) -> web.Response:
    account = await authenticate(request)
    body = await json_object(request)
    municipality = municipality_code(field(body, "municipality_code", str, default=account.municipality_code))
    if municipality is None:
        raise Problem(422, "Unprocessable Content", "field 'municipality_code' is required for an account "
                      "without a municipality", field="municipality_code")
    require_target_scope(account, municipality)
    level = int_field(body, "level", lo=3, hi=5)
    area = field(body, "area", dict, default=None)
    exercise = field(body, "exercise", bool, default=False)
    area_desc = shown_field(body, "area_desc", default=None, line_breaks=True)  # the CAP headline and areaDesc
    note = shown_field(body, "note", default=None, line_breaks=True)
    async with request.app[POOL].acquire() as conn:
        await covered_municipality(conn, municipality, exercise=exercise)
        if area is not None:
            await area_municipality(request, conn, account, municipality, area, name="area", exercise=exercise)
        try:
            order_id, change = await issue_order(
                conn, municipality_code=municipality, level=level, issued_by=account.username,
                area=area, area_desc=area_desc, note=note, exercise=exercise)
        except AlertError as exc:
            raise Problem(400, "Bad Request", str(exc)) from None
    return web.json_response({"order_id": order_id, "alert_id": change.alert_id}, status=201)


@routes.post("/api/v1/orders/{order_id}/cancel")
async def post_cancel_order(request: web.Request) -> web.Response:
    account = await authenticate(request)
    order_id = path_int(request, "order_id")
    body = await json_object(request) if request.body_exists else {}
    async with request.app[POOL].acquire() as conn:
        municipality = await conn.fetchval("SELECT municipality_code FROM evacuation_orders WHERE id = $1", order_id)
        if municipality is None:
            raise Problem(404, "Not Found", f"no evacuation order {order_id}")
        require_object_scope(account, municipality, what=f"evacuation order {order_id}")
        note = shown_field(body, "note", default=None, line_breaks=True)
        async with conn.transaction():
            # cancelled already (a retried request, a colleague first): the order's state, nothing written again
            done = await conn.fetchrow(
                """SELECT (SELECT id FROM alerts WHERE order_id = o.id) AS alert_id, o.cancelled_by, o.cancelled_at
                   FROM evacuation_orders o WHERE o.id = $1 FOR UPDATE OF o""", order_id)
            if done is not None and done["cancelled_at"] is not None:
                return web.json_response({"order_id": order_id, "alert_id": done["alert_id"], "state": "cancelled",
                                          "cancelled_by": done["cancelled_by"], "repeated": True})
            try:
                change = await cancel_order(conn, order_id, cancelled_by=account.username, note=note)
            except AlertError as exc:
                raise Problem(409, "Conflict", str(exc)) from None
    return web.json_response({"order_id": order_id, "alert_id": change.alert_id, "state": "cancelled",
                              "cancelled_by": account.username, "repeated": False})


@routes.patch("/api/v1/shelters/{shelter_id}")
async def patch_shelter(request: web.Request) -> web.Response:
    account = await authenticate(request)
    shelter_id = request.match_info["shelter_id"][:128]
    body = await json_object(request)
    changes: dict[str, Any] = {
        "occupancy": int_field(body, "occupancy", lo=0, hi=MAX_PEOPLE, default=None),
        "is_open": field(body, "is_open", bool, default=None),
        "capacity": int_field(body, "capacity", lo=0, hi=MAX_PEOPLE, default=None),
    }
    async with request.app[POOL].acquire() as conn:
        municipality = await conn.fetchval("SELECT municipality_code FROM shelters WHERE id = $1", shelter_id)
        if municipality is None and not await conn.fetchval("SELECT 1 FROM shelters WHERE id = $1", shelter_id):
            raise Problem(404, "Not Found", "no such shelter")
        require_object_scope(account, municipality, what="such shelter")
        async with conn.transaction():
            try:
                row = await set_shelter_state(conn, shelter_id, actor=account.username, **changes)
            except StoreError as exc:
                raise Problem(400, "Bad Request", str(exc)) from None
            await audit(conn, account.username, "shelter.updated", "shelter", shelter_id,
                        {k: v for k, v in changes.items() if v is not None}, municipality_code=municipality)
    return web.json_response({"id": shelter_id, "occupancy": row["occupancy"], "is_open": row["is_open"],
                              "capacity": row["capacity"]})


@routes.patch("/api/v1/stations/{station_id}")
async def patch_station(request: web.Request) -> web.Response:
    """Edit a registered station (staff and admins of its municipality, audited ``station.updated``).

    Body: any of ``name`` and ``name_en`` (text, not blank, at most :data:`MAX_STATION_NAME` characters;
    ``name_en`` null clears it), ``municipality_code`` (団体コード: 6 digits with the check digit, or the
    5-digit form), ``exercise`` (bool), the 洪水予報 thresholds ``th_standby``, ``th_caution``,
    ``th_evacuation``, ``th_danger`` (m on the station's datum, :data:`THRESHOLD_M`) and ``missing_at_or_below``
    (m, the stage at or below which a reading is 欠測; null or ``"none"``: no such sentinel,
    :data:`ingest.registry.MISSING_RULE`). The rules of the edited station are the registry's
    (:func:`ingest.registry.edit_station`): thresholds all four, finite, rising (equal allowed) and above
    ``missing_at_or_below`` as a station file's must (checked when the edit sets a threshold or the sentinel;
    a rename, move or exercise switch of a station stored with stages that break them is not refused); a code
    of a municipality in the list; names without hidden characters (:mod:`sonae.nametext`); a rename without
    ``name_en`` clears the English name. The change is a
    registry change: the rules worker follows it (``alerting.worker.RulesWorker.follow_registry``): a move
    takes the station's open alerts to the new municipality, an exercise switch ends the alerts of the stream
    the station no longer has, new thresholds judge its level again. Answers the station as ``GET
    /api/v1/stations/{id}`` does; an edit that changes nothing answers it too, with no audit entry and no
    registry change.

    Errors: 400 a field of the wrong type or range, or nothing to change; 401/403 not logged in or not staff;
    403 a new municipality outside the account's; 404 no such station (or one outside the account's
    municipality); 422 an edited station that breaks the registry's rules (the message says which)."""
    account = await authenticate(request)
    station_id = request.match_info["station_id"]
    if not STATION_ID.match(station_id):
        raise Problem(400, "Bad Request", f"a station id is {STATION_ID_RULE}")
    body = await json_object(request)
    for name in ("name", "municipality_code", "exercise", *FLOOD_THRESHOLDS):
        if name in body and body[name] is None:
            raise Problem(400, "Bad Request", f"field {name!r} cannot be null: leave it out to keep it", field=name)
    changes: dict[str, Any] = {}
    for name in ("name", "name_en"):
        if name in body:
            # a name typed into the staff form: the spaces around it (ASCII or ideographic, U+3000) are no part of
            # the name and are trimmed, as a form does (" 本宮 " is 本宮); that is the one trimming. A line break, tab
            # or other control or invisible character is not trimmed (found: .strip() took "本宮\n" as 本宮): it
            # stays in the text and the registry's rule refuses it, 422 naming it (ingest.registry.Station.validate,
            # sonae.nametext, the rule of the station file too; so no shown_field here, whose 400 would say the same)
            text = field(body, name, str, default=None)
            changes[name] = None if text is None else text.strip(FORM_SPACES)
            if text is not None and not 1 <= len(changes[name]) <= MAX_STATION_NAME:
                raise Problem(400, "Bad Request", f"field {name!r} must be 1 to {MAX_STATION_NAME} characters, "
                                                  "not only spaces", field=name)
    if "municipality_code" in body:
        changes["municipality_code"] = municipality_code(field(body, "municipality_code", str))
    if "exercise" in body:
        changes["exercise"] = field(body, "exercise", bool)
    for name in FLOOD_THRESHOLDS:
        if name in body:
            changes[name] = float(number_field(body, name, lo=THRESHOLD_M[0], hi=THRESHOLD_M[1]))
    if MISSING_RULE in body:  # null (or "none"): the gauge has no 欠測 sentinel, every stage is a stage
        raw = body[MISSING_RULE]
        changes[MISSING_RULE] = None if raw is None or raw == "none" else float(
            number_field(body, MISSING_RULE, lo=THRESHOLD_M[0], hi=THRESHOLD_M[1]))
    if not changes:
        raise Problem(400, "Bad Request", f"nothing to change: give one or more of {', '.join(EDITABLE)}")
    async with request.app[POOL].acquire() as conn:
        found = await conn.fetchrow("SELECT municipality_code FROM stations WHERE id = $1", station_id)
        if found is None:
            raise Problem(404, "Not Found", f"no station {station_id!r}")
        require_object_scope(account, found["municipality_code"], what=f"station {station_id!r}")
        if "municipality_code" in changes:
            require_target_scope(account, changes["municipality_code"])
        async with conn.transaction():
            try:
                result = await edit_station(conn, station_id, changes)
            except RegistryError as exc:
                raise Problem(422, "Unprocessable Content", str(exc)) from None
            if result is None:
                raise Problem(404, "Not Found", f"no station {station_id!r}")
            before, after = result
            if after:  # an edit that changes nothing is no action: nothing to audit
                # the station's municipality after the edit, read in its transaction (a move's other one is the
                # detail's "from")
                await audit(conn, account.username, "station.updated", "station", station_id,
                            {"from": before, "to": after}, municipality_code=await conn.fetchval(
                                "SELECT municipality_code FROM stations WHERE id = $1", station_id))
        row = [r for r in await stations_with_latest(conn) if r["id"] == station_id][0]
    return web.json_response(station_json(row))


@routes.post("/api/v1/hazards")
async def post_hazard(request: web.Request) -> web.Response:
    account = await authenticate(request)
    body = await json_object(request)
    municipality = municipality_code(field(body, "municipality_code", str, default=account.municipality_code))
    require_target_scope(account, municipality)
    geometry = field(body, "geometry", dict)
    hazard = field(body, "hazard", str, default="flood")
    if hazard not in HAZARD_TYPES:
        raise Problem(400, "Bad Request", f"hazard must be one of {', '.join(HAZARD_TYPES)}", field="hazard")
    try:
        area = hazard_area(
            hazard=hazard, geometry=geometry, severity=field(body, "severity", str, default="blocked"),
            penalty_factor=number_field(body, "penalty_factor", lo=1.0, hi=MAX_PENALTY, default=1.0), source="staff",
            exercise=field(body, "exercise", bool, default=False), label=shown_field(body, "label", default=""))
    except StoreError as exc:
        raise Problem(400, "Bad Request", str(exc), field="geometry") from None
    async with request.app[POOL].acquire() as conn:
        await covered_municipality(conn, municipality, exercise=area.exercise)
        # outside the transaction: loading the boundaries and measuring the area take a while
        municipality = await area_municipality(request, conn, account, municipality, geometry, name="geometry",
                                               exercise=area.exercise)
        async with conn.transaction():
            area_id = await add_hazard_area(conn, area, actor=account.username, municipality_code=municipality)
            await audit(conn, account.username, "hazard_area.added", "hazard_area", area_id,
                        {"hazard": hazard, "severity": area.severity, "municipality_code": municipality,
                         "exercise": area.exercise, "label": area.label}, municipality_code=municipality)
    return web.json_response({"id": area_id}, status=201)


@routes.delete("/api/v1/hazards/{area_id}")
async def delete_hazard(request: web.Request) -> web.Response:
    account = await authenticate(request)
    area_id = request.match_info["area_id"][:128]
    async with request.app[POOL].acquire() as conn:
        row = await conn.fetchrow("SELECT municipality_code FROM hazard_areas WHERE id = $1 AND removed_at IS NULL",
                                  area_id)
        if row is None:
            raise Problem(404, "Not Found", "no such hazard area")
        require_object_scope(account, row["municipality_code"], what="such hazard area")
        async with conn.transaction():
            # removed by a request at the same time (the check above is outside the transaction): that one
            # removed and audited it; this one finds none, as it would after it (found: both answered 204 and
            # audited the removal twice)
            if not await remove_hazard_area(conn, area_id, actor=account.username):
                raise Problem(404, "Not Found", "no such hazard area")
            await audit(conn, account.username, "hazard_area.removed", "hazard_area", area_id, {},
                        municipality_code=row["municipality_code"])
    return web.Response(status=204)


@routes.get("/api/v1/hazard-maps")
async def get_hazard_maps(request: web.Request) -> web.Response:
    account = await authenticate(request)
    async with request.app[POOL].acquire() as conn:
        rows = await hazard_map_rows(conn)
    maps = [hazard_map_json(r) for r in rows
            if r["municipality_code"] is None or account.may_act_in(r["municipality_code"])]
    return web.json_response({"maps": maps}, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def _map_in_scope(request: web.Request, conn: Any, account: Any) -> tuple[str, str | None]:
    """The map's id and municipality (None: a prefecture-wide map), 404 when the account may not see it."""
    map_id = request.match_info["map_id"][:200]
    row = await conn.fetchrow("SELECT municipality_code FROM hazard_maps WHERE id = $1", map_id)
    if row is None:
        raise Problem(404, "Not Found", f"no hazard map {map_id!r}: GET /api/v1/hazard-maps lists them")
    if row["municipality_code"] is not None:  # another municipality's map: as if missing
        require_object_scope(account, row["municipality_code"], what=f"hazard map {map_id!r}")
    return map_id, row["municipality_code"]


@routes.put("/api/v1/hazard-maps/{map_id}/link")
async def put_hazard_map_link(request: web.Request) -> web.Response:
    account = await authenticate(request)
    body = await json_object(request)
    kind = field(body, "kind", str)
    if kind not in LINK_KINDS:
        raise Problem(400, "Bad Request", f"kind must be one of {', '.join(LINK_KINDS)}", field="kind")
    try:
        link = MapLink.given(kind, field(body, "ref", str), at_level=field(body, "at_level", int),
                             phenomenon=field(body, "phenomenon", str, default=None))
    except StoreError as exc:
        raise Problem(400, "Bad Request", str(exc)) from None
    async with request.app[POOL].acquire() as conn:
        map_id, map_municipality = await _map_in_scope(request, conn, account)
        async with conn.transaction():
            await link_hazard_map(conn, map_id, link, actor=account.username)
            await audit(conn, account.username, "hazard_map.linked", "hazard_map", map_id,
                        {"kind": link.kind, "ref": link.ref, "at_level": link.at_level,
                         "phenomenon": link.phenomenon}, municipality_code=map_municipality)
        row = next(r for r in await hazard_map_rows(conn) if r["id"] == map_id)
    return web.json_response(hazard_map_json(row), dumps=lambda o: json.dumps(o, ensure_ascii=False))


@routes.delete("/api/v1/hazard-maps/{map_id}/link")
async def delete_hazard_map_link(request: web.Request) -> web.Response:
    account = await authenticate(request)
    async with request.app[POOL].acquire() as conn:
        map_id, map_municipality = await _map_in_scope(request, conn, account)
        async with conn.transaction():
            await link_hazard_map(conn, map_id, None, actor=account.username)
            await audit(conn, account.username, "hazard_map.unlinked", "hazard_map", map_id, {},
                        municipality_code=map_municipality)
    return web.Response(status=204)


# the station's own stream (exercise readings for an exercise station), as the rules worker's alerts
_HEALTH = """
SELECT s.id, s.name,
       (SELECT value FROM readings r WHERE r.station_id = s.id AND r.kind = 'battery_pct' AND r.exercise = s.exercise
        ORDER BY ts DESC LIMIT 1) AS battery_pct,
       (SELECT value FROM readings r WHERE r.station_id = s.id AND r.kind = 'rssi_dbm' AND r.exercise = s.exercise
        ORDER BY ts DESC LIMIT 1) AS rssi_dbm,
       (SELECT value FROM readings r WHERE r.station_id = s.id AND r.kind = 'status' AND r.exercise = s.exercise
        ORDER BY ts DESC LIMIT 1) AS status
FROM stations s
WHERE ($1::text IS NULL OR s.municipality_code = $1)
"""


@routes.get("/api/v1/sensors/health")
async def sensor_health(request: web.Request) -> web.Response:
    """Every station in scope with its problems now. ``silent`` is the rules worker's verdict, from the same
    query, clock, factor and grace (:func:`alerting.silence.station_silence`, settings ``alerting.silent_factor``,
    ``alerting.exercise_grace_s``);
    ``last_reading`` is the newest reading of any kind, the time that verdict counts from."""
    account = await authenticate(request)
    factor = request.app[SETTINGS]["alerting.silent_factor"]
    async with request.app[POOL].acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        silence = await station_silence(conn, factor=factor, grace_s=request.app[SETTINGS]["alerting.exercise_grace_s"],
                                        municipality_code=scope_filter(account))
        # (the station's name as it shows, as every station answer: ingest.registry.shown_station)
        devices = {r["id"]: shown_station(dict(r)) for r in await conn.fetch(_HEALTH, scope_filter(account))}
    out = []
    for s in silence:
        r = devices[s.station_id]
        age = s.seconds_since_data
        code = int(r["status"]) if r["status"] is not None else None
        status = STATUS_NAMES.get(code) if code is not None else None
        # the rules of the device-health alerts (alerting.rules), as a snapshot
        problems = device_problems(silent=s.silent, battery_pct=r["battery_pct"], status=code)
        out.append({"station_id": s.station_id, "name": r["name"], "municipality_code": s.municipality_code,
                    "exercise": s.exercise,
                    "last_reading": s.last_data.isoformat().replace("+00:00", "Z") if s.last_data else None,
                    "seconds_since_last_reading": None if age is None else round(age),
                    "expected_interval_s": s.expected_interval_s, "battery_pct": r["battery_pct"],
                    "rssi_dbm": r["rssi_dbm"], "status": status, "problems": problems})
    return web.json_response({"stations": out})


@routes.get("/api/v1/audit")
async def audit_log(request: web.Request) -> web.Response:
    """The audit log, newest first; each entry names the municipality it concerns (``municipality_code``, null for
    none). A municipal admin sees the entries about its municipality, whoever acted (a prefecture admin, the
    rule engine ``rules``, the ``command line``), and those by its own accounts; never one about another
    municipality only (found: only those by its own accounts, so an order a prefecture admin issued for it, or
    an alert the rule engine raised for its gauge, was missing). A prefecture admin sees every entry."""
    account = await authenticate(request)
    limit = query_int(request, "limit", default=100, lo=1, hi=1000)
    async with request.app[POOL].acquire() as conn:
        # each side of the OR has its index (migration alerting 082): (municipality_code, id), (actor, id)
        rows = await conn.fetch(
            "SELECT id, at, actor, action, object_type, object_id, municipality_code, detail FROM audit_log "
            "WHERE $2::text IS NULL OR municipality_code = $2 "
            "OR (actor IN (SELECT username FROM accounts WHERE municipality_code = $2) AND actor <> ALL($3::text[])) "
            "ORDER BY id DESC LIMIT $1", limit, scope_filter(account), list(SYSTEM_ACTORS))
    return web.json_response({"entries": [{**dict(r), "at": r["at"].isoformat(), "detail": json.loads(r["detail"])}
                                          for r in rows]})
