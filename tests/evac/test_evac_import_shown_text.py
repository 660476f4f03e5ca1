"""Imported names that people see (shelter names and addresses, hazard-area labels, hazard-map titles) follow
the shown-text rule (:func:`sonae.nametext.refused_text`), like the API's fields: a U+202E, a NUL or other
control, a line break is refused with the row or feature and the reason; the whole file is refused (as these
importers already treat a bad row), nothing is stored, nothing is silently altered."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from evac import store
from evac.hazards import load_hazard_geojson
from evac.shelters import load_shelters

BAD_NAMES = [(text, re.escape(reason)) for text, reason in [
    ("避難所\u202e1", "U+202E RIGHT-TO-LEFT OVERRIDE"), ("避難\u0007所", "U+0007"), ("避難所\n", "U+000A"),
    ("避\u2028難所", "U+2028")]]
SQUARE = {"type": "Polygon", "coordinates": [[[140.0, 37.0], [140.01, 37.0], [140.01, 37.01], [140.0, 37.0]]]}


def _collection(*props: dict[str, Any], geometry: dict[str, Any] | None = None) -> str:
    point = {"type": "Point", "coordinates": [140.38, 37.42]}
    return json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": p, "geometry": geometry or point} for p in props]})


@pytest.mark.parametrize(("name", "reason"), BAD_NAMES)
@pytest.mark.parametrize("key", ["name", "施設・場所名", "address", "住所"])
def test_shelter_geojson_name_or_address_not_shown_is_refused_naming_the_feature(
        tmp_path: Path, name: str, reason: str, key: str) -> None:
    path = tmp_path / "s.geojson"
    path.write_text(_collection({"id": "s0", "name": "ok"}, {"id": "s1", key: name}), encoding="utf-8")
    field = "name" if key in ("name", "施設・場所名") else "address"
    with pytest.raises(ValueError, match=f"^feature 1: shelter 's1': {field} holds {reason}"):
        load_shelters(path)


@pytest.mark.parametrize(("name", "reason"), BAD_NAMES)
def test_shelter_csv_name_not_shown_is_refused_naming_the_row(tmp_path: Path, name: str, reason: str) -> None:
    path = tmp_path / "s.csv"
    quoted = '"' + name + '"'
    path.write_text(f"id,name,lat,lon,hazards\nA,ok,37.4,140.3,flood\nB,{quoted},37.4,140.3,flood\n",
                    encoding="utf-8", newline="")
    with pytest.raises(ValueError, match=f"^s.csv line 3: shelter 'B': name holds {reason}"):
        load_shelters(path)


async def test_shelter_import_with_a_bad_name_stores_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = tmp_path / "s.geojson"
    path.write_text(_collection({"id": "s0", "name": "第一小学校"}, {"id": "s1", "name": "ABC\u202eDEF"}),
                    encoding="utf-8")
    async with pool.acquire() as conn:
        with pytest.raises(store.StoreError, match="s.geojson: feature 1: shelter 's1': name holds U\\+202E"):
            await store.import_shelters_file(conn, path, actor="test")
        assert await store.count_shelters(conn) == 0


def test_a_shelter_name_that_shows_is_kept_exactly(tmp_path: Path) -> None:
    path = tmp_path / "s.geojson"
    path.write_text(_collection({"id": "s1", "name": "葛\U000e0100城 公民館", "address": "郡山市 1-1"}),
                    encoding="utf-8")  # an ideographic variation sequence and inner spaces are names
    (s,) = load_shelters(path)
    assert (s.name, s.address) == ("葛\U000e0100城 公民館", "郡山市 1-1")


@pytest.mark.parametrize(("label", "reason"), BAD_NAMES)
def test_sonae_hazard_geojson_label_not_shown_is_refused(tmp_path: Path, label: str, reason: str) -> None:
    path = tmp_path / "h.geojson"
    path.write_text(_collection({"hazard": "flood", "label": "ok"}, {"hazard": "flood", "label": label},
                                geometry=SQUARE), encoding="utf-8")
    with pytest.raises(ValueError, match=f"^feature 1: label holds {reason}"):
        load_hazard_geojson(path)


async def test_sonae_hazard_file_with_a_bad_label_stores_nothing(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = tmp_path / "h.geojson"
    path.write_text(_collection({"hazard": "flood", "label": "川\u202e沿い"}, geometry=SQUARE), encoding="utf-8")
    async with pool.acquire() as conn:
        with pytest.raises(store.StoreError, match="h.geojson: feature 0: label holds U\\+202E"):
            await store.import_hazard_file(conn, path, actor="test")
        assert await conn.fetchval("SELECT count(*) FROM hazard_areas") == 0


@pytest.mark.parametrize(("title", "reason"), BAD_NAMES)
async def test_plateau_map_title_from_the_file_not_shown_is_refused(pool: asyncpg.Pool, tmp_path: Path,
                                                                     title: str, reason: str) -> None:
    path = tmp_path / "fld.geojson"
    path.write_text(_collection({"浸水ランク": "1", "name": "x川洪水浸水想定区域" + title}, geometry=SQUARE),
                    encoding="utf-8")
    async with pool.acquire() as conn:
        with pytest.raises(store.StoreError, match=f"^fld.geojson: the map's title \\(feature 0: name\\) holds "
                                                   f"{reason}"):
            await store.import_hazard_map(conn, path, actor="test")
        assert await store.hazard_map_rows(conn) == []


@pytest.mark.parametrize(("title", "reason"), BAD_NAMES)
async def test_hazard_map_title_option_not_shown_is_refused(pool: asyncpg.Pool, tmp_path: Path, title: str,
                                                            reason: str) -> None:
    path = tmp_path / "fld.geojson"
    path.write_text(_collection({"浸水ランク": "1"}, geometry=SQUARE), encoding="utf-8")
    async with pool.acquire() as conn:
        with pytest.raises(store.StoreError, match=f"^fld.geojson: --title holds {reason}"):
            await store.import_hazard_map(conn, path, actor="test", hazard="flood", title=title)
        assert await store.hazard_map_rows(conn) == []


async def test_landslide_zone_name_not_shown_is_refused_naming_the_feature(pool: asyncpg.Pool,
                                                                           tmp_path: Path) -> None:
    path = tmp_path / "lsld.geojson"
    path.write_text(_collection({"区域区分": "1", "現象の種類": "1", "区域名": "沢田川"},
                                {"区域区分": "1", "現象の種類": "1", "区域名": "沢田\u202e川"}, geometry=SQUARE),
                    encoding="utf-8")
    async with pool.acquire() as conn:
        with pytest.raises(store.StoreError, match="^lsld.geojson: feature 1: label holds U\\+202E "
                                                   "RIGHT-TO-LEFT OVERRIDE .* at position 3"):
            await store.import_hazard_map(conn, path, actor="test")
        assert await store.hazard_map_rows(conn) == []
        assert await conn.fetchval("SELECT count(*) FROM hazard_areas") == 0


async def test_a_map_title_that_shows_is_kept(pool: asyncpg.Pool, tmp_path: Path) -> None:
    path = tmp_path / "fld.geojson"
    path.write_text(_collection({"浸水ランク": "1"}, geometry=SQUARE), encoding="utf-8")
    async with pool.acquire() as conn:
        row = await store.import_hazard_map(conn, path, actor="test", hazard="flood", title="阿武隈川 洪水浸水想定区域")
        assert row["title"] == "阿武隈川 洪水浸水想定区域"
