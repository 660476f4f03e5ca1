"""Every JMA sample telegram is read as it states itself; unreadable telegrams raise a reason."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from jma.areas import map_statement, municipalities
from jma.telegram import Statement, TelegramError, kind_of, parse
from sonae.municipality_code import normalise
from tests.conftest import shared_data
from tests.jma.support import REAL, SCHEMA, sample, samples

M = "{http://xml.kishou.go.jp/jmaxml1/body/meteorology1/}"
S = "{http://xml.kishou.go.jp/jmaxml1/body/seismology1/}"
H = "{http://xml.kishou.go.jp/jmaxml1/informationBasis1/}"
R = "{http://xml.kishou.go.jp/jmaxml1/}"
ZEN = str.maketrans("１２３４５", "12345")


def _control_title(data: bytes) -> str:
    return ET.fromstring(data).findtext(f"{R}Control/{R}Title") or ""


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA)))


@pytest.mark.parametrize("path", samples(), ids=lambda p: p.name)
def test_sample_is_schema_valid_and_read_or_refused_by_type(path, schema) -> None:
    data = path.read_bytes()
    assert schema.validate(etree.fromstring(data)), schema.error_log.last_error
    if kind_of(_control_title(data)) is None:
        with pytest.raises(TelegramError) as refused:
            parse(data)
        assert refused.value.reason == "unsupported_type"
        return
    telegram = parse(data)
    root = ET.fromstring(data)
    assert telegram.status == root.findtext(f"{R}Control/{R}Status")
    assert telegram.info_type == root.findtext(f"{H}Head/{H}InfoType")
    assert telegram.serial == int(root.findtext(f"{H}Head/{H}Serial") or 0)
    assert telegram.exercise == (telegram.status == "訓練")
    for statement in telegram.statements:
        assert statement.status in ("発表", "継続", "解除")
        assert (statement.level is None) == (statement.status == "解除")


@pytest.mark.parametrize("path", [p for p in samples() if p.name.endswith("VXWW50.xml")], ids=lambda p: p.name)
def test_landslide_statements_are_the_warning_items(path) -> None:
    """Oracle: the Body's own Kind/Status per 市町村等 area (警戒 → レベル4相当; 解除; なし → nothing)."""
    data = path.read_bytes()
    expected = set()
    for item in ET.fromstring(data).iter(f"{M}Item"):
        status = item.findtext(f"{M}Kind/{M}Status")
        code = item.findtext(f"{M}Area/{M}Code")
        if status in (None, "なし") or code is None:
            continue
        expected.add((code, 4 if status in ("発表", "継続") else None, status))
    got = {(s.area_code, s.level, s.status) for s in parse(data).statements}
    assert got == expected and got


@pytest.mark.parametrize("path", [p for p in samples() if "VXKO" in p.name or "VXSU" in p.name],
                         ids=lambda p: p.name)
def test_river_level_is_the_one_the_headline_text_states(path) -> None:
    """Oracle: the telegram's own 【警戒レベルN相当…】 headline, or the レベルN of its title (R06 names)."""
    data = path.read_bytes()
    root = ET.fromstring(data)
    text = (root.findtext(f"{H}Head/{H}Headline/{H}Text") or "") + (root.findtext(f"{H}Head/{H}Title") or "")
    match = re.search(r"(?:警戒)?レベル([１-５1-5])", text)
    telegram = parse(data)
    assert telegram.statements
    if match:
        assert {s.level for s in telegram.statements} == {int(match[1].translate(ZEN))}
    rivers = {a.findtext(f"{H}Code") for i in root.iter(f"{H}Information") if i.get("type", "").endswith("（河川）")
              for a in i.iter(f"{H}Area")}
    assert {s.area_code for s in telegram.statements} == rivers


@pytest.mark.parametrize("path", [p for p in samples() if "VPWW5" in p.name and "VPWW53" not in p.name],
                         ids=lambda p: p.name)
def test_warning_levels_follow_their_names(path) -> None:
    data = path.read_bytes()
    names = {k.findtext(f"{M}Name") for w in ET.fromstring(data).iter(f"{M}Warning")
             if w.get("type") == "気象警報・注意報（市町村等）" for k in w.iter(f"{M}Kind")}
    for statement in parse(data).statements:
        assert statement.kind in names
        level = re.match(r"レベル([１-５])", statement.kind)
        if level and statement.level is not None:
            assert statement.level == int(level[1].translate(ZEN))


@pytest.mark.parametrize("path", [p for p in samples() if "VTSE41" in p.name], ids=lambda p: p.name)
def test_tsunami_areas_are_the_forecast_items(path) -> None:
    data = path.read_bytes()
    telegram = parse(data)
    warned = {i.findtext(f"{S}Area/{S}Code") for i in ET.fromstring(data).iter(f"{S}Item")
              if re.search("警報|注意報", i.findtext(f"{S}Category/{S}Kind/{S}Name") or "")
              and "解除" not in (i.findtext(f"{S}Category/{S}Kind/{S}Name") or "")}
    assert {s.area_code for s in telegram.statements if s.level is not None} == warned


def test_fukushima_tsunami_maps_to_its_coastal_municipalities() -> None:
    telegram = parse(sample("32-39_11_02_250206_VTSE41.xml"))
    fukushima = [s for s in telegram.statements if s.area_code == "250"]
    assert fukushima and fukushima[0].area_name == "福島県" and fukushima[0].level == 4
    mapped = map_statement(fukushima[0])
    assert not mapped.unknown
    assert "072044" in mapped.municipalities and "072036" not in mapped.municipalities  # いわき yes, 郡山 no


def test_real_2022_tonga_telegram_clears_fukushima() -> None:
    telegram = parse((REAL / "20220116050009_0_VTSE41_010000.xml").read_bytes())
    fukushima = [s for s in telegram.statements if s.area_code == "250"]
    assert [(s.status, s.level) for s in fukushima] == [("解除", None)]


def test_fukushima_table_agrees_with_the_municipality_list() -> None:
    """Oracle: 総務省's 6-digit codes in the shared list; jma's table uses the ground module's rule."""
    import csv

    with open(shared_data("municipalities", "japan_municipalities.csv"), encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) > 1700
    official = {r["code5"]: r["lgcode6"] for r in rows}
    assert all(normalise(r["code5"]) == r["lgcode6"] for r in rows)
    table = municipalities()
    assert len(table) == 59
    assert all(official[code5] == lgcode6 for code5, lgcode6 in table.items())


def test_placeholders_are_unknown_never_guessed() -> None:
    telegram = parse(sample("16_06_01_220728_VXKOii.xml"))
    for statement in telegram.statements:
        mapped = map_statement(statement)
        assert mapped.municipalities == ()
        assert mapped.unknown
    outside = Statement("市町村等", "1420600", "小田原市", "土砂災害", "土砂災害警戒情報", 4, "発表")
    assert map_statement(outside).unknown == ("1420600",)


def test_cancellation_has_no_statements() -> None:
    telegram = parse(sample("38-39_03_01_210805_VTSE41.xml"))
    assert telegram.info_type == "取消" and telegram.statements == ()


@pytest.mark.parametrize("data,reason", [
    (b"", "not_xml"), (b"<x/>", "not_jmx"), (b"\xff\xfe<", "not_xml"),
    (b'<Report xmlns="http://xml.kishou.go.jp/jmaxml1/"/>', "missing_field"),
])
def test_unreadable_telegrams_name_their_reason(data, reason) -> None:
    with pytest.raises(TelegramError) as refused:
        parse(data)
    assert refused.value.reason == reason


_BASE = sample("17_04_02_250630_VXWW50.xml")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_BASE) - 1), st.integers(0, 64), st.binary(max_size=16))
def test_mutated_telegram_is_read_or_refused_with_a_reason(start, length, insert) -> None:
    data = _BASE[:start] + insert + _BASE[start + length:]
    try:
        telegram = parse(data)
    except TelegramError as exc:
        assert exc.reason
        return
    for statement in telegram.statements:
        map_statement(statement)  # never raises
