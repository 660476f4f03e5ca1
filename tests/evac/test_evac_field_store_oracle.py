"""A network written by ``sonae graph import`` (stream reader, .osm.bz2), loaded by two engine processes
that share the host-wide field store (the second maps what the first published, then the roles swap),
through a sequence of hazard changes: their answers equal each other, and each agrees with the
unsimplified-graph oracle (``osm_oracle.WalkOracle``) within issue 13's tolerances."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from evac_reference import EXTRACTS
from osm_oracle import Option, WalkOracle
from test_evac_oracle_api import _circle, _near_road

from app.cli import main
from evac.network import RoadNetwork

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys
import shapely
from evac.engine import Engine
from evac.hazards import HazardArea
from evac.network import RoadNetwork
from evac.routes import route
from evac.shelters import Shelter

cfg = json.loads(sys.argv[2])
net = RoadNetwork.load(sys.argv[1])
shelters = [Shelter(id=s, name=s, lon=lon, lat=lat, hazards=frozenset({"flood"})) for s, lon, lat in cfg["shelters"]]
eng = Engine(net, field_store_min_nodes=0, shelters=shelters, warm=[("walk", "flood", False)], incremental_min_nodes=cfg["min_nodes"])
assert eng.store is not None


def answer():
    out = []
    for lon, lat in cfg["origins"]:
        r = eng.route_result(lat, lon)
        f = route(eng, lat, lon, lang="en") if r.status == "ok" else None
        out.append([r.status, r.shelter.id if r.shelter else None, r.duration_s if r.status == "ok" else None,
                    f["geometry"]["coordinates"] if f else None])
    return {"answers": out, "hits": eng.store.hits, "writes": eng.store.writes}


for line in sys.stdin:
    cmd = json.loads(line)
    if cmd is not None:
        eng.update(areas=[HazardArea(id=i, hazard="flood", geometry=shapely.from_wkt(w)) for i, w in cmd])
    print(json.dumps(answer()), flush=True)
"""


class Proc:
    def __init__(self, npz: Path, cfg: dict[str, Any]) -> None:
        self.p = subprocess.Popen([sys.executable, "-c", _CHILD, str(npz), json.dumps(cfg)],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, areas: list[tuple[str, shapely.Polygon]] | None) -> dict[str, Any]:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.write(json.dumps([[i, g.wkt] for i, g in areas] if areas is not None else None) + "\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the engine process ended (exit {self.p.wait()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def close(self) -> None:
        if self.p.stdin:
            self.p.stdin.close()
        self.p.wait(timeout=60)


def _compare(o: WalkOracle, got: list[list[Any]], origins, shelters, areas, where: str) -> list[Any]:
    blocked = [g for _, g in areas]  # the oracle tests in lon/lat, as the engine does
    every = shapely.union_all(blocked) if blocked else shapely.Point()
    want = o.solve(origins, shelters, blocked)
    at = {s: (lon, lat) for s, lon, lat in shelters}
    bad = []
    for (lon, lat), ref, (status, sid, dur, coords) in zip(origins, want, got, strict=True):
        w = (where, lat, lon)
        if isinstance(ref, str) or ref is None:
            if status != (ref or "no_safe_route"):
                bad.append((w, status, ref))
            continue
        assert isinstance(ref, Option)
        tol = 0.01 * ref.seconds + 25.0
        if status != "ok" or abs(dur - ref.seconds) > tol:
            bad.append((w, status, dur, ref))
            continue
        if sid != ref.shelter:
            alt = o.solve([(lon, lat)], [(sid, *at[sid])], blocked)[0]
            if not (isinstance(alt, Option) and abs(alt.seconds - ref.seconds) <= tol):
                bad.append((w, "shelter", sid, ref, alt))
        xy = np.column_stack(o.proj.transform(np.asarray(coords)[:, 0], np.asarray(coords)[:, 1]))
        if shapely.LineString(coords).intersects(every):  # in lon/lat
            bad.append((w, "crosses a blocked area"))
        if math.dist(xy[-1], o.xy(*at[sid])) > 15.0:
            bad.append((w, "ends away from its shelter"))
    return bad


def test_two_processes_on_an_imported_network_agree_with_each_other_and_the_oracle(tmp_path: Path) -> None:
    npz = tmp_path / "krems.npz"
    counted = tmp_path / "shelters.geojson"  # the import counts these (else it reads a database's)
    counted.write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {
        "type": "Point", "coordinates": [15.6, 48.41]}, "properties": {"id": "K", "施設・場所名": "K", "洪水": "1"}}]}))
    assert main(["graph", "import", EXTRACTS["krems"], "--out", str(npz), "--shelters", str(counted),
                 "--state-dir", str(tmp_path / "s")]) == 0
    net = RoadNetwork.load(npz, shared=False)
    o = WalkOracle(EXTRACTS["krems"], epsg=net.epsg)
    rng = np.random.default_rng(2113)
    shelters = [(f"S{i}", *_near_road(o, rng, 30.0)) for i in range(15)]
    origins = [tuple(round(v, 4) for v in _near_road(o, rng, 60.0)) for _ in range(60)]
    areas = [(f"H{i}", _circle(*_near_road(o, rng, 3.0), float(rng.uniform(40, 140)))) for i in range(4)]
    wet = shelters[0]
    areas.append(("H-shelter", _circle(wet[1], wet[2], 40.0)))
    # and where the answers change: origins around the areas
    for _, g in areas:
        c = g.centroid
        origins += [(round(c.x + float(rng.uniform(-2e-3, 2e-3)), 4), round(c.y + float(rng.uniform(-2e-3, 2e-3)), 4))
                    for _ in range(6)]
    cfg = {"shelters": shelters, "origins": origins}
    a = Proc(npz, {**cfg, "min_nodes": 0})  # incremental updates
    b = Proc(npz, {**cfg, "min_nodes": 10**9})  # whole searches (or the store's entry)
    try:
        seq = [areas[:2], areas[:4], areas, areas[1:], areas, [areas[0], ("H0-twin", areas[0][1])] + areas[2:], []]
        ga, gb = a.ask(None), b.ask(None)
        assert ga["answers"] == gb["answers"]
        for step, now in enumerate(seq):
            first, second = (a, b) if step % 2 else (b, a)  # the other one maps what the first published
            g1 = first.ask(now)
            g2 = second.ask(now)
            assert g2["hits"] > 0
            for x, y in zip(g1["answers"], g2["answers"], strict=True):
                assert x[:2] == y[:2] and (x[2] is None) == (y[2] is None), (step, x[:3], y[:3])
                assert x[2] is None or abs(x[2] - y[2]) <= 1e-6, (step, x[:3], y[:3])
            bad = _compare(o, g1["answers"], origins, shelters, now, f"step {step}")
            assert not bad, bad[:8]
    finally:
        a.close()
        b.close()
