"""Pure parts of the NGSI-LD view: the q-language subset (hypothesis against a direct oracle), geo parsing,
and the entity mapping's rules (below gauge zero, unconfirmed and staff alerts, staff identities)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alerting.cap_identity import CapProfile
from ngsi import entities as E
from ngsi.query import QueryError, matches, parse_geo, parse_q

ATTRS = ("a", "b", "c")
OPS = ("==", "!=", ">", ">=", "<", "<=")


def _oracle(op: str, actual: float | None, want: float) -> bool:
    if actual is None:
        return False
    return {"==": actual == want, "!=": actual != want, ">": actual > want, ">=": actual >= want,
            "<": actual < want, "<=": actual <= want}[op]


terms = st.tuples(st.sampled_from(ATTRS), st.sampled_from(OPS), st.integers(-5, 5))
entities = st.fixed_dictionaries({}, optional={a: st.integers(-5, 5).map(float) for a in ATTRS})


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(terms, min_size=1, max_size=3), min_size=1, max_size=3), entities)
def test_q_and_or_agree_with_a_direct_evaluation(clauses: list[list[tuple[str, str, int]]],
                                                 entity: dict[str, Any]) -> None:
    text = "|".join(";".join(f"{a}{op}{v}" for a, op, v in clause) for clause in clauses)
    expected = any(all(_oracle(op, entity.get(a), float(v)) for a, op, v in clause) for clause in clauses)
    assert matches(parse_q(text), {"id": "x", "type": "T", **entity}) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from('ab01.,;|()!=<>~"-: TZ\\*'), max_size=40))
def test_q_parser_answers_or_refuses_never_crashes(text: str) -> None:
    try:
        tree = parse_q(text)
    except QueryError:
        return
    matches(tree, {"id": "x", "type": "T", "a": 1.0, "b": "x", "c": [1.0, 2.0]})


@pytest.mark.parametrize(("q", "hit"), [
    ('name=="避難所1"', True), ("name~=避難", True), ("name!~=^x", True), ("occupancy==0..3", True),
    ("occupancy==4..9", False), ('shelterHazards=="flood"', True), ('shelterHazards=="flood","tsunami"', True),
    ('shelterHazards=="tsunami","volcano"', False), ('shelterHazards!="tsunami"', True), ("shelterHazards==flood", None), ("capacity", False), ("!capacity", True),
    ("exercise==false", True), ("exercise==0", False), ("(occupancy>0|capacity>0);name", True),
    ("dateObserved>2026-01-01T00:00:00Z", True), ('dateObserved<"2026-01-01T00:00:00Z"', False),
])
def test_q_terms_on_an_entity(q: str, hit: bool | None) -> None:
    entity = {"id": "urn:x", "type": "PointOfInterest", "name": "避難所1", "occupancy": 2,
              "shelterHazards": ["earthquake", "flood"], "exercise": False, "dateObserved": "2026-11-29T10:00:00Z"}
    if hit is None:
        with pytest.raises(QueryError):  # strings are quoted in the NGSI-LD grammar
            parse_q(q)
        return
    assert matches(parse_q(q), entity) is hit


@pytest.mark.parametrize(("q", "hit"), [
    # a time without an offset is Japan time (sonae.japantime), as in ingest and the API's from/to/timeAt:
    # the entity's 2026-11-29T10:00Z is 19:00 JST
    ("dateObserved>2026-11-29T18:59", True), ("dateObserved>2026-11-29T19:00:01", False),
    ('dateObserved=="2026-11-29T19:00:00"', True), ("dateObserved==2026-11-29T18:00..2026-11-29T19:30", True),
])
def test_q_times_without_an_offset_are_japan_time(q: str, hit: bool) -> None:
    entity = {"id": "urn:x", "type": "WaterObserved", "dateObserved": "2026-11-29T10:00:00Z"}
    assert matches(parse_q(q), entity) is hit


@pytest.mark.parametrize("q", ["location.coordinates==1", "a[b]==1", "@observedAt>1", "a==", "(a==1", "a==1)",
                               "a==nan", "a~=(", "a;;b", "x" * 3000, r"a~=(x)\1", "a~=(?=x)", "a~=" + "x" * 300])
def test_q_outside_the_subset_is_refused(q: str) -> None:
    with pytest.raises(QueryError):
        parse_q(q)


@pytest.mark.parametrize(("georel", "geometry", "coordinates"), [
    ("near", "Point", "[140,37]"), ("near;maxDistance==-1", "Point", "[140,37]"),
    ("near;maxDistance==10", "Polygon", "[[[140,37],[141,37],[141,38],[140,37]]]"),
    ("within", "Point", "[140,37]"), ("equals", "Point", "[140,37]"), ("near;maxDistance==10", "Point", "[200,37]"),
    ("near;maxDistance==10", "Point", "140,37"), ("near;maxDistance==10", "Point", "[null, 1]"),
    ("within", "Polygon", "[[[140,37],[141,38],[141,37],[140,38],[140,37]]]"),  # a bow tie
    ("within", "Polygon", "[[[140,37],[141,37]]]"), ("within", "Polygon", "[]"),
])
def test_bad_geo_queries_are_refused(georel: str, geometry: str, coordinates: str) -> None:
    with pytest.raises(QueryError):
        parse_geo(georel, geometry, coordinates, None)


STATION = {"id": "s1", "name": "観測所", "kind": "river_level", "gauge_type": "flood_forecast", "river": "阿武隈川",
           "municipality_code": "072036", "lat": 37.4, "lon": 140.38, "th_standby": 4.0, "th_caution": 5.5,
           "th_evacuation": 5.7, "th_danger": 6.8, "exercise": False,
           "latest_ts": datetime(2026, 11, 29, 1, 0, tzinfo=UTC), "latest_value": -0.42}


def test_gauge_below_its_zero_keeps_the_stage_outside_sdm_water_level() -> None:
    e = E.gauge(STATION, level=None)
    assert e is not None
    assert e["riverLevel"] == -0.42 and "waterLevel" not in e and "warningLevel" not in e
    assert e["dateObserved"] == "2026-11-29T01:00:00Z"
    assert E.gauge({**STATION, "lat": None}) is None and E.gauge({**STATION, "kind": "device"}) is None


def _alert(**kw: Any) -> dict[str, Any]:
    base = {"id": 7, "condition": "river_level", "audience": "public", "level": 3, "exercise": False,
            "station_id": "s1", "municipality_code": "072036", "cleared_at": None, "version": 2,
            "raised_at": datetime(2026, 11, 29, tzinfo=UTC), "acknowledged_by": "kawa", "issued_by": "kawa",
            "lat": 37.4, "lon": 140.38, "area": None}
    base.update(kw)
    return base


def test_only_public_gauge_alerts_and_orders_become_entities() -> None:
    assert E.is_public_alert(_alert())
    assert not E.is_public_alert(_alert(condition="river_level_unconfirmed", audience="staff"))
    assert not E.is_public_alert(_alert(condition="river_level_unconfirmed"))  # even if mislabelled public
    assert not E.is_public_alert(_alert(level=1, audience="staff"))
    assert not E.is_public_alert(_alert(condition="low_battery", audience="staff"))
    assert E.river_levels([_alert(), _alert(id=8, level=5, exercise=True)]) == {"s1": 3}  # real before drill
    profile = CapProfile("inst1", "sonae@sonae.example")
    e = E.alert(_alert(), base="https://sonae.example", description="見出し", incident=profile.incident(7),
                cap_identifier=profile.identifier(7, 2))
    assert "kawa" not in repr(e)
    assert e["id"] == "urn:ngsi-ld:Alert:sonae-inst1-alert-7"
    assert e["capIdentifier"] == "sonae-inst1-alert-7-v2"
    assert e["capDocument"] == "https://sonae.example/api/v1/alerts/7.cap"
    levels = E.municipality_levels([{"code": "072036", "name_ja": "郡山市"}, {"code": "072010", "name_ja": "福島市"}],
                                   [_alert(), _alert(id=9, condition="evacuation_order", station_id=None, level=4,
                                                     exercise=True)])
    assert [m.get("warningLevel") for m in levels] == [3, None]


def test_normalized_form_and_ids() -> None:
    e = E.gauge({**STATION, "latest_value": 1.5}, level=2)
    assert e is not None
    n = E.normalized(e)
    assert n["location"]["type"] == "GeoProperty" and n["refDevice"]["type"] == "Relationship"
    assert n["waterLevel"] == {"type": "Property", "value": 1.5, "observedAt": e["dateObserved"], "unitCode": "MTR"}
    assert E.local_id(E.entity_id("PointOfInterest", "a b/ü")) == ("PointOfInterest", "a b/ü")
    assert E.local_id("urn:ngsi-ld:Nope:x") is None and E.local_id("urn:ngsi-ld:Device:") is None
    assert math.isclose(E.device({"id": "d", "name": "d", "battery_pct": 140.0})["batteryLevel"], 1.0)


def test_patterns_run_in_linear_time_without_backtracking() -> None:
    # (\d+)+x would backtrack exponentially in Python's re on a long run of digits; RE2 answers at once
    entity = {"id": "urn:x", "type": "T", "name": "0" * 5000}
    assert matches(parse_q(r'name~="(\d+)+x"'), entity) is False
    assert matches(parse_q(r'name~="^(0+)+$"'), entity) is True
