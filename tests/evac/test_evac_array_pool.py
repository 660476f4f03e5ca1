"""The array pool of incremental updates (:class:`evac.incremental.ArrayPool`): it recycles an array only
when nothing else refers to it, and keeps a bounded number of free ones."""

from __future__ import annotations

import numpy as np

from evac.incremental import ArrayPool

MB = 1 << 20


def test_a_copy_equals_its_source_and_is_writable() -> None:
    pool = ArrayPool(min_bytes=MB)
    a = np.arange(MB // 8 * 2, dtype=float)
    a.setflags(write=False)
    c = pool.copy(a)
    assert c is not a and np.array_equal(c, a) and c.flags.writeable
    small = pool.copy(np.arange(10))
    assert np.array_equal(small, np.arange(10)) and pool.fresh == 1  # small arrays are plain copies


def test_an_array_in_use_is_never_overwritten() -> None:
    pool = ArrayPool(min_bytes=MB)
    src = np.random.default_rng(1).random(MB // 4)
    held = pool.copy(src)
    held.setflags(write=False)  # as the engine freezes a field's arrays
    view = pool.copy(src)[10:20]  # only a view survives: it holds its base
    kept_in = {"field": pool.copy(src)}
    other = pool.copy(src * 2)
    assert pool.fresh == 4 and pool.reused == 0
    assert view.base is not None
    assert np.array_equal(held, src) and np.array_equal(view, src[10:20]) and np.array_equal(kept_in["field"], src)
    del other  # now free: the next copy of that shape goes into it
    again = pool.copy(src + 1)
    assert pool.reused == 1 and pool.fresh == 4
    assert np.array_equal(again, src + 1)
    assert np.array_equal(held, src) and np.array_equal(view, src[10:20]) and np.array_equal(kept_in["field"], src)


def test_other_shapes_and_dtypes_are_not_mixed_and_spares_are_bounded() -> None:
    pool = ArrayPool(spare=2, min_bytes=MB)
    f = np.ones(MB // 4)
    i = np.ones(MB // 4, np.int64)
    for _ in range(5):
        pool.copy(f)  # dropped at once: free again
    assert pool.fresh == 1 and pool.reused == 4
    c = pool.copy(i)
    assert c.dtype == np.int64 and pool.fresh == 2
    arrays = [pool.copy(f) for _ in range(6)]  # six at once: five new
    assert pool.fresh == 7
    del arrays
    pool.copy(i)  # a scan lets go of free arrays beyond two of each shape and dtype
    assert len(pool._arrays) - 1 <= 2 + 2
