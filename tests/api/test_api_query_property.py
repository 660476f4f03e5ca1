"""Public query parsing for the pages' requests, by property: ``bbox`` and ``limit`` (api/params.py) and the
Accept-Encoding reading of the compression middleware (api/compression.py). Any text a client sends is
either a valid value or a 400 problem naming the parameter, never another error."""

from __future__ import annotations

import math
import urllib.parse

from aiohttp.test_utils import make_mocked_request
from hypothesis import example, given, settings
from hypothesis import strategies as st

from api.compression import accepts_gzip
from api.params import bbox, integer
from api.problems import Problem

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-400, 400).map(float))
PIECES = st.one_of(NUMBERS.map(repr), st.text(max_size=8), st.sampled_from(["", "nan", "inf", "1e999", "-0", " 1"]))


def _request(name: str, raw: str):  # type: ignore[no-untyped-def]
    return make_mocked_request("GET", f"/api/v1/shelters?{urllib.parse.urlencode({name: raw})}")


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, min_size=0, max_size=6).map(",".join))
def test_bbox_is_four_ordered_finite_degrees_or_a_400(raw: str) -> None:
    try:
        got = bbox(_request("bbox", raw))
    except Problem as p:
        assert p.status == 400 and p.extra.get("parameter") == "bbox"
        return
    if got is None:
        assert raw == ""
        return
    west, south, east, north = got
    assert all(math.isfinite(v) for v in got)
    assert -180 <= west < east <= 180 and -90 <= south < north <= 90
    assert [float(v) for v in raw.split(",")] == list(got)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.integers(-10, 20_000).map(str), st.text(max_size=12)))
def test_limit_is_a_whole_number_in_range_or_a_400(raw: str) -> None:
    try:
        got = integer(_request("limit", raw), "limit", 1, 10000)
    except Problem as p:
        assert p.status == 400 and p.extra.get("parameter") == "limit"
        return
    if got is None:
        assert raw == ""
    else:
        assert raw.isascii() and raw.isdigit() and int(raw) == got and 1 <= got <= 10000


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["gzip", "GZIP", "deflate", "br", "identity", "*", "x-gzip", "zstd"]),
                          st.one_of(st.none(), st.sampled_from(["0", "0.0", "0.000", "1", "0.5", "1.0", "0.001"]))),
                max_size=5))
@example([("*", "0"), ("gzip", None)])  # the first listed decided: gzip named after *;q=0 was refused
def test_accept_encoding_gzip_unless_refused(codings: list[tuple[str, str | None]]) -> None:
    """Oracle: RFC 9110 §12.5.3 read directly: gzip (or x-gzip) listed decides by its weight, q=0 refuses;
    ``*`` stands for codings not listed, so it decides only when neither is."""
    value = ", ".join(c + (f";q={q}" if q is not None else "") for c, q in codings)
    named = [q is None or float(q) > 0 for c, q in codings if c.lower() in ("gzip", "x-gzip")]
    star = [q is None or float(q) > 0 for c, q in codings if c == "*"]
    assert accepts_gzip(value) is (any(named) if named else any(star))
