"""Migration ``ingest/077_missing_sentinel_below_thresholds``: stations stored before the per-station 欠測 rule
(``076_station_missing_at_or_below``: ``missing_at_or_below`` 0.0 for every station) with a threshold at or below
0 m had every stage at or below 0 m read as missing, so they never reached those thresholds and never alerted;
and, failing :meth:`ingest.registry.Station.validate`, no staff edit of them was accepted either.

The old state is built as it was: the ingest migrations before 076, stations stored then, and the migrations of
today run over it (plain PostgreSQL and TimescaleDB: ``SONAE_TEST_BACKEND``)."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from alerting.rules import RIVER
from alerting.worker import RulesWorker
from ingest.contract import Reading
from ingest.registry import edit_station, get_station
from ingest.store import write_batch
from sonae.config import Settings
from sonae.migrations import migrate
from tests.migration_support import schema_before

LADDERS = {  # id: (gauge_type, th_standby, th_caution, th_evacuation, th_danger, th_obs_start, th_crisis, th_overflow)
    "tidal": ("flood_forecast", -1.0, -0.5, -0.2, 0.0, None, None, None),  # a gauge on T.P. below sea level
    "low-standby": ("flood_forecast", 0.0, 1.2, 1.8, 2.4, None, None, None),  # one threshold at the sentinel
    "crisis-low": ("crisis", None, None, None, None, -0.3, 0.5, 1.0),  # a 危機管理型 gauge's 観測開始水位
    "jiseiji": ("flood_forecast", 3.8, 5.0, 5.1, 5.5, None, None, None),  # 持世寺: 0.0 is its 欠測, kept
    "rain": ("none", None, None, None, None, None, None, None),  # no thresholds: nothing to lie below
}


async def _before_076(conn: asyncpg.Connection) -> None:
    """The ingest schema as it was before 076, recorded as applied (so a migration run takes it from there)."""
    await schema_before(conn, 76)
    for sid, (gauge, *th) in LADDERS.items():
        await conn.execute(
            """INSERT INTO stations (id, name, kind, gauge_type, municipality_code, th_standby, th_caution,
                                     th_evacuation, th_danger, th_obs_start, th_crisis, th_overflow)
               VALUES ($1, $1, $2, $3, '072036', $4, $5, $6, $7, $8, $9, $10)""",
            sid, "rainfall" if sid == "rain" else "river_level", gauge, *th)


async def test_stations_with_thresholds_at_or_below_zero_lose_the_zero_sentinel(database_url: str,
                                                                                 settings: Settings) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await _before_076(conn)
        applied = await migrate(conn)
        sentinel = {r["id"]: r["missing_at_or_below"]
                    for r in await conn.fetch("SELECT id, missing_at_or_below FROM stations")}
        assert sentinel == {"tidal": None, "low-standby": None, "crisis-low": None, "jiseiji": 0.0, "rain": 0.0}
        # every station loads under the registry's rules again, and staff may edit them
        for sid in LADDERS:
            station = await get_station(conn, sid)
            assert station is not None
            station.validate()
        async with conn.transaction():
            assert await edit_station(conn, "tidal", {"th_danger": 0.1}) is not None
        assert {"ingest/076_station_missing_at_or_below", "ingest/077_missing_sentinel_below_thresholds"} <= \
            set(applied), applied
        assert await migrate(conn) == []  # applied once

        # the tidal gauge alerts: -0.45 m is over 氾濫注意 -0.5 m (read as 欠測 before, and nothing was raised)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
        try:
            worker = RulesWorker.from_settings(settings, pool)  # its passes on this connection only
        finally:
            await pool.close()
        now: datetime = await conn.fetchval("SELECT now()")
        await write_batch(conn, [Reading("tidal", "level", now - timedelta(minutes=20 - 10 * i), v)
                                 for i, v in enumerate([-0.60, -0.45, -0.40])])
        await worker.step(conn)
        alert = await conn.fetchrow("SELECT level, threshold FROM alerts WHERE station_id = 'tidal' "
                                    "AND condition = $1 AND cleared_at IS NULL", RIVER)
    finally:
        await conn.close()
    assert alert is not None and (alert["level"], alert["threshold"]) == (2, -0.5), alert and dict(alert)
