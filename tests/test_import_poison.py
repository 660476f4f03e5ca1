"""Station imports and replay files with the numbers and shapes that crash naive parsers: every one is a
RegistryError / ReplayError naming the file and record, never an OverflowError, TypeError or raw ValueError."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from ingest.municipalities import MunicipalityListError, load_municipalities
from ingest.registry import RegistryError, load_stations
from simulators.replay import ReplayError, read_area_info, read_jiseiji, read_mlit_rows

HUGE = "1" + "0" * 309
DIGITS_5000 = "9" * 5000


@pytest.mark.parametrize("body", [
    '{"features": [{"properties": {"id": "g1", "name": "G", "lat": ' + HUGE + '}}]}',
    '{"features": [{"properties": {"id": "g1", "name": "G", "lat": ' + DIGITS_5000 + '}}]}',
    '{"features": [{"properties": {"id": "g1", "name": "G", "th_danger": [1.0]}}]}',
    '{"features": [{"properties": {"id": "g1", "name": "G", "lon": {"deg": 140}}}]}',
    '{"features": [{"properties": {"id": "g1", "name": "G", "expected_interval_s": 1e309}}]}',
    '{"features": [{"properties": {"id": "g1", "name": "G", "expected_interval_s": 600.5}}]}',
    '{"features": [{"properties": {"id": "g1", "name": "G"}, "geometry": {"type": "Point", "coordinates": 5}}]}',
    '{"features": [{"properties": ["id", "g1"]}]}',
    '{"features": ["g1"]}',
    '{"features": {"g1": 1}}',
    '{"features": [' * 3000 + ']}' * 3000,
    '{"features": [{"properties": {"id": "g1", "name": "G", "lat": NaN}}]}',
])
def test_bad_geojson_station_files_are_registry_errors(tmp_path: Path, body: str) -> None:
    path = tmp_path / "stations.geojson"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(RegistryError, match="stations.geojson"):
        load_stations(path)


def test_a_newline_after_a_station_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stations.geojson"
    path.write_text('{"features": [{"properties": {"id": "g1\\n", "name": "G"}}]}', encoding="utf-8")
    with pytest.raises(RegistryError, match="a station id is 1 to 64"):
        load_stations(path)


def test_bad_csv_station_values_are_registry_errors(tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    path.write_text(f"id,name,expected_interval_s\ng1,G,{DIGITS_5000}\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="line 2"):
        load_stations(path)


def test_a_good_station_file_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "s.geojson"
    path.write_text('{"features": [{"properties": {"id": "g1", "name": "G", "th_danger": 3.5, "expected_interval_s": 600},'
                    ' "geometry": {"type": "Point", "coordinates": [140.38, 37.42]}}]}', encoding="utf-8")
    (s,) = load_stations(path)
    assert (s.id, s.lat, s.lon, s.th_danger, s.expected_interval_s) == ("g1", 37.42, 140.38, 3.5, 600)


@pytest.mark.parametrize("level", [HUGE, DIGITS_5000, '"nan"', '"inf"', "[1.0]", '{"m": 1}', "1e309"])
def test_bad_area_info_levels_are_replay_errors(tmp_path: Path, level: str) -> None:
    path = tmp_path / "area_info.json"
    path.write_text('{"items": [{"code": "1", "obsTime": "2023-07-01T04:40:00+09:00", "level": ' + level + "}]}",
                    encoding="utf-8")
    with pytest.raises(ReplayError, match="area_info.json"):
        read_area_info(path)


def test_area_info_that_is_not_json_or_not_utf8_is_a_replay_error(tmp_path: Path) -> None:
    for name, data in [("a.json", b'{"items": ['), ("b.json", b"\xff\xfe"), ("c.json", b'{"items": ["x"]}'),
                       ("d.json.gz", b"not gzip")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ReplayError, match=name):
            read_area_info(tmp_path / name)


@pytest.mark.parametrize("stage", ["nan", "inf", "-inf", "1e309"])
def test_non_finite_jiseiji_stages_are_replay_errors(tmp_path: Path, stage: str) -> None:
    path = tmp_path / "jiseiji.csv"
    path.write_text(f"時刻,水位_水位\n2023/07/01 04:40,{stage}\n", encoding="utf-8")
    with pytest.raises(ReplayError, match="line 2"):
        read_jiseiji(path)


def test_a_year_one_jiseiji_time_is_a_replay_error(tmp_path: Path) -> None:
    path = tmp_path / "jiseiji.csv"
    path.write_text("時刻,水位_水位\n0001/01/01 00:00,1.0\n", encoding="utf-8")
    with pytest.raises(ReplayError, match="line 2"):
        read_jiseiji(path)


@pytest.mark.parametrize(("obs", "level"), [("2023-07-01T04:40:00+09:00", "nan"),
                                            ("0001-01-01T00:00:00+09:00", "1.0"),
                                            ("2023-07-01T04:40:00+09:00", "inf")])
def test_bad_mlit_rows_are_replay_errors(tmp_path: Path, obs: str, level: str) -> None:
    path = tmp_path / "mlit.csv.gz"
    path.write_bytes(gzip.compress(f"obs_time_jst,station_code,station_name,level_m\n{obs},1,S,{level}\n".encode()))
    with pytest.raises(ReplayError, match="line 2"):
        read_mlit_rows(path)


def test_replay_times_without_an_offset_are_japan_time(tmp_path: Path) -> None:
    """The one rule of sonae.japantime: a naive obsTime / obs_time_jst is JST, whatever the machine's zone."""
    csv_path = tmp_path / "mlit.csv.gz"
    csv_path.write_bytes(gzip.compress(b"obs_time_jst,station_code,station_name,level_m\n"
                                       b"2023-07-01T04:40:00,1,S,1.5\n"))
    json_path = tmp_path / "area_info.json"
    json_path.write_text('{"items": [{"code": "1", "obsTime": "2023-07-01T04:40:00", "level": 1.5}]}',
                         encoding="utf-8")
    expected = "2023-06-30T19:40:00+00:00"
    assert [r.obs_time.isoformat() for r in read_mlit_rows(csv_path)] == [expected]
    assert [r.obs_time.isoformat() for r in read_area_info(json_path)] == [expected]


@pytest.mark.parametrize("text", ["阿久津\\ud800観測所", "川\\u0000"])
def test_station_text_postgresql_cannot_store_is_a_registry_error(tmp_path: Path, text: str) -> None:
    """NUL and a lone surrogate (from a JSON escape) would fail the upsert with a raw DataError."""
    path = tmp_path / "stations.geojson"
    path.write_text('{"features": [{"properties": {"id": "g1", "name": "G", "river": "' + text + '"}}]}',
                    encoding="utf-8")
    with pytest.raises(RegistryError, match="'river'"):
        load_stations(path)


def test_municipality_text_postgresql_cannot_store_is_a_registry_error(tmp_path: Path) -> None:
    path = tmp_path / "municipalities.csv"
    path.write_text("code,name_ja,name_en,prefecture\n072036,郡山\x00市,Koriyama,福島県\n", encoding="utf-8")
    with pytest.raises(MunicipalityListError, match="line 2: contains a NUL"):
        load_municipalities(path)
