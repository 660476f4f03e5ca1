"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``.

One table, :data:`OPERATIONS`, documents every operation; ``tests/api/test_api_openapi.py`` checks that
it lists exactly the routes the application registers (so the document matches the code) and runs
generated requests against a live app to find any 5xx or schema violation.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from api.auth import MIN_PASSWORD_LENGTH
from api.context import SETTINGS
from api.language import ACCEPTED, TAG_PATTERN
from evac.graph import PROFILE_NAMES
from evac.hazards import HAZARD_TYPES
from ingest.contract import STATION_ID_JSON_PATTERN, STATION_ID_RULE
from notify.store import (
    EMAIL_TEXT_RULE,
    MAX_AREAS,
    RADIUS_M,
    WEBHOOK_CONDITIONS,
    WEBHOOK_FORMATS,
    WEBHOOK_LEVELS,
)
from sonae.nametext import HIDDEN_BMP_CLASS

routes = web.RouteTableDef()

#: the domain's own lists, so that the document (which the validation middleware enforces) cannot drift
HAZARDS = list(HAZARD_TYPES)
PROFILES = list(PROFILE_NAMES)
#: the named scenarios of /api/v1/simulations (docs/scenarios/*.toml)
SCENARIOS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "docs" / "scenarios").glob("*.toml"))


def q(name: str, schema: dict[str, Any], *, required: bool = False, description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


def p(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def comma_list(values: Iterable[str]) -> dict[str, Any]:
    """The schema of a text parameter that is one of ``values`` or several of them joined by commas: the pattern
    is built from the values, and the description says the rule in words, which the validator's 400 quotes
    ("must be one of: flood, landslide, …"; never the regular expression)."""
    names = list(values)
    if len(names) < 2 or not all(name.replace("_", "").isalnum() and name.isascii() for name in names):
        raise ValueError(f"comma_list takes two or more ASCII words (spelt in a pattern as they are): {names}")
    one = "(" + "|".join(names) + ")"
    return {"type": "string", "pattern": f"^{one}(,{one})*$",
            "description": f"one of: {', '.join(names)}; or several of them joined by commas, without spaces "
                           f"(e.g. {names[0]},{names[1]})"}


LAT = q("lat", {"type": "number", "minimum": -90, "maximum": 90}, required=True, description="latitude (WGS 84)")
LON = q("lon", {"type": "number", "minimum": -180, "maximum": 180}, required=True, description="longitude (WGS 84)")
HAZARD = q("hazard", {**comma_list(HAZARD_TYPES), "default": "flood"},
           description="one hazard, or every hazard in force at once joined by commas (flood,landslide; one "
                       "parameter, not repeated): the shelter is then rated for all of them (GSI flags) and every "
                       "area in force is avoided; with none rated for all, status no_shelter_for_all_hazards")
PROFILE = q("profile", {"type": "string", "enum": PROFILES, "default": "walk"})
#: a language named as a value: any spelling Accept-Language takes (api.language.language_of); stored canonical
LANG_TAG = {"type": "string", "maxLength": 64, "pattern": TAG_PATTERN, "description": ACCEPTED}
LANG = q("lang", LANG_TAG, description="else Accept-Language")
MUNICIPALITY = q("municipality", {"type": "string", "format": "municipality-code"},
                 description="団体コード: 6 digits with the JIS X 0402 check digit (072036) or the 5-digit form (07203)")
TIME = {"type": "string", "format": "date-time",
        "description": "ISO 8601, from 1900 to 2199; a time without an offset is Japan time (JST, UTC+9)"}
EXERCISE = q("exercise", {"type": "string", "enum": ["true", "false"]}, description="drill data")
CSV_BOM = q("bom", {"type": "string", "enum": ["true", "false"]},
            description="format=csv only: start the CSV with a UTF-8 byte order mark (default true, so that Excel "
                        "on Japanese Windows reads the names; false for programs that do not skip one)")

OBJ: dict[str, Any] = {"type": "object"}
PROBLEM = {"$ref": "#/components/schemas/Problem"}


def ok(schema: dict[str, Any] | None = None, media: str = "application/json", code: str = "200",
       description: str = "OK") -> dict[str, Any]:
    return {code: {"description": description, "content": {media: {"schema": schema or OBJ}}}}


def ok_formats(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """200 with the open-data formats chosen by ``format``: JSON, GeoJSON or CSV."""
    return {"200": {"description": "OK", "content": {"application/json": {"schema": schema or OBJ},
                                                      "application/geo+json": {"schema": OBJ},
                                                      "text/csv": {"schema": {"type": "string"}}}}}


GEOJSON = {"200": {"description": "GeoJSON", "content": {"application/geo+json": {"schema": OBJ},
                                                          "application/json": {"schema": OBJ}}}}


def errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad request", 401: "Not logged in, or the token expired", 403: "Wrong role or municipality",
            404: "Not found", 409: "Conflict", 415: "Unsupported media type", 422: "Outside the service area",
            406: "Not acceptable (NGSI-LD answers application/json or application/ld+json)",
            429: "Rate limited", 503: "Not ready"}
    return {str(c): {"description": text[c], "content": {"application/problem+json": {"schema": PROBLEM}}}
            for c in codes}


#: the answers of an endpoint that computes a route field a request names (evac.coldfields): beyond the
#: rate limit, and beyond the budgets of fields neither configured nor computed, each with Retry-After
COLD_FIELD_ERRORS = {
    "429": {"description": "Rate limited, or this client has asked for too many route fields not yet computed "
                           "(evac.cold_fields_per_client_per_minute): `status_code` route_busy, `detail` in the "
                           "request's language, `guidance` in ja, en and ja-easy; retry after `Retry-After` "
                           "seconds or ask for a single hazard",
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            "content": {"application/problem+json": {"schema": PROBLEM}}},
    "503": {"description": "Not ready, or the server is computing too many route fields not yet computed "
                           "(evac.cold_fields_per_minute, evac.cold_fields_waiting), or the hazard state changed "
                           "under every computation of the field (evac.service.FIELD_TRIES); `status_code` "
                           "route_busy, texts as for 429: retry after `Retry-After` seconds",
            "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
            "content": {"application/problem+json": {"schema": PROBLEM}}},
}


def body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


STAFF: list[dict[str, list[str]]] = [{"bearer": []}]
#: every station id a request names, in a path or a query, has this one schema (found: ?station=DT-G01%0A on
#: /api/v1/alerts/history was taken as free text and answered an empty list)
STATION_ID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": STATION_ID_JSON_PATTERN,
                                     "description": STATION_ID_RULE}
STATION_ID = p("station_id", dict(STATION_ID_SCHEMA))
#: a note written by staff: a memo for staff only, never in public reads, CAP messages, feeds or notifications
#: a text staff write for others to read (sonae.nametext.refused_text; the API's 400 names the character)
SHOWN_LINE = ("one line without control, bidirectional (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C), "
              "zero-width or other invisible formatting characters")
SHOWN_LINES = ("line breaks (U+000A) kept; no other control character, no bidirectional (U+202A-U+202E, "
               "U+2066-U+2069, U+200E, U+200F, U+061C), zero-width or other invisible formatting characters")
STAFF_NOTE: dict[str, Any] = {"type": "string", "format": "shown-lines", "description": "a staff memo: shown to staff only, never in "
                              "public reads, CAP messages, feeds or notifications; " + SHOWN_LINES}
INT_ID = {"type": "string", "pattern": "^[0-9]{1,18}$", "description": "a whole number of 1 to 18 digits"}
#: a TCP port, 1 to 65535
PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
BBOX = {"type": "string", "format": "bbox"}
#: control characters and white space, spelt out: ``\\s`` means different sets in JSON Schema's ECMA-262
#: regular expressions (no U+001C-U+001F or U+0085, but U+FEFF) and in Python's ``re`` that checks requests,
#: so a value one side accepts the other refused (schemathesis: "schema-valid request rejected")
SPACE = "\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000\\ufeff"
_URL_TAIL = "(:" + PORT + ")?(/[^" + SPACE + "]*)?$"
#: an on-call address (notify.store.email_problem is the rule whoever stores one applies): one @, no spaces and none
#: of the characters of the shown-text rule (sonae.nametext; found: "a\u202e@b.jp" and "a\u200b@b.jp" were taken)
EMAIL_PATTERN = "^[^@" + SPACE + HIDDEN_BMP_CLASS + "]+@[^@" + SPACE + HIDDEN_BMP_CLASS + "]+$"
EMAIL_RULE = EMAIL_TEXT_RULE
#: a push endpoint's host as a URL writes it: a name or IPv4 literal (the root's trailing dot allowed). Only its
#: shape: where an endpoint may point (notify.push_hosts, public addresses, loopback with notify.push_allow_http) is
#: one rule in notify.endpoints, which the handler and the delivery worker both apply (found: the local pattern's
#: own loopback list refused http://[::ffff:127.0.0.1]/ and http://localhost./ that the worker sent to)
_PUSH_NAME = "[A-Za-z0-9.-]*[A-Za-z0-9]\\.?"
PUSH_ENDPOINT = "^https://" + _PUSH_NAME + _URL_TAIL
#: with notify.push_allow_http (tests, a local push service): also http://, and IPv6 literals in brackets (a zone
#: as %25…), which the handler takes only to a loopback host (notify.endpoints.is_loopback_host)
PUSH_ENDPOINT_LOCAL = "^https?://(" + _PUSH_NAME + "|\\[[0-9A-Fa-f:.]+(%25[0-9A-Za-z._~-]+)?\\])" + _URL_TAIL
ENTITY_ID = {"type": "string", "format": "ngsi-ld-id"}
#: a format alone (no pattern beside it): schemathesis generates values of a lone format from its strategy
MUNI_CODE = {"type": "string", "format": "municipality-code"}

def _map_link(kinds: list[str], ref: dict[str, Any]) -> dict[str, Any]:
    """The body of PUT /api/v1/hazard-maps/{map_id}/link for these kinds: a jma_area names a municipality."""
    return {"type": "object", "required": ["kind", "ref", "at_level"], "properties": {
        "kind": {"type": "string", "enum": kinds}, "ref": ref,
        "at_level": {"type": "integer", "minimum": 1, "maximum": 5}, "phenomenon": {"type": "string", "format": "exact-text"}}}


NGSI_ENTITY: dict[str, Any] = {"type": "object", "required": ["id", "type"],
                               "properties": {"id": {"type": "string"}, "type": {"type": "string"}}}
NGSI_OPTIONS = q("options", comma_list(["keyValues", "simplified", "normalized", "sysAttrs"]),
                 description="keyValues (simplified) or normalized")
#: near;maxDistance==N, near;minDistance==N (metres), within, intersects or disjoint
GEOREL = "^(near;(maxDistance|minDistance)==[0-9]{1,9}(\\.[0-9]{1,6})?|within|intersects|disjoint)$"
GEOREL_RULE = ("near;maxDistance==N or near;minDistance==N (N in metres: up to 9 digits, up to 6 decimals), "
               "within, intersects or disjoint")
#: an NGSI-LD query value taken exactly as sent (api.ngsi_ld: sonae.exacttext, BadRequestData otherwise)
EXACT_TEXT: dict[str, Any] = {"type": "string", "format": "exact-text"}
NGSI_FORMAT = q("format", {"type": "string", "enum": ["normalized", "keyValues", "simplified"]})


def ngsi_ok(schema: dict[str, Any]) -> dict[str, Any]:
    """200 as application/json (with a Link header) or application/ld+json (with @context)."""
    return {"200": {"description": "OK", "content": {"application/json": {"schema": schema},
                                                      "application/ld+json": {"schema": schema}}}}


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    # -- operations --------------------------------------------------------------------------
    ("get", "/healthz"): {"summary": "Liveness", "tags": ["operations"], "responses": ok()},
    ("get", "/readyz"): {"summary": "Readiness (database, graph…)", "tags": ["operations"],
                         "responses": {**ok(), **{"503": {"description": "Not ready",
                                                          "content": {"application/json": {"schema": OBJ}}}}}},
    ("get", "/metrics"): {"summary": "Prometheus metrics", "tags": ["operations"],
                          "responses": ok({"type": "string"}, "text/plain")},
    ("get", "/api/v1/openapi.json"): {"summary": "This document", "tags": ["operations"], "responses": ok()},
    # -- stations (open data) -----------------------------------------------------------------
    ("get", "/api/v1/stations"): {
        "summary": "Stations with their latest level and thresholds", "tags": ["open data"],
        "description": "Each station as the Station schema (GeoJSON: its properties), with its thresholds and beside "
                       "them missing_at_or_below, the 欠測 sentinel (CSV: a column of that name, empty for none).",
        "parameters": [q("format", {"type": "string", "enum": ["json", "geojson", "csv"]}), MUNICIPALITY, CSV_BOM],
        "responses": {**ok_formats(), **errors(400, 429)}},
    ("get", "/api/v1/stations/{station_id}"): {
        "summary": "One station", "tags": ["open data"], "parameters": [STATION_ID],
        "responses": {**ok({"$ref": "#/components/schemas/Station"}), **errors(400, 404, 429)}},
    ("get", "/api/v1/stations/{station_id}/readings"): {
        "summary": "A station's readings, raw or as rollups", "tags": ["open data"],
        "description": "from (default: 24 h before to) must be before to (default: now + 5 min), at most 366 days "
                       "apart: otherwise 422.",
        "parameters": [STATION_ID, q("from", TIME), q("to", TIME),
                       q("kind", {"type": "string", "enum": ["level", "rain", "battery_pct", "battery_v", "rssi_dbm",
                                                            "temperature_c", "status"]}),
                       q("bucket", {"type": "string", "enum": ["10m", "1h", "1d"]})],
        "responses": {**ok({"type": "object", "required": ["station_id", "readings"]}),
                      **errors(400, 404, 422, 429)}},
    ("get", "/api/v1/municipalities"): {
        "summary": "Municipality codes (団体コード) and names (kanji, kana, romaji)", "tags": ["open data"],
        "responses": {**ok(), **errors(429)}},
    ("get", "/api/v1/attribution"): {
        "summary": "Sources of the shipped data and the credit their licences ask for", "tags": ["open data"],
        "responses": {**ok(), **errors(429)}},
    # -- alerts (public) ----------------------------------------------------------------------
    ("get", "/api/v1/alerts"): {
        "summary": "Active alerts and evacuation orders", "tags": ["alerts"],
        "description": "Served with an ETag: a request whose If-None-Match holds it is answered 304.",
        "parameters": [MUNICIPALITY, q("exercise", {"type": "string", "enum": ["true", "false"]}),
                       q("audience", {"type": "string", "enum": ["public", "staff", "all"]}), LANG],
        "responses": {**ok(), "304": {"description": "Not modified"}, **errors(400, 401, 403, 429)}},
    ("get", "/api/v1/alerts/history"): {
        "summary": "Alert history", "tags": ["alerts"],
        "parameters": [MUNICIPALITY, q("station", dict(STATION_ID_SCHEMA)),
                       q("limit", {"type": "integer", "minimum": 1, "maximum": 5000}),
                       q("exercise", {"type": "string", "enum": ["true", "false"]}),
                       q("audience", {"type": "string", "enum": ["public", "staff", "all"]})],
        "responses": {**ok(), **errors(400, 401, 403, 429)}},
    ("get", "/api/v1/alerts/feed.atom"): {
        "summary": "Atom feed of active alerts, each linking its CAP 1.2 message", "tags": ["alerts"],
        "description": "Active public alerts, and ended ones as their Cancel until that message expires.",
        "parameters": [MUNICIPALITY, q("exercise", {"type": "string", "enum": ["true", "false"]})],
        "responses": {**ok({"type": "string"}, "application/atom+xml"), **errors(400, 429)}},
    ("get", "/api/v1/alerts/{alert_id}.cap"): {
        "summary": "An alert as OASIS CAP 1.2 (ja, en, やさしい日本語)", "tags": ["alerts"],
        "parameters": [p("alert_id", INT_ID)],
        "responses": {**ok({"type": "string"}, "application/cap+xml"), **errors(401, 404, 429)}},
    ("get", "/api/v1/alerts/{alert_id}"): {
        "summary": "One alert with its history", "tags": ["alerts"], "parameters": [p("alert_id", INT_ID)],
        "responses": {**ok(), **errors(401, 404, 429)}},
    ("get", "/api/v1/events"): {
        "summary": "Server-Sent Events: alert changes and hazard-state (route safety) changes",
        "description": "Alert event ids are commit positions: resume with the Last-Event-ID header (or "
                       "last_event_id) to get every alert event committed after the last one received.",
        "tags": ["alerts"], "parameters": [q("last_event_id", {"type": "string"}), MUNICIPALITY, EXERCISE,
                                           q("audience", {"type": "string", "enum": ["public", "staff", "all"]})],
        "responses": {"200": {"description": "text/event-stream",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      **errors(400, 401, 403, 429, 503)}},
    # -- evacuation (residents) ---------------------------------------------------------------
    ("get", "/api/v1/route"): {
        "summary": "Evacuation route from a point to the nearest suitable open shelter", "tags": ["residents"],
        "description": "The position is used for this answer only: never logged or stored. `status`: ok | "
                       "at_shelter | no_safe_route | no_shelter_in_area | no_shelter_for_all_hazards (a hazard set "
                       "and no open shelter rated for every hazard of it: no route to a partly rated one; the "
                       "guidance gives the municipality's instruction and 屋内安全確保) | inside_hazard | "
                       "off_network. `hazard` is the canonical set (each once, in the order of /api/v1/service).",
        "parameters": [LAT, LON, HAZARD, PROFILE, LANG, EXERCISE],
        "responses": {**ok({"type": "object", "required": ["type", "properties"]}), **errors(400, 422),
                      **COLD_FIELD_ERRORS}},
    ("get", "/api/v1/shelters/nearest"): {
        "summary": "The k nearest suitable shelters with travel times", "tags": ["residents"],
        "parameters": [LAT, LON, HAZARD, PROFILE, q("k", {"type": "integer", "minimum": 1, "maximum": 10}), LANG,
                       EXERCISE],
        "responses": {**ok(), **errors(400, 422), **COLD_FIELD_ERRORS}},
    ("get", "/api/v1/level"): {
        "summary": "Current 警戒レベル and what to do, for a point or a municipality", "tags": ["residents"],
        "description": "Give lat and lon together, or a municipality: otherwise 422. A point in no municipality "
                       "Sonae knows answers `covered: false` and, with nothing in force there, says it is outside "
                       "the area covered (never that no alert level is in force). A point in the drill town (訓練町, "
                       "079995; it has no boundary and lies inside 郡山市) answers its real municipality in "
                       "`municipality_code` and 079995 in `exercise_municipality_code`: the drill town's "
                       "whole-town exercise orders count there too. "
                       "`hazards`: every hazard in "
                       "force there, `[{hazard, level, sources}]` (level: the highest of its sources; sources: "
                       "those setting it, `{kind, level, exercise, name}`), highest level first, ties in the order of /api/v1/service's "
                       "`hazards` (flood before landslide); `hazard` is the first of them (null: none) and "
                       "`route_hazard` all of them joined by commas, as /api/v1/route takes them.",
        "parameters": [q("lat", {"type": "number", "minimum": -90, "maximum": 90}),
                       q("lon", {"type": "number", "minimum": -180, "maximum": 180}), MUNICIPALITY, LANG],
        "responses": {**ok({"type": "object", "required": ["hazard", "hazards", "sources"], "properties": {
            "hazard": {"type": ["string", "null"], "enum": [*HAZARDS, None]},
            "route_hazard": {"type": ["string", "null"]},
            "hazards": {"type": "array", "items": {"type": "object", "required": ["hazard", "level", "sources"],
                        "properties": {"hazard": {"type": "string", "enum": HAZARDS},
                                       "level": {"type": "integer", "minimum": 1, "maximum": 5},
                                       "exercise": {"type": "boolean"},
                                       "sources": {"type": "array", "items": {"type": "object"}}}}},
            "sources": {"type": "array", "items": {"type": "object"}}}}), **errors(400, 422, 429, 503)}},
    ("get", "/api/v1/official"): {
        "summary": "Official information in force (気象庁防災情報XML) per municipality, with the suggested order",
        "tags": ["residents"], "parameters": [MUNICIPALITY, LANG],
        "responses": {**ok(), **errors(400, 429)}},
    ("get", "/api/v1/shelters"): {
        "summary": "Shelters with status (open data): all, in a box, or by name", "tags": ["open data"],
        "parameters": [MUNICIPALITY, q("hazard", {"type": "string", "enum": HAZARDS}),
                       q("format", {"type": "string", "enum": ["json", "geojson", "csv"]}),
                       q("bbox", BBOX, description="west,south,east,north in degrees: shelters inside; "
                         "with limit, those nearest the box's centre"),
                       q("q", {"type": "string", "maxLength": 100, "format": "printable"},
                         description="words the name or address contains (names starting with them first)"),
                       q("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, description="at most this many"),
                       CSV_BOM],
        "responses": {**ok_formats(), **errors(400, 429)}},
    ("get", "/api/v1/service"): {
        "summary": "The area routes are answered for and the hazard types", "tags": ["residents"],
        "responses": {**ok({"type": "object", "required": ["service_area", "hazards"], "properties": {
            "service_area": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
            "hazards": {"type": "array", "items": {"type": "string", "enum": HAZARDS}},
            # the road network still loading: service_area is null for now; ask again after Retry-After
            "loading": {"type": "boolean"}}}), **errors(429)}},
    ("get", "/api/v1/hazards"): {
        "summary": "Hazard areas in force (GeoJSON)", "tags": ["open data"],
        "parameters": [q("hazard", {"type": "string", "enum": HAZARDS}), EXERCISE,
                       q("state", {"type": "string", "enum": ["in_force", "all"]})],
        "responses": {**GEOJSON, **errors(400, 429)}},
    ("get", "/api/v1/network.geojson"): {
        "summary": "The road network as GeoJSON lines, for drawing a map without tiles", "tags": ["residents"],
        "parameters": [q("bbox", BBOX, description="west,south,east,north in degrees")],
        "responses": {**GEOJSON, "304": {"description": "Not modified"}, **errors(400, 429, 503)}},
    # -- staff ---------------------------------------------------------------------------------
    ("post", "/api/v1/auth/token"): {
        "summary": "Log in: a bearer token for staff, operators and admins", "tags": ["staff"],
        "requestBody": body({"type": "object", "required": ["username", "password"],
                             "properties": {"username": {"type": "string"}, "password": {"type": "string"}}}),
        "responses": {**ok(code="201"), **errors(400, 401, 415, 429)}},
    ("delete", "/api/v1/auth/token"): {"summary": "Log out (revoke this token)", "tags": ["staff"], "security": STAFF,
                                       "responses": {"204": {"description": "Revoked"}, **errors(401)}},
    ("get", "/api/v1/auth/me"): {"summary": "The logged-in account", "tags": ["staff"], "security": STAFF,
                                 "responses": {**ok(), **errors(401)}},
    ("get", "/api/v1/accounts"): {"summary": "Accounts (admin)", "tags": ["admin"], "security": STAFF,
                                  "responses": {**ok(), **errors(401, 403)}},
    ("post", "/api/v1/accounts"): {
        "summary": "Create an account (admin)", "tags": ["admin"], "security": STAFF,
        "requestBody": body({"type": "object", "required": ["username", "password", "role"], "properties": {
            "username": {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{3,64}$",
                         "description": "3 to 64 of A-Z a-z 0-9 _ . @ -"},
            "password": {"type": "string", "format": "password", "minLength": MIN_PASSWORD_LENGTH, "maxLength": 2000,
                         "description": "no control characters or line breaks (400 names the character)"},
            "role": {"type": "string", "enum": ["staff", "operator", "admin"]},
            "municipality_code": MUNI_CODE, "display_name": {"type": "string", "format": "shown-line", "description": SHOWN_LINE}}}),
        "responses": {**ok(code="201"), **errors(400, 401, 403, 409, 415)}},
    ("put", "/api/v1/accounts/{username}/real-injection"): {
        "summary": "Allow an operator of your scope to inject real (non-exercise) readings, or stop it (admin); "
                   "the same grant again answers repeated: true and writes nothing",
        "tags": ["admin"], "security": STAFF, "parameters": [p("username")],
        "requestBody": body({"type": "object", "required": ["allowed"], "properties": {"allowed": {"type": "boolean"}}}),
        "responses": {**ok({"type": "object", "required": ["username", "may_inject_real", "repeated"], "properties": {
            "username": {"type": "string"}, "may_inject_real": {"type": "boolean"},
            "repeated": {"type": "boolean"}}}),
                      **errors(400, 401, 403, 404, 409, 415)}},
    ("post", "/api/v1/alerts/{alert_id}/acknowledge"): {
        "summary": "Acknowledge an alert", "tags": ["staff"], "security": STAFF,
        "parameters": [p("alert_id", INT_ID)],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"note": STAFF_NOTE}}}}},
        "responses": {**ok(), **errors(400, 401, 403, 404, 409, 415)}},
    ("post", "/api/v1/orders"): {
        "summary": "Issue an evacuation order (level 3 高齢者等避難, 4 避難指示, 5 緊急安全確保)", "tags": ["staff"],
        "security": STAFF,
        "requestBody": body({"type": "object", "required": ["level"], "properties": {
            "level": {"type": "integer", "enum": [3, 4, 5]}, "municipality_code": MUNI_CODE,
            "area": {"type": ["object", "null"], "format": "geojson-area",
                     "description": "GeoJSON Polygon or MultiPolygon in WGS 84, without self-crossings"},
            "area_desc": {"type": "string", "format": "shown-lines", "description": "the place in words, for the public (CAP headline and "
                          "areaDesc): " + SHOWN_LINES}, "note": STAFF_NOTE, "exercise": {"type": "boolean"}}}),
        "description": "422: the area reaches beyond the municipality, or an account without a municipality "
                       "names none.",
        "responses": {**ok(code="201"), **errors(400, 401, 403, 415, 422)}},
    ("post", "/api/v1/orders/{order_id}/cancel"): {
        "summary": "Cancel (解除) an evacuation order", "tags": ["staff"], "security": STAFF,
        "parameters": [p("order_id", INT_ID)],
        "requestBody": {"required": False, "content": {"application/json": {"schema": {
            "type": "object", "properties": {"note": STAFF_NOTE}}}}},
        "responses": {**ok(), **errors(400, 401, 403, 404, 409, 415)}},
    ("patch", "/api/v1/shelters/{shelter_id}"): {
        "summary": "Open/close a shelter, set occupancy or capacity", "tags": ["staff"], "security": STAFF,
        "parameters": [p("shelter_id")],
        "requestBody": body({"type": "object", "properties": {
            "occupancy": {"type": "integer", "minimum": 0, "maximum": 1000000},
            "capacity": {"type": "integer", "minimum": 0, "maximum": 1000000},
            "is_open": {"type": "boolean"}}}),
        "responses": {**ok(), **errors(400, 401, 403, 404, 415)}},
    ("patch", "/api/v1/stations/{station_id}"): {
        "summary": "Edit a station: name, English name, municipality, exercise flag, 洪水予報 thresholds, "
                   "欠測 sentinel",
        "tags": ["staff"], "security": STAFF, "parameters": [STATION_ID],
        "description": "A registry change, followed by the rules worker as an import is: a move takes the "
                       "station's open alerts to the new municipality, an exercise switch ends the alerts of the "
                       "stream the station no longer has, new thresholds judge its level again. The station after "
                       "the change passes the registry's load rules. Thresholds in m on the station's datum; an "
                       "edit that sets any leaves all four set, rising 水防団待機 ≤ 氾濫注意 ≤ 避難判断 ≤ 氾濫危険. "
                       "missing_at_or_below: the stage (m) at or below which a reading is 欠測, a missing value; "
                       "null (or \"none\") for a gauge with no such sentinel. Every threshold must lie above it, "
                       "checked when an edit sets a threshold or the sentinel (the 422 names the threshold and "
                       "says to give missing_at_or_below null, or a lower value, in the same edit); a rename, "
                       "move or exercise switch is not refused for the stages as stored. "
                       "A rename without name_en clears the English name (null clears it too): texts then use "
                       "the new name. Names without control, zero-width or bidirectional characters. An edit "
                       "that changes nothing answers the station, unaudited. 422: thresholds that break the rule "
                       "or of a gauge whose ladder is another (危機管理型), a code of no municipality in the list, "
                       "hidden characters in a name. 403: a municipality outside the account's.",
        "requestBody": body({"type": "object", "minProperties": 1, "properties": {
            "name": {"type": "string", "maxLength": 200, "description": "text that is not only spaces",
                     "pattern": "^[^\\u0000]*[^" + SPACE + "][^\\u0000]*$"},
            "name_en": {"type": ["string", "null"], "maxLength": 200, "description": "text that is not only spaces",
                        "pattern": "^[^\\u0000]*[^" + SPACE + "][^\\u0000]*$"},
            "municipality_code": MUNI_CODE, "exercise": {"type": "boolean"},
            **{name: {"type": "number", "minimum": -100, "maximum": 10000}
               for name in ("th_standby", "th_caution", "th_evacuation", "th_danger")},
            "missing_at_or_below": {"oneOf": [{"type": "number", "minimum": -100, "maximum": 10000},
                                              {"type": "null"}, {"type": "string", "enum": ["none"]}]}}}),
        "responses": {**ok({"$ref": "#/components/schemas/Station"}), **errors(400, 401, 403, 404, 415, 422)}},
    ("post", "/api/v1/hazards"): {
        "summary": "Draw a hazard area (flooded road, landslide, closure)", "tags": ["staff"], "security": STAFF,
        "requestBody": body({"type": "object", "required": ["geometry"], "properties": {
            "geometry": {"type": "object", "required": ["type", "coordinates"], "format": "geojson-geometry",
                         "description": "GeoJSON in WGS 84; a polygon without self-crossings", "properties": {
                "type": {"type": "string", "enum": ["Polygon", "MultiPolygon"]},
                "coordinates": {"type": "array"}}},
            "hazard": {"type": "string", "enum": HAZARDS},
            "severity": {"type": "string", "enum": ["blocked", "penalty"]}, "penalty_factor": {"type": "number", "minimum": 1, "maximum": 1000},
            "label": {"type": "string", "format": "shown-line", "description": SHOWN_LINE}, "exercise": {"type": "boolean"},
            "municipality_code": MUNI_CODE}}),
        "description": "422: the area reaches beyond the municipality given.",
        "responses": {**ok(code="201"), **errors(400, 401, 403, 415, 422)}},
    ("delete", "/api/v1/hazards/{area_id}"): {
        "summary": "Remove a hazard area", "tags": ["staff"], "security": STAFF, "parameters": [p("area_id")],
        "responses": {"204": {"description": "Removed"}, **errors(401, 403, 404)}},
    ("get", "/api/v1/hazard-maps"): {
        "summary": "Imported hazard maps (PLATEAU, 国土数値情報) and their links", "tags": ["staff"],
        "security": STAFF, "responses": {**ok({"type": "object", "required": ["maps"]}), **errors(401, 403)}},
    ("put", "/api/v1/hazard-maps/{map_id}/link"): {
        "summary": "Put a hazard map in force while a gauge, river or JMA warning area is at a 警戒レベル",
        "tags": ["staff"], "security": STAFF, "parameters": [p("map_id")],
        "requestBody": body({"oneOf": [_map_link(["gauge", "river"], {"type": "string", "format": "exact-text", "minLength": 1,
                                                                      "description": "the station id or river name"}),
                                        _map_link(["jma_area"], MUNI_CODE)]}),
        "responses": {**ok(), **errors(400, 401, 403, 404, 415)}},
    ("delete", "/api/v1/hazard-maps/{map_id}/link"): {
        "summary": "Unlink a hazard map (it is then never in force)", "tags": ["staff"], "security": STAFF,
        "parameters": [p("map_id")], "responses": {"204": {"description": "Unlinked"}, **errors(401, 403, 404)}},
    ("get", "/api/v1/sensors/health"): {
        "summary": "Sensor health: silent gauges, batteries, faults", "tags": ["staff"], "security": STAFF,
        "responses": {**ok(), **errors(401, 403)}},
    ("get", "/api/v1/audit"): {
        "summary": "The audit log (admin)", "tags": ["admin"], "security": STAFF,
        "description": "Who did what to which object, newest first (`limit` entries, default 100). Each entry "
                       "names the municipality it concerns, `municipality_code` (6-digit code; null: none, as a "
                       "prefecture-wide account, map or run, or an old entry whose municipality could not be "
                       "told). A municipal admin sees the entries about its municipality, whoever acted (a "
                       "prefecture admin's order or station edit there, the rule engine's alerts for its gauges, "
                       "actor `rules`), and the entries by its own accounts; never an entry about another "
                       "municipality only. A prefecture admin sees every entry. An object moved between "
                       "municipalities (`alert.moved`, a `station.updated` of its municipality) is entered under "
                       "the one it moved to; `detail` names the other.",
        "parameters": [q("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
        "responses": {**ok(), **errors(400, 401, 403)}},
    ("get", "/api/v1/simulations"): {
        "summary": "The running simulation (operators)", "tags": ["operators"], "security": STAFF,
        "description": "The server's run (one at a time) when the account's scope covers the municipality of "
                       "whoever started it; another municipality's run is never shown: `run` null and `state` "
                       "busy while it runs (a start would be refused 409), else idle. While a run is being "
                       "started (its gauges registered, the broker connected), its own municipality sees `run` "
                       "null and `state` starting.",
        "responses": {**ok(), **errors(401, 403)}},
    ("post", "/api/v1/simulations"): {
        "summary": "Start a simulator scenario or drill (operators)", "tags": ["operators"], "security": STAFF,
        "requestBody": body({"type": "object", "required": ["scenario"], "properties": {
            "scenario": {"oneOf": [{"type": "string", "enum": SCENARIOS}, {
                "type": "object", "required": ["scenario"],
                "description": "the scenario document itself: a docs/scenarios/*.toml file as JSON, with rivers, "
                               "rain_gauges or a replay (by file name); checked by simulators.scenario, whose "
                               "400 names the key"}]},
            "exercise": {"type": "boolean"},
            "accel": {"type": "number", "minimum": 0.01, "maximum": 10000000},
            "duration_s": {"type": "number", "minimum": 1, "maximum": 10000000}}}),
        "description": "403, before the scenario is read: a real run (\"exercise\": false) by an account that may "
                       "not inject real readings (an admin, or an operator an admin allowed to), or a station of the "
                       "run outside the account's municipality. "
                       "422: a run the account may start but the registry or the replay's placement cannot take, "
                       "said in one sentence: a real run of a replay played out in the drill town (exercises only), "
                       "a gauge of a municipality Sonae does not cover, or one registered in another municipality "
                       "than the run publishes it under. "
                       "409: a drill is already running on this server (one runs at a time); another "
                       "municipality's is not named.",
        "responses": {**ok(code="201"), **errors(400, 401, 403, 409, 415, 422, 503)}},
    ("delete", "/api/v1/simulations/current"): {
        "summary": "Stop the running simulation (operators)", "tags": ["operators"], "security": STAFF,
        "description": "404 when no run is going, and for another municipality's run (as if none were).",
        "responses": {**ok(), **errors(401, 403, 404)}},
    # -- notify (issue #10): Web Push, webhooks, the on-call roster -----------------------------------
    ("get", "/api/v1/push/vapid-public-key"): {
        "summary": "The VAPID public key browsers subscribe with (applicationServerKey)", "tags": ["residents"],
        "responses": {**ok({"type": "object", "required": ["public_key"],
                            "properties": {"public_key": {"type": "string"}}}), **errors(429)}},
    ("post", "/api/v1/push/subscriptions"): {
        "summary": "Receive alerts by Web Push for chosen areas (no account)", "tags": ["residents"],
        "description": "Stores only the push endpoint and keys, the areas, the language and the drills opt-in. "
                       "A circle's centre is stored rounded to 0.001° (~100 m) and never logged. An area that touches no "
                       "municipality Sonae knows is refused (422). The endpoint must be a public https URL of a push service of "
                       "notify.push_hosts: a host not listed, or an address (or a name resolving to one) that is loopback, "
                       "private, link-local, unique-local, shared, multicast or reserved, is refused (422). Too many "
                       "subscriptions from one client address is 429; to one endpoint host, 422.",
        "requestBody": body({"type": "object", "required": ["subscription", "areas"], "properties": {
            "subscription": {"type": "object", "required": ["endpoint", "keys"], "properties": {
                "endpoint": {"type": "string", "pattern": PUSH_ENDPOINT,
                             "description": "the push service's https:// URL"},
                # PushSubscription.toJSON() sends it (null, or when the subscription ends, in ms since 1970)
                "expirationTime": {"type": ["number", "null"]},
                "keys": {"type": "object", "required": ["p256dh", "auth"],
                         "properties": {"p256dh": {"type": "string", "format": "p256-public-key"},
                                        "auth": {"type": "string", "format": "push-auth-secret"}}}}},
            "areas": {"type": "array", "minItems": 1, "maxItems": MAX_AREAS, "items": {"oneOf": [
                {"type": "object", "required": ["municipality_code"],
                 "properties": {"municipality_code": MUNI_CODE}},
                {"type": "object", "required": ["lat", "lon", "radius_m"], "properties": {
                    "lat": {"type": "number", "minimum": -90, "maximum": 90},
                    "lon": {"type": "number", "minimum": -180, "maximum": 180},
                    "radius_m": {"type": "number", "minimum": RADIUS_M[0], "maximum": RADIUS_M[1]}}}]}},
            "lang": LANG_TAG,
            "drills": {"type": "boolean", "description": "also receive exercise (訓練) alerts"}}}),
        "responses": {**ok({"type": "object", "required": ["id", "unsubscribe_token"]}, code="201"),
                      # 422: an area outside every municipality Sonae knows, or a code not in its list
                      **errors(400, 415, 422, 429)}},
    ("delete", "/api/v1/push/subscriptions/{subscription_id}"): {
        "summary": "Unsubscribe (with the token returned on subscribing)", "tags": ["residents"],
        "parameters": [p("subscription_id", INT_ID),
                       {"name": "X-Unsubscribe-Token", "in": "header", "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
        "responses": {"204": {"description": "Removed"}, **errors(400, 404, 429)}},
    ("post", "/api/v1/webhooks"): {
        "summary": "Register a webhook for a partner system (admin); the HMAC secret is returned once",
        "tags": ["admin"], "security": STAFF,
        "description": "Deliveries are POSTed with X-Sonae-Signature: sha256=<hex HMAC-SHA256 of the body>, "
                       "X-Sonae-Event-Id and X-Sonae-Delivery; retried with exponential backoff, then dead-lettered.",
        "requestBody": body({"type": "object", "required": ["url"], "properties": {
            "url": {"type": "string", "pattern": "^https?://[A-Za-z0-9.-]*[A-Za-z0-9]" + _URL_TAIL,
                    "description": "an http:// or https:// URL: a host name or IPv4 address (A-Z a-z 0-9 . -), "
                                   "then optionally :port (1 to 65535) and a path without spaces. The host must be "
                                   "a public address or a private network's (10/8, 172.16/12, 192.168/16), or a "
                                   "name resolving only to such: loopback (unless notify.webhook_allow_loopback), "
                                   "link-local (169.254.0.0/16), unspecified, multicast and reserved addresses, in "
                                   "any spelling (2130706433, 127.1), are a 422 and are checked again at delivery"},
            "description": {"type": "string", "format": "shown-line", "description": SHOWN_LINE},
            "format": {"type": "string", "enum": list(WEBHOOK_FORMATS)}, "municipality_code": MUNI_CODE,
            "min_level": {"type": "integer", "minimum": WEBHOOK_LEVELS[0], "maximum": WEBHOOK_LEVELS[1]},
            "conditions": {"type": "array", "minItems": 1, "items": {"type": "string",
                                                                     "enum": list(WEBHOOK_CONDITIONS)}},
            "include_staff": {"type": "boolean"}, "drills": {"type": "boolean"}}}),
        "responses": {**ok({"type": "object", "required": ["id", "secret"]}, code="201"),
                      **errors(400, 401, 403, 415, 422)}},
    ("get", "/api/v1/webhooks"): {
        "summary": "Webhooks (staff see their municipality's)", "tags": ["staff"], "security": STAFF,
        "responses": {**ok(), **errors(401, 403)}},
    ("delete", "/api/v1/webhooks/{webhook_id}"): {
        "summary": "Delete a webhook (admin)", "tags": ["admin"], "security": STAFF,
        "parameters": [p("webhook_id", INT_ID)],
        "responses": {"204": {"description": "Deleted"}, **errors(400, 401, 403, 404)}},
    ("get", "/api/v1/webhooks/{webhook_id}/deliveries"): {
        "summary": "A webhook's delivery log with every attempt; state=dead is the dead-letter list",
        "tags": ["staff"], "security": STAFF,
        "parameters": [p("webhook_id", INT_ID), q("state", {"type": "string", "enum": ["queued", "sent", "dead", "gone"]}),
                       q("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
        "responses": {**ok(), **errors(400, 401, 403, 404)}},
    ("get", "/api/v1/roster"): {
        "summary": "The on-call roster for staff email (staff see their municipality's)", "tags": ["staff"],
        "security": STAFF, "responses": {**ok(), **errors(401, 403)}},
    ("put", "/api/v1/roster/{username}"): {
        "summary": "Put an account on the roster: email, on call or not (admin, or staff for themselves)",
        "tags": ["staff"], "security": STAFF, "parameters": [p("username")],
        "requestBody": body({"type": "object", "required": ["email"], "properties": {
            "email": {"type": "string", "maxLength": 254, "pattern": EMAIL_PATTERN, "description": EMAIL_RULE},
            "on_call": {"type": "boolean"}, "municipality_code": MUNI_CODE, "lang": LANG_TAG,
            "drills": {"type": "boolean"}}}),
        "description": "The entry is in the account's own municipality (the default); an account without a "
                       "municipality names the one whose roster it joins. 404: no such account (before any other "
                       "check of the entry); 422: a municipality other than the account's own, or none for an "
                       "account without one.",
        "responses": {**ok(), **errors(400, 401, 403, 404, 415, 422)}},
    ("delete", "/api/v1/roster/{username}"): {
        "summary": "Take an account off the roster (admin)", "tags": ["admin"], "security": STAFF,
        "parameters": [p("username")],
        "responses": {"204": {"description": "Removed"}, **errors(401, 403, 404)}},
    # -- NGSI-LD (issue #22): a read-only view for a 都市OS / FIWARE context broker --------------
    ("get", "/ngsi-ld/v1/entities"): {
        "summary": "NGSI-LD entities: gauges (WaterObserved), shelters (PointOfInterest), active public alerts "
                   "(Alert), municipality levels; devices (Device) for staff", "tags": ["NGSI-LD"],
        "description": "ETSI GS CIM 009 query subset; Accept application/ld+json puts @context in the body, "
                       "application/json answers with a Link header. Errors use NGSI-LD problem types.",
        "parameters": [q("type", EXACT_TEXT), q("id", EXACT_TEXT),
                       q("idPattern", {"type": "string", "format": "ngsi-ld-pattern"}),
                       q("q", {"type": "string", "format": "ngsi-ld-q"}), q("attrs", EXACT_TEXT),
                       q("georel", {"type": "string", "pattern": GEOREL, "description": GEOREL_RULE}),
                       q("geometry", {"type": "string", "enum": ["Point", "Polygon", "MultiPolygon"]}),
                       q("coordinates", {"type": "string", "format": "ngsi-ld-coordinates"}),
                       q("geoproperty", {"type": "string", "enum": ["location"]}),
                       q("limit", {"type": "integer", "minimum": 0, "maximum": 1000}),
                       q("offset", {"type": "integer", "minimum": 0, "maximum": 1000000000}),
                       q("count", {"type": "string", "enum": ["true", "false"]}), NGSI_OPTIONS, NGSI_FORMAT],
        "responses": {**ngsi_ok({"type": "array", "items": NGSI_ENTITY}),
                      **errors(400, 401, 403, 406, 422, 429, 503)}},
    ("get", "/ngsi-ld/v1/entities/{entity_id}"): {
        "summary": "One NGSI-LD entity", "tags": ["NGSI-LD"],
        "parameters": [p("entity_id", ENTITY_ID), q("attrs", EXACT_TEXT), NGSI_OPTIONS, NGSI_FORMAT],
        "responses": {**ngsi_ok(NGSI_ENTITY), **errors(400, 401, 403, 404, 406, 429, 503)}},
    ("get", "/ngsi-ld/v1/temporal/entities/{entity_id}"): {
        "summary": "An entity's history from readings or the 10m/1h/1d rollups", "tags": ["NGSI-LD"],
        "parameters": [p("entity_id", ENTITY_ID), q("attrs", EXACT_TEXT),
                       q("timerel", {"type": "string", "enum": ["before", "after", "between"]}),
                       q("timeAt", TIME), q("endTimeAt", TIME),
                       q("lastN", {"type": "integer", "minimum": 1, "maximum": 10000}),
                       q("aggrMethods", comma_list(["min", "max", "avg", "sum", "totalCount"])),
                       q("aggrPeriodDuration", {"type": "string", "enum": ["PT10M", "PT1H", "PT60M", "P1D", "PT24H"]}),
                       q("options", comma_list(["temporalValues", "aggregatedValues", "normalized", "sysAttrs"]))],
        "responses": {**ngsi_ok(NGSI_ENTITY), **errors(400, 401, 403, 404, 406, 422, 429, 503)}},
    ("get", "/ngsi-ld/v1/contexts/sonae.jsonld"): {
        "summary": "Sonae's JSON-LD @context (NGSI-LD core, Smart Data Models, Sonae's terms)", "tags": ["NGSI-LD"],
        "responses": {**ok(media="application/ld+json"), **errors(429)}},
    ("get", "/ngsi-ld/v1/vocab"): {
        "summary": "Sonae's NGSI-LD vocabulary (its own terms, in Japanese and English)", "tags": ["NGSI-LD"],
        "responses": {**ok(media="application/ld+json"), **errors(429)}},
}

#: the named formats (checked by api/validation.py, which says the rules in full)
FORMATS = {
    "municipality-code": "a municipality's (市区町村) 団体コード: 6 digits whose last is the JIS X 0402 check digit, or the "
                         "5-digit form; 000001 and a prefecture's own code (070009) name none",
    "p256-public-key": "an uncompressed P-256 point (65 bytes, 0x04 first, on the curve) in base64url, "
                       "padded or not (RFC 8291)",
    "push-auth-secret": "16 bytes in base64url, padded or not (RFC 8291)",
    "bbox": "west,south,east,north in degrees (WGS 84) with west < east and south < north",
    "geojson-area": "a GeoJSON Polygon or MultiPolygon, positions [lon, lat] in WGS 84, valid (no self-crossing)",
    "geojson-geometry": "a GeoJSON geometry, positions [lon, lat] in WGS 84; polygons valid (no self-crossing)",
    "date-time": "ISO 8601 from 1900-01-01 to 2199 (UTC); without an offset the time is Japan time (JST, UTC+9)",
    "printable": "text without control, format or separator characters other than the space",
    "exact-text": "a value taken exactly as sent: no spaces, line breaks, tabs or other control characters before "
                  "or after it (checked by the handler)",
    "password": "a password: no control characters or line breaks, at least the length given (checked by the "
                "handler, api.auth.check_password)",
    "shown-line": "a text staff write for others to read, on one line: " + SHOWN_LINE + " (checked by the handler, "
                  "whose 400 names the character: api.bodies.shown_field)",
    "shown-lines": "a text staff write for others to read, on one or more lines: " + SHOWN_LINES + " (checked by the "
                   "handler, whose 400 names the character: api.bodies.shown_field)",
    "ngsi-ld-id": "an absolute URI of at most 512 printable characters (urn:ngsi-ld:<type>:<id>)",
    "ngsi-ld-q": "an NGSI-LD query (ETSI GS CIM 009 §4.9), e.g. waterLevel>2.5;municipalityCode==\"072036\"",
    "ngsi-ld-pattern": "a regular expression (RE2 syntax, matched in linear time)",
    "ngsi-ld-coordinates": "a JSON array of [longitude, latitude] positions as GeoJSON nests them, e.g. "
                           "[140.47,37.75]",
}
#: the longest text field of a request body (api/bodies.py)
MAX_TEXT = 2000
#: no NUL character in any text: PostgreSQL cannot store it
NO_NUL = "^[^\\u0000]*$"


def _closed(schema: Any) -> None:
    """Request-body objects that list their properties take no others (a misspelt field is a 400, not
    silently ignored); objects with a format (GeoJSON) or without properties (a scenario) stay open."""
    if isinstance(schema, list):
        for item in schema:
            _closed(item)
        return
    if not isinstance(schema, dict):
        return
    if schema.get("type") == "object" and "properties" in schema and "format" not in schema:
        schema.setdefault("additionalProperties", False)
    for key, value in schema.items():
        if key != "properties":
            _closed(value)
    for value in schema.get("properties", {}).values():
        _closed(value)


def _text_rules(schema: Any, *, body: bool) -> None:
    """Say in the document what every text of a request holds: no NUL and, in bodies, at most
    :data:`MAX_TEXT` characters (strings with an enum, a pattern or a format already say more)."""
    if isinstance(schema, list):
        for item in schema:
            _text_rules(item, body=body)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    if (kind == "string" or (isinstance(kind, list) and "string" in kind)) and "format" not in schema:
        if "enum" not in schema and "pattern" not in schema:
            schema["pattern"] = NO_NUL
        if body and "enum" not in schema:
            schema["maxLength"] = min(schema.get("maxLength", MAX_TEXT), MAX_TEXT)
    for value in schema.values():
        if isinstance(value, dict | list):
            _text_rules(value, body=body)


COMPONENTS: dict[str, Any] = {
    "schemas": {
        "Problem": {"type": "object", "required": ["type", "title", "status"], "properties": {
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}}},
        "Station": {"type": "object", "required": ["id", "name", "thresholds", "latest"], "properties": {
            "id": {"type": "string"}, "name": {"type": "string"},
            "name_en": {"type": ["string", "null"]}, "kana": {"type": ["string", "null"],
                                                               "description": "the name's reading, as registered"},
            "thresholds": {"type": "object"},
            "missing_at_or_below": {"type": ["number", "null"],
                                    "description": "the stage (m, the station's datum) at or below which a reading "
                                                   "is 欠測, a missing value; null: the gauge has no such sentinel "
                                                   "(PATCH sets it; every threshold lies above it)"},
            "latest": {"type": ["object", "null"]}, "exercise": {"type": "boolean"}}},
    },
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                   "description": "POST /api/v1/auth/token returns the token"}},
}


for _operation in OPERATIONS.values():
    for _parameter in _operation.get("parameters", ()):
        _text_rules(_parameter["schema"], body=False)
    for _media in _operation.get("requestBody", {}).get("content", {}).values():
        _text_rules(_media["schema"], body=True)
        _closed(_media["schema"])


def document(app: web.Application | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document (only operations the app serves, when ``app`` is given, with the rules of
    its settings: ``notify.push_allow_http`` lets push endpoints be http:// on this machine)."""
    served = registered_operations(app) if app is not None else set(OPERATIONS)
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), operation in sorted(OPERATIONS.items(), key=lambda kv: kv[0][1]):
        if (method, path) in served:
            paths.setdefault(path, {})[method] = operation
    if app is not None and SETTINGS in app and app[SETTINGS]["notify.push_allow_http"] and (
            "post" in paths.get("/api/v1/push/subscriptions", {})):
        operation = copy.deepcopy(paths["/api/v1/push/subscriptions"]["post"])
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        schema["properties"]["subscription"]["properties"]["endpoint"]["pattern"] = PUSH_ENDPOINT_LOCAL
        paths["/api/v1/push/subscriptions"]["post"] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "Sonae API", "version": "1",
                 "description": "River sensors → alerts → evacuation guidance (備え). Residents' endpoints need "
                                "no account and never store positions; staff endpoints need a bearer token. "
                                "Every request is checked against this document: a violation is a 400 problem "
                                "naming the field or parameter and the rule (x-formats explains the formats).",
                 "x-formats": FORMATS},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": COMPONENTS,
    }


OPERATIONS_PATHS = ("/healthz", "/readyz", "/metrics")


def registered_operations(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every API and operations route the application serves (HEAD left out)."""
    out = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*") or route.resource is None:
            continue
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        if path is None or not (path.startswith(("/api/", "/ngsi-ld/")) or path in OPERATIONS_PATHS):
            continue  # pages and static files are not part of the API
        # aiohttp keeps regex parts in the formatter: "{alert_id}" stays as is
        out.add((route.method.lower(), path))
    return out


@routes.get("/api/v1/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))
