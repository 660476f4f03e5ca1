"""An independent oracle for routes: the UNSIMPLIFIED walking graph of an OSM XML file, parsed here.

Nothing of Sonae's graph path is used (no osmnx, no simplification, no arrays, no spatial index): the
file is read with ElementTree, every consecutive pair of way nodes is a straight segment with its
great-circle length, walkability and speed come from the walk profile's own rule
(:meth:`evac.graph.Profile.times`, the definition under test's *input*, not its code path), and shortest
walks are networkx Dijkstra. Positions reach the road at the nearest point of the nearest segment of the
largest connected part; the rules for ties and blocked legs are those the engine documents
(``TIE_M``/``SEARCH_M`` in :mod:`evac.engine`), written again here.
"""

from __future__ import annotations

import bz2
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pyproj
import shapely

from evac.graph import get_profile

TIE_M = 10.0
SEARCH_M = 150.0
MAX_SNAP_M = 500.0
EARTH_R = 6_371_009.0


def parse_osm(path: Path | str) -> tuple[dict[int, tuple[float, float]], list[tuple[list[int], dict[str, str]]]]:
    """Nodes (id -> lon, lat) and ways (node refs, tags) of an ``.osm`` or ``.osm.bz2`` file."""
    opener = bz2.open if str(path).endswith(".bz2") else open
    nodes: dict[int, tuple[float, float]] = {}
    ways: list[tuple[list[int], dict[str, str]]] = []
    with opener(path, "rb") as fh:
        for _, el in ET.iterparse(fh, events=("end",)):
            if el.tag == "node":
                nodes[int(el.get("id"))] = (float(el.get("lon")), float(el.get("lat")))
                el.clear()
            elif el.tag == "way":
                refs = [int(nd.get("ref")) for nd in el.findall("nd")]
                tags = {t.get("k"): t.get("v") for t in el.findall("tag")}
                ways.append((refs, tags))
                el.clear()
    return nodes, ways


def great_circle(lon1: np.ndarray, lat1: np.ndarray, lon2: np.ndarray, lat2: np.ndarray) -> np.ndarray:
    p1, p2 = np.radians(lat1), np.radians(lat2)
    h = np.sin((p2 - p1) / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_R * np.arcsin(np.sqrt(np.minimum(1.0, h)))


@dataclass
class Option:
    seconds: float
    shelter: str


class WalkOracle:
    """Walking segments of one OSM file, and shortest walks from exact positions to shelters."""

    def __init__(self, path: Path | str, *, epsg: int) -> None:
        nodes, ways = parse_osm(path)
        self.proj = pyproj.Transformer.from_crs("EPSG:4326", f"EPSG:{epsg}", always_xy=True)
        self.unproj = pyproj.Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
        prof = get_profile("walk")
        a_ids, b_ids, secs_per_m = [], [], []
        self.raw_walkable_m = 0.0
        for refs, tags in ways:
            if "highway" not in tags:
                continue
            t, _ = prof.times({**tags, "length": 1.0})
            if not math.isfinite(t):
                continue
            for a, b in zip(refs, refs[1:], strict=False):
                if a in nodes and b in nodes and a != b:
                    a_ids.append(a)
                    b_ids.append(b)
                    secs_per_m.append(t)  # seconds per metre (length 1 above; MIN_EDGE_TIME aside)
        ids = sorted(set(a_ids) | set(b_ids))
        index = {n: i for i, n in enumerate(ids)}
        self.lon = np.array([nodes[n][0] for n in ids])
        self.lat = np.array([nodes[n][1] for n in ids])
        x, y = self.proj.transform(self.lon, self.lat)
        self.x, self.y = np.asarray(x), np.asarray(y)
        a = np.array([index[n] for n in a_ids])
        b = np.array([index[n] for n in b_ids])
        length = great_circle(self.lon[a], self.lat[a], self.lon[b], self.lat[b])
        self.raw_walkable_m = float(length.sum())
        G = nx.Graph()
        G.add_edges_from(zip(a.tolist(), b.tolist(), strict=True))
        label = {n: k for k, c in enumerate(nx.connected_components(G)) for n in c}
        comps = list(nx.connected_components(G))
        road = np.bincount([label[u] for u in a.tolist()], weights=length, minlength=len(comps))
        parts = sorted(((float(road[k]), c) for k, c in enumerate(comps)), key=lambda p: p[0], reverse=True)
        main = parts[0][1]
        #: the largest part by road length; two of about one length: which is "the network" is arbitrary
        self.main_tied = len(parts) > 1 and parts[1][0] > parts[0][0] - 0.5
        keep = np.array([int(u) in main for u in a.tolist()], bool)
        self.a, self.b = a[keep], b[keep]
        self.length = length[keep]
        self.secs = np.maximum(self.length * np.array(secs_per_m)[keep], 0.01)
        # in lon/lat as given: what hazard areas are tested against (evac.network.BOUNDARY_RULE)
        self.lines_ll = shapely.linestrings(np.stack([np.column_stack([self.lon[self.a], self.lat[self.a]]),
                                                      np.column_stack([self.lon[self.b], self.lat[self.b]])], axis=1))

    # -- geometry ---------------------------------------------------------------------------------
    def lonlat(self, x: float, y: float) -> tuple[float, float]:
        """A projected point in lon/lat: a node's own coordinates when it is one (within 1e-6 m), else
        the point brought back from metres."""
        d = np.hypot(self.x - x, self.y - y)
        i = int(np.argmin(d))
        if d[i] <= 1e-6:
            return float(self.lon[i]), float(self.lat[i])
        lon, lat = self.unproj.transform(x, y)
        return float(lon), float(lat)

    def xy(self, lon: float, lat: float) -> tuple[float, float]:
        x, y = self.proj.transform(lon, lat)
        return float(x), float(y)

    def points(self, x: float, y: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per segment: distance to (x, y), fraction along it from ``a``, and the nearest point."""
        ax, ay = self.x[self.a], self.y[self.a]
        dx, dy = self.x[self.b] - ax, self.y[self.b] - ay
        l2 = dx * dx + dy * dy
        t = np.clip(np.where(l2 > 0, ((x - ax) * dx + (y - ay) * dy) / np.where(l2 > 0, l2, 1), 0), 0, 1)
        px, py = ax + t * dx, ay + t * dy
        return np.hypot(px - x, py - y), t, px, py

    # -- the walk ---------------------------------------------------------------------------------
    def solve(self, origins: list[tuple[float, float]], shelters: list[tuple[str, float, float]],
              blocked: list[shapely.Geometry]) -> list[Option | None | str]:
        """Best option per origin (lon, lat): ``Option``, ``None`` (no safe walk), or a status string
        (``inside_hazard``, ``off_network``). ``shelters`` are (id, lon, lat) of qualifying shelters;
        ``blocked`` are the blocked polygons in lon/lat, as given: every point, leg and piece of road is
        tested against them in lon/lat, touching counting as inside (``evac.network.BOUNDARY_RULE``)."""
        bl = shapely.union_all(blocked) if blocked else None
        if bl is not None:
            shapely.prepare(bl)
        cut = shapely.intersects(self.lines_ll, bl) if bl is not None else np.zeros(len(self.a), bool)

        def clear(x0: float, y0: float, x1: float, y1: float) -> bool:
            if bl is None:
                return True
            p0, p1 = self.lonlat(x0, y0), self.lonlat(x1, y1)
            g = shapely.LineString([p0, p1]) if p0 != p1 else shapely.Point(p0)
            return not bl.intersects(g)

        G = nx.Graph()
        for i in np.flatnonzero(~cut).tolist():
            # parallel segments (a road and steps between the same two nodes): a simple graph keeps one
            # edge per node pair, so keep the quickest; ``add_edge`` alone would let the last one win
            u, v, w = int(self.a[i]), int(self.b[i]), float(self.secs[i])
            if not G.has_edge(u, v) or w < G[u][v]["w"]:
                G.add_edge(u, v, w=w)
        # shelters join at their nearest segment points (within TIE_M of the nearest), by clear legs
        same_seg: dict[int, list[tuple[float, float, str]]] = {}
        for sid, lon, lat in shelters:
            sx, sy = self.xy(lon, lat)
            if bl is not None and bl.intersects(shapely.Point(lon, lat)):
                continue
            d, t, px, py = self.points(sx, sy)
            if d.min() > MAX_SNAP_M:
                continue
            for i in np.flatnonzero(d <= d.min() + TIE_M).tolist():
                if not clear(sx, sy, px[i], py[i]):
                    continue
                egress = float(d[i])
                same_seg.setdefault(i, []).append((float(t[i]), egress, sid))
                for end, frac in ((int(self.a[i]), t[i]), (int(self.b[i]), 1 - t[i])):
                    ex, ey = self.x[end], self.y[end]
                    if clear(px[i], py[i], ex, ey):
                        G.add_edge(("s", sid, i, end), end, w=egress + float(self.secs[i] * frac))
        virtual = [n for n in G if isinstance(n, tuple)]
        dist: dict[int, float] = {}
        owner: dict[int, str] = {}
        if virtual:
            d_all, paths = nx.multi_source_dijkstra(G, set(virtual), weight="w")
            for n, dv in d_all.items():
                if not isinstance(n, tuple):
                    dist[n] = dv
                    owner[n] = paths[n][0][1]
        out: list[Option | None | str] = []
        for lon, lat in origins:
            x, y = self.xy(lon, lat)
            if bl is not None and bl.intersects(shapely.Point(lon, lat)):
                out.append("inside_hazard")
                continue
            d, t, px, py = self.points(x, y)
            dmin = float(d.min())
            if dmin > MAX_SNAP_M:
                out.append("off_network")
                continue

            def option(i: int, x: float = x, y: float = y, d: np.ndarray = d, t: np.ndarray = t,
                       px: np.ndarray = px, py: np.ndarray = py) -> Option | None:
                if not clear(x, y, px[i], py[i]):
                    return None
                best: Option | None = None
                access = float(d[i])
                for end, frac in ((int(self.a[i]), t[i]), (int(self.b[i]), 1 - t[i])):
                    if end in dist and clear(px[i], py[i], self.x[end], self.y[end]):
                        tot = access + float(self.secs[i] * frac) + dist[end]
                        if best is None or tot < best.seconds:
                            best = Option(tot, owner[end])
                for ts, egress, sid in same_seg.get(i, []):
                    qx = self.x[self.a[i]] + ts * (self.x[self.b[i]] - self.x[self.a[i]])
                    qy = self.y[self.a[i]] + ts * (self.y[self.b[i]] - self.y[self.a[i]])
                    if clear(px[i], py[i], qx, qy):
                        tot = access + float(self.secs[i] * abs(ts - t[i])) + egress
                        if best is None or tot < best.seconds:
                            best = Option(tot, sid)
                return best

            near = np.flatnonzero(d <= dmin + TIE_M)
            opts = [(float(d[i]), option(int(i))) for i in near[np.argsort(d[near])]]
            if opts[0][1] is None:
                wide = np.flatnonzero(d <= max(SEARCH_M, dmin + TIE_M))
                opts = [(float(d[i]), option(int(i))) for i in wide]
                valid = [o for o in opts if o[1] is not None]
                if valid:
                    dv = min(o[0] for o in valid)
                    opts = [o for o in valid if o[0] <= dv + TIE_M]
            found = [o for _, o in opts if o is not None]
            out.append(min(found, key=lambda o: o.seconds) if found else None)
        return out


def answer_faults(o: WalkOracle, feat: dict[str, Any], ref: Option | str | None, *, lon: float, lat: float,
                  shelters: dict[str, tuple[float, float]], blocked: list[shapely.Geometry],
                  closed: frozenset[str] = frozenset(), start: tuple[float, float] | None = None,
                  where: str = "", rated: frozenset[str] | None = None) -> list[tuple[Any, ...]]:
    """What is wrong with one route answer (a GeoJSON feature) against the oracle's ``ref`` for the
    position (``lon``, ``lat``): empty when it holds to issue #13's checks.

    ``ref``: the oracle's :class:`Option`, a status it expects, or None (no safe route). ``shelters``:
    id → (lon, lat); ``blocked``: the blocked areas in lon/lat; ``closed``: shelters that must
    not be named; ``start``: where the line must begin (lon, lat), when the position was sent exactly;
    ``rated``: the ids of the shelters rated for the hazard asked (None: every shelter in ``shelters``).

    An ``at_shelter`` answer (``evac.engine.AT_SHELTER_M``: the resident is at a suitable shelter, checked
    before the roads) holds when it names an open, rated shelter within that distance of the position
    (1 m for the projection), outside every blocked area and with none on the straight line between.
    """
    p = feat["properties"]
    if p["status"] == "at_shelter" and not isinstance(ref, str):
        from evac.engine import AT_SHELTER_M

        sid = p["shelter"]["id"]
        if sid in closed or sid not in shelters or (rated is not None and sid not in rated):
            return [(where, "at_shelter names an unsuitable shelter", sid)]
        ox, oy = o.xy(lon, lat)
        sx, sy = o.xy(*shelters[sid])
        walk = shapely.LineString([(lon, lat), shelters[sid]])
        if math.hypot(ox - sx, oy - sy) > AT_SHELTER_M + 1.0 or any(walk.intersects(g) for g in blocked):
            return [(where, "at_shelter", sid, math.hypot(ox - sx, oy - sy))]
        return []
    if isinstance(ref, str):
        return [] if p["status"] == ref else [(where, p["status"], ref)]
    if ref is None:
        return [] if p["status"] == "no_safe_route" else [
            (where, p["status"], "oracle: none", p.get("duration_s"), p.get("shelter"))]
    if p["status"] != "ok":
        return [(where, p["status"], ref)]
    faults: list[tuple[Any, ...]] = []
    tol = 0.01 * ref.seconds + 25.0
    if abs(p["duration_s"] - ref.seconds) > tol:
        faults.append((where, "duration", p["duration_s"], ref, p["shelter"]["id"]))
    sid = p["shelter"]["id"]
    if sid in closed:
        faults.append((where, "closed shelter", sid))
    elif sid != ref.shelter:  # another shelter is fine only if it is about as near
        alt = o.solve([(lon, lat)], [(sid, *shelters[sid])], blocked)[0]
        if not (isinstance(alt, Option) and abs(alt.seconds - ref.seconds) <= tol):
            faults.append((where, "shelter", sid, ref, alt))
    coords = np.asarray(feat["geometry"]["coordinates"])
    ex, ey = o.xy(*coords[-1])
    sx, sy = o.xy(*shelters[sid])
    if math.hypot(ex - sx, ey - sy) > 15.0:
        faults.append((where, "end", math.hypot(ex - sx, ey - sy)))
    if start is not None and not np.allclose(coords[0], start, rtol=0, atol=1e-7):
        faults.append((where, "start", coords[0].tolist(), start))
    crossed = [i for i, g in enumerate(blocked) if shapely.LineString(coords).intersects(g)]  # in lon/lat
    x, y = o.proj.transform(coords[:, 0], coords[:, 1])
    line = shapely.LineString(np.column_stack([x, y]))
    if crossed:
        faults.append((where, "crosses a blocked area", crossed))
    if abs(line.length - p["distance_m"]) > max(0.01 * p["distance_m"], 2.0):
        faults.append((where, "distance_m", line.length, p["distance_m"]))
    steps = sum(st["distance_m"] for st in p["steps"])
    if abs(steps - p["distance_m"]) > 0.1 * len(p["steps"]) + 0.1:
        faults.append((where, "steps", steps, p["distance_m"]))
    return faults
