"""The alert tables: lifecycle changes, acknowledgements, evacuation orders, history and audit.

Every change runs inside the caller's transaction and ends with ``pg_notify('sonae_alerts', …)``
carrying the alert and event ids, so every API process learns of it when (and only when) it commits.
The database is the source of truth; NOTIFY and MQTT only say "look".

Staff actions (:func:`acknowledge_alert`, :func:`issue_order`, :func:`cancel_order`) take the user's
name; authentication and roles are the API's business and are added there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from alerting.audit import record_audit
from alerting.levels import is_public
from alerting.rules import HELD, ORDER, RIVER, SPIKE, STEPPED_DOWN, UNCONFIRMED, Transition
from alerting.texts import REACHED, REJUDGED
from sonae.geojson import GeometryError, read_geometry
from sonae.municipality_code import (
    DRILL_TOWN_CODE,
    DRILL_TOWN_NAMES,
    MunicipalityCodeError,
    drill_town_refusal,
    normalise,
)
from sonae.nametext import shown_text

NOTIFY_CHANNEL = "sonae_alerts"
#: the note of an alert event found by replaying a stream after late readings (``Transition.re_evaluated``);
#: the event's reason stays the rule that decided it (``threshold``, ``trend``…)
RE_EVALUATED_NOTE = "re-evaluated: late readings replayed in reading time"
#: the payload on ``NOTIFY_CHANNEL`` when a name alerts are shown with changes (station, river,
#: municipality, order area: migration 025), with no alert event
NAMES_CHANGED = "names"
#: the advisory lock the commit-order trigger of ``alert_events`` takes (migration 004; "SNOO")
COMMIT_ORDER_LOCK = 0x534E_4F4F

_ALERT_COLUMNS = """
    a.id, a.station_id, a.order_id, a.condition, a.exercise, a.audience, a.municipality_code, a.level,
    a.max_level, a.state, a.reason, a.value, a.value_at, a.dwell_s, a.threshold, a.raised_at, a.changed_at, a.cleared_at,
    a.version, a.acknowledged_by, a.acknowledged_at, a.created_at, a.updated_at,
    s.name AS station_name, s.name_en AS station_name_en, s.river, s.lat, s.lon, s.gauge_type,
    m.name_ja AS municipality_name, m.name_en AS municipality_name_en,
    o.area, o.area_desc, o.note AS order_note, o.cancel_note AS order_cancel_note, o.issued_by, o.cancelled_by
"""
_ALERT_FROM = """
    FROM alerts a
    LEFT JOIN stations s ON s.id = a.station_id
    LEFT JOIN municipalities m ON m.code = a.municipality_code
    LEFT JOIN evacuation_orders o ON o.id = a.order_id
"""

#: an alert as it was at an event ``e`` (alias ``a``, with the joins of :data:`_ALERT_FROM`): the alerts row
#: stored with the event (``alert_events.alert_state``, migration 053), over the row as it is now for
#: columns the stored state lacks (added to ``alerts`` after the event was recorded). Names (station,
#: municipality, order area) are read as they are now, as everywhere they are shown.
_EVENT_ALERT_FROM = """
    FROM alert_events e
    JOIN alerts live ON live.id = e.alert_id
    CROSS JOIN LATERAL jsonb_populate_record(NULL::alerts, to_jsonb(live) || coalesce(e.alert_state,
        jsonb_build_object('version', e.version, 'municipality_code', e.municipality_code))) a
    LEFT JOIN stations s ON s.id = a.station_id
    LEFT JOIN municipalities m ON m.code = a.municipality_code
    LEFT JOIN evacuation_orders o ON o.id = a.order_id
"""
#: the alert's audience at the event before ``e`` (NULL for its first): an event that ends what the public
#: was told (down from a public level to a staff one) is for those who were told
_PREVIOUS_AUDIENCE = """(SELECT p.alert_state->>'audience' FROM alert_events p WHERE p.alert_id = e.alert_id
                         AND p.id < e.id ORDER BY p.id DESC LIMIT 1)"""


class AlertError(ValueError):
    """A staff action that cannot be done (unknown alert, order already cancelled, bad area…)."""


@dataclass(frozen=True)
class AlertChange:
    alert_id: int
    event_id: int
    kind: str
    municipality_code: str | None


def to_dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def audience_for(condition: str, level: int | None) -> str:
    """``public`` for river levels and orders at 警戒レベル 2–5; staff for everything else — including
    unconfirmed river levels (:data:`~alerting.rules.UNCONFIRMED`), whatever their level."""
    if condition in (RIVER, ORDER) and level is not None and is_public(level):
        return "public"
    return "staff"


async def last_position(conn: asyncpg.Connection) -> int:
    """The commit position of the newest committed alert event (0 when there is none)."""
    return int(await conn.fetchval("SELECT coalesce(max(pos), 0) FROM alert_events"))


async def _notify(conn: asyncpg.Connection, alert_id: int, event_id: int) -> None:
    await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL,
                       json.dumps({"alert_id": alert_id, "event_id": event_id}))


async def _event(conn: asyncpg.Connection, alert: asyncpg.Record | dict[str, Any], kind: str, *,
                 level: int | None, old_level: int | None, reading_ts: datetime | None,
                 value: float | None, reason: str | None, actor: str, note: str | None = None,
                 old_municipality_code: str | None = None) -> int:
    """Record one event of ``alert`` (its row as the change left it, in the caller's transaction), with that
    row as ``alert_state``: what every later reader of the event tells (:data:`_EVENT_ALERT_FROM`)."""
    return int(await conn.fetchval(
        """INSERT INTO alert_events (alert_id, kind, version, level, old_level, reading_ts, value, reason, actor,
                                     note, exercise, municipality_code, old_municipality_code, alert_state)
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, to_jsonb(a) FROM alerts a WHERE a.id = $1
           RETURNING id""",
        alert["id"], kind, alert["version"], level, old_level, reading_ts, value, reason, actor, note,
        alert["exercise"], alert["municipality_code"], old_municipality_code))


async def apply_transition(
    conn: asyncpg.Connection, *, station_id: str, municipality_code: str | None, exercise: bool,
    t: Transition, actor: str = "rules", alert_id: int | None = None, note: str | None = None,
) -> AlertChange | None:
    """Apply one rule transition to the (station, condition, exercise) alert. Call in a transaction.

    A river-level transition to the open alert's own level with a level rule (``threshold``/``trend``) and a
    threshold other than the alert's updates the alert to them (event ``re-evaluated``, a new version: a CAP
    ``Update``, not notified by push or webhooks): the row's reason and threshold follow what holds the level.
    Any other transition to the alert's own level changes nothing (None).

    ``alert_id`` names the open alert instead (to clear one whose station was deleted: its ``station_id``
    is NULL then, ``ON DELETE SET NULL``). ``note``: the event's note and the audit's ``note`` (what led to a
    change worded by its rule: a registry change re-judging the level)."""
    at = to_dt(t.ts)
    value_at = to_dt(t.value_ts) if t.value_ts is not None else None
    if alert_id is None:
        open_alert = await conn.fetchrow(
            """SELECT * FROM alerts WHERE station_id = $1 AND condition = $2 AND exercise = $3
               AND cleared_at IS NULL FOR UPDATE""", station_id, t.condition, exercise)
    else:
        open_alert = await conn.fetchrow(
            "SELECT * FROM alerts WHERE id = $1 AND condition = $2 AND cleared_at IS NULL FOR UPDATE",
            alert_id, t.condition)
    if alert_id is not None and open_alert is not None:
        station_id = open_alert["station_id"]
    detail = {"station_id": station_id, "condition": t.condition, "exercise": exercise,
              "old_level": t.old_level, "new_level": t.new_level, "reading_ts": at.isoformat(),
              "value": t.value, "reason": t.reason}
    if note is not None:
        detail["note"] = note
    if t.re_evaluated:
        detail["re_evaluated"] = True
        note = RE_EVALUATED_NOTE if note is None else f"{RE_EVALUATED_NOTE}; {note}"
    reason = t.reason
    if (open_alert is not None and open_alert["level"] == t.new_level and open_alert["state"] == "de-escalated"
            and reason == "threshold"):
        # a level lowered earlier, reached at the same level now (by new thresholds; by the river rising to the
        # threshold — a trend's level 3 lowered from 4 reaching 避難判断水位): never worded as falling
        reason = REJUDGED if note == REJUDGED else REACHED
    if (open_alert is not None and t.new_level is not None and open_alert["level"] != t.new_level
            and open_alert["audience"] == "public" and audience_for(t.condition, t.new_level) != "public"):
        return await _leave_public(conn, open_alert, t, at=at, detail=detail, actor=actor, note=note,
                                   ended_by=REJUDGED if REJUDGED in (note or "") else None)
    if t.new_level is None:
        if open_alert is None:
            return None
        alert = await conn.fetchrow(
            f"""UPDATE alerts SET state = 'cleared', cleared_at = $2, changed_at = $2, version = version + 1,
                   value = coalesce($3, value), reason = $4, {_STAGE_TIME.format(value=3, at=5, dwell=6)},
                   updated_at = now()
               WHERE id = $1 RETURNING *""", open_alert["id"], at, t.value, t.reason, value_at, t.dwell_s)
        kind = "cleared"
    elif open_alert is None:
        alert = await conn.fetchrow(
            """INSERT INTO alerts (station_id, condition, exercise, audience, municipality_code, level, max_level,
                                   state, reason, value, threshold, raised_at, changed_at, value_at, dwell_s)
               VALUES ($1, $2, $3, $4, $5, $6, $6, 'raised', $7, $8, $9, $10, $10, $11, $12) RETURNING *""",
            station_id, t.condition, exercise, audience_for(t.condition, t.new_level), municipality_code,
            t.new_level, t.reason, t.value, t.threshold, at, value_at, t.dwell_s)
        kind = "raised"
    elif open_alert["level"] == t.new_level:
        # the same level held for another cause (re-judged under new thresholds: a level 3 now held by the trend
        # rule, not by a 避難判断水位 it no longer reaches): the row follows what holds the level, as an update
        if not _cause_changed(open_alert, t):
            return None
        kind = "re-evaluated"
        alert = await conn.fetchrow(
            f"""UPDATE alerts SET reason = $2, value = coalesce($3, value), threshold = $4, changed_at = $5,
                   {_STAGE_TIME.format(value=3, at=6, dwell=7)}, version = version + 1, updated_at = now()
               WHERE id = $1 RETURNING *""", open_alert["id"], reason, t.value, t.threshold, at, value_at, t.dwell_s)
    else:
        kind = "escalated" if t.new_level > open_alert["level"] else "de-escalated"
        alert = await conn.fetchrow(
            f"""UPDATE alerts SET level = $2, max_level = greatest(max_level, $2), state = $3, reason = $4,
                   value = coalesce($5, value), threshold = coalesce($6, threshold), changed_at = $7,
                   {_STAGE_TIME.format(value=5, at=9, dwell=10)}, version = version + 1,
                   audience = CASE WHEN audience = 'public' THEN 'public' ELSE $8 END, updated_at = now()
               WHERE id = $1 RETURNING *""",
            open_alert["id"], t.new_level, kind, t.reason, t.value, t.threshold, at,
            audience_for(t.condition, t.new_level), value_at, t.dwell_s)
    assert alert is not None
    old = None if open_alert is None else open_alert["level"]
    event_id = await _event(conn, alert, kind, level=t.new_level, old_level=old, reading_ts=at, value=t.value,
                            reason=alert["reason"] if kind == "re-evaluated" else t.reason, actor=actor, note=note)
    # an unconfirmed alert withdrawn live, or a level whose reading a replay found a spike: withdrawn, not cleared
    withdrawn = kind == "cleared" and t.reason == SPIKE
    await record_audit(conn, actor, "alert.withdrawn" if withdrawn else f"alert.{kind}", "alert", alert["id"], detail,
                       municipality_code=alert["municipality_code"])
    await _notify(conn, alert["id"], event_id)
    return AlertChange(alert["id"], event_id, kind, alert["municipality_code"])


#: the row's stage time and dwell (migration 081) set with its stage (``$value``): the change's (NULL but for a
#: step-down by time, :data:`alerting.rules.STEPPED_DOWN`), kept when the change has no stage (a registry change
#: dated when it was made keeps the stage it was told with, and so that stage's time)
_STAGE_TIME = ("value_at = CASE WHEN ${value}::float8 IS NULL THEN value_at ELSE ${at}::timestamptz END, "
               "dwell_s = CASE WHEN ${value}::float8 IS NULL THEN dwell_s ELSE ${dwell}::float8 END")

#: the rules whose name, stage and threshold say what holds a river level (``alerting.rules``): reached, forecast,
#: held while the river falls
LEVEL_RULES = ("threshold", "trend", HELD)


def worded_rule(alert: asyncpg.Record | dict[str, Any]) -> str | None:
    """The rule a river-level alert's row is worded by (:func:`alerting.texts.text_for`): :data:`HELD` for a
    level lowered by the river (state ``de-escalated``, reason ``threshold``: "the river has begun to fall"),
    ``threshold`` for a level lowered by new thresholds and reached under them (reason ``REJUDGED``: worded as
    reached) or reached by the river after it was lowered (reason ``REACHED``), else its reason."""
    if (alert["state"] == "de-escalated" and alert["reason"] == "threshold") or alert["reason"] == STEPPED_DOWN:
        return HELD  # a level lowered by time is held by the threshold rule too (worded by time: texts.text_for)
    if alert["reason"] in (REJUDGED, REACHED):
        return "threshold"
    return str(alert["reason"]) if alert["reason"] is not None else None


def _cause_changed(alert: asyncpg.Record, t: Transition) -> bool:
    """Whether ``t``, at ``alert``'s own level, says another rule or threshold holds a river level now than the
    one its row is worded by (:func:`worded_rule`), or tells a level lowered by time (:data:`STEPPED_DOWN`, which
    names its last reading, "none since") by a newer reading than that one."""
    return (t.condition == RIVER and t.reason in LEVEL_RULES
            and ((worded_rule(alert), alert["threshold"]) != (t.reason, t.threshold)
                 or (alert["reason"] == STEPPED_DOWN and alert["value_at"] is not None
                     and to_dt(t.ts) > alert["value_at"])))


async def _leave_public(conn: asyncpg.Connection, public: asyncpg.Record, t: Transition, *, at: datetime,
                        detail: dict[str, Any], actor: str, note: str | None,
                        ended_by: str | None = None) -> AlertChange:
    """A public alert whose level falls below the public levels (to 水防団待機/観測開始, STANDBY): its public life
    ends and a staff-only alert goes on at the new level. Call in a transaction.

    The rule (one for every channel, since each reads the alert's ``audience`` and its ``cleared`` event): an
    alert is public only while it is at a public level (:func:`alerting.levels.is_public`); STANDBY is for
    staff (水防団 get ready; ``alerting/levels.py``, README "Gauges"). So the public alert is *cleared* as when
    the river falls below every threshold — a new version, event ``cleared`` (level None, ``old_level`` its
    public level), audit ``alert.cleared``, the alerts notification — and every public channel says it ended:
    the API lists it no longer, the level answer has no level from it, Atom and CAP carry its ``Cancel``
    (``responseType`` AllClear, or Monitor for a registry change: :func:`alerting.texts.cleared_text`), its
    retained MQTT copy is removed, push and webhooks send its end. In the same transaction a new staff-only
    alert is raised at the new level (event ``raised``, audit ``alert.raised``), with the change's reason,
    stage and threshold, so staff keep seeing the gauge at standby; its note and both audit entries name the
    other alert. A later rise to a public level makes that alert public (:func:`apply_transition`'s
    ``audience``), told to residents as any rise. Returns the staff alert's change: the condition's open
    alert now.

    ``ended_by``: the reason the public alert ends with when it is not the change's (new thresholds,
    ``alerting.texts.REJUDGED``: withdrawn, not the river falling, while the staff alert says what holds
    its level — held while the river falls, or reached).
    """
    end_reason = ended_by or t.reason
    value_at = to_dt(t.value_ts) if t.value_ts is not None else None
    # the staff alert is new (state ``raised``), so it cannot say "lowered" by its state: a level the river fell
    # to by the threshold rule is told as held while the river falls, never as the standby stage "reached"
    staff_reason = HELD if t.reason == "threshold" and ended_by is None else t.reason
    cleared = await conn.fetchrow(
        f"""UPDATE alerts SET state = 'cleared', cleared_at = $2, changed_at = $2, version = version + 1,
               value = coalesce($3, value), reason = $4, {_STAGE_TIME.format(value=3, at=5, dwell=6)},
               updated_at = now()
           WHERE id = $1 RETURNING *""", public["id"], at, t.value, end_reason, value_at, t.dwell_s)
    staff = await conn.fetchrow(
        """INSERT INTO alerts (station_id, condition, exercise, audience, municipality_code, level, max_level,
                               state, reason, value, threshold, raised_at, changed_at, value_at, dwell_s)
           VALUES ($1, $2, $3, 'staff', $4, $5, $5, 'raised', $6, $7, $8, $9, $9, $10, $11) RETURNING *""",
        public["station_id"], t.condition, public["exercise"], public["municipality_code"], t.new_level, staff_reason,
        t.value, t.threshold, at, value_at, t.dwell_s)
    assert cleared is not None and staff is not None
    ended = f"below the public levels: continued by staff-only alert {staff['id']}"
    cleared_event = await _event(conn, cleared, "cleared", level=None, old_level=public["level"], reading_ts=at,
                                 value=t.value, reason=end_reason, actor=actor,
                                 note=ended if note is None else f"{note}; {ended}")
    await record_audit(conn, actor, "alert.withdrawn" if t.reason == SPIKE else "alert.cleared", "alert", cleared["id"],
                       {**detail, "new_level": None, "continued_by": staff["id"]},
                       municipality_code=cleared["municipality_code"])
    await _notify(conn, cleared["id"], cleared_event)
    goes_on = f"continues alert {public['id']} below the public levels, for staff only"
    staff_event = await _event(conn, staff, "raised", level=t.new_level, old_level=None, reading_ts=at,
                               value=t.value, reason=staff_reason, actor=actor,
                               note=goes_on if note is None else f"{note}; {goes_on}")
    await record_audit(conn, actor, "alert.raised", "alert", staff["id"], {**detail, "continues": public["id"]},
                       municipality_code=staff["municipality_code"])
    await _notify(conn, staff["id"], staff_event)
    return AlertChange(staff["id"], staff_event, "raised", staff["municipality_code"])


async def move_alert(conn: asyncpg.Connection, alert_id: int, *, municipality_code: str | None, at: datetime,
                     actor: str = "rules") -> AlertChange | None:
    """Move the open alert ``alert_id`` to ``municipality_code`` (its station's code in the registry now):
    one new version (a CAP ``Update`` whose area carries the new 団体コード), an event of kind ``moved``
    recording both codes (``municipality_code`` the new one, ``old_municipality_code`` the one it left),
    the audit entry ``alert.moved`` and the alerts notification, so readers of either municipality (staff
    scope, ``?municipality=`` lists, feeds, event streams, caches per event) follow. Call in a transaction.

    ``at`` is when the move was seen (the database clock); the alert's reading times are left as they
    are. Returns None, changing nothing, for a cleared or unknown alert or one already there: cleared
    alerts keep the municipality they had (migration ``043_alert_moved``)."""
    before = await conn.fetchrow("SELECT municipality_code FROM alerts WHERE id = $1 AND cleared_at IS NULL FOR UPDATE",
                                 alert_id)
    if before is None or before["municipality_code"] == municipality_code:
        return None
    old = before["municipality_code"]
    alert = await conn.fetchrow(
        """UPDATE alerts SET municipality_code = $2, version = version + 1, updated_at = now()
           WHERE id = $1 RETURNING *""", alert_id, municipality_code)
    reason = f"station moved from municipality {old or '-'} to {municipality_code or '-'}"
    event_id = await _event(conn, alert, "moved", level=alert["level"], old_level=alert["level"], reading_ts=None,
                            value=None, reason=reason, actor=actor, old_municipality_code=old)
    await record_audit(conn, actor, "alert.moved", "alert", alert_id,
                       {"station_id": alert["station_id"], "condition": alert["condition"],
                        "exercise": alert["exercise"], "from": old, "to": municipality_code,
                        "at": at.isoformat()}, municipality_code=municipality_code)
    await _notify(conn, alert_id, event_id)
    return AlertChange(alert_id, event_id, "moved", municipality_code)


async def acknowledge_alert(conn: asyncpg.Connection, alert_id: int, *, user: str, note: str | None = None) -> int:
    """Record that ``user`` has seen the alert (who, when, note). Returns the event id."""
    if not user:
        raise AlertError("an acknowledgement needs the user's name")
    async with conn.transaction():
        alert = await conn.fetchrow(
            """UPDATE alerts SET acknowledged_by = $2, acknowledged_at = now(), updated_at = now()
               WHERE id = $1 RETURNING *""", alert_id, user)
        if alert is None:
            raise AlertError(f"no alert {alert_id}")
        await conn.execute("INSERT INTO alert_acknowledgements (alert_id, user_name, note) VALUES ($1, $2, $3)",
                           alert_id, user, note)
        event_id = await _event(conn, alert, "acknowledged", level=alert["level"], old_level=alert["level"],
                                reading_ts=None, value=None, reason=None, actor=user, note=note)
        await record_audit(conn, user, "alert.acknowledged", "alert", alert_id, {"note": note},
                           municipality_code=alert["municipality_code"])
        await _notify(conn, alert_id, event_id)
    return event_id


def _check_area(area: dict[str, Any] | None) -> None:
    if area is None:
        return
    try:
        read_geometry(area, areas_only=True)
    except GeometryError as exc:
        raise AlertError(f"area: {exc}") from None


async def issue_order(
    conn: asyncpg.Connection, *, municipality_code: str, level: int, issued_by: str,
    area: dict[str, Any] | None = None, area_desc: str | None = None, note: str | None = None,
    exercise: bool = False,
) -> tuple[int, AlertChange]:
    """Issue an evacuation order (level 3 高齢者等避難, 4 避難指示, 5 緊急安全確保) for a municipality or
    a polygon within it. Returns (order id, the alert change it raised).

    Raises
    ------
    AlertError
        A level other than 3, 4, 5; no issuer; a bad code or area; a real order (``exercise`` False) for the
        drill town, which is for exercises only (:func:`sonae.municipality_code.drill_town_refusal`, the rule
        every API and CLI entry applies first: found, this function took one when called directly).
    """
    if level not in (3, 4, 5):
        raise AlertError("an evacuation order is level 3, 4 or 5")
    if not issued_by:
        raise AlertError("an order needs the name of who issues it")
    try:
        municipality_code = normalise(municipality_code)
    except MunicipalityCodeError as exc:
        raise AlertError(str(exc)) from None
    if why := drill_town_refusal(municipality_code, exercise=exercise):
        raise AlertError(why)
    _check_area(area)
    async with conn.transaction():
        order = await conn.fetchrow(
            """INSERT INTO evacuation_orders (municipality_code, area, area_desc, level, note, exercise, issued_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING *""",
            municipality_code, None if area is None else json.dumps(area), area_desc, level, note, exercise,
            issued_by)
        alert = await conn.fetchrow(
            """INSERT INTO alerts (order_id, condition, exercise, audience, municipality_code, level, max_level,
                                   state, reason, raised_at, changed_at)
               VALUES ($1, 'evacuation_order', $2, 'public', $3, $4, $4, 'raised', 'order', $5, $5) RETURNING *""",
            order["id"], exercise, municipality_code, level, order["issued_at"])
        event_id = await _event(conn, alert, "raised", level=level, old_level=None, reading_ts=None, value=None,
                                reason="order", actor=issued_by, note=note)
        await record_audit(conn, issued_by, "order.issued", "evacuation_order", order["id"],
                     {"municipality_code": municipality_code, "level": level, "area": area, "note": note,
                      "exercise": exercise, "alert_id": alert["id"]}, municipality_code=municipality_code)
        await _notify(conn, alert["id"], event_id)
    return int(order["id"]), AlertChange(alert["id"], event_id, "raised", municipality_code)


async def cancel_order(conn: asyncpg.Connection, order_id: int, *, cancelled_by: str,
                       note: str | None = None) -> AlertChange:
    """Cancel (解除) an evacuation order; its alert is cleared (CAP msgType Cancel)."""
    if not cancelled_by:
        raise AlertError("a cancellation needs the name of who cancels")
    async with conn.transaction():
        order = await conn.fetchrow(
            """UPDATE evacuation_orders SET cancelled_by = $2, cancelled_at = now(), cancel_note = $3
               WHERE id = $1 AND cancelled_at IS NULL RETURNING *""", order_id, cancelled_by, note)
        if order is None:
            raise AlertError(f"no active evacuation order {order_id}")
        alert = await conn.fetchrow(
            """UPDATE alerts SET state = 'cleared', cleared_at = $2, changed_at = $2, version = version + 1,
                   reason = 'order cancelled', updated_at = now()
               WHERE order_id = $1 RETURNING *""", order_id, order["cancelled_at"])
        assert alert is not None
        event_id = await _event(conn, alert, "cleared", level=None, old_level=alert["level"], reading_ts=None,
                                value=None, reason="order cancelled", actor=cancelled_by, note=note)
        await record_audit(conn, cancelled_by, "order.cancelled", "evacuation_order", order_id,
                     {"note": note, "alert_id": alert["id"]}, municipality_code=order["municipality_code"])
        await _notify(conn, alert["id"], event_id)
    return AlertChange(alert["id"], event_id, "cleared", order["municipality_code"])


# -- reading -------------------------------------------------------------------------------------
async def get_alert(conn: asyncpg.Connection, alert_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_ALERT_COLUMNS} {_ALERT_FROM} WHERE a.id = $1", alert_id)
    return _row(row) if row else None


#: the names an alert read from the database carries (of its station and municipality), all shown to people
_SHOWN_NAMES = ("station_name", "station_name_en", "river", "municipality_name", "municipality_name_en")
#: the texts staff write that an alert carries to people, multi-line by design: an order's ``area_desc``, the
#: CAP headline and areaDesc (its line breaks kept, as sonae.xmltext writes them; every other hidden character
#: dropped, for one stored before the API refused them: found, "abc\u202edef" reached the CAP headline)
_SHOWN_TEXTS = ("area_desc",)


def _row(row: asyncpg.Record) -> dict[str, Any]:
    """An alert read from the database, its names as they show (:func:`sonae.nametext.shown_text`; None when
    nothing shows): names stored before the name rule may hold hidden or reordering characters, and every
    output is built from this dict — CAP, Atom, push, webhooks, SSE, MQTT, the level page — so they are made
    harmless here, once, whatever the row's age or origin (the registry keeps the stored text, for staff to
    correct at its source)."""
    out = dict(row)
    for key in _SHOWN_NAMES:
        if isinstance(out.get(key), str):
            out[key] = shown_text(out[key]) or None
    for key in _SHOWN_TEXTS:
        if isinstance(out.get(key), str):
            out[key] = shown_text(out[key], line_breaks=True) or None
    if out.get("municipality_code") == DRILL_TOWN_CODE:
        # the drill town by its names wherever its row gives none (not named by this deployment, or named by an
        # operator in Japanese only): found, the resident page showed an order's place as "(079995, …)"
        out["municipality_name"] = out.get("municipality_name") or DRILL_TOWN_NAMES["ja-JP"]
        out["municipality_name_en"] = out.get("municipality_name_en") or DRILL_TOWN_NAMES["en-US"]
    if isinstance(out.get("area"), str):
        out["area"] = json.loads(out["area"])
    return out


async def list_active(conn: asyncpg.Connection, *, municipality: str | None = None, exercise: bool | None = None,
                      audience: str | None = "public") -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""SELECT {_ALERT_COLUMNS} {_ALERT_FROM}
            WHERE a.cleared_at IS NULL AND ($1::text IS NULL OR a.municipality_code = $1)
              AND ($2::bool IS NULL OR a.exercise = $2) AND ($3::text IS NULL OR a.audience = $3)
            ORDER BY a.level DESC, a.changed_at DESC, a.id""", municipality, exercise, audience)
    return [_row(r) for r in rows]


#: the alert events that are CAP messages (one per version; :func:`messages_of`)
MESSAGE_KINDS = ("raised", "escalated", "de-escalated", "cleared", "re-evaluated", "moved")

#: whether an alert's current version is its first public message (alias ``a``): some earlier message was not
#: public (its recorded audience) and none was — or had no recorded audience —, the rule of
#: :func:`alerting.cap.render_cap` (:func:`alerting.cap.public_messages`)
_FIRST_PUBLIC = """(EXISTS (SELECT 1 FROM alert_events p WHERE p.alert_id = a.id AND p.version < a.version
                            AND p.kind = ANY($4::text[]) AND p.alert_state->>'audience' <> 'public')
                    AND NOT EXISTS (SELECT 1 FROM alert_events p WHERE p.alert_id = a.id AND p.version < a.version
                                    AND p.kind = ANY($4::text[])
                                    AND coalesce(p.alert_state->>'audience', 'public') = 'public'))"""


async def list_feed(conn: asyncpg.Connection, *, municipality: str | None = None, exercise: bool | None = None,
                    keep_hours: int = 24) -> list[dict[str, Any]]:
    """Public alerts for the Atom feed: the active ones, and the cleared ones whose Cancel message (sent
    when the ``cleared`` event was recorded) has not expired — ``keep_hours`` is ``cap.expires_hours``. Each
    has ``first_public``: its current version is its first public message (raised at 水防団待機 for staff,
    public later), an ``Alert`` as its CAP message is (:func:`alerting.cap.msg_type`)."""
    rows = await conn.fetch(
        f"""SELECT {_ALERT_COLUMNS}, {_FIRST_PUBLIC} AS first_public {_ALERT_FROM}
            WHERE a.audience = 'public' AND ($1::text IS NULL OR a.municipality_code = $1)
              AND ($2::bool IS NULL OR a.exercise = $2)
              AND (a.cleared_at IS NULL OR EXISTS (
                   SELECT 1 FROM alert_events e WHERE e.alert_id = a.id AND e.kind = 'cleared'
                   AND e.version = a.version AND e.recorded_at > now() - make_interval(hours => $3)))
            ORDER BY a.cleared_at IS NOT NULL, a.level DESC, a.changed_at DESC, a.id""",
        municipality, exercise, keep_hours, list(MESSAGE_KINDS))
    return [_row(r) for r in rows]


async def list_history(conn: asyncpg.Connection, *, municipality: str | None = None, exercise: bool | None = None,
                       audience: str | None = "public", station_id: str | None = None,
                       since: datetime | None = None, until: datetime | None = None,
                       limit: int = 500) -> list[dict[str, Any]]:
    """Alert events, newest first; ``municipality`` matches an event of that municipality, and a ``moved``
    event of an alert that left it (``old_municipality_code``). ``audience`` is the alert's at each event
    (``alert_events.alert_state``), not now: a staff-only raise stays out of the public history after the
    alert became public; ``public`` also lists the event that ended a public alert (:func:`told_audience`)."""
    rows = await conn.fetch(
        f"""SELECT e.*, a.condition, a.station_id, coalesce(e.alert_state->>'audience', a.audience) AS audience,
                   a.order_id FROM alert_events e
           JOIN alerts a ON a.id = e.alert_id
           WHERE ($1::text IS NULL OR e.municipality_code = $1 OR e.old_municipality_code = $1)
             AND ($2::bool IS NULL OR e.exercise = $2)
             AND ($3::text IS NULL OR coalesce(e.alert_state->>'audience', a.audience) = $3
                  OR ($3::text = 'public' AND {_PREVIOUS_AUDIENCE} = 'public'))
             AND ($4::text IS NULL OR a.station_id = $4)
             AND ($5::timestamptz IS NULL OR e.recorded_at >= $5)
             AND ($6::timestamptz IS NULL OR e.recorded_at < $6)
           ORDER BY e.id DESC LIMIT $7""", municipality, exercise, audience, station_id, since, until, limit)
    return [dict(r) for r in rows]


async def alert_at_event(conn: asyncpg.Connection, event_id: int) -> dict[str, Any] | None:
    """The alert of event ``event_id`` as it was right after that event (its level, version, audience,
    state, value, municipality…; see :data:`_EVENT_ALERT_FROM`), as :func:`get_alert` reads it now, with
    ``told_audience`` (:func:`told_audience`). None for an unknown event."""
    row = await conn.fetchrow(
        f"SELECT {_ALERT_COLUMNS}, {_PREVIOUS_AUDIENCE} AS previous_audience {_EVENT_ALERT_FROM} WHERE e.id = $1",
        event_id)
    if row is None:
        return None
    out = _row(row)
    out["told_audience"] = told_audience(out["audience"], out.pop("previous_audience"))
    return out


def told_audience(audience: str, previous: str | None) -> str:
    """Who an event is for: ``public`` when the alert was public at the event, or just before it (the event
    that takes a public alert down to a staff-only level or clears it ends what residents were told, and is
    told to them: :func:`notify.messages.is_ending`); else ``staff``.

    Parameters
    ----------
    audience
        The alert's audience at the event (``alert_events.alert_state``).
    previous
        Its audience at the alert's event before (None for the first).
    """
    return "public" if "public" in (audience, previous) else "staff"


async def events_after(conn: asyncpg.Connection, last_pos: int, *, limit: int = 1000) -> list[dict[str, Any]]:
    """Events committed after position ``last_pos``, in commit order, each with its alert as it was at that
    event (:data:`_EVENT_ALERT_FROM`), not as it is when read: a reader behind (a replay, a backlog) tells
    every change as it was. ``told_audience`` is who the event is for (:func:`told_audience`).

    ``pos`` (not ``id``) is the order: it is given at commit time under a lock (migration 004), so
    every event at or below a position a reader has seen is already visible, and ``pos > last`` never
    skips an event whose transaction committed late. Used by the SSE hub, Last-Event-ID replay and the
    notification fan-out.
    """
    rows = await conn.fetch(
        f"""SELECT e.pos AS event_pos, e.id AS event_id, e.kind AS event_kind, e.version AS event_version,
                   e.level AS event_level,
                   e.old_level AS event_old_level, e.reading_ts AS event_reading_ts, e.actor AS event_actor,
                   e.note AS event_note, e.recorded_at AS event_recorded_at,
                   e.old_municipality_code AS event_old_municipality_code, {_ALERT_COLUMNS},
                   {_PREVIOUS_AUDIENCE} AS previous_audience
            {_EVENT_ALERT_FROM}
            WHERE e.pos > $1 ORDER BY e.pos LIMIT $2""", last_pos, limit)
    out = [_row(r) for r in rows]
    for r in out:
        r["told_audience"] = told_audience(r["audience"], r.pop("previous_audience"))
    return out


async def messages_of(conn: asyncpg.Connection, alert_id: int) -> list[dict[str, Any]]:
    """The CAP messages of an alert so far: one per version, with the time it was sent and the municipality
    it was sent for (its ``sender`` may name it: :meth:`alerting.cap_identity.CapProfile.sender_for`), and the
    alert's ``audience`` then (``alert_events.alert_state``; None for an event recorded without it): a public
    message references only the public ones (:func:`alerting.cap.public_messages`)."""
    rows = await conn.fetch(
        """SELECT DISTINCT ON (version) version, kind, recorded_at, municipality_code,
                  alert_state->>'audience' AS audience
           FROM alert_events
           WHERE alert_id = $1 AND kind = ANY($2::text[])
           ORDER BY version, id""", alert_id, list(MESSAGE_KINDS))
    return [dict(r) for r in rows]


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def alert_json(a: dict[str, Any]) -> dict[str, Any]:
    """The public JSON form of an alert (API, SSE, MQTT)."""
    return {
        "id": a["id"], "condition": a["condition"], "level": a["level"], "max_level": a["max_level"],
        "state": a["state"], "active": a["cleared_at"] is None, "exercise": a["exercise"],
        "audience": a["audience"], "unconfirmed": a["condition"] == UNCONFIRMED, "reason": a["reason"], "station_id": a["station_id"],
        "station_name": a.get("station_name"), "station_name_en": a.get("station_name_en"), "river": a.get("river"),
        "order_id": a["order_id"], "municipality_code": a["municipality_code"],
        "municipality_name": a.get("municipality_name"), "municipality_name_en": a.get("municipality_name_en"), "value": a["value"], "threshold": a["threshold"],
        # the time the stage ``value`` was read when not ``changed_at`` (a step-down by time), and its dwell (s)
        "value_at": _iso(a.get("value_at")), "dwell_s": a.get("dwell_s"),
        "raised_at": _iso(a["raised_at"]), "changed_at": _iso(a["changed_at"]),
        "cleared_at": _iso(a["cleared_at"]), "version": a["version"],
        "acknowledged_by": a["acknowledged_by"], "acknowledged_at": _iso(a["acknowledged_at"]),
        "area": a.get("area"), "location": None if a.get("lat") is None else {"lat": a["lat"], "lon": a["lon"]},
    }


def event_json(e: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": e["event_id"], "kind": e["event_kind"], "version": e["event_version"],
            "level": e["event_level"], "old_level": e["event_old_level"],
            "old_municipality_code": e.get("event_old_municipality_code"),
            "reading_ts": _iso(e["event_reading_ts"]), "actor": e["event_actor"], "note": e["event_note"],
            "recorded_at": _iso(e["event_recorded_at"]), "alert": alert_json(e)}
