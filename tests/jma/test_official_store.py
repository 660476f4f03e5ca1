"""Storing telegrams: tsunami and flood forecasts reach Fukushima municipalities; nothing crashes the store."""

from __future__ import annotations

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerting.level import level_in_force
from jma.areas import tsunami_areas
from jma.store import in_force, store_telegram
from jma.telegram import parse
from tests.jma.support import sample


async def test_tsunami_warning_for_fukushima_reaches_its_coast_only(pool: asyncpg.Pool) -> None:
    data = sample("32-39_11_02_250206_VTSE41.xml")
    stated = next(s for s in parse(data).statements if s.area_code == "250")
    async with pool.acquire() as conn:
        assert await store_telegram(conn, link="ts", data=data) == "applied"
        rows = await in_force(conn)
        coast = {r["municipality_code"] for r in rows}
        assert coast == set(tsunami_areas()["250"])
        answer = await level_in_force(conn, municipality="072044")  # いわき市
        inland = await level_in_force(conn, municipality="072036")  # 郡山市
        unknown = await conn.fetchval("SELECT count(*) FROM jma_unknown_areas WHERE area_type = '津波予報区'")
    assert answer.level == stated.level and answer.hazard == "tsunami"
    assert answer.top is not None and answer.top.name["ja-JP"] == f"気象庁: {stated.kind}"
    assert inland.level is None
    assert unknown == len({s.area_code for s in parse(data).statements}) - 1  # every other area is reported


async def test_flood_forecast_maps_through_its_inundation_municipalities(pool: asyncpg.Pool) -> None:
    data = sample("16_06_01_220728_VXKOii.xml").replace(
        b"<CityCode>0000000</CityCode>", b"<CityCode>0720300</CityCode>", 1)
    telegram = parse(data)
    async with pool.acquire() as conn:
        assert await store_telegram(conn, link="ko", data=data) == "applied"
        answer = await level_in_force(conn, municipality="072036", lat=None, lon=None)
        placeholders = await conn.fetch("SELECT area_code FROM jma_unknown_areas")
    assert answer.level == max(s.level or 0 for s in telegram.statements)
    assert answer.hazard == "flood" and answer.sources[0].official["kind"] == "氾濫危険情報"  # type: ignore[index]
    assert {r["area_code"] for r in placeholders} == {"0000000"}  # the other placeholders: reported, not guessed


_BASE = sample("17_04_01_250630_VXWW50.xml").replace(b"1420600", b"0720300")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(st.integers(0, len(_BASE) - 1), st.integers(0, 40), st.binary(max_size=12))
async def test_any_mutated_telegram_is_kept_never_a_crash(pool: asyncpg.Pool, start: int, length: int,
                                                        insert: bytes) -> None:
    data = _BASE[:start] + insert + _BASE[start + length:]
    link = f"mut:{start}:{length}:{insert.hex()}"
    async with pool.acquire() as conn:
        outcome = await store_telegram(conn, link=link, data=data)
        kept = await conn.fetchrow("SELECT raw, outcome, error_reason FROM jma_telegrams WHERE link = $1", link)
    assert outcome == "duplicate" or kept is not None
    if kept is not None:
        assert bytes(kept["raw"]) == data
        assert (kept["outcome"] == "failed") == (kept["error_reason"] is not None)
