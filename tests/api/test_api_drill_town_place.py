"""A point in the drill town is in it for exercise answers: its whole-town drill orders reach it.

Found (break-it pass 6, ``repro/drill_order_invisible.sh``): a level-5 drill order for the drill town (079995)
with no area was in force, yet ``/api/v1/level`` at three points of the town answered 郡山市's (072036) level
3 with gauge sources only; the drill town has no boundary and lies inside 郡山市. Real PostgreSQL, the shipped
boundaries, the drill town generated and seeded as ``evac.service`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from alerting.drilltown import drill_town_box, reaches
from alerting.store import issue_order
from evac import store as evac_store
from evac.service import DRILLTOWN, ensure_drilltown
from evac.shelters import load_shelters
from sonae.config import Settings, load_settings
from sonae.municipality_code import DRILL_TOWN_CODE
from tests.api.test_api_coverage import _deployment, _subscription
from tests.api.test_api_staff import make_client

KORI = "072036"
#: the reproduction's points: the town's centre, near its western edge, near its south-west corner
IN_TOWN = ((37.4000, 140.3600), (37.3921, 140.3453), (37.384046, 140.3408219))
#: in 郡山市 too, 3 km west of the drill town
OUTSIDE_TOWN = (37.40, 140.28)


@pytest.fixture
def psettings(database_url: str) -> Settings:
    return load_settings(environ={"SONAE_DATABASE_URL": database_url, "SONAE_NOTIFY_PUSH_ALLOW_HTTP": "true",
                                  "SONAE_API_RATE_LIMIT_PER_MINUTE": "0", "SONAE_LOG_FORMAT": "text"})


async def _seed_drill_town(conn: asyncpg.Connection, state_dir: Path) -> None:
    """As ``EvacService._seed_drilltown``: the generated town's shelters imported with source ``drilltown``."""
    town = ensure_drilltown(state_dir)
    await evac_store.name_drill_town(conn)
    await evac_store.import_shelters(conn, load_shelters(town / "shelters.geojson"), actor=DRILLTOWN,
                                     source=DRILLTOWN)


async def _level(client: TestClient, lat: float, lon: float) -> dict[str, Any]:
    resp = await client.get("/api/v1/level", params={"lat": str(lat), "lon": str(lon), "lang": "en"})
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_a_whole_town_drill_order_reaches_every_point_of_the_drill_town(
        pool: asyncpg.Pool, psettings: Settings, tmp_path: Path) -> None:
    await _deployment(pool)
    async with pool.acquire() as conn:
        await _seed_drill_town(conn, tmp_path)
        box = await drill_town_box(conn)
        assert box is not None and all(reaches(lat, lon, box) for lat, lon in IN_TOWN)
        order_id, _ = await issue_order(conn, municipality_code=DRILL_TOWN_CODE, level=5, issued_by="drill",
                                        exercise=True)
    client = await make_client(pool, psettings)
    try:
        for lat, lon in IN_TOWN:
            body = await _level(client, lat, lon)
            assert (body["level"], body["exercise"], body["municipality_code"], body.get("exercise_municipality_code"),
                    body["covered"]) == (5, True, KORI, DRILL_TOWN_CODE, True), ((lat, lon), body)
            assert [(s["kind"], s["level"], s.get("order_id")) for s in body["sources"]] == [
                ("order", 5, order_id)], body["sources"]
            assert "Kunren Town" in body["sources"][0]["name"], body["sources"]
        outside = await _level(client, *OUTSIDE_TOWN)
        assert (outside["level"], outside["municipality_code"], outside.get("exercise_municipality_code"),
                outside["exercise_in_progress"]) == (None, KORI, None, False), outside
        # real information decides in the drill town too: a real 郡山市 order speaks over the drill
        async with pool.acquire() as conn:
            await issue_order(conn, municipality_code=KORI, level=3, issued_by="kori", exercise=False)
        body = await _level(client, *IN_TOWN[0])
        assert (body["level"], body["exercise"], body["exercise_in_progress"]) == (3, False, True), body
    finally:
        await client.close()


async def test_without_boundaries_a_drill_town_point_is_real_kori_and_the_drill_town_for_drills(
        pool: asyncpg.Pool, psettings: Settings, tmp_path: Path) -> None:
    """No boundaries loaded (the nearest registered place decides): the nearest place to a drill-town point is
    a drill-town shelter, which made the point 079995's for real answers and a push circle there 079995's
    only (found: a real 郡山市 order reached neither). Real answers take the nearest real place's."""
    async with pool.acquire() as conn:
        await _seed_drill_town(conn, tmp_path)
        await conn.execute("INSERT INTO shelters (id, name, lat, lon, municipality_code, source) VALUES "
                           "('kori-1', '郡山の避難所', 37.40, 140.30, $1, 'import')", KORI)
        await issue_order(conn, municipality_code=KORI, level=4, issued_by="kori", exercise=False)
    client = await make_client(pool, psettings)
    try:
        body = await _level(client, *IN_TOWN[0])
        assert (body["level"], body["exercise"], body["municipality_code"],
                body.get("exercise_municipality_code")) == (4, False, KORI, DRILL_TOWN_CODE), body
        made = {}
        for n, drills in enumerate((True, False)):
            resp = await client.post("/api/v1/push/subscriptions", json={
                "subscription": _subscription(n), "drills": drills,
                "areas": [{"lat": IN_TOWN[0][0], "lon": IN_TOWN[0][1], "radius_m": 500}]})
            assert resp.status == 201, await resp.text()
            made[drills] = (await resp.json())["id"]
    finally:
        await client.close()
    async with pool.acquire() as conn:
        near = {drills: list(await conn.fetchval(
            "SELECT near_municipalities FROM push_areas WHERE subscription_id = $1", sub_id))
            for drills, sub_id in made.items()}
    assert near == {True: [KORI, DRILL_TOWN_CODE], False: [KORI]}, near

