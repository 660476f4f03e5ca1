"""Threshold edits on a silent (or faulty) gauge are judged again, end to end: MQTT → ingestor → rules worker,
``PATCH /api/v1/stations/{id}`` (found by a break-it pass: a station silent since 19:52, with its staff-only
``silent`` alert, kept threshold 5.4 m on its river-level alert through five PATCHes of its thresholds, and a
fresh reading afterwards did not update the row either).

The cause: :meth:`alerting.worker.RulesWorker._judge_again` judged nothing while the stream's newest accepted
stage was older than the silent-gauge rule allows, yet the stream was stamped with the new ladder — so the
edit was forgotten, and the next reading was judged as if the alert had been judged under it. A gauge sending
only 欠測 (missing) values had the same fault: its newest *accepted* stage is old though data still arrives.

The rule now: a changed ladder judges the stream again from the stages its rules accepted, fresh or not (the
level held is itself the judgement of those stages: it cannot stay the judgement of a ladder staff have
corrected); the ``silent`` alert tells staff the stage is old."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from alerting.rules import RIVER, SILENT
from alerting.texts import REJUDGED
from ingest.contract import encode_reading
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.alerting.support import running_worker
from tests.api.test_api_staff import FUKUSHIMA, KORIYAMA, auth, make_client, tokens  # noqa: F401  (a fixture)
from tests.ingest_support import publish_all, running_ingestor, wait_until

STATION = "silent-gauge"
# 10-minute gauge: silent once 30 minutes pass without a reading (alerting.silent_factor 3)
GAUGE = Station(id=STATION, name="Silent gauge", river="阿武隈川", municipality_code=KORIYAMA,
                expected_interval_s=600, th_standby=3.8, th_caution=5.0, th_evacuation=5.4, th_danger=6.4)


async def _river(pool: asyncpg.Pool) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM alerts WHERE station_id = $1 AND condition = $2 AND NOT exercise "
                               "AND cleared_at IS NULL", STATION, RIVER)


async def _silent(pool: asyncpg.Pool) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM alerts WHERE station_id = $1 AND condition = $2 AND NOT exercise "
                               "AND cleared_at IS NULL", STATION, SILENT)


async def _publish(settings: Settings, points: list[tuple[datetime, float]], seq: int = 0) -> None:
    await publish_all(settings, [(STATION, "level", encode_reading(value=v, ts=ts, seq=seq + i))
                                 for i, (ts, v) in enumerate(points)])


async def _judged_with(pool: asyncpg.Pool, ladder: dict[str, float]) -> None:
    """Wait until the worker has followed the registry: the real stream is stamped with ``ladder``."""
    want = [[lvl, ladder[f]] for lvl, f in ((1, "th_standby"), (2, "th_caution"), (3, "th_evacuation"),
                                             (4, "th_danger"))]

    async def stamped() -> bool:
        state = await pool.fetchval("SELECT state FROM rule_state WHERE station_id = $1 AND NOT exercise", STATION)
        return state is not None and json.loads(state).get("registry", {}).get("steps") == want

    await wait_until(stamped, timeout=60, what=f"the stream judged with {ladder}")


async def _patch(client: TestClient, token: str, body: dict[str, Any]) -> None:
    r = await client.patch(f"/api/v1/stations/{STATION}", data=json.dumps(body),
                           headers={**auth(token), "Content-Type": "application/json"})
    assert r.status == 200, await r.text()


async def _level_3_then_silent(pool: asyncpg.Pool, settings: Settings) -> datetime:
    """Three rising readings over 避難判断水位 5.4 m, 80 to 60 minutes old: level 3 at threshold 5.4, and the gauge
    silent. Returns the database's now."""
    now: datetime = await pool.fetchval("SELECT now()")
    await _publish(settings, [(now - timedelta(minutes=80 - 10 * i), v) for i, v in enumerate([5.45, 5.47, 5.50])])

    async def raised() -> bool:
        return await _river(pool) is not None and await _silent(pool) is not None

    await wait_until(raised, timeout=60, what="level 3 and the silent-gauge alert")
    river = await _river(pool)
    assert river is not None and (river["level"], river["threshold"]) == (3, 5.4), dict(river or {})
    return now


async def test_threshold_edits_on_a_silent_gauge_are_judged_again(
        pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:  # noqa: F811
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
    client = await make_client(pool, settings)
    staff = tokens["pref-staff"]
    ladder = {"th_standby": 3.8, "th_caution": 5.0, "th_evacuation": 5.4, "th_danger": 6.4}
    try:
        async with running_ingestor(settings, pool), running_worker(pool, silent_check_s=1.0):
            now = await _level_3_then_silent(pool, settings)
            first = await _river(pool)
            assert first is not None
            # five edits while it is silent (newest stage 5.50 m, an hour old): each re-judges the level it holds
            for edit, (level, threshold) in (
                    ({"th_evacuation": 5.3}, (3, 5.3)),  # level 3 kept: now of 避難判断水位 5.3 m
                    ({"th_evacuation": 5.2}, (3, 5.2)),
                    ({"th_danger": 5.5}, (4, 5.5)),  # the old stage is over the new 氾濫危険水位: raised
                    ({"th_danger": 6.4, "th_evacuation": 5.35}, (3, 5.35)),  # lowered: withdrawn, not the river
                    ({"th_evacuation": 5.6, "th_danger": 6.5}, (2, 5.0))):  # under 避難判断水位 now: level 2
                await _patch(client, staff, edit)
                ladder.update(edit)
                await _judged_with(pool, ladder)
                river = await _river(pool)
                assert river is not None and (river["level"], river["threshold"]) == (level, threshold), \
                    (edit, dict(river or {}))
                assert await _silent(pool) is not None  # still silent: staff know the stage is old
            notes = await pool.fetch("SELECT e.note, e.reason FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
                                     "WHERE a.station_id = $1 AND a.condition = $2 AND e.id > (SELECT min(id) FROM "
                                     "alert_events WHERE alert_id = $3)", STATION, RIVER, first["id"])
            assert notes and all(REJUDGED in (r["note"], r["reason"]) for r in notes), [dict(r) for r in notes]

            # a fresh reading afterwards is judged under the ladder now in force
            await _publish(settings, [(now, 5.62)], seq=10)

            async def judged() -> bool:
                last = await pool.fetchval("SELECT last_ts FROM rule_state WHERE station_id = $1 AND NOT exercise",
                                           STATION)
                return last is not None and last >= now and await _silent(pool) is None

            await wait_until(judged, timeout=60, what="the fresh reading judged")
            river = await _river(pool)
            assert river is not None and (river["level"], river["threshold"]) == (3, 5.6), dict(river or {})

            # silent again, then moved to another municipality: every open alert goes along
            await pool.execute("UPDATE rule_state SET last_ts = last_ts - interval '2 hours' "
                               "WHERE station_id = $1 AND NOT exercise", STATION)
            await wait_until(lambda: _silent(pool), timeout=60, what="silent again")
            await _patch(client, staff, {"municipality_code": FUKUSHIMA})

            async def moved() -> bool:
                rows = await pool.fetch("SELECT municipality_code FROM alerts WHERE station_id = $1 "
                                        "AND cleared_at IS NULL", STATION)
                return len(rows) == 2 and {r["municipality_code"] for r in rows} == {FUKUSHIMA}

            await wait_until(moved, timeout=60, what="the silent gauge's alerts moved")
    finally:
        await client.close()


async def test_threshold_edits_on_a_gauge_sending_only_missing_values_are_judged_again(
        pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:  # noqa: F811
    """Faulty, not silent: it reports 0.00 m (欠測, ``missing_at_or_below``) every 10 minutes since its level 3,
    so its newest accepted stage is an hour old though data arrives."""
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
    client = await make_client(pool, settings)
    try:
        async with running_ingestor(settings, pool), running_worker(pool, silent_check_s=1.0):
            now = await _level_3_then_silent(pool, settings)
            await _publish(settings, [(now - timedelta(minutes=50 - 10 * i), 0.0) for i in range(6)], seq=3)
            await wait_until(lambda: _no_silent(pool), timeout=60, what="data again (欠測 values)")
            await _patch(client, tokens["pref-staff"], {"th_evacuation": 5.6, "th_danger": 6.5})
            await _judged_with(pool, {"th_standby": 3.8, "th_caution": 5.0, "th_evacuation": 5.6, "th_danger": 6.5})
            river = await _river(pool)
    finally:
        await client.close()
    assert river is not None and (river["level"], river["threshold"], river["reason"]) == (2, 5.0, REJUDGED), \
        dict(river or {})


async def test_a_fresh_reading_after_an_edit_in_silence_is_judged_under_the_new_ladder(
        pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:  # noqa: F811
    """The second half of the finding on its own: one edit while silent (避難判断水位 5.4 → 5.3 m), then a fresh
    5.52 m. The stream had been stamped with the new ladder unjudged, so the reading (level 3 as before) changed
    nothing and the row kept 5.4 m."""
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
    client = await make_client(pool, settings)
    try:
        async with running_ingestor(settings, pool), running_worker(pool, silent_check_s=1.0):
            now = await _level_3_then_silent(pool, settings)
            await _patch(client, tokens["pref-staff"], {"th_evacuation": 5.3})
            await _judged_with(pool, {"th_standby": 3.8, "th_caution": 5.0, "th_evacuation": 5.3, "th_danger": 6.4})
            await _publish(settings, [(now, 5.52)], seq=10)
            await wait_until(lambda: _no_silent(pool), timeout=60, what="the fresh reading judged")
            river = await _river(pool)
    finally:
        await client.close()
    assert river is not None and (river["level"], river["threshold"]) == (3, 5.3), dict(river or {})


async def _no_silent(pool: asyncpg.Pool) -> bool:
    return await _silent(pool) is None
