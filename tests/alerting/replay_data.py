"""Loading the real gauge series of ../shared/data/river_levels for the alerting tests."""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.conftest import shared_data

JST = timezone(timedelta(hours=9))
JISEIJI_FILE = "yamaguchi_kotogawa_jiseiji_level_and_kotogawa_dam_2023-06_to_2023-08_10min.csv.gz"
MLIT_FILE = "mlit_kriver_fukushima_gauges_over_threshold_2025-09_to_2026-08.csv.gz"

LABELS = {"水防団待機水位": "th_standby", "氾濫注意水位": "th_caution", "避難判断水位": "th_evacuation",
          "氾濫危険水位": "th_danger"}


def jiseiji_thresholds() -> dict[str, float]:
    """持世寺's four thresholds, read from the thresholds file (not typed in here)."""
    path = shared_data("river_levels", "gauge_thresholds_as_stated_by_sources.csv")
    out: dict[str, float] = {}
    with open(path, encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["station"] == "持世寺" and row["threshold_label_as_stated"] in LABELS:
                out[LABELS[row["threshold_label_as_stated"]]] = float(row["value_m"])
    assert len(out) == 4, out
    return out


def jiseiji_series() -> list[tuple[datetime, float]]:
    """(time, stage in m) every 10 minutes, JST timestamps made aware."""
    path = shared_data("river_levels", JISEIJI_FILE)
    with gzip.open(path, "rt", encoding="utf-8-sig") as fh:
        return [(datetime.strptime(r["時刻"], "%Y/%m/%d %H:%M").replace(tzinfo=JST), float(r["水位_水位"]))
                for r in csv.DictReader(fh)]


def mlit_rows() -> dict[str, list[dict[str, Any]]]:
    """MLIT 川の水位情報 rows per station, in time order."""
    path = shared_data("river_levels", MLIT_FILE)
    by_station: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for r in csv.DictReader(io.StringIO(fh.read())):
            by_station[r["station_code"]].append(r)
    for rows in by_station.values():
        rows.sort(key=lambda r: r["obs_time_jst"])
    return dict(by_station)


def mlit_thresholds(row: dict[str, Any]) -> dict[str, float | None]:
    def f(x: str) -> float | None:
        return float(x) if x else None

    return {"th_obs_start": f(row["start_level_m"]), "th_crisis": f(row["warn_level_m"]),
            "th_overflow": f(row["flood_level_m"])}
