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
