"""Scenario files: what a simulation run contains, in TOML (read with the standard ``tomllib``).

Every error names the key it is about (``rivers[0].reaches[2].lag: …``). Durations are seconds or
strings such as ``"90s"``, ``"10m"``, ``"6h"``, ``"2d"``. The format, with every key, is documented in
``docs/scenarios/README.md``; the examples there are tested.

Sections
--------
``[scenario]``      name, seed, duration, accel (a number or ``"max"``), exercise, municipality, dt
``[[storms]]``      start, duration, peak_mm_h, shape (``triangle``/``block``), peak_at
``[[rivers]]``      id, name, rain_factor, and ``[[rivers.reaches]]`` upstream → downstream:
                    station, name, area_km2, runoff_coeff, k, lag, k_route, base_flow, rating
                    {h0, a, b}, thresholds {standby, caution, evacuation, danger | obs_start, crisis,
                    overflow}, interval, reporting (``interval``/``exception``), noise_m, lat, lon,
                    municipality
``[[rain_gauges]]`` station, name, river (whose rain it measures), interval, municipality
``[telemetry]``     interval, battery_start_pct, drain_pct_per_day, drain_pct_per_message
``[[load]]``        count, prefix, kind (level/rain), interval, river, municipality, telemetry
``[replay]``        format (``jiseiji``/``mlit``/``area_info``), path, start, end, stations, limit
``[[faults]]``      type, devices (globs), kinds, start, end, probability, and per type:
                    magnitude (spike), copies (flood), delay (late), skew (clock_skew),
                    gap (duplicate), variant (malformed)
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest.contract import STATION_ID, STATION_ID_RULE
from simulators.hydrology import Rating, Reach, Storm
from simulators.replay import ReplayError, replay_file
from sonae.japantime import JST, parse_iso_time
from sonae.municipality_code import MunicipalityCodeError, normalise

FAULT_TYPES = ("dropout", "stuck", "spike", "duplicate", "out_of_order", "late", "clock_skew", "malformed",
               "flood")
MALFORMED_VARIANTS = ("bad_json", "no_value", "not_a_number", "bad_unit", "not_utf8", "bad_topic")
REPLAY_FORMATS = ("jiseiji", "mlit", "area_info")
DEFAULT_MUNICIPALITY = "072036"  # 郡山市

_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|min|s|m|h|d))+\Z|^\d+(?:\.\d+)?\Z")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|min|s|m|h|d)?")
_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


class ScenarioError(ValueError):
    """An invalid scenario; the message starts with the offending key."""


def parse_duration(raw: Any, where: str) -> float:
    if isinstance(raw, bool):
        raise ScenarioError(f"{where}: {raw!r} is not a duration (e.g. 90, '90s', '10m', '1h30m', '2d')")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str) and _DURATION.match(raw.replace(" ", "")):
        value = sum(float(n) * _UNITS[u or None] for n, u in _DURATION_PART.findall(raw.replace(" ", "")))
    else:
        raise ScenarioError(f"{where}: {raw!r} is not a duration (e.g. 90, '90s', '10m', '1h30m', '2d')")
    if not math.isfinite(value) or value < 0:
        raise ScenarioError(f"{where}: {raw!r} must be a finite, non-negative duration")
    return value


class _Table:
    """A TOML table with its path, typed getters, and a check for unknown keys."""

    def __init__(self, raw: Any, where: str) -> None:
        if not isinstance(raw, dict):
            raise ScenarioError(f"{where}: expected a table, got {type(raw).__name__}")
        self.raw = raw
        self.where = where
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, default: Any = None) -> Any:
        self.used.add(name)
        return self.raw.get(name, default)

    def has(self, name: str) -> bool:
        return name in self.raw

    def text(self, name: str, default: str | None = None, *, required: bool = False,
            choices: tuple[str, ...] | None = None) -> str:
        value = self.get(name, default)
        if value is None:
            if required:
                raise ScenarioError(f"{self.key(name)}: is required")
            return ""
        if not isinstance(value, str):
            raise ScenarioError(f"{self.key(name)}: expected a string, got {value!r}")
        if choices and value not in choices:
            raise ScenarioError(f"{self.key(name)}: {value!r} is not one of {', '.join(choices)}")
        return value

    def num(self, name: str, default: float | None = None, *, required: bool = False, low: float | None = None,
            high: float | None = None) -> float:
        value = self.get(name, default)
        if value is None:
            if required:
                raise ScenarioError(f"{self.key(name)}: is required")
            raise ScenarioError(f"{self.key(name)}: is required")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ScenarioError(f"{self.key(name)}: expected a number, got {value!r}")
        if low is not None and value < low:
            raise ScenarioError(f"{self.key(name)}: {value} is below {low}")
        if high is not None and value > high:
            raise ScenarioError(f"{self.key(name)}: {value} is above {high}")
        return float(value)

    def opt_num(self, name: str) -> float | None:
        return self.num(name) if self.has(name) else None

    def integer(self, name: str, default: int | None = None, *, low: int | None = None) -> int:
        value = self.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ScenarioError(f"{self.key(name)}: expected an integer, got {value!r}")
        if low is not None and value < low:
            raise ScenarioError(f"{self.key(name)}: {value} is below {low}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name, default)
        if not isinstance(value, bool):
            raise ScenarioError(f"{self.key(name)}: expected true or false, got {value!r}")
        return value

    def duration(self, name: str, default: Any = None, *, required: bool = False) -> float:
        value = self.get(name, default)
        if value is None:
            raise ScenarioError(f"{self.key(name)}: is required")
        return parse_duration(value, self.key(name))

    def array(self, name: str) -> list[Any]:
        value = self.get(name, [])
        if not isinstance(value, list):
            raise ScenarioError(f"{self.key(name)}: expected an array, got {type(value).__name__}")
        return value

    def strings(self, name: str, default: list[str] | None = None) -> list[str]:
        value = self.get(name, default if default is not None else [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ScenarioError(f"{self.key(name)}: expected a string or an array of strings")
        return list(value)

    def table(self, name: str) -> _Table:
        return _Table(self.get(name, {}), self.key(name))

    def tables(self, name: str) -> list[_Table]:
        return [_Table(item, f"{self.key(name)}[{i}]") for i, item in enumerate(self.array(name))]

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.used)
        if unknown:
            raise ScenarioError(f"{self.key(unknown[0])}: unknown key (known: {', '.join(sorted(self.used))})")


def _station_id(t: _Table, name: str = "station") -> str:
    value = t.text(name, required=True)
    if not STATION_ID.match(value):
        raise ScenarioError(f"{t.key(name)}: {value!r} is not a station id ({STATION_ID_RULE})")
    return value


def _municipality(t: _Table, default: str) -> str:
    """The table's 団体コード in the 6-digit form (5 digits get their check digit)."""
    value = t.text("municipality", default)
    try:
        return normalise(value)
    except MunicipalityCodeError as exc:
        raise ScenarioError(f"{t.key('municipality')}: {exc}") from None


THRESHOLD_KEYS = {"standby": "th_standby", "caution": "th_caution", "evacuation": "th_evacuation",
                  "danger": "th_danger", "obs_start": "th_obs_start", "crisis": "th_crisis",
                  "overflow": "th_overflow"}


@dataclass(frozen=True)
class GaugeSpec:
    """A level gauge on a river reach."""

    reach: Reach
    name: str
    municipality: str
    interval_s: float = 600.0
    reporting: str = "interval"  # interval | exception (危機管理型水位計)
    noise_m: float = 0.005
    thresholds: dict[str, float] = field(default_factory=dict)  # registry field name → metres
    lat: float | None = None
    lon: float | None = None

    @property
    def station(self) -> str:
        return self.reach.station

    @property
    def gauge_type(self) -> str:
        return "crisis" if any(k in self.thresholds for k in ("th_obs_start", "th_crisis", "th_overflow")) \
            else "flood_forecast"


@dataclass(frozen=True)
class RiverSpec:
    id: str
    name: str
    gauges: tuple[GaugeSpec, ...]
    rain_factor: float = 1.0


@dataclass(frozen=True)
class RainGaugeSpec:
    station: str
    name: str
    river: str
    municipality: str
    interval_s: float = 600.0
    noise: float = 0.1  # multiplicative, log-normal sigma


@dataclass(frozen=True)
class TelemetrySpec:
    interval_s: float = 3600.0
    battery_start_pct: float = 95.0
    drain_pct_per_day: float = 0.4
    drain_pct_per_message: float = 0.002
    enabled: bool = True


@dataclass(frozen=True)
class LoadSpec:
    """Many synthetic devices that mirror a river's gauges, for scale and benchmarks."""

    count: int
    prefix: str
    kind: str = "level"
    interval_s: float = 60.0
    river: str = ""
    municipality: str = DEFAULT_MUNICIPALITY
    telemetry: bool = False


@dataclass(frozen=True)
class ReplaySpec:
    format: str
    path: Path
    start: datetime | None = None
    end: datetime | None = None
    stations: tuple[str, ...] = ()
    limit: int = 0  # most stations (MLIT), 0 = all
    #: the 6-digit 団体コード every replayed gauge plays out in; None: simulators.replay.DEFAULT_PLACE
    municipality: str | None = None

    def __post_init__(self) -> None:
        # a window that ends before it starts replays nothing: said, not run (found: --from after --to)
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ScenarioError(f"replay: the start {self.start.isoformat()} is after the end {self.end.isoformat()} "
                                "(--from must not be after --to; [replay] start not after end)")


@dataclass(frozen=True)
class FaultSpec:
    type: str
    devices: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] = ("level", "rain", "telemetry")
    start_s: float = 0.0
    end_s: float = math.inf
    probability: float = 1.0
    magnitude: float = 5.0  # spike: metres (level) or mm (rain) added
    copies: int = 20  # flood: identical messages per reading
    delay_s: float = 1800.0  # late: delivery delay in scenario time
    skew_s: float = 3600.0  # clock_skew: added to the reading's timestamp
    gap_s: float = 0.0  # duplicate: delay of the copy
    variant: str = ""  # malformed: one of MALFORMED_VARIANTS, or "" to rotate through them
    index: int = 0

    def active(self, t: float) -> bool:
        return self.start_s <= t < self.end_s


@dataclass(frozen=True)
class Scenario:
    name: str = "scenario"
    seed: int = 1
    duration_s: float = 86400.0
    accel: float = 60.0  # math.inf = as fast as possible
    exercise: bool = True
    municipality: str = DEFAULT_MUNICIPALITY
    dt_s: float = 60.0
    storms: tuple[Storm, ...] = ()
    rivers: tuple[RiverSpec, ...] = ()
    rain_gauges: tuple[RainGaugeSpec, ...] = ()
    telemetry: TelemetrySpec = field(default_factory=TelemetrySpec)
    load: tuple[LoadSpec, ...] = ()
    replay: ReplaySpec | None = None
    faults: tuple[FaultSpec, ...] = ()
    source: str = ""

    def with_overrides(self, **changes: Any) -> Scenario:
        from dataclasses import replace

        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _accel(t: _Table) -> float:
    raw = t.get("accel", 60.0)
    if raw == "max":
        return math.inf
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not raw > 0 or not math.isfinite(raw):
        raise ScenarioError(f"{t.key('accel')}: expected a positive number or \"max\", got {raw!r}")
    return float(raw)


def _time(t: _Table, name: str) -> datetime | None:
    raw = t.get(name)
    if raw is None:
        return None
    # without an offset (a string or a TOML local date-time) the time is Japan time (sonae.japantime)
    try:
        if isinstance(raw, datetime):
            return (raw if raw.tzinfo else raw.replace(tzinfo=JST)).astimezone(UTC)
        if isinstance(raw, str):
            return parse_iso_time(raw)
    except (ValueError, OverflowError):  # OverflowError: 0001-01-01 in UTC
        raise ScenarioError(f"{t.key(name)}: {raw!r} is not an ISO 8601 time in range") from None
    raise ScenarioError(f"{t.key(name)}: expected a time, got {raw!r}")


def _gauge(t: _Table, municipality: str, prev: str | None) -> GaugeSpec:
    station = _station_id(t)
    rating_t = t.table("rating")
    rating = Rating(h0=rating_t.num("h0", 0.0), a=rating_t.num("a", 30.0, low=1e-6),
                    b=rating_t.num("b", 1.6, low=0.5, high=5.0))
    rating_t.done()
    th_t = t.table("thresholds")
    thresholds: dict[str, float] = {}
    for key, name in THRESHOLD_KEYS.items():
        if th_t.has(key):
            thresholds[name] = th_t.num(key)
    th_t.done()
    flood = [thresholds[k] for k in ("th_standby", "th_caution", "th_evacuation", "th_danger") if k in thresholds]
    crisis = [thresholds[k] for k in ("th_obs_start", "th_crisis", "th_overflow") if k in thresholds]
    if flood != sorted(flood) or crisis != sorted(crisis):
        raise ScenarioError(f"{th_t.where}: thresholds must rise (standby ≤ caution ≤ evacuation ≤ danger; "
                            "obs_start ≤ crisis ≤ overflow)")
    if flood and crisis:
        raise ScenarioError(f"{th_t.where}: use either the four flood-forecast thresholds or the three "
                            "危機管理型 ones, not both")
    reach = Reach(
        station=station, area_km2=t.num("area_km2", 100.0, low=0.0),
        runoff_coeff=t.num("runoff_coeff", 0.6, low=0.0, high=1.0),
        k_s=t.duration("k", "3h"), lag_s=t.duration("lag", 0 if prev is None else "30m"),
        k_route_s=t.duration("k_route", "30m"), base_flow_m3s=t.num("base_flow", 10.0, low=0.0), rating=rating,
    )
    reporting = t.text("reporting", "interval", choices=("interval", "exception"))
    if reporting == "exception" and "th_obs_start" not in thresholds:
        raise ScenarioError(f"{t.key('reporting')}: 'exception' (危機管理型) needs thresholds.obs_start")
    gauge = GaugeSpec(
        reach=reach, name=t.text("name", station), municipality=_municipality(t, municipality),
        interval_s=t.duration("interval", "10m"), reporting=reporting, noise_m=t.num("noise_m", 0.005, low=0.0),
        thresholds=thresholds, lat=t.opt_num("lat"), lon=t.opt_num("lon"),
    )
    if gauge.interval_s <= 0:
        raise ScenarioError(f"{t.key('interval')}: must be positive")
    t.done()
    return gauge


def _fault(t: _Table, index: int) -> FaultSpec:
    kind = t.text("type", required=True, choices=FAULT_TYPES)
    end = t.get("end")
    spec = FaultSpec(
        type=kind, devices=tuple(t.strings("devices", ["*"])),
        kinds=tuple(t.strings("kinds", ["level", "rain", "telemetry"])),
        start_s=t.duration("start", 0), end_s=math.inf if end is None else parse_duration(end, t.key("end")),
        probability=t.num("probability", 1.0, low=0.0, high=1.0), magnitude=t.num("magnitude", 5.0),
        copies=t.integer("copies", 20, low=1), delay_s=t.duration("delay", "30m"), skew_s=t.num("skew", 3600.0),
        gap_s=t.duration("gap", 0), variant=t.text("variant", "", choices=("", *MALFORMED_VARIANTS)), index=index,
    )
    for k in spec.kinds:
        if k not in ("level", "rain", "telemetry"):
            raise ScenarioError(f"{t.key('kinds')}: {k!r} is not level, rain or telemetry")
    if spec.end_s <= spec.start_s:
        raise ScenarioError(f"{t.key('end')}: must be after start")
    if isinstance(t.raw.get("skew"), str):
        raise ScenarioError(f"{t.key('skew')}: give seconds as a number (negative = behind)")
    t.done()
    return spec


def parse_scenario(doc: dict[str, Any], *, base_dir: Path | None = None, source: str = "",
                   replay_dir: str | Path | None = None, allow_paths: bool = True) -> Scenario:
    """Validate a parsed TOML document into a :class:`Scenario`.

    ``[replay] file = NAME`` names a file of the replay data directory ``replay_dir``
    (``simulators.data_dir``; see :func:`simulators.replay.replay_file`). ``[replay] path`` (a path,
    relative to ``base_dir``) is accepted only with ``allow_paths`` — for scenario files on the
    operator's own disk, never for documents received over the network.
    """
    root = _Table(doc, "")
    head = root.table("scenario")
    municipality = _municipality(head, DEFAULT_MUNICIPALITY)
    name = head.text("name", "scenario")
    seed = head.integer("seed", 1)
    duration = head.duration("duration", "24h")
    accel = _accel(head)
    exercise = head.flag("exercise", True)
    dt = head.duration("dt", 60)
    if dt <= 0:
        raise ScenarioError("scenario.dt: must be positive")
    head.done()

    storms = []
    for st in root.tables("storms"):
        storms.append(Storm(start_s=st.duration("start", 0), duration_s=st.duration("duration", required=True),
                            peak_mm_h=st.num("peak_mm_h", required=True, low=0.0, high=300.0),
                            shape=st.text("shape", "triangle", choices=("triangle", "block")),
                            peak_at=st.num("peak_at", 0.5, low=0.0, high=1.0)))
        st.done()

    rivers = []
    seen: set[str] = set()

    def claim(station: str, where: str) -> None:
        if station in seen:
            raise ScenarioError(f"{where}: station {station!r} appears twice")
        seen.add(station)

    for rt in root.tables("rivers"):
        gauges: list[GaugeSpec] = []
        for gt in rt.tables("reaches"):
            gauge = _gauge(gt, municipality, gauges[-1].station if gauges else None)
            claim(gauge.station, gt.key("station"))
            gauges.append(gauge)
        if not gauges:
            raise ScenarioError(f"{rt.key('reaches')}: a river needs at least one reach")
        rivers.append(RiverSpec(id=rt.text("id", required=True), name=rt.text("name", rt.raw.get("id", "")),
                                gauges=tuple(gauges), rain_factor=rt.num("rain_factor", 1.0, low=0.0)))
        rt.done()
    river_ids = [r.id for r in rivers]
    if len(set(river_ids)) != len(river_ids):
        raise ScenarioError("rivers: river ids must be unique")

    rain_gauges = []
    for gt in root.tables("rain_gauges"):
        station = _station_id(gt)
        claim(station, gt.key("station"))
        river = gt.text("river", river_ids[0] if river_ids else "")
        if river and river not in river_ids:
            raise ScenarioError(f"{gt.key('river')}: no river {river!r} (rivers: {', '.join(river_ids) or 'none'})")
        rain_gauges.append(RainGaugeSpec(station=station, name=gt.text("name", station), river=river,
                                         municipality=_municipality(gt, municipality),
                                         interval_s=gt.duration("interval", "10m"),
                                         noise=gt.num("noise", 0.1, low=0.0)))
        gt.done()

    tt = root.table("telemetry")
    telemetry = TelemetrySpec(interval_s=tt.duration("interval", "1h"),
                              battery_start_pct=tt.num("battery_start_pct", 95.0, low=0.0, high=100.0),
                              drain_pct_per_day=tt.num("drain_pct_per_day", 0.4, low=0.0),
                              drain_pct_per_message=tt.num("drain_pct_per_message", 0.002, low=0.0),
                              enabled=tt.flag("enabled", True))
    if telemetry.interval_s <= 0:
        raise ScenarioError("telemetry.interval: must be positive")
    tt.done()

    loads = []
    for lt in root.tables("load"):
        prefix = lt.text("prefix", "sim-load-")
        if not STATION_ID.match(prefix + "0"):
            raise ScenarioError(f"{lt.key('prefix')}: {prefix!r} does not make valid station ids")
        river = lt.text("river", river_ids[0] if river_ids else "")
        if not river or river not in river_ids:
            raise ScenarioError(f"{lt.key('river')}: load devices mirror a river's gauges; no river {river!r}")
        spec = LoadSpec(count=lt.integer("count", 100, low=1), prefix=prefix,
                        kind=lt.text("kind", "level", choices=("level", "rain")),
                        interval_s=lt.duration("interval", "1m"), river=river,
                        municipality=_municipality(lt, municipality), telemetry=lt.flag("telemetry", False))
        if spec.interval_s <= 0:
            raise ScenarioError(f"{lt.key('interval')}: must be positive")
        loads.append(spec)
        lt.done()

    replay = None
    if root.has("replay"):
        pt = root.table("replay")
        if pt.has("file") or not allow_paths:
            if pt.has("path"):
                raise ScenarioError(f"{pt.key('path')}: name the replay file with 'file = NAME' (a file of the "
                                    "replay data directory), not a path")
            try:
                path = replay_file(pt.text("file", required=True), data_dir=replay_dir)
            except ReplayError as exc:
                raise ScenarioError(f"{pt.key('file')}: {exc}") from None
        else:
            path = Path(pt.text("path", required=True))
            if not path.is_absolute() and base_dir is not None:
                path = (base_dir / path).resolve()
        replay = ReplaySpec(format=pt.text("format", required=True, choices=REPLAY_FORMATS), path=path,
                            start=_time(pt, "start"), end=_time(pt, "end"),
                            stations=tuple(pt.strings("stations")), limit=pt.integer("limit", 0, low=0),
                            municipality=_municipality(pt, "") if pt.has("municipality") else None)
        pt.done()

    faults = tuple(_fault(ft, i) for i, ft in enumerate(root.tables("faults")))
    root.done()
    if not rivers and not rain_gauges and replay is None:
        raise ScenarioError("rivers: a scenario needs rivers, rain_gauges or a replay")
    return Scenario(name=name, seed=seed, duration_s=duration, accel=accel, exercise=exercise,
                    municipality=municipality, dt_s=dt, storms=tuple(storms), rivers=tuple(rivers),
                    rain_gauges=tuple(rain_gauges), telemetry=telemetry, load=tuple(loads), replay=replay,
                    faults=faults, source=source)


def load_scenario(path: str | Path, *, replay_dir: str | Path | None = None) -> Scenario:
    """Read and validate a scenario file (a file of the operator's: ``[replay] path`` is allowed)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path.name}: not valid TOML ({exc})") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_scenario(doc, base_dir=path.parent, source=str(path), replay_dir=replay_dir)


def loads_scenario(text: str, *, base_dir: Path | None = None) -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"not valid TOML ({exc})") from None
    return parse_scenario(doc, base_dir=base_dir)
