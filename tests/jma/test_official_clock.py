"""A telegram dated implausibly in the future is refused and kept, and never shadows genuine ones.

Found by a break-it pass: a 取消 for 郡山市 with ReportDateTime 2099-01-01T00:00:00+09:00 (Serial 99) was applied,
and the genuine telegram of the same event dated now was then filed ``stale`` and ignored.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jma.store import store_telegram
from jma.telegram import MAX_FUTURE_S, TelegramError, check_clock, parse
from tests.jma.support import LANDSLIDE, sample, substitute

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def _telegram(*, report: str, sent: str, serial: int, info_type: str = "発表") -> bytes:
    data = substitute(sample(LANDSLIDE[0]), code7="1420600", name="小田原市", as_code7="0720300", as_name="郡山市")
    text = data.decode("utf-8")
    text = re.sub(r"<ReportDateTime>[^<]*</ReportDateTime>", f"<ReportDateTime>{report}</ReportDateTime>", text)
    text = re.sub(r"<DateTime>[^<]*</DateTime>", f"<DateTime>{sent}</DateTime>", text, count=1)
    text = re.sub(r"<Serial>[^<]*</Serial>", f"<Serial>{serial}</Serial>", text)
    text = re.sub(r"<InfoType>[^<]*</InfoType>", f"<InfoType>{info_type}</InfoType>", text)
    return text.encode("utf-8")


async def test_a_future_cancellation_is_refused_and_the_genuine_telegram_applied(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    forged = _telegram(report="2099-01-01T00:00:00+09:00", sent="2098-12-31T15:00:00Z", serial=99, info_type="取消")
    genuine = _telegram(report=now.isoformat(), sent=now.isoformat(), serial=1)
    async with pool.acquire() as conn:
        assert await store_telegram(conn, link="forged", data=forged) == "failed:future_datetime"
        assert await store_telegram(conn, link="genuine", data=genuine) == "applied"
        kept = await conn.fetchrow("SELECT outcome, error_reason, error_detail, raw FROM jma_telegrams "
                                   "WHERE link = 'forged'")
        in_force = await conn.fetchval("SELECT count(*) FROM jma_official_info WHERE municipality_code = '072036'")
    assert (kept["outcome"], kept["error_reason"]) == ("failed", "future_datetime")
    assert "Head/ReportDateTime 2099" in kept["error_detail"] and bytes(kept["raw"]) == forged
    assert in_force > 0


async def test_a_future_time_stored_before_the_check_does_not_shadow(pool: asyncpg.Pool) -> None:
    """An event time applied before this check (a database of an earlier version) orders nothing."""
    now = datetime.now(UTC).replace(microsecond=0)
    first = _telegram(report=(now - timedelta(hours=1)).isoformat(), sent=now.isoformat(), serial=1)
    async with pool.acquire() as conn:
        assert await store_telegram(conn, link="first", data=first) == "applied"
        await conn.execute("UPDATE jma_events SET report_time = '2099-01-01T00:00:00+09:00', serial = 99")
        later = _telegram(report=now.isoformat(), sent=now.isoformat(), serial=2)
        assert await store_telegram(conn, link="later", data=later) == "applied"


@given(report_s=st.integers(-10**8, 10**9), sent_s=st.integers(-10**8, 10**9))
def test_only_times_beyond_the_tolerance_are_refused(report_s: int, sent_s: int) -> None:
    data = _telegram(report=(NOW + timedelta(seconds=report_s)).isoformat(),
                     sent=(NOW + timedelta(seconds=sent_s)).isoformat(), serial=1)
    telegram = parse(data)
    if max(report_s, sent_s) > MAX_FUTURE_S:
        with pytest.raises(TelegramError) as info:
            check_clock(telegram, now=NOW)
        assert info.value.reason == "future_datetime"
    else:
        check_clock(telegram, now=NOW)
