"""Compare a field with one from a fresh full search (the oracle): equal distances, valid next hops.

Next hops may differ where two ways tie, so each is checked on its own: a neighbour ``u`` of ``v`` with
``dist[u] + w(v -> u) == dist[v]``, or a source row ending at ``v`` with ``dist[v]`` as its weight; the
source row of a node is its next hop's.
"""

from __future__ import annotations

import numpy as np

from evac.engine import Field
from evac.network import RoadNetwork

RTOL = 1e-9


def assert_field_matches(f: Field, oracle: Field, net: RoadNetwork) -> None:
    """Raise ``AssertionError`` naming the first difference between ``f`` and the fresh ``oracle``."""
    n = net.n_nodes
    reach = np.isfinite(oracle.dist)
    assert np.array_equal(np.isfinite(f.dist), reach), "reachable nodes differ"
    assert np.allclose(f.dist[reach], oracle.dist[reach], rtol=RTOL, atol=0.0), (
        f"distances differ by up to {np.abs(f.dist - oracle.dist)[reach].max()} s")
    assert [s.id for s in f.shelters] == [s.id for s in oracle.shelters]
    assert np.array_equal(f.pair_weight, oracle.pair_weight), "edge weights differ"
    nxt, src = f.next_node, f.source
    assert np.all(nxt[~reach] == -1) and np.all(src[~reach] == -1), "an unreachable node has a next hop"
    pg = net.profile(f.profile)
    inner = np.flatnonzero(reach & (nxt < n))
    assert np.all(nxt[inner] >= 0)
    heads = nxt[inner]
    # the pair v -> next[v] in the forward CSR (rows sorted by head)
    lo, hi = pg.fwd_indptr[inner], pg.fwd_indptr[inner + 1]
    j = np.array([lo_ + np.searchsorted(pg.pair_head[lo_:hi_], h) for lo_, hi_, h
                  in zip(lo.tolist(), hi.tolist(), heads.tolist(), strict=True)], dtype=np.int64)
    ok = j < hi
    assert ok.all() and np.array_equal(pg.pair_head[j], heads), "a next hop is not a neighbour"
    via = f.pair_weight[j] + f.dist[heads]
    assert np.allclose(via, f.dist[inner], rtol=RTOL, atol=0.0), "a next hop is not on a shortest route"
    assert np.array_equal(src[inner], src[heads]), "a node's source row is not its next hop's"
    roots = np.flatnonzero(reach & (nxt >= n))
    rows = nxt[roots] - n
    assert np.array_equal(f.sources.end[rows], roots), "a route leaves the graph away from its source row"
    assert np.allclose(np.maximum(f.sources.offset[rows], 1e-9), f.dist[roots], rtol=RTOL, atol=0.0)
    assert np.array_equal(src[roots], rows)
