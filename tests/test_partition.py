"""Partitions of the municipality topic space (ingest/partition.py): every code has exactly one owner."""

from __future__ import annotations

import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.partition import Partition

codes = st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=32)


@settings(max_examples=200, deadline=None)
@given(code=codes, n=st.integers(min_value=1, max_value=64))
def test_every_municipality_has_exactly_one_partition(code: str, n: int) -> None:
    owners = [i for i in range(n) if Partition(i, n).owns(code)]
    assert owners == [zlib.crc32(code.encode()) % n]  # the documented hash, the same on every host


def test_filters_are_plain_and_cover_the_registry() -> None:
    registry = {"072010", "072028", "072036", "072044", "072052"}
    parts = [Partition(i, 3) for i in range(3)]
    filters = [f for p in parts for f in p.filters("sonae/v1", registry)]
    assert sorted(filters) == sorted(f"sonae/v1/{c}/#" for c in registry)
    assert not any(f.startswith("$share/") for f in filters)
    assert Partition.parse("") is None and Partition.parse(" 1 / 3 ") == Partition(1, 3)
