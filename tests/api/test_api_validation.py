"""Requests are checked against the OpenAPI document in one place (api/validation.py): the named formats,
the problem that names the field and the rule, and every input schemathesis found (issue #16) kept here
as a plain test."""

from __future__ import annotations

import base64
import math
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Polygon, box

from api.app import create_app
from api.openapi import PORT, document
from api.validation import FORMATS, parse_bbox
from ingest.boundaries import MAX_SAMPLES, Boundary, BoundaryIndex
from sonae.config import Settings
from sonae.municipality_code import MunicipalityCodeError, normalise_municipality
from tests.api_support import signed_in, start_client

KORI = "072036"
PASSWORD = "correct horse battery"
#: a bow tie: the ring crosses itself between its second and third corner
BOW_TIE = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.40], [140.37, 37.39],
                                                [140.36, 37.40], [140.36, 37.39]]]}
SQUARE = {"type": "Polygon", "coordinates": [[[140.36, 37.39], [140.37, 37.39], [140.37, 37.40],
                                              [140.36, 37.40], [140.36, 37.39]]]}


def _point(seed: int) -> bytes:
    key = ec.derive_private_key(seed, ec.SECP256R1()).public_key()
    return key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


# -- the named formats (pure logic) ------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.integers(1, 2**200), st.booleans())
def test_p256_keys_are_accepted_padded_or_not(seed: int, padded: bool) -> None:
    text = base64.urlsafe_b64encode(_point(seed)).decode()
    assert text.endswith("=")  # 65 bytes: base64 pads one character
    assert FORMATS.conforms(text if padded else text.rstrip("="), "p256-public-key")


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=65, max_size=65))
def test_p256_format_agrees_with_cryptography(raw: bytes) -> None:
    """Oracle: cryptography's own point decoding."""
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        on_curve = raw[0] == 4
    except ValueError:
        on_curve = False
    assert FORMATS.conforms(base64.urlsafe_b64encode(raw).decode().rstrip("="), "p256-public-key") == on_curve


def test_auth_secret_is_16_bytes_padded_or_not() -> None:
    text = base64.urlsafe_b64encode(bytes(range(16))).decode()
    assert FORMATS.conforms(text, "push-auth-secret") and FORMATS.conforms(text.rstrip("="), "push-auth-secret")
    assert not FORMATS.conforms(base64.urlsafe_b64encode(bytes(15)).decode(), "push-auth-secret")
    assert not FORMATS.conforms("not+base64/url", "push-auth-secret")


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet="0123456789", min_size=5, max_size=6))
def test_municipality_format_is_the_check_digit_rule(code: str) -> None:
    """Oracle: sonae.municipality_code (JIS X 0402, and a municipality's: not 000001 or a prefecture's own)."""
    try:
        normalise_municipality(code)
        valid = True
    except MunicipalityCodeError:
        valid = False
    assert FORMATS.conforms(code, "municipality-code") == valid
    assert FORMATS.conforms("072036", "municipality-code") and not FORMATS.conforms("072037", "municipality-code")


def test_bbox_order() -> None:
    assert parse_bbox("140.3,37.3,140.5,37.5") == (140.3, 37.3, 140.5, 37.5)
    for text in ("140.5,37.3,140.3,37.5", "140.3,37.5,140.5,37.3", "1,2,3", "a,b,c,d", "nan,1,2,3", "-181,0,1,1",
                 "1_0,1,20,2"):
        with pytest.raises(ValueError):
            parse_bbox(text)
        assert not FORMATS.conforms(text, "bbox")


@pytest.mark.parametrize("port", ["1", "80", "8080", "10000", "65535"])
def test_webhook_url_allows_every_port(port: str) -> None:
    """The earlier pattern allowed at most 4 port digits: https://partner.example:10000/ was refused."""
    import re

    pattern = document()["paths"]["/api/v1/webhooks"]["post"]["requestBody"]["content"]["application/json"][
        "schema"]["properties"]["url"]["pattern"]
    assert re.search(pattern, f"https://partner.example:{port}/hook")
    for bad in ("0", "65536", "99999", "080"):
        assert not re.fullmatch(PORT, bad)


def test_boundary_measure_is_bounded_for_huge_areas() -> None:
    """A continent-wide area was sampled every 5 m (minutes on the event loop, inside a transaction):
    now at most MAX_SAMPLES points, and the answer for a small area is unchanged (oracle: shapely's
    exact distance from the far corner)."""
    town = Boundary("072036", "Kori", box(140.50, 37.80, 140.60, 37.90))
    index = BoundaryIndex([town])
    # reaches 0.01° of longitude east of the border: the far corners are the farthest points
    small = box(140.55, 37.84, 140.61, 37.86)
    import math

    from ingest.boundaries import _M_PER_DEG_LAT, _M_PER_DEG_LON_EQ

    expected = 0.01 * _M_PER_DEG_LON_EQ * math.cos(math.radians(small.centroid.y))
    assert index.beyond_m("072036", small) == pytest.approx(expected, rel=1e-3)
    huge = Polygon([(100, 0), (179, 0), (179, 80), (100, 80)])
    beyond = index.beyond_m("072036", huge)
    assert beyond is not None and beyond > 1_000_000  # thousands of km, measured
    assert MAX_SAMPLES <= 100_000
    assert _M_PER_DEG_LAT > 0


# -- served: the problem names the field and the rule ----------------------------------------------------
@pytest.fixture
async def served(pool: asyncpg.Pool, unlimited_settings: Settings) -> Any:
    client = await start_client(create_app(pool=pool, settings=unlimited_settings))
    async with pool.acquire() as conn:
        signed = await signed_in(conn, (("admin-all", "admin", None), ("staff-kori", "staff", KORI),
                                        ("op-kori", "operator", KORI)), PASSWORD)
    tokens = {name: {"Authorization": f"Bearer {token}"} for name, token in signed.items()}
    try:
        yield client, tokens
    finally:
        await client.close()


async def _problem(resp: Any, status: int = 400) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    return dict(await resp.json())


async def test_a_violation_names_the_field_and_the_rule(served: Any) -> None:
    client, tokens = served
    body = await _problem(await client.post("/api/v1/webhooks", json={"url": "ftp://x.example/"},
                                            headers=tokens["admin-all"]))
    assert (body["field"], body["rule"]) == ("url", "pattern")
    body = await _problem(await client.put("/api/v1/roster/staff-kori", json={"email": "no-at-sign"},
                                           headers=tokens["admin-all"]))
    assert (body["field"], body["rule"]) == ("email", "pattern")
    body = await _problem(await client.post("/api/v1/orders", json={"level": 4, "nte": "typo"},
                                            headers=tokens["staff-kori"]))
    assert (body["field"], body["rule"]) == ("nte", "additionalProperties")
    body = await _problem(await client.get("/api/v1/shelters/nearest?lat=91&lon=140"))
    assert (body["parameter"], body["rule"]) == ("lat", "maximum")
    assert "91" not in body["detail"]  # a position is never echoed
    body = await _problem(await client.get("/api/v1/stations?municipality=072037"))
    assert (body["parameter"], body["rule"]) == ("municipality", "format:municipality-code")
    body = await _problem(await client.get("/ngsi-ld/v1/entities/no-colon"))
    assert body["type"].endswith("BadRequestData") and body["rule"] == "format:ngsi-ld-id"


async def test_webhook_on_a_five_digit_port_is_registered(served: Any) -> None:
    client, tokens = served
    resp = await client.post("/api/v1/webhooks", json={"url": "https://partner.example:65535/hook"},
                             headers=tokens["admin-all"])
    assert resp.status == 201, await resp.text()
    body = await _problem(await client.post("/api/v1/webhooks", json={"url": "https://partner.example:65536/hook"},
                                            headers=tokens["admin-all"]))
    assert body["field"] == "url"


@pytest.mark.parametrize("padded", [True, False])
async def test_push_keys_padded_or_not(served: Any, padded: bool) -> None:
    client, _ = served

    def b64(data: bytes) -> str:
        text = base64.urlsafe_b64encode(data).decode()
        return text if padded else text.rstrip("=")

    # as a browser's PushSubscription.toJSON() gives it, expirationTime included
    resp = await client.post("/api/v1/push/subscriptions", json={
        "subscription": {"endpoint": "https://fcm.googleapis.com/fcm/send/1", "expirationTime": None,
                         "keys": {"p256dh": b64(_point(7)), "auth": b64(bytes(range(16)))}},
        "areas": [{"municipality_code": KORI}]})
    assert resp.status == 201, await resp.text()
    body = await _problem(await client.post("/api/v1/push/subscriptions", json={
        "subscription": {"endpoint": "https://fcm.googleapis.com/fcm/send/1",
                         "keys": {"p256dh": b64(b"\x04" + bytes(64)), "auth": b64(bytes(range(16)))}},
        "areas": [{"municipality_code": KORI}]}))
    assert (body["field"], body["rule"]) == ("subscription.keys.p256dh", "format:p256-public-key")


async def test_self_crossing_areas_are_400_with_the_reason(served: Any) -> None:
    """A bow-tie hazard area or order area answered 500 (shapely's TopologyException at the boundary check)."""
    client, tokens = served
    for path, body, name in (("/api/v1/hazards", {"geometry": BOW_TIE}, "geometry"),
                             ("/api/v1/orders", {"level": 4, "area": BOW_TIE}, "area")):
        problem = await _problem(await client.post(path, json=body, headers=tokens["staff-kori"]))
        assert problem["field"] == name and "Self-intersection" in problem["detail"], problem
    resp = await client.post("/api/v1/hazards", json={"geometry": SQUARE, "exercise": True},
                             headers=tokens["staff-kori"])
    assert resp.status in (201, 403), await resp.text()  # 403: the square lies beyond Kōri's border


#: every kind of input schemathesis found (issue #16), as (role, method, path, body, status, rule): a
#: valid request the service refused, or an invalid one it accepted; the rule is the problem's ``rule``
FOUND: list[tuple[str | None, str, str, Any, int, str | None]] = [
    # valid requests that were refused
    (None, "GET", "/api/v1/alerts?municipality=072036&exercise=true&audience=public&lang=ja-easy", None, 200, None),
    (None, "GET", "/api/v1/level?lat=-90&lang=ja", None, 422, None),  # lat and lon come together
    (None, "GET", "/api/v1/stations/0/readings?from=2000-01-01T00:00:00Z&kind=level&bucket=10m", None, 422, None),
    (None, "GET", "/api/v1/stations/0/readings?from=2028-04-13T14:30:00Z", None, 422, None),
    (None, "GET", "/ngsi-ld/v1/entities?limit=0&count=true&format=normalized", None, 200, None),
    (None, "GET", "/ngsi-ld/v1/entities?q=waterLevel%3E2.5&limit=841&offset=1000000000", None, 200, None),
    ("garbage", "GET", "/ngsi-ld/v1/entities", None, 200, None),  # a public view ignores a bad token
    (None, "GET", "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WaterObserved:x?aggrPeriodDuration=PT10M&timeAt="
                  "2000-01-01T00:00:00Z", None, 422, None),  # aggregated values need aggrMethods
    ("staff-kori", "PATCH", "/api/v1/shelters/s1", {"capacity": 222.0, "occupancy": 82.0, "is_open": False}, 200,
     None),
    ("admin-all", "PUT", "/api/v1/accounts/staff-kori/real-injection", {"allowed": True}, 409, None),
    ("admin-all", "PUT", "/api/v1/roster/admin-all", {"email": "a@example.jp"}, 422, None),  # names no municipality
    ("admin-all", "POST", "/api/v1/orders", {"level": 3}, 422, None),
    # invalid requests, refused with the field or parameter and the rule
    (None, "GET", "/api/v1/alerts/feed.atom?municipality=433982", None, 400, "format:municipality-code"),
    (None, "GET", "/api/v1/alerts/history?limit=233&station=%03%00", None, 400, None),  # NUL (api.edge)
    (None, "GET", "/api/v1/network.geojson?bbox=%F1%93%A4%9DA%C3%B0", None, 400, "format:bbox"),
    (None, "GET", "/api/v1/shelters?bbox=140.5,37.3,140.3,37.5", None, 400, "format:bbox"),
    (None, "GET", "/api/v1/shelters?q=%C3%B2%01%1F", None, 400, "format:printable"),
    (None, "GET", "/api/v1/shelters?municipalty=072036", None, 400, "unknown"),
    (None, "GET", "/ngsi-ld/v1/entities/0?attrs=&format=normalized", None, 400, "format:ngsi-ld-id"),
    (None, "GET", "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:Alert:1?x-schemathesis-unknown-property=42", None, 400,
     "unknown"),
    (None, "GET", "/ngsi-ld/v1/entities?georel=near;maxDistance==x", None, 400, "pattern"),
    ("admin-all", "POST", "/api/v1/accounts", {"username": "000", "password": "0123456789abc", "role": "staff",
                                               "municipality_code": "07203", "display_name": None}, 400, "type"),
    ("admin-all", "POST", "/api/v1/accounts", {"username": "3Op", "password": "0123456789abc", "role": "staff",
                                               "municipality_code": "247384"}, 400, "format:municipality-code"),
    ("admin-all", "POST", "/api/v1/webhooks", {"url": "http://0", "conditions": None}, 400, "type"),
    ("admin-all", "POST", "/api/v1/webhooks", {"url": "http://0", "conditions": []}, 400, "minItems"),
    ("staff-kori", "POST", "/api/v1/orders", {"level": 4, "x": [[{"y": -1819654277733707939840}]]}, 400, None),
    ("staff-kori", "POST", "/api/v1/orders", {"level": 4, "x": 1}, 400, "additionalProperties"),
    ("staff-kori", "POST", "/api/v1/orders", {"level": 3, "area": {}}, 400, "format:geojson-area"),
    ("staff-kori", "POST", "/api/v1/hazards", {"geometry": {"type": "Polygon", "coordinates": [None, None]}}, 400,
     "format:geojson-geometry"),
    ("staff-kori", "POST", "/api/v1/hazards", {"geometry": {"type": "Point", "coordinates": []}}, 400,
     "format:geojson-geometry"),
    ("staff-kori", "PUT", "/api/v1/hazard-maps/0/link", {"kind": "gauge", "ref": "", "at_level": 4}, 400, None),
    ("staff-kori", "PUT", "/api/v1/hazard-maps/0/link", {"kind": "jma_area", "ref": "0", "at_level": 1}, 400, None),
    ("admin-all", "PUT", "/api/v1/roster/staff-kori", {"email": "x@y", "municipality_code": "646604"}, 400,
     "format:municipality-code"),
    (None, "POST", "/api/v1/push/subscriptions", {"subscription": {"endpoint": "", "keys": {"p256dh": "x", "auth": "y"}},
                                                  "areas": [{"lat": 0.0, "lon": 0.0, "radius_m": 100.0}]}, 400, None),
    ("op-kori", "POST", "/api/v1/simulations", {"scenario": {}, "exercise": True}, 400, "required"),
]


async def test_what_schemathesis_found(served: Any, pool: asyncpg.Pool) -> None:
    client, tokens = served
    from evac.shelters import Shelter
    from evac.store import import_shelters

    async with pool.acquire() as conn:
        await import_shelters(conn, [Shelter(id="s1", name="S", lat=37.4, lon=140.36, hazards=frozenset({"flood"}),
                                             municipality_code=KORI)], actor="t")
    wrong = []
    for who, method, path, body, status, rule in FOUND:
        headers = {} if who is None else (
            {"Authorization": "Bearer garbage"} if who == "garbage" else tokens[who])
        resp = await client.request(method, path, json=body, headers=headers)
        text = await resp.text()
        got_rule = (await resp.json()).get("rule") if resp.content_type == "application/problem+json" else None
        if resp.status != status or (rule is not None and got_rule != rule):
            wrong.append(f"{method} {path} {body!r}: {resp.status} {text[:300]}")
    assert not wrong, "\n".join(wrong)


def test_a_drawn_area_is_placed_by_the_boundary_rule() -> None:
    """``BoundaryIndex.place_area`` (moved out of the API, issue #20): the municipality given, else the
    one holding the largest part; it fits up to BORDER_SLACK_M past the border (metres measured as
    in ``beyond_m``; oracle: the box's own offset)."""
    from ingest.boundaries import _M_PER_DEG_LON_EQ, BORDER_SLACK_M

    kori = Boundary("072036", "Kori", box(140.50, 37.80, 140.60, 37.90))
    east = Boundary("072010", "East", box(140.60, 37.80, 140.70, 37.90))
    index = BoundaryIndex([kori, east])
    m_per_deg = _M_PER_DEG_LON_EQ * math.cos(math.radians(37.85))
    for reach_m, fits in ((0.0, True), (BORDER_SLACK_M * 0.8, True), (BORDER_SLACK_M * 1.5, False)):
        area = box(140.55, 37.84, 140.60 + reach_m / m_per_deg, 37.86)
        placed = index.place_area(area, "072036")
        assert placed.municipality == "072036"
        assert placed.beyond_m == pytest.approx(reach_m, abs=0.5)
        assert placed.fits is fits
        assert index.place_area(area, None).municipality == "072036"  # the largest part is Kori's
    assert index.place_area(box(140.58, 37.84, 140.69, 37.86), None).municipality == "072010"
    assert index.place_area(box(141.0, 37.0, 141.1, 37.1), None).municipality is None  # outside both
    unknown = index.place_area(box(140.55, 37.84, 140.56, 37.85), "079999")
    assert unknown.beyond_m is None and unknown.fits  # no boundary for it: not checked
