"""Seed data and an offline JSON-LD document loader for the NGSI-LD tests."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from evac.shelters import Shelter
from evac.store import import_shelters
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from ngsi import context as ctx
from tests.conftest import shared_data

CENTRE = (37.40, 140.38)  # lat, lon
THRESHOLDS = {"th_standby": 4.0, "th_caution": 5.5, "th_evacuation": 5.7, "th_danger": 6.8}


def _offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / 111_320.0, lon + east_m / (111_320.0 * math.cos(math.radians(lat)))


async def seed(pool: asyncpg.Pool) -> datetime:
    now = datetime.now(UTC).replace(microsecond=0)
    lat, lon = CENTRE
    places = [(500, 0), (0, 1500), (-1900, 300), (2300, 0), (0, -3000), (-1200, -1200), (1450, 1450)]
    stations = [Station(id=f"g{i}", name=f"観測所{i}", river="阿武隈川", municipality_code="072036",
                        lat=_offset(lat, lon, n, e)[0], lon=_offset(lat, lon, n, e)[1], **THRESHOLDS)
                for i, (n, e) in enumerate(places[:4])]
    stations.append(Station(id="nowhere", name="位置なし", municipality_code="072036"))
    shelters = [Shelter(id=f"s{i}", name=f"避難所{i}", lat=_offset(lat, lon, n, e)[0], lon=_offset(lat, lon, n, e)[1],
                        hazards=frozenset({"flood", "earthquake"}), address="福島県郡山市", municipality_code="072036",
                        capacity=None if i % 2 else 100 + i, occupancy=i, is_open=i != 3)
                for i, (n, e) in enumerate(places)]
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO municipalities (code, name_ja, name_en) VALUES ('072036', '郡山市', 'Koriyama')"
                           " ON CONFLICT DO NOTHING")
        await upsert_stations(conn, stations)
        await import_shelters(conn, shelters, actor="test")
        await write_batch(conn, [Reading(s.id, "level", now - timedelta(minutes=10 * k), 1.0 + k / 100 + j / 10)
                                 for j, s in enumerate(stations[:4]) for k in range(18)]
                          + [Reading("g0", "battery_pct", now, 87.0), Reading("g0", "rssi_dbm", now, -71.0),
                             Reading("g0", "status", now, 0.0)])
    return now


def offline_loader(base: str) -> Any:
    """A pyld document loader that serves only local files: the SDM and core contexts, and Sonae's own."""
    folder = shared_data("sdm")
    table = {url: folder / path for url, path in json.loads((folder / "contexts.json").read_text()).items()}
    own = {ctx.context_url(base): ctx.context_document(base)}

    def load(url: str, options: Any = None) -> dict[str, Any]:
        if url in own:
            document = own[url]
        elif url in table:
            document = json.loads(Path(table[url]).read_text())
        else:
            raise AssertionError(f"the context {url} would have to be fetched")
        return {"contentType": "application/ld+json", "contextUrl": None, "documentUrl": url, "document": document}

    return load
