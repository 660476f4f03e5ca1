"""CAP 1.2 rendering: valid against the official schema, three languages, Exercise never Actual."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import xmlschema
from lxml import etree

from alerting.cap import CAP_NS, polygon_text, render_atom, render_cap
from alerting.cap_identity import CapProfile
from tests.alerting.cap_support import assert_valid_cap, cap_schema
from tests.conftest import shared_data

NS = {"c": CAP_NS}
T0 = datetime(2023, 6, 30, 16, 20, tzinfo=UTC)
PROFILE = CapProfile("test-inst", "sonae@sonae.test")


def alert(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": 7, "station_id": "jiseiji", "order_id": None, "condition": "river_level", "exercise": False,
        "audience": "public", "municipality_code": "072036", "level": 4, "max_level": 4, "state": "escalated",
        "reason": "threshold", "value": 5.51, "threshold": 5.5, "raised_at": T0, "changed_at": T0,
        "cleared_at": None, "version": 3, "acknowledged_by": None, "acknowledged_at": None,
        "created_at": T0, "updated_at": T0, "station_name": "持世寺", "station_name_en": "Jiseiji",
        "river": "厚東川", "lat": 34.02, "lon": 131.22, "gauge_type": "flood_forecast",
        "municipality_name": "郡山市", "municipality_name_en": "Koriyama", "area": None, "area_desc": None,
        "order_note": None, "issued_by": None, "cancelled_by": None,
    }
    base.update(over)
    return base


PREVIOUS = [{"version": v, "recorded_at": T0 + timedelta(minutes=10 * v)} for v in (1, 2, 3, 4)]


def parse(xml: bytes) -> etree._Element:
    return etree.fromstring(xml)


def test_the_validator_rejects_what_it_should() -> None:
    for bad in ("google-cap-library_invalid.cap", "google-cap-library_weather.cap"):
        with pytest.raises(xmlschema.XMLSchemaValidationError):
            cap_schema().validate(str(shared_data("cap", bad)))
    cap_schema().validate(str(shared_data("cap", "google-cap-library_thunderstorm.cap")))


@pytest.mark.parametrize("level", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("exercise", [False, True])
def test_river_alerts_are_valid_cap(level: int, exercise: bool) -> None:
    a = alert(level=level, exercise=exercise, audience="public" if level >= 2 else "staff",
              reason="trend" if level == 3 else "threshold")
    xml = render_cap(a, PREVIOUS, profile=PROFILE)
    assert_valid_cap(xml)
    doc = parse(xml)
    assert doc.findtext("c:status", namespaces=NS) == ("Exercise" if exercise else "Actual")
    assert doc.findtext("c:msgType", namespaces=NS) == "Update"
    assert doc.findtext("c:identifier", namespaces=NS) == "sonae-test-inst-alert-7-v3"
    assert doc.findtext("c:sent", namespaces=NS).endswith("+09:00")
    refs = doc.findtext("c:references", namespaces=NS).split()
    assert [r.split(",")[1] for r in refs] == ["sonae-test-inst-alert-7-v1", "sonae-test-inst-alert-7-v2"]
    infos = doc.findall("c:info", NS)
    assert [i.findtext("c:language", namespaces=NS) for i in infos] == ["ja-JP", "en-US", "ja-JP-x-easy"]
    assert doc.findtext("c:scope", namespaces=NS) == ("Public" if level >= 2 else "Restricted")
    area = infos[0].find("c:area", NS)
    assert area.findtext("c:geocode/c:valueName", namespaces=NS) == "JIS X 0402"
    assert area.findtext("c:geocode/c:value", namespaces=NS) == "072036"
    assert area.findtext("c:circle", namespaces=NS) == "34.020000,131.220000 2.0"
    if exercise:
        assert all("訓練" in i.findtext("c:event", namespaces=NS) or "EXERCISE" in i.findtext("c:event", namespaces=NS)
                   for i in infos)


def test_first_message_is_alert_and_clearing_is_cancel() -> None:
    first = parse(render_cap(alert(version=1, state="raised"), PREVIOUS[:1], profile=PROFILE))
    assert first.findtext("c:msgType", namespaces=NS) == "Alert"
    assert first.find("c:references", NS) is None
    xml = render_cap(alert(version=4, state="cleared", cleared_at=T0 + timedelta(hours=9)), PREVIOUS, profile=PROFILE)
    assert_valid_cap(xml)
    doc = parse(xml)
    assert doc.findtext("c:msgType", namespaces=NS) == "Cancel"
    assert len(doc.findtext("c:references", namespaces=NS).split()) == 3
    assert {i.findtext("c:responseType", namespaces=NS) for i in doc.findall("c:info", NS)} == {"AllClear"}
    assert {i.findtext("c:urgency", namespaces=NS) for i in doc.findall("c:info", NS)} == {"Past"}


@pytest.mark.parametrize("condition", ["silent", "low_battery", "fault"])
def test_staff_conditions_are_restricted(condition: str) -> None:
    xml = render_cap(alert(condition=condition, level=0, audience="staff", version=1), PREVIOUS[:1], profile=PROFILE)
    assert_valid_cap(xml)
    doc = parse(xml)
    assert doc.findtext("c:scope", namespaces=NS) == "Restricted"
    assert doc.findtext("c:info/c:category", namespaces=NS) == "Infra"


def test_order_with_polygon() -> None:
    ring = [[140.35, 37.39], [140.40, 37.39], [140.40, 37.42], [140.35, 37.42], [140.35, 37.39]]
    a = alert(condition="evacuation_order", station_id=None, order_id=3, level=4, version=1, lat=None, lon=None,
              area={"type": "Polygon", "coordinates": [ring]}, area_desc="郡山市 阿久津地区", reason="order",
              exercise=True)
    xml = render_cap(a, PREVIOUS[:1], profile=PROFILE)
    assert_valid_cap(xml)
    doc = parse(xml)
    poly = doc.findtext("c:info/c:area/c:polygon", namespaces=NS)
    assert poly == polygon_text(ring)
    pts = poly.split()
    assert pts[0] == pts[-1] and pts[0] == "37.390000,140.350000"  # lat,lon and closed
    assert doc.findtext("c:status", namespaces=NS) == "Exercise"
    assert doc.findtext("c:info/c:event", namespaces=NS) == "【訓練】避難指示（警戒レベル4）"


def test_atom_feed() -> None:
    feed = render_atom([alert(), alert(id=8, exercise=True)], base_url="https://sonae.example.jp", profile=PROFILE)
    doc = etree.fromstring(feed)
    atom = {"a": "http://www.w3.org/2005/Atom"}
    entries = doc.findall("a:entry", atom)
    assert len(entries) == 2
    links = [e.find("a:link", atom).get("href") for e in entries]
    assert links == ["https://sonae.example.jp/api/v1/alerts/7.cap", "https://sonae.example.jp/api/v1/alerts/8.cap"]
    assert entries[1].findtext("a:title", namespaces=atom).startswith("【訓練】")
    assert doc.findtext("a:updated", namespaces=atom)


def test_every_info_describes_the_stage_in_its_own_language() -> None:
    """やさしい日本語's <info> had the ordinary Japanese description (水位 … / 基準 … / 氾濫危険水位への到達が見込まれます)."""
    xml = render_cap(alert(level=3, reason="trend", value=2.1, threshold=4.0), PREVIOUS, profile=PROFILE)
    assert_valid_cap(xml)
    got = {info.findtext("c:language", namespaces=NS): info.findtext("c:description", namespaces=NS)
           for info in parse(xml).findall("c:info", namespaces=NS)}
    assert got["ja-JP"] == "水位 2.10 m / 基準 4.00 m / 氾濫危険水位への到達が見込まれます"
    assert got["en-US"] == "value 2.10 m / threshold 4.00 m / forecast to reach the flood danger stage"
    easy = got["ja-JP-x-easy"]
    assert easy == "かわの みずの たかさ 2.10 m / めやすの たかさ 4.00 m / かわの みずが あふれる たかさに なりそうです"
    assert not any(word in easy for word in ("水位", "基準", "氾濫"))
