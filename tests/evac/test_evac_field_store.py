"""The host-wide field store (issue #21, item 4): engine processes on one host map one copy of each field.

Real processes (``python -c``), each loading the same saved network (:meth:`RoadNetwork.load`), driven
through pipes. Oracle: an engine in this process on the same network read without any mapping (no store),
given the same state: the same distances and routes (next hops may differ where two are equally short:
the processes' incremental update and the oracle's full search may break such ties apart).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from evac.engine import Engine
from evac.fieldstore import KEEP, FieldStore
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea
from evac.network import RoadNetwork

ROOT = Path(__file__).resolve().parents[2]
FIELD = "walk-flood-real"

_CHILD = r"""
import hashlib, json, sys
import numpy as np, shapely
from evac.engine import Engine
from evac.gridtown import grid_shelters
from evac.hazards import HazardArea
from evac.network import RoadNetwork

net = RoadNetwork.load(sys.argv[1])
eng = Engine(net, field_store_min_nodes=0, shelters=grid_shelters(net, per=100, seed=5), warm=[("walk", "flood", False)],
             incremental_min_nodes=0)
pts = [(float(net.node_lat[i]) + 2e-4, float(net.node_lon[i]) - 1e-4) for i in range(0, net.n_nodes, 61)]


def backing(a):
    # the file (path, device, inode) whose mapping holds array a's first byte, from /proc/self/maps
    at = a.ctypes.data
    for line in open("/proc/self/maps"):
        p = line.split()
        lo, hi = (int(x, 16) for x in p[0].split("-"))
        if lo <= at < hi:
            return [p[5] if len(p) >= 6 else "", p[3], int(p[4])]
    return None


def answer():
    f = eng.field()
    return {"routes": [[r.status, r.path, r.duration_s] for r in (eng.route_result(la, lo) for la, lo in pts)],
            "dist": hashlib.sha1(f.dist.tobytes()).hexdigest(),
            "digest": hashlib.sha1(f.dist.tobytes() + f.next_node.tobytes() + f.source.tobytes()).hexdigest(),
            "files": {k: backing(getattr(f, k)) for k in ("dist", "next_node", "source", "mult")},
            "writable": [bool(getattr(f, k).flags.writeable) for k in ("dist", "next_node", "source", "mult")],
            "recomputes": sum(eng.recomputes.values()), "hits": eng.store.hits, "writes": eng.store.writes,
            "damaged": eng.store.damaged}


print(json.dumps(answer()), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    eng.update(add_areas=[HazardArea(id=cmd["id"], hazard="flood", geometry=shapely.Point(*cmd["at"]).buffer(cmd["r"]))])
    print(json.dumps(answer()), flush=True)
"""


class Proc:
    """An engine process on the saved network; :meth:`area` adds a hazard area and returns its answer."""

    def __init__(self, npz: Path) -> None:
        self.p = subprocess.Popen([sys.executable, "-c", _CHILD, str(npz)], env={**os.environ, "PYTHONPATH": str(ROOT)},
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.first = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.p.stdout is not None
        line = self.p.stdout.readline()
        if not line:
            raise RuntimeError(f"the engine process ended (exit {self.p.wait()})")
        out: dict[str, Any] = json.loads(line)
        return out

    def area(self, aid: str, at: tuple[float, float], r: float) -> dict[str, Any]:
        assert self.p.stdin is not None
        self.p.stdin.write(json.dumps({"id": aid, "at": at, "r": r}) + "\n")
        self.p.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.p.stdin:
            self.p.stdin.close()
        self.p.wait(timeout=60)


@pytest.fixture(scope="module")
def npz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "grid.npz"
    grid_network(3000, seed=5).save(path)
    return path


def oracle(npz: Path, areas: list[HazardArea]) -> dict[str, Any]:
    """The same answer from an engine that maps nothing (the network read into this process, no store)."""
    net = RoadNetwork.load(npz, shared=False)
    eng = Engine(net, field_store_min_nodes=0, shelters=grid_shelters(net, per=100, seed=5), areas=areas)
    assert eng.store is None
    f = eng.field()
    pts = [(float(net.node_lat[i]) + 2e-4, float(net.node_lon[i]) - 1e-4) for i in range(0, net.n_nodes, 61)]
    return {"routes": [[r.status, r.path, r.duration_s] for r in (eng.route_result(la, lo) for la, lo in pts)],
            "dist": hashlib.sha1(f.dist.tobytes()).hexdigest()}


def spot(npz: Path, k: int) -> tuple[float, float]:
    net = RoadNetwork.load(npz, shared=False)
    i = (k * 977 + 400) % net.n_nodes
    return float(net.node_lon[i]), float(net.node_lat[i])


def test_two_processes_map_one_copy_and_move_together(npz: Path) -> None:
    store = FieldStore(npz.with_name(npz.name + ".mapped") / "fields", "")
    a = Proc(npz)
    b = Proc(npz)
    try:
        first_a, first_b = a.first, b.first
        want = oracle(npz, [])
        assert sum(r[0] == "ok" for r in want["routes"]) > 10
        for got in (first_a, first_b):
            assert got["routes"] == want["routes"] and got["dist"] == want["dist"]
            assert got["writable"] == [False] * 4
        assert first_a["recomputes"] == 1 and first_a["writes"] >= 2  # the field and the edge factors
        assert first_b["recomputes"] == 0 and first_b["writes"] == 0 and first_b["hits"] >= 2  # mapped, not searched
        for k in ("dist", "next_node", "source", "mult"):
            path, dev, inode = first_b["files"][k]
            assert "/fields/" in path and [path, dev, inode] == first_a["files"][k]  # the very same file
        # a state change: A computes (an incremental update) and publishes; B, told the same, maps it
        at = spot(npz, 1)
        new_a = a.area("x", at, 0.002)
        new_b = b.area("x", at, 0.002)
        area = HazardArea(id="x", hazard="flood", geometry=shapely.Point(*at).buffer(0.002))
        want = oracle(npz, [area])
        assert want["dist"] != first_a["dist"]
        for got in (new_a, new_b):
            assert got["routes"] == want["routes"] and got["dist"] == want["dist"]
            assert got["writable"] == [False] * 4  # A's own copies, published after the swap, are dropped
        assert new_a["digest"] == new_b["digest"]  # one field: next hops and source rows too
        assert new_a["recomputes"] == 2 and new_b["recomputes"] == 0
        for k in ("dist", "next_node", "source"):
            assert new_a["files"][k] == new_b["files"][k] != first_a["files"][k]
        # the new edge factors: published by A after its swap (B maps them), kept by A's hazard index
        assert "/fields/mult/" in new_b["files"]["mult"][0] and new_b["files"]["mult"] != first_a["files"]["mult"]
        assert "/fields/" not in new_a["files"]["mult"][0]
        # entries stay bounded: each change publishes one more, the oldest beyond KEEP go
        for k in range(2, KEEP + 4):
            last = a.area(f"y{k}", spot(npz, k), 0.001)
            assert len(store.entries(FIELD)) <= KEEP and len(store.entries("mult")) <= KEEP
        assert Path(last["files"]["dist"][0]).parent.name in store.entries(FIELD)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta", "meta-list", "arrays-list"])
def test_a_damaged_entry_is_detected_and_computed_again(npz: Path, damage: str) -> None:
    a = Proc(npz)
    a.close()
    path = Path(a.first["files"]["dist"][0])
    raw = path.read_bytes()
    if damage == "flip":  # same size, one changed distance
        pos = len(raw) - 8 * 100
        path.write_bytes(raw[:pos] + bytes([raw[pos] ^ 0x40]) + raw[pos + 1:])
    elif damage == "truncate":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "meta":
        (path.parent / "meta.json").write_text("{")
    elif damage == "meta-list":  # valid JSON, not an object: used to stop the engine (AttributeError)
        (path.parent / "meta.json").write_text("[]")
    else:
        meta = json.loads((path.parent / "meta.json").read_text())
        (path.parent / "meta.json").write_text(json.dumps({**meta, "arrays": list(meta["arrays"])}))
    b = Proc(npz)
    b.close()
    got = b.first
    assert got["damaged"] == 1 and got["recomputes"] == 1  # not trusted: searched again, and published
    want = oracle(npz, [])
    assert got["routes"] == want["routes"] and got["dist"] == want["dist"]
    assert got["files"]["dist"][0] == str(path)  # published again under the same name
    c = Proc(npz)  # what B published is sound: mapped as it is
    c.close()
    assert c.first["damaged"] == 0 and c.first["recomputes"] == 0 and c.first["files"] == got["files"]


def test_an_update_is_served_here_before_its_entries_are_published(npz: Path, tmp_path: Path) -> None:
    """Engine.update swaps its state in before it writes the store (``on_swap`` runs between): a query here
    answers from the new state while neither its edge factors nor its field are in the store yet; once
    update returns, another process maps both instead of computing them."""
    path = tmp_path / "grid.npz"
    path.write_bytes(npz.read_bytes())
    net = RoadNetwork.load(path)
    eng = Engine(net, field_store_min_nodes=0, shelters=grid_shelters(net, per=100, seed=5),
                 warm=[("walk", "flood", False)], incremental_min_nodes=0)
    store = eng.store
    assert store is not None
    names = ("mult", FIELD)
    before = {n: store.entries(n) for n in names}
    lon, lat = spot(npz, 1)
    old = eng.route_result(lat, lon)
    seen: dict[str, Any] = {}

    def on_swap(state: Any) -> None:
        seen["entries"] = {n: store.entries(n) for n in names}
        r = eng.route_result(lat, lon)
        seen["answer"] = (r.state.version, r.status, r.duration_s)

    new = eng.update(add_areas=[HazardArea(id="x", hazard="flood", geometry=shapely.Point(lon, lat).buffer(0.002))],
                     on_swap=on_swap)
    assert seen["entries"] == before  # nothing of the new state published at the swap...
    r = eng.route_result(lat, lon)
    assert seen["answer"] == (new.version, r.status, r.duration_s) != (old.state.version, old.status, old.duration_s)
    after = {n: store.entries(n) for n in names}
    assert all(len(after[n]) == len(before[n]) + 1 for n in names)  # ... and all of it once update returned
    b = Proc(path)
    try:
        got = b.area("x", (lon, lat), 0.002)
    finally:
        b.close()
    assert got["recomputes"] == 0 and got["writes"] == 0  # mapped, not computed
    for k, n in (("mult", "mult"), ("dist", FIELD)):
        assert Path(got["files"][k][0]).parent.name in set(after[n]) - set(before[n])


def test_store_round_trip_bounds_and_cleaning(tmp_path: Path) -> None:
    store = FieldStore(tmp_path, "net-1", keep=2)
    rng = np.random.default_rng(3)
    arrays = {"dist": rng.random(5000), "source": rng.integers(0, 9, 5000).astype(np.int32),
              "empty": np.zeros(0)}
    got = store.put("f", "d1", arrays)
    assert store.written_bytes == sum(f.stat().st_size for f in (tmp_path / "f" / "d1").glob("*.npy"))
    assert store.write_s > 0
    for k, v in arrays.items():
        assert np.array_equal(got[k], v) and got[k].dtype == v.dtype and not got[k].flags.writeable
    assert store.get("f", "d1") is not None and store.get("f", "nope") is None
    assert FieldStore(tmp_path, "net-2").get("f", "d1") is None  # another network's entry is not used
    for d in ("d2", "d3"):
        store.put("f", d, arrays)
    assert store.entries("f") == ["d2", "d3"]  # the oldest went
    # a half-written entry of a process that exited is removed on start; a live one's stays
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    (tmp_path / "f" / f".d9.tmp-{dead}-abcd1234").mkdir()
    (tmp_path / "f" / f".d8.tmp-{os.getpid()}-abcd1234").mkdir()
    FieldStore(tmp_path, "net-1", keep=1).clean()
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [f".d8.tmp-{os.getpid()}-abcd1234", "d3"]


def test_an_unwritable_store_leaves_the_engine_its_own_copy(npz: Path, tmp_path: Path) -> None:
    net = RoadNetwork.load(npz)
    eng = Engine(net, field_store_min_nodes=0, shelters=grid_shelters(net, per=100, seed=5))
    assert eng.store is not None
    (tmp_path / "file").write_text("")
    eng.store = FieldStore(tmp_path / "file" / "fields", net.mapped_key)  # a path that cannot be a directory
    f = eng.field()
    assert eng.store.writes == 0 and not eng.store.writable and np.array_equal(f.dist, oracle_field(npz).dist)


def oracle_field(npz: Path) -> Any:
    net = RoadNetwork.load(npz, shared=False)
    return Engine(net, field_store_min_nodes=0, shelters=grid_shelters(net, per=100, seed=5)).field()


def test_factors_mapped_from_the_store_still_drive_an_incremental_update(npz: Path, tmp_path: Path) -> None:
    """An engine that maps another's edge factors (not building them) updates its own field incrementally
    from the edges the change touched, and gets the full search's distances."""
    path = tmp_path / "grid.npz"
    path.write_bytes(npz.read_bytes())
    net = RoadNetwork.load(path)
    shelters = grid_shelters(net, per=100, seed=5)
    area = HazardArea(id="x", hazard="flood", geometry=shapely.Point(*spot(npz, 3)).buffer(0.003))
    first = Engine(net, field_store_min_nodes=0, shelters=shelters, incremental_min_nodes=0)
    first.field("walk")
    first.update(add_areas=[area])
    first.field("walk")  # publishes the factors with the area
    assert first.store is not None and first.store.writes >= 2
    second = Engine(net, field_store_min_nodes=0, shelters=shelters, incremental_min_nodes=0, warm=[("reduced_mobility", "flood", False)])
    assert second.store is not None and second.store.hits == 1  # the factors without areas, mapped
    second.update(add_areas=[area])
    assert second.store.hits == 2 and second.incremental_updates[("reduced_mobility", "flood", False)] == 1
    plain = Engine(RoadNetwork.load(path, shared=False), field_store_min_nodes=0, shelters=shelters, areas=[area])
    f, want = second.field("reduced_mobility"), plain.field("reduced_mobility")
    assert np.array_equal(f.dist, want.dist) and np.isfinite(f.dist).sum() > net.n_nodes // 2
    assert np.array_equal(f.mult, want.mult) and not np.array_equal(f.mult, np.ones_like(f.mult))
