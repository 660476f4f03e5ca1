"""Notification endpoints.

Residents (no account):

* ``GET /api/v1/push/vapid-public-key`` — the key a browser subscribes with (``applicationServerKey``)
* ``POST /api/v1/push/subscriptions`` — subscribe: the browser's push subscription, 1–10 areas (a
  municipality, or a circle whose centre is stored rounded to ~100 m), a language and a drills opt-in;
  returns the id and a secret unsubscribe token (only its hash is kept)
* ``DELETE /api/v1/push/subscriptions/{id}`` — unsubscribe, with ``X-Unsubscribe-Token``

Partners and staff (bearer token):

* ``POST /api/v1/webhooks`` (admin) — register a webhook; the HMAC secret is returned once
* ``GET /api/v1/webhooks`` (staff, their municipality) / ``DELETE /api/v1/webhooks/{id}`` (admin)
* ``GET /api/v1/webhooks/{id}/deliveries`` (staff, their municipality) — the delivery log and the
  dead-letter list (``?state=dead``)
* ``GET /api/v1/roster`` (staff) / ``PUT``/``DELETE /api/v1/roster/{username}`` (admin, or staff for
  their own entry) — who is on call for email

Nothing a resident sends is logged; subscriptions are not audited (they carry no identity), staff
actions are.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, NoReturn
from urllib.parse import urlsplit

from aiohttp import web

from alerting.audit import record_audit as audit
from alerting.level import OUTSIDE
from api.auth import authenticate
from api.authorization import require_object_scope, require_target_scope, scope_filter
from api.bodies import covered_municipality, field, json_object, municipality_code
from api.boundaries import index as boundary_index
from api.context import POOL, SETTINGS
from api.language import tag_of
from api.params import path_int, query_int
from api.problems import Problem
from api.ratelimit import client_address
from ingest.municipalities import DRILL_TOWN_RULE, uncovered
from notify import store
from notify.endpoints import (
    EndpointError,
    check_push_endpoint,
    check_webhook_url,
    host_of,
    is_loopback_host,
    named_host,
    parse_hosts,
)
from notify.webpush import Vapid, WebPushError, b64u_decode, check_keys, load_private_key
from notify.worker import vapid_private_pem

routes = web.RouteTableDef()

STATES = ("queued", "sent", "dead", "gone")
#: the Retry-After of a sign-up refused because its client address holds ``notify.push_subscriptions_per_client``
#: subscriptions already (429). That bound is a count, not a rate: a place frees when one of them is unsubscribed,
#: or found expired by the worker (its push service answers 404/410), which nobody can foretell; an hour is a
#: modest pace for a client asking again by itself (found: the 429 had no Retry-After at all, the only one of the
#: API's 429s without it, so a client could only guess when to come back)
PUSH_CLIENT_FULL_RETRY_AFTER_S = 3600
VAPID_KEY = web.AppKey("notify_vapid_public", dict)


def _dumps(value: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat().replace("+00:00", "Z")
        raise TypeError(type(o).__name__)

    return json.dumps(value, ensure_ascii=False, default=default)


# -- residents -----------------------------------------------------------------------------------------
@routes.get("/api/v1/push/vapid-public-key")
async def vapid_public_key(request: web.Request) -> web.Response:
    cache = request.app[VAPID_KEY]
    if "key" not in cache:
        async with request.app[POOL].acquire() as conn:
            pem = await vapid_private_pem(conn, request.app[SETTINGS]["notify.vapid_private_key"])
        cache["key"] = Vapid(load_private_key(pem), "").public_key
    return web.json_response({"public_key": cache["key"]}, headers={"Cache-Control": "public, max-age=3600"})


def _endpoint(value: str, *, allow_http: bool) -> str:
    """The scheme rule (400): https, or http on a loopback host (:func:`notify.endpoints.is_loopback_host`, the
    delivery worker's rule) when ``notify.push_allow_http`` is on. Where it may point is :func:`_public_endpoint`'s
    (422)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise Problem(400, "Bad Request", "subscription.endpoint has a bad host or port", field="subscription") from None
    if parts.scheme == "https" and parts.hostname:
        return value
    if parts.scheme == "http" and allow_http and parts.hostname and is_loopback_host(host_of(value)):
        return value  # the worker's own rule (found: [::ffff:127.0.0.1] and localhost. refused here, sent to there)
    raise Problem(400, "Bad Request", "subscription.endpoint must be the push service's https:// URL"
                  + (" (http:// only to a loopback host: 127.0.0.0/8, ::1, localhost)" if allow_http else ""),
                  field="subscription")


async def _public_endpoint(endpoint: str, settings: Any) -> str:
    """The endpoint's host, when it is a public push service host (``notify.push_hosts``; a name resolving
    only to public addresses); else a 422 problem saying why (found: ``https://127.0.0.1:…`` and
    ``https://169.254.169.254/…`` were accepted and the worker connected to them)."""
    try:
        return await check_push_endpoint(endpoint, hosts=parse_hosts(settings["notify.push_hosts"]),
                                         allow_loopback=settings["notify.push_allow_http"])
    except EndpointError as exc:
        raise Problem(422, "Unprocessable Content", str(exc), field="subscription") from None


async def _client_secret(request: web.Request, conn: Any) -> bytes:
    """The key of :func:`notify.store.client_key`, derived from the VAPID private key (secret, shared by every
    process, kept in the database or the configuration)."""
    cache = request.app[VAPID_KEY]
    if "client_secret" not in cache:
        pem = await vapid_private_pem(conn, request.app[SETTINGS]["notify.vapid_private_key"])
        cache["client_secret"] = hashlib.sha256(b"sonae.push.client-key\0" + pem.encode()).digest()
    return bytes(cache["client_secret"])


def _number(area: dict[str, Any], name: str, low: float, high: float) -> float:
    value = area.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise Problem(400, "Bad Request", f"areas[].{name} must be a number from {low} to {high}", field="areas")
    return float(value)


def _areas(raw: Any) -> list[store.Area]:
    if not isinstance(raw, list) or not 1 <= len(raw) <= store.MAX_AREAS:
        raise Problem(400, "Bad Request", f"areas must be a list of 1 to {store.MAX_AREAS} areas", field="areas")
    out = []
    for area in raw:
        if not isinstance(area, dict):
            raise Problem(400, "Bad Request", "each area is an object", field="areas")
        if "municipality_code" in area:
            code = area["municipality_code"]
            if not isinstance(code, str):
                raise Problem(400, "Bad Request", "areas[].municipality_code must be a string", field="areas")
            out.append(store.Area(municipality_code=municipality_code(code, name="areas[].municipality_code")))
        else:
            lat = _number(area, "lat", -90, 90)
            lon = _number(area, "lon", -180, 180)
            radius = _number(area, "radius_m", *store.RADIUS_M)
            out.append(store.Area(lat=lat, lon=lon, radius_m=int(round(radius))))
    return out


def _area_json(a: store.Area) -> dict[str, Any]:
    if a.municipality_code is not None:
        return {"municipality_code": a.municipality_code}
    out: dict[str, Any] = {"lat": a.lat, "lon": a.lon, "radius_m": a.radius_m}
    if a.near_municipalities is not None:
        out["municipalities"] = list(a.near_municipalities)
    return out


def _require_covered(areas: list[store.Area]) -> None:
    """A 422 problem when a circle touches no municipality Sonae knows (found: accepted 201 with
    ``"municipalities": []``, a subscription that could never receive anything). The rule of
    ``/api/v1/level``'s ``covered: false``; the problem carries the same words for residents
    (:data:`alerting.level.OUTSIDE`) in every language."""
    for i, a in enumerate(areas):
        if a.near_municipalities is not None and not a.near_municipalities:
            _outside(f"areas[{i}] (lat {a.lat:g}, lon {a.lon:g}, radius_m {a.radius_m}) is outside the area "
                     "Sonae covers: it touches no municipality Sonae knows, so no alert would reach it")


def _outside(detail: str) -> NoReturn:
    """The 422 problem of an area outside what Sonae covers, a circle's or a municipality code's (one shape:
    ``covered: false`` and the words for residents, :data:`alerting.level.OUTSIDE`, in every language)."""
    raise Problem(422, "Unprocessable Content", detail, field="areas", covered=False,
                  guidance={lang: {"headline": h, "instruction": t} for lang, (h, t) in OUTSIDE.items()})


@routes.post("/api/v1/push/subscriptions")
async def post_subscription(request: web.Request) -> web.Response:
    body = await json_object(request)
    sub = field(body, "subscription", dict)
    settings = request.app[SETTINGS]
    endpoint = _endpoint(field(sub, "endpoint", str), allow_http=settings["notify.push_allow_http"])
    host = await _public_endpoint(endpoint, settings)
    keys = field(sub, "keys", dict)
    try:
        p256dh = b64u_decode(field(keys, "p256dh", str))
        auth = b64u_decode(field(keys, "auth", str))
        check_keys(p256dh, auth)
    except (ValueError, WebPushError) as exc:
        detail = str(exc) if isinstance(exc, WebPushError) else "subscription.keys must be base64url"
        raise Problem(400, "Bad Request", detail, field="subscription") from None
    lang = tag_of(field(body, "lang", str, default="ja-JP"))  # any spelling Accept-Language takes; stored canonical
    areas = _areas(body.get("areas"))
    drills = field(body, "drills", bool, default=False)
    async with request.app[POOL].acquire() as conn:
        for i, a in enumerate(areas):
            if a.municipality_code is not None and (why := await uncovered(conn, a.municipality_code,
                                                                                  exercise=drills)):
                if why == DRILL_TOWN_RULE:  # covered, but for drills only: not the words of a place outside
                    raise Problem(422, "Unprocessable Content", f"areas[{i}].municipality_code: {why}",
                                  field="areas")
                _outside(f"areas[].municipality_code (areas[{i}]): {why}")
        # without drills the drill town's code reaches nothing (fan-out gives it exercise alerts only)
        areas = store.placed(areas, await boundary_index(request.app, conn),
                             drill_town=await store.drill_town_box(conn) if drills else None)
        _require_covered(areas)
        hosts = parse_hosts(settings["notify.push_hosts"])
        client = store.client_key(client_address(request, trust_forwarded_for=settings["api.trust_forwarded_for"]),
                                  await _client_secret(request, conn))
        try:
            sub_id, token = await store.add_subscription(
                conn, endpoint=endpoint, p256dh=p256dh, auth=auth, lang=lang, drills=drills, areas=areas,
                client=client, endpoint_host=host, per_client=settings["notify.push_subscriptions_per_client"],
                # a push service the operator named carries every resident of its browsers: no bound there
                per_host=0 if named_host(host, hosts) else settings["notify.push_subscriptions_per_host"])
        except store.SubscriptionLimitError as exc:
            if exc.what == "client":
                raise Problem(429, "Too Many Requests", str(exc), field="subscription",
                              headers={"Retry-After": str(PUSH_CLIENT_FULL_RETRY_AFTER_S)}) from None
            raise Problem(422, "Unprocessable Content", str(exc), field="subscription") from None
    return web.json_response(
        {"id": sub_id, "unsubscribe_token": token, "lang": lang, "drills": drills,
         "areas": [_area_json(a.rounded()) for a in areas]},
        status=201, headers={"Cache-Control": "no-store"})


@routes.delete("/api/v1/push/subscriptions/{subscription_id}")
async def delete_subscription(request: web.Request) -> web.Response:
    sub_id = path_int(request, "subscription_id")
    token = request.headers.get("X-Unsubscribe-Token", "")
    if not token or len(token) > 200:
        raise Problem(400, "Bad Request", "send the unsubscribe token in X-Unsubscribe-Token")
    async with request.app[POOL].acquire() as conn:
        removed = await store.remove_subscription(conn, sub_id, token)
    if not removed:
        raise Problem(404, "Not Found", "no such subscription, or the token does not match")
    return web.Response(status=204)


# -- webhooks ------------------------------------------------------------------------------------------
@routes.post("/api/v1/webhooks")
async def post_webhook(request: web.Request) -> web.Response:
    admin = await authenticate(request)
    body = await json_object(request)
    url = field(body, "url", str)
    fmt = field(body, "format", str, default="json")
    min_level = field(body, "min_level", int, default=0)
    conditions = field(body, "conditions", list, default=None)
    description = field(body, "description", str, default="")
    allow_loopback = request.app[SETTINGS]["notify.webhook_allow_loopback"]
    try:  # the rules are the domain's (notify.store, notify.endpoints), the same for `sonae webhooks add`
        store.check_webhook(url=url, fmt=fmt, min_level=min_level, conditions=conditions, description=description,
                            allow_loopback=allow_loopback)
        await check_webhook_url(url, allow_loopback=allow_loopback)  # a name resolving to a refused address
    except (store.WebhookAddressError, EndpointError) as exc:  # a well-formed URL aimed where it may not: 422,
        # as a push endpoint's address (the document's shape allows it; found: a 400 broke the contract test)
        raise Problem(422, "Unprocessable Content", str(exc), field="url") from None
    except store.WebhookError as exc:
        raise Problem(400, "Bad Request", str(exc), field=exc.field) from None
    municipality = municipality_code(field(body, "municipality_code", str, default=admin.municipality_code))
    require_target_scope(admin, municipality)  # a municipal admin: its own municipality's alerts only
    drills = field(body, "drills", bool, default=False)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        await covered_municipality(conn, municipality, exercise=drills)
        hook = await store.add_webhook(
            conn, url=url, created_by=admin.username, description=description,
            fmt=fmt, municipality_code=municipality,
            min_level=min_level, conditions=conditions,
            include_staff=field(body, "include_staff", bool, default=False),
            drills=drills, allow_loopback=allow_loopback)
        await audit(conn, admin.username, "webhook.created", "webhook", hook["id"],
                    {k: v for k, v in hook.items() if k not in ("secret", "created_at")},
                    municipality_code=hook["municipality_code"])
    return web.json_response(hook, status=201, dumps=_dumps, headers={"Cache-Control": "no-store"})


@routes.get("/api/v1/webhooks")
async def get_webhooks(request: web.Request) -> web.Response:
    account = await authenticate(request)
    async with request.app[POOL].acquire() as conn:
        hooks = await store.list_webhooks(conn, municipality=scope_filter(account))
    return web.json_response({"webhooks": hooks}, dumps=_dumps)


@routes.delete("/api/v1/webhooks/{webhook_id}")
async def delete_webhook(request: web.Request) -> web.Response:
    admin = await authenticate(request)
    webhook_id = path_int(request, "webhook_id")
    async with request.app[POOL].acquire() as conn, conn.transaction():
        hook = await store.get_webhook(conn, webhook_id)
        if hook is None:
            raise Problem(404, "Not Found", f"no webhook {webhook_id}")
        require_object_scope(admin, hook["municipality_code"], what=f"webhook {webhook_id}")
        if not await store.delete_webhook(conn, webhook_id):
            raise Problem(404, "Not Found", f"no webhook {webhook_id}")
        await audit(conn, admin.username, "webhook.deleted", "webhook", webhook_id, {},
                    municipality_code=hook["municipality_code"])
    return web.Response(status=204)


@routes.get("/api/v1/webhooks/{webhook_id}/deliveries")
async def get_deliveries(request: web.Request) -> web.Response:
    account = await authenticate(request)
    webhook_id = path_int(request, "webhook_id")
    state = request.query.get("state")
    if state is not None and state not in STATES:
        raise Problem(400, "Bad Request", f"state must be one of {', '.join(STATES)}")
    limit = query_int(request, "limit", default=100, lo=1, hi=1000)
    async with request.app[POOL].acquire() as conn:
        hook = await store.get_webhook(conn, webhook_id)
        if hook is None:
            raise Problem(404, "Not Found", f"no webhook {webhook_id}")
        require_object_scope(account, hook["municipality_code"], what=f"webhook {webhook_id}")
        rows = await store.deliveries(conn, "webhook", webhook_id, state=state, limit=limit)
    return web.json_response({"webhook_id": webhook_id, "deliveries": rows}, dumps=_dumps)


# -- the on-call roster --------------------------------------------------------------------------------
@routes.get("/api/v1/roster")
async def get_roster(request: web.Request) -> web.Response:
    account = await authenticate(request)
    async with request.app[POOL].acquire() as conn:
        rows = await store.roster(conn, municipality=scope_filter(account))
    return web.json_response({"roster": rows}, dumps=_dumps)


def _username(request: web.Request) -> str:
    name = request.match_info["username"]
    if not 3 <= len(name) <= 64:
        raise Problem(404, "Not Found", "no such account")
    return name


@routes.put("/api/v1/roster/{username}")
async def put_roster(request: web.Request) -> web.Response:
    account = await authenticate(request)
    username = _username(request)
    if account.role != "admin" and account.username != username:
        raise Problem(403, "Forbidden", "staff may change only their own roster entry")
    body = await json_object(request)
    given = municipality_code(field(body, "municipality_code", str, default=None))
    lang = tag_of(field(body, "lang", str, default="ja-JP"))  # any spelling Accept-Language takes; stored canonical
    async with request.app[POOL].acquire() as conn, conn.transaction():
        # whose entry: the target account first (404 before any rule of its entry), its municipality the entry's
        # (found: an admin's PUT for a 郡山市 staff member took the admin's municipality, none for a prefecture
        # admin, 422 "required"; and one of another municipality's rosters was accepted)
        if account.username != username:  # an admin: the account must be in the admin's scope
            found = await conn.fetchrow("SELECT municipality_code FROM accounts WHERE username = $1", username)
            if found is None:
                raise Problem(404, "Not Found", f"no account {username}")
            require_object_scope(account, found["municipality_code"], what=f"account {username}")
            own = found["municipality_code"]
        else:
            own = account.municipality_code
        if own is not None and given is not None and given != own:
            raise Problem(422, "Unprocessable Content", f"{username}'s roster entry is for the account's own "
                          f"municipality, {own}", field="municipality_code")
        municipality = own or given
        if municipality is None:
            # valid alone, but an account without a municipality must name one: 422
            raise Problem(422, "Unprocessable Content", "field 'municipality_code' is required for an account "
                          "without a municipality", field="municipality_code")
        require_target_scope(account, municipality)
        await covered_municipality(conn, municipality, exercise=False, staff=True)  # a roster names staff
        try:
            entry = await store.set_roster(
                conn, username=username, municipality_code=municipality, email=field(body, "email", str),
                lang=lang, on_call=field(body, "on_call", bool, default=False),
                drills=field(body, "drills", bool, default=True), updated_by=account.username)
        except store.NotifyError as exc:
            raise Problem(404 if "no account" in str(exc) else 400, "Bad Request" if "email" in str(exc)
                          else "Not Found", str(exc)) from None
        await audit(conn, account.username, "roster.updated", "account", username,
                    {"municipality_code": municipality, "on_call": entry["on_call"], "drills": entry["drills"]},
                    municipality_code=municipality)
    return web.json_response(entry, dumps=_dumps)


@routes.delete("/api/v1/roster/{username}")
async def delete_roster(request: web.Request) -> web.Response:
    admin = await authenticate(request)
    username = _username(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        entries = await store.roster(conn, username=username)
        if not entries:
            raise Problem(404, "Not Found", f"{username} is not on the roster")
        require_object_scope(admin, entries[0]["municipality_code"], what=f"roster entry {username}")
        removed = await store.remove_roster(conn, username)
        if removed is None:
            raise Problem(404, "Not Found", f"{username} is not on the roster")
        await audit(conn, admin.username, "roster.removed", "account", username, removed,
                    municipality_code=removed["municipality_code"])
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    app[VAPID_KEY] = {}
    app.router.add_routes(routes)
