"""Alerts for everyone: ``/api/v1/alerts`` (active, history, one alert, its CAP message, an Atom feed)
and ``/api/v1/events``, a Server-Sent Events stream of alert changes.

These endpoints are public and read-only. Staff-only alerts (standby, device health, silent gauges)
are listed only with ``audience=staff`` or ``audience=all``; once staff authentication exists, those
values must require it. Acknowledging alerts and issuing orders are store functions
(:mod:`alerting.store`) for the staff API to expose.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import hdrs, web

from alerting import store
from alerting.cap import render_atom, render_cap
from alerting.cap_identity import profile_from_settings
from alerting.rules import UNCONFIRMED
from api.answers import AnswerCache
from api.auth import authenticate
from api.authorization import ACCOUNT_KEY, public_view, require_object_scope, require_target_scope
from api.context import POOL, SETTINGS
from api.events import ALERT_HUB, Event
from api.language import query_language
from api.params import ascii_digits, flag, instant, query_int
from api.params import municipality as municipality_filter
from api.problems import Problem
from api.ratelimit import client_address
from api.vary import vary
from sonae.exacttext import EXACT_RULE

routes = web.RouteTableDef()

HEARTBEAT_S = 15.0
REPLAY_LIMIT = 5000  # events replayed on one connection; then it ends and the client resumes from there
REPLAY_BATCH = 500
#: open event streams one client address may hold (a browser tab needs one; a NAT'd office a few)
SSE_PER_CLIENT = 16
SSE_OPEN = web.AppKey("sse_open_per_client", collections.Counter)


async def _audience(request: web.Request, municipality: str | None) -> tuple[str | None, str | None]:
    """(audience filter, municipality filter). Staff-only alerts need a staff or operator login, and
    staff bound to a municipality see its staff alerts only."""
    raw = request.query.get("audience", "public")
    if raw not in ("public", "staff", "all"):
        raise Problem(400, "Bad Request", "audience must be public, staff or all", parameter="audience")
    if raw == "public":
        return raw, municipality
    account = await authenticate(request, "staff", "operator")
    if not account.prefecture_wide:
        require_target_scope(account, municipality if municipality is not None else account.municipality_code)
        municipality = account.municipality_code
    return (None if raw == "all" else raw), municipality


def _staff_view(request: web.Request) -> bool:
    """Whether the request was authenticated for the staff view (``audience=staff|all``): only then are
    staff identities and notes shown."""
    return request.get(ACCOUNT_KEY) is not None


def _dumps(body: Any) -> str:
    """JSON as every answer of the API writes it: UTF-8 characters as they are, no spaces."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)


#: this process's answers of ``/api/v1/alerts``, per version of the alert state its event hub follows
ACTIVE_CACHE = web.AppKey("active_alerts_cache", AnswerCache)


@routes.get("/api/v1/alerts")
async def active_alerts(request: web.Request) -> web.Response:
    if request.query_string:
        exercise = flag(request, "exercise")
        query_language(request)  # accepted for symmetry with other endpoints (checked as theirs are)
        audience, municipality = await _audience(request, municipality_filter(request))
        staff = _staff_view(request)
    else:  # what the parsers above give for no parameter, without asking for each (the page's request);
        # the public view: only audience=staff|all logs in on this public operation (_audience)
        exercise, audience, municipality, staff = None, "public", None, False
    # The answer only changes with an alert event, which this process's hub sees: it is made once per
    # version of the hub's state (never kept while the hub is disconnected and might miss a change)
    hub = request.app.get(ALERT_HUB)
    key, version = (municipality, exercise, audience, staff), hub.version if hub is not None else None
    cache = request.app[ACTIVE_CACHE]
    answer = cache.kept(key, version)
    if answer is None:

        async def make() -> bytes:
            async with request.app[POOL].acquire() as conn:
                rows = await store.list_active(conn, municipality=municipality, exercise=exercise, audience=audience)
            alerts = [store.alert_json(r) for r in rows]
            return _dumps({"alerts": alerts if staff else [public_view(a) for a in alerts]}).encode()

        answer = await cache.answer(key, version, make)
    return answer.response(request, content_type="application/json",
                           cache_control="private, no-cache" if staff else "no-cache")


@routes.get("/api/v1/alerts/history")
async def alert_history(request: web.Request) -> web.Response:
    exercise = flag(request, "exercise")
    audience, municipality = await _audience(request, municipality_filter(request))
    until = instant(request, "to", datetime.now(UTC))
    since = instant(request, "from", datetime(2000, 1, 1, tzinfo=UTC))
    limit = query_int(request, "limit", default=500, lo=1, hi=5000)
    station = request.query.get("station") or None
    async with request.app[POOL].acquire() as conn:
        rows = await store.list_history(conn, municipality=municipality, exercise=exercise, audience=audience,
                                        station_id=station, since=since, until=until, limit=limit)
    events = [{"event_id": r["id"], "alert_id": r["alert_id"], "kind": r["kind"], "version": r["version"],
               "condition": r["condition"], "station_id": r["station_id"], "order_id": r["order_id"],
               "level": r["level"], "old_level": r["old_level"], "reading_ts": _iso(r["reading_ts"]),
               "value": r["value"], "reason": r["reason"], "actor": r["actor"], "note": r["note"],
               "exercise": r["exercise"], "municipality_code": r["municipality_code"],
               "old_municipality_code": r["old_municipality_code"],
               "recorded_at": _iso(r["recorded_at"])} for r in rows]
    if not _staff_view(request):
        events = [public_view(e) for e in events]
    return web.json_response({"events": events}, dumps=_dumps)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def _base_url(request: web.Request) -> str:
    configured = request.app[SETTINGS]["api.public_url"]
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


@routes.get("/api/v1/alerts/feed.atom")
async def atom_feed(request: web.Request) -> web.Response:
    municipality, exercise = municipality_filter(request), flag(request, "exercise")
    async with request.app[POOL].acquire() as conn:
        profile = await profile_from_settings(conn, request.app[SETTINGS])
        rows = await store.list_feed(conn, municipality=municipality, exercise=exercise,
                                     keep_hours=profile.expires_hours)
    body = render_atom(rows, base_url=_base_url(request), profile=profile)
    return web.Response(body=body, content_type="application/atom+xml", charset="utf-8")


async def _alert(request: web.Request) -> dict[str, Any]:
    """The alert of the path. A staff-only alert is answered 404 to anyone who may not see it
    (anonymous, or another municipality's staff), like an alert that does not exist."""
    alert_id = int(request.match_info["alert_id"])
    async with request.app[POOL].acquire() as conn:
        alert = await store.get_alert(conn, alert_id)
    if alert is None:
        raise Problem(404, "Not Found", f"no alert {alert_id}")
    if alert["audience"] != "public":
        vary(request, "Authorization")  # 404 to anyone who may not see it, the alert to staff who may
        if "Authorization" not in request.headers:
            raise Problem(404, "Not Found", f"no alert {alert_id}")
        account = await authenticate(request, "staff", "operator")
        require_object_scope(account, alert["municipality_code"], what=f"alert {alert_id}")
    return alert


@routes.get(r"/api/v1/alerts/{alert_id:\d{1,18}}.cap")
async def alert_cap(request: web.Request) -> web.Response:
    alert = await _alert(request)
    if alert["condition"] == UNCONFIRMED:
        raise Problem(404, "Not Found", f"alert {alert['id']} is an unconfirmed reading (beyond the gauge's "
                      "plausible rate): it has no CAP message until the next reading confirms it")
    async with request.app[POOL].acquire() as conn:
        previous = await store.messages_of(conn, alert["id"])
        profile = await profile_from_settings(conn, request.app[SETTINGS])
    return web.Response(body=render_cap(alert, previous, profile=profile), content_type="application/cap+xml",
                        charset="utf-8")


@routes.get(r"/api/v1/alerts/{alert_id:\d{1,18}}")
async def get_alert(request: web.Request) -> web.Response:
    alert = await _alert(request)
    body = store.alert_json(alert)
    return web.json_response(body if _staff_view(request) else public_view(body), dumps=_dumps)


def _matches(event: Event, *, exercise: bool | None, municipality: str | None, audience: str | None) -> bool:
    if event.id == 0:
        return True  # transient route-safety events concern everyone
    m = event.meta
    return ((exercise is None or m.get("exercise") == exercise)
            # a "moved" event also reaches the municipality the alert left, so its readers drop the alert
            and (municipality is None or municipality in (m.get("municipality_code"), m.get("old_municipality_code")))
            # the audience at the event (alerting.store.events_after); the public also hears the event that
            # ended what it was told (a public alert down to a staff-only level)
            and (audience is None or m.get("told_audience" if audience == "public" else "audience") == audience))


@routes.get("/api/v1/events")
async def event_stream(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``event: alert`` per change; resume with ``Last-Event-ID``.

    Event ids are commit positions (``alert_events.pos``, see :mod:`api.events`): the replay after
    ``Last-Event-ID`` and the live stream follow the same order, so a reconnecting client gets every
    event it has not seen, including one whose transaction committed after a newer-numbered one.
    """
    hub = request.app[ALERT_HUB]
    exercise = flag(request, "exercise")
    audience, municipality = await _audience(request, municipality_filter(request))
    staff = _staff_view(request)
    client = client_address(request, trust_forwarded_for=request.app[SETTINGS]["api.trust_forwarded_for"])
    open_streams = request.app[SSE_OPEN]
    if open_streams[client] >= SSE_PER_CLIENT:
        raise Problem(429, "Too Many Requests", f"at most {SSE_PER_CLIENT} open event streams per client; "
                      "close one first", headers={"Retry-After": "30"})
    vary(request, "Last-Event-ID")  # the replay after it is part of the stream
    raw_last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    last: int | None = None
    if raw_last:
        # the id as this stream sent it (the header's surrounding blanks are no part of a field value, RFC 9110
        # §5.5, and aiohttp drops them); the query's last_event_id is taken exactly (found: last_event_id=5%0A
        # was trimmed and taken as 5)
        if not ascii_digits(raw_last):
            raise Problem(400, "Bad Request", f"Last-Event-ID must be an event id (a whole number in ASCII digits), "
                          f"{EXACT_RULE}")
        last = int(raw_last)
    headers = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    if request.method == hdrs.METH_HEAD:
        # the stream's head only (RFC 9110 §9.3.2): aiohttp writes whatever a prepared stream is given, so a
        # HEAD answered with the stream sent events as bytes after a bodiless head, read by the client as
        # its next answer, and held the connection and a stream slot of the client
        return web.StreamResponse(headers=headers)
    sub = hub.subscribe()
    open_streams[client] += 1
    # read before any await: events the hub hands this subscription from now on are after ``sent``
    sent = hub.last_id
    response = web.StreamResponse(headers=headers)
    try:
        await response.prepare(request)
        await response.write(b"retry: 2000\n\n")
        if last is not None:
            from api.events import load_alert_events

            async with request.app[POOL].acquire() as conn:
                # an id beyond every position (from a rebuilt database) must not hide what comes next
                sent = min(last, await store.last_position(conn))
                replayed, more = 0, True
                while more and replayed < REPLAY_LIMIT:
                    batch = await load_alert_events(conn, sent, limit=REPLAY_BATCH)
                    for event in batch:
                        if _matches(event, exercise=exercise, municipality=municipality, audience=audience):
                            await response.write(event.encode(staff=staff))
                        sent = event.id
                    replayed += len(batch)
                    more = len(batch) >= REPLAY_BATCH
            if more:  # not caught up: end here, the client resumes from the last id it got (no gap)
                sub.close()
        while not sub.dropped:
            try:
                event = await asyncio.wait_for(sub.queue.get(), HEARTBEAT_S)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if sub.dropped:
                break  # too slow, or the server is shutting down
            if event.id:  # alert events are replayable and ordered; transient ones (id 0) pass through
                if event.id <= sent:
                    continue
                sent = event.id
            if _matches(event, exercise=exercise, municipality=municipality, audience=audience):
                await response.write(event.encode(staff=staff))
    except ConnectionResetError:
        return response  # the client went away
    finally:
        hub.unsubscribe(sub)
        open_streams[client] -= 1
        if open_streams[client] <= 0:
            del open_streams[client]
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()  # dropped as too slow: it may resume with Last-Event-ID
    return response
