"""The field store's faults found in review (issue #21): processes that need one field at once compute it
once (an advisory lock per entry), a stored field is tied to the code and network that computed it
(:data:`evac.fieldstore.STORE_FORMAT` and the network's key in every digest), and a failed write pauses
publishing instead of ending it.

Real processes (``python -c``) on a saved network, synchronised through their pipes: the holder's search
says it started and waits for a line on stdin; the other's store says (a log record) that it waits for the
lock. No sleeps: every step waits for the other side to say it got there.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import shapely

from evac import fieldstore
from evac.engine import Engine
from evac.fieldstore import RETRY_MIN_S, FieldStore
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea
from evac.network import RoadNetwork

ROOT = Path(__file__).resolve().parents[2]
FIELD = "walk-flood-real"
KEY = ("walk", "flood", False)

_CHILD = r"""
import hashlib, json, logging, os, sys
from evac.engine import Engine
from evac.gridtown import grid_shelters
from evac.network import RoadNetwork
from evac.search import search_in_process

npz, marker, hold = sys.argv[1], sys.argv[2], sys.argv[3] == "hold"


def search(*args):
    with open(marker, "a") as f:  # one line per search this process runs
        f.write(f"{os.getpid()}\n")
    if hold:
        print("searching", flush=True)
        sys.stdin.readline()  # until the test says go
    return search_in_process(*args)


class Waiting(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("field store entry being computed by another process"):
            print("waiting", flush=True)


logging.getLogger("sonae.evac.fieldstore").setLevel(logging.DEBUG)
logging.getLogger("sonae.evac.fieldstore").addHandler(Waiting())


def backing(a):
    at = a.ctypes.data
    for line in open("/proc/self/maps"):
        p = line.split()
        lo, hi = (int(x, 16) for x in p[0].split("-"))
        if lo <= at < hi:
            return [p[5] if len(p) >= 6 else "", p[3], int(p[4])]
    return None


net = RoadNetwork.load(npz)
eng = Engine(net, field_store_min_nodes=0, shelters=grid_shelters(net, per=100, seed=5), search=search)
f = eng.field()
print(json.dumps({
    "digest": hashlib.sha1(f.dist.tobytes() + f.next_node.tobytes() + f.source.tobytes()).hexdigest(),
    "files": {k: backing(getattr(f, k)) for k in ("dist", "next_node", "source", "mult")},
    "recomputes": sum(eng.recomputes.values()), "writes": eng.store.writes, "waits": eng.store.waits,
    "wait_timeouts": eng.store.wait_timeouts}), flush=True)
"""


class Child:
    """An engine process asking for the walk/flood field; ``hold``: its search waits for :meth:`go`."""

    def __init__(self, npz: Path, marker: Path, hold: bool) -> None:
        self.p = subprocess.Popen([sys.executable, "-c", _CHILD, str(npz), str(marker), "hold" if hold else "free"],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def line(self) -> str:
        assert self.p.stdout is not None
        got = self.p.stdout.readline()
        if not got:
            raise RuntimeError(f"the engine process ended (exit {self.p.wait()})")
        return got.strip()

    def answer(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.line())
        return out

    def go(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def close(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=60)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "grid.npz"
    grid_network(3000, seed=5).save(path)
    return path


@pytest.fixture
def npz(saved: Path, tmp_path: Path) -> Path:
    """The saved network copied for one test: its own mapped directory, so its own field store."""
    path = tmp_path / "grid.npz"
    shutil.copyfile(saved, path)
    return path


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for c in made:
        c.close()


def spot(net: RoadNetwork, k: int) -> tuple[float, float]:
    i = (k * 977 + 400) % net.n_nodes
    return float(net.node_lon[i]), float(net.node_lat[i])


def area(net: RoadNetwork, k: int) -> HazardArea:
    return HazardArea(id=f"a{k}", hazard="flood", geometry=shapely.Point(*spot(net, k)).buffer(0.002))


# -- 1. one process computes, the other waits and maps ---------------------------------------------------
def test_two_processes_needing_one_field_at_once_compute_it_once(npz: Path, tmp_path: Path,
                                                                 children: list[Child]) -> None:
    marker = tmp_path / "searches"
    a = Child(npz, marker, hold=True)
    children.append(a)
    assert a.line() == "searching"  # A holds the entry's lock, in its search
    b = Child(npz, marker, hold=False)
    children.append(b)
    assert b.line() == "waiting"  # B needs the same entry: it waits instead of searching too
    a.go()
    got_a, got_b = a.answer(), b.answer()
    assert marker.read_text().split() == [str(a.p.pid)]  # searched once on the host
    assert got_a["recomputes"] == 1 and got_a["writes"] == 2  # the field and the edge factors
    assert got_b["recomputes"] == 0 and got_b["writes"] == 0 and got_b["waits"] == 1 and got_b["wait_timeouts"] == 0
    assert got_a["digest"] == got_b["digest"]  # identical arrays...
    for k in ("dist", "next_node", "source", "mult"):
        assert "/fields/" in got_b["files"][k][0] and got_b["files"][k] == got_a["files"][k]  # ...one file


def test_a_holder_that_dies_leaves_the_entry_to_the_waiter(npz: Path, tmp_path: Path,
                                                           children: list[Child]) -> None:
    marker = tmp_path / "searches"
    a = Child(npz, marker, hold=True)
    children.append(a)
    assert a.line() == "searching"
    b = Child(npz, marker, hold=False)
    children.append(b)
    assert b.line() == "waiting"
    a.p.kill()  # killed holding the lock, nothing published: the kernel drops its flock
    a.p.wait(timeout=60)
    got_b = b.answer()
    assert marker.read_text().split() == [str(a.p.pid), str(b.p.pid)]
    assert got_b["recomputes"] == 1 and got_b["writes"] == 1 and got_b["waits"] == 1 and got_b["wait_timeouts"] == 0
    c = Child(npz, marker, hold=False)  # what B published is whole: mapped as it is
    children.append(c)
    got_c = c.answer()
    assert got_c["recomputes"] == 0 and got_c["waits"] == 0 and got_c["files"] == got_b["files"]


def test_a_wait_is_bounded_and_a_damaged_entry_after_it_is_computed_here(tmp_path: Path) -> None:
    arrays = {"dist": np.arange(1000.0)}
    holder = FieldStore(tmp_path, "net").claim("f", "d")
    assert holder.held and holder.arrays is None
    waiter = FieldStore(tmp_path, "net", wait_s=0.05)
    late = waiter.claim("f", "d")  # the holder never publishes within the bound
    assert late.arrays is None and not late.held and waiter.waits == 1 and waiter.wait_timeouts == 1
    # the holder writes an entry that is damaged (a file cut short) and exits
    FieldStore(tmp_path, "net").put("f", "d", arrays)
    npy = tmp_path / "f" / "d" / "dist.npy"
    npy.write_bytes(npy.read_bytes()[:-100])
    holder.release()
    mine = waiter.claim("f", "d")
    assert mine.arrays is None and mine.held and waiter.damaged == 1  # not trusted: computed here, locked
    got = waiter.put("f", "d", arrays)
    mine.release()
    assert np.array_equal(got["dist"], arrays["dist"]) and not got["dist"].flags.writeable
    again = FieldStore(tmp_path, "net").claim("f", "d")
    assert again.arrays is not None and not again.held


# -- 2. a stored field belongs to the code and the network that computed it ------------------------------
def test_a_field_of_another_store_format_is_not_read(npz: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    net = RoadNetwork.load(npz)
    shelters = grid_shelters(net, per=100, seed=5)
    monkeypatch.setattr(fieldstore, "STORE_FORMAT", 1)  # the code before an upgrade
    old = Engine(net, field_store_min_nodes=0, shelters=shelters)
    want = old.field().dist
    assert old.store is not None and old.store.writes == 2 and old.store.entries(FIELD)
    monkeypatch.undo()
    new = Engine(net, field_store_min_nodes=0, shelters=shelters)
    assert new.store is not None
    assert old.store.entries(FIELD) == []  # the old format's entries went when the new engine started
    got = new.field().dist
    assert new.recomputes[KEY] == 1 and new.store.hits == 0 and new.store.damaged == 0  # computed, not read
    assert np.array_equal(got, want) and len(new.store.entries(FIELD)) == 1


def test_a_replaced_network_file_has_entries_of_its_own(npz: Path) -> None:
    """Two processes of one host, one started before the network file was replaced: each keeps to its
    network's entries; neither takes the other's for damage (it used to: the same digest, another key)."""
    net1 = RoadNetwork.load(npz)
    shelters = grid_shelters(net1, per=100, seed=5)
    e1 = Engine(net1, field_store_min_nodes=0, shelters=shelters)
    e1.field()
    st = npz.stat()
    os.utime(npz, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the file replaced (here: the same bytes)
    net2 = RoadNetwork.load(npz)
    assert net2.mapped_key != net1.mapped_key
    e2 = Engine(net2, field_store_min_nodes=0, shelters=shelters)
    e2.field()
    a = area(net1, 1)
    e1.update(add_areas=[a])
    e2.update(add_areas=[a])
    assert e1.store is not None and e2.store is not None
    assert e1.store.damaged == 0 and e2.store.damaged == 0 and e2.store.hits == 0
    assert len(e2.store.entries(FIELD)) == 3  # e2's two states and e1's new one (e1's first went at e2's start)
    e3 = Engine(RoadNetwork.load(npz), field_store_min_nodes=0, shelters=shelters, areas=[a])
    e3.field()  # a third process on the new file maps e2's entries
    assert e3.store is not None and e3.store.damaged == 0 and e3.recomputes[KEY] == 0


# -- 3. a failed write pauses publishing, it does not end it ---------------------------------------------
def test_publishing_resumes_after_failed_writes(npz: Path, caplog: pytest.LogCaptureFixture) -> None:
    net = RoadNetwork.load(npz)
    shelters = grid_shelters(net, per=100, seed=5)
    eng = Engine(net, field_store_min_nodes=0, shelters=shelters, incremental_min_nodes=0)
    assert eng.store is not None
    now = [0.0]
    store = eng.store = FieldStore(eng.store.root, net.mapped_key, clock=lambda: now[0])
    store.root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(store.root)
    store.root.write_text("")  # the store's directory replaced by a file: nothing in it can be written
    caplog.set_level(logging.DEBUG, logger="sonae.evac.fieldstore")
    f = eng.field()
    plain = Engine(RoadNetwork.load(npz, shared=False), field_store_min_nodes=0, shelters=shelters)
    assert np.array_equal(f.dist, plain.field().dist)  # served from this process's memory
    assert store.writes == 0 and store.write_failures == 1 and not store.writable
    eng.update(add_areas=[area(net, 1)])  # paused: not even tried
    assert store.write_failures == 1 and store.skipped == 3  # the first field, then factors and field
    now[0] += RETRY_MIN_S
    eng.update(add_areas=[area(net, 2)])  # tried again: still a file
    assert store.write_failures == 2 and store.writes == 0
    store.root.unlink()  # the directory can be made again
    now[0] += RETRY_MIN_S
    eng.update(add_areas=[area(net, 3)])  # the pause doubled: not yet
    assert store.write_failures == 2 and store.writes == 0
    now[0] += RETRY_MIN_S
    eng.update(add_areas=[area(net, 4)])
    assert store.writes == 2 and store.writable  # published again: the edge factors and the field
    [dig] = store.entries(FIELD)
    got = store.get(FIELD, dig)
    assert got is not None and np.array_equal(got["dist"], eng.field().dist)
    plain.update(add_areas=[area(net, k) for k in range(1, 5)])
    assert np.array_equal(eng.field().dist, plain.field().dist)
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "sonae.evac.fieldstore"
            and r.levelno >= logging.INFO]
    assert said == [("WARNING", "cannot write the field store: publishing paused, this process keeps its own copy "
                                "of what it computes (check the directory's space and permissions)"),
                    ("INFO", "field store writable again: publishing resumed")]  # once per change of state


# -- the same kinds of fault elsewhere in the module -----------------------------------------------------
def test_clean_spares_a_live_writer_and_removes_what_is_stale(tmp_path: Path) -> None:
    arrays = {"dist": np.arange(100.0)}
    store = FieldStore(tmp_path, "net-1", keep=1)
    with store.claim("f", "d1"):
        store.put("f", "d1", arrays)
    FieldStore(tmp_path, "net-0").put("f", "d0", arrays)  # another network file's (or format's) entry
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    # a writer in another container: its pid says nothing here, the lock it holds on its directory does
    busy = tmp_path / "f" / f".d7.tmp-{dead}-abcd1234"
    busy.mkdir()
    fd = os.open(busy, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    (tmp_path / "f" / f".d6.tmp-{dead}-abcd1235").mkdir()  # a writer that exited
    store.claim("f", "d5").release()  # computed, never published: a lock file without an entry
    held = store.claim("f", "d4")  # being computed now
    try:
        store.clean()
        assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [".d1.lock", ".d4.lock", busy.name, "d1"]
    finally:
        held.release()
        os.close(fd)
    # pruning takes an old entry's lock file with it
    with store.claim("f", "d2") as c:
        store.put("f", "d2", arrays)
    assert not c.held
    store.prune()
    assert sorted(p.name for p in (tmp_path / "f").iterdir()) == [".d2.lock", ".d4.lock", busy.name, "d2"]
