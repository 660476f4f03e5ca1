import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from ingest.contract import Parser, PayloadError, encode_reading, subscription

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
P = Parser(prefix="sonae/v1")
T = "sonae/v1/072036/akutsu/level"


def test_json_reading_normalises_units() -> None:
    parsed = P.parse(T, b'{"ts": "2026-11-29T02:50:00+09:00", "value": 342, "unit": "cm", "seq": 7}', now=NOW)
    (r,) = parsed.readings
    assert r.station_id == "akutsu" and r.kind == "level" and math.isclose(r.value, 3.42)
    assert r.ts == datetime(2026, 11, 28, 17, 50, tzinfo=UTC) and r.seq == 7 and not r.exercise


def test_batch_array_epoch_and_exercise() -> None:
    body = json.dumps([{"ts": NOW.timestamp() - 600, "value": 1.0}, {"ts": NOW.timestamp(), "value": 1.2,
                                                                       "exercise": True}])
    parsed = P.parse(T, body.encode(), now=NOW)
    assert [r.value for r in parsed.readings] == [1.0, 1.2]
    assert [r.exercise for r in parsed.readings] == [False, True]


def test_telemetry_fields() -> None:
    body = b'{"ts": 1795000000, "battery_pct": 55, "rssi_dbm": -90, "status": "low_battery"}'
    parsed = P.parse("sonae/v1/072036/akutsu/telemetry", body, now=datetime.fromtimestamp(1795000000, UTC))
    assert {(r.kind, r.value) for r in parsed.readings} == {("battery_pct", 55.0), ("rssi_dbm", -90.0), ("status", 1.0)}


def test_senml_pack_many_stations() -> None:
    pack = [{"bn": "gw1-a/", "bt": NOW.timestamp() - 1200, "n": "level", "u": "m", "v": 2.0},
            {"n": "level", "t": 600, "v": 2.1},
            {"bn": "gw1-b/", "n": "rain", "u": "mm", "v": 4.5},
            {"n": "battery_pct", "u": "%EL", "v": 80}]
    parsed = P.parse("sonae/v1/072036/gw1/senml", json.dumps(pack).encode(), now=NOW)
    assert [(r.station_id, r.kind, r.value) for r in parsed.readings] == [
        ("gw1-a", "level", 2.0), ("gw1-a", "level", 2.1), ("gw1-b", "rain", 4.5), ("gw1-b", "battery_pct", 80.0)]
    assert parsed.readings[1].ts - parsed.readings[0].ts == timedelta(seconds=600)


def test_senml_partial_pack_keeps_good_records() -> None:
    pack = [{"bn": "a/", "bt": NOW.timestamp(), "n": "level", "v": 1.0}, {"n": "level", "v": "high"}]
    parsed = P.parse("sonae/v1/072036/a/senml", json.dumps(pack).encode(), now=NOW)
    assert len(parsed.readings) == 1 and parsed.problems[0].reason == "bad_value"


MALFORMED = [
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 3.', "bad_json"),
    (T, b"\xff\xfe{}", "not_utf8"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": NaN}', "not_finite"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": Infinity}', "not_finite"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": "3.4"}', "bad_value"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 99999}', "implausible_value"),
    (T, b'{"ts": "2099-01-01T00:00:00Z", "value": 1.0}', "future_timestamp"),
    (T, b'{"ts": "yesterday", "value": 1.0}', "bad_timestamp"),
    (T, b'{"value": 1.0}', "bad_timestamp"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 1.0, "unit": "ft"}', "bad_unit"),
    (T, b'"just a string"', "bad_shape"),
    (T, b"[]", "empty"),
    (T, b"x" * 300000, "oversized"),
    ("sonae/v1/072036/akutsu/pressure", b'{"ts": 1, "value": 1}', "bad_topic"),
    ("sonae/v1/akutsu/level", b'{"ts": 1, "value": 1}', "bad_topic"),
    ("sonae/v1/072036/bad station/level", b"{}", "bad_topic"),
    ("sonae/v1/072036/a/senml", b'{"n": "level"}', "bad_senml"),
    ("sonae/v1/072036/a/telemetry", b'{"ts": "2026-11-29T02:50:00Z", "status": "on fire"}', "bad_value"),
    (T, b"[" * 5000 + b"]" * 5000, "bad_json"),
    # issue #15 item 1: numbers Python cannot hold as a float or an int, and containers where a string goes
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 1' + b"0" * 309 + b"}", "not_finite"),
    (T, b'{"ts": 1' + b"0" * 309 + b', "value": 1.0}', "bad_timestamp"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 1' + b"0" * 300 + b"}", "implausible_value"),
    (T, b'{"ts": 1' + b"0" * 300 + b', "value": 1.0}', "bad_timestamp"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": ' + b"7" * 5000 + b"}", "not_finite"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 1.0, "seq": ' + b"7" * 5000 + b"}", "bad_value"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 1e309}', "not_finite"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": -1e999}', "not_finite"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 1.0, "unit": ["m"]}', "bad_unit"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": 1.0, "unit": {"m": 1}}', "bad_unit"),
    ("sonae/v1/072036/akutsu/rain", b'{"ts": "2026-11-29T02:50:00Z", "value": 1.0, "unit": ["mm"]}', "bad_unit"),
    (T, b'{"ts": "2026-11-29T02:50:00Z", "value": [[[[1.0]]]]}', "bad_value"),
    (T, b'{"ts": ["2026-11-29T02:50:00Z"], "value": 1.0}', "bad_timestamp"),
    (T, b'{"ts": "0001-01-01T00:00:00+01:00", "value": 1.0}', "bad_timestamp"),
    (T, b'{"ts": "\\ud800", "value": "\\u0000"}', "bad_value"),
    ("sonae/v1/072036/akutsu/telemetry", b'{"ts": "2026-11-29T02:50:00Z", "status": ["ok"]}', "bad_value"),
    ("sonae/v1/072036/akutsu/telemetry", b'{"ts": "2026-11-29T02:50:00Z", "status": {"ok": 1}}', "bad_value"),
    ("sonae/v1/072036/a/senml", b'[{"n": "status", "vs": ["ok"]}]', "bad_value"),
    ("sonae/v1/072036/a/senml", b'[{"n": "status", "vs": {"ok": 1}}]', "bad_value"),
    ("sonae/v1/072036/a/senml", b'[{"n": "level", "v": 1' + b"0" * 309 + b"}]", "not_finite"),
    ("sonae/v1/072036/a/senml", b'[{"bt": 1' + b"0" * 309 + b', "n": "level", "v": 1.0}]', "not_finite"),
    ("sonae/v1/072036/a/senml", b'[{"n": "level", "t": 1' + b"0" * 309 + b', "v": 1.0}]', "bad_timestamp"),
    ("sonae/v1/072036/a/senml", b'[{"n": "level", "u": ["m"], "v": 1.0}]', "bad_unit"),
    ("sonae/v1/072036/a/senml", b'[{"n": ["level"], "v": 1.0}]', "bad_senml"),
    ("sonae/v1/072036/a/senml", b'[{"bn": "a\\n/", "n": "level", "v": 1.0}]', "bad_senml"),
    ("sonae/v1/072036/a/senml", b'[{"bver": 11, "n": "level", "v": 1.0}]', "unsupported_senml_version"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), MALFORMED)
def test_malformed_payloads_have_a_reason(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as info:
        P.parse(topic, payload, now=NOW)
    assert info.value.reason == reason and info.value.detail


def test_encode_roundtrip_and_subscription() -> None:
    body = encode_reading(value=3.14159, ts=NOW, seq=3, exercise=True)
    (r,) = P.parse(T, body, now=NOW).readings
    assert r.value == 3.1416 and r.ts == NOW and r.seq == 3 and r.exercise
    assert subscription("sonae/v1", "grp") == "$share/grp/sonae/v1/#"
    assert subscription("sonae/v1") == "sonae/v1/#"


def test_senml_base_name_on_a_short_record_is_not_skipped() -> None:
    pack = [{"bn": "a/", "bt": NOW.timestamp(), "n": "level", "v": 1.0}, {"bn": "b/", "n": "level", "v": 2.0}]
    parsed = P.parse("sonae/v1/072036/gw/senml", json.dumps(pack).encode(), now=NOW)
    assert [(r.station_id, r.value) for r in parsed.readings] == [("a", 1.0), ("b", 2.0)]


def test_a_newline_never_passes_as_an_id() -> None:
    # "$" matches before a final newline: "g1\n" would reach the registry's CHECK and fail the batch
    with pytest.raises(PayloadError) as info:
        P.parse("sonae/v1/072036/g1\n/level", b'{"ts": 1795000000, "value": 1.0}', now=NOW)
    assert info.value.reason == "bad_topic"
    with pytest.raises(PayloadError) as info:
        P.parse("sonae/v1/07203\n/g1/level", b'{"ts": 1795000000, "value": 1.0}', now=NOW)
    assert info.value.reason == "bad_topic"


def test_details_are_storable_text() -> None:
    """A detail quoting a device's string never carries NUL or a lone surrogate (PostgreSQL refuses both)."""
    with pytest.raises(PayloadError) as info:
        P.parse(T, b'{"ts": "2026-11-29T02:50:00Z", "value": "\\u0000\\udfff"}', now=NOW)
    assert "\x00" not in info.value.detail
    info.value.detail.encode("utf-8")


def test_a_big_but_exact_seq_is_kept() -> None:
    (r,) = P.parse(T, b'{"ts": "2026-11-29T02:50:00Z", "value": 1.0, "seq": 9223372036854775807}', now=NOW).readings
    assert r.seq == 2**63 - 1
