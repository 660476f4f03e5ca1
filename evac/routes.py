"""Route answers: a GeoJSON Feature along the real road geometry, with steps, shelter and guidance.

The answer never contains the resident's own coordinates (the line starts at the snapped road node),
and nothing here logs anything.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evac.engine import RouteResult
from evac.guidance import LANGS, arrive_text, check_lang, status_text, step_text
from evac.network import RoadNetwork


def _bearing(a: np.ndarray, b: np.ndarray) -> float:
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
        legs = route_legs(net, r)
        parts = [net.edge_coords(e, reverse=rev) for e, rev, _ in legs]
        if parts:
            coords = np.concatenate([parts[0]] + [p[1:] for p in parts[1:]])
        else:  # already at the shelter's node
            coords = np.array([[net.node_lon[r.path[0]], net.node_lat[r.path[0]]]] * 2)
        geometry = {"type": "LineString", "coordinates": np.round(coords, 7).tolist()}
        distance = float(sum(net.edge_length[e] for e, _, _ in legs))
        steps = _steps(net, legs, parts, langs)
        shelter = r.shelter
        assert shelter is not None
        steps.append({"type": "arrive", "name": shelter.name, "distance_m": 0.0, "duration_s": 0.0,
                      "text": _pick({lg: arrive_text(shelter.name, lang=lg) for lg in langs}, lang)})
        props["shelter"] = shelter.to_dict()
        props["snap_distance_m"] = round(r.snap_distance_m, 1)
    elif r.hazards_here:
        props["hazard_areas"] = [{"id": a.id, "hazard": a.hazard, "label": a.label, "exercise": a.exercise}
                                 for a in r.hazards_here]
    props["distance_m"] = round(distance, 1) if math.isfinite(distance) else None
    props["duration_s"] = round(r.duration_s, 1) if math.isfinite(r.duration_s) else None
    props["steps"] = steps
    texts = {lg: status_text(r.status, lang=lg, hazard=f.hazard, profile=f.profile,
                             shelter=r.shelter.name if r.shelter else "", duration_s=r.duration_s,
                             distance_m=distance, exercise=f.exercise) for lg in langs}
    props["guidance"] = _pick(texts, lang)
    return {"type": "Feature", "geometry": geometry, "properties": props}


def _pick(texts: dict[str, str], lang: str | None) -> Any:
    return texts if lang is None else texts[lang]


def _steps(net: RoadNetwork, legs: list[tuple[int, bool, float]], parts: list[np.ndarray],
           langs: tuple[str, ...]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = []
    prev_name = None
    prev_end_bearing = None
    for (e, _, secs), coords in zip(legs, parts, strict=True):
        name_ix = int(net.edge_name[e])
        name = net.names[name_ix] if name_ix >= 0 else ""
        start_bearing = _bearing(coords[0], coords[1])
        modifier = "depart" if prev_end_bearing is None else _modifier(start_bearing - prev_end_bearing)
        # same street: one step; unnamed paths merge too unless the way turns
        if steps and name == prev_name and (name or modifier in ("straight", "slight left", "slight right")):
            steps[-1]["distance_m"] += float(net.edge_length[e])
            steps[-1]["duration_s"] += secs
        else:
            steps.append({"type": "depart" if not steps else "turn", "modifier": modifier, "name": name,
                          "highway": net.names[int(net.edge_highway[e])], "distance_m": float(net.edge_length[e]),
                          "duration_s": secs})
        prev_name = name
        prev_end_bearing = _bearing(coords[-2], coords[-1])
    for s in steps:
        s["distance_m"] = round(s["distance_m"], 1)
        s["duration_s"] = round(s["duration_s"], 1)
        texts = {lg: step_text(s["modifier"], s["name"], s["distance_m"], lang=lg) for lg in langs}
        s["text"] = texts if len(langs) > 1 else texts[langs[0]]
    return steps
