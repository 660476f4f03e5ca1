"""A read-only NGSI-LD view of Sonae (ETSI GS CIM 009) under ``/ngsi-ld/v1/``.

* ``GET /ngsi-ld/v1/entities``: ``type``, ``id``, ``idPattern``, ``q``, ``attrs``, ``georel``/``geometry``/
  ``coordinates``/``geoproperty``, ``limit`` (default 20, at most 1000)/``offset``/``count``, ``options`` or
  ``format`` (normalized, keyValues/simplified);
* ``GET /ngsi-ld/v1/entities/{entityId}``;
* ``GET /ngsi-ld/v1/temporal/entities/{entityId}``: ``timerel``/``timeAt``/``endTimeAt``, ``lastN``, ``attrs``,
  ``aggrMethods``/``aggrPeriodDuration`` (PT10M, PT1H, P1D: the 10m/1h/1d rollups, read by the stations API's
  own :func:`ingest.queries.rollup`), ``options=temporalValues``;
* ``GET /ngsi-ld/v1/contexts/sonae.jsonld`` (Sonae's ``@context``) and ``GET /ngsi-ld/v1/vocab`` (its terms).

Content negotiation (§6.3.6): ``Accept: application/ld+json`` puts ``@context`` in the body;
``application/json`` (or none, or ``*/*``) answers with a ``Link`` header naming the context instead; other
media types → 406. A request's ``Link`` context must be Sonae's, the core or an included SDM context (else 503
LdContextNotAvailable: Sonae fetches no context). Errors are RFC 9457 documents with NGSI-LD problem types
(``https://uri.etsi.org/ngsi-ld/errors/…``). Gauges, shelters, active public alerts and municipality levels
are public; devices need a staff or operator login (staff bound to a municipality see its devices only).
Entity mapping: :mod:`ngsi.entities`; the q-language subset: :mod:`ngsi.query`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from alerting.cap_identity import profile_from_settings
from api.auth import Account, authenticate, bearer_token
from api.context import POOL, SETTINGS
from api.problems import Problem
from api.vary import vary
from ingest import queries
from ngsi import context as ctx
from ngsi import entities as E
from ngsi import store
from ngsi.query import QueryError, compile_pattern, geo_matches, matches, parse_geo, parse_q
from sonae.exacttext import EXACT_RULE, loose_end
from sonae.japantime import parse_query_time, query_time_refusal

routes = web.RouteTableDef()

ERRORS = "https://uri.etsi.org/ngsi-ld/errors/"
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MAX_RANGE = timedelta(days=366)
#: aggrPeriodDuration → rollup bucket
PERIODS = {"PT10M": "10m", "PT1H": "1h", "PT60M": "1h", "P1D": "1d", "PT24H": "1d"}
BUCKET_LENGTH = {"10m": timedelta(minutes=10), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
AGGR_METHODS = ("min", "max", "avg", "sum", "totalCount")


def bad_request(detail: str, *, kind: str = "BadRequestData") -> Problem:
    return Problem(400, "Bad Request", detail, type=ERRORS + kind)


def bad_combination(detail: str, *, kind: str = "BadRequestData") -> Problem:
    """Parameters each valid per the OpenAPI document (api/validation.py checked them one by one) that
    together ask nothing answerable: 422, with the NGSI-LD error type."""
    return Problem(422, "Unprocessable Content", detail, type=ERRORS + kind)


def _base(request: web.Request) -> str:
    configured = request.app[SETTINGS]["api.public_url"]
    return configured.rstrip("/") if configured else f"{request.scheme}://{request.host}"


def _wants_ld(request: web.Request) -> bool:
    """True for ``application/ld+json``, False for ``application/json``; 406 when neither is acceptable."""
    vary(request, "Accept")  # the media type (and the @context's place) is chosen by it
    accept = request.headers.get("Accept", "")
    if not accept.strip():
        return False
    ranked = []
    for i, part in enumerate(accept.split(",")[:30]):
        media, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        ranked.append((-q, i, media.strip().lower()))
    for neg_q, _, media in sorted(ranked):
        if neg_q >= 0:
            continue
        if media == "application/ld+json":
            return True
        if media in ("application/json", "application/*", "*/*"):
            return False
    raise Problem(406, "Not Acceptable", "NGSI-LD answers application/json or application/ld+json",
                  type=ERRORS + "NotAcceptable")


def _respond(request: web.Request, body: Any, *, headers: dict[str, str] | None = None) -> web.Response:
    base = _base(request)
    headers = dict(headers or {})
    if _wants_ld(request):
        url = ctx.context_url(base)
        if isinstance(body, list):
            body = [{**e, "@context": url} for e in body]
        else:
            body = {**body, "@context": url}
        media = "application/ld+json"
    else:
        headers["Link"] = ctx.link_header(base)
        media = "application/json"
    return web.Response(body=json.dumps(body, ensure_ascii=False).encode(), content_type=media, headers=headers)


_LINK = re.compile(r'<([^>]*)>\s*;(.*)')


def _check_link(request: web.Request) -> None:
    """A request's ``Link`` context must be one whose terms Sonae's context already defines the same way:
    Sonae's own, the NGSI-LD core or one of the SDM contexts it includes. Sonae fetches no other context
    (it never goes out to the network for a request): 503 LdContextNotAvailable names what to send."""
    header = request.headers.get("Link")
    if not header:
        return
    base = _base(request)
    known = {ctx.context_url(base), ctx.CORE_CONTEXT, "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
             *ctx.SDM_CONTEXTS, *(u.replace("https://raw.githubusercontent.com/smart-data-models/", "https://"
                                            "smart-data-models.github.io/").replace("/master/", "/")
                                  for u in ctx.SDM_CONTEXTS)}
    for part in header.split(",")[:10]:
        m = _LINK.match(part.strip())
        if m and ctx.LINK_REL in m.group(2) and m.group(1) not in known:
            raise Problem(503, "Service Unavailable", "Sonae resolves terms with its own @context only: send "
                          f"Link: <{ctx.context_url(base)}> (or the NGSI-LD core or a Smart Data Models context "
                          "it includes), or no Link", type=ERRORS + "LdContextNotAvailable")


async def _viewer(request: web.Request, types: set[str]) -> Account | None:
    """The staff account when the request needs one (any non-public type) or brings a token; for public
    types only, a token that is not valid gives the public view (as every public operation does)."""
    if types - E.PUBLIC_TYPES:
        return await authenticate(request, "staff", "operator")
    if bearer_token(request) is not None:
        try:
            return await authenticate(request, "staff", "operator")
        except Problem as exc:
            if exc.status != 401:
                raise
    return None


def _exact(request: web.Request) -> None:
    """Every query parameter and the entity id, exactly as sent: a blank, line break or other control character
    around one is refused as BadRequestData (found: ``type=WaterObserved%0A`` answered the WaterObserved
    entities, each item of a list trimmed)."""
    given = [(name, value) for name, value in request.query.items()]
    if "entity_id" in request.match_info:
        given.append(("entity id", request.match_info["entity_id"]))
    for name, value in given:
        items = value.split(",") if name in _LISTS else [value]
        for item in items:
            if (where := loose_end(item)) is not None:
                raise bad_request(f"{name}: {where}; each value is {EXACT_RULE}")


#: the parameters that are comma-separated lists (each item is checked alone)
_LISTS = frozenset({"type", "id", "attrs", "options", "aggrMethods"})


def _csv(request: web.Request, name: str) -> list[str] | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    items = [s for s in raw.split(",") if s != ""]
    if len(items) > 100:
        raise bad_request(f"{name}: at most 100 items")
    return items


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or not lo <= int(raw) <= hi:
        raise bad_request(f"{name} must be an integer from {lo} to {hi}")
    return int(raw)


def _key_values(request: web.Request) -> bool:
    options = set(_csv(request, "options") or [])
    fmt = request.query.get("format")
    if fmt not in (None, "", "normalized", "keyValues", "simplified"):
        raise bad_request("format must be normalized, keyValues or simplified")
    if options - {"keyValues", "simplified", "normalized", "sysAttrs"}:
        raise bad_request("options may be keyValues (simplified) or normalized")
    return bool(options & {"keyValues", "simplified"}) or fmt in ("keyValues", "simplified")


def _project(entity: dict[str, Any], attrs: list[str] | None) -> dict[str, Any]:
    if attrs is None:
        return entity
    return {k: v for k, v in entity.items() if k in ("id", "type") or k in attrs}


def _shape(entity: dict[str, Any], key_values: bool, attrs: list[str] | None) -> dict[str, Any]:
    entity = _project(entity, attrs)
    return entity if key_values else E.normalized(entity)


@routes.get("/ngsi-ld/v1/entities")
async def query_entities(request: web.Request) -> web.Response:
    _exact(request)
    types = _csv(request, "type")
    ids = _csv(request, "id")
    attrs = _csv(request, "attrs")
    q_text = request.query.get("q") or None
    georel = request.query.get("georel") or None
    id_pattern = request.query.get("idPattern") or None
    # no filter at all: every entity this caller may see, a page at a time (limit bounds the answer)
    # an unknown type is not an error: it has no entities
    wanted = {t for t in (types or E.TYPES) if t in E.TYPES}
    try:
        tree = parse_q(q_text) if q_text else None
        pattern = compile_pattern(id_pattern, name="idPattern") if id_pattern else None
    except QueryError as exc:
        raise bad_request(str(exc)) from None
    try:  # each of georel, geometry and coordinates is checked alone by the document's formats
        geo = parse_geo(georel, request.query.get("geometry"), request.query.get("coordinates"),
                        request.query.get("geoproperty")) if georel else None
    except QueryError as exc:
        raise bad_combination(str(exc)) from None
    limit = _int(request, "limit", DEFAULT_LIMIT, 0, MAX_LIMIT)
    offset = _int(request, "offset", 0, 0, 10**9)
    count = request.query.get("count", "false")
    if count not in ("true", "false"):
        raise bad_request("count must be true or false")
    if limit == 0 and count != "true":
        raise bad_combination("limit=0 is only allowed with count=true")
    key_values = _key_values(request)
    _wants_ld(request)  # 406 before any work
    _check_link(request)
    if not types:
        # without a type, staff-only types are included only for a logged-in viewer
        account = await _viewer(request, set(E.PUBLIC_TYPES))
        wanted = set(E.PUBLIC_TYPES) | ({E.DEVICE} if account is not None else set())
        if ids:  # ids name their types: read only those
            wanted &= {parsed[0] for parsed in map(E.local_id, ids) if parsed is not None}
    else:
        account = await _viewer(request, wanted)
    async with request.app[POOL].acquire() as conn:
        profile = await profile_from_settings(conn, request.app[SETTINGS]) if E.ALERT in wanted else None
        found = await store.load(conn, types=wanted, base=_base(request), profile=profile,
                                 device_municipality=account.municipality_code if account else None)
    selected = [e for e in found
                if (ids is None or e["id"] in ids) and (pattern is None or pattern.search(e["id"]))
                and (tree is None or matches(tree, e)) and (geo is None or geo_matches(geo, e))
                and (attrs is None or any(a in e for a in attrs))]
    page = [_shape(e, key_values, attrs) for e in selected[offset:offset + limit]]
    headers = {"NGSILD-Results-Count": str(len(selected))} if count == "true" else {}
    return _respond(request, page, headers=headers)


async def _entity(request: web.Request) -> dict[str, Any]:
    eid = request.match_info["entity_id"]
    parsed = E.local_id(eid)
    if not eid.isprintable() or len(eid) > 512 or ":" not in eid:
        raise bad_request("the entity id must be a URI")
    if parsed is not None and parsed[0] not in E.PUBLIC_TYPES:
        account = await authenticate(request, "staff", "operator")
    else:
        account = None
    async with request.app[POOL].acquire() as conn:
        profile = await profile_from_settings(conn, request.app[SETTINGS]) if parsed and parsed[0] == E.ALERT else None
        entity = await store.load_one(conn, eid, base=_base(request), profile=profile) if parsed else None
    if entity is not None and account is not None and not account.may_act_in(entity.get("municipalityCode")):
        entity = None
    if entity is None:
        raise Problem(404, "Not Found", f"no entity {eid[:200]!r}", type=ERRORS + "ResourceNotFound")
    return entity


@routes.get("/ngsi-ld/v1/entities/{entity_id}")
async def retrieve_entity(request: web.Request) -> web.Response:
    _exact(request)
    attrs = _csv(request, "attrs")
    key_values = _key_values(request)
    _wants_ld(request)
    _check_link(request)
    entity = await _entity(request)
    return _respond(request, _shape(entity, key_values, attrs))


def _time(request: web.Request, name: str) -> datetime:
    raw = request.query.get(name)
    if not raw:
        raise bad_combination(f"{name} is required with this timerel")
    try:  # without an offset: Japan time, the rule of every Sonae time parameter (sonae.japantime)
        return parse_query_time(raw)
    except ValueError:
        raise bad_request(query_time_refusal(name, raw)) from None


def _window(request: web.Request, *, last_n: int | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    timerel = request.query.get("timerel")
    if not timerel:
        end = now + timedelta(minutes=5)
        return (end - (MAX_RANGE if last_n else timedelta(hours=24))), end
    if timerel == "before":
        end = _time(request, "timeAt")
        return end - MAX_RANGE, end
    if timerel == "after":
        start = _time(request, "timeAt")
        return start, min(start + MAX_RANGE, max(now + timedelta(minutes=5), start + timedelta(seconds=1)))
    if timerel == "between":
        start, end = _time(request, "timeAt"), _time(request, "endTimeAt")
        if start >= end:
            raise bad_combination("timeAt must be before endTimeAt")
        if end - start > MAX_RANGE:
            raise bad_combination("the time range may span at most 366 days")
        return start, end
    raise bad_request("timerel must be before, after or between")


@routes.get("/ngsi-ld/v1/temporal/entities/{entity_id}")
async def temporal_entity(request: web.Request) -> web.Response:
    _exact(request)
    attrs = _csv(request, "attrs")
    last_n = _int(request, "lastN", 0, 1, 10000) or None
    options = set(_csv(request, "options") or [])
    if options - {"temporalValues", "aggregatedValues", "normalized", "sysAttrs"}:
        raise bad_request("options may be temporalValues or aggregatedValues")
    methods = _csv(request, "aggrMethods")
    period = request.query.get("aggrPeriodDuration")
    if methods is not None and set(methods) - set(AGGR_METHODS):
        raise bad_request(f"aggrMethods may be {', '.join(AGGR_METHODS)}", kind="OperationNotSupported")
    if (period or "aggregatedValues" in options) and methods is None:
        raise bad_combination("aggregated values need aggrMethods")
    bucket = None
    if methods is not None:
        if period not in PERIODS:
            raise bad_combination("aggrPeriodDuration must be PT10M, PT1H or P1D (Sonae's rollups)",
                              kind="OperationNotSupported")
        bucket = PERIODS[period]
    start, end = _window(request, last_n=last_n)
    _wants_ld(request)
    _check_link(request)
    entity = await _entity(request)
    served = E.TEMPORAL.get(entity["type"], {})
    names = [a for a in (attrs or list(served)) if a in served]
    station_id = E.local_id(entity["id"])[1]  # type: ignore[index]
    out: dict[str, Any] = {"id": entity["id"], "type": entity["type"]}
    async with request.app[POOL].acquire() as conn:
        for name in names:
            kind, divisor = served[name]
            if bucket is not None:
                rows = await queries.rollup(conn, station_id, bucket=bucket, kind=kind, start=start, end=end)
                if last_n:
                    rows = rows[-last_n:]
                out[name] = {"type": "Property", **_aggregated(rows, methods or [], divisor, bucket)}
                continue
            rows = await _series(conn, station_id, kind=kind, start=start, end=end, last_n=last_n)
            if "temporalValues" in options:
                out[name] = {"type": "Property", "values": [[r["value"] / divisor, E.iso(r["ts"])] for r in rows]}
            else:
                out[name] = [{"type": "Property", "value": r["value"] / divisor, "observedAt": E.iso(r["ts"])}
                             for r in rows]
    return _respond(request, out)


async def _series(conn: Any, station_id: str, *, kind: str, start: datetime, end: datetime,
                  last_n: int | None) -> list[dict[str, Any]]:
    rows = await queries.series(conn, station_id, kind=kind, start=start, end=end)
    if last_n and len(rows) >= 10000:
        # the newest N of a range with more readings than one page holds
        rows = [dict(r) for r in reversed(await conn.fetch(
            """SELECT ts, value FROM readings WHERE station_id = $1 AND kind = $2 AND ts >= $3 AND ts < $4
               ORDER BY ts DESC LIMIT $5""", station_id, kind, start, end, last_n))]
    return rows[-last_n:] if last_n else rows


def _aggregated(rows: list[dict[str, Any]], methods: list[str], divisor: float, bucket: str) -> dict[str, Any]:
    length = BUCKET_LENGTH[bucket]
    out: dict[str, list[list[Any]]] = {m: [] for m in methods}
    for r in rows:
        span = [E.iso(r["bucket"]), E.iso(r["bucket"] + length)]
        for m in methods:
            if m == "totalCount":
                value: Any = int(r["n"])
            elif m == "sum":
                value = (r["sum"] if r.get("sum") is not None else r["avg"] * r["n"]) / divisor
            else:
                value = r[m] / divisor
            out[m].append([value, *span])
    return out


@routes.get("/ngsi-ld/v1/contexts/sonae.jsonld")
async def sonae_context(request: web.Request) -> web.Response:
    return web.Response(body=json.dumps(ctx.context_document(_base(request))).encode(),
                        content_type="application/ld+json", headers={"Cache-Control": "public, max-age=3600"})


@routes.get("/ngsi-ld/v1/vocab")
async def sonae_vocabulary(request: web.Request) -> web.Response:
    return web.Response(body=json.dumps(ctx.vocabulary(_base(request)), ensure_ascii=False).encode(),
                        content_type="application/ld+json", headers={"Cache-Control": "public, max-age=3600"})
