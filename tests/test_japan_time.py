"""One rule for times without an offset (Japan time), in device payloads and API query parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.app import create_app
from ingest.contract import Parser, PayloadError, Reading
from ingest.registry import Station, upsert_stations
from ingest.rollups import refresh_rollups
from ingest.store import write_batch
from sonae.config import Settings
from sonae.japantime import JST, parse_iso_time
from tests.api_support import start_client

NOW = datetime(2026, 11, 29, 3, 0, tzinfo=UTC)
TOPIC = "sonae/v1/072036/akutsu/rain"
times = st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2099, 12, 30))


@settings(max_examples=200)
@given(local=times, offset_min=st.integers(-14 * 60, 14 * 60))
def test_an_offset_means_what_it_says_and_none_means_japan_time(local: datetime, offset_min: int) -> None:
    assert parse_iso_time(local.isoformat()) == local.replace(tzinfo=JST)
    zone = timezone(timedelta(minutes=offset_min))
    assert parse_iso_time(local.replace(tzinfo=zone).isoformat()) == local.replace(tzinfo=zone)
    assert parse_iso_time(local.isoformat() + "Z") == local.replace(tzinfo=UTC)


@settings(max_examples=200)
@given(local=times, offset_min=st.integers(-14 * 60, 14 * 60), utc=st.booleans(), at=st.integers(0, 40))
def test_a_space_is_taken_only_between_date_and_time(local: datetime, offset_min: int, utc: bool, at: int) -> None:
    """``fromisoformat`` also takes a space before the offset (found: ``2026-11-29T01:20:00 +09:00`` in a device
    payload was stored); the rule takes one space, in place of the ``T``, and refuses a space anywhere else."""
    written = local.replace(tzinfo=UTC if utc else timezone(timedelta(minutes=offset_min))).isoformat()
    assert parse_iso_time(written.replace("T", " ")) == parse_iso_time(written)
    at = min(at, len(written))
    with pytest.raises(ValueError, match="T or one space between date and time"):
        parse_iso_time(written[:at] + " " + written[at:])
    before_offset = written[:19] + " " + written[19:] if len(written) > 19 else written + " Z"
    with pytest.raises(PayloadError):
        Parser().parse(TOPIC, f'{{"ts": "{before_offset}", "value": 1.5}}'.encode(), now=NOW)


@settings(max_examples=200)
@given(day=st.dates(min_value=datetime(2000, 1, 1).date(), max_value=datetime(2099, 12, 31).date()),
       between=st.characters(codec="ascii").filter(lambda c: c not in "Tt "),
       rest=st.sampled_from(["Z", "+00:00", "-06:34", "+15:33", "01:20:00", "0120", "01:20+09:00"]),
       basic=st.booleans())
def test_only_t_or_a_space_follows_a_date_and_a_date_alone_takes_no_offset(day: object, between: str, rest: str,
                                                                          basic: bool) -> None:
    """Found: ``2026-12-02Z`` in a device payload was stored as 2026-12-01T15:00Z (9 h off: Python 3.11 read
    ``+00:00`` after a date as a time of day), ``2026-12-02-06:34`` as 06:34 JST, and ``2026-11-29x01:20``
    was taken."""
    date = day.strftime("%Y%m%d" if basic else "%Y-%m-%d")  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="no offset on a date alone"):
        parse_iso_time(date + (rest if rest[0] in "Z+-" else between + rest))
    assert parse_iso_time(date) == parse_iso_time(day.isoformat())  # type: ignore[attr-defined]
    with pytest.raises(PayloadError):
        Parser().parse(TOPIC, f'{{"ts": "{date}Z", "value": 1.5}}'.encode(), now=NOW)


def test_a_date_alone_is_midnight_in_japan() -> None:
    assert parse_iso_time("2026-07-12") == datetime(2026, 7, 11, 15, tzinfo=UTC)


def test_device_times_without_an_offset_are_japan_time() -> None:
    parsed = Parser().parse(TOPIC, b'{"ts": "2026-11-29T11:50:00", "value": 1.5}', now=NOW)
    assert [r.ts for r in parsed.readings] == [datetime(2026, 11, 29, 2, 50, tzinfo=UTC)]
    # read as UTC this would be 8 h 50 min in the past; as JST it is 6 minutes in the future
    with pytest.raises(PayloadError) as rejected:
        Parser().parse(TOPIC, b'{"ts": "2026-11-29T12:06:00", "value": 1.5}', now=NOW)
    assert rejected.value.reason == "future_timestamp"


def test_the_contract_parser_raises_the_same_rule() -> None:
    from ingest.contract import parse_time

    assert parse_time("2026-11-29T09:00", now=NOW, max_future=timedelta(0)) == datetime(2026, 11, 29, tzinfo=UTC)
    with pytest.raises(PayloadError):
        parse_time("2026-11-29 9am", now=NOW, max_future=timedelta(0))


@pytest.mark.parametrize("param", ["2026-07-12", "2026-07-12T00:00", "2026-07-11T15:00:00Z", "2026-07-12T00:00+09:00"])
async def test_api_reads_query_times_by_the_same_rule(pool: asyncpg.Pool, settings: Settings, param: str) -> None:
    """Rain at 08:00 and 20:00 JST on 12 July and 07:00 JST on the 13th: the day buckets from
    ``from=<12 July, any spelling>`` start at 00:00 JST and hold 3 mm, then 5 mm."""
    day = datetime(2026, 7, 12, tzinfo=JST)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="r1", name="雨量", municipality_code="072036")])
        await write_batch(conn, [Reading("r1", "rain", day + timedelta(hours=h), mm)
                                 for h, mm in ((8, 1.0), (20, 2.0), (31, 5.0))])
        await refresh_rollups(conn)
    client = await start_client(create_app(pool=pool, settings=settings))
    try:
        resp = await client.get("/api/v1/stations/r1/readings",
                                params={"kind": "rain", "bucket": "1d", "from": param, "to": "2026-07-14"})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        bad = await client.get("/api/v1/stations/r1/readings", params={"from": "12 July"})
        assert bad.status == 400 and (await bad.json())["parameter"] == "from"
    finally:
        await client.close()
    assert body["from"] == "2026-07-11T15:00:00Z"
    assert [(r["bucket"], r["sum"], r["n"]) for r in body["readings"]] == [
        ("2026-07-11T15:00:00Z", 3.0, 2), ("2026-07-12T15:00:00Z", 5.0, 1)]
