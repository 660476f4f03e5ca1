"""Read-side queries over stations and readings, the same on TimescaleDB and plain PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from ingest.registry import shown_station
from ingest.rollups import BUCKETS


async def stations_with_latest(
    conn: asyncpg.Connection, *, kind: str = "level", exercise: bool | None = None
) -> list[dict[str, Any]]:
    """Every station with its latest reading of ``kind`` (None when it has none), its names and river as they
    show (:func:`ingest.registry.shown_station`: every reader serves them)."""
    rows = await conn.fetch(
        """SELECT s.*, l.ts AS latest_ts, l.value AS latest_value, l.exercise AS latest_exercise
           FROM stations s
           LEFT JOIN LATERAL (
               SELECT ts, value, exercise FROM readings r
               WHERE r.station_id = s.id AND r.kind = $1 AND ($2::bool IS NULL OR r.exercise = $2)
               ORDER BY ts DESC LIMIT 1) l ON true
           ORDER BY s.id""",
        kind, exercise,
    )
    return [shown_station(dict(r)) for r in rows]


async def series(
    conn: asyncpg.Connection, station_id: str, *, kind: str = "level", start: datetime, end: datetime,
    exercise: bool | None = None, limit: int = 10000,
) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT ts, value, exercise FROM readings
           WHERE station_id = $1 AND kind = $2 AND ts >= $3 AND ts < $4 AND ($5::bool IS NULL OR exercise = $5)
           ORDER BY ts LIMIT $6""",
        station_id, kind, start, end, exercise, limit,
    )
    return [dict(r) for r in rows]


async def rollup(
    conn: asyncpg.Connection, station_id: str, *, bucket: str, kind: str = "level", start: datetime,
    end: datetime, exercise: bool | None = None,
) -> list[dict[str, Any]]:
    """Rollup rows (bucket, min, max, avg, sum, last, n) from the 10m/1h/1d rollups (buckets aligned to
    Japan time: a ``1d`` bucket is a Japanese day, see :mod:`ingest.rollups`)."""
    table, _ = BUCKETS[bucket]
    rows = await conn.fetch(
        f"""SELECT bucket, min, max, avg, sum, last, n, exercise FROM {table}
            WHERE station_id = $1 AND kind = $2 AND bucket >= $3 AND bucket < $4
              AND ($5::bool IS NULL OR exercise = $5)
            ORDER BY bucket""",
        station_id, kind, start, end, exercise,
    )
    return [dict(r) for r in rows]
