"""Entries written as a patched copy of a similar entry (issue #21: a local change re-solves a few hundred
nodes, yet publishing used to write every field whole): :meth:`evac.fieldstore.FieldStore.put` with ``like``.

Real files; what another process maps is read by a real second process (``python -c``) with a store of its
own, CRC-32s checked. Oracle: the same arrays written whole (no ``like``): the same bytes and checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import shapely

from evac import fieldstore
from evac.engine import Engine
from evac.fieldstore import BLOCK_BYTES, FieldStore
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea
from evac.network import RoadNetwork

ROOT = Path(__file__).resolve().parents[2]

_READER = r"""
import hashlib, json, sys
from evac.fieldstore import FieldStore
got = FieldStore(sys.argv[1], sys.argv[2]).get(sys.argv[3], sys.argv[4])
print(json.dumps(None if got is None else {k: hashlib.sha1(v.tobytes()).hexdigest() for k, v in sorted(got.items())}))
"""


def read_elsewhere(root: Path, key: str, name: str, dig: str) -> dict[str, str] | None:
    """What another process maps of entry ``name``/``dig`` (checked): sha1 per array, or None."""
    out = subprocess.run([sys.executable, "-c", _READER, str(root), key, name, dig], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def sha(arrays: dict[str, np.ndarray]) -> dict[str, str]:
    return {k: hashlib.sha1(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in sorted(arrays.items())}


def meta(root: Path, name: str, dig: str) -> dict[str, dict[str, object]]:
    return json.loads((root / name / dig / "meta.json").read_text())["arrays"]  # type: ignore[no-any-return]


@pytest.fixture
def first(tmp_path: Path) -> tuple[FieldStore, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A store with entry f/d1 of two arrays of several blocks (the last one partial)."""
    store = FieldStore(tmp_path, "net-1")
    rng = np.random.default_rng(4)
    n = 3 * BLOCK_BYTES // 8 + 5
    arrays = {"dist": rng.random(n), "source": rng.integers(0, 50, n).astype(np.int32)}
    return store, arrays, store.put("f", "d1", arrays)


def test_a_local_change_rewrites_only_its_blocks(first: tuple[FieldStore, dict[str, np.ndarray],
                                                               dict[str, np.ndarray]], tmp_path: Path) -> None:
    store, arrays, mapped = first
    new = {"dist": arrays["dist"].copy(), "source": arrays["source"].copy()}
    new["dist"][[3, -1]] = [7.5, np.inf]  # the first block and the last (partial) one
    before = store.written_bytes
    got = store.put("f", "d2", new, like=mapped)
    assert store.patched == 2  # both arrays copied, not written whole (source: no block differs)
    header = (tmp_path / "f" / "d2" / "dist.npy").stat().st_size - new["dist"].nbytes
    last = new["dist"].nbytes - 3 * BLOCK_BYTES
    assert store.written_bytes - before == 2 * header + BLOCK_BYTES + last
    assert sha(got) == sha(new)
    # the oracle: the same arrays written whole have the same bytes and CRC-32s
    store.put("f", "d3", new)
    for a in ("dist.npy", "source.npy"):
        assert (tmp_path / "f" / "d2" / a).read_bytes() == (tmp_path / "f" / "d3" / a).read_bytes()
    assert meta(tmp_path, "f", "d2") == meta(tmp_path, "f", "d3")
    # a file of its own: the entry copied from is unchanged, and another process maps and checks both
    assert os.stat(tmp_path / "f" / "d2" / "dist.npy").st_ino != os.stat(tmp_path / "f" / "d1" / "dist.npy").st_ino
    assert read_elsewhere(tmp_path, "net-1", "f", "d1") == sha(arrays)
    assert read_elsewhere(tmp_path, "net-1", "f", "d2") == sha(new)


def test_bytes_damaged_in_the_entry_copied_never_reach_the_new_one(
        first: tuple[FieldStore, dict[str, np.ndarray], dict[str, np.ndarray]], tmp_path: Path) -> None:
    store, arrays, mapped = first
    path = tmp_path / "f" / "d1" / "dist.npy"
    raw = bytearray(path.read_bytes())
    raw[-BLOCK_BYTES - 100] ^= 0x40  # a block the change does not touch
    path.write_bytes(bytes(raw))  # (written in place: the mapping sees it too)
    new = {"dist": arrays["dist"].copy(), "source": arrays["source"]}
    new["dist"][3] = 7.5
    store.put("f", "d2", new, like=mapped)
    assert read_elsewhere(tmp_path, "net-1", "f", "d2") == sha(new)  # the damaged block rewritten from ours
    assert read_elsewhere(tmp_path, "net-1", "f", "d1") is None  # (the damaged entry itself fails its check)


def test_wrong_checksums_of_the_entry_copied_make_the_new_one_fail_its_check(
        first: tuple[FieldStore, dict[str, np.ndarray], dict[str, np.ndarray]], tmp_path: Path) -> None:
    store, arrays, mapped = first
    m = json.loads((tmp_path / "f" / "d1" / "meta.json").read_text())
    m["arrays"]["dist"]["crc32"][1] ^= 1  # a block the change does not touch: its CRC is carried over
    (tmp_path / "f" / "d1" / "meta.json").write_text(json.dumps(m))
    new = {"dist": arrays["dist"].copy(), "source": arrays["source"]}
    new["dist"][3] = 7.5
    store.put("f", "d2", new, like=mapped)
    assert store.patched == 2
    assert read_elsewhere(tmp_path, "net-1", "f", "d2") is None  # not trusted: computed again by the reader


@pytest.mark.parametrize("case", ["private", "other shape", "most blocks", "entry gone"])
def test_an_entry_is_written_whole_when_a_copy_does_not_fit(
        first: tuple[FieldStore, dict[str, np.ndarray], dict[str, np.ndarray]], tmp_path: Path, case: str) -> None:
    store, arrays, mapped = first
    new = {"dist": arrays["dist"].copy(), "source": arrays["source"].copy()}
    like = dict(mapped)
    if case == "private":  # arrays not mapped from the store
        like = {k: np.array(v) for k, v in mapped.items()}
    elif case == "other shape":
        new = {"dist": arrays["dist"][:-8].copy(), "source": arrays["source"][:-8].copy()}
    elif case == "most blocks":
        new["dist"] += 1.0
        new["source"] += 1
    else:  # removed meanwhile (pruned by another process)
        os.rename(tmp_path / "f" / "d1", tmp_path / "f" / ".d1.old-1-abcd1234")
    got = store.put("f", "d2", new, like=like)
    assert store.patched == 0 and sha(got) == sha(new)
    assert read_elsewhere(tmp_path, "net-1", "f", "d2") == sha(new)


def test_an_engine_publishes_its_incremental_updates_as_patched_copies(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The fields and edge factors after a local change are published as copies of the previous state's
    entries (blocks of 4 KiB here, on a small grid) that another process maps with the full search's values."""
    monkeypatch.setattr(fieldstore, "BLOCK_BYTES", 4096)
    net = grid_network(20_000, seed=3)
    net.save(tmp_path / "grid.npz")
    net = RoadNetwork.load(tmp_path / "grid.npz")
    keys = [("walk", "flood", False), ("reduced_mobility", "flood", False)]
    shelters = grid_shelters(net, per=400, seed=5)
    eng = Engine(net, shelters=shelters, warm=keys, field_store_min_nodes=0, incremental_min_nodes=0)
    assert eng.store is not None
    i = net.n_nodes // 2 + 70
    area = HazardArea(id="cut", hazard="flood", geometry=shapely.Point(float(net.node_lon[i]),
                                                                       float(net.node_lat[i])).buffer(0.0012))
    eng.update(add_areas=[area])
    assert eng.store.patched == 1 + 3 * len(keys)  # the edge factors, and each field's three arrays
    assert sum(eng.incremental_updates.values()) == len(keys)
    whole = Engine(RoadNetwork.load(tmp_path / "grid.npz", shared=False), shelters=shelters, areas=[area],
                   incremental=False)
    for key in keys:
        f = eng.field(*key)
        where = Path(f.dist.base.filename).parent  # type: ignore[union-attr]
        got = read_elsewhere(eng.store.root, eng.network.mapped_key, where.parent.name, where.name)
        assert got == sha({"dist": f.dist, "next_node": f.next_node, "source": f.source})
        assert np.array_equal(f.dist, whole.field(*key).dist)
