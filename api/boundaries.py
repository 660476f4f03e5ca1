"""Municipal boundaries in the API: a point's municipality, where a drawn area belongs, the attribution.

Each API process keeps the boundary index of :mod:`ingest.boundaries` (reloaded when the table changes).
Staff-drawn areas (hazard areas, order areas) must lie in the municipality they are drawn for, with
``ingest.boundaries.BORDER_SLACK_M`` of slack along the border (the rule:
``BoundaryIndex.place_area``); an account bound to a municipality may only draw inside its own. ``GET /api/v1/attribution`` names the
sources whose licences ask to be credited (the 国土数値情報 利用約款 for the boundaries).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from aiohttp import web
from shapely.geometry.base import BaseGeometry

from api.auth import Account
from api.context import POOL
from api.problems import Problem
from ingest.boundaries import ATTRIBUTION, ATTRIBUTION_EN, BORDER_SLACK_M, BoundaryCache, BoundaryIndex
from sonae.geojson import shape_of

routes = web.RouteTableDef()
log = logging.getLogger("sonae.api")

BOUNDARIES = web.AppKey("boundaries", BoundaryCache)
#: the warm-up task, referenced until it ends
_WARMING: web.AppKey[set[asyncio.Task[None]]] = web.AppKey("boundaries_warming")


def setup(app: web.Application) -> None:
    app[BOUNDARIES] = BoundaryCache()
    app[_WARMING] = set()
    app.router.add_routes(routes)
    app.on_startup.append(_warm)
    app.on_cleanup.append(_stop_warming)


async def _warm(app: web.Application) -> None:
    """Load the boundaries in the background at start, so the first resident does not wait for them."""
    async def load() -> None:
        try:
            async with app[POOL].acquire() as conn:
                await index(app, conn)
        except Exception as exc:  # only a warm-up: the first request loads them again
            log.warning("municipal boundaries not loaded yet", extra={"error": str(exc)[:200]})

    task = asyncio.create_task(load(), name="boundaries-warm")
    warming: set[asyncio.Task[None]] = app[_WARMING]
    warming.add(task)
    task.add_done_callback(warming.discard)


async def _stop_warming(app: web.Application) -> None:
    warming: set[asyncio.Task[None]] = app[_WARMING]
    for task in list(warming):
        task.cancel()


async def index(app: web.Application, conn: asyncpg.Connection) -> BoundaryIndex:
    """This process's boundary index (empty when no boundaries are loaded)."""
    return await app[BOUNDARIES].get(conn)


def _geometry(raw: dict[str, Any], name: str) -> BaseGeometry:
    try:
        return shape_of(raw)  # (GeometryError is a ValueError)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise Problem(400, "Bad Request", f"field {name!r} is not a GeoJSON geometry", field=name) from None


async def area_municipality(request: web.Request, conn: asyncpg.Connection, account: Account,
                            municipality: str | None, area: dict[str, Any], *, name: str,
                            exercise: bool) -> str | None:
    """The municipality a staff-drawn area belongs to, checked against the boundaries.

    Call it outside a transaction (it may load the boundary index and measure the area in a thread).
    ``municipality`` is the one given (or the account's); without one, the municipality holding the
    largest part of the area. Raises a 403 problem when a municipal account draws beyond its own
    municipality, a 422 problem (area and municipality each valid, not together) when the area lies
    beyond the given municipality; both allow
    :data:`BORDER_SLACK_M`. Where Sonae has no boundary for the municipality (the drill town 079995, another
    prefecture's town before its N03 boundaries are imported), a real area (``exercise`` false) must not
    reach into a municipality Sonae has one for: same problems. Without that, the drill town's staff could
    order 避難指示 or block roads for real across all of Fukushima (an order's area counts wherever it lies:
    alerting/level.py); its drills, which only drills see, may still lie in the real town around it. A real
    area that touches no boundary at all (at sea, in a prefecture Sonae has no boundaries for) is a 422
    problem: it concerns no resident Sonae covers. Drills may lie anywhere (the drill town's are at sea on
    purpose in some scenarios).
    """
    boundaries = await index(request.app, conn)
    if not len(boundaries):
        return municipality
    geometry = _geometry(area, name)

    if not exercise and not await asyncio.to_thread(boundaries.touching, geometry):
        # found: a real order or hazard area at sea or in another prefecture was taken 201 (with no municipality
        # for a prefecture-wide account): no resident Sonae covers is in it. A drill may lie anywhere.
        raise Problem(422, "Unprocessable Content", "the area lies entirely outside the area Sonae covers: it "
                      f"touches none of the {len(boundaries)} municipalities Sonae has boundaries for "
                      "(GET /api/v1/municipalities marks them \"covered\": true); draw it where residents "
                      "Sonae covers live, or mark a drill as an exercise", field=name, covered=False)
    # shapely work of up to a second for a large area: off the event loop
    placed = await asyncio.to_thread(boundaries.place_area, geometry, municipality)
    if placed.municipality is None:
        return None
    if placed.beyond_m is None and not exercise:
        others = await asyncio.to_thread(boundaries.reaching_into, geometry)
        if others:
            where = (f"a real area of municipality {placed.municipality}, for which Sonae has no boundary, reaches "
                     f"more than {BORDER_SLACK_M:.0f} m into municipality {', '.join(others)}")
            if account.municipality_code is not None:
                raise Problem(403, "Forbidden", f"{where}: draw inside your municipality, or mark a drill as an "
                              "exercise", field=name)
            raise Problem(422, "Unprocessable Content", f"{where}: give the municipality it lies in, or mark a "
                          "drill as an exercise", field=name)
    if not placed.fits:
        municipality, beyond = placed.municipality, placed.beyond_m
        where = f"{beyond:.0f} m beyond the border of municipality {municipality}"
        if account.municipality_code is not None:
            raise Problem(403, "Forbidden", f"the area reaches {where}: draw inside your municipality "
                          f"(up to {BORDER_SLACK_M:.0f} m across its border)", field=name)
        raise Problem(422, "Unprocessable Content", f"the area reaches {where}: give the municipality it lies in, or "
                      "draw one area per municipality", field=name)
    return placed.municipality


@routes.get("/api/v1/attribution")
async def attribution(request: web.Request) -> web.Response:
    """The sources Sonae's shipped data come from, with the credit each licence asks for."""
    async with request.app[POOL].acquire() as conn:
        sources = await conn.fetch("SELECT DISTINCT source FROM municipality_boundaries ORDER BY source")
    return web.json_response({"attributions": [
        {"data": "municipal boundaries (行政区域)", "credit": ATTRIBUTION, "credit_en": ATTRIBUTION_EN,
         "publisher": "国土交通省 (MLIT), 国土数値情報 N03", "terms": "国土数値情報 利用約款",
         "loaded_from": [r["source"] for r in sources]},
        {"data": "municipality codes and names (全国地方公共団体コード)",
         "credit": "総務省「全国地方公共団体コード」; J-LIS 全国自治体マップ検索 via Code for FUKUI localgovjp (CC0); "
                   "romaji: 国土地理院「地名集日本」",
         "credit_en": "MIC list of local government codes; J-LIS via Code for FUKUI (CC0); romaji: GSI Gazetteer of Japan",
         "publisher": "総務省 (MIC)", "terms": "政府標準利用規約 (CC BY 4.0 compatible)"},
    ]}, headers={"Cache-Control": "public, max-age=3600"})
