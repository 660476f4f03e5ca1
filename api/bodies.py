"""Reading and checking JSON request bodies: a bad body is a 400 problem naming the field."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from api.problems import Problem
from sonae.municipality_code import MunicipalityCodeError, normalise

_MISSING = object()


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (``client_max_size`` already bounds its size)."""
    if request.content_type not in ("application/json", ""):
        raise Problem(415, "Unsupported Media Type", "send the body as application/json")
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise Problem(400, "Bad Request", "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "Bad Request", "the body must be a JSON object")
    return body


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
