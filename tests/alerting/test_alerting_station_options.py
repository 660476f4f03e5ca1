"""The per-gauge rule options of the station registry: ``max_rate_m_per_h`` (plausible rate of change)
and ``exercise_time_scale`` (a drill scenario's clock), from CSV and GeoJSON files into the database."""

from __future__ import annotations

import json
import math
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.registry import RegistryError, get_station, load_stations, station_from_mapping, upsert_stations

CSV = """id,name,gauge_type,th_standby,th_caution,th_evacuation,th_danger,max_rate_m_per_h,exercise,exercise_time_scale
slow,緩やかな川,flood_forecast,3.8,5.0,5.1,5.5,0.5,false,
plain,普通の川,flood_forecast,3.8,5.0,5.1,5.5,,false,
drill,訓練の川,flood_forecast,3.8,5.0,5.1,5.5,,true,30
"""


def test_csv_and_geojson_carry_the_options(tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    path.write_text(CSV, encoding="utf-8")
    slow, plain, drill = load_stations(path)
    assert (slow.max_rate_m_per_h, slow.exercise_time_scale) == (0.5, 1.0)
    assert (plain.max_rate_m_per_h, plain.exercise_time_scale) == (None, 1.0)
    assert (drill.max_rate_m_per_h, drill.exercise_time_scale, drill.exercise) == (None, 30.0, True)
    geo = tmp_path / "stations.geojson"
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [140.38, 37.40]},
         "properties": {"id": "g1", "name": "G1", "gauge_type": "crisis", "th_crisis": 2.0, "max_rate_m_per_h": 2.5}},
    ]}), encoding="utf-8")
    (g1,) = load_stations(geo)
    assert g1.max_rate_m_per_h == 2.5 and g1.lat == 37.40


@pytest.mark.parametrize(("row", "message"), [
    ({"max_rate_m_per_h": "0"}, "max_rate_m_per_h must be positive"),
    ({"max_rate_m_per_h": "-1"}, "max_rate_m_per_h must be positive"),
    ({"max_rate_m_per_h": "fast"}, "bad value"),
    ({"exercise_time_scale": "0.5", "exercise": "true"}, "exercise_time_scale must be 1 or more"),
    ({"exercise_time_scale": "30"}, "for exercise stations only"),
])
def test_bad_options_are_refused_with_the_field_named(row: dict[str, str], message: str) -> None:
    with pytest.raises(RegistryError, match=message):
        station_from_mapping({"id": "x", "name": "X", **row}, where="test")


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.integers(-5, 50)))
def test_any_rate_cell_loads_as_a_positive_rate_or_is_refused(cell: object) -> None:
    try:
        station = station_from_mapping({"id": "x", "name": "X", "max_rate_m_per_h": cell}, where="test")
    except RegistryError:
        return
    rate = station.max_rate_m_per_h
    assert rate is None and cell in ("", None) or (rate is not None and math.isfinite(rate) and rate > 0)


async def test_options_round_trip_through_the_database(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    path.write_text(CSV, encoding="utf-8")
    async with pool.acquire() as conn:
        await upsert_stations(conn, load_stations(path))
        slow, drill = await get_station(conn, "slow"), await get_station(conn, "drill")
        assert slow is not None and slow.max_rate_m_per_h == 0.5
        assert drill is not None and drill.exercise_time_scale == 30.0
        # the database refuses a clock slower than real time, whoever writes it; a real station may keep its
        # drills' clock, unused while it is real (migration ingest 045; a station file still may not give one)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("UPDATE stations SET exercise_time_scale = 0.5 WHERE id = 'drill'")
