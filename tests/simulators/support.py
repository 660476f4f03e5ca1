from __future__ import annotations

from pathlib import Path

from tests.conftest import shared_data

SCENARIOS = Path(__file__).resolve().parents[2] / "docs" / "scenarios"


def jiseiji_file() -> Path:
    return shared_data("river_levels",
                       "yamaguchi_kotogawa_jiseiji_level_and_kotogawa_dam_2023-06_to_2023-08_10min.csv.gz")


def mlit_file() -> Path:
    return shared_data("river_levels", "mlit_kriver_fukushima_gauges_over_threshold_2025-09_to_2026-08.csv.gz")


def area_info_file() -> Path:
    return shared_data("river_levels", "mlit_kriver_area_info_snapshot_2025-11-01T03JST_all_japan.json.gz")
