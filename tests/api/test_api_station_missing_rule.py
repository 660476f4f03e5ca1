"""Thresholds the rules would read as 欠測 are refused at every entry; a gauge without the 0 m sentinel alerts.

Found by a break-it pass: thresholds −1.0/−0.5/−0.2/0.0 were accepted at import and PATCH while the rules read
every stage ≤ 0 m as 欠測 (``missing_at_or_below=0.0``), so the gauge never alerted. Real gauges read below
0 m (MLIT 川の水位情報: 幸田川橋 at −0.56 m, 観測開始水位 −0.95 m), so the sentinel is per station
(``missing_at_or_below``, ``none`` for no sentinel: ingest.registry.MISSING_RULE).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from ingest.contract import Reading
from ingest.registry import THRESHOLD_FIELDS, RegistryError, Station, load_stations, upsert_stations
from ingest.store import write_batch
from tests.alerting.support import running_worker
from tests.api.test_api_station_edit import _patch
from tests.api_support import signed_in
from tests.ingest_support import wait_until

LOW = {"th_standby": -1.0, "th_caution": -0.5, "th_evacuation": -0.2, "th_danger": 0.0}
HEADER = "id,name,municipality_code,th_standby,th_caution,th_evacuation,th_danger"


def test_a_station_file_with_thresholds_read_as_missing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stations.csv"
    path.write_text(f"{HEADER}\ntidal,潮位の水位計,072036,-1.0,-0.5,-0.2,0.0\n", encoding="utf-8")
    with pytest.raises(RegistryError, match=r"line 2: .*th_standby \(-1 m\) is at or below missing_at_or_below"):
        load_stations(path)
    path.write_text(f"{HEADER},missing_at_or_below\ntidal,潮位の水位計,072036,-1.0,-0.5,-0.2,0.0,none\n",
                    encoding="utf-8")
    assert load_stations(path)[0].missing_at_or_below is None
    geo = tmp_path / "stations.geojson"
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": None, "properties": {"id": "tidal", "name": "潮位", **LOW}}]}), encoding="utf-8")
    with pytest.raises(RegistryError, match="missing_at_or_below"):
        load_stations(geo)


_level = st.floats(min_value=-50, max_value=50, allow_nan=False).map(lambda v: round(v, 2))


@given(thresholds=st.lists(_level, min_size=4, max_size=4).map(sorted),
       missing=st.one_of(st.none(), _level, st.just(math.inf), st.just(math.nan)))
def test_every_threshold_lies_above_the_missing_value(thresholds: list[float], missing: float | None) -> None:
    station = Station(id="g", name="g", missing_at_or_below=missing,
                      **dict(zip(("th_standby", "th_caution", "th_evacuation", "th_danger"), thresholds, strict=True)))
    fits = missing is None or (math.isfinite(missing) and all(t > missing for t in thresholds))
    if fits:
        assert station.validate() == station
    else:
        with pytest.raises(RegistryError, match="missing_at_or_below"):
            station.validate()


async def test_patch_with_thresholds_read_as_missing_is_a_readable_problem(client: TestClient,
                                                                           pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="gauge", name="Gauge", municipality_code="072036", th_standby=3.8,
                                             th_caution=5.0, th_evacuation=5.1, th_danger=5.5),
                                     Station(id="tidal", name="Tidal", municipality_code="072036",
                                             missing_at_or_below=None, th_standby=3.8, th_caution=5.0,
                                             th_evacuation=5.1, th_danger=5.5)])
        tokens = await signed_in(conn, (("kori-staff", "staff", "072036"),), "correct horse battery")
    status, body = await _patch(client, LOW, tokens["kori-staff"])
    assert status in (400, 422) and "missing_at_or_below" in json.dumps(body, ensure_ascii=False)
    assert await pool.fetchval("SELECT th_danger FROM stations WHERE id = 'gauge'") == 5.5
    status, body = await _patch(client, LOW, tokens["kori-staff"], station="tidal")
    assert status == 200, body
    assert await pool.fetchval("SELECT th_danger FROM stations WHERE id = 'tidal'") == 0.0


async def test_a_gauge_without_the_sentinel_alerts_below_zero(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="tidal", name="潮位の水位計", municipality_code="072036",
                                             missing_at_or_below=None, **LOW)])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    async with running_worker(pool):
        async with pool.acquire() as conn:
            await write_batch(conn, [Reading("tidal", "level", t0 + timedelta(minutes=10 * i), v)
                                     for i, v in enumerate((-1.5, -0.6, -0.15))])

        async def evacuation() -> bool:  # the stages below 0 m are stages: -0.15 m is over 避難判断水位 -0.2 m
            return await pool.fetchval("SELECT level FROM alerts WHERE station_id = 'tidal' "
                                       "AND condition = 'river_level' AND cleared_at IS NULL") == 3
        await wait_until(evacuation, timeout=30, what="level 3 (避難判断) at -0.15 m")


def test_every_threshold_field_is_checked() -> None:
    for name in THRESHOLD_FIELDS:
        with pytest.raises(RegistryError, match=name):
            Station(id="g", name="g", gauge_type="crisis" if name in ("th_obs_start", "th_crisis", "th_overflow")
                    else "flood_forecast", **{name: 0.0}).validate()
