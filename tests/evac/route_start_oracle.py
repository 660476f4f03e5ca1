"""The resident's core query as it was before issue #21's shortcuts (numpy per candidate, ``EdgeIndex.within``
and ``partial_cost`` for every end, a ``Partial`` per candidate): the oracle that
``Engine.route_start`` must equal number for number.

Legs and partial edges are judged by the one boundary rule (``evac.network.BOUNDARY_RULE``), written out
here without the engine's filters: every area in force, shapely ``intersects`` on the lon/lat line (the
access leg from the position as given to ``RoadNetwork.point_lonlat``; a partial edge by
``RoadNetwork.part_meets``, on the edge's own lon/lat line)."""

from __future__ import annotations

import math

import numpy as np
import shapely

from evac.engine import (
    AT_SHELTER_M,
    FIRST_LOOK_M,
    SEARCH_M,
    TIE_M,
    UNREACHABLE_S,
    Engine,
    Field,
    Partial,
    RouteResult,
    RouteStart,
    Stop,
    net_edge_plen,
)
from evac.network import RoadNetwork
from evac.shelters import Shelter


def at_shelter(engine: Engine, f: Field, lon: float, lat: float) -> Shelter | None:
    """The shelter a position is at, brute force: every shelter of the state, open, rated for the field's hazard,
    not full, within ``AT_SHELTER_M`` (projected), neither it nor the line to it touching a blocked area in
    force (shapely ``intersects`` on the areas' lon/lat polygons); the nearest, then the least id."""
    x, y = engine.network.project_point(lon, lat)
    blocked = [a.geometry for a in f.blocked.areas]
    found = []
    for s in engine._snap.state.shelters.values():
        if not (s.is_open and all(h in s.hazards for h in f.hazard.split(",")) and not s.is_full):
            continue
        sx, sy = engine.network.project_point(s.lon, s.lat)
        d = math.hypot(sx - x, sy - y)
        line = shapely.LineString([(lon, lat), (s.lon, s.lat)]) if (lon, lat) != (s.lon, s.lat) else None
        if d > AT_SHELTER_M or any(shapely.Point(s.lon, s.lat).intersects(g) or (
                line is not None and line.intersects(g)) for g in blocked):
            continue
        found.append((d, s.id, s))
    return min(found, key=lambda t: t[:2])[2] if found else None


def route_start(engine: Engine, lat: float, lon: float, *, profile: str = "walk", hazard: str = "flood",
                exercise: bool = False) -> RouteResult | RouteStart:
    """``Engine.route_start`` as it was (the field must be computed: ``engine.field(...)`` first)."""
    snap = engine._snap
    f = snap.fields[(profile, hazard, exercise)]
    st = snap.state
    here = tuple(f.blocked.at(lon, lat))
    if here:
        return RouteResult("inside_hazard", [], math.inf, None, math.nan, f, st, here)
    if not engine.in_area(lat, lon):
        return RouteResult("outside_area", [], math.inf, None, math.nan, f, st)
    net = engine.network
    x, y = net.project_point(lon, lat)
    there = at_shelter(engine, f, lon, lat)
    if there is not None:
        return RouteResult("at_shelter", [], 0.0, there, 0.0, f, st, (), (float(lon), float(lat)))
    idx = net.profile(profile).index
    if idx.empty:
        return RouteResult("off_network", [], math.inf, None, math.inf, f, st)
    pts = idx.within(x, y, FIRST_LOOK_M)
    if not len(pts) or float(pts.dist[0]) + TIE_M > FIRST_LOOK_M:
        dmid = idx.nearest_distance(x, y)
        pts = idx.within(x, y, dmid + TIE_M)
        if not len(pts):
            return RouteResult("off_network", [], math.inf, None, dmid, f, st)
    d_near = float(pts.dist[0])
    if d_near > engine.max_snap_m:
        return RouteResult("off_network", [], math.inf, None, d_near, f, st)
    if not f.shelters:
        return RouteResult("no_shelter_in_area", [], math.inf, None, d_near, f, st)
    band = pts.dist <= d_near + TIE_M
    options = [_best_from(engine, f, lon, lat, x, y, int(pts.edge[i]), float(pts.along[i]), float(pts.dist[i]),
                          float(pts.x[i]), float(pts.y[i])) for i in np.flatnonzero(band).tolist()]
    if options[0] is None:
        wide = idx.within(x, y, max(SEARCH_M, d_near + TIE_M))
        options = []
        d_valid = math.inf
        for i in range(len(wide)):
            if wide.dist[i] > d_valid + TIE_M:
                break
            o = _best_from(engine, f, lon, lat, x, y, int(wide.edge[i]), float(wide.along[i]), float(wide.dist[i]),
                           float(wide.x[i]), float(wide.y[i]))
            if o is not None:
                d_valid = min(d_valid, o[1])
                options.append(o)
    best = min((o for o in options if o is not None), key=lambda o: o[0], default=None)
    if best is None:
        return RouteResult("no_safe_route", [], math.inf, None, d_near, f, st)
    total, d, access_s, first, end, stop = best
    if stop is not None:
        return RouteResult("ok", [], total, f.shelters[stop.shelter], d, f, st, (), (float(lon), float(lat)),
                           access_s, first, None, stop.egress_m, stop.egress_s)
    return RouteStart(total, d, f, st, (float(lon), float(lat)), access_s, first, end)


def _factor(f: Field, line: shapely.Geometry) -> float:
    """inf if ``line`` (lon/lat) intersects a blocked area in force, else the largest factor of the
    penalty areas it intersects (1 when none): every area tested, no boxes first."""
    if any(line.intersects(g) for g in f.lines.blocked):
        return math.inf
    return max([p for g, p in f.lines.penalties if line.intersects(g)], default=1.0)


def _part_factor(f: Field, net: RoadNetwork, e: int, a: float, b: float) -> float:
    """:func:`_factor` of the part of edge ``e`` from ``a`` to ``b``, each area tested on the edge's own line."""
    if any(net.part_meets(e, a, b, g) for g in f.lines.blocked):
        return math.inf
    return max([p for g, p in f.lines.penalties if net.part_meets(e, a, b, g)], default=1.0)


def _partial(engine: Engine, f: Field, e: int, a: float, b: float, plen: float) -> tuple[float, float]:
    """Seconds and metres from ``a`` to ``b`` projected metres along base edge ``e`` (``plen`` long): that
    fraction of the edge's time (along it or against it) and length; on an edge the areas touch, times the
    factor of the part itself (:func:`_factor` on ``RoadNetwork.part_meets``, on the edge's own lon/lat line)."""
    net = engine.network
    span = abs(b - a)
    if span <= 1e-9:
        return 0.0, 0.0
    fwd, bwd = net.times[f.profile]
    frac = min(1.0, span / plen) if plen > 0 else 0.0
    t = float(fwd[e]) if b > a else float(bwd[e])
    if not math.isfinite(t):
        return math.inf, math.inf
    touched = f.mult is not None and f.mult[e] != 1.0
    fac = _part_factor(f, net, e, a, b) if touched else 1.0
    return t * frac * fac, float(net.edge_length[e]) * frac


def _best_from(engine: Engine, f: Field, lon: float, lat: float, x: float, y: float, e: int, along: float,
               dist: float, qx: float, qy: float) -> tuple[float, float, float, Partial, int, Stop | None] | None:
    net = engine.network
    road = net.point_lonlat(e, along, (qx, qy))
    leg = _factor(f, shapely.LineString([(lon, lat), road]) if road != (lon, lat) else shapely.Point(lon, lat))
    if leg == math.inf:
        return None
    access_s = dist / f.access_speed * leg
    plen = net_edge_plen(net, e)
    best: tuple[float, float, float, Partial, int, Stop | None] | None = None
    for end, end_along in ((int(net.edge_u[e]), 0.0), (int(net.edge_v[e]), plen)):
        d_end = float(f.dist[end])
        if not d_end < UNREACHABLE_S:
            continue
        ps, pm = _partial(engine, f, e, along, end_along, plen)
        total = access_s + ps + d_end
        if math.isfinite(total) and (best is None or total < best[0]):
            best = (total, dist, access_s, Partial(e, along, end_along, ps, pm), end, None)
    for stop in f.stops.on(e):
        ps, pm = _partial(engine, f, e, along, stop.along, plen)
        total = access_s + ps + stop.egress_s
        if math.isfinite(total) and (best is None or total < best[0]):
            best = (total, dist, access_s, Partial(e, along, stop.along, ps, pm), -1, stop)
    return best
