"""CAP identity and completeness (issue #15 item 6): globally unique sender + identifier, holes,
Cancel in the feed until it expires, expires on every message, the cancellation note."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from shapely.geometry import Point, Polygon, box
from shapely.ops import unary_union

from alerting import store
from alerting.cap import CAP_NS, render_cap
from alerting.cap_area import hole_free_polygons
from alerting.cap_identity import CapProfile, derived_sender, load_profile, profile_from_settings
from api.app import create_app
from api.auth import create_account, login
from sonae.config import Settings, load_settings
from sonae.migrations import migrate
from tests.alerting.cap_support import assert_valid_cap
from tests.alerting.test_alerting_cap import PREVIOUS, T0, alert
from tests.api_support import start_client
from tests.conftest import with_database

NS = {"c": CAP_NS, "a": "http://www.w3.org/2005/Atom"}
KORIYAMA = "072036"
OUTER = [[140.30, 37.30], [140.50, 37.30], [140.50, 37.50], [140.30, 37.50], [140.30, 37.30]]
HOLE = [[140.35, 37.35], [140.35, 37.40], [140.40, 37.40], [140.40, 37.35], [140.35, 37.35]]
#: an L-shaped hole: its centroid lies outside it, so a cut through the centroid would miss it
L_HOLE = [[140.42, 37.42], [140.48, 37.42], [140.48, 37.44], [140.44, 37.44], [140.44, 37.48], [140.42, 37.48],
          [140.42, 37.42]]


@contextlib.asynccontextmanager
async def installation(pg_server_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A second, separately migrated database: another installation of Sonae."""
    name = f"sonae_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    pool = await asyncpg.create_pool(with_database(pg_server_url, name), min_size=1, max_size=4)
    try:
        async with pool.acquire() as conn:
            await migrate(conn)
        yield pool
    finally:
        await pool.close()
        admin = await asyncpg.connect(pg_server_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _settings(database_url: str, **env: str) -> Settings:
    return load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_LOG_FORMAT": "text", **env})


# -- identity --------------------------------------------------------------------------------------
async def test_two_installations_never_share_sender_and_identifier(pool: asyncpg.Pool, pg_server_url: str) -> None:
    async with installation(pg_server_url) as other:
        identities = []
        for p in (pool, other):
            async with p.acquire() as conn:
                _, change = await store.issue_order(conn, municipality_code=KORIYAMA, level=4, issued_by="duty")
                a = await store.get_alert(conn, change.alert_id)
                assert a is not None
                profile = await load_profile(conn)
                again = await load_profile(conn)
                assert again == profile  # made once, kept
                doc = etree.fromstring(render_cap(a, await store.messages_of(conn, a["id"]), profile=profile))
            assert change.alert_id == 1  # both databases count from 1 ...
            identities.append((doc.findtext("c:sender", namespaces=NS), doc.findtext("c:identifier", namespaces=NS)))
    assert identities[0] != identities[1] and identities[0][1] != identities[1][1]  # ... the identifiers differ
    assert all("sonae.example.jp" not in s for s, _ in identities)


async def test_sender_and_installation_come_from_settings(pool: asyncpg.Pool, database_url: str) -> None:
    async with pool.acquire() as conn:
        configured = await profile_from_settings(conn, _settings(
            database_url, SONAE_CAP_SENDER="bousai-{municipality}@pref.fukushima.lg.jp",
            SONAE_CAP_INSTALLATION_ID="koriyama-1", SONAE_CAP_EXPIRES_HOURS="6"))
        derived = await profile_from_settings(conn, _settings(database_url,
                                                              SONAE_API_PUBLIC_URL="https://bousai.city.example/"))
        stored = await conn.fetchval("SELECT installation_id FROM sonae_installation")
    assert configured == CapProfile("koriyama-1", "bousai-{municipality}@pref.fukushima.lg.jp", 6)
    assert configured.sender_for(KORIYAMA) == "bousai-072036@pref.fukushima.lg.jp"
    assert configured.identifier(7, 2) == "sonae-koriyama-1-alert-7-v2"
    assert derived.sender == "sonae@bousai.city.example" and derived.installation == stored
    with pytest.raises(Exception, match="SONAE_CAP_SENDER|cap.sender"):
        _settings(database_url, SONAE_CAP_SENDER="two words@x")


def test_derived_sender() -> None:
    assert derived_sender("https://sonae.city.koriyama.lg.jp/path", "abc") == "sonae@sonae.city.koriyama.lg.jp"
    for local in ("", None, "http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        assert derived_sender(local, "abc") == "sonae@abc.invalid"


# -- holes -----------------------------------------------------------------------------------------
def _cap_polygons(xml: bytes) -> list[Polygon]:
    doc = etree.fromstring(xml)
    out = []
    for text in doc.findall("c:info", NS)[0].findall("c:area/c:polygon", NS):
        pts = [tuple(map(float, p.split(","))) for p in text.text.split()]
        out.append(Polygon([(lon, lat) for lat, lon in pts]))
    return out


def _assert_equivalent(parts: list[Polygon], original: Polygon, inside_holes: list[Point]) -> None:
    assert all(not p.interiors and p.is_valid for p in parts)
    union = unary_union(parts)
    assert union.symmetric_difference(original).area < 1e-9 * max(original.area, 1e-12)
    for point in inside_holes:
        assert not any(p.contains(point) for p in parts), point


def test_an_order_with_holes_is_published_as_hole_free_polygons() -> None:
    area = {"type": "MultiPolygon", "coordinates": [[OUTER, HOLE, L_HOLE],
                                                    [[[140.6, 37.3], [140.7, 37.3], [140.7, 37.4], [140.6, 37.3]]]]}
    a = alert(condition="evacuation_order", station_id=None, order_id=3, level=4, version=1, lat=None, lon=None,
              area=area, area_desc="阿久津地区（高台を除く）", reason="order")
    xml = render_cap(a, PREVIOUS[:1], profile=CapProfile("t", "sonae@sonae.test"))
    assert_valid_cap(xml)
    parts = _cap_polygons(xml)
    holed = Polygon(OUTER, [HOLE, L_HOLE])
    original = unary_union([holed, Polygon([(140.6, 37.3), (140.7, 37.3), (140.7, 37.4)])])
    _assert_equivalent(parts, original, [Point(140.375, 37.375), Point(140.43, 37.47), Point(140.47, 37.43)])
    assert len(parts) >= 4  # before: the outer rings only, covering the holes


def test_an_invalid_area_with_a_hole_still_gives_valid_cap() -> None:
    bow_tie = [[140.30, 37.30], [140.50, 37.50], [140.50, 37.30], [140.30, 37.50], [140.30, 37.30]]
    a = alert(condition="evacuation_order", station_id=None, order_id=3, level=4, version=1, lat=None, lon=None,
              area={"type": "Polygon", "coordinates": [bow_tie, HOLE]}, area_desc="x", reason="order")
    xml = render_cap(a, PREVIOUS[:1], profile=CapProfile("t", "sonae@sonae.test"))
    assert_valid_cap(xml)
    assert all(not p.interiors for p in _cap_polygons(xml))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 0.85), st.floats(0.05, 0.85), st.floats(0.01, 0.1), st.floats(0.01, 0.1)),
                min_size=1, max_size=5))
def test_hole_free_polygons_cover_exactly_the_area(holes: list[tuple[float, float, float, float]]) -> None:
    shell = box(0, 0, 1, 1)
    boxes: list[Polygon] = []
    for x, y, w, h in holes:
        b = box(x, y, x + w, y + h)
        if all(b.distance(o) > 1e-3 for o in boxes):
            boxes.append(b)
    original = Polygon(shell.exterior.coords, [b.exterior.coords for b in boxes])
    assert original.is_valid
    parts = hole_free_polygons({"type": "Polygon", "coordinates": [
        [list(c) for c in ring.coords] for ring in (original.exterior, *original.interiors)]})
    _assert_equivalent(parts, original, [b.centroid for b in boxes])


# -- expires, Cancel, the feed ----------------------------------------------------------------------
@pytest.mark.parametrize("over", [
    {}, {"version": 1, "state": "raised"}, {"version": 4, "state": "cleared", "cleared_at": T0},
    {"condition": "fault", "level": 0, "audience": "staff"},
    {"condition": "evacuation_order", "station_id": None, "order_id": 3, "level": 5, "lat": None, "lon": None}])
def test_every_message_expires(over: dict[str, Any]) -> None:
    xml = render_cap(alert(**over), PREVIOUS, profile=CapProfile("t", "sonae@sonae.test", expires_hours=6))
    assert_valid_cap(xml)
    doc = etree.fromstring(xml)
    sent = datetime.fromisoformat(doc.findtext("c:sent", namespaces=NS))
    expires = [datetime.fromisoformat(e) for e in doc.xpath("c:info/c:expires/text()", namespaces=NS)]
    assert len(expires) == len(doc.findall("c:info", NS)) == 3
    assert all(e - sent == timedelta(hours=6) for e in expires)


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    c = await start_client(create_app(pool=pool, settings=settings))
    try:
        yield c
    finally:
        await c.close()


async def test_cancelled_order_stays_in_the_feed_as_cancel_without_staff_notes(client: TestClient, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await create_account(conn, username="duty", password="correct horse battery", role="staff",
                             municipality_code=KORIYAMA)
        token = (await login(conn, "duty", "correct horse battery") or ("",))[0]
    headers = {"Authorization": f"Bearer {token}"}
    r = await client.post("/api/v1/orders", headers=headers,
                          json={"level": 4, "note": "川沿いの方は直ちに避難してください",
                                "area": {"type": "Polygon", "coordinates": [OUTER, HOLE]}})
    assert r.status == 201
    order = await r.json()
    r = await client.post(f"/api/v1/orders/{order['order_id']}/cancel", headers=headers,
                          json={"note": "水位が下がったため解除します"})
    assert r.status < 300, await r.text()
    feed = etree.fromstring(await (await client.get("/api/v1/alerts/feed.atom")).read())
    entries = feed.findall("a:entry", NS)
    assert len(entries) == 1  # a cleared alert is no longer active, but its Cancel is still news
    assert entries[0].findtext("a:summary", namespaces=NS).startswith("Cancel")
    xml = await (await client.get(f"/api/v1/alerts/{order['alert_id']}.cap")).read()
    assert_valid_cap(xml)
    doc = etree.fromstring(xml)
    assert doc.findtext("c:msgType", namespaces=NS) == "Cancel"
    # the notes are staff memos (the console's メモ; hidden from public JSON reads, issue #16): a CAP
    # message is public, so neither the order's note nor its cancellation note is in it
    assert "水位が下がったため解除します" not in xml.decode() and "直ちに避難" not in xml.decode()
    assert doc.xpath("c:info/c:expires/text()", namespaces=NS)
    # once the Cancel has expired, it leaves the feed
    async with pool.acquire() as conn:
        await conn.execute("UPDATE alert_events SET recorded_at = recorded_at - interval '25 hours' "
                           "WHERE alert_id = $1 AND kind = 'cleared'", order["alert_id"])
    feed = etree.fromstring(await (await client.get("/api/v1/alerts/feed.atom")).read())
    assert feed.findall("a:entry", NS) == []
