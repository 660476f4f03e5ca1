"""Schemathesis hooks (``SCHEMATHESIS_HOOKS=tests.api.schemathesis_hooks``): how to generate values of
the document's named formats (``info.x-formats``, checked by :mod:`api.validation`).

Without these, schemathesis would make any string for an unknown format, and the service is right to
refuse most of them. Each strategy draws values the format's checker accepts, built independently of
it (the check digit by JIS X 0402's rule, keys from ``cryptography``, polygons as convex rings).
"""

from __future__ import annotations

import base64
import zlib
from datetime import date

import schemathesis
from hypothesis import strategies as st


def _b64u(data: bytes, padded: bool) -> str:
    text = base64.urlsafe_b64encode(data).decode()
    return text if padded else text.rstrip("=")


@st.composite
def municipality_codes(draw: st.DrawFn) -> str:
    """JIS X 0402: the check digit is 11 - (weighted sum mod 11) with weights 6..2, as its last digit."""
    five = draw(st.sampled_from(["07201", "07202", "07203", "07204", "07205", "07207", "07208", "07209",
                                 "07210", "07211", "07212", "07213", "07214", "07215", "07301", "07303"]))
    total = sum(int(d) * w for d, w in zip(five, (6, 5, 4, 3, 2), strict=True))
    check = (11 - total % 11) % 10 if total % 11 else 0
    return draw(st.sampled_from([five, five + str(check)]))


@st.composite
def p256_keys(draw: st.DrawFn) -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    seed = draw(st.integers(1, 2**64))
    key = ec.derive_private_key(seed, ec.SECP256R1()).public_key()
    point = key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return _b64u(point, draw(st.booleans()))


@st.composite
def auth_secrets(draw: st.DrawFn) -> str:
    return _b64u(draw(st.binary(min_size=16, max_size=16)), draw(st.booleans()))


@st.composite
def boxes(draw: st.DrawFn) -> str:
    west = draw(st.floats(140.0, 140.9, allow_nan=False))
    south = draw(st.floats(37.0, 37.9, allow_nan=False))
    east = west + draw(st.floats(0.001, 0.5))
    north = south + draw(st.floats(0.001, 0.5))
    return f"{west:.5f},{south:.5f},{east:.5f},{north:.5f}"


@st.composite
def areas(draw: st.DrawFn) -> dict[str, object]:
    """A small square near Fukushima city (a convex ring cannot cross itself)."""
    lon = draw(st.floats(140.40, 140.50, allow_nan=False))
    lat = draw(st.floats(37.70, 37.80, allow_nan=False))
    d = draw(st.floats(0.0005, 0.005, allow_nan=False))
    ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
    return {"type": "Polygon", "coordinates": [ring]}


@st.composite
def times(draw: st.DrawFn) -> str:
    day = draw(st.dates(min_value=date(2020, 1, 1), max_value=date(2030, 12, 31)))
    offset = draw(st.sampled_from(["", "Z", "+09:00", "-05:00"]))
    return f"{day.isoformat()}T{draw(st.integers(0, 23)):02d}:{draw(st.integers(0, 59)):02d}:00{offset}"


schemathesis.openapi.format("municipality-code", municipality_codes())
schemathesis.openapi.format("p256-public-key", p256_keys())
schemathesis.openapi.format("push-auth-secret", auth_secrets())
schemathesis.openapi.format("bbox", boxes())
schemathesis.openapi.format("geojson-area", areas())
schemathesis.openapi.format("geojson-geometry", areas())
schemathesis.openapi.format("date-time", times())
schemathesis.openapi.format("printable", st.text(
    st.characters(categories=("L", "N", "P", "S"), include_characters=" "), max_size=100))
#: what sonae.nametext refuses beyond the categories left out below: letters that show as a blank
_BLANK = "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0"
schemathesis.openapi.format("shown-line", st.text(
    st.characters(categories=("L", "N", "P", "S"), include_characters=" ", exclude_characters=_BLANK), max_size=100))
schemathesis.openapi.format("shown-lines", st.text(
    st.characters(categories=("L", "N", "P", "S"), include_characters=" \n", exclude_characters=_BLANK),
    max_size=100))
schemathesis.openapi.format("exact-text", st.text(
    st.characters(categories=("L", "N", "P", "S"), exclude_characters=_BLANK), min_size=1, max_size=40))
schemathesis.openapi.format("password", st.text(
    st.characters(categories=("L", "N", "P", "S"), include_characters=" ", exclude_characters=_BLANK),
    min_size=10, max_size=60))
schemathesis.openapi.format("ngsi-ld-q", st.sampled_from([
    "waterLevel>2.5", 'municipalityCode=="072036"', "waterLevel>=0;waterLevel<10", 'status=="open"|level>3']))
schemathesis.openapi.format("ngsi-ld-pattern", st.sampled_from([
    "^urn:ngsi-ld:WaterObserved:.*", "shelter", ".*", "dt-river-0[0-9]"]))
schemathesis.openapi.format("ngsi-ld-coordinates", st.sampled_from([
    "[140.47,37.75]", "[[[140.4,37.7],[140.5,37.7],[140.5,37.8],[140.4,37.7]]]",
    "[[[[140.4,37.7],[140.5,37.7],[140.5,37.8],[140.4,37.7]]]]"]))
schemathesis.openapi.format("ngsi-ld-id", st.sampled_from([
    "urn:ngsi-ld:WaterObserved:dt-river-01", "urn:ngsi-ld:PointOfInterest:shelter-1", "urn:ngsi-ld:Alert:1",
    "urn:ngsi-ld:Device:dt-river-01", "urn:ngsi-ld:Nothing:x"]))


#: request-body fields whose format is on an object (a GeoJSON geometry): hypothesis generates formats
#: for strings only, so a "valid" case would carry whatever object it made
_GEOMETRY_FIELDS = {("POST", "/api/v1/hazards"): "geometry", ("POST", "/api/v1/orders"): "area"}


#: an inline scenario the simulator's parser accepts (the document cannot spell the scenario grammar)
INLINE_SCENARIO = {"scenario": {"name": "fuzz", "duration": "1h"},
                   "rivers": [{"id": "fz", "name": "Fuzz", "reaches": [{"station": "fuzz-gauge", "area_km2": 10}]}]}


@schemathesis.hook
def map_case(context: schemathesis.HookContext, case: schemathesis.Case) -> schemathesis.Case:
    """In positive cases, a geometry field gets a valid square (derived from the generated object, so
    cases still differ) and an inline scenario a valid one; negative cases are left as generated."""
    meta = case.meta
    if ((case.method.upper(), case.operation.path) == ("POST", "/api/v1/simulations") and meta is not None
            and meta.generation.mode.is_positive and isinstance(case.body, dict)
            and isinstance(case.body.get("scenario"), dict)):
        case.body = {**case.body, "scenario": INLINE_SCENARIO}
        return case
    name = _GEOMETRY_FIELDS.get((case.method.upper(), case.operation.path))
    if (name is None or meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict)
            or not isinstance(case.body.get(name), dict)):
        return case
    step = (zlib.crc32(repr(case.body[name]).encode()) % 1000) / 100_000  # up to 0.01°: a few hundred metres
    lon, lat, d = 140.36 + step, 37.39 + step, 0.002
    case.body = {**case.body, name: {"type": "Polygon", "coordinates": [
        [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]]}}
    return case
