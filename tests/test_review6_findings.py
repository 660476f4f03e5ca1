"""Reproductions of the review of 5daf41f..5b4ac19 (branch review6). Each test fails on 5b4ac19.

Not fixes: each names the behaviour the change's own docstrings promise and shows it is not kept.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg

from ingest.contract import topic_for
from ingest.registry import Station, edit_station, upsert_stations
from ingest.service import Ingestor
from sonae.config import Settings
from sonae.mqtt import Message

KORIYAMA = "072036"


def _message(prefix: str, municipality: str, station: str, kind: str, body: object) -> Message:
    return Message(topic_for(prefix, municipality, station, kind), json.dumps(body).encode(), 0, False, 0, 0)


async def test_review6_quarantine_release_judges_the_gateway_by_the_same_rule(settings: Settings,
                                                                            pool: asyncpg.Pool) -> None:
    """ingest.placement: a station unknown at ingest "waits in quarantine, and is judged by the same rule when it
    is registered (release_quarantine)". The rule refuses a relayed reading unless the sender is a gateway of
    the topic's municipality (foreign_station / wrong_municipality); release_quarantine re-implements the rule
    in SQL from the topic's municipality only and never looks at the sender, so a reading relayed by a device
    that is no gateway (any more) is released into ``readings`` — what ingest refuses for the same message."""
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="gw", name="ゲートウェイ", kind="gateway", municipality_code=KORIYAMA)])
    prefix = settings["mqtt.topic_prefix"]
    relayed = _message(prefix, KORIYAMA, "gw", "senml", [{"bn": "x1/", "n": "level", "v": 1.2, "t": -20}])
    ingestor = Ingestor.from_settings(settings, pool)
    assert (await ingestor.process([relayed])).quarantined == 1
    async with pool.acquire() as conn:
        # the registry takes the gateway's role away (a compromised or mis-registered device), then x1 is imported
        await upsert_stations(conn, [Station(id="gw", name="ゲートウェイ", kind="device", municipality_code=KORIYAMA)])
        await upsert_stations(conn, [Station(id="x1", name="水位計", municipality_code=KORIYAMA)])
        released = await conn.fetchval("SELECT count(*) FROM readings WHERE station_id = 'x1'")
    # the same message now, at ingest: refused
    again = await Ingestor.from_settings(settings, pool).process(
        [_message(prefix, KORIYAMA, "gw", "senml", [{"bn": "x1/", "n": "level", "v": 1.3, "t": -30}])])
    assert (again.inserted, again.dead_letters) == (0, 1)
    assert released == 0, "a reading of a non-gateway's topic for another station was released from quarantine"


async def test_review6_a_station_kept_from_before_the_missing_rule_can_still_be_renamed(pool: asyncpg.Pool) -> None:
    """Migration 076 gives every existing station missing_at_or_below 0.0, and Station.validate now refuses any
    threshold at or below it — on every edit, whatever it changes (edit_station validates the whole station).
    A station imported before the rule with thresholds <= 0 m (accepted then: the commit's own "found" note)
    can then no longer be renamed, moved or switched to exercise through PATCH /api/v1/stations/{id}, and
    ``missing_at_or_below`` is not EDITABLE, so staff cannot repair it there either."""
    async with pool.acquire() as conn:
        # a row as the registry held it before the rule (written as upsert_stations wrote it then)
        await conn.execute(
            """INSERT INTO stations (id, name, municipality_code, th_standby, th_caution, th_evacuation, th_danger)
               VALUES ('tidal', '潮位の水位計', $1, -1.0, -0.5, -0.2, 0.0)""", KORIYAMA)
        changed = await edit_station(conn, "tidal", {"name": "潮位の水位計（港）"})
    assert changed is not None
    assert await pool.fetchval("SELECT name FROM stations WHERE id = 'tidal'") == "潮位の水位計（港）"


async def test_review6_quarantined_reading_of_a_gateway_moved_away_is_not_released(settings: Settings,
                                                                                pool: asyncpg.Pool) -> None:
    """The same kind as above, the other half of the gateway rule: "the gateway is registered in the topic's
    municipality". A gateway moved to another municipality before the relayed station is registered: ingest
    refuses the message (wrong_municipality), release_quarantine stores it."""
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="gw", name="ゲートウェイ", kind="gateway", municipality_code=KORIYAMA)])
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    relayed = _message(prefix, KORIYAMA, "gw", "senml", [{"bn": "x2/", "n": "level", "v": 1.2, "t": -20}])
    assert (await Ingestor.from_settings(settings, pool).process([relayed])).quarantined == 1
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="gw", name="ゲートウェイ", kind="gateway", municipality_code="072010")])
        await upsert_stations(conn, [Station(id="x2", name="水位計", municipality_code=KORIYAMA)])
        released = await conn.fetchval("SELECT count(*) FROM readings WHERE station_id = 'x2'")
    again = await Ingestor.from_settings(settings, pool).process(
        [_message(prefix, KORIYAMA, "gw", "level", {"ts": ts, "value": 1.0}),
         _message(prefix, KORIYAMA, "gw", "senml", [{"bn": "x2/", "n": "level", "v": 1.3, "t": -30}])])
    assert again.inserted == 0 and again.dead_letters == 2
    assert released == 0, "a reading relayed by a gateway of another municipality was released from quarantine"


async def test_review6_the_documented_jiseiji_replay_can_register_its_station(pool: asyncpg.Pool) -> None:
    """README: ``sonae simulate --replay jiseiji`` (with ``--register-stations``, simulators.command.run, or a
    simulation started through the API, simulators.manager) registers the 持世寺 gauge, 宇部市 352021. On a
    database prepared as every service prepares it (ingest.schema.prepare_schema seeds Fukushima's 59 boundaries),
    upsert_stations now applies ingest.municipalities.uncovered to every station, so the replay's own station is
    refused ("outside the area Sonae covers") and the documented drill cannot start. Before 5daf41f..5b4ac19
    upsert_stations checked no coverage (only edit_station checked the municipality list)."""
    from ingest.boundaries import seed_if_empty as seed_boundaries
    from ingest.municipalities import seed_if_empty as seed_municipalities
    from simulators.manager import register_stations
    from simulators.replay import jiseiji_station

    async with pool.acquire() as conn:
        await seed_municipalities(conn)
        assert await seed_boundaries(conn) > 0  # as prepare_schema does on an empty database
    assert await register_stations(pool, [jiseiji_station(exercise=True)]) == 1
