"""Text XML cannot carry (issue #15 item 3): every XML writer goes through sonae.xmltext.

The listed input is U+000B (Excel's in-cell line break) in an order note, an area description and a
station name; before the fix it made the alert's ``.cap`` and the whole ``feed.atom`` unparseable.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from alerting import store
from alerting.cap import render_atom, render_cap
from alerting.cap_identity import CapProfile, load_profile
from alerting.rules import Transition
from api.app import create_app
from api.auth import create_account, login
from evac.drilltown import _tags
from ingest.municipalities import Municipality, upsert_municipalities
from ingest.registry import Station, upsert_stations
from notify.messages import webhook_cap
from simulators.jma_feed import JmaFeed
from sonae.config import Settings
from sonae.xmltext import REPLACEMENT, is_xml_text, to_xml_bytes, xml_text
from tests.alerting.cap_support import assert_valid_cap
from tests.alerting.test_alerting_cap import PREVIOUS, alert
from tests.api_support import start_client

VT = "\u000b"
RING = [[140.35, 37.39], [140.40, 37.39], [140.40, 37.42], [140.35, 37.42], [140.35, 37.39]]
NS = {"a": "http://www.w3.org/2005/Atom"}


def test_the_listed_characters_are_replaced() -> None:
    assert xml_text(f"一行目{VT}二行目") == "一行目\n二行目"  # Excel's line break stays a line break
    assert xml_text("a\fb") == "a\nb"
    for bad in ("\x01", "\x1f", "\ufffe", "\uffff", "\ud800", "\udfff"):
        assert xml_text(f"x{bad}y") == f"x{REPLACEMENT}y", repr(bad)
    keep = "tab\tLF\nCR\r 日本語 \U0001f30a \ue000 \ufffd"
    assert xml_text(keep) is keep  # nothing to do: the same object


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=60))
def test_any_text_becomes_parseable_xml(text: str) -> None:
    """Any Python string (controls, non-characters, lone surrogates) in text and attributes parses."""
    root = ET.Element("r", {"a": text})
    ET.SubElement(root, "c").text = text
    doc = etree.fromstring(to_xml_bytes(root))
    clean = xml_text(text)
    assert is_xml_text(clean) and len(clean) == len(text)
    assert doc.get("a") == clean  # attributes escape tab, LF and CR
    assert (doc[0].text or "") == clean.replace("\r\n", "\n").replace("\r", "\n")


def test_drill_town_osm_tags_are_sanitised() -> None:
    line = _tags({"name": f"訓練{VT}通り"})
    etree.fromstring(f"<node>{line}</node>".encode())


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings):  # type: ignore[no-untyped-def]
    c = await start_client(create_app(pool=pool, settings=settings))
    yield c
    await c.close()


async def _staff_token(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        await create_account(conn, username="kori", password="correct horse battery", role="staff",
                             municipality_code="072036")
        result = await login(conn, "kori", "correct horse battery")
    assert result is not None
    return result[0]


async def test_vertical_tab_in_notes_areas_and_names_keeps_cap_and_feed_valid(
        client: TestClient, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_municipalities(conn, [Municipality("072036", f"郡山{VT}市", f"Kori{VT}yama", "福島県")])
        await upsert_stations(conn, [Station(id="akutsu", name="阿久津観測所", name_en="Akutsu",
                                             river="阿武隈川", municipality_code="072036", lat=37.41, lon=140.38,
                                             th_standby=4.0, th_caution=5.5, th_evacuation=5.7, th_danger=6.8)])
        # the registry now refuses such names (sonae.nametext); a name stored before that rule keeps them
        await conn.execute("UPDATE stations SET name = $1, name_en = $2, river = $3 WHERE id = 'akutsu'",
                           f"阿久津{VT}観測所", f"Akutsu{VT}", f"阿武隈{VT}川")
        async with conn.transaction():
            gauge = await store.apply_transition(
                conn, station_id="akutsu", municipality_code="072036", exercise=False,
                t=Transition("river_level", None, 4, datetime.now(UTC).timestamp(), 5.8, 5.7, "threshold"))
    assert gauge is not None
    headers = {"Authorization": f"Bearer {await _staff_token(pool)}"}
    # the API now refuses a control character in an order's texts (sonae.nametext, line breaks kept) ...
    for body in ({"level": 4, "area_desc": f"阿久津{VT}地区"}, {"level": 3, "note": f"全域{VT}"}):
        refused = await client.post("/api/v1/orders", json=body, headers=headers)
        assert refused.status == 400 and "U+000B" in (await refused.json())["detail"], await refused.text()
    r = await client.post("/api/v1/orders", json={"level": 4, "note": "川沿いの方は直ちに避難", "area_desc": "阿久津地区",
                                                  "area": {"type": "Polygon", "coordinates": [RING]}},
                          headers=headers)
    assert r.status == 201, await r.text()
    order = await r.json()
    r = await client.post("/api/v1/orders", json={"level": 3, "note": "全域"}, headers=headers)  # no area_desc
    assert r.status == 201, await r.text()
    whole = await r.json()
    # ... so the texts of orders stored before that rule are written here as they were stored
    async with pool.acquire() as conn:
        await conn.execute("UPDATE evacuation_orders SET note = $1, area_desc = $2 WHERE area_desc IS NOT NULL",
                           f"川沿いの方は{VT}直ちに避難", f"阿久津{VT}地区\n北側")
        await conn.execute("UPDATE evacuation_orders SET note = $1 WHERE area_desc IS NULL", f"全域{VT}")

    feed = await client.get("/api/v1/alerts/feed.atom")
    assert feed.status == 200
    doc = etree.fromstring(await feed.read())
    hrefs = [link.get("href") for link in doc.iterfind("a:entry/a:link", NS)]
    assert len(hrefs) == 3
    texts = []
    for href in hrefs:
        cap = await client.get("/api/v1/alerts/" + href.rsplit("/", 1)[1])
        xml = await cap.read()
        assert_valid_cap(xml)
        texts.append(xml.decode())
    joined = "\n".join(texts)
    # a stored name's or area's control character shows as a space (alerting.store: texts stored before the rule);
    # an area description, multi-line by design, keeps its line feeds
    assert "阿久津 地区\n北側" in joined and "阿久津 観測所" in joined
    assert "川沿いの方は" not in joined and "全域" not in joined  # an order's note is a staff memo, never public
    assert "郡山 市" in joined and VT not in joined

    # webhook CAP bodies (notify) are the same writer
    async with pool.acquire() as conn:
        for alert_id in (gauge.alert_id, order["alert_id"], whole["alert_id"]):
            alert = await store.get_alert(conn, alert_id)
            assert alert is not None
            assert_valid_cap(webhook_cap(alert, await store.messages_of(conn, alert_id),
                                         await load_profile(conn)).encode())


def test_no_xml_writer_bypasses_the_sanitiser() -> None:
    """Every module that serialises XML does it through sonae.xmltext (a grep, so a new writer is seen)."""
    root = Path(__file__).resolve().parents[2]
    writers = []
    for package in ("app", "sonae", "ingest", "alerting", "evac", "notify", "api", "simulators", "ngsi", "jma"):
        for path in (root / package).rglob("*.py"):
            source = path.read_text(encoding="utf-8")
            if path.name == "xmltext.py":
                continue
            if "ET.tostring" in source or ".tostring(" in source or "quoteattr(" in source \
                    or "<?xml" in source:
                writers.append(path.relative_to(root).as_posix())
                assert "sonae.xmltext" in source, f"{path} writes XML without sonae.xmltext"
    assert "alerting/cap.py" not in writers  # it goes through to_xml_bytes only
    assert "evac/drilltown.py" in writers


_ANY_TEXT = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=40)


@settings(max_examples=30, deadline=None)
@given(note=_ANY_TEXT, area_desc=_ANY_TEXT, station=_ANY_TEXT, municipality=_ANY_TEXT)
def test_any_entered_text_still_gives_schema_valid_cap(note: str, area_desc: str, station: str,
                                                       municipality: str) -> None:
    """Whatever staff or an import put in a note, an area description or a name: valid CAP and Atom."""
    profile = CapProfile("prop", "sonae@sonae.test")
    order = alert(condition="evacuation_order", station_id=None, order_id=3, level=4, version=1, lat=None, lon=None,
                  area={"type": "Polygon", "coordinates": [RING]}, area_desc=area_desc, order_note=note,
                  municipality_name=municipality, reason="order")
    gauge = alert(station_name=station, station_name_en=station, river=station, municipality_name=municipality)
    for a in (order, gauge, {**order, "area_desc": None, "state": "cleared", "cleared_at": order["changed_at"],
                             "order_cancel_note": note}):
        assert_valid_cap(render_cap(a, PREVIOUS, profile=profile))
    etree.fromstring(render_atom([order, gauge], base_url="https://sonae.test", profile=profile))


async def test_jma_simulator_feed_stays_valid_with_any_host_header() -> None:
    """The drill JMA feed builds its links from the request's Host: a quote or '<' in it kept the feed
    well-formed only by chance (saxutils.escape leaves '"'); it now goes through sonae.xmltext too."""
    feed = JmaFeed([b"<Report/>", b"<Report/>"])
    feed.publish_next()
    feed.publish_next()
    client = await start_client(feed.app())
    try:
        resp = await client.get("/feed.xml", headers={"Host": 'x"y<z&w'})
        doc = etree.fromstring(await resp.read())
        hrefs = [link.get("href") for link in doc.iterfind("a:entry/a:link", NS)]
        assert hrefs == ['http://x"y<z&w/data/1.xml', 'http://x"y<z&w/data/0.xml']
    finally:
        await client.close()
