"""A reading's place against the registry (ingest.placement): the topic's municipality must be its station's.

Found by a break-it pass: a Koriyama (072036) gateway's SenML record for a Fukushima City (072010) gauge was
stored, and so was ``…/072010/bk-ff/level`` for a gauge registered in 072036.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest import metrics
from ingest.contract import topic_for
from ingest.placement import Place, misplaced
from ingest.registry import Station, upsert_stations
from ingest.service import Ingestor
from sonae.config import Settings
from sonae.mqtt import Message
from sonae.municipality_code import DRILL_TOWN_CODE

KORIYAMA, FUKUSHIMA = "072036", "072010"
_codes = st.sampled_from([KORIYAMA, FUKUSHIMA, "072044", None])
_kinds = st.sampled_from(["river_level", "device", "gateway", "rainfall"])
_places = st.one_of(st.none(), st.builds(Place, _codes, _kinds))


@given(own=_places, gateway=_places, topic=st.sampled_from([KORIYAMA, FUKUSHIMA, DRILL_TOWN_CODE]),
       relayed=st.booleans(), exercise=st.booleans())
def test_a_reading_is_kept_only_in_its_registered_municipality(own: Place | None, gateway: Place | None,
                                                              topic: str, relayed: bool, exercise: bool) -> None:
    places = {}
    if own is not None:
        places["st"] = own
    if relayed and gateway is not None:
        places["gw"] = gateway
    got = misplaced(station="st", sender="gw" if relayed else "st", municipality=topic, exercise=exercise,
                    places=places)
    if topic == DRILL_TOWN_CODE and not exercise:
        # nothing real on the drill town's topic, whoever sends it
        assert got is not None and got[0] == "real_in_drill_town" and DRILL_TOWN_CODE in got[1]
        return
    if relayed:
        allowed = (gateway is not None and gateway.kind == "gateway" and gateway.municipality == topic
                   and (own is None or own.municipality == topic))
    else:
        # a station registered in no municipality has no topic: refused as through a gateway
        allowed = own is None or own.municipality == topic
    assert (got is None) == allowed, (got, own, gateway, topic)
    if got is not None:
        assert got[0] in ("foreign_station", "wrong_municipality") and got[1]


async def _setup(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [
            Station(id="bk-gw", name="郡山ゲートウェイ", kind="gateway", municipality_code=KORIYAMA),
            Station(id="bk-ff", name="郡山の水位計", municipality_code=KORIYAMA),
            Station(id="bk-other", name="福島市の水位計", municipality_code=FUKUSHIMA),
        ])


def _message(prefix: str, municipality: str, station: str, kind: str, body: object) -> Message:
    return Message(topic_for(prefix, municipality, station, kind), json.dumps(body).encode(), 0, False, 0, 0)


async def test_misplaced_readings_become_dead_letters(settings: Settings, pool: asyncpg.Pool) -> None:
    await _setup(pool)
    prefix = settings["mqtt.topic_prefix"]
    before = metrics.DEAD_LETTERS.labels("wrong_municipality")._value.get()
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    ingestor = Ingestor.from_settings(settings, pool)
    result = await ingestor.process([
        # (a) a Koriyama gateway reports for a Fukushima City gauge
        _message(prefix, KORIYAMA, "bk-gw", "senml", [{"bn": "bk-other/", "n": "level", "v": 1.2, "t": -20}]),
        # (b) a Koriyama gauge on a Fukushima City topic
        _message(prefix, FUKUSHIMA, "bk-ff", "level", {"ts": ts, "value": 1.3}),
        # a gateway on another municipality's topic, for a gauge of that municipality
        _message(prefix, FUKUSHIMA, "bk-gw", "senml", [{"bn": "bk-other/", "n": "level", "v": 1.4, "t": -20}]),
        # the right places are stored
        _message(prefix, KORIYAMA, "bk-gw", "senml", [{"bn": "bk-ff/", "n": "level", "v": 2.0, "t": -20}]),
        _message(prefix, FUKUSHIMA, "bk-other", "level", {"ts": ts, "value": 2.1}),
    ])
    assert (result.inserted, result.dead_letters) == (2, 3)
    async with pool.acquire() as conn:
        stored = {(r["station_id"], r["value"]) for r in await conn.fetch("SELECT station_id, value FROM readings")}
        dead = await conn.fetch("SELECT topic, reason, detail FROM dead_letters ORDER BY topic")
    assert stored == {("bk-ff", 2.0), ("bk-other", 2.1)}
    assert [d["reason"] for d in dead] == ["wrong_municipality"] * 3
    assert all("registered in" in d["detail"] for d in dead)
    assert metrics.DEAD_LETTERS.labels("wrong_municipality")._value.get() - before == 3


async def test_quarantined_reading_is_judged_when_its_station_is_registered(settings: Settings,
                                                                          pool: asyncpg.Pool) -> None:
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    ingestor = Ingestor.from_settings(settings, pool)
    result = await ingestor.process([_message(prefix, KORIYAMA, "late", "level", {"ts": ts, "value": 1.5}),
                                     _message(prefix, KORIYAMA, "late2", "level", {"ts": ts, "value": 1.6})])
    assert result.quarantined == 2
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="late", name="福島市の水位計", municipality_code=FUKUSHIMA),
                                     Station(id="late2", name="郡山の水位計", municipality_code=KORIYAMA)])
        stored = [r["station_id"] for r in await conn.fetch("SELECT station_id FROM readings")]
        dead = await conn.fetch("SELECT reason, detail FROM dead_letters")
        left = await conn.fetchval("SELECT count(*) FROM quarantined_readings")
    assert stored == ["late2"] and left == 0
    assert [d["reason"] for d in dead] == ["wrong_municipality"] and FUKUSHIMA in dead[0]["detail"]


async def test_an_unplaced_station_is_refused_on_every_path(settings: Settings, pool: asyncpg.Pool) -> None:
    """Found: ``bk-h`` imported without a municipality was stored from ``…/079995/bk-h/level`` and from
    ``…/072036/bk-h/level`` as real, and raised a public alert under ``sonae/alerts/none/…``, while the
    gateway path refused it: one rule on both paths now."""
    await _setup(pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="bk-h", name="場所のない水位計", lat=37.40, lon=140.36)])
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    result = await Ingestor.from_settings(settings, pool).process([
        _message(prefix, DRILL_TOWN_CODE, "bk-h", "level", {"ts": ts, "value": 9.5}),
        _message(prefix, DRILL_TOWN_CODE, "bk-h", "level", {"ts": ts, "value": 9.5, "exercise": True}),
        _message(prefix, KORIYAMA, "bk-h", "level", {"ts": ts, "value": 9.6}),
        _message(prefix, KORIYAMA, "bk-gw", "senml", [{"bn": "bk-h/", "n": "level", "v": 9.7, "t": -20}]),
    ])
    assert (result.inserted, result.dead_letters) == (0, 4)
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT count(*) FROM readings")
        dead = sorted((d["topic"].split("/")[-3], d["reason"], "no municipality" in d["detail"])
                      for d in await conn.fetch("SELECT topic, reason, detail FROM dead_letters"))
    assert stored == 0
    assert dead == [(KORIYAMA, "wrong_municipality", True), (KORIYAMA, "wrong_municipality", True),
                    (DRILL_TOWN_CODE, "real_in_drill_town", False), (DRILL_TOWN_CODE, "wrong_municipality", True)]


async def test_nothing_real_is_kept_from_the_drill_town(settings: Settings, pool: asyncpg.Pool) -> None:
    """Found: ``{"value": 9.5}`` on ``…/079995/DT-G02/level`` without ``"exercise": true`` was stored and shown
    publicly as real; the same reading quarantined for an unknown station was released as real when the
    station was imported as an exercise station there."""
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="DT-G02", name="訓練町の水位計", municipality_code=DRILL_TOWN_CODE,
                                             exercise=True)])
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    result = await Ingestor.from_settings(settings, pool).process([
        _message(prefix, DRILL_TOWN_CODE, "DT-G02", "level", {"ts": ts, "value": 9.5}),
        _message(prefix, DRILL_TOWN_CODE, "bk-new1", "level", {"ts": ts, "value": 9.4}),
        _message(prefix, DRILL_TOWN_CODE, "DT-G02", "level", {"ts": ts, "value": 1.5, "exercise": True}),
    ])
    assert (result.inserted, result.quarantined, result.dead_letters) == (1, 0, 2)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="bk-new1", name="訓練町の新しい水位計",
                                             municipality_code=DRILL_TOWN_CODE, exercise=True)])
        stored = [(r["station_id"], r["value"], r["exercise"])
                  for r in await conn.fetch("SELECT station_id, value, exercise FROM readings")]
        reasons = sorted(r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters"))
    assert stored == [("DT-G02", 1.5, True)]
    assert reasons == ["real_in_drill_town"] * 2


async def test_a_real_reading_quarantined_from_the_drill_town_is_not_released(settings: Settings,
                                                                            pool: asyncpg.Pool) -> None:
    """A real reading quarantined from the drill town's topic (before this rule) is kept as a dead letter when
    its station is registered there, not released as real."""
    ts = datetime.now(UTC) - timedelta(minutes=5)
    topic = topic_for(settings["mqtt.topic_prefix"], DRILL_TOWN_CODE, "bk-new1", "level")
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO quarantined_readings (station_id, kind, ts, value, exercise, seq, topic) "
            "VALUES ('bk-new1', 'river_level', $1, $2, $3, 0, $4)",
            [(ts, 9.5, False, topic), (ts, 1.5, True, topic)])
        await upsert_stations(conn, [Station(id="bk-new1", name="訓練町の新しい水位計",
                                             municipality_code=DRILL_TOWN_CODE, exercise=True)])
        stored = [(r["value"], r["exercise"]) for r in await conn.fetch("SELECT value, exercise FROM readings")]
        dead = [r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters")]
    assert stored == [(1.5, True)] and dead == ["real_in_drill_town"]


@pytest.mark.parametrize(("gateway_after", "reason"), [
    (Place(KORIYAMA, "gateway"), None),  # still the topic's gateway: released
    (Place(KORIYAMA, "device"), "foreign_station"),  # its gateway role taken away (a compromised device)
    (Place(FUKUSHIMA, "gateway"), "wrong_municipality"),  # moved to another municipality
])
async def test_a_relayed_reading_leaves_quarantine_only_as_ingest_would_take_it(
        gateway_after: Place, reason: str | None, settings: Settings, pool: asyncpg.Pool) -> None:
    """The quarantine is judged by the gateway rule too (ingest.placement.misplaced, from the station's and the
    sender's places): found, release_quarantine read only the topic's municipality and released a reading
    relayed by a device that was no gateway any more, or by a gateway moved away, while ingest refused the
    same message. The dead letter's reason is the one ingest gives the same message now."""
    prefix = settings["mqtt.topic_prefix"]
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="gw", name="ゲートウェイ", kind="gateway", municipality_code=KORIYAMA)])
    relayed = [{"bn": "x1/", "n": "level", "v": 1.2, "t": -20}]
    assert (await Ingestor.from_settings(settings, pool).process(
        [_message(prefix, KORIYAMA, "gw", "senml", relayed)])).quarantined == 1
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="gw", name="ゲートウェイ", kind=gateway_after.kind,
                                             municipality_code=gateway_after.municipality)])
        await upsert_stations(conn, [Station(id="x1", name="水位計", municipality_code=KORIYAMA)])
        released = await conn.fetchval("SELECT count(*) FROM readings WHERE station_id = 'x1'")
        dead = [r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters")]
        left = await conn.fetchval("SELECT count(*) FROM quarantined_readings")
    assert (released, dead, left) == ((1, [], 0) if reason is None else (0, [reason], 0))
    again = await Ingestor.from_settings(settings, pool).process(
        [_message(prefix, KORIYAMA, "gw", "senml", [{"bn": "x1/", "n": "level", "v": 1.3, "t": -30}])])
    assert (again.inserted, again.dead_letters) == ((1, 0) if reason is None else (0, 1))
    async with pool.acquire() as conn:
        assert sorted(r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters")) == (
            [] if reason is None else [reason, reason])


async def test_a_quarantined_row_of_no_topic_is_kept_as_a_bad_topic(pool: asyncpg.Pool) -> None:
    """A quarantined row whose topic is not ``<prefix>/<municipality>/<station>/<kind>`` (written by anything
    but ingest) is not released: its sender and municipality are unknown, so the rule cannot judge it."""
    ts = datetime.now(UTC) - timedelta(minutes=5)
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO quarantined_readings (station_id, kind, ts, value, exercise, seq, topic) "
            "VALUES ('q1', 'river_level', $1, 1.0, false, 0, $2)",
            [(ts, "garbage"), (ts + timedelta(minutes=1), f"sonae/v1/{KORIYAMA}/q1/nonsense")])
        await upsert_stations(conn, [Station(id="q1", name="水位計", municipality_code=KORIYAMA)])
        stored = await conn.fetchval("SELECT count(*) FROM readings")
        dead = sorted(r["reason"] for r in await conn.fetch("SELECT reason FROM dead_letters"))
    assert stored == 0 and dead == ["bad_topic", "bad_topic"]
