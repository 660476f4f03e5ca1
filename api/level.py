"""The current 警戒レベル for a point or a municipality, and what it means to do now:
``GET /api/v1/level``.

The rules live in the alerting domain, ``alerting.level``: the level in force (official information,
gauges and staff orders, each named as a source), a point's municipality (``municipality_at``) and
what residents read (``guidance``). This module only parses the request and serialises the answer
(``sources``: each source with its name in the request's language; ``hazards``: every hazard in force,
``[{hazard, level, exercise, sources}]``, highest level first, ties in ``alerting.level.HAZARD_ORDER``;
``hazard``: the first of them, kept for older clients; ``route_hazard``: all of them as ``/api/v1/route``
takes them, ``flood,landslide``; ``exercise_municipality_code``: the drill town's code when the point lies
in it, the municipality it is in for exercise answers besides ``municipality_code``, else null). The
position serves this answer only; it is never logged or stored.
"""

from __future__ import annotations

import math

from aiohttp import web

from alerting.level import exercise_municipality_at, guidance, level_in_force, municipality_at
from api import params
from api.boundaries import index as boundary_index
from api.context import POOL
from api.language import language_tag
from api.problems import Problem
from ingest.municipalities import uncovered

routes = web.RouteTableDef()

def _coordinate(request: web.Request, name: str, limit: float) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise Problem(400, "Bad Request", f"{name} is not a number", parameter=name) from None
    if not math.isfinite(value) or abs(value) > limit:
        raise Problem(400, "Bad Request", f"{name} is out of range", parameter=name)
    return value


@routes.get("/api/v1/level")
async def current_level(request: web.Request) -> web.Response:
    language = language_tag(request)
    lat = _coordinate(request, "lat", 90)
    lon = _coordinate(request, "lon", 180)
    municipality = params.municipality(request)
    if (lat is None) != (lon is None):
        raise Problem(422, "Unprocessable Content", "give both lat and lon, or a municipality", parameter="lat,lon")
    if lat is None and municipality is None:
        raise Problem(422, "Unprocessable Content", "give lat and lon, or a municipality", parameter="lat,lon")
    exercise_municipality = None
    async with request.app[POOL].acquire() as conn:
        if municipality is None and lat is not None and lon is not None:
            municipality = await municipality_at(conn, lat, lon,
                                                 boundaries=await boundary_index(request.app, conn))
            # a point in the drill town is in it too, for exercise answers (found: its whole-town drill
            # order reached no point of it; the point was 072036's only)
            exercise_municipality = await exercise_municipality_at(conn, lat, lon)
        answer = await level_in_force(conn, municipality=municipality, lat=lat, lon=lon,
                                      exercise_municipality=exercise_municipality)
        # a point in no known municipality is outside what Sonae covers, and so is a municipality given by
        # its code that the deployment does not cover (found: ?municipality=472018, 那覇市, said covered)
        covered = (municipality is not None or exercise_municipality is not None) and (
            params.one(request, "municipality") is None
            or await uncovered(conn, municipality, exercise=True) is None)  # type: ignore[arg-type]
    top = answer.top
    body = guidance(answer, language, covered=covered)
    body.update({
        "municipality_code": municipality,
        "exercise_municipality_code": exercise_municipality,
        "covered": covered,
        "language": language,
        "exercise": top is not None and top.exercise,
        "exercise_in_progress": answer.exercise_in_progress,
        "hazard": answer.hazard,
        "hazards": [h.as_json(language) for h in answer.hazards],
        "route_hazard": answer.route_hazard,
        "sources": [s.as_json(language) for s in answer.sources],
        "alerts": [{"id": a["id"], "condition": a["condition"], "level": a["level"], "exercise": a["exercise"],
                    "station_id": a["station_id"], "order_id": a["order_id"]} for a in answer.alerts],
    })
    return web.json_response(body, headers={"Cache-Control": "no-store"})
