"""The search in a worker process gives the same fields as in process (issue #21), and fields whose
inputs did not change are not searched again."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import shapely

from evac.engine import Engine
from evac.gridtown import grid_network, grid_shelters
from evac.hazards import HazardArea
from evac.search import ProcessSearch


@pytest.fixture(scope="module")
def worker() -> Iterator[ProcessSearch]:
    w = ProcessSearch()
    yield w
    w.close()


def _square(net, node: int, half_deg: float) -> shapely.Polygon:
    x, y = float(net.node_lon[node]), float(net.node_lat[node])
    return shapely.box(x - half_deg, y - half_deg, x + half_deg, y + half_deg)


def test_worker_fields_equal_in_process_fields(worker: ProcessSearch) -> None:
    net = grid_network(2500, seed=3)
    shelters = grid_shelters(net, per=200, seed=3)
    keys = [("walk", "flood", False), ("car", "flood", False)]
    local = Engine(net, shelters=shelters, warm=keys, incremental=False)
    before = worker.searches
    remote = Engine(net, shelters=shelters, warm=keys, search=worker, incremental=False)
    rng = np.random.default_rng(5)
    for k in range(3):
        area = HazardArea(id=f"a{k}", hazard="flood", geometry=_square(net, int(rng.integers(net.n_nodes)), 0.002))
        local.update(add_areas=[area])
        remote.update(add_areas=[area])
        for key in keys:
            a, b = local.field(*key), remote.field(*key)
            assert np.array_equal(a.dist, b.dist)
            assert np.array_equal(a.next_node, b.next_node)
            assert np.array_equal(a.source, b.source)
            assert np.isfinite(a.dist).sum() > net.n_nodes // 2  # the comparison is not between empty fields
    # every search of the remote engine ran in the worker (incremental updates: tests/evac/test_evac_incremental.py)
    assert worker.searches - before == sum(remote.recomputes.values()) == 2 + 3 * 2
