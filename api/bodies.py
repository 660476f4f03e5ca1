"""Reading and checking JSON request bodies: a bad body is a 400 problem naming the field.

Every body is parsed one way (:func:`json_object`): strict JSON (no ``NaN``/``Infinity`` literals, no
number that overflows to infinity such as ``1e400``), nested at most :data:`MAX_DEPTH` levels, integers
of at most :data:`MAX_INT_DIGITS` digits, and no key twice in one object (RFC 8259 §4 leaves the meaning
of ``{"name": "a", "name": "b"}`` open; Python would keep the last silently, another reader the first: a
400 says so instead of guessing). Field-specific bounds come on top (:func:`int_field`).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

import asyncpg
from aiohttp import web

from api.problems import Problem
from ingest.municipalities import uncovered
from sonae.jsonkeys import DuplicateKeyError, locate, unique_object
from sonae.municipality_code import MunicipalityCodeError, normalise_municipality
from sonae.nametext import refused_text
from sonae.numbers import unsigned

_MISSING = object()
MAX_DEPTH = 32
#: a request body (at most ``client_max_size``, 1 MiB) must arrive within this many seconds
BODY_TIMEOUT_S = 15.0
MAX_INT_DIGITS = 18  # fits a PostgreSQL bigint
#: a lone surrogate, which only a ``\\ud800``-style JSON escape can produce: UTF-8 (and so PostgreSQL) cannot hold it
_SURROGATE = re.compile("[\ud800-\udfff]")


class _BadNumber(ValueError):
    pass


class _DuplicateKey(_BadNumber):
    pass


def _constant(name: str) -> Any:
    raise _BadNumber(f"{name} is not a JSON number")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _BadNumber("a number is too large")
    return unsigned(value)  # -0.0 and -1e-400 are 0.0: no stored number keeps a negative zero


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _BadNumber(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(text)


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_DEPTH:
                return depth
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def loads(text: str | bytes) -> Any:
    """Strict JSON: raises ValueError for NaN/Infinity, overflowing numbers, over-long integers, a key given
    twice in one object and nesting deeper than :data:`MAX_DEPTH` (json's own recursion limit would be a
    RecursionError)."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int,
                           object_pairs_hook=unique_object)
    except DuplicateKeyError as exc:  # the one rule for outside JSON (sonae.jsonkeys), named with its JSON path
        found = locate(exc, text, parse_constant=_constant, parse_float=_float, parse_int=_int)
        raise _DuplicateKey(found.describe()) from None
    except RecursionError:
        raise _BadNumber(f"the JSON is nested more than {MAX_DEPTH} levels deep") from None
    if _depth(value) > MAX_DEPTH:
        raise _BadNumber(f"the JSON is nested more than {MAX_DEPTH} levels deep")
    return value


#: the parsed body, kept on the request: the validation middleware reads it before the handler does
_PARSED: Any = web.RequestKey("json_object", dict)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (``client_max_size`` already bounds its size); parsed once per request.

    A ``charset`` in the Content-Type is ignored (RFC 8259 §11): the bytes are read as UTF-8, or the UTF-16/32
    that :func:`json.loads` detects from the first bytes; undecodable bytes are a 400."""
    if _PARSED in request:
        return dict(request[_PARSED])
    if request.content_type not in ("application/json", ""):
        raise Problem(415, "Unsupported Media Type", "send the body as application/json")
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            # the bytes, not request.json(): that decodes with the Content-Type's charset, and an unknown
            # one (charset=x) was a LookupError, a 500
            body = loads(await request.read())
    except TimeoutError:
        raise Problem(408, "Request Timeout", f"the body did not arrive within {BODY_TIMEOUT_S:g} s; send it "
                                              "at once", headers={"Connection": "close"}) from None
    except _BadNumber as exc:
        raise Problem(400, "Bad Request", f"the body is not accepted: {exc}") from None
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError
        raise Problem(400, "Bad Request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "the body must be a JSON object")
    where = _lone_surrogate(body)
    if where is not None:
        raise Problem(400, "Bad Request", f"field {where!r} contains a lone surrogate (a \\ud800-\\udfff escape "
                                          "that is not half of a pair); send the text as UTF-8", field=where)
    request[_PARSED] = body
    return dict(body)


def _lone_surrogate(body: dict[str, Any]) -> str | None:
    """The top-level field of ``body`` in which a key or string holds a lone surrogate, or None."""
    for name, value in body.items():
        stack: list[Any] = [name, value]
        while stack:
            item = stack.pop()
            if isinstance(item, str):
                if _SURROGATE.search(item):
                    return name if _SURROGATE.search(name) is None else repr(name)[1:-1]
            elif isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)
    return None


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], *, default: Any = _MISSING) -> Any:
    """One field of a body, of the given type(s); required unless a default is given."""
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        if default is _MISSING:
            raise Problem(400, "Bad Request", f"field {name!r} is required", field=name)
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if int in kinds and float not in kinds and isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON has one number type: 62026.0 is the integer 62026 (JSON Schema agrees)
    if isinstance(value, bool) and bool not in kinds:
        raise Problem(400, "Bad Request", f"field {name!r} has the wrong type", field=name)
    if not isinstance(value, kinds):
        raise Problem(400, "Bad Request", f"field {name!r} has the wrong type", field=name)
    if isinstance(value, str):
        if len(value) > 2000:
            raise Problem(400, "Bad Request", f"field {name!r} is too long", field=name)
        if "\x00" in value:
            raise Problem(400, "Bad Request", f"field {name!r} contains a NUL character", field=name)
    return value


def shown_field(body: dict[str, Any], name: str, *, default: Any = _MISSING, line_breaks: bool = False) -> Any:
    """A text field staff write for the public or other staff to read (an order's area description, a note, a
    display name, a label, a description): :func:`field`, then :func:`sonae.nametext.refused_text`'s rule, a 400
    naming the field and the character (bidirectional controls, zero-width and other format characters, control
    characters; ``line_breaks``: a multi-line field, which keeps its line feeds)."""
    value = field(body, name, str, default=default)
    if isinstance(value, str) and (why := refused_text(name, value, line_breaks=line_breaks)):
        raise Problem(400, "Bad Request", why, field=name)
    return value


def int_field(body: dict[str, Any], name: str, *, lo: int, hi: int, default: Any = _MISSING) -> Any:
    """An integer field from ``lo`` to ``hi`` (400 naming the bounds otherwise)."""
    value = field(body, name, int, default=default)
    if value is not None and value is not default and not lo <= value <= hi:
        raise Problem(400, "Bad Request", f"field {name!r} must be a whole number from {lo} to {hi}", field=name)
    return value


async def covered_municipality(conn: asyncpg.Connection, code: str | None, *, exercise: bool, staff: bool = False,
                               name: str = "municipality_code") -> None:
    """A 422 problem unless ``code`` (a :func:`municipality_code`, or None) names a municipality this deployment
    covers (:func:`ingest.municipalities.uncovered`: in its list and, when boundaries are loaded, with one; the
    drill town for an ``exercise`` entry, or a ``staff`` one, an account or roster entry, only): an order, area,
    webhook, roster entry or account must name one of them. The same status, 422, at every entry (found: an
    account's was 400)."""
    if code is not None and (why := await uncovered(conn, code, exercise=exercise, staff=staff)):
        raise Problem(422, "Unprocessable Content", f"field {name!r}: {why}", field=name)


def number_field(body: dict[str, Any], name: str, *, lo: float, hi: float, default: Any = _MISSING) -> Any:
    """A finite number field from ``lo`` to ``hi`` (400 naming the bounds otherwise)."""
    value = field(body, name, (int, float), default=default)
    if value is not None and value is not default and not (math.isfinite(value) and lo <= value <= hi):
        raise Problem(400, "Bad Request", f"field {name!r} must be a number from {lo:g} to {hi:g}", field=name)
    return value


def municipality_code(value: str | None, *, name: str = "municipality_code") -> str | None:
    """A municipality's 団体コード in the 6-digit form (5 digits get their check digit), or None; else a 400
    problem (also for ``000001`` or a prefecture's own code, which name no municipality)."""
    if value is None:
        return None
    try:
        return normalise_municipality(value)
    except MunicipalityCodeError as exc:
        raise Problem(400, "Bad Request", f"field {name!r}: {exc}", field=name) from None
