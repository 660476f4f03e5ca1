"""An alert that moved with its station to another municipality, then ended: the old municipality's push
subscribers and webhooks were told of it and must hear that it ended (found breaking the station edit:
only the new municipality's targets got the clearing; the old one's kept the alert open for ever)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg

from alerting.rules import RIVER
from alerting.worker import RulesWorker
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from notify import store as notify_store
from sonae.config import Settings

OLD, NEW = "072036", "072044"
GAUGE = Station(id="gauge", name="Gauge", river="厚東川", municipality_code=OLD, th_caution=5.00,
                th_evacuation=5.10, th_danger=5.50)  # m (no standby rung: the fall clears the alert)


async def _queued(conn: asyncpg.Connection, kind: str, target: int) -> list[str]:
    return [r["kind"] for r in await conn.fetch(
        """SELECT e.kind FROM notify_queue q JOIN alert_events e ON e.id = q.alert_event_id
           WHERE q.kind = $1 AND q.target_id = $2 ORDER BY q.id""", kind, target)]


async def _raised_then_moved(conn: asyncpg.Connection, worker: RulesWorker, start: datetime) -> None:
    """From ``start``, readings over 避難判断水位 raise a river alert in OLD, which its targets are told of; then
    the station moves to NEW and the worker follows it (the move told too)."""
    await write_batch(conn, [Reading("gauge", "level", start + timedelta(minutes=10 * i), v)
                             for i, v in enumerate([5.20, 5.22, 5.25])])
    await worker.step(conn)
    await notify_store.fan_out(conn, base_url="https://sonae.test")
    await upsert_stations(conn, [replace(GAUGE, municipality_code=NEW)])
    await worker.follow_registry(conn)
    await notify_store.fan_out(conn, base_url="https://sonae.test")


async def test_the_old_municipalitys_targets_hear_the_end_of_an_alert_that_moved(pool: asyncpg.Pool,
                                                                                settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        hooks = {code: (await notify_store.add_webhook(conn, url=f"https://hooks.invalid/{code}", created_by="t",
                                                       municipality_code=code))["id"] for code in (OLD, NEW)}
        subs = {code: (await notify_store.add_subscription(
            conn, endpoint=f"https://push.invalid/{code}", p256dh=b"\x04" + b"\x01" * 64, auth=b"\x02" * 16,
            lang="ja-JP", drills=False, areas=[notify_store.Area(municipality_code=code)]))[0] for code in (OLD, NEW)}
        start = now - timedelta(hours=2)
        await _raised_then_moved(conn, worker, start)
        # the river falls below 氾濫注意水位 − 0.1 m for 30 minutes: the alert ends, in NEW
        await write_batch(conn, [Reading("gauge", "level", start + timedelta(minutes=30 + 10 * i), v)
                                 for i, v in enumerate([4.40, 4.00, 3.80, 3.70])])
        await worker.step(conn)
        alert = await conn.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND condition = $1", RIVER)
        assert (alert["state"], alert["municipality_code"]) == ("cleared", NEW)
        await notify_store.fan_out(conn, base_url="https://sonae.test")
        told = {(kind, code): await _queued(conn, kind, target)
                for kind, targets in (("webhook", hooks), ("push", subs)) for code, target in targets.items()}
    assert told[("webhook", OLD)][0] == "raised" and told[("webhook", OLD)][-1] == "cleared", told
    assert told[("push", OLD)][0] == "raised" and told[("push", OLD)][-1] == "cleared", told
    assert told[("webhook", NEW)][-1] == "cleared" and told[("push", NEW)][-1] == "cleared", told


async def test_the_old_municipalitys_targets_hear_every_change_of_an_alert_that_moved(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """Told of the alert in the old municipality, its webhooks and push subscribers hear its whole life: its move,
    its escalation after the move and its end (found: only the end reached them; an escalation to 警戒レベル4 after
    the move went to the new municipality alone)."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT now()")
        hook = (await notify_store.add_webhook(conn, url="https://hooks.invalid/old", created_by="t",
                                               municipality_code=OLD))["id"]
        sub = (await notify_store.add_subscription(
            conn, endpoint="https://push.invalid/old", p256dh=b"\x04" + b"\x01" * 64, auth=b"\x02" * 16,
            lang="ja-JP", drills=False, areas=[notify_store.Area(municipality_code=OLD)]))[0]
        start = now - timedelta(hours=2)
        await _raised_then_moved(conn, worker, start)
        await write_batch(conn, [Reading("gauge", "level", start + timedelta(minutes=30 + 10 * i), v)
                                 for i, v in enumerate([5.40, 5.55, 5.60])])  # over 氾濫危険水位: level 4
        await worker.step(conn)
        await notify_store.fan_out(conn, base_url="https://sonae.test")
        await write_batch(conn, [Reading("gauge", "level", start + timedelta(minutes=60 + 10 * i), v)
                                 for i, v in enumerate([5.00, 4.60, 4.20, 3.90, 3.80, 3.70, 3.60, 3.50])])
        await worker.step(conn)
        alert = await conn.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND condition = $1", RIVER)
        await notify_store.fan_out(conn, base_url="https://sonae.test")
        told = {"webhook": await _queued(conn, "webhook", hook), "push": await _queued(conn, "push", sub)}
    assert (alert["state"], alert["max_level"]) == ("cleared", 4)
    for kind in ("webhook", "push"):
        assert told[kind][:3] == ["raised", "moved", "escalated"] and told[kind][-1] == "cleared", told
