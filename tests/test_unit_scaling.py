"""A stage sent in centimetres or millimetres (or through a SenML base value) is the decimal stage in metres, as
sent in metres: the same reading in another unit is the same reading.

Found by a break-it pass: ``{"value": 560, "unit": "cm"}`` was stored as 5.6000000000000005 m (``560 * 0.01`` in
binary; 263 of the 2,001 centimetre stages 0-20 m), shown so by the readings API and the CSV export, and the
same reading sent again as ``{"value": 5.6}`` (a gateway switching units, a replay in metres) was refused as a
``conflicting_value`` dead letter: "another value is kept for the same time".
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from ingest.contract import Parser, topic_for
from ingest.service import Ingestor
from sonae.config import Settings
from sonae.mqtt import Message
from tests.ingest_support import register

NOW = datetime(2026, 11, 30, 3, 0, tzinfo=UTC)
TS = "2026-11-30T02:50:00Z"
PARSER = Parser()
CENTIMETRES = st.integers(min_value=-10_000, max_value=200_000)  # -100 m .. 2,000 m, the plausible stages


def _level(body: object, kind: str = "level") -> float:
    parsed = PARSER.parse(f"sonae/v1/072036/g1/{kind}", json.dumps(body).encode(), now=NOW)
    assert not parsed.problems
    [reading] = parsed.readings
    return reading.value


@given(CENTIMETRES)
def test_centimetres_and_millimetres_are_the_stage_in_metres(cm: int) -> None:
    metres = float(f"{cm / 100:.2f}")  # the stage as a gauge sending metres writes it
    assert _level({"ts": TS, "value": cm, "unit": "cm"}) == metres
    assert _level({"ts": TS, "value": cm * 10, "unit": "mm"}) == metres
    assert _level({"ts": TS, "value": metres}) == metres


@given(CENTIMETRES)
def test_senml_units_and_base_values_give_the_same_stage(cm: int) -> None:
    metres = float(f"{cm / 100:.2f}")
    assert _level([{"n": "level", "u": "cm", "v": cm, "t": 1_764_471_000}], "senml") == metres
    assert _level([{"bn": "g1/", "bu": "mm", "n": "level", "v": cm * 10, "t": 1_764_471_000}], "senml") == metres
    # a base value plus a value, in metres: 0.1 + 0.2 is 0.30000000000000004 in binary
    base = float(f"{(cm - 10) / 100:.2f}")
    assert _level([{"bv": base, "n": "level", "v": 0.1, "t": 1_764_471_000}], "senml") == metres
    # and through the checked path (a record with a base unit and a sum checked beside the value)
    assert _level([{"bu": "cm", "bs": 0, "n": "level", "v": cm, "s": 1, "t": 1_764_471_000}], "senml") == metres


def test_rain_in_metres_is_the_millimetres() -> None:
    assert _level([{"n": "rain", "u": "m", "v": 0.0056, "t": 1_764_471_000}], "senml") == 5.6


async def test_the_same_stage_in_another_unit_is_no_conflict(settings: Settings, pool: asyncpg.Pool) -> None:
    await register(pool, "u1")
    prefix = settings["mqtt.topic_prefix"]
    ts = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0).isoformat()
    ingestor = Ingestor.from_settings(settings, pool)

    def message(body: object) -> Message:
        return Message(topic_for(prefix, "072036", "u1", "level"), json.dumps(body).encode(), 0, False, 0, 0)

    await ingestor.process([message({"ts": ts, "value": 560, "unit": "cm"})])
    await ingestor.process([message({"ts": ts, "value": 5.6})])
    async with pool.acquire() as conn:
        stored = await conn.fetch("SELECT value FROM readings WHERE station_id = 'u1'")
        dead = await conn.fetch("SELECT reason, detail FROM dead_letters WHERE topic LIKE '%/u1/%'")
    assert [r["value"] for r in stored] == [5.6]
    assert dead == []
