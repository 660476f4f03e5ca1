"""Japan time, and the one rule for times written without an offset.

Rule (ingest payloads, API query parameters, anything else Sonae parses): an ISO 8601 time *with* an
offset (``Z``, ``+09:00``, ...) means what it says; a time *without* one is Japan Standard Time
(Asia/Tokyo, UTC+9, no daylight saving since 1951), the time Japanese gauges, 気象庁 and MLIT data and
people in Fukushima write. A date alone is 00:00 JST of that day. Times are stored in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

#: Japan Standard Time (a fixed offset: Japan has no daylight saving time).
JST = timezone(timedelta(hours=9), "JST")


def parse_iso_time(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time into an aware UTC ``datetime``; no offset means JST.

    Raises
    ------
    ValueError
        When ``text`` is not ISO 8601 (``datetime.fromisoformat``'s grammar).
    """
    ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=JST)
    return ts.astimezone(UTC)


#: the instants a query may name (:func:`parse_query_time`): Sonae holds nothing older or newer, and a
#: window of a few years either side of them still fits ``datetime`` (years 1 to 9999)
EARLIEST_QUERY_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_QUERY_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def parse_query_time(text: str) -> datetime:
    """:func:`parse_iso_time` for a time a request asks about (API and NGSI-LD parameters): also raises
    ValueError unless the instant lies from 1900-01-01 (inclusive) to 2200-01-01 (exclusive), UTC.

    Handlers compute windows from such a time (24 h or 366 days back, 5 min ahead); near year 1 or 9999
    that arithmetic leaves ``datetime``'s range (an OverflowError, which was a 500).

    Raises
    ------
    ValueError
        Not ISO 8601, or outside the range (an OverflowError of the offset arithmetic is one too).
    """
    try:
        ts = parse_iso_time(text)
    except OverflowError:
        raise ValueError("the time is out of range") from None
    if not EARLIEST_QUERY_TIME <= ts < LATEST_QUERY_TIME:
        raise ValueError("the time must lie from 1900 to 2199")
    return ts
