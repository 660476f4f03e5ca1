"""Every entity of the real Fukushima data validates against its Smart Data Model: the MLIT 危機管理型
gauges with their newest published reading, the GSI designated shelters and emergency evacuation sites, and
the prefecture's municipalities (each page read through the NGSI-LD API with limit/offset)."""

from __future__ import annotations

import csv
import io
import json
import random
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from evac.store import import_shelters_file
from ingest.contract import Reading
from ingest.registry import upsert_stations
from ingest.store import write_batch
from simulators.replay import mlit_station, read_mlit_rows
from tests.conftest import shared_data
from tests.ngsi.support import offline_loader

TYPES = "WaterObserved,PointOfInterest,MunicipalityWarningLevel"


async def _import(pool: asyncpg.Pool) -> tuple[int, int]:
    rows = read_mlit_rows(shared_data("river_levels", "mlit_kriver_fukushima_gauges_over_threshold_2025-09_to_2026-08.csv.gz"))
    newest: dict[str, Any] = {}
    for row in rows:
        if row.station_code not in newest or row.obs_time >= newest[row.station_code].obs_time:
            newest[row.station_code] = row
    async with pool.acquire() as conn:
        await upsert_stations(conn, [mlit_station(r) for r in newest.values()])
        await write_batch(conn, [Reading(r.station_code, "level", r.obs_time, r.level_m) for r in newest.values()
                                 if r.level_m is not None])
        shelters = 0
        for name in ("gsi_fukushima_designated_shelters.geojson",
                     "gsi_fukushima_designated_emergency_evacuation_sites.geojson"):
            shelters += await import_shelters_file(conn, shared_data("shelters", name), actor="test")
        text = shared_data("municipalities", "fukushima_municipalities.csv").read_text(encoding="utf-8-sig")
        towns = [(r["lgcode6"], r["name"]) for r in csv.DictReader(io.StringIO(text))]
        await conn.executemany("INSERT INTO municipalities (code, name_ja) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                               towns)
    return len(newest), len(towns)


async def test_real_fukushima_entities_validate(client: TestClient, pool: asyncpg.Pool, sdm: Any) -> None:
    from pyld import jsonld

    gauges, towns = await _import(pool)
    entities: list[dict[str, Any]] = []
    offset = 0
    while True:
        resp = await client.get("/ngsi-ld/v1/entities", params={
            "type": TYPES, "options": "keyValues", "limit": "1000", "offset": str(offset), "count": "true"})
        assert resp.status == 200
        page = await resp.json()
        entities.extend(page)
        total = int(resp.headers["NGSILD-Results-Count"])
        offset += 1000
        if offset >= total:
            break
    assert len(entities) == total == len({e["id"] for e in entities})
    by_type: dict[str, int] = {}
    for e in entities:
        by_type[e["type"]] = by_type.get(e["type"], 0) + 1
        if e["type"] != "MunicipalityWarningLevel":
            assert sdm.errors(e["type"], e) == [], json.dumps(e, ensure_ascii=False)
    assert by_type["WaterObserved"] == gauges and by_type["MunicipalityWarningLevel"] == towns
    assert by_type["PointOfInterest"] > 1000
    assert any("crisisWaterLevel" in e for e in entities)
    loader = offline_loader(f"http://{client.host}:{client.port}")
    for e in random.Random(22).sample(entities, 40):
        ld = {**e, "@context": f"http://{client.host}:{client.port}/ngsi-ld/v1/contexts/sonae.jsonld"}
        expanded = jsonld.expand(ld, {"documentLoader": loader})
        assert len([k for k in expanded[0] if not k.startswith("@")]) == len(e) - 2
