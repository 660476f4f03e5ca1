"""The nearest-shelter search, run in the calling process or in a worker process.

scipy's ``csgraph.dijkstra`` holds the GIL for its whole run (about 0.5 s at a million nodes), so an
API process that runs it in a thread stalls every request meanwhile. :class:`ProcessSearch` runs it in
one worker process instead: the graph (CSR arrays) and the answer (distance, next hop and source per
node) travel through one :class:`multiprocessing.shared_memory.SharedMemory` block per search — plain
memory copies, nothing is pickled but the block's name and the array sizes — and the calling thread
waits without the GIL. The answers are identical to :func:`search_in_process` (same function, same
arrays).
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import multiprocessing as mp
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.shared_memory import SharedMemory
from typing import Protocol

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

log = logging.getLogger("sonae.evac.search")


class Search(Protocol):
    """Multi-source Dijkstra over a CSR graph from its last ``k`` nodes (the virtual source nodes).

    Returns ``dist`` (float64), ``pred`` and ``src`` (int32, -1 for none) for the first ``n`` nodes, where
    ``src`` counts source rows from 0 (node ``n + k`` is row ``k``).
    """

    def __call__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n: int, k: int,
                 limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


_GRAPHS: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray, csr_matrix]] = {}
_GRAPHS_LOCK = threading.Lock()


def _graph(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, size: int) -> csr_matrix:
    """A CSR matrix over ``data`` with the structure ``indices``/``indptr``.

    Searches after a hazard change reuse the structure (the engine keeps those arrays while its source
    rows join the same nodes), so the matrix is built and checked by scipy once per structure and later
    ones share its checked index arrays with the new ``data`` (a shallow copy: nothing is changed in place,
    so concurrent searches stay independent).
    """
    key = (id(indices), id(indptr), size)
    with _GRAPHS_LOCK:
        hit = _GRAPHS.get(key)
    if (hit is None or hit[0] is not indices or hit[1] is not indptr or data.dtype != np.float64
            or len(data) != len(hit[2].data)):
        graph = csr_matrix((data, indices, indptr), shape=(size, size))
        with _GRAPHS_LOCK:
            if len(_GRAPHS) >= 4:
                _GRAPHS.clear()
            _GRAPHS[key] = (indices, indptr, graph)  # the arrays keep their ids while kept here
        return graph
    graph = copy.copy(hit[2])
    graph.data = data
    return graph


def search_in_process(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n: int, k: int,
                      limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The search in this process (see :class:`Search`)."""
    return _search(_graph(data, indices, indptr, n + k), n, k, limit)


def _search(graph: csr_matrix, n: int, k: int, limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dijkstra from the last ``k`` nodes of ``graph``; the first ``n`` nodes' answers (see :class:`Search`)."""
    dist, pred, src = dijkstra(graph, directed=True, indices=np.arange(n, n + k), return_predecessors=True,
                               min_only=True, limit=limit)
    pred, src = pred[:n], src[:n]  # int32, fresh from dijkstra: changed in place
    pred[pred < 0] = -1
    none = src < 0
    src -= n
    src[none] = -1
    return dist[:n], pred, src


def _layout(n_data: int, n_ptr: int, n: int) -> list[tuple[str, np.dtype, int, int]]:
    """(name, dtype, offset, count) of each array in the shared block, 8-byte aligned."""
    specs: list[tuple[str, np.dtype, int]] = [("data", np.dtype(np.float64), n_data), ("indices", np.dtype(np.int32), n_data),
             ("indptr", np.dtype(np.int32), n_ptr), ("dist", np.dtype(np.float64), n),
             ("pred", np.dtype(np.int32), n), ("src", np.dtype(np.int32), n)]
    out, off = [], 0
    for name, dt, count in specs:
        out.append((name, dt, off, count))
        off += (dt.itemsize * count + 7) // 8 * 8
    return out


def _views(buf: memoryview | None, layout: list[tuple[str, np.dtype, int, int]]) -> dict[str, np.ndarray]:
    assert buf is not None
    return {name: np.frombuffer(buf, dtype=dt, count=count, offset=off) for name, dt, off, count in layout}


def _worker_search(shm_name: str, n_data: int, n_ptr: int, n: int, k: int, limit: float) -> None:
    shm = SharedMemory(name=shm_name)
    try:
        v = _views(shm.buf, _layout(n_data, n_ptr, n))
        # a new matrix each time: a kept one would hold views of the block, which then cannot close
        graph = csr_matrix((v["data"], v["indices"], v["indptr"]), shape=(n + k, n + k))
        v["dist"][:], v["pred"][:], v["src"][:] = _search(graph, n, k, limit)
        del graph
        del v
    finally:
        shm.close()


def _ignore_interrupts() -> None:
    """The worker's initializer: Ctrl-C in a terminal sends SIGINT to the whole process group, the worker
    too; the process that started it stops it (:meth:`ProcessSearch.close`), so the worker ignores it
    (else it died with a KeyboardInterrupt traceback on every Ctrl-C of ``sonae run``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked from its start: see ProcessSearch


@contextlib.contextmanager
def _interrupts_blocked() -> Iterator[None]:
    """SIGINT blocked in this thread meanwhile: a worker started meanwhile inherits the mask across its
    exec, so a Ctrl-C while it is still importing (before :func:`_ignore_interrupts`) waits, then is
    ignored (the process still gets it: another thread takes it)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class ProcessSearch:
    """The search in one worker process (``spawn``ed on first use, so no lock of this process is inherited).

    Thread-safe; searches queue in the worker. :meth:`close` stops it (also at interpreter exit).
    """

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self.searches = 0  # how many searches ran in the worker (for metrics and tests)

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                                 initializer=_ignore_interrupts)
                atexit.register(self.close)
            return self._pool

    def __call__(self, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, n: int, k: int,
                 limit: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if indptr[-1] >= np.iinfo(np.int32).max:
            return search_in_process(data, indices, indptr, n, k, limit)
        layout = _layout(len(data), len(indptr), n)
        size = max(8, layout[-1][2] + layout[-1][1].itemsize * n)
        shm = SharedMemory(create=True, size=size)
        try:
            v = _views(shm.buf, layout)
            try:
                v["data"][:], v["indices"][:], v["indptr"][:] = data, indices, indptr
                try:
                    with _interrupts_blocked():  # the worker starts with the first search
                        future = self._executor().submit(_worker_search, shm.name, len(data), len(indptr), n, k,
                                                         limit)
                    future.result()
                except BrokenProcessPool:  # the worker died (killed, out of memory): answer anyway, respawn next time
                    log.warning("the search worker process died; searching in this process, a new worker starts "
                                "with the next search")
                    self._reset()
                    return search_in_process(data, indices, indptr, n, k, limit)
                self.searches += 1
                return v["dist"].copy(), v["pred"].copy(), v["src"].copy()
            finally:
                del v  # the views must go before the block can close
        finally:
            shm.close()
            shm.unlink()

    def _reset(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
