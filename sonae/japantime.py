"""Japan time, and the one rule for times written without an offset.

Rule (ingest payloads, API query parameters, anything else Sonae parses): an ISO 8601 time *with* an
offset (``Z``, ``+09:00``, ...) means what it says; a time *without* one is Japan Standard Time
(Asia/Tokyo, UTC+9, no daylight saving since 1951), the time Japanese gauges, 気象庁 and MLIT data and
people in Fukushima write. A date alone is 00:00 JST of that day. Times are stored in UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

#: Japan Standard Time (a fixed offset: Japan has no daylight saving time).
JST = timezone(timedelta(hours=9), "JST")


#: the rule of a written time, in words (every refusal of :func:`parse_iso_time` says it, never Python's own
#: messages: found "offset must be a timedelta strictly between -timedelta(hours=24)…" and "Invalid isoformat
#: string: '٢٠٢٦-07-12'" told to the public)
TIME_RULE = ("expected a date or date-time such as 2026-07-12, 2026-07-12T09:00 or 2026-07-12T09:00+09:00 "
             "(without an offset it is Japan time): ASCII digits, offsets within ±24 h, nothing before or after "
             "it, T or one space between date and time, no offset on a date alone (no line breaks)")


#: a time of day whose seconds are 60 (a leap second, RFC 3339 §5.6 ``time-second = 2DIGIT ; 00-58, 59, 60``)
_LEAP_SECOND = re.compile(r"^(.*[Tt ]\d{2}:\d{2}:)60((?:[.,]\d+)?)(.*)\Z")


def from_iso_format(text: str, *, zone: tzinfo | None = None) -> datetime:
    """``datetime.fromisoformat(text)`` that also reads a leap second (``23:59:60Z``), and gives a time without
    an offset ``zone`` (when one is given).

    A leap second (RFC 3339 §5.7: valid, inserted at the end of a UTC day, 23:59:60 UTC, so 08:59:60 in
    Japan) is read as 23:59:59.999999 UTC: still within its UTC day and minute and ordered after 23:59:59,
    and distinct from the next second 00:00:00, which a device reporting every second also sends (read as
    that next second, the two would share one key (station, kind, exercise, ts), one of them refused as a
    conflicting value). ``datetime`` has no second 60 to hold it exactly.

    Raises
    ------
    ValueError
        Not ``fromisoformat``'s grammar; or a second 60 that is not 23:59:60 UTC (or, without an offset and
        without ``zone``, cannot be placed in UTC).
    """
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        leap = _LEAP_SECOND.match(text)
        if leap is None:
            raise ValueError(TIME_RULE) from None
        try:
            ts = datetime.fromisoformat(leap[1] + "59" + leap[3]).replace(microsecond=999999)
        except ValueError:
            raise ValueError(TIME_RULE) from None
        if ts.tzinfo is None and zone is None:
            raise ValueError(f"leap second {text!r} without an offset") from None
        utc = (ts if ts.tzinfo is not None else ts.replace(tzinfo=zone)).astimezone(UTC)
        if (utc.hour, utc.minute) != (23, 59):
            raise ValueError(f"{text!r}: a leap second is 23:59:60 UTC") from None
    if ts.tzinfo is None and zone is not None:
        ts = ts.replace(tzinfo=zone)
    return ts


#: a calendar date (extended or basic form) and the character after it, if any
_DATE_THEN = re.compile(r"(\d{4}-\d{2}-\d{2}|\d{8})(.?)", re.ASCII)


def _joined_well(text: str) -> bool:
    """Whether what follows a date in ``text`` is its time after ``T``, ``t`` or one space (nothing else: no offset
    on a date alone), and a space in ``text`` can only be the one between a date and its time (``2026-07-12 09:00``,
    RFC 3339 §5.6's note; common in CSV files). Python's ``fromisoformat`` also takes one before the offset
    (``2026-07-12T09:00 +09:00``), which neither ISO 8601 nor RFC 3339 allows and :data:`TIME_RULE` refuses
    in words (found by breaking the ingest with device payloads)."""
    after = _DATE_THEN.match(text)
    if after is not None and after[2] and after[2] not in "Tt ":
        # Python 3.11's fromisoformat takes any one character between date and time, and reads an offset right
        # after a date as a time of day: 2026-12-02Z was 2026-12-02 00:00 JST (9 h off), 2026-12-02+15:33 was
        # 15:33 JST and 2026-12-02-06:34 06:34 JST, each with its offset lost (found by the session's breaker)
        return False
    if " " not in text:
        return True
    date, _, time = text.partition(" ")
    return " " not in time and "T" not in date.upper() and time[:1].isdigit()


def parse_iso_time(text: str) -> datetime:
    """Parse an ISO 8601 date or date-time into an aware UTC ``datetime``; no offset means JST.

    A leap second (``2026-11-30T23:59:60Z``) is 23:59:59.999999 UTC (:func:`from_iso_format`). The text is
    taken exactly as written: surrounding blanks, line breaks and other control characters are refused, not
    trimmed (found: ``from=2026-12-02%0A`` was taken); a reader of a file format whose cells may carry blanks
    (CSV) trims them itself.

    Raises
    ------
    ValueError
        When ``text`` is not ISO 8601 (``datetime.fromisoformat``'s grammar) in ASCII printable characters; the
        message is :data:`TIME_RULE` in words.
    """
    if not (text.isascii() and text.isprintable()) or text != text.strip() or not _joined_well(text):
        raise ValueError(TIME_RULE)
    ts = from_iso_format(text.replace("Z", "+00:00").replace("z", "+00:00"), zone=JST)
    return ts.astimezone(UTC)


#: the instants a query may name (:func:`parse_query_time`): Sonae holds nothing older or newer, and a
#: window of a few years either side of them still fits ``datetime`` (years 1 to 9999)
EARLIEST_QUERY_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_QUERY_TIME = datetime(2200, 1, 1, tzinfo=UTC)

#: the rule of a time a request asks about (:func:`parse_query_time`), in words: :data:`TIME_RULE` and the range.
#: Every refusal of a time parameter says it (the API's ``from``/``to``/``at``…, NGSI-LD's ``timeAt``/``endTimeAt``;
#: a time in NGSI-LD's ``q``, which has no range, says :data:`TIME_RULE`), through :func:`query_time_refusal` (found: each worded its own, "is not an ISO 8601
#: time from 1900 to 2199 (…)" and "must be an ISO 8601 date-time from 1900 to 2199", neither saying the rule)
QUERY_TIME_RULE = f"{TIME_RULE}; from the year 1900 to 2199"


def query_time_refusal(name: str, text: str) -> str:
    """The refusal of ``text``, the value of the time parameter ``name``: ``"timeAt '2026-13-01': expected a
    date or date-time such as …; from the year 1900 to 2199"`` (:data:`QUERY_TIME_RULE`); at most 40 characters of
    the value are quoted."""
    return f"{name} {text[:40]!r}: {QUERY_TIME_RULE}"


def parse_query_time(text: str) -> datetime:
    """:func:`parse_iso_time` for a time a request asks about (API and NGSI-LD parameters): also raises
    ValueError unless the instant lies from 1900-01-01 (inclusive) to 2200-01-01 (exclusive), UTC.

    Handlers compute windows from such a time (24 h or 366 days back, 5 min ahead); near year 1 or 9999
    that arithmetic leaves ``datetime``'s range (an OverflowError, which was a 500).

    Raises
    ------
    ValueError
        Not ISO 8601, or outside the range (an OverflowError of the offset arithmetic is one too); the message is
        :data:`QUERY_TIME_RULE`.
    """
    try:
        ts = parse_iso_time(text)
    except (ValueError, OverflowError):
        raise ValueError(QUERY_TIME_RULE) from None
    if not EARLIEST_QUERY_TIME <= ts < LATEST_QUERY_TIME:
        raise ValueError(QUERY_TIME_RULE)
    return ts
