"""The polygon `sonae graph fetch` asks Overpass for: a few hundred points covering an area's outline.

A municipality's N03 boundary has thousands of points (郡山市 072036: 10,563), and osmnx sends a polygon's
outline to Overpass point by point (``(poly:'lat lon lat lon …')``, after buffering it by 500 m: 5,660
points for 郡山市, 118,859 characters of the query). That is a long query for one city: heavy for a public
Overpass server, and more than some accept. :func:`covering_polygon` finds a simpler polygon to ask for instead:

1. buffer the boundary by a margin ``m`` (metres, in osmnx's UTM projection of it);
2. join what is still apart (islets off the coast, an exclave) by bridges ``m`` wide, each part to the
   nearest part already joined, from the largest; drop holes (osmnx sends outlines only);
3. simplify the outline by ``0.9 m`` (Douglas-Peucker: the outline moves by at most that much, so the
   boundary, ``m`` inside the buffer's outline, stays inside);
4. check what osmnx would send (:func:`sent_polygons`: its projection back to lon/lat and 6-decimal
   rounding) with shapely ``covers``: every point of the boundary lies in it, so no road of the
   municipality is lost. When the check fails, or more than :data:`MAX_QUERY_POINTS` points would be
   sent, the margin grows by a tenth (by half while 1.5 times too many points are left) and the steps
   run again.

The outline lies at most ``1.9 m`` past the boundary (bridges aside). For Fukushima's 59 municipalities ``m``
ends between 25 and 139 m, at most 300 points are sent (郡山市: 294, 6,173 characters), each polygon's area is
at most 6.6 % more than the municipality's, and it lies inside the 500 m buffer asked for before
(tests/evac/test_evac_query_area.py checks every one; ``bench/overpass_query.py`` prints the figures).
Only the question changes: the streets are still kept inside the real boundary
(:func:`evac.graph.graph_from_polygon`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import shapely
from osmnx import _overpass, projection
from shapely.geometry import MultiPolygon, Polygon

#: most points (lat/lon pairs, the closing one included) of the polygon sent to Overpass
MAX_QUERY_POINTS = 300
#: the first margin tried (m)
FIRST_MARGIN_M = 25.0
#: each failed try multiplies the margin by this
MARGIN_GROWTH = 1.1
#: ... or by this, when this many times too many points were left (an outline far more ragged than N03's)
FAR_OFF = 1.5
#: the outline is simplified by this share of the margin (less than 1: the boundary stays inside)
SIMPLIFY_SHARE = 0.9
#: the largest margin tried (m): never reached by an N03 boundary, a guard against a loop without end
MAX_MARGIN_M = 5_000.0


@dataclass(frozen=True)
class QueryArea:
    """What is asked of Overpass for an area.

    ``polygon``: the polygon as sent (lon/lat, exterior only); ``points``: how many lat/lon pairs the query
    holds (all requests together); ``requests``: how many polygons osmnx sends (1 unless the area exceeds
    osmnx's ``max_query_area_size``); ``boundary_points``: the points of the area's own outline;
    ``margin_m``: the buffer it was made with (the polygon reaches at most ``reach_m`` past the boundary,
    bridges between parts aside)."""

    polygon: Polygon | MultiPolygon
    points: int
    requests: int
    boundary_points: int
    margin_m: float

    @property
    def reach_m(self) -> float:
        return self.margin_m * (1 + SIMPLIFY_SHARE)


def sent_polygons(polygon: Polygon | MultiPolygon) -> list[Polygon]:
    """The polygons osmnx 2 puts in its Overpass queries for ``polygon`` (lon/lat), as Overpass reads them.

    osmnx projects the polygon to UTM, takes a MultiPolygon's (or a polygon larger than
    ``ox.settings.max_query_area_size``'s) convex hull and cuts it into squares of that size, projects back
    and writes each exterior's points rounded to 6 decimals (:func:`osmnx._overpass._make_overpass_polygon_coord_strs`,
    called here so that what is checked is what is sent)."""
    out = []
    for text in _overpass._make_overpass_polygon_coord_strs(polygon):
        numbers = [float(v) for v in text.split()]
        out.append(Polygon(list(zip(numbers[1::2], numbers[::2], strict=True))))
    return out


def covering_polygon(boundary: Any, *, max_points: int = MAX_QUERY_POINTS) -> QueryArea:
    """A polygon (lon/lat) covering ``boundary`` (a shapely (Multi)Polygon, lon/lat) with at most
    ``max_points`` points as osmnx sends it; see the module's description for how.

    A boundary that already needs no more than ``max_points`` points and is one polygon without holes is
    sent as it is (margin 0)."""
    boundary_points = shapely.get_num_coordinates(boundary)
    shapely.prepare(boundary)
    if isinstance(boundary, Polygon) and not boundary.interiors and boundary_points <= max_points:
        found = _checked(boundary, boundary, max_points, 0.0, boundary_points)
        if found is not None:
            return found
    projected, crs = projection.project_geometry(boundary)
    margin = FIRST_MARGIN_M
    while margin <= MAX_MARGIN_M:
        grown = _one_piece(projected.buffer(margin, quad_segs=2), margin)
        if grown is not None:
            # simplified as a line, not as a polygon: GEOS (3.11 on) also drops a ring's first point when it
            # lies within the tolerance of the line between its neighbours, and the outline then moved past
            # the bound (found: 金山町 074454's outline 84.9 m from its border at a 40.3 m margin, not at most 76.5 m)
            line = shapely.LineString(grown.exterior.coords).simplify(margin * SIMPLIFY_SHARE)
            outline = Polygon(line.coords)
            points = shapely.get_num_coordinates(outline)
            if points > max_points:  # projecting keeps the points: no need to check what would be sent
                margin *= MARGIN_GROWTH if points < FAR_OFF * max_points else FAR_OFF
                continue
            lonlat, _ = projection.project_geometry(outline, crs=crs, to_latlong=True)
            found = _checked(lonlat, boundary, max_points, margin, boundary_points)
            if found is not None:
                return found
        margin *= MARGIN_GROWTH
    raise ValueError(f"no polygon of at most {max_points} points covering the area was found to ask Overpass for "
                     f"(margins up to {MAX_MARGIN_M:,.0f} m tried)")


def _one_piece(geom: Any, margin: float) -> Polygon | None:
    """``geom``'s parts as one polygon without holes, joined by bridges ``margin`` wide along the shortest
    lines of a minimum spanning tree of the parts (each part joined to the nearest part already joined,
    from the largest: islets are joined to their neighbours, not each across the sea to the mainland);
    ``None`` when the union is still not one polygon (the caller tries a larger margin)."""
    parts = sorted(getattr(geom, "geoms", [geom]), key=lambda p: p.area, reverse=True)
    if len(parts) > 1:
        for part in parts:
            shapely.prepare(part)
        joined, rest, bridges = [0], list(range(1, len(parts))), []
        nearest = {i: (parts[0].distance(parts[i]), 0) for i in rest}  # part -> (distance, joined part)
        while rest:
            i = min(rest, key=lambda j: nearest[j][0])
            rest.remove(i)
            bridges.append(shapely.shortest_line(parts[nearest[i][1]], parts[i]).buffer(margin / 2))
            joined.append(i)
            for j in rest:
                d = parts[i].distance(parts[j])
                if d < nearest[j][0]:
                    nearest[j] = (d, i)
        geom = shapely.union_all([*parts, *bridges])
    if not isinstance(geom, Polygon) or geom.is_empty:
        return None
    return Polygon(geom.exterior)


def _checked(candidate: Any, boundary: Any, max_points: int, margin: float,
             boundary_points: int) -> QueryArea | None:
    """``candidate`` as a :class:`QueryArea` when what osmnx would send for it covers ``boundary`` with at
    most ``max_points`` points, else ``None``."""
    if not isinstance(candidate, Polygon) or not candidate.is_valid:
        return None
    sent = sent_polygons(candidate)
    points = sum(len(p.exterior.coords) for p in sent)
    if points > max_points:
        return None
    union = sent[0] if len(sent) == 1 else shapely.union_all(sent)
    if not union.is_valid or not union.covers(boundary):
        return None
    return QueryArea(candidate, points, len(sent), boundary_points, margin)
