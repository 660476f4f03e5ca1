"""CORS over the real API and a real database: an allowed origin gets ``Access-Control-Allow-Origin`` on
every answer (Fetch standard §3.2 CORS check), problems and the event stream included (found: 400, 404,
422 and ``/api/v1/events`` lacked it, so a partner's page could read none of them), and preflights stay
as they were."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from api.app import create_app
from sonae.config import ConfigError, Settings, load_settings
from sonae.origins import serialised_origin
from tests.api_support import start_client

PARTNER = "https://partner.example"


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    c = await start_client(create_app(pool=pool, settings=settings.replace(api__cors_origins=PARTNER)))
    try:
        yield c
    finally:
        await c.close()


def _vary(resp: object) -> set[str]:
    return {v.strip().lower() for line in resp.headers.getall("Vary", []) for v in line.split(",")}  # type: ignore[attr-defined]


@pytest.mark.parametrize(("method", "path", "params", "body", "status"), [
    ("GET", "/api/v1/level", {"lat": "95", "lon": "1"}, None, 400),
    ("GET", "/api/v1/level", {}, None, 422),
    ("GET", "/nope", {}, None, 404),
    ("POST", "/api/v1/push/subscriptions", {}, {}, 400),
    ("GET", "/api/v1/sensors/health", {}, None, 401),
    ("GET", "/api/v1/level", {"municipality": "072036"}, None, 200),
])
async def test_an_allowed_origin_gets_cors_headers_on_every_status(
        client: TestClient, method: str, path: str, params: dict[str, str], body: object, status: int) -> None:
    resp = await client.request(method, path, params=params, json=body, headers={"Origin": PARTNER})
    assert resp.status == status, await resp.text()
    assert resp.headers.get("Access-Control-Allow-Origin") == PARTNER, (path, dict(resp.headers))
    assert "origin" in _vary(resp)
    other = await client.request(method, path, params=params, json=body, headers={"Origin": "https://else.example"})
    assert other.status == status
    assert "Access-Control-Allow-Origin" not in other.headers and "origin" in _vary(other)


async def test_a_route_outside_the_area_is_a_problem_with_cors_headers(client: TestClient) -> None:
    resp = await client.get("/api/v1/route", params={"lat": "-33.9", "lon": "151.2"}, headers={"Origin": PARTNER})
    assert resp.status >= 400, await resp.text()
    assert resp.headers.get("Access-Control-Allow-Origin") == PARTNER


async def test_the_event_stream_has_cors_headers(client: TestClient) -> None:
    """The stream's head is written by its handler before it returns: the headers are added as it is."""
    resp = await client.get("/api/v1/events", headers={"Origin": PARTNER})
    try:
        assert resp.status == 200
        assert resp.headers.get("Access-Control-Allow-Origin") == PARTNER
        assert "origin" in _vary(resp)
    finally:
        resp.close()


async def test_a_preflight_is_answered_as_before(client: TestClient) -> None:
    resp = await client.options("/api/v1/push/subscriptions", headers={
        "Origin": PARTNER, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == PARTNER
    assert "POST" in resp.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in resp.headers["Access-Control-Allow-Headers"]
    assert resp.headers["Access-Control-Max-Age"] == "600"
    refused = await client.options("/api/v1/push/subscriptions", headers={
        "Origin": "https://else.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_an_allowed_origin_may_read_the_apis_own_headers(client: TestClient) -> None:
    """Fetch §3.2.5: without ``Access-Control-Expose-Headers`` a page reads only the safelisted headers (found:
    a partner could read neither a 429's Retry-After nor an ETag, a Location, a Link)."""
    for method, path in (("GET", "/api/v1/level?municipality=072036"), ("GET", "/nope")):
        resp = await client.request(method, path, headers={"Origin": PARTNER})
        exposed = {v.strip().lower() for v in resp.headers.get("Access-Control-Expose-Headers", "").split(",")}
        assert {"retry-after", "etag", "location", "link", "content-language"} <= exposed, resp.headers
    other = await client.get("/api/v1/level?municipality=072036", headers={"Origin": "https://other.example"})
    assert "Access-Control-Expose-Headers" not in other.headers


@pytest.mark.parametrize("configured", ["https://Partner.EXAMPLE/", "HTTPS://partner.example:443", " https://partner.example/ "])
async def test_a_configured_origin_is_compared_in_its_serialised_form(
        pool: asyncpg.Pool, settings: Settings, configured: str) -> None:
    """RFC 6454 §6.2: a browser sends ``https://partner.example`` (found: ``https://Other.example/`` configured
    never matched it)."""
    c = await start_client(create_app(pool=pool, settings=settings.replace(api__cors_origins=f"https://x.example,{configured}")))
    try:
        resp = await c.get("/api/v1/level?municipality=072036", headers={"Origin": PARTNER})
        assert resp.headers.get("Access-Control-Allow-Origin") == PARTNER
        preflight = await c.options("/api/v1/push/subscriptions", headers={
            "Origin": PARTNER, "Access-Control-Request-Method": "POST"})
        assert preflight.status == 204 and preflight.headers.get("Access-Control-Allow-Origin") == PARTNER
    finally:
        await c.close()


async def test_two_origins_in_one_request_are_no_allowed_origin(client: TestClient) -> None:
    two = CIMultiDict([("Origin", PARTNER), ("Origin", PARTNER)])
    resp = await client.get("/api/v1/level?municipality=072036", headers=two)
    assert resp.status == 200
    assert "Access-Control-Allow-Origin" not in resp.headers and "origin" in _vary(resp)
    mixed = CIMultiDict([("Origin", "https://evil.example"), ("Origin", PARTNER)])
    assert "Access-Control-Allow-Origin" not in (await client.get("/api/v1/level?municipality=072036", headers=mixed)).headers


@pytest.mark.parametrize("bad", ["https://partner.example/page", "partner.example", "ftp://partner.example",
                                 "https://partner.example?x=1", "https://user@partner.example"])
def test_an_origin_setting_that_names_no_origin_is_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match="SONAE_API_CORS_ORIGINS"):
        load_settings(environ={"SONAE_API_CORS_ORIGINS": f"https://ok.example, {bad}"})
    assert load_settings(environ={"SONAE_API_CORS_ORIGINS": "*, https://Ok.example/"})["api.cors_origins"]


@pytest.mark.parametrize("origins", [
    [PARTNER, PARTNER], ["https://evil.example", PARTNER],  # two Origin headers
    [f"{PARTNER} https://evil.example"], [f"{PARTNER}, https://evil.example"],  # an origin list in one (RFC 6454 §7)
    [f"{PARTNER},{PARTNER}"], ["https://partner.example/page"], ["partner.example"], [""], ["null null"],
])
@pytest.mark.parametrize("configured", ["*", PARTNER])
async def test_a_request_whose_origin_is_malformed_gets_no_cors_headers_even_with_a_wildcard(
        pool: asyncpg.Pool, settings: Settings, configured: str, origins: list[str]) -> None:
    """Found: with ``api.cors_origins = *`` a request with two ``Origin`` headers, or an origin list in one,
    got ``Access-Control-Allow-Origin: *``. Fetch (§3.1 `Origin` header: ``origin-or-null``, one serialised
    origin or ``null``) gives no request more than one origin: such a request is no browser's CORS request
    and is answered as one without an origin (no CORS headers, ``Vary: Origin`` kept), whatever is allowed.
    A well-formed origin, and ``null`` (an opaque origin), still get ``*``."""
    c = await start_client(create_app(pool=pool, settings=settings.replace(api__cors_origins=configured)))
    try:
        resp = await c.get("/api/v1/level?municipality=072036", headers=CIMultiDict([("Origin", o) for o in origins]))
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers, (origins, dict(resp.headers))
        assert "origin" in _vary(resp)
        preflight = await c.options("/api/v1/level", headers=CIMultiDict(
            [*(("Origin", o) for o in origins), ("Access-Control-Request-Method", "GET")]))
        assert "Access-Control-Allow-Origin" not in preflight.headers and preflight.status != 204
        if configured == "*":
            for good in (PARTNER, "null"):
                ok = await c.get("/api/v1/level?municipality=072036", headers={"Origin": good})
                assert ok.headers.get("Access-Control-Allow-Origin") == "*", good
    finally:
        await c.close()


_HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)


@given(_HOSTS, _HOSTS, st.sampled_from([" ", ", ", ",", "\t", "  "]))
def test_an_origin_list_is_no_origin(a: str, b: str, sep: str) -> None:
    """RFC 6454 §7's origin list, or two origins joined any way, is no one origin (``serialised_origin``)."""
    assert serialised_origin(f"https://{a}") == f"https://{a}"
    assert serialised_origin(f"https://{a}{sep}https://{b}") is None
    assert serialised_origin(f"https://{a}{sep}{b}") is None
