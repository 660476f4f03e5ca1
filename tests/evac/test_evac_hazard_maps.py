"""Hazard maps in the national formats (PLATEAU / 国土数値情報): real 沼津市 files imported with their
attributes, checked against the files read independently with json; links; shapefiles; bad files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import shapefile  # pyshp
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import box, mapping, shape

from evac import store
from evac.hazardmaps import (
    PLATEAU_TSUNAMI_RANKS,
    PLATEAU_WATER_RANKS,
    SHALLOW_WATER_PENALTY,
    depth_range_from_text,
    read_hazard_map,
)
from tests.conftest import shared_data

FLD = "numazu_plateau2021_fld_kanogawa_L2_52385628.geojson"
LSLD = "numazu_plateau2021_lsld_523856.geojson"
TNM = "numazu_plateau2021_tnm_22_4_523856.geojson"


def _raw(name: str) -> list[dict[str, Any]]:
    return list(json.loads(shared_data("hazard_plateau", name).read_text(encoding="utf-8"))["features"])


async def _areas(pool: asyncpg.Pool, map_id: str) -> list[dict[str, Any]]:
    async with pool.acquire() as conn:
        return [r for r in await store.hazard_area_rows(conn) if r["map_id"] == map_id]


async def test_plateau_flood_map_keeps_depth_ranks_and_is_not_in_force_unlinked(pool: asyncpg.Pool) -> None:
    raw = _raw(FLD)
    path = shared_data("hazard_plateau", FLD)
    seen: list[tuple[int, int]] = []
    async with pool.acquire() as conn:
        row = await store.import_hazard_map(conn, path, actor="test", progress=lambda d, t: seen.append((d, t)),
                                            batch=5)
    assert row["hazard"] == "flood" and row["format"] == "plateau"
    assert row["title"] == raw[0]["properties"]["name"] == "狩野川水系狩野川洪水浸水想定区域図（想定最大規模）"
    assert row["areas"] == len(raw) and row["link_kind"] is None
    assert "PLATEAU" in row["attribution"] and row["title"] in row["attribution"]
    assert seen[-1] == (len(raw), len(raw)) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    areas = await _areas(pool, row["id"])
    assert Counter(a["depth_rank"] for a in areas) == Counter(int(f["properties"]["浸水ランク"]) for f in raw)
    for a in areas:
        lo, hi = PLATEAU_WATER_RANKS[a["depth_rank"]]
        assert (a["depth_min_m"], a["depth_max_m"]) == (lo, hi)
        # < 0.5 m: penalised; deeper: blocked
        assert (a["severity"], a["penalty_factor"]) == (
            ("penalty", SHALLOW_WATER_PENALTY) if a["depth_rank"] == 1 else ("blocked", 1.0))
        assert a["source"] == "import" and a["active"] is False  # a projection, not a current event
        assert json.loads(a["attributes"])["規模"] == "L2"
    # geometry kept, not simplified: same area as the source (invalid parts made valid, no vertex dropped)
    total_src = sum(shape(f["geometry"]).buffer(0).area for f in raw)
    total = sum(shape(a["geometry"]).area for a in areas)
    assert total == pytest.approx(total_src, rel=1e-6)


async def test_plateau_landslide_zones_and_phenomena(pool: asyncpg.Pool) -> None:
    raw = _raw(LSLD)
    async with pool.acquire() as conn:
        row = await store.import_hazard_map(conn, shared_data("hazard_plateau", LSLD), actor="test")
    assert row["hazard"] == "landslide" and row["areas"] == len(raw) == 234
    areas = await _areas(pool, row["id"])
    zones = {"1": "警戒区域", "2": "特別警戒区域"}
    phen = {"1": "急傾斜地の崩壊", "2": "土石流", "3": "地すべり"}
    assert Counter(a["zone_class"] for a in areas) == Counter(zones[f["properties"]["区域区分"]] for f in raw)
    assert Counter(a["phenomenon"] for a in areas) == Counter(phen[f["properties"]["現象の種類"]] for f in raw)
    by_index = {int(a["id"].rsplit("-", 1)[1]): a for a in areas}  # a red zone shares its yellow zone's 区域番号
    for i, f in enumerate(raw):
        a = by_index[i]
        assert json.loads(a["attributes"])["区域番号"] == f["properties"]["区域番号"]
        assert f["properties"]["区域名"] in a["label"]
        assert a["severity"] == ("blocked" if f["properties"]["区域区分"] == "2" else "penalty")


async def test_plateau_tsunami_is_blocked_at_every_depth(pool: asyncpg.Pool) -> None:
    raw = _raw(TNM)
    async with pool.acquire() as conn:
        row = await store.import_hazard_map(conn, shared_data("hazard_plateau", TNM), actor="test")
        maps = [store.hazard_map_json(r) for r in await store.hazard_map_rows(conn)]
    assert row["hazard"] == "tsunami" and row["areas"] == len(raw) == 230
    assert maps[0]["areas"] == 230 and maps[0]["link"] is None
    areas = await _areas(pool, row["id"])
    assert Counter(a["depth_rank"] for a in areas) == Counter(int(f["properties"]["浸水ランク"]) for f in raw)
    assert all((a["depth_min_m"], a["depth_max_m"]) == PLATEAU_TSUNAMI_RANKS[a["depth_rank"]] for a in areas)
    assert {a["severity"] for a in areas} == {"blocked"}


async def test_link_relink_unlink_and_reimport_keeps_the_link(pool: asyncpg.Pool) -> None:
    path = shared_data("hazard_plateau", FLD)
    link = store.MapLink.parse("gauge:kano-01", at_level=4)
    async with pool.acquire() as conn:
        row = await store.import_hazard_map(conn, path, actor="test", link=link)
        assert (row["link_kind"], row["link_ref"], row["at_level"]) == ("gauge", "kano-01", 4)
        areas = await _areas(pool, row["id"])
        assert {(a["source"], a["station_id"], a["activation_level"], a["active"]) for a in areas} == {
            ("gauge", "kano-01", 4, True)}
        river = store.MapLink.parse("river:狩野川", at_level=3)
        await store.link_hazard_map(conn, row["id"], river, actor="test")
        assert {a["station_id"] for a in await _areas(pool, row["id"])} == {"river:狩野川"}
        again = await store.import_hazard_map(conn, path, actor="test")  # same file: link kept, areas replaced
        assert (again["link_kind"], again["at_level"], again["areas"]) == ("river", 3, len(_raw(FLD)))
        jma = store.MapLink.parse("jma_area:222038", at_level=4, phenomenon="flood")
        await store.link_hazard_map(conn, row["id"], jma, actor="test")
        assert {a["station_id"] for a in await _areas(pool, row["id"])} == {"jma_area:222038:flood"}
        await store.link_hazard_map(conn, row["id"], None, actor="test")
        assert {(a["source"], a["active"]) for a in await _areas(pool, row["id"])} == {("import", False)}
        with pytest.raises(store.StoreError, match="no hazard map"):
            await store.link_hazard_map(conn, "nope", link, actor="test")
    for bad in ("gauge", "tide:x", "gauge:"):
        with pytest.raises(store.StoreError):
            store.MapLink.parse(bad, at_level=4)
    with pytest.raises(store.StoreError):
        store.MapLink.parse("gauge:x", at_level=6)


async def test_ksj_shapefile_a33_and_a31(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """国土数値情報 shapefiles (Shift_JIS attributes, no .cpg) read through pyshp."""
    a33 = tmp_path / "A33-19_22Polygon"
    with shapefile.Writer(str(a33), shapeType=shapefile.POLYGON, encoding="cp932") as w:
        for name in ("A33_001", "A33_002", "A33_003", "A33_004", "A33_005"):
            w.field(name, "C", size=40)
        w.shape(mapping(box(138.80, 35.10, 138.801, 35.101)))
        w.record("3", "2", "22", "103-K-0001", "大平地すべり")
        w.shape(mapping(box(138.81, 35.10, 138.811, 35.101)))
        w.record("2", "1", "22", "103-D-0002", "沢田川")
    a31 = tmp_path / "A31-12_07_flood"
    with shapefile.Writer(str(a31), shapeType=shapefile.POLYGON, encoding="cp932") as w:
        w.field("A31_001", "N", size=4)
        for rank, x in ((21, 140.0), (22, 140.01)):
            w.shape(mapping(box(x, 37.4, x + 0.001, 37.401)))
            w.record(rank)
    async with pool.acquire() as conn:
        slide = await store.import_hazard_map(conn, f"{a33}.shp", actor="test")
        flood = await store.import_hazard_map(conn, f"{a31}.shp", actor="test", title="阿武隈川洪水浸水想定区域")
    assert (slide["hazard"], slide["format"], slide["areas"]) == ("landslide", "ksj", 2)
    rows = {a["phenomenon"]: a for a in await _areas(pool, slide["id"])}
    assert rows["地すべり"]["zone_class"] == "特別警戒区域" and rows["地すべり"]["severity"] == "blocked"
    assert rows["土石流"]["zone_class"] == "警戒区域" and "沢田川" in rows["土石流"]["label"]
    assert flood["hazard"] == "flood" and "国土数値情報" in flood["attribution"]
    ranks = {a["depth_rank"]: a for a in await _areas(pool, flood["id"])}
    assert (ranks[21]["depth_max_m"], ranks[21]["severity"]) == (0.5, "penalty")
    assert (ranks[22]["depth_min_m"], ranks[22]["severity"]) == (0.5, "blocked")


@pytest.mark.parametrize(("content", "expected"), [
    (b"\x89PNG\r\n", "UTF-8"),
    ("{oops", "JSON error"),
    ('{"type": "FeatureCollection", "features": []}', "no features"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"浸水ランク": "1", "name": "x川洪水浸水想定区域"}, '
     '"geometry": {"type": "Point", "coordinates": [138.8, 35.1]}}]}', "Polygon"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"浸水ランク": "1", "name": "x川洪水浸水想定区域"}, '
     '"geometry": {"type": "Polygon", "coordinates": [[[0,0],[400000,0],[400000,9],[0,0]]]}}]}', "lon/lat"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"浸水ランク": "1"}, '
     '"geometry": {"type": "Polygon", "coordinates": [[[0,0],[1,0],[1,1],[0,0]]]}}]}', "--hazard"),
])
async def test_bad_map_files_change_nothing(pool: asyncpg.Pool, tmp_path: Path, content: str | bytes,
                                            expected: str) -> None:
    path = tmp_path / "bad_map.geojson"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    async with pool.acquire() as conn:
        with pytest.raises(store.StoreError, match=expected.replace("-", r"\-")):
            await store.import_hazard_map(conn, path, actor="test")
        assert await store.hazard_map_rows(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM hazard_areas") == 0


@settings(max_examples=60, deadline=None)
@given(lo=st.one_of(st.none(), st.decimals(0, 30, places=1)), hi=st.one_of(st.none(), st.decimals(0, 30, places=1)))
def test_depth_text_ranges(lo: Any, hi: Any) -> None:
    text = (f"{lo}m以上" if lo is not None else "") + (f"{hi}m未満" if hi is not None else "")
    got = depth_range_from_text(text)
    want_lo = float(lo) if lo is not None else (0.0 if hi is not None else None)
    assert got == (want_lo, float(hi) if hi is not None else None)


def test_reader_detects_every_shared_file() -> None:
    kinds = {name: read_hazard_map(shared_data("hazard_plateau", name))[0].hazard for name in (FLD, LSLD, TNM)}
    assert kinds == {FLD: "flood", LSLD: "landslide", TNM: "tsunami"}


async def test_polygons_made_valid_are_kept_and_collapsed_ones_dropped(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """A map with a bow tie (made valid: two triangles), a ring whose points lie on one line (no area left)
    and a plain square: the bow tie and the square are stored, the collapsed ring is dropped and counted;
    every stored area is one the engine reads (before: the collapsed ring was stored as an empty polygon,
    which the engine skipped with a warning on every reload and the hazards list showed)."""
    x, y = 140.36, 37.39
    feats = [
        {"type": "Feature", "properties": {"浸水ランク": 2}, "geometry": {"type": "Polygon", "coordinates": [
            [[x, y], [x + 0.01, y + 0.01], [x + 0.01, y], [x, y + 0.01], [x, y]]]}},
        {"type": "Feature", "properties": {"浸水ランク": 2}, "geometry": {"type": "Polygon", "coordinates": [
            [[140.36, 37.39], [140.37, 37.40], [140.38, 37.41], [140.36, 37.39]]]}},  # on one line
        {"type": "Feature", "properties": {"浸水ランク": 3}, "geometry": mapping(box(x, y, x + 0.01, y + 0.01))},
    ]
    path = tmp_path / "collapsed_fld.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}), encoding="utf-8")
    async with pool.acquire() as conn:
        row = await store.import_hazard_map(conn, path, actor="test", hazard="flood")
    areas = await _areas(pool, row["id"])
    assert sorted(a["id"] for a in areas) == [f"{row['id']}-0", f"{row['id']}-2"]
    assert (row["areas"], row["repaired"], row.get("dropped")) == (2, 1, 1)
    for a in areas:
        area = store.area_from_row(a)  # raises for a geometry the engine cannot use
        assert area.geometry.is_valid and area.geometry.area > 0
    bow = shape(next(a for a in areas if a["id"].endswith("-0"))["geometry"])
    lobe = 0.01 * 0.005 / 2  # each triangle of the bow tie: base 0.01 degree, height 0.005 (no vertex dropped)
    assert bow.geom_type == "MultiPolygon" and len(bow.geoms) == 2 and bow.area == pytest.approx(2 * lobe, rel=1e-9)
