"""A CSV row must have one cell per header column in every importer, and a station file one row per station.

Found breaking the station registry (break33): ``csv.DictReader`` files a cell past the header under the key
``None`` and fills a missing one with ``None``, and the importers skipped both, so

- ``…,600,3.0,4.5,5.4,6,4`` (a decimal comma in the last threshold, as a spreadsheet set to a European
  locale writes it) was imported with 氾濫危険水位 6 m instead of 6.4 m, the ``4`` dropped without a word;
- a shelter row ``…,flood,landslide`` (hazards split by an unquoted comma) was imported rated for flood only;
- a row missing its last cells was imported without those thresholds;
- a header naming a column twice (``th_danger,th_danger``) kept the second cell and dropped the first;
- a station file with one id on two rows said ``imported 2 stations`` and stored the second row only.

Now each is refused with the file, the line and what is wrong, and nothing is imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evac.shelters import load_shelters
from ingest.municipalities import MunicipalityListError, load_municipalities
from ingest.registry import RegistryError, load_stations
from simulators.replay import ReplayError, read_jiseiji, read_mlit_rows

PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

STATION_HEADER = "id,name,municipality_code,lat,lon,expected_interval_s,th_standby,th_caution,th_evacuation,th_danger"
STATION_ROW = ["abukuma-motomiya", "本宮", "072036", "37.513", "140.394", "600", "3.0", "4.5", "5.4", "6.4"]
MLIT_HEADER = ("obs_time_jst,station_code,station_name,kana,city,town_code,latitude,longitude,level_m,start_level_m,"
               "warn_level_m,flood_level_m,over,point,is_warning,is_flood,first_seen_snapshot_jst")
MLIT_ROW = ["2025-09-13T22:50:00+09:00", "0700000003", "226 鶴沼川(枝松橋)", "", "福島県南会津郡下郷町", "07362",
            "37.288563", "139.96143", "491.6", "488.63", "489.13", "492.03", "11", "8599", "1", "0", "2025/09/13/23"]

# (file name, header, a good row, the loader, its error)
IMPORTERS = [
    ("stations.csv", STATION_HEADER, STATION_ROW, load_stations, RegistryError),
    ("municipalities.csv", "code,name_ja,name_en", ["072036", "郡山市", "Koriyama"], load_municipalities,
     MunicipalityListError),
    ("shelters.csv", "id,name,lat,lon,hazards", ["s1", "郡山市役所", "37.4004", "140.3597", "flood"], load_shelters,
     ValueError),
    ("mlit.csv", MLIT_HEADER, MLIT_ROW, read_mlit_rows, ReplayError),
    ("jiseiji.csv", "時刻,水位_水位,ダム", ["2023/07/01 00:10", "3.88", "1.0"], read_jiseiji, ReplayError),
]


def _write(tmp_path: Path, name: str, header: str, *rows: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join([header, *(",".join(row) for row in rows)]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "header", "row", "load", "error"), IMPORTERS)
def test_a_good_row_still_loads(tmp_path: Path, name: str, header: str, row: list[str], load, error) -> None:
    assert len(load(_write(tmp_path, name, header, row))) == 1


@pytest.mark.parametrize(("name", "header", "row", "load", "error"), IMPORTERS)
@pytest.mark.parametrize("change", ["one more", "one fewer"])
def test_a_row_with_another_number_of_cells_than_the_header_is_refused(
        tmp_path: Path, name: str, header: str, row: list[str], load, error, change: str) -> None:
    cells = [*row, "4"] if change == "one more" else row[:-1]
    path = _write(tmp_path, name, header, row, cells)
    with pytest.raises(error, match=rf"{name} line 3: {len(cells)} cells where the header has {len(row)} columns"):
        load(path)


@PROPERTY
@given(cell=st.integers(6, len(STATION_ROW) - 1), data=st.data())
def test_a_decimal_comma_in_a_threshold_is_refused_never_read_as_two_cells(tmp_path_factory: pytest.TempPathFactory,
                                                                           cell: int, data: st.DataObject) -> None:
    """Any threshold written with a decimal comma (``6,4`` for 6.4) shifts the cells after it: refused."""
    whole = data.draw(st.integers(0, 99), label="whole")
    fraction = data.draw(st.integers(0, 99), label="fraction")
    row = [*STATION_ROW[:cell], f"{whole},{fraction}", *STATION_ROW[cell + 1:]]
    path = _write(tmp_path_factory.mktemp("comma"), "stations.csv", STATION_HEADER, row)
    with pytest.raises(RegistryError, match=r"stations\.csv line 2: 11 cells where the header has 10 columns"):
        load_stations(path)


@pytest.mark.parametrize(("name", "header", "row", "load", "error"), IMPORTERS)
def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path, name: str, header: str, row: list[str],
                                                   load, error) -> None:
    first = header.split(",")[-1]
    path = _write(tmp_path, name, f"{header},{first}", [*row, row[-1]])
    # a replay file's errors quote nothing of the file (it may be any file the caller named)
    named = "two columns have one name" if error is ReplayError else f"column {first!r} is named twice"
    with pytest.raises(error, match=rf"{name} line 1: {named} \(columns {len(row)} and {len(row) + 1}\)"):
        load(path)


def test_a_station_on_two_rows_of_one_csv_file_is_refused(tmp_path: Path) -> None:
    second = [*STATION_ROW[:1], "本宮（新）", *STATION_ROW[2:]]
    path = _write(tmp_path, "stations.csv", STATION_HEADER, STATION_ROW, second)
    with pytest.raises(RegistryError, match=r"stations\.csv line 3: station 'abukuma-motomiya' again "
                                            r"\(first on line 2\)"):
        load_stations(path)


def test_a_station_in_two_features_of_one_geojson_file_is_refused(tmp_path: Path) -> None:
    feature = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [140.394, 37.513]},
               "properties": {"id": "abukuma-motomiya", "name": "本宮"}}
    path = tmp_path / "stations.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature, feature]}), encoding="utf-8")
    with pytest.raises(RegistryError, match=r"stations\.geojson feature 1: station 'abukuma-motomiya' again "
                                            r"\(first in feature 0\)"):
        load_stations(path)


def test_blank_lines_between_rows_are_still_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    path.write_text(f"{STATION_HEADER}\n\n{','.join(STATION_ROW)}\n\n", encoding="utf-8")
    (station,) = load_stations(path)
    assert station.th_danger == 6.4
