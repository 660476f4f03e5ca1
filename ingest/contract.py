"""The message contract between devices and Sonae: topics, payloads, units.

Topics
------
``{prefix}/{municipality}/{station}/{kind}``, with ``prefix`` = ``sonae/v1`` by default,
``municipality`` the 6-digit 団体コード (e.g. ``072036`` for Koriyama), ``station`` the registry id
(``[A-Za-z0-9_.-]{1,64}``) and ``kind`` one of

* ``level``     — river water level (stage), stored in metres;
* ``rain``      — rainfall over the reporting interval, stored in millimetres;
* ``telemetry`` — device health: ``battery_pct``, ``battery_v``, ``rssi_dbm``, ``temperature_c``,
  ``status`` (``ok``, ``low_battery``, ``fault``, ``maintenance``);
* ``senml``     — a SenML JSON pack (RFC 8428) of any of the above, so a gateway can send many
  readings (and many stations) in one message.

Payloads (JSON, UTF-8)
----------------------
``level`` / ``rain``: ``{"ts": "2026-11-29T01:20:00Z", "value": 3.42, "unit": "m", "seq": 17}``;
``ts`` is ISO 8601 with an offset or epoch seconds; ``unit`` is optional (``m``/``cm``/``mm`` for
level, ``mm`` for rain); ``seq`` is an optional sequence number. A JSON array of such objects is a batch.

``telemetry``: ``{"ts": ..., "battery_pct": 87, "battery_v": 3.61, "rssi_dbm": -71,
"temperature_c": 12.5, "status": "ok"}`` (any subset; or nested under ``"values"``).

``senml``: ``[{"bn": "akutsu/", "bt": 1764379200, "n": "level", "u": "m", "v": 3.42},
{"n": "level", "t": 600, "v": 3.51}]``. The resolved name (``bn`` + ``n``) is ``kind`` (station from
the topic) or ``station/kind``. Times below 2**28 are relative to now (RFC 8428 §4.5.3).

Every payload may carry ``"exercise": true`` (SenML: ``"exercise_": true`` on a record, which applies
to it and the records after it): the readings belong to a drill and never raise a real alert.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

STATION_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
MUNICIPALITY = re.compile(r"^[0-9]{5,6}$|^[A-Za-z0-9_\-]{1,32}$")

#: kind → (lowest, highest) plausible value after unit conversion
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "level": (-100.0, 2000.0),  # metres; elevation datums reach several hundred metres
    "rain": (0.0, 500.0),  # mm per reporting interval
    "battery_pct": (0.0, 100.0),
    "battery_v": (0.0, 60.0),
    "rssi_dbm": (-200.0, 20.0),
    "temperature_c": (-60.0, 90.0),
    "status": (0.0, 3.0),
}
TELEMETRY_FIELDS = ("battery_pct", "battery_v", "rssi_dbm", "temperature_c", "status")
STATUS_CODES = {"ok": 0, "low_battery": 1, "fault": 2, "maintenance": 3}
STATUS_NAMES = {v: k for k, v in STATUS_CODES.items()}
TOPIC_KINDS = ("level", "rain", "telemetry", "senml")
_LEVEL_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
_SENML_UNITS = {
    "level": {"m": 1.0, "cm": 0.01, "mm": 0.001},
    "rain": {"mm": 1.0, "m": 1000.0},
    "battery_pct": {"%EL": 1.0, "%": 1.0},
    "battery_v": {"V": 1.0},
    "rssi_dbm": {"dBm": 1.0},
    "temperature_c": {"Cel": 1.0},
    "status": {"": 1.0},
}
_EPOCH_MIN = datetime(2000, 1, 1, tzinfo=UTC)
_SENML_PLAIN_KEYS = frozenset({"n", "v", "vs", "u", "t"})  # records without base fields


class PayloadError(ValueError):
    """A message that cannot be stored; ``reason`` is a short code used as a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Topic:
    municipality: str
    station: str
    kind: str


@dataclass(frozen=True, slots=True)
class Reading:
    station_id: str
    kind: str
    ts: datetime
    value: float
    exercise: bool = False
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one message yielded: readings to store and problems with the rest of it."""

    readings: list[Reading]
    problems: list[PayloadError]


def topic_for(prefix: str, municipality: str, station: str, kind: str) -> str:
    return f"{prefix}/{municipality}/{station}/{kind}"


def subscription(prefix: str, shared_group: str = "") -> str:
    """The topic filter ingestors subscribe to (shared when a group is given).

    The whole tree under ``prefix``, not just ``+/+/+``: a message on a malformed topic must reach the
    ingestor to be kept as a dead letter, not be silently unmatched by the broker.
    """
    base = f"{prefix}/#"
    return f"$share/{shared_group}/{base}" if shared_group else base


def parse_topic(topic: str, prefix: str) -> Topic:
    if not topic.startswith(prefix + "/"):
        raise PayloadError("bad_topic", f"topic {topic!r} is not under {prefix!r}")
    parts = topic[len(prefix) + 1:].split("/")
    if len(parts) != 3:
        raise PayloadError("bad_topic", f"topic {topic!r} is not {prefix}/<municipality>/<station>/<kind>")
    municipality, station, kind = parts
    if not MUNICIPALITY.match(municipality):
        raise PayloadError("bad_topic", f"municipality {municipality!r} is not a 団体コード")
    if not STATION_ID.match(station):
        raise PayloadError("bad_topic", f"station id {station!r} is not [A-Za-z0-9_.-]{{1,64}}")
    if kind not in TOPIC_KINDS:
        raise PayloadError("bad_topic", f"kind {kind!r} is not one of {', '.join(TOPIC_KINDS)}")
    return Topic(municipality, station, kind)


def _reject_constant(name: str) -> float:
    raise PayloadError("not_finite", f"{name} is not a finite number")


def decode_json(payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("not_utf8", f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except PayloadError:
        raise
    except (json.JSONDecodeError, RecursionError) as exc:
        raise PayloadError("bad_json", f"payload is not JSON ({exc})") from None


def parse_time(raw: Any, *, now: datetime, max_future: timedelta) -> datetime:
    if isinstance(raw, bool) or raw is None:
        raise PayloadError("bad_timestamp", f"timestamp {raw!r} is missing or not a time")
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise PayloadError("bad_timestamp", "timestamp is not finite")
        try:
            ts = datetime.fromtimestamp(raw, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise PayloadError("bad_timestamp", f"timestamp {raw!r} is out of range") from None
    elif isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise PayloadError("bad_timestamp", f"timestamp {raw[:40]!r} is not ISO 8601") from None
        if ts.tzinfo is None:
            raise PayloadError("bad_timestamp", f"timestamp {raw[:40]!r} has no UTC offset")
        try:
            ts = ts.astimezone(UTC)
        except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
            raise PayloadError("bad_timestamp", f"timestamp {raw[:40]!r} is out of range") from None
    else:
        raise PayloadError("bad_timestamp", f"timestamp of type {type(raw).__name__} is not a time")
    if ts > now + max_future:
        raise PayloadError("future_timestamp", f"timestamp {ts.isoformat()} is in the future")
    if ts < _EPOCH_MIN:
        raise PayloadError("bad_timestamp", f"timestamp {ts.isoformat()} is before 2000")
    return ts


def _number(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PayloadError("bad_value", f"{what} {str(raw)[:40]!r} is not a number")
    value = float(raw)
    if not math.isfinite(value):
        raise PayloadError("not_finite", f"{what} is not a finite number")
    return value


def _plausible(kind: str, value: float) -> float:
    low, high = PLAUSIBLE[kind]
    if not low <= value <= high:
        raise PayloadError("implausible_value", f"{kind} {value} is outside {low}..{high}")
    return value


def _seq(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < 2**63:
        raise PayloadError("bad_value", f"seq {str(raw)[:40]!r} is not a non-negative integer")
    return raw


def _exercise(raw: Any) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise PayloadError("bad_value", f"exercise {str(raw)[:20]!r} is not true/false")
    return raw


class Parser:
    """Turns MQTT messages into readings, applying the contract above."""

    def __init__(self, *, prefix: str = "sonae/v1", max_future_s: int = 300, max_payload_bytes: int = 262144) -> None:
        self.prefix = prefix
        self.max_future = timedelta(seconds=max_future_s)
        self.max_payload_bytes = max_payload_bytes

    def parse(self, topic: str, payload: bytes, *, now: datetime | None = None) -> Parsed:
        """Parse one message. Raises :class:`PayloadError` when nothing in it can be stored."""
        now = now or datetime.now(UTC)
        if len(payload) > self.max_payload_bytes:
            raise PayloadError("oversized", f"payload of {len(payload)} bytes exceeds {self.max_payload_bytes}")
        t = parse_topic(topic, self.prefix)
        doc = decode_json(payload)
        if t.kind == "senml":
            return self._senml(t, doc, now)
        items = doc if isinstance(doc, list) else [doc]
        if not items:
            raise PayloadError("empty", "payload is an empty list")
        readings: list[Reading] = []
        problems: list[PayloadError] = []
        for item in items:
            try:
                if not isinstance(item, dict):
                    raise PayloadError("bad_shape", f"expected a JSON object, got {type(item).__name__}")
                if t.kind == "telemetry":
                    readings.extend(self._telemetry(t, item, now))
                else:
                    readings.append(self._measurement(t, item, now))
            except PayloadError as exc:
                problems.append(exc)
        if not readings:
            raise problems[0]
        return Parsed(readings, problems)

    def _measurement(self, t: Topic, item: dict[str, Any], now: datetime) -> Reading:
        if "value" not in item:
            raise PayloadError("bad_shape", "field 'value' is missing")
        value = _number(item["value"], "value")
        unit = item.get("unit", "m" if t.kind == "level" else "mm")
        if t.kind == "level":
            if unit not in _LEVEL_UNITS:
                raise PayloadError("bad_unit", f"unit {str(unit)[:20]!r} is not m, cm or mm")
            value *= _LEVEL_UNITS[unit]
        elif unit != "mm":
            raise PayloadError("bad_unit", f"rainfall unit {str(unit)[:20]!r} is not mm")
        ts = parse_time(item.get("ts"), now=now, max_future=self.max_future)
        return Reading(t.station, t.kind, ts, _plausible(t.kind, value), _exercise(item.get("exercise")),
                       _seq(item.get("seq")))

    def _telemetry(self, t: Topic, item: dict[str, Any], now: datetime) -> list[Reading]:
        ts = parse_time(item.get("ts"), now=now, max_future=self.max_future)
        values = item.get("values", item)
        if not isinstance(values, dict):
            raise PayloadError("bad_shape", "field 'values' is not an object")
        exercise, seq = _exercise(item.get("exercise")), _seq(item.get("seq"))
        out = []
        for name in TELEMETRY_FIELDS:
            if name not in values:
                continue
            raw = values[name]
            if name == "status":
                if raw not in STATUS_CODES:
                    raise PayloadError("bad_value", f"status {str(raw)[:20]!r} is not one of {', '.join(STATUS_CODES)}")
                value = float(STATUS_CODES[raw])
            else:
                value = _plausible(name, _number(raw, name))
            out.append(Reading(t.station, name, ts, value, exercise, seq))
        if not out:
            raise PayloadError("bad_shape", f"telemetry has none of {', '.join(TELEMETRY_FIELDS)}")
        return out

    def _senml(self, t: Topic, doc: Any, now: datetime) -> Parsed:
        if not isinstance(doc, list) or not doc:
            raise PayloadError("bad_senml", "a SenML pack is a non-empty JSON array")
        readings: list[Reading] = []
        problems: list[PayloadError] = []
        bn, bt, bu, exercise = "", 0.0, None, False
        now_s = now.timestamp()
        latest = now_s + self.max_future.total_seconds()
        valid_stations: set[str] = set()  # a pack names few stations: check each once
        for index, rec in enumerate(doc):
            try:
                if type(rec) is not dict:
                    raise PayloadError("bad_senml", f"record {index} is not an object")
                if not _SENML_PLAIN_KEYS.issuperset(rec):  # base fields or extensions: the full path
                    if "bn" in rec:
                        if not isinstance(rec["bn"], str):
                            raise PayloadError("bad_senml", f"record {index}: bn is not a string")
                        bn = rec["bn"]
                    if "bt" in rec:
                        bt = _number(rec["bt"], "bt")
                    if "bu" in rec:
                        bu = rec["bu"]
                    if "exercise_" in rec:
                        exercise = _exercise(rec["exercise_"])
                    if "n" not in rec and not bn:
                        raise PayloadError("bad_senml", f"record {index} has no name")
                name = bn + str(rec.get("n", ""))
                station, _, kind = name.rpartition("/")
                station = station or t.station
                if station not in valid_stations:
                    if not STATION_ID.match(station):
                        raise PayloadError("bad_senml", f"record {index}: station {station[:64]!r} is not a valid id")
                    valid_stations.add(station)
                units = _SENML_UNITS.get(kind)
                if units is None:
                    raise PayloadError("bad_senml", f"record {index}: unknown measurement {kind[:40]!r}")
                unit = rec.get("u", bu if bu is not None else next(iter(units)))
                if kind == "status":
                    raw = rec.get("vs")
                    if raw not in STATUS_CODES:
                        raise PayloadError("bad_value", f"record {index}: status {str(raw)[:20]!r} is unknown")
                    value = float(STATUS_CODES[raw])
                else:
                    if "v" not in rec:
                        raise PayloadError("bad_senml", f"record {index} has no numeric value 'v'")
                    factor = units.get(unit) if isinstance(unit, str) else None
                    if factor is None:
                        raise PayloadError("bad_unit", f"record {index}: unit {str(unit)[:20]!r} not accepted for {kind}")
                    value = _plausible(kind, _number(rec["v"], "v") * factor)
                t_rel = rec.get("t", 0)
                if type(t_rel) is not float and type(t_rel) is not int:
                    t_rel = _number(t_rel, "t")
                when = bt + t_rel
                if when < 2**28:  # relative to now
                    when = now_s + when
                if not 946684800.0 <= when <= latest:  # 2000-01-01 .. now + max_future (NaN fails too)
                    ts = parse_time(when, now=now, max_future=self.max_future)  # raises the precise error
                else:
                    ts = datetime.fromtimestamp(when, tz=UTC)
                readings.append(Reading(station, kind, ts, value, exercise, None))
            except PayloadError as exc:
                problems.append(exc)
        if not readings:
            raise problems[0]
        return Parsed(readings, problems)


def encode_reading(*, value: float, ts: datetime | float, unit: str = "m", seq: int | None = None,
                   exercise: bool = False) -> bytes:
    """The JSON payload of one ``level``/``rain`` reading, as devices and simulators send it."""
    stamp = ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if isinstance(ts, datetime) else ts
    body: dict[str, Any] = {"ts": stamp, "value": round(value, 4), "unit": unit}
    if seq is not None:
        body["seq"] = seq
    if exercise:
        body["exercise"] = True
    return json.dumps(body, separators=(",", ":")).encode()
