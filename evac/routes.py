"""Route answers: a GeoJSON Feature along the real road geometry, with steps, shelter and guidance.

The line runs from the position the engine was given (the API rounds it to about 10 m first) along the
access leg to the nearest usable road, along the roads, and from the shelter's road point to the
shelter itself; distance, time and steps include both straight legs. Nothing here logs anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyproj

from evac.engine import Engine, RouteResult
from evac.guidance import LANGS, arrive_text, check_lang, status_text, step_text
from evac.network import RoadNetwork
from evac.snapping import sub_line


def _bearing(a: Sequence[float], b: Sequence[float]) -> float:
    dx = (b[0] - a[0]) * math.cos(math.radians((a[1] + b[1]) / 2))
    dy = b[1] - a[1]
    return math.degrees(math.atan2(dx, dy)) % 360.0


def _modifier(turn: float) -> str:
    turn = (turn + 180.0) % 360.0 - 180.0  # -180..180, positive = right
    a = abs(turn)
    if a < 20:
        return "straight"
    side = "right" if turn > 0 else "left"
    if a < 50:
        return f"slight {side}"
    if a < 130:
        return side
    if a < 170:
        return f"sharp {side}"
    return "uturn"


def route_legs(net: RoadNetwork, r: RouteResult) -> list[tuple[int, bool, float]]:
    """``(base edge, against its direction, seconds)`` for each hop of a route."""
    pg = net.profile(r.field.profile)
    w = r.field.de_weight
    legs = []
    for a, b in zip(r.path, r.path[1:], strict=False):
        d = pg.best_edge(a, b, w)
        legs.append((int(pg.de_base[d]), bool(pg.de_rev[d]), float(w[d])))
    return legs


_INVERSE: dict[int, pyproj.Transformer] = {}


def _to_lonlat(net: RoadNetwork, xy: np.ndarray) -> np.ndarray:
    tr = _INVERSE.get(net.epsg)
    if tr is None:
        tr = _INVERSE[net.epsg] = net.transformer(inverse=True)
    lon, lat = tr.transform(xy[:, 0], xy[:, 1])
    return np.column_stack([lon, lat])


def route_parts(net: RoadNetwork, r: RouteResult) -> list[tuple[str, int, np.ndarray, float, float]]:
    """The pieces of a route in order: ``(kind, base edge or -1, lon/lat coords, metres, seconds)``.

    ``kind`` is ``access`` (position to road), ``road`` (a partial or whole edge) or ``egress`` (road to
    shelter).
    """
    assert r.origin is not None and r.first is not None and r.shelter is not None
    out: list[tuple[str, int, np.ndarray, float, float]] = []
    f = r.first
    road0 = _to_lonlat(net, sub_line(net.edge_xy(f.edge), f.a, f.b))
    out.append(("access", -1, np.array([r.origin, road0[0]]), r.snap_distance_m, r.access_s))
    if f.metres > 0:
        out.append(("road", f.edge, road0, f.metres, f.seconds))
    for e, rev, secs in route_legs(net, r):
        out.append(("road", e, net.edge_coords(e, reverse=rev), float(net.edge_length[e]), secs))
    end = road0[-1]
    if r.last is not None:
        la = _to_lonlat(net, sub_line(net.edge_xy(r.last.edge), r.last.a, r.last.b))
        if r.last.metres > 0:
            out.append(("road", r.last.edge, la, r.last.metres, r.last.seconds))
        end = la[-1]
    out.append(("egress", -1, np.array([end, [r.shelter.lon, r.shelter.lat]]), r.egress_m, r.egress_s))
    return out


def route_feature(net: RoadNetwork, r: RouteResult, *, lang: str | None = None) -> dict[str, Any]:
    """Format a :class:`~evac.engine.RouteResult` as a GeoJSON Feature.

    ``lang`` picks one language for the texts; ``None`` gives ``{"ja": ..., "en": ..., "ja-easy": ...}``.
    """
    if lang is not None:
        check_lang(lang)
    langs = LANGS if lang is None else (lang,)
    f = r.field
    props: dict[str, Any] = {
        "status": r.status, "profile": f.profile, "hazard": f.hazard, "exercise": f.exercise,
        "hazard_version": r.state.version, "hazard_changed_at": r.state.changed_at.isoformat(),
        "computed_at": f.computed_at.isoformat(),
    }
    geometry: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = []
    distance = math.nan
    if r.status == "ok":
        parts = route_parts(net, r)
        coords = np.concatenate([parts[0][2]] + [p[2][1:] for p in parts[1:]])
        geometry = {"type": "LineString", "coordinates": np.round(coords, 7).tolist()}
        distance = float(sum(p[3] for p in parts))
        steps = _steps(net, parts, langs)
        shelter = r.shelter
        assert shelter is not None
        steps.append({"type": "arrive", "name": shelter.name, "distance_m": 0.0, "duration_s": 0.0,
                      "text": _pick({lg: arrive_text(shelter.name, lang=lg) for lg in langs}, lang)})
        props["shelter"] = shelter.to_dict()
        props["snap_distance_m"] = round(r.snap_distance_m, 1)
        props["access_m"] = round(r.snap_distance_m, 1)
        props["egress_m"] = round(r.egress_m, 1)
    elif r.hazards_here:
        props["hazard_areas"] = [{"id": a.id, "hazard": a.hazard, "label": a.label, "exercise": a.exercise}
                                 for a in r.hazards_here]
    elif r.status == "off_network" and math.isfinite(r.snap_distance_m):
        props["snap_distance_m"] = round(r.snap_distance_m, 1)
    props["distance_m"] = round(distance, 1) if math.isfinite(distance) else None
    props["duration_s"] = round(r.duration_s, 1) if math.isfinite(r.duration_s) else None
    props["steps"] = steps
    texts = {lg: status_text(r.status, lang=lg, hazard=f.hazard, profile=f.profile,
                             shelter=r.shelter.name if r.shelter else "", duration_s=r.duration_s,
                             distance_m=distance if r.status == "ok" else r.snap_distance_m,
                             exercise=f.exercise) for lg in langs}
    props["guidance"] = _pick(texts, lang)
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _pick(texts: dict[str, str], lang: str | None) -> Any:
    return texts if lang is None else texts[lang]


def _steps(net: RoadNetwork, parts: list[tuple[str, int, np.ndarray, float, float]],
           langs: tuple[str, ...]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    prev_name: str | None = None
    prev_end_bearing = None
    for kind, e, array, metres, secs in parts:
        coords = array.tolist()  # plain floats: the same values, without numpy's cost per element
        if kind == "road":
            name_ix = int(net.edge_name[e])
            name = net.names[name_ix] if name_ix >= 0 else ""
            highway = net.names[int(net.edge_highway[e])]
        else:  # the straight legs to and from the road count with the road they join
            if kind == "access" or not steps:
                name, highway = "", ""
            else:
                steps[-1]["distance_m"] += metres
                steps[-1]["duration_s"] += secs
                continue
        if len(coords) < 2 or coords[0] == coords[-1]:
            if steps:
                steps[-1]["distance_m"] += metres
                steps[-1]["duration_s"] += secs
                continue
            start_bearing = prev_end_bearing or 0.0
        else:
            start_bearing = _bearing(coords[0], coords[1])
        modifier = "depart" if prev_end_bearing is None else _modifier(start_bearing - prev_end_bearing)
        if kind == "road" and steps and steps[-1]["highway"] == "" and steps[-1]["name"] == "":
            # the access leg leads onto the first road: one step named after the road
            steps[-1].update(name=name, highway=highway)
            steps[-1]["distance_m"] += metres
            steps[-1]["duration_s"] += secs
        elif steps and name == prev_name and (name or modifier in ("straight", "slight left", "slight right")):
            steps[-1]["distance_m"] += metres
            steps[-1]["duration_s"] += secs
        else:
            steps.append({"type": "depart" if not steps else "turn", "modifier": modifier, "name": name,
                          "highway": highway, "distance_m": metres, "duration_s": secs})
        prev_name = name
        if len(coords) >= 2 and coords[-2] != coords[-1]:
            prev_end_bearing = _bearing(coords[-2], coords[-1])
    for s in steps:
        s["distance_m"] = round(s["distance_m"], 1)
        s["duration_s"] = round(s["duration_s"], 1)
        texts = {lg: step_text(s["modifier"], s["name"], s["distance_m"], lang=lg) for lg in langs}
        s["text"] = texts if len(langs) > 1 else texts[langs[0]]
    return steps


def route(engine: Engine, lat: float, lon: float, *, profile: str = "walk", hazard: str = "flood",
          lang: str | None = None, exercise: bool = False) -> dict[str, Any]:
    """The route from (``lat``, ``lon``) (degrees, WGS 84) to the nearest safe shelter, as a GeoJSON
    Feature for a resident: :meth:`Engine.route_result` formatted by :func:`route_feature`.

    Raises
    ------
    ValueError
        Unknown ``profile``, ``hazard`` or ``lang``.
    """
    return route_feature(engine.network, engine.route_result(lat, lon, profile=profile, hazard=hazard,
                                                             exercise=exercise), lang=lang)
