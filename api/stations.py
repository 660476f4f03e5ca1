"""Stations and their readings: ``/api/v1/stations``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web

from api import params
from api.context import POOL
from api.csvexport import csv_response
from api.params import instant
from api.problems import Problem
from ingest import queries
from ingest.contract import STATION_ID, STATION_ID_RULE
from ingest.registry import THRESHOLD_FIELDS
from sonae.municipality_code import DRILL_TOWN_CODE

routes = web.RouteTableDef()

MAX_RANGE = timedelta(days=366)


def _iso(ts: datetime | None) -> str | None:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z") if ts else None


def station_json(row: dict[str, Any]) -> dict[str, Any]:
    """A station as the API shows it (the list, one station, GeoJSON properties, the ``PATCH`` answer): its
    names, place, ``thresholds`` (m on its datum, those set) and ``missing_at_or_below`` beside them (the stage,
    m, at or below which a reading is 欠測; None: the gauge has no such sentinel; ``ingest.registry.MISSING_RULE``),
    its latest level."""
    thresholds = {f[3:]: row.get(f) for f in THRESHOLD_FIELDS if row.get(f) is not None}
    latest = None
    if row.get("latest_ts") is not None:
        latest = {"ts": _iso(row["latest_ts"]), "value": row["latest_value"], "unit": "m",
                  "exercise": row["latest_exercise"]}
    return {
        # kana: the name's reading as registered (the resident page's やさしい日本語 shows it after the kanji)
        "id": row["id"], "name": row["name"], "name_en": row.get("name_en"), "kana": row.get("kana"), "kind": row["kind"],
        "gauge_type": row["gauge_type"], "river": row.get("river"),
        "municipality_code": row.get("municipality_code"),
        "location": None if row.get("lat") is None else {"lat": row["lat"], "lon": row["lon"]},
        "expected_interval_s": row["expected_interval_s"], "thresholds": thresholds,
        # the 欠測 sentinel, as staff set it (PATCH) and the rules read it: found missing from every answer
        "missing_at_or_below": row.get("missing_at_or_below"),
        "exercise": row.get("exercise", False), "latest": latest,
    }


#: the registry's columns as stored (the thresholds and the 欠測 sentinel beside them), then the latest reading
REGISTRY_CSV_COLUMNS = ("id", "name", "name_en", "river", "municipality_code", "lat", "lon", "gauge_type",
                        "th_standby", "th_caution", "th_evacuation", "th_danger", "th_obs_start", "th_crisis",
                        "th_overflow", "missing_at_or_below")
CSV_COLUMNS = (*REGISTRY_CSV_COLUMNS, "latest_ts", "latest_value_m", "exercise")


@routes.get("/api/v1/stations")
async def list_stations(request: web.Request) -> web.Response:
    """Stations with their latest level; ``format=json`` (default), ``geojson`` or ``csv`` (open data)."""
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "geojson", "csv"):
        raise Problem(400, "Bad Request", "format must be json, geojson or csv", parameter="format")
    municipality = params.municipality(request)
    async with request.app[POOL].acquire() as conn:
        rows = await queries.stations_with_latest(conn)
    if municipality:
        rows = [r for r in rows if r.get("municipality_code") == municipality]
    if fmt == "csv":
        return csv_response(request, CSV_COLUMNS, ([r.get(c) for c in REGISTRY_CSV_COLUMNS]
                                                   + [_iso(r.get("latest_ts")), r.get("latest_value"), r.get("exercise")]
                                                   for r in rows), filename="stations.csv", disposition="inline")
    if fmt == "geojson":
        features = [{"type": "Feature", "id": r["id"],
                     "geometry": None if r.get("lat") is None else {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                     "properties": station_json(r)} for r in rows]
        return web.json_response({"type": "FeatureCollection", "features": features},
                                 content_type="application/geo+json")
    return web.json_response({"stations": [station_json(r) for r in rows]})


def _station_id(request: web.Request) -> str:
    station_id = request.match_info["station_id"]
    if not STATION_ID.match(station_id):
        raise Problem(400, "Bad Request", f"a station id is {STATION_ID_RULE}")
    return station_id


@routes.get("/api/v1/stations/{station_id}")
async def get_station(request: web.Request) -> web.Response:
    station_id = _station_id(request)
    async with request.app[POOL].acquire() as conn:
        rows = [r for r in await queries.stations_with_latest(conn) if r["id"] == station_id]
    if not rows:
        raise Problem(404, "Not Found", f"no station {station_id!r}")
    return web.json_response(station_json(rows[0]))


@routes.get("/api/v1/stations/{station_id}/readings")
async def get_readings(request: web.Request) -> web.Response:
    station_id = _station_id(request)
    now = datetime.now(UTC)
    end = instant(request, "to", now + timedelta(minutes=5))
    start = instant(request, "from", end - timedelta(hours=24))
    if start >= end:
        # each parameter is valid, together they are not: 422 (the document says so)
        raise Problem(422, "Unprocessable Content", "'from' must be before 'to'", parameter="from,to")
    if end - start > MAX_RANGE:
        raise Problem(422, "Unprocessable Content", "the time range may span at most 366 days", parameter="from,to")
    kind = request.query.get("kind", "level")
    if kind not in ("level", "rain", "battery_pct", "battery_v", "rssi_dbm", "temperature_c", "status"):
        raise Problem(400, "Bad Request", f"unknown kind {kind[:30]!r}", parameter="kind")
    bucket = request.query.get("bucket")
    async with request.app[POOL].acquire() as conn:
        exists = await conn.fetchval("SELECT 1 FROM stations WHERE id = $1", station_id)
        if not exists:
            raise Problem(404, "Not Found", f"no station {station_id!r}")
        if bucket:
            if bucket not in ("10m", "1h", "1d"):
                raise Problem(400, "Bad Request", "bucket must be 10m, 1h or 1d", parameter="bucket")
            rows = await queries.rollup(conn, station_id, bucket=bucket, kind=kind, start=start, end=end)
            data = [{"bucket": _iso(r["bucket"]), "min": r["min"], "max": r["max"], "avg": r["avg"],
                     "sum": r["sum"], "last": r["last"], "n": r["n"], "exercise": r["exercise"]} for r in rows]
        else:
            rows = await queries.series(conn, station_id, kind=kind, start=start, end=end)
            data = [{"ts": _iso(r["ts"]), "value": r["value"], "exercise": r["exercise"]} for r in rows]
    return web.json_response({"station_id": station_id, "kind": kind, "from": _iso(start), "to": _iso(end),
                              "bucket": bucket, "readings": data})


@routes.get("/api/v1/municipalities")
async def list_municipalities(request: web.Request) -> web.Response:
    """Municipality codes and names (open data); ``covered``: whether this deployment covers the municipality
    (it has its boundary, or no boundaries are loaded; the drill town where it is listed), the rule of
    :func:`ingest.municipalities.uncovered` that push areas, webhooks, orders and accounts are held to."""
    async with request.app[POOL].acquire() as conn:
        rows = await conn.fetch(
            """SELECT m.code, m.name_ja, m.name_kana, m.name_en, m.prefecture,
                      (b.code IS NOT NULL OR m.code = $1 OR NOT EXISTS (SELECT 1 FROM municipality_boundaries))
                          AS covered
               FROM municipalities m LEFT JOIN municipality_boundaries b USING (code) ORDER BY m.code""",
            DRILL_TOWN_CODE)
    return web.json_response({"municipalities": [dict(r) for r in rows]})
