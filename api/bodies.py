"""Reading and checking JSON request bodies: a bad body is a 400 problem naming the field."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from aiohttp import web

from api.problems import Problem
from sonae.municipality_code import MunicipalityCodeError, normalise

_MISSING = object()
#: a lone surrogate, which only a ``\\ud800``-style JSON escape can produce: UTF-8 (and so PostgreSQL) cannot hold it
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NumberError(ValueError):
    """A number in a body that Sonae does not take (non-finite, or an integer beyond int64)."""


def _int(literal: str) -> int:
    # int() of more than 4,300 digits raises ValueError, and float() of a huge int OverflowError later
    if len(literal.lstrip("-")) > 19:
        raise _NumberError(f"an integer of {len(literal)} characters is out of range")
    return int(literal)


def _float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):  # 1e309 reads as inf
        raise _NumberError(f"{literal[:24]} is beyond the range of a number")
    return value


def _constant(name: str) -> float:
    raise _NumberError(f"{name} is not a number JSON allows")


def loads(text: str) -> Any:
    """``json.loads`` with finite numbers only: NaN, Infinity, 1e309 and integers beyond int64 are refused."""
    return json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (``client_max_size`` already bounds its size)."""
    if request.content_type not in ("application/json", ""):
        raise Problem(415, "Unsupported Media Type", "send the body as application/json")
    try:
        body = await request.json(loads=loads)
    except _NumberError as exc:
        raise Problem(400, "Bad Request", f"the body has a number Sonae cannot take: {exc}") from None
    except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError; nesting beyond the stack
        raise Problem(400, "Bad Request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "the body must be a JSON object")
    where = _lone_surrogate(body)
    if where is not None:
        raise Problem(400, "Bad Request", f"field {where!r} contains a lone surrogate (a \\ud800-\\udfff escape "
                                          "that is not half of a pair); send the text as UTF-8", field=where)
    return body


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


def municipality_code(value: str | None, *, name: str = "municipality_code") -> str | None:
    """A 団体コード in the 6-digit form (5 digits get their check digit), or None; else a 400 problem."""
    if value is None:
        return None
    try:
        return normalise(value)
    except MunicipalityCodeError as exc:
        raise Problem(400, "Bad Request", f"field {name!r}: {exc}", field=name) from None
