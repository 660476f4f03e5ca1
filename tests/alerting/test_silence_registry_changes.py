"""Silent alerts follow the registry: a station whose stream (exercise flag) or municipality changed, or
that was deleted, leaves no silent alert behind that the staff console does not show (found by break22:
the worker only looked at the stations' current (id, exercise) rows, so an alert of the old stream, of the
old municipality or of a deleted station stayed open for ever)."""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from alerting.worker import RulesWorker
from ingest.registry import Station, upsert_stations
from sonae.config import Settings
from tests.alerting.silence_support import console_silent
from tests.api_support import signed_in

OLD, NEW = "072036", "072044"  # two municipalities of the same prefecture
INTERVAL = 600  # s


async def _open(conn: asyncpg.Connection, municipality: str) -> set[tuple[str | None, bool]]:
    return {(r["station_id"], r["exercise"]) for r in await conn.fetch(
        "SELECT station_id, exercise FROM alerts WHERE condition = 'silent' AND cleared_at IS NULL "
        "AND municipality_code = $1", municipality)}


async def test_silent_alerts_follow_stream_municipality_and_deletion(pool: asyncpg.Pool, settings: Settings) -> None:
    base = [Station(id=i, name=i, municipality_code=OLD, expected_interval_s=INTERVAL)
            for i in ("toggled", "moved", "deleted", "kept")]
    async with pool.acquire() as conn:
        await upsert_stations(conn, base)
        await conn.execute("UPDATE stations SET created_at = now() - interval '1 day'")  # never reported: silent
        tokens = await signed_in(conn, (("old-staff", "staff", OLD), ("new-staff", "staff", NEW)),
                                 "correct horse battery")
        # no grace: a real alert of a station switched to exercise ends at once (test_silence_flap: within it)
        worker = RulesWorker.from_settings(settings, pool, exercise_grace_s=0)
        await worker.step(conn)
        await worker.check_silent(conn)
        assert await _open(conn, OLD) == {(i.id, False) for i in base}

        # a drill station now, another municipality's station now, and one removed from the registry
        await upsert_stations(conn, [replace(base[0], exercise=True), replace(base[1], municipality_code=NEW)])
        await conn.execute("DELETE FROM stations WHERE id = 'deleted'")
        await worker.step(conn)
        await worker.check_silent(conn)
        alerts_old, alerts_new = await _open(conn, OLD), await _open(conn, NEW)
    console_old = await console_silent(settings, pool, tokens["old-staff"])
    console_new = await console_silent(settings, pool, tokens["new-staff"])
    # the toggled station's drill stream began at the switch: not silent yet (test_silence_stream_start)
    assert console_old == {("kept", False)} and console_new == {("moved", False)}
    assert (alerts_old, alerts_new) == (console_old, console_new)
