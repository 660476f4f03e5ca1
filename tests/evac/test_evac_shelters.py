"""Shelter import: GSI GeoJSON (real Fukushima data), generic GeoJSON and CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.hazards import GSI_FLAGS
from evac.shelters import Shelter, load_shelters, write_shelters_geojson

GSI = "/work/shared/data/shelters/gsi_fukushima_designated_emergency_evacuation_sites.geojson"
GSI_STAY = "/work/shared/data/shelters/gsi_fukushima_designated_shelters.geojson"


def test_gsi_emergency_sites_counts_and_flags() -> None:
    shelters = load_shelters(GSI)
    assert len(shelters) == 2546
    assert len({s.id for s in shelters}) == 2546
    koriyama = [s for s in shelters if s.municipality_code == "072036"]
    assert len(koriyama) == 297
    assert sum(s.rated_for("flood") for s in koriyama) == 255
    first = shelters[0]
    assert first.name == "上名倉第２公園" and first.address.startswith("福島県福島市")
    assert first.hazards == {"landslide", "earthquake", "large_fire", "inland_flooding"}
    assert first.capacity is None and not first.is_full and first.is_open
    assert all(36.8 < s.lat < 38.0 and 139.3 < s.lon < 141.1 for s in shelters)


def test_gsi_designated_shelters_have_no_flags_unless_defaulted() -> None:
    plain = load_shelters(GSI_STAY)
    assert len(plain) == 2462 and all(not s.hazards for s in plain)
    defaulted = load_shelters(GSI_STAY, default_hazards=["earthquake"])
    assert all(s.hazards == {"earthquake"} for s in defaulted)


def test_csv_and_geojson_round_trip(tmp_path: Path) -> None:
    csv_path = tmp_path / "shelters.csv"
    csv_path.write_text(
        "\ufeffid,name,address,lat,lon,hazards,capacity,occupancy,is_open\n"
        "A,第一小学校,郡山市1-1,37.40,140.36,flood;earthquake,300,300,1\n"
        "B,公民館,郡山市2-2,37.41,140.37,earthquake,,0,0\n", encoding="utf-8")
    a, b = load_shelters(csv_path)
    assert a.is_full and a.hazards == {"flood", "earthquake"} and a.capacity == 300
    assert b.capacity is None and not b.is_full and not b.is_open
    out = tmp_path / "out.geojson"
    write_shelters_geojson([a, b], out)
    a2, b2 = load_shelters(out)
    assert (a2.hazards, a2.capacity, a2.occupancy, b2.is_open) == (a.hazards, 300, 300, False)
    assert "洪水" in out.read_text(encoding="utf-8")
    write_shelters_geojson([a], out, gsi_flags=False)
    assert load_shelters(out)[0].hazards == a.hazards


def test_bad_input_messages(tmp_path: Path) -> None:
    bad = tmp_path / "s.csv"
    bad.write_text("id,name,lat,lon,hazards\nA,x,37.4,140.3,meteor\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown hazard 'meteor'"):
        load_shelters(bad)
    with pytest.raises(ValueError, match="use .geojson"):
        load_shelters(tmp_path / "s.xlsx")
    assert set(GSI_FLAGS) == {"flood", "landslide", "storm_surge", "earthquake", "tsunami", "large_fire",
                              "inland_flooding", "volcano"}
    s = Shelter(id="x", name="x", lat=0, lon=0, hazards=frozenset(), capacity=0)
    assert s.is_full


def test_gsi_files_merge_per_site_keeping_flags_and_both_designations() -> None:
    """Oracle: a brute-force pairing of the two real files by name, municipality and distance."""
    import math

    from evac.shelters import EMERGENCY_SITE, SAME_SITE_M, STAY_SHELTER, merge_sites

    emergency, stay = load_shelters(GSI), load_shelters(GSI_STAY)
    merged = merge_sites(emergency, stay)

    def metres(a: Shelter, b: Shelter) -> float:
        x = math.radians(b.lon - a.lon) * math.cos(math.radians((a.lat + b.lat) / 2))
        return 6_371_000.0 * math.hypot(x, math.radians(b.lat - a.lat))

    joined = {s.id for s in stay if any(e.name == s.name and e.municipality_code == s.municipality_code
                                        and metres(e, s) <= SAME_SITE_M for e in emergency)}
    assert 500 < len(joined) < len(stay)
    by_id = {s.id: s for s in merged}
    assert not joined & set(by_id)  # a joined 指定避難所 is no separate site
    flags = {e.id: e.hazards for e in emergency}
    both = [s for s in merged if s.designations == {EMERGENCY_SITE, STAY_SHELTER}]
    assert both and all(s.hazards == flags[s.id] for s in both)
    assert all(s.designations == {STAY_SHELTER} and not s.hazards for s in merged if s.id not in flags)
    assert all(EMERGENCY_SITE in by_id[e.id].designations for e in emergency if e.id in by_id)


def test_merge_is_by_id_or_name_within_the_distance() -> None:
    from evac.shelters import merge_sites

    a = Shelter(id="A", name="公民館", lat=37.4, lon=140.36, hazards=frozenset({"flood"}), municipality_code="072036")
    near = Shelter(id="B", name="公民館", lat=37.4001, lon=140.36, hazards=frozenset(), municipality_code="072036",
                   capacity=50)
    far = Shelter(id="C", name="公民館", lat=37.41, lon=140.36, hazards=frozenset(), municipality_code="072036")
    same_id = Shelter(id="A", name="別名", lat=37.5, lon=140.5, hazards=frozenset({"earthquake"}))
    merged = merge_sites([a], [near, far, same_id])
    assert [s.id for s in merged] == ["A", "C"]
    assert merged[0].hazards == {"flood", "earthquake"} and merged[0].capacity == 50


@pytest.mark.parametrize("name", ["避難所\\udfff", "避難所\\u0000"])
def test_shelter_text_postgresql_cannot_store_is_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / "s.geojson"
    path.write_text('{"features": [{"properties": {"id": "s1", "name": "' + name + '"}, '
                    '"geometry": {"type": "Point", "coordinates": [140.38, 37.42]}}]}', encoding="utf-8")
    with pytest.raises(ValueError, match="shelter 's1': field 'name'"):
        load_shelters(path)


@pytest.mark.parametrize("suffix", [".csv", ".geojson"])
def test_two_sites_under_one_id_in_one_file_stay_two_sites_with_their_own_ratings(tmp_path: Path,
                                                                                  suffix: str) -> None:
    """Found by break33: a CSV whose rows 一つ目 (flood, 37.40 140.36) and 二つ目 (landslide, 37.41 140.37, 1.4 km
    away) share an id was imported as one site, 一つ目 rated for flood and landslide (``imported 1 sites``): a
    landslide route could end at a site not rated for it. A GeoJSON file kept them apart (a repeated id within a
    file is made unique); a CSV file now does the same."""
    from evac.shelters import merge_sites

    rows = [("b-dup", "一つ目", 37.40, 140.36, "flood"), ("b-dup", "二つ目", 37.41, 140.37, "landslide")]
    path = tmp_path / f"sites{suffix}"
    if suffix == ".csv":
        path.write_text("id,name,lat,lon,hazards\n" + "".join(f"{i},{n},{la},{lo},{h}\n" for i, n, la, lo, h in rows),
                        encoding="utf-8")
    else:
        write_shelters_geojson([Shelter(id=i, name=n, lat=la, lon=lo, hazards=frozenset({h}))
                                for i, n, la, lo, h in rows], path, gsi_flags=False)
    sites = merge_sites(load_shelters(path))
    assert sorted((s.name, s.lat, s.lon, sorted(s.hazards)) for s in sites) == [
        ("一つ目", 37.40, 140.36, ["flood"]), ("二つ目", 37.41, 140.37, ["landslide"])]
    assert len({s.id for s in sites}) == 2
