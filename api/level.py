"""The current 警戒レベル for a point or a municipality, and what it means to do now:
``GET /api/v1/level``.

The rule (official information, gauges and staff orders, each named as a source) lives in the
alerting domain, ``alerting.level``; this module only parses the request, finds the point's
municipality and serialises the answer (``sources``: each source with its name in the request's
language, ``hazard``: the hazard a route should avoid).

A point's municipality is the one whose boundary (国土数値情報 N03, :mod:`ingest.boundaries`) covers it;
a point outside every loaded boundary has none. Only when no boundaries are loaded at all does Sonae
fall back to the municipality of the nearest registered shelter or station within 20 km. The position
serves this answer only; it is never logged or stored.
"""

from __future__ import annotations

import math
from typing import Any

from aiohttp import web

from alerting.level import OFFICIAL_INSTRUCTION, level_in_force
from alerting.texts import text_for
from api import params
from api.boundaries import index as boundary_index
from api.context import POOL
from api.problems import Problem

routes = web.RouteTableDef()

LANGS = {"ja": "ja-JP", "en": "en-US", "ja-easy": "ja-JP-x-easy"}
NEAREST_KM = 20.0

#: what to do at each level, when no alert text applies (level 1-2 have no order)
CALM = {
    "ja-JP": ("警戒レベルの発表はありません", "最新の気象・河川情報に注意してください。"),
    "en-US": ("No alert level in force", "Keep following the latest weather and river information."),
    "ja-JP-x-easy": ("いま けいかいレベルは ありません", "てんきと かわの じょうほうに ちゅういして ください。"),
}


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


_NEAREST = """
SELECT municipality_code FROM (
    SELECT municipality_code, lat, lon FROM shelters WHERE municipality_code IS NOT NULL
    UNION ALL
    SELECT municipality_code, lat, lon FROM stations WHERE municipality_code IS NOT NULL AND lat IS NOT NULL
) places
WHERE abs(lat - $1) < $3 AND abs(lon - $2) < $3 * 1.5
ORDER BY (lat - $1) ^ 2 + ((lon - $2) * cos(radians($1))) ^ 2
LIMIT 1
"""


@routes.get("/api/v1/level")
async def current_level(request: web.Request) -> web.Response:
    language = LANGS[params.language(request)]
    lat = _coordinate(request, "lat", 90)
    lon = _coordinate(request, "lon", 180)
    municipality = params.municipality(request)
    if (lat is None) != (lon is None):
        raise Problem(422, "Unprocessable Content", "give both lat and lon, or a municipality", parameter="lat,lon")
    if lat is None and municipality is None:
        raise Problem(422, "Unprocessable Content", "give lat and lon, or a municipality", parameter="lat,lon")
    async with request.app[POOL].acquire() as conn:
        if municipality is None and lat is not None and lon is not None:
            boundaries = await boundary_index(request.app, conn)
            if len(boundaries):
                municipality = boundaries.municipality_at(lat, lon)
            else:
                row = await conn.fetchrow(_NEAREST, lat, lon, NEAREST_KM / 111.0)
                municipality = row["municipality_code"] if row else None
        answer = await level_in_force(conn, municipality=municipality, lat=lat, lon=lon)
    top = answer.top
    if top is None:
        headline, instruction = CALM[language]
        body: dict[str, Any] = {"level": None, "headline": headline, "instruction": instruction}
    elif top.kind == "official":
        body = {"level": top.level, "condition": "official_information", "alert_id": None,
                "event": top.name[language], "headline": top.name[language],
                "instruction": OFFICIAL_INSTRUCTION.get(top.level, {}).get(language, CALM[language][1])}
    else:
        alert = top.alert or {}
        text = text_for(alert["condition"], top.level, language)
        place = alert.get("station_name") or alert.get("river") or ""
        body = {"level": top.level, "condition": alert["condition"], "alert_id": alert["id"], "event": text.event,
                "headline": text.headline.format(place=place), "instruction": text.instruction}
    body.update({
        "municipality_code": municipality,
        "language": language,
        "exercise": top is not None and top.exercise,
        "exercise_in_progress": answer.exercise_in_progress,
        "hazard": answer.hazard,
        "sources": [s.as_json(language) for s in answer.sources],
        "alerts": [{"id": a["id"], "condition": a["condition"], "level": a["level"], "exercise": a["exercise"],
                    "station_id": a["station_id"], "order_id": a["order_id"]} for a in answer.alerts],
    })
    return web.json_response(body, headers={"Cache-Control": "no-store"})
