"""A leap second (RFC 3339 ``23:59:60``) is a valid time in every timestamp parser.

Found by a break-it pass: ``"ts":"2026-11-30T23:59:60Z"`` was dead-lettered ``bad_timestamp``. It is read as
23:59:59.999999 UTC (sonae.japantime.from_iso_format says why not the next second).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.contract import Parser
from jma.telegram import parse
from sonae.japantime import JST, parse_iso_time, parse_query_time
from tests.jma.support import LANDSLIDE, sample

LEAP = datetime(2026, 11, 30, 23, 59, 59, 999999, tzinfo=UTC)
_days = st.dates(min_value=datetime(2001, 1, 1).date(), max_value=datetime(2098, 12, 31).date())


@given(day=_days, fraction=st.sampled_from(["", ".0", ".5", ".999999"]),
       zone=st.sampled_from(["Z", "+00:00", "+09:00", "-05:00", ""]))
def test_a_leap_second_is_the_last_instant_of_its_utc_day(day, fraction: str, zone: str) -> None:  # type: ignore[no-untyped-def]
    last = datetime(day.year, day.month, day.day, 23, 59, 59, 999999, tzinfo=UTC)
    local = last.astimezone(JST if zone == "" else datetime.fromisoformat(f"2000-01-01T00:00:00{zone}").tzinfo)
    text = local.strftime("%Y-%m-%dT%H:%M:") + "60" + fraction + zone
    assert parse_iso_time(text) == last
    assert parse_query_time(text) == last
    before = local.replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%S") + zone
    assert parse_iso_time(before) < parse_iso_time(text) < last + timedelta(microseconds=1)


@given(hour=st.integers(0, 23), minute=st.integers(0, 59))
def test_a_second_60_elsewhere_than_23_59_utc_is_not_a_time(hour: int, minute: int) -> None:
    text = f"2026-11-30T{hour:02d}:{minute:02d}:60Z"
    if (hour, minute) == (23, 59):
        assert parse_iso_time(text) == LEAP
    else:
        with pytest.raises(ValueError):
            parse_iso_time(text)


def test_a_reading_at_a_leap_second_is_stored() -> None:
    parser = Parser()
    now = datetime(2026, 12, 1, tzinfo=UTC)
    got = parser.parse("sonae/v1/072036/g1/level", json.dumps({"ts": "2026-11-30T23:59:60Z", "value": 2.0}).encode(),
                       now=now)
    assert [r.ts for r in got.readings] == [LEAP] and not got.problems
    got = parser.parse("sonae/v1/072036/g1/level", json.dumps({"ts": "2026-12-01T00:00:00Z", "value": 2.0}).encode(),
                       now=now)
    assert got.readings[0].ts > LEAP, "the next second stays its own reading"


def test_a_telegram_at_a_leap_second_is_read() -> None:
    text = sample(LANDSLIDE[0]).decode("utf-8")
    text = re.sub(r"<ReportDateTime>[^<]*</ReportDateTime>", "<ReportDateTime>2026-12-01T08:59:60+09:00"
                  "</ReportDateTime>", text)
    text = re.sub(r"<DateTime>[^<]*</DateTime>", "<DateTime>2026-11-30T23:59:60Z</DateTime>", text, count=1)
    telegram = parse(text.encode("utf-8"))
    assert telegram.report_time == telegram.date_time == LEAP
