"""Replaying real gauge series: the 持世寺 10-minute CSV, MLIT 川の水位情報 rows and snapshots.

Formats (see ``shared/data/PROVENANCE.md``):

* **持世寺** (厚東川, Yamaguchi; a real flood peaking at 7.47 m on 2023-07-01 04:40 JST): UTF-8 CSV with a
  BOM, ``時刻`` in JST as ``YYYY/MM/DD HH:MM``, the stage in ``水位_水位``. A 0.0 stage is a missing value
  (the gauge never reads exactly zero in this record) and is not published.
* **MLIT rows**: one row per (station, observation time) from the hourly ``area_info`` feed, with the
  危機管理型 thresholds ``start_level_m``/``warn_level_m``/``flood_level_m``.
* **MLIT area_info snapshot**: the raw JSON ``{generatedAt, …, items[]}``.

Files may be gzipped (``.gz``). Series come back as ``(datetime UTC, value)`` in time order; the fleet
replays them with the scenario's acceleration (see :mod:`simulators.fleet` for the time mapping).

Where a replay plays out (:func:`placed`): a replayed gauge is published and registered in a municipality this
deployment covers, where staff can act on its alerts. The 持世寺 gauge is in 宇部市 (352021), outside the area
Sonae covers by default (Fukushima's boundaries; ``ingest.municipalities.uncovered``), so a 持世寺 replay plays
out in the drill town (:data:`~sonae.municipality_code.DRILL_TOWN_CODE`, 079995, exercises only, inside
郡山市) unless the operator names a covered municipality (``--municipality CODE``, ``[replay] municipality``);
MLIT gauges keep their own municipality (the shipped MLIT rows are Fukushima's) unless one is named. Found:
``sonae simulate --replay jiseiji --register-stations`` was refused ("outside the area Sonae covers") once
the registry checked coverage, so the documented drill did not start.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TextIO, cast

from ingest.registry import Station
from sonae.csvrows import CsvShapeError, shaped_rows
from sonae.japantime import parse_iso_time
from sonae.jsonkeys import loads_unique
from sonae.municipality_code import DRILL_TOWN_CENTER, DRILL_TOWN_CODE

JST = timezone(timedelta(hours=9), "JST")
JISEIJI_ID = "yamaguchi-kotogawa-jiseiji"
JISEIJI_MUNICIPALITY = "352021"  # 宇部市
#: 持世寺 thresholds as stated by dobocreate/kotogawa-monitor-streamlit (gauge_thresholds_…csv)
JISEIJI_THRESHOLDS = {"th_standby": 3.80, "th_caution": 5.00, "th_evacuation": 5.10, "th_danger": 5.50}
_LABELS = {"水防団待機水位": "th_standby", "氾濫注意水位": "th_caution", "避難判断水位": "th_evacuation",
           "氾濫危険水位": "th_danger"}


class ReplayError(ValueError):
    """A replay file that cannot be read; the message names the file and line, never its content
    (a file's text in an error would leak whatever file was named, to whoever asked)."""


class PlacementError(ReplayError):
    """A replay that cannot play out where it is placed (:func:`placed`): a real run in the drill town."""


#: the shared data set's folder, beside a checkout
_SHARED_DATA = Path("shared") / "data"


def shared_data_dir(start: Path | None = None) -> Path:
    """The shared data set (``shared/data``) beside the checkout or beside one of its parent folders, the nearest
    first, else where it would be beside the checkout (a missing file is then named with the setting that points
    elsewhere). Also the tests' rule (``tests/conftest.py``, after ``$SONAE_SHARED_DATA``).

    ``start`` is this module's file (a parameter for tests). Found: only the folder beside the checkout was looked
    at, so in a git worktree (``wt/NAME`` beside the main checkout) ``sonae simulate --replay mlit`` and the shipped
    ``docs/scenarios/*-replay.toml`` said the shared data set's files did not exist.
    """
    checkout = (start or Path(__file__)).resolve().parents[1]
    for folder in checkout.parents:
        if (folder / _SHARED_DATA).is_dir():
            return folder / _SHARED_DATA
    return checkout.parent / _SHARED_DATA


def default_data_dir(start: Path | None = None) -> Path:
    """Where replay files are looked up by name when ``simulators.data_dir`` is empty: the shared data set's
    ``river_levels`` (:func:`shared_data_dir`)."""
    return shared_data_dir(start) / "river_levels"


DEFAULT_DATA_DIR = default_data_dir()
REPLAY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def replay_file(name: str, *, data_dir: str | Path | None = None) -> Path:
    """The replay file called ``name`` in the data directory (``simulators.data_dir``).

    Only a plain file name is accepted — no directories, no ``..``, no absolute paths — and the file
    must be a regular file directly inside the directory (a symbolic link leading elsewhere is refused).

    Raises
    ------
    ReplayError
        For anything but the name of a regular file of the directory.
    """
    if not isinstance(name, str) or not REPLAY_NAME.fullmatch(name):
        raise ReplayError("a replay file is named by its file name in the replay data directory "
                          "(letters, digits, '.', '_', '-'), never by a path")
    base = Path(data_dir or DEFAULT_DATA_DIR).resolve()
    path = (base / name).resolve()
    if path.parent != base or not path.is_file():
        raise ReplayError(f"no replay file {name!r} in the replay data directory (SONAE_SIMULATORS_DATA_DIR)")
    return path


def _finite(raw: Any) -> float:
    """A stage or threshold as a finite float; ``ValueError`` for NaN, infinities, numbers beyond a float
    (``OverflowError`` of a huge integer) and anything that is not a number (lists, objects)."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ValueError(f"{type(raw).__name__} is not a number")
    try:
        value = float(raw)
    except OverflowError:
        raise ValueError("number beyond the range of a float") from None
    if not math.isfinite(value):
        raise ValueError(f"{str(raw)[:40]!r} is not a finite number")
    return value


def _open_text(path: Path) -> TextIO:
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
        return io.StringIO(raw.decode("utf-8-sig"))
    except (OSError, EOFError, UnicodeDecodeError) as exc:  # BadGzipFile is an OSError
        raise ReplayError(f"{path.name}: cannot be read as UTF-8 text ({type(exc).__name__})") from None


def _shaped(reader: csv.DictReader[str], path: Path) -> Iterator[dict[str, str]]:
    """The rows of a replay CSV, each one cell per column (:func:`sonae.csvrows.shaped_rows`; a shifted row
    would replay one stage as another), the refusal a :class:`ReplayError` that quotes nothing of the file."""
    try:
        yield from shaped_rows(reader, source=path.name, quote=False)
    except CsvShapeError as exc:
        raise ReplayError(str(exc)) from None


@dataclass(frozen=True)
class Series:
    """One station's readings to replay."""

    station: Station
    points: list[tuple[datetime, float]]

    def window(self, start: datetime | None, end: datetime | None) -> Series:
        pts = [(t, v) for t, v in self.points if (start is None or t >= start) and (end is None or t <= end)]
        return Series(self.station, pts)


# -- 持世寺 ---------------------------------------------------------------------------------------------
def read_jiseiji(path: str | Path) -> list[tuple[datetime, float]]:
    """(UTC time, stage m) of the 持世寺 10-minute CSV, missing (0.0 or empty) values left out."""
    path = Path(path)
    out = []
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "時刻" not in reader.fieldnames or "水位_水位" not in reader.fieldnames:
            raise ReplayError(f"{path.name}: expected columns 時刻 and 水位_水位 (not a 持世寺 series)")
        for i, row in enumerate(_shaped(reader, path), start=2):
            raw = (row["水位_水位"] or "").strip()
            if not raw:
                continue
            try:
                ts = datetime.strptime(row["時刻"].strip(), "%Y/%m/%d %H:%M").replace(tzinfo=JST).astimezone(UTC)
                value = _finite(raw)
            except (ValueError, OverflowError, AttributeError):  # OverflowError: 0001/01/01 in UTC
                # never the values: an error must not quote the file (it may be any file the caller named)
                raise ReplayError(f"{path.name} line {i}: bad time or stage") from None
            if value == 0.0:
                continue  # missing, not a dry river
            out.append((ts, value))
    out.sort()
    return out


def jiseiji_thresholds(path: str | Path | None) -> dict[str, float]:
    """The 持世寺 thresholds from ``gauge_thresholds_as_stated_by_sources.csv`` (or the stated defaults)."""
    if path is None or not Path(path).exists():
        return dict(JISEIJI_THRESHOLDS)
    found: dict[str, float] = {}
    with open(path, encoding="utf-8-sig", newline="") as fh:
        for row in csv.DictReader(fh):
            if row.get("station") == "持世寺" and row.get("threshold_label_as_stated") in _LABELS:
                found[_LABELS[row["threshold_label_as_stated"]]] = float(row["value_m"])
    return found or dict(JISEIJI_THRESHOLDS)


def jiseiji_station(thresholds: dict[str, float] | None = None, *, exercise: bool = False) -> Station:
    return Station(id=JISEIJI_ID, name="持世寺", name_en="Jiseiji", kana="じせいじ", river="厚東川",
                   municipality_code=JISEIJI_MUNICIPALITY, lat=34.02, lon=131.23, gauge_type="flood_forecast",
                   expected_interval_s=600, datum="gauge zero", exercise=exercise,
                   source="replay: Yamaguchi 土木防災情報システム via dobocreate/kotogawa-data",
                   **cast("dict[str, Any]", thresholds or JISEIJI_THRESHOLDS)).validate()


def jiseiji_series(path: str | Path, *, exercise: bool = False) -> Series:
    path = Path(path)
    thresholds = jiseiji_thresholds(path.parent / "gauge_thresholds_as_stated_by_sources.csv")
    return Series(jiseiji_station(thresholds, exercise=exercise), read_jiseiji(path))


# -- MLIT 川の水位情報 -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MlitRow:
    obs_time: datetime  # UTC
    station_code: str
    station_name: str
    kana: str
    city: str
    town_code: str
    lat: float | None
    lon: float | None
    level_m: float
    start_level_m: float | None
    warn_level_m: float | None
    flood_level_m: float | None


def _opt_float(raw: Any) -> float | None:
    if raw is None or raw == "":
        return None
    return _finite(raw)


def read_mlit_rows(path: str | Path) -> list[MlitRow]:
    """Rows of ``mlit_kriver_fukushima_gauges_over_threshold_…csv(.gz)``, in file order."""
    path = Path(path)
    out = []
    with _open_text(path) as fh:
        reader = csv.DictReader(fh)
        for i, row in enumerate(_shaped(reader, path), start=2):
            try:
                level = _opt_float(row["level_m"])
                if level is None:
                    continue
                out.append(MlitRow(
                    obs_time=parse_iso_time(row["obs_time_jst"].strip()),  # a CSV cell: blanks around it are not the time
                    station_code=row["station_code"], station_name=row["station_name"], kana=row.get("kana") or "",
                    city=row.get("city") or "", town_code=row.get("town_code") or "",
                    lat=_opt_float(row.get("latitude")), lon=_opt_float(row.get("longitude")), level_m=level,
                    start_level_m=_opt_float(row.get("start_level_m")),
                    warn_level_m=_opt_float(row.get("warn_level_m")),
                    flood_level_m=_opt_float(row.get("flood_level_m")),
                ))
            except KeyError as exc:
                raise ReplayError(f"{path.name} line {i}: no column {exc}") from None
            except (ValueError, TypeError, OverflowError, AttributeError) as exc:
                raise ReplayError(f"{path.name} line {i}: a time or number cannot be read "
                                  f"({type(exc).__name__})") from None
    return out


def read_area_info(path: str | Path, *, pref_code: str | None = None) -> list[MlitRow]:
    """Items of an MLIT ``area_info`` JSON snapshot as :class:`MlitRow` (optionally one prefecture)."""
    path = Path(path)
    try:
        with _open_text(path) as fh:
            doc = loads_unique(fh.read())
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, integers beyond 4,300 digits
        raise ReplayError(f"{path.name}: not a JSON area_info snapshot ({str(exc)[:200]})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise ReplayError(f"{path.name}: not an area_info snapshot (no items[])")
    out = []
    for i, item in enumerate(doc["items"]):
        if not isinstance(item, dict):
            raise ReplayError(f"{path.name} item {i}: not an object")
        if pref_code and item.get("prefCode") != pref_code:
            continue
        if item.get("level") is None:
            continue
        try:
            town = str(item.get("townCode") or "")
            out.append(MlitRow(
                obs_time=parse_iso_time(str(item["obsTime"])), station_code=str(item["code"]),
                station_name=str(item.get("name") or item["code"]), kana=str(item.get("kana") or ""),
                city=str(item.get("placeCity") or ""), town_code=town, lat=_opt_float(item.get("latitude")),
                lon=_opt_float(item.get("longitude")), level_m=_finite(item["level"]),
                start_level_m=_opt_float(item.get("startLevel")), warn_level_m=_opt_float(item.get("warnLevel")),
                flood_level_m=_opt_float(item.get("fladLevel")),
            ))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:
            raise ReplayError(f"{path.name} item {i}: a field is missing or cannot be read "
                              f"({type(exc).__name__})") from None
    return out


def _rising(values: list[float | None]) -> list[float | None]:
    """Drop thresholds that would break 観測開始 ≤ 危険 ≤ 氾濫開始 (keep the lower ones)."""
    out: list[float | None] = []
    last = None
    for v in values:
        if v is not None and last is not None and v < last:
            out.append(None)
            continue
        out.append(v)
        if v is not None:
            last = v
    return out


def mlit_station(row: MlitRow, *, exercise: bool = False) -> Station:
    """A 危機管理型 gauge of the registry from an MLIT row (thresholds in the gauge's own datum)."""
    obs_start, crisis, overflow = _rising([row.start_level_m, row.warn_level_m, row.flood_level_m])
    return Station(id=row.station_code, name=row.station_name, kana=row.kana or None,
                   municipality_code=row.town_code or None, lat=row.lat, lon=row.lon, gauge_type="crisis",
                   expected_interval_s=600, datum="as published by MLIT (elevation or gauge zero)",
                   th_obs_start=obs_start, th_crisis=crisis, th_overflow=overflow, exercise=exercise,
                   # MLIT writes 欠測 as no value, never 0, and its gauges read below 0 m (ingest.registry.MISSING_RULE)
                   missing_at_or_below=None,
                   source="replay: MLIT 川の水位情報 via yuiseki/crisis-watcher-river-jp").validate()


def mlit_series(rows: Iterable[MlitRow], *, exercise: bool = False) -> list[Series]:
    """One :class:`Series` per station, points in time order (a repeated time keeps the first row)."""
    by_station: dict[str, list[MlitRow]] = defaultdict(list)
    for row in rows:
        by_station[row.station_code].append(row)
    out = []
    for code in sorted(by_station):
        rows_ = by_station[code]
        seen: dict[datetime, float] = {}
        for r in rows_:
            seen.setdefault(r.obs_time, r.level_m)
        out.append(Series(mlit_station(rows_[0], exercise=exercise), sorted(seen.items())))
    return out


#: where a replay of each format plays out when the operator names no municipality (absent: each gauge in its own):
#: 持世寺 is in 宇部市, outside the area Sonae covers unless a deployment loads Yamaguchi's boundaries
DEFAULT_PLACE = {"jiseiji": DRILL_TOWN_CODE}
#: longitude either side of the drill town's centre over which replayed gauges stand on its river (degrees)
_DRILL_RIVER_HALF_WIDTH = 0.010


def placed(series: Sequence[Series], *, fmt: str, municipality: str | None = None,
           exercise: bool = True) -> list[Series]:
    """``series`` with each gauge where the replay plays out (the module's rule), its readings unchanged.

    ``municipality``: the 6-digit 団体コード the operator names for every replayed gauge (``--municipality``,
    ``[replay] municipality``), or None for :data:`DEFAULT_PLACE` (the drill town for 持世寺; each MLIT
    gauge's own municipality). A gauge left in its own municipality keeps its position. One placed in the
    drill town stands on the drill town's river (:data:`~sonae.municipality_code.DRILL_TOWN_CENTER`, the gauges
    spread west to east), so ``/api/v1/level`` near the town and its routes meet its alerts; one placed in
    another municipality has no position (its own lies elsewhere: its alerts count for the municipality, not
    for a point far away). A moved gauge's ``source`` says where it came from. Whether the municipality is
    covered is the registry's rule, applied when the gauges are registered (``--register-stations``).

    Raises
    ------
    PlacementError
        A real replay (``exercise`` False) placed in the drill town, which is for exercises only.
    """
    target = municipality or DEFAULT_PLACE.get(fmt)
    out = []
    for i, s in enumerate(series):
        station = s.station
        code = target or station.municipality_code
        if code == station.municipality_code:
            out.append(s)
            continue
        came = f"{station.source or 'replay'}; played in {code}, from {station.municipality_code or 'no municipality'}"
        if code == DRILL_TOWN_CODE:
            if not exercise:
                raise PlacementError(f"station {station.id!r} would play out in the drill town {DRILL_TOWN_CODE}, which "
                                  "is for exercises only: run the replay as an exercise (without --real), or name a "
                                  "covered municipality for it (--municipality CODE, [replay] municipality)")
            lat, lon = DRILL_TOWN_CENTER
            lon += _DRILL_RIVER_HALF_WIDTH * (2 * (i + 1) / (len(series) + 1) - 1)
            station = replace(station, municipality_code=code, lat=lat, lon=round(lon, 6), source=came)
        else:
            station = replace(station, municipality_code=code, lat=None, lon=None, source=came)
        out.append(Series(station.validate(), s.points))
    return out


def load_replay(fmt: str, path: str | Path, *, exercise: bool = False, start: datetime | None = None,
                end: datetime | None = None, stations: Iterable[str] = (), limit: int = 0) -> list[Series]:
    """The series a replay run publishes, windowed and filtered (the fleet then places them, :func:`placed`)."""
    path = Path(path)
    if not path.is_file():
        raise ReplayError(f"replay file {path.name} does not exist or is not a regular file")
    if fmt not in ("jiseiji", "mlit", "area_info"):
        raise ReplayError(f"unknown replay format {fmt!r} (jiseiji, mlit, area_info)")
    try:
        if fmt == "jiseiji":
            series = [jiseiji_series(path, exercise=exercise)]
        elif fmt == "mlit":
            series = mlit_series(read_mlit_rows(path), exercise=exercise)
        else:
            series = mlit_series(read_area_info(path), exercise=exercise)
    except ReplayError:
        raise
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, ValueError, KeyError, TypeError, OverflowError) as exc:
        # never the exception's text: it can quote the file (a CSV field, a JSON fragment)
        raise ReplayError(f"{path.name} cannot be read as a {fmt} replay ({type(exc).__name__})") from None
    wanted = set(stations)
    if wanted:
        series = [s for s in series if s.station.id in wanted or s.station.name in wanted]
    series = [w for s in series if (w := s.window(start, end)).points]
    if limit:
        series = sorted(series, key=lambda s: -len(s.points))[:limit]
    if not series:
        raise ReplayError(f"{path.name}: nothing to replay in the chosen window/stations")
    return series
