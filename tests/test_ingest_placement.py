"""A reading's place against the registry (ingest.placement): the topic's municipality must be its station's.

Found by a break-it pass: a Koriyama (072036) gateway's SenML record for a Fukushima City (072010) gauge was
stored, and so was ``…/072010/bk-ff/level`` for a gauge registered in 072036.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from ingest import metrics
from ingest.contract import topic_for
from ingest.placement import Place, misplaced
from ingest.registry import Station, upsert_stations
from ingest.service import Ingestor
from sonae.config import Settings
from sonae.mqtt import Message

KORIYAMA, FUKUSHIMA = "072036", "072010"
_codes = st.sampled_from([KORIYAMA, FUKUSHIMA, "072044", None])
_kinds = st.sampled_from(["river_level", "device", "gateway", "rainfall"])
_places = st.one_of(st.none(), st.builds(Place, _codes, _kinds))


@given(own=_places, gateway=_places, topic=st.sampled_from([KORIYAMA, FUKUSHIMA]), relayed=st.booleans())
def test_a_reading_is_kept_only_in_its_registered_municipality(own: Place | None, gateway: Place | None,
                                                              topic: str, relayed: bool) -> None:
    places = {}
    if own is not None:
        places["st"] = own
    if relayed and gateway is not None:
        places["gw"] = gateway
    got = misplaced(station="st", sender="gw" if relayed else "st", municipality=topic, places=places)
    if relayed:
        allowed = (gateway is not None and gateway.kind == "gateway" and gateway.municipality == topic
                   and (own is None or own.municipality == topic))
    else:
        allowed = own is None or own.municipality in (None, topic)
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
