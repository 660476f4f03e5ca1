"""The thin path's API on a real database: stations with their latest reading, and series."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.app import create_app
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.config import Settings
from tests.api_support import start_client


@pytest.fixture
async def client(pool: asyncpg.Pool, settings: Settings):  # type: ignore[no-untyped-def]
    app = create_app(pool=pool, settings=settings)
    c = await start_client(app)
    try:
        yield c
    finally:
        await c.close()


async def _seed(pool: asyncpg.Pool) -> datetime:
    now = datetime.now(UTC).replace(microsecond=0)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="akutsu", name="阿久津", river="阿武隈川", municipality_code="072036",
                                             lat=37.41, lon=140.38, th_standby=4.0, th_caution=5.5,
                                             th_evacuation=5.7, th_danger=6.8),
                                     Station(id="quiet", name="Quiet", municipality_code="072036")])
        await write_batch(conn, [Reading("akutsu", "level", now - timedelta(minutes=10 * i), 3.0 + i / 10)
                                 for i in range(12)])
    return now


async def test_stations_list_latest_and_thresholds(client: TestClient, pool: asyncpg.Pool) -> None:
    now = await _seed(pool)
    resp = await client.get("/api/v1/stations")
    assert resp.status == 200
    body = await resp.json()
    by_id = {s["id"]: s for s in body["stations"]}
    assert by_id["akutsu"]["latest"]["value"] == 3.0
    assert by_id["akutsu"]["latest"]["ts"] == now.isoformat().replace("+00:00", "Z")
    assert by_id["akutsu"]["thresholds"] == {"standby": 4.0, "caution": 5.5, "evacuation": 5.7, "danger": 6.8}
    assert by_id["quiet"]["latest"] is None


async def test_series_range_and_order(client: TestClient, pool: asyncpg.Pool) -> None:
    now = await _seed(pool)
    frm = (now - timedelta(minutes=35)).isoformat()
    resp = await client.get("/api/v1/stations/akutsu/readings", params={"from": frm, "to": now.isoformat()})
    assert resp.status == 200
    values = [r["value"] for r in (await resp.json())["readings"]]
    assert values == [3.3, 3.2, 3.1]  # 30, 20, 10 minutes ago; `to` is exclusive


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/stations/nope/readings", 404),
        ("/api/v1/stations/akutsu/readings?from=yesterday", 400),
        # each time valid, together not: 422 (the OpenAPI document says so)
        ("/api/v1/stations/akutsu/readings?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z", 422),
        ("/api/v1/stations/akutsu/readings?from=2000-01-01T00:00:00Z&to=2026-01-01T00:00:00Z", 422),
        ("/api/v1/stations/akutsu/readings?kind=pressure", 400),
        ("/api/v1/stations/akutsu/readings?bucket=2m", 400),
        ("/api/v1/stations/bad%20id", 400),
        ("/api/v1/nothing-here", 404),
    ],
)
async def test_bad_requests_get_problem_json(client: TestClient, pool: asyncpg.Pool, path: str, status: int) -> None:
    await _seed(pool)
    resp = await client.get(path)
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["status"] == status and body["title"]


async def test_ops_endpoints(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["checks"]["database"] == "ok"
    metrics = await (await client.get("/metrics")).text()
    assert 'sonae_api_requests_total{method="GET",route="/readyz",status="200"}' in metrics


async def test_access_log_never_contains_query(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    await client.get("/api/v1/stations", params={"lat": "37.123456", "lon": "140.654321"})
    records = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert records, "the access log wrote something"
    text = " ".join(f"{r.getMessage()} {r.__dict__}" for r in records)
    assert "37.123456" not in text and "140.654321" not in text and "/api/v1/stations" in text


async def test_open_data_formats(client: TestClient, pool: asyncpg.Pool) -> None:
    await _seed(pool)
    geo = await client.get("/api/v1/stations", params={"format": "geojson"})
    assert geo.status == 200 and geo.content_type == "application/geo+json"
    features = {f["id"]: f for f in (await geo.json())["features"]}
    assert features["akutsu"]["geometry"]["coordinates"] == [140.38, 37.41]
    assert features["quiet"]["geometry"] is None
    text = await (await client.get("/api/v1/stations", params={"format": "csv", "municipality": "072036"})).text()
    assert text.startswith("\ufeff")  # a UTF-8 BOM by default, for spreadsheets (api csvexport)
    lines = text[1:].strip().splitlines()
    assert lines[0].startswith("id,name,") and len(lines) == 3 and any(line.startswith("akutsu,阿久津") for line in lines)
    assert (await client.get("/api/v1/stations", params={"format": "xml"})).status == 400


async def test_municipalities_are_imported_data(client: TestClient, pool: asyncpg.Pool, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import asyncio
    import subprocess
    import sys

    csv_file = tmp_path / "m.csv"
    csv_file.write_text("code,name_ja,name_en,prefecture\n072036,郡山市,Koriyama,福島県\n072010,福島市,Fukushima,福島県\n",
                        encoding="utf-8")
    from ingest.municipalities import load_municipalities, upsert_municipalities

    async with pool.acquire() as conn:
        assert await upsert_municipalities(conn, load_municipalities(csv_file)) == 2
    body = await (await client.get("/api/v1/municipalities")).json()
    assert [m["code"] for m in body["municipalities"]] == ["072010", "072036"]
    bad = tmp_path / "bad.csv"
    bad.write_text("code,name_ja\nKORI,郡山市\n", encoding="utf-8")
    proc = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app.cli", "municipalities", "import", str(bad)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and "line 2" in proc.stderr
