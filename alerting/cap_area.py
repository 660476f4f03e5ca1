"""An order's area as CAP 1.2 polygons, which cannot have holes.

CAP 1.2 §3.3.2 ``polygon`` is one closed ring, and several ``polygon`` elements of an ``area`` mean
their union. A GeoJSON order area may exclude parts with holes (an island of high ground left out of
a 避難指示); writing only the outer ring would tell residents of the excluded part to evacuate.

What Sonae publishes instead: an equivalent set of hole-free polygons whose union is exactly the
original area. Each polygon with holes is cut into vertical strips along the lines
``x = representative_point(hole).x`` — a point strictly inside each hole, so every hole is crossed by
a cut and opens into the outline of the strips on both sides of it; no strip can keep a hole, and the
strips together cover the polygon exactly (``shapely.clip_by_rect`` on the polygon's bounds). The
count grows by about one polygon per hole. Positions are [lon, lat] (GeoJSON) in and out.

An invalid polygon with holes (self-crossing, a hole outside its shell) is first made valid with
``shapely.make_valid``; one without holes is published as drawn, as before.

Errors: :class:`ValueError` for a geometry that is not a Polygon or MultiPolygon.
"""

from __future__ import annotations

from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, shape


def _strips(poly: Polygon, *, axis: int, depth: int) -> list[Polygon]:
    if not poly.interiors:
        return [poly]
    if depth > 4:  # never reached for valid polygons: every cut opens the holes it crosses
        raise ValueError("cannot split the area into hole-free polygons")
    minx, miny, maxx, maxy = poly.bounds
    cuts = sorted({Polygon(h).representative_point().coords[0][axis] for h in poly.interiors})
    lo, hi = (minx, maxx) if axis == 0 else (miny, maxy)
    edges = [lo, *(c for c in cuts if lo < c < hi), hi]
    out: list[Polygon] = []
    for a, b in zip(edges, edges[1:], strict=False):
        piece = shapely.clip_by_rect(poly, a, miny, b, maxy) if axis == 0 else shapely.clip_by_rect(poly, minx, a,
                                                                                                      maxx, b)
        for part in getattr(piece, "geoms", [piece]):
            if isinstance(part, Polygon) and not part.is_empty and part.area > 0:
                out.extend(_strips(part, axis=1 - axis, depth=depth + 1))
    return out


def hole_free_polygons(geometry: dict[str, Any]) -> list[Polygon]:
    """A GeoJSON Polygon/MultiPolygon as polygons without holes whose union equals it (see the module)."""
    geom = shape(geometry)
    if not isinstance(geom, Polygon | MultiPolygon):
        raise ValueError(f"an order area is a Polygon or MultiPolygon, not {geom.geom_type}")
    if not geom.is_valid and any(p.interiors for p in getattr(geom, "geoms", [geom])):
        # a self-crossing ring or a hole outside its shell (staff draw them): cut the area GEOS makes
        # valid (shapely.make_valid), never fail — one bad order must not break the feed for everyone
        geom = shapely.make_valid(geom)
    polygons = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and not g.is_empty]
    out: list[Polygon] = []
    for poly in polygons:
        out.extend(_strips(poly, axis=0, depth=0))
    return out


def cap_rings(geometry: dict[str, Any]) -> list[list[list[float]]]:
    """The closed outer rings ([lon, lat] …) of :func:`hole_free_polygons`, for CAP ``polygon``."""
    return [[[x, y] for x, y in poly.exterior.coords] for poly in hole_free_polygons(geometry)]
