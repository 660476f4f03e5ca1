"""Municipalities' English names say their kind in English ("Koriyama City"), not GSI's romaji ("Koriyama Shi").

Found: English texts said "Evacuation order issued for Koriyama Shi". The shipped list, a list imported in the
shared-data form (GSI romaji in ``romaji_gsi``) and a database loaded before (migration
``ingest/082_municipality_names_in_english``) all give the English form; the oracle is the Japanese name's last
character (市 city, 町 town, 村 village, 区 Tokyo's special wards, which call themselves cities).
"""

from __future__ import annotations

import csv
import io

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.municipalities import english_name, packaged_municipalities, parse_municipalities
from sonae.migrations import migrate
from tests.conftest import SHARED as SHARED_DATA_FOLDER
from tests.migration_support import schema_before

SHARED = SHARED_DATA_FOLDER / "municipalities" / "japan_municipalities.csv"
KIND = {"市": "City", "町": "Town", "村": "Village", "区": "City"}


def test_the_shipped_names_say_their_kind_in_english() -> None:
    shipped = packaged_municipalities()
    named = [m for m in shipped if m.name_en and " " in m.name_en]
    assert len(named) > 1700
    for m in named:
        assert (m.name_en or "").rsplit(" ", 1)[1] == KIND[m.name_ja[-1]], m
    kori = next(m for m in shipped if m.code == "072036")
    assert kori.name_en == "Koriyama City"


@pytest.mark.skipif(not SHARED.exists(), reason=f"shared data not found at {SHARED}")
def test_a_list_in_the_shared_data_form_gets_the_same_english_names_as_the_shipped_one() -> None:
    imported = {m.code: m.name_en for m in parse_municipalities(SHARED.read_text(encoding="utf-8"), source="shared")}
    shipped = {m.code: m.name_en for m in packaged_municipalities()}
    assert imported == shipped
    raw = {r["lgcode6"]: r["romaji_gsi"] for r in csv.DictReader(io.StringIO(SHARED.read_text(encoding="utf-8")))}
    assert raw["072036"] == "Koriyama Shi" and imported["072036"] == "Koriyama City"


def test_an_english_name_given_is_kept_as_written() -> None:
    text = "code,name_ja,name_en,romaji_gsi\n072036,郡山市,Koriyama,Koriyama Shi\n072010,福島市,,Fukushima Shi\n"
    got = {m.code: m.name_en for m in parse_municipalities(text, source="t")}
    assert got == {"072036": "Koriyama", "072010": "Fukushima City"}


@given(stem=st.text(alphabet="AaBbKkoiyrm-'", min_size=1, max_size=12),
       kind=st.sampled_from(["Shi", "Cho", "Machi", "Mura", "Son", "Ku", "Gun", "shi", ""]),
       last=st.sampled_from(["市", "町", "村", "区", "郡", "島"]))
def test_only_a_known_kind_word_of_a_known_kind_is_turned(stem: str, kind: str, last: str) -> None:
    romaji = f"{stem} {kind}" if kind else stem
    got = english_name(romaji, "名" + last)
    if kind in ("Shi", "Cho", "Machi", "Mura", "Son", "Ku") and last in KIND:
        assert got == f"{stem} {KIND[last]}"
    else:
        assert got == romaji


async def test_a_database_loaded_before_gets_the_english_names(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await schema_before(conn, 82)
        await conn.executemany("INSERT INTO municipalities (code, name_ja, name_en) VALUES ($1, $2, $3)", [
            ("072036", "郡山市", "Koriyama Shi"), ("073644", "檜枝岐村", "Hinoemata Mura"),
            ("074080", "猪苗代町", "Inawashiro Machi"), ("131016", "千代田区", "Chiyoda Ku"),
            ("131237", "江戸川区", "Edogawa"), ("072044", "いわき市", "Iwaki"), ("011011", "札幌市中央区", None)])
        await migrate(conn)
        got = dict(await conn.fetch("SELECT code, name_en FROM municipalities"))
        assert got == {"072036": "Koriyama City", "073644": "Hinoemata Village", "074080": "Inawashiro Town",
                       "131016": "Chiyoda City", "131237": "Edogawa", "072044": "Iwaki", "011011": None}
    finally:
        await conn.close()
