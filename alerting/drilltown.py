"""Where the drill town (訓練町, :data:`~sonae.municipality_code.DRILL_TOWN_CODE`) lies: the one extent every
position → municipality mapping uses for it.

The drill town is fictional and has no municipal boundary: it lies inside real 郡山市 (072036), by the
Abukuma (``evac.drilltown``). A point is *in the drill town* when it lies within :data:`DRILL_TOWN_MARGIN_M`
of the box of the town's shipped shelters (:func:`drill_town_box`). Such a point is in two municipalities
at once, for different answers:

* for real answers, in the municipality its boundaries (or nearest real place) give, e.g. 072036: nothing
  real is ever in the drill town (``sonae.municipality_code.drill_town_refusal``);
* for exercise answers, in the drill town as well: its whole-town exercise orders and exercise official
  information apply there (found: a level-5 drill order for 079995 with no area reached no point of the
  town; ``/api/v1/level`` answered 072036's level 3).

Used by ``alerting.level`` (``GET /api/v1/level`` and the resident page) and by ``notify.store`` (a push
circle's municipalities, which fan-out matches for exercise alerts only).
"""

from __future__ import annotations

import math

import asyncpg

from sonae.municipality_code import DRILL_TOWN_CODE

__all__ = ["DRILL_TOWN_MARGIN_M", "DRILL_TOWN_SOURCE", "Box", "box_distance_m", "drill_town_box", "reaches"]

#: (min lon, min lat, max lon, max lat) in degrees (WGS 84)
Box = tuple[float, float, float, float]

#: how far (metres) the drill town's streets reach beyond its outermost shelters and gauges: a shelter stands
#: at every 6th crossing of an 80 m grid (``evac.drilltown.generate``), so the outer streets lie up to
#: 5 blocks (400 m) beyond them; 500 m with rounding
DRILL_TOWN_MARGIN_M = 500.0

#: the ``shelters.source`` of the shelters shipped with the drill town (``evac.service``'s seeding of
#: ``evac.drilltown``'s ``shelters.geojson``; an import is ``import``, a staff edit keeps it)
DRILL_TOWN_SOURCE = "drilltown"


async def drill_town_box(conn: asyncpg.Connection) -> Box | None:
    """(min lon, min lat, max lon, max lat) of the drill town's shipped shelters in degrees, or None when this
    deployment has none (the drill town has no boundary; its shelters are spread over its blocks,
    ``evac.drilltown.generate``, its gauges on its river between them).

    Only the shelters shipped with it (:data:`DRILL_TOWN_SOURCE`): found, a station imported as 079995 at
    会津若松, 40 km away, grew the town, and a push circle there listed the drill town."""
    row = await conn.fetchrow(
        """SELECT min(lon) AS west, min(lat) AS south, max(lon) AS east, max(lat) AS north FROM shelters
           WHERE municipality_code = $1 AND source = $2""", DRILL_TOWN_CODE, DRILL_TOWN_SOURCE)
    if row is None or row["west"] is None:
        return None
    return float(row["west"]), float(row["south"]), float(row["east"]), float(row["north"])


def box_distance_m(lat: float, lon: float, box: Box) -> float:
    """Metres from (lat, lon) to the nearest point of a (min lon, min lat, max lon, max lat) box (0 inside):
    the equirectangular distance of push fan-out's circle test (``notify.store``)."""
    west, south, east, north = box
    dx = (min(max(lon, west), east) - lon) * math.cos(math.radians(lat)) * 111_320
    dy = (min(max(lat, south), north) - lat) * 110_574
    return math.hypot(dx, dy)


def reaches(lat: float, lon: float, box: Box | None, *, radius_m: float = 0.0) -> bool:
    """Whether a point (``radius_m`` 0) or a circle of ``radius_m`` metres around (lat, lon) reaches the drill
    town whose box is ``box`` (:func:`drill_town_box`; None: this deployment has no drill town)."""
    return box is not None and box_distance_m(lat, lon, box) <= radius_m + DRILL_TOWN_MARGIN_M
