"""Tiny OSM towns written as OSM XML, for the three cases of issue 13 (underpass, flooded node, loop road)."""

from __future__ import annotations

import math
from pathlib import Path

import shapely

LAT0, LON0 = 37.40, 140.36
M_LAT = 1 / 111_320.0
M_LON = M_LAT / math.cos(math.radians(LAT0))


def lonlat(x: float, y: float) -> tuple[float, float]:
    """Metres east/north of the town's origin -> lon, lat."""
    return LON0 + x * M_LON, LAT0 + y * M_LAT


def box(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
    (a, b), (c, d) = lonlat(x0, y0), lonlat(x1, y1)
    return shapely.box(a, b, c, d)


def write_osm(path: Path, nodes: dict[int, tuple[float, float]], ways: list[tuple[list[int], dict[str, str]]]) -> Path:
    """Write nodes (id -> metres x, y) and ways (node ids, tags) as OSM XML 0.6."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>', '<osm version="0.6" generator="sonae-tests">']
    for nid, (x, y) in nodes.items():
        lon, lat = lonlat(x, y)
        out.append(f'  <node id="{nid}" version="1" lat="{lat:.8f}" lon="{lon:.8f}"/>')
    for i, (refs, tags) in enumerate(ways):
        out.append(f'  <way id="{1000 + i}" version="1">')
        out += [f'    <nd ref="{r}"/>' for r in refs]
        out += [f'    <tag k="{k}" v="{v}"/>' for k, v in tags.items()]
        out.append("  </way>")
    out.append("</osm>")
    path.write_text("\n".join(out), encoding="utf-8")
    return path


def street_town(path: Path) -> Path:
    """Street W(-300)–A(0)–B(100)–E(400) along y = 0, side streets north at A and B (200 m)."""
    nodes = {1: (-300.0, 0.0), 2: (0.0, 0.0), 3: (100.0, 0.0), 4: (400.0, 0.0), 5: (0.0, 200.0), 6: (100.0, 200.0),
             7: (50.0, 0.0)}
    ways = [([1, 2, 7, 3, 4], {"highway": "residential", "name": "Main"}),
            ([2, 5], {"highway": "residential", "name": "West side"}),
            ([3, 6], {"highway": "residential", "name": "East side"})]
    return write_osm(path, nodes, ways)


def loop_town(path: Path, *, radius: float = 300.0, points: int = 48) -> Path:
    """A 1 km street with a junction J at x = 0 and a closed loop lane of ``radius`` m hanging north of J."""
    nodes: dict[int, tuple[float, float]] = {1: (-500.0, 0.0), 2: (0.0, 0.0), 3: (500.0, 0.0)}
    ring = [2]
    for k in range(1, points):
        t = -math.pi / 2 + 2 * math.pi * k / points
        nodes[100 + k] = (radius * math.cos(t), radius + radius * math.sin(t))
        ring.append(100 + k)
    ring.append(2)
    ways = [([1, 2, 3], {"highway": "residential", "name": "Main"}),
            (ring, {"highway": "residential", "name": "Ring lane"})]
    return write_osm(path, nodes, ways)
