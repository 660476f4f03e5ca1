"""Numbers in operators' files are read as written: ``float()`` and ``int()`` also take digit separators and
Unicode digits (found: a station file's 氾濫危険水位 written ``6_4`` was stored as 64 m, a level the river
never reaches, so no 警戒レベル4 for residents; ``６.４`` was taken as 6.4; a shelter's ``lat=37_40`` was read
as 3740)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evac.shelters import load_shelters
from ingest.registry import RegistryError, load_stations, station_from_mapping
from sonae.numbers import file_number

FULL_WIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")
decimals = st.decimals(min_value="0.01", max_value=100, places=2, allow_nan=False).map(str)


def _spoiled(text: str, how: str, at: int) -> str:
    if how == "separator":
        digits = [i for i, c in enumerate(text) if c.isdigit()][1:] or [len(text)]
        k = digits[at % len(digits)]
        return text[:k] + "_" + text[k:]
    return text.translate(FULL_WIDTH)


@given(decimals, st.sampled_from(["separator", "full-width"]), st.integers(0, 10))
def test_a_threshold_written_with_a_separator_or_wide_digits_is_refused(text: str, how: str, at: int) -> None:
    row = {"id": "g1", "name": "本宮", "th_danger": text}
    assert station_from_mapping(row, where="s.csv line 2").th_danger == float(text)
    assert station_from_mapping({**row, "th_danger": f" {text}\t"}, where="s.csv line 2").th_danger == float(text)
    with pytest.raises(RegistryError, match="s.csv line 2: field 'th_danger' has a bad value"):
        station_from_mapping({**row, "th_danger": _spoiled(text, how, at)}, where="s.csv line 2")


def test_the_found_file_is_refused_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    path.write_text("id,name,kind,municipality_code,lat,lon,th_standby,th_caution,th_evacuation,th_danger\n"
                    "motomiya,本宮,river_level,072036,37.51,140.39,3.0,4.5,5.4,6_4\n", encoding="utf-8")
    with pytest.raises(RegistryError, match="line 2: field 'th_danger' has a bad value '6_4'"):
        load_stations(path)


@pytest.mark.parametrize("interval", ["6_00", "６００", "600.5"])
def test_an_interval_written_otherwise_than_in_ascii_digits_is_refused(interval: str) -> None:
    assert station_from_mapping({"id": "g1", "name": "g", "expected_interval_s": "600"}, where="w").expected_interval_s == 600
    with pytest.raises(RegistryError, match="expected_interval_s"):
        station_from_mapping({"id": "g1", "name": "g", "expected_interval_s": interval}, where="w")


@pytest.mark.parametrize(("column", "value"), [("lat", "37_40"), ("lon", "１４０.３６"), ("capacity", "1_200")])
def test_a_shelter_number_written_so_is_refused_naming_the_line(tmp_path: Path, column: str, value: str) -> None:
    cells = {"id": "s1", "name": "体育館", "lat": "37.40", "lon": "140.36", "hazards": "flood", "capacity": "120"}
    path = tmp_path / "s.csv"
    path.write_text(",".join(cells) + "\n" + ",".join(cells.values()) + "\n", encoding="utf-8")
    assert load_shelters(path)[0].capacity == 120
    path.write_text(",".join(cells) + "\n" + ",".join({**cells, column: value}.values()) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="s.csv line 2"):
        load_shelters(path)


@given(st.one_of(st.floats(allow_nan=False), st.integers(-10**6, 10**6)))
def test_json_numbers_pass_as_they_are(value: float) -> None:
    assert file_number(value) == float(value)
    with pytest.raises(TypeError):
        file_number(True)
