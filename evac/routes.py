"""Route answers: a GeoJSON Feature along the real road geometry, with steps, shelter and guidance.

The line runs from the position the engine was given (the API rounds it to about 10 m first) along the
access leg to the nearest usable road, along the roads, and from the shelter's road point to the
shelter itself; distance, time and steps include both straight legs. Nothing here logs anything.
"""

from __future__ import annotations

import bisect
import json
import math
import weakref
from collections.abc import Sequence
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from math import isfinite
from typing import Any, NamedTuple

import numpy as np
import pyproj

from evac.engine import Engine, Field, FieldAt, HazardState, RouteResult
from evac.guidance import LANGS, arrive_text, check_lang, status_text, step_text
from evac.hazards import hazard_set
from evac.network import RoadNetwork
from evac.shelters import Shelter
from evac.snapping import cumulative_lengths, sub_line


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

    ``at_shelter`` (the resident is at a suitable shelter): ``geometry`` null, ``shelter`` that shelter,
    ``distance_m`` and ``duration_s`` 0, no steps, the guidance saying so.

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
    elif r.status == "at_shelter":  # the resident is at it: no line, no steps, nothing to walk
        assert r.shelter is not None
        props["shelter"] = r.shelter.to_dict()
        distance = 0.0
    elif r.hazards_here:
        props["hazard_areas"] = [{"id": a.id, "hazard": a.hazard, "label": a.label, "exercise": a.exercise}
                                 for a in r.hazards_here]
    elif r.status == "off_network" and math.isfinite(r.snap_distance_m):
        props["snap_distance_m"] = round(r.snap_distance_m, 1)
    props["distance_m"] = round(distance, 1) if math.isfinite(distance) else None
    props["duration_s"] = round(r.duration_s, 1) if math.isfinite(r.duration_s) else None
    props["steps"] = steps
    # inside an area: name the hazards of the areas the resident is in, not those the route was asked for
    named = hazard_set(",".join(a.hazard for a in r.hazards_here)) if r.hazards_here else f.hazard
    texts = {lg: status_text(r.status, lang=lg, hazard=named, profile=f.profile,
                             shelter=r.shelter.name if r.shelter else "", duration_s=r.duration_s,
                             distance_m=distance if r.status in ("ok", "at_shelter") else r.snap_distance_m,
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
          lang: str | None = None, exercise: bool = False, at: FieldAt | None = None) -> dict[str, Any]:
    """The route from (``lat``, ``lon``) (degrees, WGS 84) to the nearest safe shelter, as a GeoJSON
    Feature for a resident: :meth:`Engine.route_result` formatted by :func:`route_feature` (``at``: from that
    field and hazard state, computing nothing: :meth:`Engine.route_start`).

    Raises
    ------
    ValueError
        Unknown ``profile``, ``hazard`` or ``lang``.
    """
    return route_feature(engine.network, engine.route_result(lat, lon, profile=profile, hazard=hazard,
                                                             exercise=exercise, at=at), lang=lang)


# -- the same answer as JSON text, from walks kept per node ------------------------------------------
#
# Every position whose walk joins the field at node ``v`` shares the rest of its route: the legs along
# the next hops, the partial edge to the shelter's road point, the egress leg and the shelter. That
# "tail" is formatted once per (field, node) and kept on the field (:attr:`Field.tails`); an answer is
# then the head (access leg and the partial edge to ``v``, formatted per request) joined to it as text.
# Keys are nodes, never positions.

#: Walks kept per field (by node); the oldest is dropped past this many, or past ``TAIL_CACHE_BYTES`` of
#: their text (a walk is its route's coordinates as text: a few kilobytes, more on a prefecture's graph).
TAIL_CACHE_NODES = 20_000
TAIL_CACHE_BYTES = 16 * 2**20
#: Distinct ways into a walk (see :class:`_Tail`) whose steps are kept per walk.
_ENTRIES_PER_TAIL = 4
_STRAIGHTISH = ("straight", "slight left", "slight right")


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
#: The C encoder that ``_ENCODER.encode`` builds anew on every call (``json.encoder.c_make_encoder`` with
#: the same options), built once: markers ``None`` (no check for circular references: answers are trees).
#: The json module builds one per call and that is most of the cost of encoding a small answer part.
_C_ENCODE = (None if c_make_encoder is None else
             c_make_encoder(None, str, encode_basestring, None, ":", ",", False, False, True))


def dumps(body: Any) -> str:
    """The API's JSON text: UTF-8 characters as they are, no spaces, ``str`` for anything else
    (``json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)``, one C encoder kept).

    Text as the json module writes it, through the very encoder it would use: strings by
    ``encode_basestring``, floats by ``float.__repr__`` (``NaN``/``Infinity`` when not finite).
    """
    if _C_ENCODE is None:  # no C accelerator: the json module's own path
        return _ENCODER.encode(body)
    if isinstance(body, str):  # as JSONEncoder.encode does
        return encode_basestring(body)
    return "".join(_C_ENCODE(body, 0))


class _Part(NamedTuple):
    """What the steps read of one piece of a route (see :func:`route_parts`): ``flat`` when it has fewer
    than two points or ends where it starts; ``end_bearing`` ``None`` when its last two points coincide."""

    kind: str
    name: str
    highway: str
    flat: bool
    start_bearing: float
    end_bearing: float | None
    metres: float
    secs: float


def _part(net: RoadNetwork, kind: str, e: int, array: np.ndarray | list[list[float]], metres: float,
          secs: float) -> _Part:
    coords = array.tolist() if isinstance(array, np.ndarray) else array
    name = highway = ""
    if kind == "road":
        name, highway = _edge_names(net, e)
    return _part_of(kind, name, highway, coords, metres, secs)


def _edge_names(net: RoadNetwork, e: int) -> tuple[str, str]:
    """Edge ``e``'s name ("" when it has none) and highway class."""
    name_ix = int(net.edge_name[e])
    return net.names[name_ix] if name_ix >= 0 else "", net.names[int(net.edge_highway[e])]


def _part_of(kind: str, name: str, highway: str, coords: list[list[float]], metres: float, secs: float) -> _Part:
    """:func:`_part` of a piece whose road name and highway class are known."""
    flat = len(coords) < 2 or coords[0] == coords[-1]
    end = _bearing(coords[-2], coords[-1]) if len(coords) >= 2 and coords[-2] != coords[-1] else None
    return _Part(kind, name, highway, flat, 0.0 if flat else _bearing(coords[0], coords[1]), end, metres, secs)


_ADD, _RENAME, _NEW = 0, 1, 2


class _Steps:
    """:func:`_steps` one part at a time: the same decisions, on :class:`_Part` s."""

    __slots__ = ("steps", "prev_name", "prev_end_bearing")

    def __init__(self, steps: list[dict[str, Any]], prev_name: str | None, prev_end_bearing: float | None) -> None:
        self.steps = steps
        self.prev_name = prev_name
        self.prev_end_bearing = prev_end_bearing

    def key(self) -> tuple[str | None, float | None, bool]:
        """All that the next parts' decisions depend on (besides the parts)."""
        last = self.steps[-1]
        return self.prev_name, self.prev_end_bearing, last["highway"] == "" and last["name"] == ""

    def add(self, p: _Part) -> int:
        """Take part ``p``: :data:`_ADD` (counted in the last step), :data:`_RENAME` (the last step, the
        access leg, named after the road it leads onto, and counted in it) or :data:`_NEW` (a new step)."""
        steps = self.steps
        if p.kind == "egress" and steps:
            steps[-1]["distance_m"] += p.metres
            steps[-1]["duration_s"] += p.secs
            return _ADD
        prev_end = self.prev_end_bearing
        if p.flat:
            if steps:
                steps[-1]["distance_m"] += p.metres
                steps[-1]["duration_s"] += p.secs
                return _ADD
            start_bearing = prev_end or 0.0
        else:
            start_bearing = p.start_bearing
        modifier = "depart" if prev_end is None else _modifier(start_bearing - prev_end)
        name = p.name
        action = _ADD
        if p.kind == "road" and steps and steps[-1]["highway"] == "" and steps[-1]["name"] == "":
            steps[-1].update(name=name, highway=p.highway)
            steps[-1]["distance_m"] += p.metres
            steps[-1]["duration_s"] += p.secs
            action = _RENAME
        elif steps and name == self.prev_name and (name or modifier in _STRAIGHTISH):
            steps[-1]["distance_m"] += p.metres
            steps[-1]["duration_s"] += p.secs
        else:
            steps.append({"type": "depart" if not steps else "turn", "modifier": modifier, "name": name,
                          "highway": p.highway, "distance_m": p.metres, "duration_s": p.secs})
            action = _NEW
        self.prev_name = name
        if p.end_bearing is not None:
            self.prev_end_bearing = p.end_bearing
        return action


def _finish_steps(steps: list[dict[str, Any]], lang: str | None) -> list[dict[str, Any]]:
    """Rounded steps with their texts (``lang`` ``None``: every language), as :func:`_steps` ends."""
    langs = LANGS if lang is None else (lang,)
    out = []
    for s in steps:
        s = dict(s, distance_m=round(s["distance_m"], 1), duration_s=round(s["duration_s"], 1))
        texts = {lg: step_text(s["modifier"], s["name"], s["distance_m"], lang=lg) for lg in langs}
        s["text"] = texts if len(langs) > 1 else texts[langs[0]]
        out.append(s)
    return out


class _Rest:
    """A walk's parts after its first, entered in one state (:meth:`_Steps.key`): the changes they make
    to the step open then (``opens``: rename or not, part), and the steps they start (``closed``, not
    rounded), with those as JSON text per language (``None``: all) once asked."""

    __slots__ = ("opens", "closed", "texts")

    def __init__(self, opens: list[tuple[bool, _Part]], closed: list[dict[str, Any]]) -> None:
        self.opens = opens
        self.closed = closed
        self.texts: dict[str | None, str] = {}

    def text(self, lang: str | None, arrive: dict[str, Any]) -> str:
        """``,``-joined JSON of the steps started here and the arrival step."""
        out = self.texts.get(lang)
        if out is None:
            out = self.texts[lang] = dumps([*_finish_steps(self.closed, lang), arrive])[1:-1]
        return out


class _Tail:
    """The walk from one node to the shelter, formatted: :attr:`coords` the JSON text of its rounded
    points (each part's after its first), :attr:`metres` per part, the first part, the shelter, and per
    state of the steps after the first part (:meth:`_Steps.key`) what the rest does (``entries``).

    The walks of the nodes along one walk are suffixes of each other: they share one text and one list of
    metres (``text``/``metres_all``), each from its own offset (``at``/``m_at``), so that building the
    walks of ``k`` nodes costs the length of the longest, not ``k`` times it."""

    __slots__ = ("text", "at", "metres_all", "m_at", "first", "shelter", "shelter_json", "egress_m", "entries",
                 "arrive", "parts", "next")

    def __init__(self, text: str, at: int, metres: list[float], m_at: int, first: _Part, shelter: Shelter,
                 egress_m: float, *, parts: list[_Part] | None = None, after: tuple[int, _Tail] | None = None) -> None:
        """A walk whose first part leaves the graph (``parts``: those after the first), or one leg
        followed by the walk of the next node (``after``: that node and its walk, whose shelter texts
        this one shares). Its points are ``text[at:]`` and its metres ``metres[m_at:]``."""
        self.parts = parts  # the parts after the first, until the first entry is made from them
        self.next = None if after is None else after[0]  # the next node (None: the first part leaves the graph)
        self.text = text
        self.at = at
        self.metres_all = metres
        self.m_at = m_at
        self.first = first
        self.shelter = shelter
        self.egress_m = egress_m
        self.entries: dict[tuple[str | None, float | None, bool], _Rest] = {}
        if after is None:
            self.shelter_json = dumps(shelter.to_dict())
            self.arrive: dict[str | None, dict[str, Any]] = {}
        else:
            self.shelter_json = after[1].shelter_json
            self.arrive = after[1].arrive

    @property
    def coords(self) -> str:
        """The JSON text of the walk's points, without brackets."""
        return self.text[self.at:] if self.at else self.text

    @property
    def metres(self) -> list[float]:
        """Metres of each part of the walk."""
        return self.metres_all[self.m_at:]


def _tail_parts(engine: Engine, f: Field, node: int) -> tuple[list[tuple[str, int, np.ndarray, float, float]],
                                                                Shelter, float]:
    """The parts of the walk from ``node`` (as :func:`route_parts` gives them after the head), its
    shelter and egress metres."""
    net = engine.network
    path = f.path(node)
    last, shelter, egress_m, egress_s = engine.route_exit(f, path[-1])
    pg = net.profile(f.profile)
    w = f.de_weight
    out: list[tuple[str, int, np.ndarray, float, float]] = []
    for a, b in zip(path, path[1:], strict=False):
        d = pg.best_edge(a, b, w)
        e = int(pg.de_base[d])
        out.append(("road", e, net.edge_coords(e, reverse=bool(pg.de_rev[d])), float(net.edge_length[e]),
                    float(w[d])))
    la = _to_lonlat(net, sub_line(net.edge_xy(last.edge), last.a, last.b))
    if last.metres > 0:
        out.append(("road", last.edge, la, last.metres, last.seconds))
    out.append(("egress", -1, np.array([la[-1], [shelter.lon, shelter.lat]]), egress_m, egress_s))
    return out, shelter, egress_m


def _size(tail: _Tail) -> int:
    """About the bytes a kept walk holds: its coordinate text and a little per part (counted as if it
    held them alone: the walks of a chain share them)."""
    return len(tail.text) - tail.at + 64 * (len(tail.metres_all) - tail.m_at) + 512


def _keep(f: Field, node: int, tail: _Tail) -> None:
    tails = f.tails
    old = tails.pop(node, None)
    if isinstance(old, _Tail):
        tails.nbytes -= _size(old)
    tails[node] = tail
    tails.nbytes += _size(tail)
    while len(tails) > TAIL_CACHE_NODES or (tails.nbytes > TAIL_CACHE_BYTES and len(tails) > 1):
        gone = tails.pop(next(iter(tails)))  # the oldest first (the props entry, key None, counts too)
        if isinstance(gone, _Tail):
            tails.nbytes -= _size(gone)


def _tail(engine: Engine, f: Field, node: int) -> _Tail:
    """The formatted walk from ``node`` (reachable), kept on ``f``. A new one is built from the walk of
    the next node when that is kept (one leg in front of it), else the walk to the first kept node (or
    to where it leaves the graph) is built, and kept, node by node from its far end."""
    tail = f.tails.get(node)
    if tail is not None:
        return tail
    net = engine.network
    n = net.n_nodes
    nxt = f.next_node
    chain = [node]
    while True:
        w = int(nxt[chain[-1]])
        if not 0 <= w < n:  # the last node of the walk: its parts leave the graph
            parts, shelter, egress_m = _tail_parts(engine, f, chain[-1])
            coords = np.round(np.concatenate([p[2][1:] for p in parts]), 7).tolist()
            tail = _Tail(dumps(coords)[1:-1], 0, [p[3] for p in parts], 0, _part(net, *parts[0]), shelter,
                         egress_m, parts=[_part(net, *p) for p in parts[1:]])
            _keep(f, chain.pop(), tail)
            break
        got = f.tails.get(w)
        if got is not None:
            tail = got
            break
        chain.append(w)
    if not chain:
        return tail
    pg = net.profile(f.profile)
    weight = f.de_weight
    legs = []  # each node's leg to the next node, from the first node on
    for u in chain:
        d = pg.best_edge(u, int(nxt[u]), weight)
        e = int(pg.de_base[d])
        coords_e = net.edge_coords(e, reverse=bool(pg.de_rev[d]))
        metres = float(net.edge_length[e])
        legs.append((dumps(np.round(coords_e[1:], 7).tolist())[1:-1],
                     _part(net, "road", e, coords_e, metres, float(weight[d])), metres))
    # one text and one list of metres for the whole chain, each node's walk a suffix of them
    # (as each leg's text joined with "," in front of the next node's walk: an empty leg adds nothing)
    texts = [leg for leg, _, _ in legs if leg]
    text = ",".join([*texts, tail.coords])
    metres_all = [m for _, _, m in legs] + tail.metres
    at = len(text) - len(tail.coords)
    for i in range(len(chain) - 1, -1, -1):  # from the far end: each node's walk names the next one's
        leg, part, _ = legs[i]
        if leg:
            at -= len(leg) + 1
        w = int(nxt[chain[i]])
        tail = _Tail(text, at, metres_all, i, part, tail.shelter, tail.egress_m, after=(w, tail))
        _keep(f, chain[i], tail)
    return tail


def _probe(key: tuple[str | None, float | None, bool]) -> _Steps:
    """A walker in state ``key`` whose open step only records what happens to it."""
    prev_name, prev_end_bearing, blank = key
    probe = {"name": "" if blank else "-", "highway": "" if blank else "-", "distance_m": 0.0, "duration_s": 0.0}
    return _Steps([probe], prev_name, prev_end_bearing)


def _rest(engine: Engine, f: Field, node: int, tail: _Tail, key: tuple[str | None, float | None, bool]) -> _Rest:
    """What the walk's parts after its first do when entered in state ``key``: for a walk that is one
    leg in front of the next node's, that walk's first part taken in ``key``, then its own rest (the
    walks along the way are followed until one has an entry for its state, or the last)."""
    stack: list[tuple[_Tail, tuple[str | None, float | None, bool], int, _Part, dict[str, Any]]] = []
    while True:
        rest = tail.entries.get(key)
        if rest is not None:
            break
        if tail.next is None:
            rest = _last_rest(engine, f, node, tail, key)
            break
        w = tail.next
        tw = f.tails.get(w) or _tail(engine, f, w)  # dropped meanwhile: built again
        walker = _probe(key)
        action = walker.add(tw.first)
        stack.append((tail, key, action, tw.first, walker.steps[-1]))
        node, tail, key = w, tw, walker.key()
    for tail, key, action, part, step in reversed(stack):
        if action == _NEW:  # the next walk's first part starts a step; its rest's opening parts count in it
            step = dict(step)
            for rename, p in rest.opens:
                if rename:
                    step.update(name=p.name, highway=p.highway)
                step["distance_m"] += p.metres
                step["duration_s"] += p.secs
            rest = _Rest([], [step, *rest.closed])
        else:
            rest = _Rest([(action == _RENAME, part), *rest.opens], rest.closed)
        if len(tail.entries) < _ENTRIES_PER_TAIL:
            tail.entries[key] = rest
    return rest


def _last_rest(engine: Engine, f: Field, node: int, tail: _Tail,
               key: tuple[str | None, float | None, bool]) -> _Rest:
    """:func:`_rest` of a walk whose first part leaves the graph, from its parts."""
    walker = _probe(key)
    opens: list[tuple[bool, _Part]] = []
    net = engine.network
    started = False
    parts = tail.parts
    tail.parts = None  # kept only for the first entry: most walks are entered one way
    if parts is None:
        parts = [_part(net, *p) for p in _tail_parts(engine, f, node)[0][1:]]
    for p in parts:
        action = walker.add(p)
        if action == _NEW:
            started = True
        elif not started:
            opens.append((action == _RENAME, p))
    rest = _Rest(opens, walker.steps[1:])
    if len(tail.entries) < _ENTRIES_PER_TAIL:
        tail.entries[key] = rest
    return rest


#: Edges whose geometry is kept as lists for the first partial edge of answers (per network).
EDGE_CACHE = 50_000
_EDGES: weakref.WeakKeyDictionary[RoadNetwork, dict[int, tuple[list[list[float]], list[float], str, str]]] = (
    weakref.WeakKeyDictionary())


def _edge_lists(net: RoadNetwork, e: int) -> tuple[list[list[float]], list[float], str, str]:
    """Edge ``e``'s projected points and :func:`~evac.snapping.cumulative_lengths`, as lists, and its
    name and highway class (:func:`_edge_names`)."""
    edges = _EDGES.get(net)
    if edges is None:
        edges = _EDGES.setdefault(net, {})
    got = edges.get(e)
    if got is None:
        xy = net.edge_xy(e)
        got = edges[e] = (np.asarray(xy).tolist(), cumulative_lengths(xy).tolist(), *_edge_names(net, e))
        while len(edges) > EDGE_CACHE:
            del edges[next(iter(edges))]
    return got


def _point_at_list(xy: list[list[float]], cum: list[float], s: float) -> list[float]:
    """:func:`evac.snapping._point_at` on lists: the same arithmetic, one float at a time."""
    if len(xy) == 1 or cum[-1] <= 0:
        return list(xy[0])
    j = min(max(bisect.bisect_right(cum, s) - 1, 0), len(xy) - 2)
    seg = cum[j + 1] - cum[j]
    t = 0.0 if seg <= 0 else (s - cum[j]) / seg
    (x0, y0), (x1, y1) = xy[j], xy[j + 1]
    return [x0 + (x1 - x0) * t, y0 + (y1 - y0) * t]


def _sub_line_lonlat(net: RoadNetwork, e: int, a: float, b: float) -> list[list[float]]:
    """``_to_lonlat(net, sub_line(net.edge_xy(e), a, b)).tolist()`` without numpy on a few points: the
    same points, projected back one by one (pyproj's path for one point gives the very same numbers as
    for an array, and costs a fraction of it)."""
    xy, cum, _, _ = _edge_lists(net, e)
    lo, hi = (a, b) if a <= b else (b, a)
    total = cum[-1] if cum else 0.0
    lo, hi = min(max(lo, 0.0), total), min(max(hi, 0.0), total)
    pts = [_point_at_list(xy, cum, lo)]
    pts.extend(p for p, c in zip(xy, cum, strict=True) if lo < c < hi)
    pts.append(_point_at_list(xy, cum, hi))
    if a > b:
        pts.reverse()
    tr = _INVERSE.get(net.epsg)
    if tr is None:
        tr = _INVERSE[net.epsg] = net.transformer(inverse=True)
    return [list(tr.transform(x, y)) for x, y in pts]


def _number(v: float) -> str:
    """``dumps(v)`` for a float: its ``repr`` when finite, as the json module writes it."""
    return float.__repr__(v) if math.isfinite(v) else dumps(v)


def _round7(v: float) -> float:
    """``np.round(v, 7)`` for one float, without numpy: numpy multiplies by 1e7, rounds half to even
    (``rint``) and divides by 1e7, each an IEEE operation that Python's float arithmetic does the same way
    (``round`` of a float rounds half to even too); the sign of a zero result is ``rint``'s (that of
    ``v * 1e7``). Not finite (or too large for ``round``): numpy's own."""
    y = v * 1e7
    if not -4.5e15 < y < 4.5e15:  # beyond 2**52 every float is whole, and inf/nan: numpy's own
        return float(np.round(v, 7))
    r = round(y)
    return r / 1e7 if r else math.copysign(0.0, y)


def _points_text(points: list[list[float]]) -> str:
    """``dumps(np.round(np.array(points), 7).tolist())[1:-1]`` for a few ``[lon, lat]`` points (floats)."""
    out = []
    for a, b in points:
        a, b = _round7(a), _round7(b)
        out.append(f"[{a!r},{b!r}]" if isfinite(a) and isfinite(b) else f"[{_number(a)},{_number(b)}]")
    return ",".join(out)


def _props_head(f: Field, st: HazardState) -> str:
    """The first properties of every answer on ``f`` at ``st`` as JSON text, without the closing brace
    (kept on the field for the last state asked)."""
    got = f.tails.get(None)  # fields sharing walks take turns here: keyed by both
    if got is None or got[0] is not st or got[1] is not f:
        got = f.tails[None] = (st, f, dumps({
            "status": "ok", "profile": f.profile, "hazard": f.hazard, "exercise": f.exercise,
            "hazard_version": st.version, "hazard_changed_at": st.changed_at.isoformat(),
            "computed_at": f.computed_at.isoformat()})[:-1])
    return got[2]


def route_body(engine: Engine, lat: float, lon: float, *, profile: str = "walk", hazard: str = "flood",
               lang: str | None = None, exercise: bool = False, at: FieldAt | None = None) -> bytes:
    """:func:`route` as the API sends it (:func:`dumps`, UTF-8), byte for byte, but with the walk from
    the node where the route joins the field formatted once per field and node (:class:`_Tail`). ``at``:
    from that field and hazard state, computing nothing (what the API's event loop answers with).

    Raises
    ------
    ValueError
        Unknown ``profile``, ``hazard`` or ``lang``.
    """
    if lang is not None:
        check_lang(lang)
    start = engine.route_start(lat, lon, profile=profile, hazard=hazard, exercise=exercise, at=at)
    if isinstance(start, RouteResult):  # no walk along the field: nothing to share
        return dumps(route_feature(engine.network, start, lang=lang)).encode()
    net = engine.network
    f = start.field
    tail = _tail(engine, f, start.end)
    first = start.first
    road0 = _sub_line_lonlat(net, first.edge, first.a, first.b)
    access = [list(start.origin), road0[0]]
    walker = _Steps([], None, None)
    walker.add(_part_of("access", "", "", access, start.snap_distance_m, start.access_s))
    if first.metres > 0:
        _, _, name, highway = _edge_lists(net, first.edge)
        walker.add(_part_of("road", name, highway, road0, first.metres, first.seconds))
        head_text = _points_text(access + road0[1:])
        head_metres = [start.snap_distance_m, first.metres]
    else:
        head_text = _points_text(access)
        head_metres = [start.snap_distance_m]
    walker.add(tail.first)
    rest = _rest(engine, f, start.end, tail, walker.key())
    open_step = walker.steps[-1]
    for rename, p in rest.opens:
        if rename:
            open_step.update(name=p.name, highway=p.highway)
        open_step["distance_m"] += p.metres
        open_step["duration_s"] += p.secs
    shelter = tail.shelter
    arrive = tail.arrive.get(lang)
    if arrive is None:
        langs = LANGS if lang is None else (lang,)
        arrive = tail.arrive[lang] = {
            "type": "arrive", "name": shelter.name, "distance_m": 0.0, "duration_s": 0.0,
            "text": _pick({lg: arrive_text(shelter.name, lang=lg) for lg in langs}, lang)}
    distance = float(sum(head_metres + tail.metres))
    duration = start.duration_s
    st = start.state
    langs = LANGS if lang is None else (lang,)
    texts = {lg: status_text("ok", lang=lg, hazard=f.hazard, profile=f.profile, shelter=shelter.name,
                             duration_s=duration, distance_m=distance, exercise=f.exercise) for lg in langs}
    props = _props_head(f, st)
    snap = _number(round(start.snap_distance_m, 1))
    figures = (f'"snap_distance_m":{snap},"access_m":{snap},"egress_m":{_number(round(tail.egress_m, 1))},'
               f'"distance_m":{_number(round(distance, 1)) if math.isfinite(distance) else "null"},'
               f'"duration_s":{_number(round(duration, 1)) if math.isfinite(duration) else "null"}')
    steps = dumps(_finish_steps(walker.steps, lang))[1:-1]
    return "".join((
        '{"type":"Feature","geometry":{"type":"LineString","coordinates":[', head_text, ",",
        tail.coords, ']},"properties":', props, ',"shelter":', tail.shelter_json, ",", figures, ',"steps":[',
        steps, ",", rest.text(lang, arrive), '],"guidance":', dumps(_pick(texts, lang)), "}}")).encode()
