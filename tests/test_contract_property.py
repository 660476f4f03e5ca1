"""The parser is total: any bytes on any valid topic give readings or a PayloadError, never another exception.

Hypothesis draws raw bytes and JSON documents built from the fields of the contract (and SenML), with
the values devices get wrong in the field: numbers beyond a float or an int (``1e309``, 300- and
5,000-digit integers), NaN/Infinity, lists and objects where strings go, lone surrogates and NUL,
deep nesting, times out of range. A fixed, modest budget keeps the suite fast.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.contract import PLAUSIBLE, STATION_ID, TOPIC_KINDS, Parsed, Parser, PayloadError

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
PARSER = Parser(prefix="sonae/v1", max_future_s=300, max_payload_bytes=65536)

FIELDS = ["ts", "value", "unit", "seq", "exercise", "values", "status", "battery_pct", "battery_v", "rssi_dbm",
          "temperature_c", "bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut",
          "exercise_", "x_"]
NAMES = ["level", "rain", "status", "battery_pct", "rssi_dbm", "g01/level", "g02/rain", "a\n/level", "", "/", "x/"]


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


# JSON text fragments (so values Python's json.dumps cannot write, like 5,000-digit integers, appear too)
LEAVES = st.one_of(
    st.sampled_from(["1" + "0" * 309, "1" + "0" * 300, "9" * 5000, "-" + "9" * 400, "1e309", "-1e309", "1e-400",
                     "NaN", "Infinity", "-Infinity", "0", "-0.0", "3.42", "2.5e2", "true", "false", "null",
                     '"m"', '"cm"', '"mm"', '"ft"', '"ok"', '"fault"', '"%EL"', '""', '"\\u0000"', '"\\ud800"',
                     '"2026-11-29T02:50:00Z"', '"2026-11-29T02:50:00"', '"0001-01-01T00:00:00+01:00"',
                     '"9999-12-31T23:59:59-01:00"', '"2099-01-01T00:00:00Z"', "1795000000", "946684799",
                     "268435455", "268435456", "-268435456", "9223372036854775807", "18446744073709551616",
                     "[" * 300 + "]" * 300, "[]", "{}", '["m"]', '{"m": 1}', "10", "11", "-1"]),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=30).map(json.dumps),
    st.sampled_from(NAMES).map(json.dumps),
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
        st.dictionaries(st.sampled_from(FIELDS), inner, max_size=5).map(
            lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}"),
    ),
    max_leaves=20,
)
OBJECTS = st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=1, max_size=8).map(
    lambda d: "{" + ",".join(f"{json.dumps(k)}:{v}" for k, v in d.items()) + "}")
DOCUMENTS = st.one_of(OBJECTS, st.lists(OBJECTS, min_size=0, max_size=6).map(lambda xs: "[" + ",".join(xs) + "]"),
                      VALUES)
PAYLOADS = st.one_of(
    st.binary(max_size=200),
    DOCUMENTS.map(raw),
    # a document cut short, or with a byte that is not UTF-8
    st.tuples(DOCUMENTS.map(raw), st.integers(min_value=0, max_value=200)).map(lambda p: p[0][: p[1]]),
    st.tuples(DOCUMENTS.map(raw), st.integers(min_value=0, max_value=200)).map(lambda p: p[0][: p[1]] + b"\xff"),
)
TOPICS = st.builds(lambda municipality, station, kind: f"sonae/v1/{municipality}/{station}/{kind}",
                   st.sampled_from(["072036", "07203", "079999"]),
                   st.from_regex(r"\A[A-Za-z0-9_.\-]{1,64}\Z"),
                   st.sampled_from(TOPIC_KINDS))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=TOPICS, payload=PAYLOADS)
def test_any_bytes_on_a_valid_topic_are_readings_or_a_dead_letter(topic: str, payload: bytes) -> None:
    try:
        parsed = PARSER.parse(topic, payload, now=NOW)
    except PayloadError as exc:
        assert re.fullmatch(r"[a-z0-9_]+", exc.reason), exc.reason
        assert exc.detail and "\x00" not in exc.detail
        exc.detail.encode("utf-8")  # storable as PostgreSQL text
        return
    assert isinstance(parsed, Parsed) and parsed.readings
    for r in parsed.readings:
        assert STATION_ID.match(r.station_id) and "\n" not in r.station_id
        low, high = PLAUSIBLE[r.kind]
        assert math.isfinite(r.value) and low <= r.value <= high
        assert datetime(2000, 1, 1, tzinfo=UTC) <= r.ts <= NOW + timedelta(seconds=300)
        assert r.seq is None or 0 <= r.seq < 2**63
    for p in parsed.problems:
        assert isinstance(p, PayloadError) and p.reason and p.detail
