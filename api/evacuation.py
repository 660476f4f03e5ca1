"""Evacuation for residents, without an account.

* ``GET /api/v1/route?lat=&lon=&hazard=flood&profile=walk&lang=ja``: the route to the nearest safe
  shelter as a GeoJSON Feature (``status`` ok | at_shelter (the resident is within ``evac.engine.AT_SHELTER_M``
  of a suitable shelter: that shelter, distance 0, no line) | no_safe_route | no_shelter_in_area |
  no_shelter_for_all_hazards (``hazard`` a set, ``flood,landslide``, and no shelter rated for all: no route,
  guidance to the municipality's instruction and 屋内安全確保) | inside_hazard | off_network; outside the network's area a 422 problem with ``status_code`` outside_area and guidance);
* ``GET /api/v1/shelters/nearest?lat=&lon=&hazard=&profile=&k=3``: the k nearest safe shelters;
* ``GET /api/v1/shelters?municipality=&hazard=&bbox=&q=&limit=&format=geojson|json|csv``: shelters (open
  data): all of them, or those in a box (``bbox``, the resident page's map view widened to a grid) or whose
  name contains some words (``q``, the resident page's landmark search), at most ``limit``;
* ``GET /api/v1/service``: the area routes are answered for and the hazards known;
* ``GET /api/v1/hazards``: hazard areas in force (drill areas flagged ``exercise``);
* ``GET /api/v1/network.geojson?bbox=west,south,east,north``: road lines, to draw a map without tiles
  (without ``bbox``: the whole network, whose ``bbox`` is the area routes are answered for).

A resident's position is never logged, stored or echoed: the access log has no query strings, error
details name the parameter but never its value, positions are rounded to ~10 m before routing (a route
line starts at that rounded position and walks to the nearest road), and route answers are
``Cache-Control: no-store``. One exception to the rounding: a position whose cell a blocked area's
boundary crosses (the position or its rounded one in or on the area) is answered for the position itself,
so that rounding cannot move a resident out of a flooded area or into it; that answer is sent to the
requester only, never kept in the cells' cache. Nothing here may pass ``lat``/``lon`` to a logger.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import json
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from aiohttp import web

from api.context import POOL, SETTINGS
from api.csvexport import csv_response
from api.evacmetrics import FIELD_STORES
from api.language import language
from api.ops import READINESS_CHECKS
from api.params import ascii_digits, bad, bbox, choice, flag, integer, number, one
from api.params import municipality as municipality_param
from api.problems import Problem
from api.ratelimit import client_address
from evac import store
from evac.coldfields import ColdFieldRefused
from evac.engine import Engine, FieldAt, FieldKey
from evac.graph import PROFILE_NAMES
from evac.guidance import status_text, status_texts
from evac.hazards import HAZARD_TYPES, hazard_set
from evac.routes import route_body
from evac.service import LOADING_RETRY_AFTER_S, EngineUnavailable, EvacService

routes = web.RouteTableDef()

GEOJSON = "application/geo+json"
MAX_K = 10
#: most shelters one answer may be limited to, and the longest name search (characters)
MAX_LIMIT = 10000
MAX_QUERY_CHARS = 100


def _dumps(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)


EVAC = web.AppKey("evac", EvacService)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    service = app[EVAC]
    await service.start()
    yield
    await service.stop()


def setup(app: web.Application) -> EvacService:
    """Host the evacuation service (:mod:`evac.service`) in this application: create it, start and stop it
    with the application, and register its readiness check (``evac graph``)."""
    service = EvacService(app[POOL], app[SETTINGS])
    app[EVAC] = service
    FIELD_STORES.follow(service)  # its engine's field store in /metrics (api/evacmetrics.py)
    app.cleanup_ctx.append(_lifecycle)
    if service.enabled:
        checks = app.get(READINESS_CHECKS)
        if checks is None:
            checks = app[READINESS_CHECKS] = {}
        checks["evac graph"] = service.is_ready
    return service


def _service(request: web.Request) -> tuple[EvacService, Engine]:
    """The service and its engine, or a 503 problem saying why there is none."""
    service = request.app[EVAC]
    try:
        return service, service.require()
    except EngineUnavailable as exc:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.retry_after_s is not None else None
        raise Problem(503, "Service Unavailable", exc.reason, headers=headers) from None


def _position(request: web.Request) -> tuple[float, float]:
    return number(request, "lat", -90.0, 90.0), number(request, "lon", -180.0, 180.0)


def _placed(service: EvacService, lat: float, lon: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The position and its ~10 m cell, held within the service area (:meth:`EvacService.placed`: one
    rule for the rounding and the area), or a 422 problem when it lies outside."""
    placed = service.placed(lat, lon)
    if placed is None:
        # the same words a resident gets for status outside_area, in every language
        raise Problem(422, "Unprocessable Content", "the position is outside the service area of this server's "
                      "road network", parameter="lat,lon", status_code="outside_area",
                      guidance=status_texts("outside_area", hazard="flood"))
    return placed


def _hazards(request: web.Request) -> str:
    """``?hazard=``: one hazard, or every hazard in force at once joined by commas (``flood,landslide``;
    one parameter, not repeated ones): the route then ends at a shelter rated for all of them. The set is
    made canonical (:func:`evac.hazards.hazard_set`: each once, in ``HAZARD_TYPES`` order), so every
    spelling of a set shares one field; a set is an on-demand field like any other (``evac.max_fields``)."""
    raw = one(request, "hazard")
    if raw is None:
        return "flood"
    try:
        return hazard_set(raw)
    except ValueError:
        raise bad("hazard", f"parameter 'hazard' must be one of {', '.join(HAZARD_TYPES)}, or several of them "
                  "joined by ','") from None


def _query(request: web.Request) -> tuple[str, str, bool]:
    hazard = _hazards(request)
    profile = choice(request, "profile", PROFILE_NAMES, "walk")
    exercise = bool(flag(request, "exercise"))
    return hazard, profile, exercise


async def _ensure_field(request: web.Request, service: EvacService, key: FieldKey, lang: str) -> FieldAt:
    """:meth:`EvacService.ensure_field` for this request's client (the address as the rate limit takes it:
    :func:`api.ratelimit.client_address`, with ``api.trust_forwarded_for``; never logged): the field and the
    hazard state the answer is for (queries take it as ``at=`` and then never compute: the engine's state may
    have changed again since, and asking the engine for its current field could search on the event loop),
    or the problem of a refused cold field: 429 when this client has asked for too many fields not yet
    computed, 503 when the server is computing too many (or the hazard state kept changing under it); both
    with Retry-After, a ``detail`` in the request's language and ``guidance`` in every language
    (``status_code`` route_busy)."""
    client = client_address(request, trust_forwarded_for=request.app[SETTINGS]["api.trust_forwarded_for"])
    try:
        return await service.ensure_field(key, client=client)
    except ColdFieldRefused as exc:
        profile, hazard, exercise = key
        text = "route_busy_set" if "," in hazard else "route_busy"
        guidance = status_texts(text, hazard=hazard, profile=profile, exercise=exercise)
        status, title = (429, "Too Many Requests") if exc.reason == "client" else (503, "Service Unavailable")
        raise Problem(status, title, guidance[lang], headers={"Retry-After": str(exc.retry_after_s)},
                      status_code="route_busy", hazard=hazard, guidance=guidance) from None


#: Positions are rounded to 1e-4 degrees (about 10 m, finer than phone GPS in a town) before routing
#: (``evac.service.POSITION_DECIMALS``, held within the service area: ``EvacService.placed``):
#: everyone in the same cell gets the same answer, which is then served from memory until the hazard
#: state changes. The cache holds answers keyed by cell, never a history of who asked.
ROUTE_CACHE_SIZE = 20000
ROUTE_CACHE = web.AppKey("route_cache", collections.OrderedDict)
#: (Vary: Accept-Language when the header chose the language: api.language.language, api.vary)
_ROUTE_HEADERS = {"Cache-Control": "no-store"}


@routes.get("/api/v1/route")
async def route(request: web.Request) -> web.Response:
    hazard, profile, exercise = _query(request)
    lang = language(request)
    position = _position(request)
    service, engine = _service(request)
    (raw_lat, raw_lon), (lat, lon) = _placed(service, *position)
    at = await _ensure_field(request, service, (profile, hazard, exercise), lang)
    # from here on, everything is answered from ``at``: the hazard state it is for is the answer's
    # ``hazard_version``, and nothing is computed on the event loop
    if _boundary_cell(at, raw_lat, raw_lon, lat, lon):
        own = route_body(engine, raw_lat, raw_lon, profile=profile, hazard=hazard, lang=lang, exercise=exercise,
                         at=at)
        return web.Response(body=own, content_type=GEOJSON, headers=_ROUTE_HEADERS)
    cache = request.app[ROUTE_CACHE]
    key = (lat, lon, profile, hazard, exercise, lang, at.state.version, id(engine))
    body = cache.get(key)
    if body is None:
        body = route_body(engine, lat, lon, profile=profile, hazard=hazard, lang=lang, exercise=exercise, at=at)
        cache[key] = body
        if len(cache) > ROUTE_CACHE_SIZE:
            cache.popitem(last=False)
    return web.Response(body=body, content_type=GEOJSON, headers=_ROUTE_HEADERS)


def _boundary_cell(at: FieldAt, raw_lat: float, raw_lon: float, lat: float, lon: float) -> bool:
    """Whether the position (``raw_lat``, ``raw_lon``) or its cell's rounded one (``lat``, ``lon``) lies in
    or on a blocked area in force for the field ``at`` (its key and hazard state): a blocked area's boundary may
    then run through the cell, and rounding would move the resident across it (out of the area, or into
    it). Such a position is answered for itself, by the one boundary rule (``evac.network.BOUNDARY_RULE``)
    as ``/api/v1/shelters/nearest`` answers it, and not kept in the cells' cache (which holds cells, not
    positions)."""
    blocked = at.field.blocked
    return bool(blocked) and (blocked.contains(raw_lon, raw_lat) or blocked.contains(lon, lat))


def _nearest(engine: Engine, lat: float, lon: float, *, k: int, profile: str, hazard: str,
             exercise: bool, at: FieldAt | None = None) -> tuple[str, int, list[dict[str, Any]], str]:
    """The status, hazard version, ``k`` nearest shelters and the shelter the resident is at ("" if none),
    from the field ``at`` (the handler's: then never computing one, a search here would be outside the cold
    fields' budget; None: the current state's, computed if need be).

    At a shelter (``at_shelter``): that one first, 0 s, then the nearest others as walked from the road."""
    r = engine.route_result(lat, lon, profile=profile, hazard=hazard, exercise=exercise, at=at)
    found: list[dict[str, Any]] = []
    here = ""
    if r.status == "at_shelter":
        assert r.shelter is not None
        here = r.shelter.name
        found = [{"duration_s": 0.0, "shelter": r.shelter.to_dict()}]
        if k > 1:  # the others near, as walked from the road
            found += [f for f in engine.nearest_shelters(lat, lon, k=k, profile=profile, hazard=hazard,
                                                         exercise=exercise, route=r, at=at)
                      if f["shelter"]["id"] != r.shelter.id][:k - 1]
    elif r.status == "ok":
        found = engine.nearest_shelters(lat, lon, k=k, profile=profile, hazard=hazard, exercise=exercise, route=r,
                                        at=at)
    return r.status, r.state.version, found, here


@routes.get("/api/v1/shelters/nearest")
async def nearest_shelters(request: web.Request) -> web.Response:
    hazard, profile, exercise = _query(request)
    lang = language(request)
    raw_k = request.query.get("k", "3")
    if not (ascii_digits(raw_k, max_digits=2) and 1 <= int(raw_k) <= MAX_K):
        raise bad("k", f"parameter 'k' must be a whole number from 1 to {MAX_K}")
    position = _position(request)
    service, engine = _service(request)
    (lat, lon), _ = _placed(service, *position)
    at = await _ensure_field(request, service, (profile, hazard, exercise), lang)
    loop = asyncio.get_running_loop()
    status, version, found, here = await loop.run_in_executor(None, partial(
        _nearest, engine, lat, lon, k=int(raw_k), profile=profile, hazard=hazard, exercise=exercise, at=at))
    body: dict[str, Any] = {"status": status, "hazard": hazard, "profile": profile, "exercise": exercise,
                            "hazard_version": version,
                            "shelters": [{"duration_s": f["duration_s"], "shelter": f["shelter"]} for f in found]}
    if status != "ok":
        body["guidance"] = status_text(status, lang=lang, hazard=hazard, profile=profile, exercise=exercise,
                                       shelter=here, distance_m=0.0)
    return web.json_response(body, dumps=_dumps, headers={"Cache-Control": "no-store"})


@routes.get("/api/v1/shelters")
async def list_shelters(request: web.Request) -> web.Response:
    municipality = municipality_param(request)
    hazard = one(request, "hazard")
    if hazard is not None:
        hazard = choice(request, "hazard", HAZARD_TYPES, "flood")
    fmt = choice(request, "format", ("geojson", "json", "csv"), "geojson")
    box = bbox(request)
    limit = integer(request, "limit", 1, MAX_LIMIT)
    # free-text search words as typed into a search box: the spaces around them are no part of what is searched
    # for, so they are trimmed (q=" 公民館 " finds what q="公民館" finds), as a search box does; that is the one
    # trimming, of spaces only. A line break, tab or other control or invisible character is refused by the
    # parameter's format (printable, api.validation) before this, and again here: refused, not trimmed (a bare
    # .strip() would take "公民館\n" as "公民館")
    words = request.query.get("q", "").strip(" ") or None
    if words is not None and (len(words) > MAX_QUERY_CHARS or not words.isprintable()):
        raise bad("q", f"parameter 'q' must be printable text of at most {MAX_QUERY_CHARS} characters")
    async with request.app[POOL].acquire() as conn:
        rows = await store.shelter_rows(conn, municipality=municipality, hazard=hazard, bbox=box, name=words,
                                        limit=limit)
    headers = {"Cache-Control": "public, max-age=60"}
    if fmt == "csv":
        return csv_response(request, store.SHELTER_COLUMNS, (store.shelter_csv_row(r) for r in rows),
                            filename="shelters.csv", headers=headers)
    if fmt == "json":
        return web.json_response({"shelters": [store.shelter_json(r) for r in rows]}, dumps=_dumps, headers=headers)
    doc = {"type": "FeatureCollection", "features": [store.shelter_feature(r) for r in rows]}
    return web.json_response(doc, content_type=GEOJSON, dumps=_dumps, headers=headers)


@routes.get("/api/v1/service")
async def service_description(request: web.Request) -> web.Response:
    """What a page needs before it knows where the resident is: the area routes are answered for
    (``service_area``, west/south/east/north, the road network's extent; null until it is loaded) and the
    hazard types shelters are rated for.

    While the road network is still loading the area is null for now, not for good: the answer says so
    (``loading``: true), carries ``Retry-After`` and is not to be cached, so that a page asks again until it has
    the area (found: the resident page took that null as the answer and never asked again, so its map never
    had an area to show; a browser's cache kept the null for the minute of max-age as well). Without routing
    configured, or with a network that failed to load, null is the answer."""
    service = request.app[EVAC]
    area = service.service_area
    body: dict[str, Any] = {"service_area": [round(v, 6) for v in area] if area else None,
                            "hazards": list(HAZARD_TYPES)}
    if area is None and service.loading:
        body["loading"] = True
        return web.json_response(body, dumps=_dumps, headers={
            "Cache-Control": "no-store", "Retry-After": str(LOADING_RETRY_AFTER_S)})
    return web.json_response(body, dumps=_dumps, headers={"Cache-Control": "public, max-age=60"})


@routes.get("/api/v1/hazards")
async def hazards(request: web.Request) -> web.Response:
    service, engine = _service(request)
    exercise = flag(request, "exercise")
    which = choice(request, "state", ("in_force", "all"), "in_force")
    hazard = one(request, "hazard")
    if hazard is not None:
        hazard = choice(request, "hazard", HAZARD_TYPES, "flood")
    st = engine.state
    features = []
    for area_id, area in st.areas.items():
        row = service.area_rows.get(area_id)
        if row is None:
            continue
        in_force = area.is_active(st.alert_levels)
        if (which == "in_force" and not in_force) or (exercise is not None and area.exercise != exercise):
            continue
        if hazard is not None and area.hazard != hazard:
            continue
        features.append(store.hazard_area_feature(row, in_force=in_force))
    doc = {"type": "FeatureCollection", "hazard_version": st.version,
           "changed_at": st.changed_at.isoformat().replace("+00:00", "Z"), "features": features}
    return web.json_response(doc, content_type=GEOJSON, dumps=_dumps, headers={"Cache-Control": "no-cache"})


@routes.get("/api/v1/network.geojson")
async def network_geojson(request: web.Request) -> web.Response:
    service, _ = _service(request)
    nmap = service.map
    assert nmap is not None
    west, south, east, north = bbox(request) or nmap.bounds
    if east - west > nmap.MAX_SPAN_DEG or north - south > nmap.MAX_SPAN_DEG:
        raise bad("bbox", f"parameter 'bbox' may span at most {nmap.MAX_SPAN_DEG:g} degree a side: zoom in")
    key = nmap.grid_key(west, south, east, north)
    plain, gz = await asyncio.get_running_loop().run_in_executor(None, nmap.geojson, key)
    etag = '"' + hashlib.sha1(plain).hexdigest()[:20] + '"'
    headers = {"Cache-Control": "public, max-age=3600", "ETag": etag, "Vary": "Accept-Encoding"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return web.Response(body=gz, content_type=GEOJSON, headers=headers)
    return web.Response(body=plain, content_type=GEOJSON, headers=headers)
