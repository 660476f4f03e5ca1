"""Query parameters of the public API, parsed one way everywhere: a bad one is a 400 problem that
names it (and never echoes a value that could be a position)."""

from __future__ import annotations

import math
from datetime import datetime

from aiohttp import web

from api.problems import Problem
from sonae.japantime import parse_query_time, query_time_refusal
from sonae.municipality_code import MunicipalityCodeError, normalise_municipality
from sonae.numbers import DECIMAL as DECIMAL  # re-exported: api.validation reads numbers by it
from sonae.numbers import parse_bbox as parse_bbox


def bad(name: str, detail: str) -> Problem:
    return Problem(400, "Bad Request", detail, parameter=name)


def one(request: web.Request, name: str) -> str | None:
    """The parameter's single value (None when absent); given twice it is a 400, not the first one."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise bad(name, f"parameter {name!r} is given more than once")
    return values[0] if values else None


def number(request: web.Request, name: str, lo: float, hi: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        raise bad(name, f"parameter {name!r} is required")
    if not DECIMAL.match(raw):  # as sent: float() would also take blanks, line breaks, "1_0" and Unicode digits
        raise bad(name, f"parameter {name!r} must be a number (ASCII digits, no spaces or line breaks)")
    value = float(raw)
    if not (math.isfinite(value) and lo <= value <= hi):
        raise bad(name, f"parameter {name!r} must be a number between {lo:g} and {hi:g}")
    return value


def choice(request: web.Request, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = one(request, name)
    if raw is None:
        return default
    if raw not in choices:
        raise bad(name, f"parameter {name!r} must be one of {', '.join(choices)}")
    return raw


def flag(request: web.Request, name: str) -> bool | None:
    raw = one(request, name)
    if raw is None:
        return None
    if raw == "true":
        return True
    if raw == "false":
        return False
    raise bad(name, f"parameter {name!r} must be true or false")


def bbox(request: web.Request, name: str = "bbox") -> tuple[float, float, float, float] | None:
    """``west,south,east,north`` in degrees (WGS 84, :func:`parse_bbox`); None when absent."""
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        return parse_bbox(raw)
    except ValueError as exc:
        raise bad(name, f"parameter {name!r} must be {exc}") from None


def integer(request: web.Request, name: str, lo: int, hi: int) -> int | None:
    """A whole number from ``lo`` to ``hi``, or None when absent."""
    raw = one(request, name)
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and lo <= int(raw) <= hi):
        raise bad(name, f"parameter {name!r} must be a whole number from {lo} to {hi}")
    return int(raw)


def municipality(request: web.Request, name: str = "municipality") -> str | None:
    """A 団体コード filter in the 6-digit form (``07203`` and ``072036`` are the same), or None.

    A code that is not 5 or 6 digits, has a wrong check digit or names no municipality (``000001``, a
    prefecture's ``070009``) is a 400 problem saying which code was meant (:mod:`sonae.municipality_code`).
    """
    raw = one(request, name)
    if raw is None:
        return None
    try:
        return normalise_municipality(raw)
    except MunicipalityCodeError as exc:
        raise bad(name, f"parameter {name!r}: {exc}") from None


def ascii_digits(raw: str, *, max_digits: int = 18) -> bool:
    """True for 1 to ``max_digits`` ASCII digits. :meth:`str.isdigit` alone also accepts superscripts
    and other Unicode digits (``"²"``) that :func:`int` then refuses."""
    return 0 < len(raw) <= max_digits and raw.isascii() and raw.isdigit()


def path_int(request: web.Request, name: str) -> int:
    """A positive integer id from the path (at most 18 digits, so it fits a bigint)."""
    raw = request.match_info[name]
    if not ascii_digits(raw):
        raise Problem(400, "Bad Request", f"{name} must be a positive integer")
    return int(raw)


def query_int(request: web.Request, name: str, *, default: int, lo: int, hi: int) -> int:
    """An integer query parameter from ``lo`` to ``hi`` (``default`` when absent); 400 otherwise."""
    raw = one(request, name)
    if raw is None:
        return default
    text = raw[1:] if raw.startswith("-") else raw
    if not ascii_digits(text):
        raise bad(name, f"parameter {name!r} must be a whole number from {lo} to {hi}")
    value = int(raw)
    if not lo <= value <= hi:
        raise bad(name, f"parameter {name!r} must be a whole number from {lo} to {hi}")
    return value


def instant(request: web.Request, name: str, default: datetime) -> datetime:
    """An ISO 8601 time parameter as an aware UTC ``datetime`` (``default`` when absent or empty).

    Without an offset the time is Japan time (JST), the same rule as ingest (:mod:`sonae.japantime`);
    ``2026-07-12`` is 00:00 JST that day. Years 1900 to 2199 only (:func:`sonae.japantime.parse_query_time`).
    """
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return parse_query_time(raw)
    except ValueError:
        raise bad(name, f"parameter {query_time_refusal(name, raw)}") from None
