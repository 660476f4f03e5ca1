"""A station's 欠測 sentinel (``missing_at_or_below``) is shown wherever its thresholds are.

Found: ``PATCH /api/v1/stations/{id}`` took ``missing_at_or_below`` (the stage at or below which a reading is 欠測)
but no answer showed it — not the PATCH answer, the station list, one station, its GeoJSON, its CSV or its
NGSI-LD gauge — so staff could not see what they had set, nor open-data readers what the rules read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.openapi import COMPONENTS
from sonae.config import Settings
from tests.api.test_api_station_edit import _patch, tokens  # noqa: F401 - the fixture, used by name
from tests.api_support import start_client

#: the sentinel as PATCH takes it (m, null or "none" for no sentinel) → as every answer shows it
_SENTINEL = st.one_of(st.none(), st.just("none"),
                      st.floats(min_value=-100, max_value=3.7, allow_nan=False).map(lambda v: round(v, 2)))


@pytest.fixture
async def client(pool: asyncpg.Pool, unlimited_settings: Settings) -> AsyncIterator[TestClient]:
    """The whole API without the per-address request limit: the examples share one client, and their ~130
    anonymous reads would pass the default burst of 100 (found: 429 in a clean-clone run on a quiet machine)."""
    c = await start_client(create_app(pool=pool, settings=unlimited_settings))
    try:
        yield c
    finally:
        await c.close()


async def _shown(client: TestClient, station: str = "gauge") -> dict[str, Any]:
    """missing_at_or_below as each reading of the station shows it."""
    listed = {s["id"]: s for s in (await (await client.get("/api/v1/stations")).json())["stations"]}
    one = await (await client.get(f"/api/v1/stations/{station}")).json()
    geo = await (await client.get("/api/v1/stations", params={"format": "geojson"})).json()
    feature = next(f for f in geo["features"] if f["id"] == station)
    text = await (await client.get("/api/v1/stations", params={"format": "csv"})).text()
    row = next(r for r in csv.DictReader(io.StringIO(text.lstrip("\ufeff"))) if r["id"] == station)
    ngsi = await (await client.get(f"/ngsi-ld/v1/entities/urn:ngsi-ld:WaterObserved:{station}",
                                   params={"options": "keyValues"})).json()
    return {"list": listed[station]["missing_at_or_below"], "one": one["missing_at_or_below"],
            "geojson": feature["properties"]["missing_at_or_below"],
            "csv": None if row["missing_at_or_below"] == "" else float(row["missing_at_or_below"]),
            "ngsi": ngsi.get("missingAtOrBelowWaterLevel")}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sentinel=_SENTINEL)
@example(sentinel=0.0)
@example(sentinel=None)
@example(sentinel=-0.95)
async def test_the_missing_sentinel_round_trips_through_patch_and_every_station_answer(
        client: TestClient, pool: asyncpg.Pool, tokens: dict[str, str], sentinel: float | str | None) -> None:  # noqa: F811
    await pool.execute("UPDATE stations SET lat = 37.41, lon = 140.38 WHERE id = 'gauge'")  # an NGSI-LD gauge
    status, answer = await _patch(client, {"missing_at_or_below": sentinel}, tokens["kori-staff"])
    assert status == 200, answer
    want = None if sentinel in (None, "none") else sentinel
    assert answer["missing_at_or_below"] == want, answer
    assert answer["thresholds"]["danger"] == 5.5  # shown beside the thresholds, not among them
    assert await pool.fetchval("SELECT missing_at_or_below FROM stations WHERE id = 'gauge'") == want
    shown = await _shown(client)
    assert shown == dict.fromkeys(shown, want), shown


def test_the_station_schema_names_the_sentinel() -> None:
    prop = COMPONENTS["schemas"]["Station"]["properties"]["missing_at_or_below"]
    assert prop["type"] == ["number", "null"] and "欠測" in prop["description"]
