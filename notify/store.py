"""Notification tables: push subscriptions, webhooks, the on-call roster, and the delivery queue.

Fan-out (:func:`fan_out`) turns each committed alert event into queue rows, one ``INSERT … SELECT``
per channel and event; the unique key (kind, target, event) makes a repeated pass harmless.

**Area matching (an approximation, on purpose).** No GIS extension is needed:

* a *municipality* area matches alerts of that municipality (団体コード equality);
* a *circle* matches an alert with a place: the gauge's position (with the 2 km of a CAP gauge
  circle, :data:`alerting.cap.GAUGE_RADIUS_KM`) or an order polygon's **bounding box**. The test is
  "distance from the circle's centre to the nearest point of that box ≤ radius + margin", with an
  equirectangular distance (111,320 m × cos(lat) per degree of longitude, 110,574 m per degree of
  latitude): within a few metres at these distances, and an order's bounding box can be larger than
  its polygon, so a circle near a concave order area may be told too — never too few;
* a whole-municipality order (no polygon) reaches circles that touch that municipality
  (``near_municipalities``, computed at subscription time from the municipal boundaries,
  :meth:`ingest.boundaries.BoundaryIndex.touching_circle`; where no boundaries are loaded, the
  municipality of the shelter nearest the centre).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import asyncpg

from alerting import store as alerts
from alerting.cap import GAUGE_RADIUS_KM
from alerting.cap_identity import CapProfile, load_profile
from alerting.drilltown import DRILL_TOWN_MARGIN_M as DRILL_TOWN_MARGIN_M  # re-exported: the one extent rule
from alerting.drilltown import DRILL_TOWN_SOURCE as DRILL_TOWN_SOURCE
from alerting.drilltown import Box, reaches
from alerting.drilltown import drill_town_box as drill_town_box
from alerting.rules import CONDITIONS, UNCONFIRMED
from notify import messages
from notify.endpoints import WEBHOOK_RULE, webhook_host, webhook_refusal
from sonae.municipality_code import DRILL_TOWN_CODE, MunicipalityCodeError, normalise_optional
from sonae.nametext import refused_text

NOTIFY_CHANNEL = "sonae_notify"
#: a circle's centre is kept to this many decimals of a degree (0.001° ≈ 110 m)
CENTRE_DECIMALS = 3
MAX_AREAS = 10
#: the radius a subscribed circle may have, metres (a neighbourhood to a river basin's reach)
RADIUS_M = (100, 20000)


class NotifyError(ValueError):
    """A request that cannot be done; the message says why."""


def _code(value: str | None) -> str | None:
    """A 団体コード in the 6-digit form (None stays None); raises :class:`NotifyError`."""
    try:
        return normalise_optional(value)
    except MunicipalityCodeError as exc:
        raise NotifyError(str(exc)) from None


def _digest(token: str) -> bytes:
    """SHA-256 of the token's bytes as sent. aiohttp reads header bytes that are not UTF-8 as lone
    surrogates (surrogateescape); they are hashed as the bytes they were (such a token matches none),
    where a strict encode raised UnicodeEncodeError, a 500."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


# -- push subscriptions --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Area:
    municipality_code: str | None = None
    lat: float | None = None
    lon: float | None = None
    radius_m: int | None = None
    #: a circle's municipalities (those it touches); None: to be found from the nearest shelter
    near_municipalities: tuple[str, ...] | None = None

    def rounded(self) -> Area:
        if self.lat is None or self.lon is None:
            return self
        return Area(None, round(self.lat, CENTRE_DECIMALS), round(self.lon, CENTRE_DECIMALS), self.radius_m,
                    self.near_municipalities)


class Boundaries(Protocol):
    """Municipal boundaries (``ingest.boundaries.BoundaryIndex``, 国土数値情報 N03)."""

    def __len__(self) -> int: ...

    def touching_circle(self, lat: float, lon: float, radius_m: float) -> list[str]: ...


def placed(areas: Sequence[Area], boundaries: Boundaries | None, *,
           drill_town: Box | None = None) -> list[Area]:
    """The areas rounded as stored, each circle with the municipalities whose alerts reach it: those
    the circle touches when ``boundaries`` are loaded. Without boundaries :func:`add_subscription`
    takes the municipality of the shelter nearest the circle's centre.

    ``drill_town`` is the drill town's box (:func:`drill_town_box`). The drill town has no boundary and lies
    inside real 郡山市 (``evac.drilltown``): a circle reaching its box (with :data:`DRILL_TOWN_MARGIN_M`)
    touches both, the real municipality for real alerts and
    :data:`~sonae.municipality_code.DRILL_TOWN_CODE` for the drill town's exercises (found: a circle in the
    drill town listed 郡山市 only, so a drill order for the whole drill town reached none of its drill
    subscribers). Fan-out matches the drill town's code for exercise alerts only (:data:`_PUSH_FANOUT`)."""
    rows = [a.rounded() for a in areas]
    if boundaries is None or not len(boundaries):
        return rows
    out = []
    for a in rows:
        if a.lat is None or a.lon is None or a.radius_m is None:
            out.append(a)
            continue
        near = boundaries.touching_circle(a.lat, a.lon, a.radius_m)
        if reaches(a.lat, a.lon, drill_town, radius_m=a.radius_m):
            near = sorted({*near, DRILL_TOWN_CODE})
        out.append(replace(a, near_municipalities=tuple(near)))
    return out


class SubscriptionLimitError(NotifyError):
    """Too many subscriptions from one client (``what`` = ``client``) or to one endpoint host (``host``)."""

    def __init__(self, message: str, *, what: str) -> None:
        super().__init__(message)
        self.what = what


def client_key(address: str, secret: bytes) -> bytes:
    """The stored stand-in of a client address: HMAC-SHA256 under ``secret`` of the address (an IPv6
    address's /64 network: one household or phone has a whole /64), first 16 bytes. Not reversible without
    the secret; the address itself is never stored or logged."""
    import hmac
    import ipaddress

    try:
        ip = ipaddress.ip_address(address.strip())
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is None:
            text = str(ipaddress.ip_network(f"{ip}/64", strict=False))
        else:
            text = str(ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip)
    except ValueError:
        text = address.strip()[:100]
    return hmac.new(secret, text.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()[:16]


async def add_subscription(conn: asyncpg.Connection, *, endpoint: str, p256dh: bytes, auth: bytes, lang: str,
                           drills: bool, areas: list[Area], client: bytes | None = None,
                           endpoint_host: str | None = None, per_client: int = 0,
                           per_host: int = 0) -> tuple[int, str]:
    """Store a subscription (replacing an earlier one of the same endpoint); returns (id, unsubscribe token).
    Circles without municipalities (see :func:`placed`: no boundaries loaded) get the nearest real shelter's
    (never the drill town's, which is nobody's real municipality), and with ``drills`` the drill town's when
    the circle reaches it (:func:`alerting.drilltown.reaches`), as :func:`placed` does with boundaries. Without
    ``drills`` a circle lists no drill town (its code reaches exercise alerts only): found, a circle in the
    drill town without drills was stored with 072036 and 079995.

    ``client`` (:func:`client_key`) and ``endpoint_host`` are kept to bound the subscriptions one client may
    make (``per_client``) and one endpoint host may hold (``per_host``; 0: no bound); replacing a subscription
    of the same endpoint does not count. Raises :class:`SubscriptionLimitError` over a bound."""
    if not areas or len(areas) > MAX_AREAS:
        raise NotifyError(f"choose 1 to {MAX_AREAS} areas")
    if any(a.lat is not None and not (a.radius_m is not None and RADIUS_M[0] <= a.radius_m <= RADIUS_M[1])
           for a in areas):
        raise NotifyError(f"a circle's radius_m is {RADIUS_M[0]} to {RADIUS_M[1]} metres")
    token = secrets.token_urlsafe(24)
    box = await drill_town_box(conn) if drills else None
    async with conn.transaction():
        for value, bound, column, what in ((client, per_client, "client_key", "client"),
                                           (endpoint_host, per_host, "endpoint_host", "host")):
            if value is None or bound <= 0:
                continue
            # serialised per client / host, so that concurrent requests cannot all pass the count
            lock = f"sonae.push.{column}.{value.hex() if isinstance(value, bytes) else value}"
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", lock)
            n = await conn.fetchval(f"SELECT count(*) FROM push_subscriptions WHERE {column} = $1 AND endpoint <> $2",
                                    value, endpoint)
            if n >= bound:
                raise SubscriptionLimitError(
                    f"this {'network address' if what == 'client' else 'push endpoint host'} already has {bound} "
                    f"subscriptions, the most this installation keeps; unsubscribe one first", what=what)
        sub_id = await conn.fetchval(
            """INSERT INTO push_subscriptions (endpoint, p256dh, auth, lang, drills, token_hash, client_key,
                                               endpoint_host)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (endpoint) DO UPDATE SET p256dh = EXCLUDED.p256dh, auth = EXCLUDED.auth,
                   lang = EXCLUDED.lang, drills = EXCLUDED.drills, token_hash = EXCLUDED.token_hash,
                   client_key = EXCLUDED.client_key, endpoint_host = EXCLUDED.endpoint_host, created_at = now()
               RETURNING id""", endpoint, p256dh, auth, lang, drills, _digest(token), client, endpoint_host)
        await conn.execute("DELETE FROM push_areas WHERE subscription_id = $1", sub_id)
        rows = [a.rounded() for a in areas]
        await conn.executemany(
            """INSERT INTO push_areas (subscription_id, municipality_code, lat, lon, radius_m, near_municipalities)
               SELECT $1, $2::text, $3::float8, $4::float8, $5::int,
                      CASE WHEN $3::float8 IS NULL THEN NULL WHEN $6::text[] IS NOT NULL THEN $6::text[] ELSE (
                          SELECT array_remove(ARRAY[nullif(municipality_code, '')], NULL) FROM shelters
                          WHERE municipality_code IS DISTINCT FROM $8::text
                          ORDER BY power(lat - $3::float8, 2) + power((lon - $4::float8) * cos(radians($3::float8)), 2)
                          LIMIT 1) || CASE WHEN $7::bool THEN ARRAY[$8::text] ELSE '{}'::text[] END END""",
            [(sub_id, _code(a.municipality_code), a.lat, a.lon, a.radius_m,
              None if a.near_municipalities is None else
              [m for m in a.near_municipalities if drills or m != DRILL_TOWN_CODE],
              drills and a.lat is not None and a.lon is not None
              and reaches(a.lat, a.lon, box, radius_m=float(a.radius_m or 0)), DRILL_TOWN_CODE)
             for a in rows])
    return int(sub_id), token


async def remove_subscription(conn: asyncpg.Connection, sub_id: int, token: str) -> bool:
    """Delete a subscription when the token is its unsubscribe token."""
    status = await conn.execute("DELETE FROM push_subscriptions WHERE id = $1 AND token_hash = $2",
                                sub_id, _digest(token))
    if status.endswith(" 0"):
        return False
    await conn.execute("UPDATE notify_queue SET state = 'gone' WHERE kind = 'push' AND target_id = $1 "
                       "AND state = 'queued'", sub_id)
    return True


# -- webhooks ------------------------------------------------------------------------------------------
#: the alert conditions a webhook may be limited to: every condition that is delivered (an unconfirmed
#: reading is not, see :func:`fan_out_event`)
WEBHOOK_CONDITIONS: tuple[str, ...] = tuple(c for c in CONDITIONS if c != UNCONFIRMED)
WEBHOOK_FORMATS = ("json", "cap")
#: the 警戒レベル a webhook may ask for at least (0: every alert, staff alerts have no level)
WEBHOOK_LEVELS = (0, 5)


class WebhookError(NotifyError):
    """A webhook that cannot be registered; ``field`` names the part that is wrong."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


class WebhookAddressError(WebhookError):
    """A webhook URL whose host the address rule refuses (the API's 422: the URL is well-formed)."""


def check_webhook(*, url: str, fmt: str = "json", min_level: int = 0,
                  conditions: Sequence[str] | None = None, description: str = "",
                  allow_loopback: bool = False) -> None:
    """The rules of a webhook, whoever registers it (the API, ``sonae webhooks add``).

    Raises
    ------
    WebhookError
        The URL is not an http(s) URL with a host, or its host is an IP literal (in any form) or loopback
        name the address rule refuses (:func:`notify.endpoints.webhook_refusal`: public and private addresses
        pass; loopback only with ``allow_loopback``, ``notify.webhook_allow_loopback``), ``fmt`` is not one of :data:`WEBHOOK_FORMATS`,
        ``min_level`` is outside :data:`WEBHOOK_LEVELS`, or ``conditions`` is empty or names a condition
        not in :data:`WEBHOOK_CONDITIONS` (such a webhook would never be called), or ``description`` (shown to
        staff) holds a control, bidirectional or other invisible character (:func:`sonae.nametext.refused_text`).
    """
    if why := refused_text("description", description):
        raise WebhookError(why, field="description")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise WebhookError("url is not a valid URL", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookError("url must be an http:// or https:// URL", field="url")
    if why := webhook_refusal(url, allow_loopback=allow_loopback):
        raise WebhookAddressError(f"url's host {webhook_host(url) or parts.hostname} is {why}: {WEBHOOK_RULE}",
                                  field="url")
    if fmt not in WEBHOOK_FORMATS:
        raise WebhookError(f"format must be {' or '.join(WEBHOOK_FORMATS)}", field="format")
    low, high = WEBHOOK_LEVELS
    if isinstance(min_level, bool) or not isinstance(min_level, int) or not low <= min_level <= high:
        raise WebhookError(f"min_level must be {low} to {high}", field="min_level")
    if conditions is not None and (not conditions or any(c not in WEBHOOK_CONDITIONS for c in conditions)):
        raise WebhookError(f"conditions must be a non-empty list of {', '.join(WEBHOOK_CONDITIONS)}",
                           field="conditions")


_WEBHOOK_COLUMNS = ("id, url, description, format, municipality_code, min_level, conditions, include_staff, "
                    "drills, created_by, created_at")


async def add_webhook(conn: asyncpg.Connection, *, url: str, created_by: str, description: str = "",
                      fmt: str = "json", municipality_code: str | None = None, min_level: int = 0,
                      conditions: list[str] | None = None, include_staff: bool = False,
                      drills: bool = False, allow_loopback: bool = False) -> dict[str, Any]:
    """Register a webhook; the returned dict has its ``secret`` (shown once). A name's addresses are checked
    by the caller (:func:`notify.endpoints.check_webhook_url`, it resolves) and by the worker at delivery.

    Raises
    ------
    WebhookError
        The webhook breaks a rule of :func:`check_webhook`.
    NotifyError
        ``municipality_code`` is not a 団体コード.
    """
    check_webhook(url=url, fmt=fmt, min_level=min_level, conditions=conditions, allow_loopback=allow_loopback)
    municipality_code = _code(municipality_code)
    secret = secrets.token_urlsafe(32)
    row = await conn.fetchrow(
        f"""INSERT INTO webhooks (url, description, secret, format, municipality_code, min_level, conditions,
                                  include_staff, drills, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {_WEBHOOK_COLUMNS}""",
        url, description, secret, fmt, municipality_code, min_level, conditions, include_staff, drills, created_by)
    return {**dict(row), "secret": secret}


async def list_webhooks(conn: asyncpg.Connection, *, municipality: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        f"""SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE deleted_at IS NULL
            AND ($1::text IS NULL OR municipality_code = $1) ORDER BY id""", municipality)
    return [dict(r) for r in rows]


async def get_webhook(conn: asyncpg.Connection, webhook_id: int) -> dict[str, Any] | None:
    row = await conn.fetchrow(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1 AND deleted_at IS NULL",
                              webhook_id)
    return dict(row) if row else None


async def delete_webhook(conn: asyncpg.Connection, webhook_id: int) -> bool:
    status = await conn.execute("UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
                                webhook_id)
    if status.endswith(" 0"):
        return False
    await conn.execute("UPDATE notify_queue SET state = 'gone' WHERE kind = 'webhook' AND target_id = $1 "
                       "AND state = 'queued'", webhook_id)
    return True


async def deliveries(conn: asyncpg.Connection, kind: str, target_id: int, *, state: str | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
    """The delivery log of one target: each queued message with its attempts, newest first."""
    rows = await conn.fetch(
        """SELECT q.id, q.alert_event_id, q.alert_id, q.exercise, q.state, q.attempts, q.next_attempt_at,
                  q.event_at, q.created_at, q.sent_at, q.last_status, q.last_error,
                  coalesce((SELECT json_agg(json_build_object('attempt', a.attempt, 'at', a.at, 'status', a.status,
                                                             'error', a.error, 'duration_ms', a.duration_ms)
                                            ORDER BY a.id)
                            FROM notify_attempts a WHERE a.queue_id = q.id), '[]') AS log
           FROM notify_queue q WHERE q.kind = $1 AND q.target_id = $2 AND ($3::text IS NULL OR q.state = $3)
           ORDER BY q.id DESC LIMIT $4""", kind, target_id, state, limit)
    return [{**dict(r), "log": json.loads(r["log"])} for r in rows]


# -- roster --------------------------------------------------------------------------------------------
#: the rule of an on-call address, in words (the API's pattern, api.openapi.EMAIL_PATTERN, says it too)
EMAIL_TEXT_RULE = ("an email address: name@domain, one @, no spaces, no control, bidirectional (U+202A-U+202E, "
                   "U+2066-U+2069), zero-width or other invisible characters")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


def email_problem(email: str) -> str | None:
    """Why ``email`` may not be a roster address (:data:`EMAIL_TEXT_RULE`), or None. It is shown to staff and put
    into the headers of the mail sent to it: the shown-text rule (:func:`sonae.nametext.refused_text`) holds, and
    more than the database's own check (``^[^@\\s]+@[^@\\s]+$``, which took ``"a\\u202e@b.jp"``)."""
    if why := refused_text("email", email):
        return why
    if not _EMAIL.fullmatch(email):
        return f"email must be {EMAIL_TEXT_RULE}"
    return None


async def set_roster(conn: asyncpg.Connection, *, username: str, municipality_code: str, email: str, lang: str,
                     on_call: bool, drills: bool, updated_by: str) -> dict[str, Any]:
    code = _code(municipality_code)
    if code is None:
        raise NotifyError("a roster entry needs a municipality code")
    municipality_code = code
    if why := email_problem(email):
        raise NotifyError(why)
    try:
        row = await conn.fetchrow(
            """INSERT INTO notify_roster (account_id, municipality_code, email, lang, on_call, drills, updated_by)
               SELECT id, $2, $3, $4, $5, $6, $7 FROM accounts WHERE username = $1
               ON CONFLICT (account_id) DO UPDATE SET municipality_code = EXCLUDED.municipality_code,
                   email = EXCLUDED.email, lang = EXCLUDED.lang, on_call = EXCLUDED.on_call,
                   drills = EXCLUDED.drills, updated_by = EXCLUDED.updated_by, updated_at = now()
               RETURNING account_id""", username, municipality_code, email, lang, on_call, drills, updated_by)
    except asyncpg.CheckViolationError:
        raise NotifyError("email must be an address like name@example.jp") from None
    if row is None:
        raise NotifyError(f"no account {username!r}")
    entries = await roster(conn, username=username)
    return entries[0]


async def roster(conn: asyncpg.Connection, *, municipality: str | None = None,
                 username: str | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT a.username, r.municipality_code, r.email, r.lang, r.on_call, r.drills, r.updated_by, r.updated_at
           FROM notify_roster r JOIN accounts a ON a.id = r.account_id
           WHERE ($1::text IS NULL OR r.municipality_code = $1) AND ($2::text IS NULL OR a.username = $2)
           ORDER BY r.municipality_code, a.username""", municipality, username)
    return [dict(r) for r in rows]


async def remove_roster(conn: asyncpg.Connection, username: str) -> dict[str, Any] | None:
    row = await conn.fetchrow(
        """DELETE FROM notify_roster r USING accounts a WHERE a.id = r.account_id AND a.username = $1
           RETURNING r.municipality_code""", username)
    return dict(row) if row else None


# -- fan-out -------------------------------------------------------------------------------------------
def place_box(alert: dict[str, Any]) -> tuple[tuple[float, float, float, float] | None, float]:
    """(min lon, min lat, max lon, max lat) of the alert's place, and the margin in metres around it."""
    geo = alert.get("area")
    if geo:
        polygons = [geo["coordinates"]] if geo["type"] == "Polygon" else geo["coordinates"]
        lons = [float(p[0]) for poly in polygons for p in poly[0]]
        lats = [float(p[1]) for poly in polygons for p in poly[0]]
        return (min(lons), min(lats), max(lons), max(lats)), 0.0
    if alert.get("lat") is not None and alert.get("lon") is not None:
        lat, lon = float(alert["lat"]), float(alert["lon"])
        return (lon, lat, lon, lat), GAUGE_RADIUS_KM * 1000
    return None, 0.0


_CIRCLE_HITS = """
    sqrt(power((greatest($5::float8, least($7::float8, a.lon)) - a.lon) * cos(radians(a.lat)) * 111320, 2)
         + power((greatest($6::float8, least($8::float8, a.lat)) - a.lat) * 110574, 2)) <= a.radius_m + $9::float8
"""

#: the host a queue row is delivered to, as the worker takes turns between hosts (``notify.worker._claim``): the
#: authority of the endpoint or webhook URL (host and port, lower case, without user info); 'smtp' for email
QUEUE_HOST = "lower(coalesce(substring({col} from '^[A-Za-z][A-Za-z0-9+.-]*://(?:[^@/?#]*@)?([^/?#]*)'), ''))"

_PUSH_FANOUT = f"""
INSERT INTO notify_queue (kind, target_id, alert_event_id, alert_id, exercise, payload, event_at, host)
SELECT 'push', s.id, $1, $2, $3,
       CASE s.lang WHEN 'en-US' THEN $11::jsonb WHEN 'ja-JP-x-easy' THEN $12::jsonb ELSE $10::jsonb END, $13,
       {QUEUE_HOST.format(col="s.endpoint")}
FROM push_subscriptions s
WHERE (NOT $3::bool OR s.drills)
  AND s.id IN (SELECT a.subscription_id FROM push_areas a WHERE
                  ($4::text IS NOT NULL AND a.municipality_code = $4::text)
               OR ($5::float8 IS NULL AND $4::text IS NOT NULL AND $4::text = ANY (a.near_municipalities)
                   AND ($4::text <> '{DRILL_TOWN_CODE}' OR $3::bool))
               OR ($5::float8 IS NOT NULL AND a.lat IS NOT NULL
                   AND a.lat BETWEEN $6::float8 - 0.25 AND $8::float8 + 0.25 AND {_CIRCLE_HITS}))
ON CONFLICT (kind, target_id, alert_event_id) DO NOTHING
"""

_WEBHOOK_FANOUT = f"""
INSERT INTO notify_queue (kind, target_id, alert_event_id, alert_id, exercise, payload, event_at, host)
SELECT 'webhook', w.id, $1, $2, $3, CASE w.format WHEN 'cap' THEN $9::jsonb ELSE $8::jsonb END, $10,
       {QUEUE_HOST.format(col="w.url")}
FROM webhooks w
WHERE w.deleted_at IS NULL AND (NOT $3::bool OR w.drills)
  AND (w.municipality_code IS NULL OR w.municipality_code = $4::text)
  AND $5::int >= w.min_level
  AND (w.conditions IS NULL OR $6::text = ANY (w.conditions))
  AND ($7::text = 'public' OR w.include_staff)
ON CONFLICT (kind, target_id, alert_event_id) DO NOTHING
"""

_EMAIL_FANOUT = """
INSERT INTO notify_queue (kind, target_id, alert_event_id, alert_id, exercise, payload, event_at, host)
SELECT 'email', r.account_id, $1, $2, $3,
       CASE r.lang WHEN 'en-US' THEN $6::jsonb WHEN 'ja-JP-x-easy' THEN $7::jsonb ELSE $5::jsonb END, $8, 'smtp'
FROM notify_roster r JOIN accounts a ON a.id = r.account_id
WHERE r.on_call AND NOT a.disabled AND r.municipality_code = $4::text AND (NOT $3::bool OR r.drills)
ON CONFLICT (kind, target_id, alert_event_id) DO NOTHING
"""

EMAIL_MIN_LEVEL = 3
PUSH_MIN_LEVEL = 2


def _j(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


async def _told_municipalities(conn: asyncpg.Connection, event: dict[str, Any],
                                alert: dict[str, Any]) -> list[str | None]:
    """The municipalities whose targets an event goes to: the alert's, and every municipality it moved out of
    up to this event (events ``moved``, :func:`alerting.store.move_alert`, this one included), whose push
    subscribers, webhooks and on-call staff were told of it there: an audience told of an alert hears its whole
    life — the move itself, every level change after it (escalation, de-escalation) and its end — not its end
    alone, or the old municipality would hear of a level 3 and then of its end while the river reached level 4
    in between. A target matching in several municipalities gets an event once (the queue is unique per target
    and event); the targets' own filters (level, conditions, drills) apply as everywhere."""
    codes: list[str | None] = [alert["municipality_code"]]
    for r in await conn.fetch(
            """SELECT DISTINCT old_municipality_code AS code FROM alert_events
               WHERE alert_id = $1 AND kind = 'moved' AND id <= $2 AND old_municipality_code IS NOT NULL""",
            alert["id"], event["id"]):
        if r["code"] not in codes:
            codes.append(r["code"])
    return codes


async def fan_out_event(conn: asyncpg.Connection, event: dict[str, Any], alert: dict[str, Any], *,
                        base_url: str, profile: CapProfile, email: bool = True) -> dict[str, int]:
    """Queue the messages of one alert event for every matching target. Returns the count per kind.
    ``alert``: the alert as it was at the event (:func:`alerting.store.alert_at_event`, with its
    ``told_audience``), whose level, version, audience, value and texts every message is rendered from.
    ``profile``: the installation's CAP sender and identifiers, for webhooks that take CAP."""
    counts = {"push": 0, "webhook": 0, "email": 0}
    if event["kind"] not in messages.NOTIFIED_KINDS:
        return counts
    if alert["condition"] == UNCONFIRMED:
        return counts  # beyond the gauge's plausible rate: staff see it in the console until confirmed
    top = max(event["level"] or 0, event["old_level"] or 0)
    event_at: datetime = event["recorded_at"]
    # who the event is for: the audience at the event, or just before it for an event that ends a public alert
    # (alerting.store.told_audience); ``alert`` is the alert as it was at the event (alerting.store.alert_at_event)
    audience = alert.get("told_audience", alert["audience"])
    public = audience == "public" and alert["condition"] in ("river_level", "evacuation_order")
    push = payloads = body = cap = email_payloads = None
    if public and top >= PUSH_MIN_LEVEL:
        box, margin = place_box(alert)
        push = (*(box or (None, None, None, None)), margin)
        payloads = [_j(messages.push_payload(alert, event, lang, base_url))
                    for lang in ("ja-JP", "en-US", "ja-JP-x-easy")]
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM webhooks WHERE deleted_at IS NULL)"):
        body = _j(messages.webhook_json(alert, event, base_url))
        cap = _j({"cap": messages.webhook_cap(alert, await alerts.messages_of(conn, alert["id"]), profile)})
    if email and top >= EMAIL_MIN_LEVEL:
        email_payloads = [_j(messages.email_payload(alert, event, lang, base_url))
                          for lang in ("ja-JP", "en-US", "ja-JP-x-easy")]
    for code in await _told_municipalities(conn, event, alert):
        args = (event["id"], alert["id"], alert["exercise"], code)
        if push is not None and payloads is not None:
            status = await conn.execute(_PUSH_FANOUT, *args, *push, *payloads, event_at)
            counts["push"] += int(status.split()[-1])
        if body is not None:
            status = await conn.execute(_WEBHOOK_FANOUT, *args, top, alert["condition"], audience, body,
                                        cap, event_at)
            counts["webhook"] += int(status.split()[-1])
        if email_payloads is not None and code:
            status = await conn.execute(_EMAIL_FANOUT, *args, *email_payloads, event_at)
            counts["email"] += int(status.split()[-1])
    return counts


async def fan_out(conn: asyncpg.Connection, *, base_url: str, email: bool = True, limit: int = 200,
                  profile: CapProfile | None = None) -> dict[str, int]:
    """Fan out every committed alert event not done yet (in one transaction per call).

    ``profile``: the CAP sender and identifiers (default: the database's installation id and a sender
    derived from ``base_url``, as :func:`alerting.cap_identity.load_profile` does).

    Passes are serialised across processes by the ``notify_cursor`` row lock. The cursor is a commit
    position (``alert_events.pos``, see :func:`alerting.store.events_after`): positions are given at
    commit under a lock, so no event can become visible at or below the cursor later, and following
    ``pos > floor`` never skips an event whose transaction committed after a newer-numbered one.
    ``notify_fanout`` only remembers events that the earlier lag-based scheme had already done above
    the floor when this one took over; they are skipped once and forgotten as the floor passes them.
    """
    totals = {"push": 0, "webhook": 0, "email": 0, "events": 0}
    if profile is None:
        profile = await load_profile(conn, public_url=base_url)
    async with conn.transaction():
        floor = await conn.fetchval("SELECT floor FROM notify_cursor FOR UPDATE")
        if floor is None:
            return totals
        rows = await conn.fetch(
            """SELECT e.id, e.pos, EXISTS (SELECT 1 FROM notify_fanout f WHERE f.event_id = e.id) AS done
               FROM alert_events e WHERE e.pos > $1 ORDER BY e.pos LIMIT $2""", floor, limit)
        for r in rows:
            totals["events"] += 1
            if r["done"]:
                continue
            event = dict(await conn.fetchrow("SELECT * FROM alert_events WHERE id = $1", r["id"]))
            # the alert as it was at this event, not now: events fanned out together (a backlog) are each
            # told with their own level, version, audience and texts
            alert = await alerts.alert_at_event(conn, event["id"])
            if alert is not None:
                for kind, n in (await fan_out_event(conn, event, alert, base_url=base_url, profile=profile,
                                                       email=email)).items():
                    totals[kind] += n
        if rows:
            new_floor = rows[-1]["pos"]
            await conn.execute("UPDATE notify_cursor SET floor = $1", new_floor)
            await conn.execute("DELETE FROM notify_fanout WHERE event_id IN (SELECT id FROM alert_events "
                               "WHERE pos <= $1)", new_floor)
        if totals["push"] or totals["webhook"] or totals["email"]:
            await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return totals


# -- the queue -----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to one claimed message."""

    id: int
    state: str                    # sent | queued (retry) | dead | gone
    status: int | None = None
    error: str | None = None
    retry_in_s: float = 0.0
    duration_ms: int | None = None
    attempt: int = 0
    log: bool = False             # also write a notify_attempts row
    remove_subscription: int | None = None


async def record(conn: asyncpg.Connection, outcomes: list[Outcome]) -> None:
    """Write a batch of outcomes (one statement each for the queue and the attempt log)."""
    if not outcomes:
        return
    async with conn.transaction():
        await conn.execute(
            """UPDATE notify_queue q SET state = u.state, last_status = u.status, last_error = u.error,
                   sent_at = CASE WHEN u.state = 'sent' THEN now() ELSE q.sent_at END,
                   next_attempt_at = CASE WHEN u.state = 'queued' THEN now() + make_interval(secs => u.retry)
                                          ELSE q.next_attempt_at END
               FROM unnest($1::bigint[], $2::text[], $3::int[], $4::text[], $5::float8[])
                   AS u(id, state, status, error, retry)
               WHERE q.id = u.id""",
            [o.id for o in outcomes], [o.state for o in outcomes], [o.status for o in outcomes],
            [o.error for o in outcomes], [o.retry_in_s for o in outcomes])
        logged = [o for o in outcomes if o.log]
        if logged:
            await conn.execute(
                """INSERT INTO notify_attempts (queue_id, attempt, status, error, duration_ms)
                   SELECT * FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[], $5::int[])""",
                [o.id for o in logged], [o.attempt for o in logged], [o.status for o in logged],
                [o.error for o in logged], [o.duration_ms for o in logged])
        gone = sorted({o.remove_subscription for o in outcomes if o.remove_subscription is not None})
        if gone:
            await conn.execute("DELETE FROM push_subscriptions WHERE id = ANY($1::bigint[])", gone)
            await conn.execute("UPDATE notify_queue SET state = 'gone' WHERE kind = 'push' "
                               "AND target_id = ANY($1::bigint[]) AND state = 'queued'", gone)
        sent_push = [o.id for o in outcomes if o.state == "sent"]
        if sent_push:
            await conn.execute(
                """UPDATE push_subscriptions s SET last_sent_at = now() FROM notify_queue q
                   WHERE q.id = ANY($1::bigint[]) AND q.kind = 'push' AND s.id = q.target_id""", sent_push)


async def queue_stats(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT kind || ':' || state AS k, count(*) AS n FROM notify_queue GROUP BY 1")
    return {r["k"]: int(r["n"]) for r in rows}


async def housekeeping(conn: asyncpg.Connection, *, keep_push_days: int = 2, keep_days: int = 30) -> None:
    """Forget delivered push messages after a couple of days, and everything else after a month."""
    await conn.execute(
        """DELETE FROM notify_queue WHERE state <> 'queued' AND (
               (kind = 'push' AND created_at < now() - make_interval(days => $1))
            OR created_at < now() - make_interval(days => $2))""", keep_push_days, keep_days)
