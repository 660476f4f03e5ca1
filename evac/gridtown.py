"""A drill-town-shaped road network built directly as arrays, for scale benchmarks (1M+ nodes).

The osmnx path (:mod:`evac.drilltown` → OSM XML → :func:`evac.network.load_network`) needs about
9 GB for a million nodes; this builds the same shape — a jittered grid of two-way residential streets
about 80 m apart with a few missing blocks — straight into a :class:`~evac.network.RoadNetwork`
(every street is two base edges, one per direction, as osmnx gives them). Benchmarks only: the real
service loads real maps.
"""

from __future__ import annotations

import math

import numpy as np

from evac.graph import PROFILES
from evac.network import RoadNetwork, utm_epsg
from evac.shelters import Shelter

#: Block size (metres) and the drill town's origin (Fukushima city), as in :mod:`evac.drilltown`.
SPACING_M = 80.0
ORIGIN = (140.4748, 37.7608)
#: Car speed on a residential street (m/s): 30 km/h.
CAR_MPS = 30 / 3.6


def grid_network(nodes: int, *, seed: int = 7, drop: float = 0.05) -> RoadNetwork:
    """About ``nodes`` intersections on a square grid; ``drop`` of the streets left out at random.

    Returns a network whose edge geometry is the straight line between the two nodes.
    """
    rng = np.random.default_rng(seed)
    side = max(2, int(math.isqrt(max(4, nodes))))
    rows = cols = side
    n = rows * cols
    r, c = np.divmod(np.arange(n), cols)
    dlat = SPACING_M / 111_320.0
    dlon = dlat / math.cos(math.radians(ORIGIN[1]))
    lon = ORIGIN[0] + c * dlon + rng.uniform(-0.15, 0.15, n) * dlon
    lat = ORIGIN[1] + r * dlat + rng.uniform(-0.15, 0.15, n) * dlat
    idx = np.arange(n).reshape(rows, cols)
    u = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    v = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    keep = rng.random(len(u)) >= drop
    u, v = u[keep], v[keep]
    eu = np.concatenate([u, v]).astype(np.int32)
    ev = np.concatenate([v, u]).astype(np.int32)
    mid = np.radians((lat[eu] + lat[ev]) / 2)
    length = np.hypot((lon[ev] - lon[eu]) * 111_320.0 * np.cos(mid), (lat[ev] - lat[eu]) * 111_320.0)
    m = len(eu)
    coords = np.empty((2 * m, 2))
    coords[0::2, 0], coords[0::2, 1] = lon[eu], lat[eu]
    coords[1::2, 0], coords[1::2, 1] = lon[ev], lat[ev]
    times = {}
    for name, prof in PROFILES.items():
        speed = prof.speed_mps if prof.walking else CAR_MPS
        times[name] = (np.maximum(length / speed, 0.1), np.full(m, np.inf))
    names = ["", "residential"]
    return RoadNetwork(np.arange(n, dtype=np.int64) + 1, lon, lat, eu, ev, length, np.full(m, -1, np.int32),
                       np.ones(m, np.int32), np.arange(0, 2 * m + 1, 2, dtype=np.int64), coords, names, times,
                       utm_epsg(float(np.median(lon)), float(np.median(lat))))


def grid_shelters(net: RoadNetwork, *, per: int = 600, seed: int = 7) -> list[Shelter]:
    """One shelter per ``per`` nodes at a random intersection, each rated for flood and 3 other hazards."""
    from evac.hazards import HAZARD_TYPES

    rng = np.random.default_rng(seed)
    k = max(4, net.n_nodes // per)
    at = rng.choice(net.n_nodes, size=k, replace=False)
    out = []
    for i, node in enumerate(at.tolist()):
        hz = {str(h) for h in rng.choice(HAZARD_TYPES, size=3, replace=False)} | {"flood"}
        out.append(Shelter(id=f"G{i}", name=f"G{i}", lat=float(net.node_lat[node]) + 1e-4,
                           lon=float(net.node_lon[node]) + 1e-4, hazards=frozenset(hz), capacity=500))
    return out
