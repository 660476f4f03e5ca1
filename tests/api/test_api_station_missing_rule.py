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
from ingest.registry import (
    THRESHOLD_FIELDS,
    RegistryError,
    Station,
    edit_station,
    load_stations,
    upsert_stations,
)
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


def test_a_json_null_sentinel_is_refused_naming_the_feature(tmp_path: Path) -> None:
    """GeoJSON ``"missing_at_or_below": null`` became the default 0.0, silently; it could mean "no sentinel"
    as well (a GIS export writes null for an empty cell), so it is refused, naming the feature and the ways out."""
    geo = tmp_path / "stations.geojson"
    high = {"th_standby": 1.0, "th_caution": 2.0, "th_evacuation": 3.0, "th_danger": 4.0}
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": None, "properties": {"id": "a", "name": "A", **high}},
        {"type": "Feature", "geometry": None,
         "properties": {"id": "b", "name": "B", "missing_at_or_below": None, **high}}]}), encoding="utf-8")
    with pytest.raises(RegistryError, match=r"feature 1: field 'missing_at_or_below' is null: .*\"none\".*leave"):
        load_stations(geo)
    for given_, stored in (("none", None), (-2.0, -2.0)):
        geo.write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": None,
             "properties": {"id": "b", "name": "B", "missing_at_or_below": given_, **high}}]}), encoding="utf-8")
        assert load_stations(geo)[0].missing_at_or_below == stored


async def _kept_from_before_the_rule(conn: asyncpg.Connection) -> None:
    """A station as the registry held it before migration 076: thresholds <= 0 m, accepted then, under the
    sentinel 0.0 the migration gave every station (written as upsert_stations wrote it then)."""
    await conn.execute(
        """INSERT INTO stations (id, name, municipality_code, th_standby, th_caution, th_evacuation, th_danger)
           VALUES ('tidal', '潮位の水位計', '072036', -1.0, -0.5, -0.2, 0.0)""")


async def test_a_station_kept_from_before_the_sentinel_can_be_renamed_and_switched(pool: asyncpg.Pool) -> None:
    """An edit that sets no stage is not refused for the stages as stored (found: edit_station validated the
    whole station, so such a station could not be renamed, moved or switched to exercise at all)."""
    async with pool.acquire() as conn:
        await _kept_from_before_the_rule(conn)
        async with conn.transaction():
            changed = await edit_station(conn, "tidal", {"name": "潮位の水位計（港）", "exercise": True})
    assert changed is not None and changed[1] == {"name": "潮位の水位計（港）", "exercise": True}
    row = await pool.fetchrow("SELECT name, exercise, th_standby FROM stations WHERE id = 'tidal'")
    assert tuple(row) == ("潮位の水位計（港）", True, -1.0)


async def test_staff_repair_the_sentinel_of_a_station_kept_from_before_it(client: TestClient,
                                                                          pool: asyncpg.Pool) -> None:
    """``missing_at_or_below`` is editable (null: no sentinel); an edit of a threshold alone on such a station
    is a 422 that names the threshold and says to give the sentinel in the same edit."""
    async with pool.acquire() as conn:
        await _kept_from_before_the_rule(conn)
        tokens = await signed_in(conn, (("kori-staff", "staff", "072036"),), "correct horse battery")
    token = tokens["kori-staff"]
    status, body = await _patch(client, {"th_danger": 0.1}, token, station="tidal")
    assert status == 422, body
    assert ("th_standby (-1 m) is at or below missing_at_or_below (0 m)" in body["detail"]
            and '"missing_at_or_below": null' in body["detail"] and "same edit" in body["detail"]), body
    assert await pool.fetchval("SELECT th_danger FROM stations WHERE id = 'tidal'") == 0.0
    status, body = await _patch(client, {"missing_at_or_below": -1.5}, token, station="tidal")
    assert status == 200, body
    assert await pool.fetchval("SELECT missing_at_or_below FROM stations WHERE id = 'tidal'") == -1.5
    status, body = await _patch(client, {"missing_at_or_below": None, "th_danger": 0.1}, token, station="tidal")
    assert status == 200, body
    row = await pool.fetchrow("SELECT missing_at_or_below, th_danger FROM stations WHERE id = 'tidal'")
    assert tuple(row) == (None, 0.1)
    # a sentinel at or above a threshold is refused
    status, body = await _patch(client, {"missing_at_or_below": -0.5}, token, station="tidal")
    assert status == 422 and "th_standby (-1 m)" in body["detail"], body
    assert await pool.fetchval("SELECT missing_at_or_below FROM stations WHERE id = 'tidal'") is None
    status, body = await _patch(client, {"missing_at_or_below": "0"}, token, station="tidal")
    assert status == 400, body  # a number or null (or "none"), as the OpenAPI document says
