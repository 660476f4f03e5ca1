"""The message contract between devices and Sonae: topics, payloads, units.

Topics
------
``{prefix}/{municipality}/{station}/{kind}``, with ``prefix`` = ``sonae/v1`` by default,
``municipality`` the 団体コード (6 digits with check digit, e.g. ``072036`` for Koriyama; the 5-digit
JIS X 0402 form ``07203`` is the same municipality, and a 6-digit code with a wrong check digit is
dead-lettered as ``bad_municipality_code``), ``station`` the registry id
(``[A-Za-z0-9_.-]{1,64}``, not dots only: :data:`STATION_ID`) and ``kind`` one of

* ``level``     — river water level (stage), stored in metres;
* ``rain``      — rainfall over the reporting interval, stored in millimetres;
* ``telemetry`` — device health: ``battery_pct``, ``battery_v``, ``rssi_dbm``, ``temperature_c``,
  ``status`` (``ok``, ``low_battery``, ``fault``, ``maintenance``);
* ``senml``     — a SenML JSON pack (RFC 8428) of any of the above, so a gateway can send many
  readings (and many stations) in one message.

Payloads (JSON, UTF-8)
----------------------
``level`` / ``rain``: ``{"ts": "2026-11-29T01:20:00Z", "value": 3.42, "unit": "m", "seq": 17}``;
``ts`` is ISO 8601 (without an offset: Japan time, JST) or epoch seconds; ``unit`` is optional (``m``/``cm``/``mm`` for
level, ``mm`` for rain); ``seq`` is an optional sequence number. A JSON array of such objects is a batch.

``telemetry``: ``{"ts": ..., "battery_pct": 87, "battery_v": 3.61, "rssi_dbm": -71,
"temperature_c": 12.5, "status": "ok"}`` (any subset; or nested under ``"values"``).

``senml``: ``[{"bn": "akutsu/", "bt": 1764379200, "n": "level", "u": "m", "v": 3.42},
{"n": "level", "t": 600, "v": 3.51}]``, resolved per RFC 8428 §4.6: name ``bn`` + ``n``, time
``bt`` + ``t``, unit ``u`` else ``bu``, value ``bv`` + ``v``, sum ``bs`` + ``s``; a base field holds
for its record and the ones after it until replaced. The resolved name is ``kind`` (station from the
topic) or ``station/kind``. Resolved times below 2**28 are relative to now (§4.5.3). A pack whose
``bver`` is above 10 (the version this parser implements, §4.4) is refused whole; an unknown field
ending in ``_`` (must-understand, §4.4) refuses its record. ``status`` is carried in ``vs``; a record
with only a sum (``s``) is refused, since Sonae stores values, not running totals.

Every payload may carry ``"exercise": true`` (SenML: ``"exercise_": true`` on a record, which applies
to it and the records after it): the readings belong to a drill and never raise a real alert.

No object of any payload may give a key twice (``{"n": "level", "n": "rain"}``: RFC 8259 leaves its meaning
open): the whole message is a ``duplicate_key`` dead letter naming the key and its JSON path (``$[2]``), by
the rule every reader of outside JSON shares (:mod:`sonae.jsonkeys`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sonae.japantime import parse_iso_time
from sonae.jsonkeys import DuplicateKeyError, locate, unique_object
from sonae.municipality_code import MunicipalityCodeError, normalise
from sonae.numbers import unsigned

# \Z, not $: "$" also matches before a final newline, which would let "abc\n" through as a station id.
# Not dots only (found: ".." was taken by the API and by `sonae devices add --station ..`, which wrote it into a
# Mosquitto ACL line; ".", ".." are path steps wherever an id becomes part of a path: URLs, files, ACLs).
#: the station-id rule, the one every entry applies (topics, the registry, the API, scenarios, provisioning)
STATION_ID = re.compile(r"^(?!\.+\Z)[A-Za-z0-9_.\-]{1,64}\Z")
#: :data:`STATION_ID` in words, for messages
STATION_ID_RULE = "1 to 64 of A-Z a-z 0-9 _ . - and not dots only"
#: :data:`STATION_ID` as a JSON Schema (ECMA-262) pattern, for the OpenAPI document
STATION_ID_JSON_PATTERN = "^(?!\\.+$)[A-Za-z0-9_.-]{1,64}$"

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
_EPOCH_MIN_S = _EPOCH_MIN.timestamp()
#: RFC 8428 §4.5.3: resolved SenML times below 2**28 are seconds relative to "now"
SENML_RELATIVE_BELOW = 2**28
#: RFC 8428 §4.4: the SenML version this parser implements (also the default of ``bver``)
SENML_VERSION = 10
_SENML_PLAIN_KEYS = frozenset({"n", "v", "vs", "u", "t"})  # records without base fields: the fast path
_SENML_FIELDS = frozenset({"bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut",
                           "exercise_"})
#: longest integer literal kept exact: int64 with its sign. Longer ones are read as floats (see decode_json).
_INT_CHARS = 20


def storable_text(text: str, limit: int = 2000) -> str:
    """``text`` cut to ``limit`` characters, with what PostgreSQL ``text`` cannot hold escaped.

    JSON strings may carry NUL and lone surrogates (``"\\u0000"``, ``"\\ud800"``); PostgreSQL refuses the
    first and UTF-8 cannot encode the second, so both are written as backslash escapes.
    """
    text = text[:limit]
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


class PayloadError(ValueError):
    """A message that cannot be stored; ``reason`` is a short code used as a metric label."""

    def __init__(self, reason: str, detail: str) -> None:
        detail = storable_text(detail)
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Topic:
    municipality: str  # always the 6-digit 団体コード
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
        raise PayloadError("bad_topic", f"topic {topic[:200]!r} is not under {prefix!r}")
    parts = topic[len(prefix) + 1:].split("/")
    if len(parts) != 3:
        raise PayloadError("bad_topic", f"topic {topic[:200]!r} is not {prefix}/<municipality>/<station>/<kind>")
    segment, station, kind = parts
    if not (segment.isascii() and segment.isdigit() and len(segment) in (5, 6)):
        raise PayloadError("bad_topic", f"municipality {segment[:20]!r} is not a 5- or 6-digit 団体コード")
    try:
        municipality = normalise(segment)
    except MunicipalityCodeError as exc:
        raise PayloadError("bad_municipality_code", str(exc)) from None
    if not STATION_ID.match(station):
        raise PayloadError("bad_topic", f"station id {station[:80]!r} is not {STATION_ID_RULE}")
    if kind not in TOPIC_KINDS:
        raise PayloadError("bad_topic", f"kind {kind[:40]!r} is not one of {', '.join(TOPIC_KINDS)}")
    return Topic(municipality, station, kind)


def _preview(raw: Any) -> str:
    """A short description of a decoded JSON value for an error detail (never the whole value).

    ``str()`` of a device's value is not safe here: a deeply nested list overflows the stack and an
    integer of more than 4,300 digits raises ``ValueError``.
    """
    if isinstance(raw, str):
        return repr(raw[:40])
    if raw is None or isinstance(raw, bool):
        return json.dumps(raw)
    if isinstance(raw, float):
        return repr(raw)
    if isinstance(raw, int):
        return repr(raw) if -10**20 < raw < 10**20 else f"(an integer of {raw.bit_length()} bits)"
    if isinstance(raw, list):
        return f"(a list, length {len(raw)})"
    if isinstance(raw, dict):
        return f"(an object, {len(raw)} fields)"
    return f"(a {type(raw).__name__})"


def _reject_constant(name: str) -> float:
    raise PayloadError("not_finite", f"{name} is not a finite number")


def _json_int(literal: str) -> int | float:
    """An integer literal of a payload: exact up to int64, else a float.

    Python refuses ``int()`` of more than 4,300 digits (``ValueError``, ``sys.int_info``) and
    ``float()`` of an int above 1.8e308 (``OverflowError``). No reading needs more than int64, so a
    longer literal is read as the float it denotes: ``1`` and 300 zeros is 1e300 (then refused as
    implausible), ``1`` and 309 zeros is ``inf`` (then refused as not finite).
    """
    return int(literal) if len(literal) <= _INT_CHARS else float(literal)


def decode_json(payload: bytes) -> Any:
    """The JSON document of a payload, or :class:`PayloadError` (``not_utf8``, ``bad_json``, ``not_finite``,
    ``duplicate_key``: a key given twice in one object at any depth, named with its JSON path; see
    :mod:`sonae.jsonkeys`)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError("not_utf8", f"payload is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        return json.loads(text, parse_int=_json_int, parse_constant=_reject_constant, object_pairs_hook=unique_object)
    except PayloadError:
        raise
    except DuplicateKeyError as exc:
        found = locate(exc, text, parse_int=_json_int, parse_constant=_reject_constant)
        raise PayloadError("duplicate_key", found.describe()) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; RecursionError: deep nesting
        raise PayloadError("bad_json", f"payload is not JSON ({str(exc)[:200]})") from None


def parse_time(raw: Any, *, now: datetime, max_future: timedelta) -> datetime:
    """A reading time: ISO 8601 (no offset: Japan time) or epoch seconds; in UTC, after 2000, not in the future."""
    if isinstance(raw, bool) or raw is None:
        raise PayloadError("bad_timestamp", f"timestamp {_preview(raw)} is missing or not a time")
    if isinstance(raw, int | float):
        try:
            seconds = float(raw)
        except OverflowError:
            raise PayloadError("bad_timestamp", f"timestamp {_preview(raw)} is out of range") from None
        if not math.isfinite(seconds):
            raise PayloadError("bad_timestamp", "timestamp is not finite")
        try:
            ts = datetime.fromtimestamp(seconds, tz=UTC)
        except (OverflowError, OSError, ValueError):
            raise PayloadError("bad_timestamp", f"timestamp {_preview(raw)} is out of range") from None
    elif isinstance(raw, str):
        if len(raw) > 64:
            raise PayloadError("bad_timestamp", f"timestamp {_preview(raw)} is not ISO 8601 (too long)")
        try:  # without an offset the time is Japan time (sonae.japantime: one rule for ingest and API)
            ts = parse_iso_time(raw)
        except ValueError:
            raise PayloadError("bad_timestamp", f"timestamp {_preview(raw)} is not ISO 8601") from None
        except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
            raise PayloadError("bad_timestamp", f"timestamp {_preview(raw)} is out of range") from None
    else:
        raise PayloadError("bad_timestamp", f"timestamp {_preview(raw)} is not a time")
    if ts > now + max_future:
        raise PayloadError("future_timestamp", f"timestamp {ts.isoformat()} is in the future")
    if ts < _EPOCH_MIN:
        raise PayloadError("bad_timestamp", f"timestamp {ts.isoformat()} is before 2000")
    return ts


def _number(raw: Any, what: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise PayloadError("bad_value", f"{what} {_preview(raw)} is not a number")
    try:
        value = float(raw)
    except OverflowError:
        raise PayloadError("not_finite", f"{what} {_preview(raw)} is beyond the range of a float") from None
    if not math.isfinite(value):
        raise PayloadError("not_finite", f"{what} is not a finite number")
    return unsigned(value)


#: decimal places a value keeps after a unit's factor or a SenML base value is applied (:func:`_decimal`)
_SCALED_DIGITS = 9


def _decimal(value: float) -> float:
    """A value computed from decimals (a unit's factor, a SenML base value plus a value) as the decimal it stands
    for: rounded to a nanometre (a nanometre of rain), far below any sensor's resolution and far above binary
    floating point's error. Found: ``560 * 0.01`` is 5.6000000000000005, stored and shown so, and the same
    stage sent as 5.6 m was a ``conflicting_value`` dead letter."""
    return round(value, _SCALED_DIGITS) if math.isfinite(value) else value


def _plausible(kind: str, value: float) -> float:
    if not math.isfinite(value):
        raise PayloadError("not_finite", f"{kind} is not a finite number")
    low, high = PLAUSIBLE[kind]
    if not low <= value <= high:
        raise PayloadError("implausible_value", f"{kind} {value} is outside {low}..{high}")
    return unsigned(value)  # (a unit's factor times a zero: still no negative zero stored)


def _factor(raw: Any, units: dict[str, float], what: str) -> float:
    """The factor of a unit to the stored unit; a unit that is not a known string is ``bad_unit``."""
    factor = units.get(raw) if isinstance(raw, str) else None
    if factor is None:
        accepted = ", ".join(repr(u) for u in units)
        raise PayloadError("bad_unit", f"{what} {_preview(raw)} is not one of {accepted}")
    return factor


def _status(raw: Any, what: str) -> float:
    if not isinstance(raw, str) or raw not in STATUS_CODES:
        raise PayloadError("bad_value", f"{what} {_preview(raw)} is not one of {', '.join(STATUS_CODES)}")
    return float(STATUS_CODES[raw])


def _seq(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or not 0 <= raw < 2**63:
        raise PayloadError("bad_value", f"seq {_preview(raw)} is not a non-negative integer")
    return raw


def _exercise(raw: Any) -> bool:
    if raw is None:
        return False
    if not isinstance(raw, bool):
        raise PayloadError("bad_value", f"exercise {_preview(raw)} is not true/false")
    return raw


def _senml_version(doc: list[Any]) -> None:
    """Refuse a pack whose ``bver`` this parser does not implement (RFC 8428 §4.4: MUST NOT use it)."""
    for index, rec in enumerate(doc):
        if type(rec) is not dict or "bver" not in rec:
            continue
        raw = rec["bver"]
        if isinstance(raw, bool) or not isinstance(raw, int | float) or not (
                math.isfinite(raw) and raw == int(raw) and raw >= 1):
            raise PayloadError("bad_senml", f"record {index}: bver {_preview(raw)} is not a positive integer")
        if raw > SENML_VERSION:
            raise PayloadError("unsupported_senml_version",
                               f"record {index}: bver {int(raw)} is newer than SenML version {SENML_VERSION} "
                               f"that Sonae implements (RFC 8428); send version {SENML_VERSION} or leave bver out")


class _SenmlBase:
    """The base fields in force while a pack is read (RFC 8428 §4.1, §4.6).

    A base field holds for its record and every record after it until replaced. A base field with a
    bad value is remembered as broken: the records after it fail too (naming it) until it is replaced,
    rather than silently resolving against the previous base (another station, time or offset).
    """

    __slots__ = ("bn", "bt", "bu", "bv", "bs", "exercise", "broken")

    def __init__(self) -> None:
        self.bn = ""
        self.bt = 0.0
        self.bu: str | None = None
        self.bv = 0.0
        self.bs = 0.0
        self.exercise = False
        self.broken: dict[str, PayloadError] = {}

    def update(self, rec: dict[str, Any], index: int) -> None:
        for key in ("bn", "bt", "bu", "bv", "bs", "exercise_"):
            if key not in rec:
                continue
            raw = rec[key]
            try:
                if key in ("bn", "bu"):
                    if not isinstance(raw, str):
                        raise PayloadError("bad_senml", f"{key} {_preview(raw)} is not a string")
                    setattr(self, key, raw)
                elif key == "exercise_":
                    self.exercise = _exercise(raw)
                else:
                    setattr(self, key, _number(raw, key))
                self.broken.pop(key, None)
            except PayloadError as exc:
                self.broken[key] = PayloadError(exc.reason, f"base field of record {index}: {exc.detail}")

    def check(self, index: int) -> None:
        if self.broken:
            key, exc = next(iter(self.broken.items()))
            raise PayloadError(exc.reason, f"record {index} resolves against a bad {key} ({exc.detail})")


class Parser:
    """Turns MQTT messages into readings, applying the contract above.

    Total: for any bytes on any topic :meth:`parse` returns readings or raises :class:`PayloadError`
    (tests/test_contract_property.py holds it to that).
    """

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
                    raise PayloadError("bad_shape", f"expected a JSON object, got {_preview(item)}")
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
        if t.kind == "level":
            factor = _factor(item.get("unit", "m"), _LEVEL_UNITS, "unit")
            if factor != 1.0:
                value = _decimal(value * factor)
        else:
            _factor(item.get("unit", "mm"), {"mm": 1.0}, "rainfall unit")
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
                value = _status(raw, "status")
            else:
                value = _plausible(name, _number(raw, name))
            out.append(Reading(t.station, name, ts, value, exercise, seq))
        if not out:
            raise PayloadError("bad_shape", f"telemetry has none of {', '.join(TELEMETRY_FIELDS)}")
        return out

    def _senml(self, t: Topic, doc: Any, now: datetime) -> Parsed:
        if not isinstance(doc, list) or not doc:
            raise PayloadError("bad_senml", "a SenML pack is a non-empty JSON array")
        _senml_version(doc)
        readings: list[Reading] = []
        problems: list[PayloadError] = []
        base = _SenmlBase()
        bn, bt, bv, exercise, broken = base.bn, base.bt, base.bv, base.exercise, False  # hot-loop copies
        now_s = now.timestamp()
        latest = now_s + self.max_future.total_seconds()
        # resolved name → (station, kind, units, default unit): a pack repeats few names, check each once
        names: dict[str, tuple[str, str, dict[str, float], str]] = {}
        for index, rec in enumerate(doc):
            try:
                if type(rec) is not dict:
                    raise PayloadError("bad_senml", f"record {index} is {_preview(rec)}, not an object")
                plain = _SENML_PLAIN_KEYS.issuperset(rec)
                if not plain:  # base fields or extensions: the full path
                    base.update(rec, index)
                    bn, bt, bv, exercise, broken = base.bn, base.bt, base.bv, base.exercise, bool(base.broken)
                    unknown = [k for k in rec if k.endswith("_") and k not in _SENML_FIELDS]
                    if unknown:  # RFC 8428 §4.4: a must-understand field we do not know is an error
                        raise PayloadError("bad_senml", f"record {index}: must-understand field "
                                                        f"{unknown[0][:40]!r} is not supported")
                if broken:
                    base.check(index)
                n = rec.get("n", "")
                if type(n) is not str:
                    raise PayloadError("bad_senml", f"record {index}: n {_preview(n)} is not a string")
                name = bn + n
                known = names.get(name)
                if known is None:
                    known = names[name] = self._senml_name(name, index, t)
                station, kind, units, default_unit = known
                v = rec.get("v")
                unit = rec["u"] if "u" in rec else base.bu if base.bu is not None else default_unit
                factor = units.get(unit) if type(unit) is str else None
                if (plain and (type(v) is float or type(v) is int) and factor is not None and "vs" not in rec
                        and kind != "status"):
                    # the common record (n, v, u, t): resolved inline; anything else takes the checked path
                    value = (bv + v) * factor
                    if bv or factor != 1.0:
                        value = _decimal(value)
                    low, high = PLAUSIBLE[kind]
                    if not low <= value <= high:  # NaN and inf fail too
                        value = _plausible(kind, value)
                else:
                    value = self._senml_value(rec, index, kind, units, base)
                t_rel = rec.get("t", 0)
                when = bt + (t_rel if type(t_rel) is int or type(t_rel) is float else _number(t_rel, "t"))
                if when < SENML_RELATIVE_BELOW:  # RFC 8428 §4.5.3: relative to now (negative: in the past)
                    when = now_s + when
                if not _EPOCH_MIN_S <= when <= latest:  # 2000-01-01 .. now + max_future (NaN and inf fail too)
                    ts = parse_time(when, now=now, max_future=self.max_future)  # raises the precise error
                else:
                    ts = datetime.fromtimestamp(when, tz=UTC)
                readings.append(Reading(station, kind, ts, value, exercise, None))
            except PayloadError as exc:
                problems.append(exc)
        if not readings:
            raise problems[0]
        return Parsed(readings, problems)

    @staticmethod
    def _senml_name(name: str, index: int, t: Topic) -> tuple[str, str, dict[str, float], str]:
        """Station, measurement, accepted units and default unit of a resolved SenML name."""
        if not name:
            raise PayloadError("bad_senml", f"record {index} has no name")
        station, _, kind = name.rpartition("/")
        station = station or t.station
        if not STATION_ID.match(station):
            raise PayloadError("bad_senml", f"record {index}: station {station[:64]!r} is not a valid id")
        units = _SENML_UNITS.get(kind)
        if units is None:
            raise PayloadError("bad_senml", f"record {index}: unknown measurement {kind[:40]!r}")
        return station, kind, units, next(iter(units))

    @staticmethod
    def _senml_value(rec: dict[str, Any], index: int, kind: str, units: dict[str, float], base: _SenmlBase) -> float:
        """The resolved value of one record in Sonae's unit: ``(bv + v)`` in ``u`` (else ``bu``)."""
        if kind == "status":
            if "v" in rec or "s" in rec:
                raise PayloadError("bad_senml", f"record {index}: status is a string value 'vs', not 'v'/'s'")
            return _status(rec.get("vs"), f"record {index}: status")
        for other in ("vs", "vb", "vd"):
            if other in rec:
                raise PayloadError("bad_senml", f"record {index}: {kind} takes a numeric value 'v', not {other!r}")
        if "s" in rec:  # resolve and check the sum even though Sonae does not store it
            total = base.bs + _number(rec["s"], f"record {index}: s")
            if not math.isfinite(total):
                raise PayloadError("not_finite", f"record {index}: bs + s is not a finite number")
        if "v" not in rec:
            if "s" in rec:
                raise PayloadError("bad_senml", f"record {index} carries only a sum 's'; Sonae stores values 'v' "
                                                f"(rain as millimetres per report), not running totals")
            raise PayloadError("bad_senml", f"record {index} has no numeric value 'v'")
        unit = rec["u"] if "u" in rec else base.bu if base.bu is not None else next(iter(units))
        factor = _factor(unit, units, f"record {index}: unit for {kind}")
        value = (base.bv + _number(rec["v"], f"record {index}: v")) * factor
        return _plausible(kind, _decimal(value) if base.bv or factor != 1.0 else value)


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
