"""The current 警戒レベル for a point or a municipality, and what it means to do now:
``GET /api/v1/level``.

The level is the highest among the public alerts in force there: river-gauge alerts (警戒レベル相当,
2–4 and 5 for overflow) of the municipality, evacuation orders (3 高齢者等避難, 4 避難指示,
5 緊急安全確保) of the municipality without an area, orders of any municipality whose area covers the
point (for a municipality query, orders with an area count for their own municipality), and gauge
alerts of gauges within 5 km of the point. The resident page applies the same rule.

A point's municipality is the one whose boundary (国土数値情報 N03, :mod:`ingest.boundaries`) covers it;
a point outside every loaded boundary has none. Only when no boundaries are loaded at all does Sonae
fall back to the municipality of the nearest registered shelter or station within 20 km. The position
serves this answer only; it is never logged or stored.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web
from shapely.geometry import Point, shape

from alerting.store import list_active
from alerting.texts import text_for
from api import params
from api.boundaries import index as boundary_index
from api.context import POOL
from api.problems import Problem

routes = web.RouteTableDef()

LANGS = {"ja": "ja-JP", "en": "en-US", "ja-easy": "ja-JP-x-easy"}
NEAREST_KM = 20.0
#: a gauge alert counts for points this close to the gauge, whatever the municipality (as on the page)
NEARBY_GAUGE_M = 5000.0


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance: exact enough at a few kilometres."""
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    return 6_371_000.0 * math.hypot(x, math.radians(lat2 - lat1))

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
        raise Problem(400, "Bad Request", "give both lat and lon, or a municipality", parameter="lat,lon")
    if lat is None and municipality is None:
        raise Problem(400, "Bad Request", "give lat and lon, or a municipality", parameter="lat,lon")
    point = Point(lon, lat) if lat is not None and lon is not None else None
    async with request.app[POOL].acquire() as conn:
        if municipality is None and lat is not None and lon is not None:
            boundaries = await boundary_index(request.app, conn)
            if len(boundaries):
                municipality = boundaries.municipality_at(lat, lon)
            else:
                row = await conn.fetchrow(_NEAREST, lat, lon, NEAREST_KM / 111.0)
                municipality = row["municipality_code"] if row else None
        alerts = await list_active(conn, audience="public")
    # A river and its floods cross town lines: an order whose area covers the point counts whatever
    # municipality issued it; alerts without an area count for their own municipality.
    in_force = []
    for alert in alerts:
        area = alert.get("area")
        if area and point is not None:
            geometry = shape(json.loads(area) if isinstance(area, str) else area)
            if geometry.covers(point):
                in_force.append(alert)
        elif alert["municipality_code"] == municipality:
            in_force.append(alert)
        elif point is not None and alert.get("lat") is not None and _distance_m(
                lat, lon, alert["lat"], alert["lon"]) <= NEARBY_GAUGE_M:  # type: ignore[arg-type]
            in_force.append(alert)  # a gauge just across the municipal line
    # Real alerts always decide; drill alerts speak only where no real one is in force, marked as drills.
    real = [a for a in in_force if not a["exercise"]]
    considered = real or in_force
    top = max(considered, key=lambda a: (a["level"] or 0, a["condition"] == "evacuation_order"), default=None)
    if top is None or not top["level"]:
        headline, instruction = CALM[language]
        body: dict[str, Any] = {"level": None, "headline": headline, "instruction": instruction}
    else:
        text = text_for(top["condition"], top["level"], language)
        place = top.get("station_name") or top.get("river") or ""
        body = {"level": top["level"], "condition": top["condition"], "alert_id": top["id"], "event": text.event,
                "headline": text.headline.format(place=place), "instruction": text.instruction}
    body.update({
        "municipality_code": municipality,
        "language": language,
        "exercise": top is not None and bool(top["exercise"]),
        "exercise_in_progress": any(a["exercise"] for a in in_force),
        "alerts": [{"id": a["id"], "condition": a["condition"], "level": a["level"], "exercise": a["exercise"],
                    "station_id": a["station_id"], "order_id": a["order_id"]} for a in in_force],
    })
    return web.json_response(body, headers={"Cache-Control": "no-store"})
