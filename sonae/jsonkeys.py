"""JSON from outside with no key given twice in one object: one rule for every reader of outside JSON.

RFC 8259 §4 leaves the meaning of ``{"n": "level", "n": "rain"}`` open; Python's :mod:`json` keeps the last
value silently, another reader the first. A device's SenML record, a request body or an operator's GeoJSON
file that names a key twice is refused instead of guessed at. The readers of outside JSON pass
:func:`unique_object` as ``object_pairs_hook`` (or call :func:`loads_unique`): MQTT payloads
(``ingest.contract.decode_json``: a ``duplicate_key`` dead letter), API bodies (``api.bodies.loads``: a 400),
station, shelter, hazard and boundary files (a CLI error naming the file and where), replay files.

The hook costs one C-level ``dict(pairs)`` and a length comparison per object; where the duplicate is (a
JSON path such as ``$[3]`` or ``$.features[12].properties``) is worked out only for a refused document,
by a second, slower parse (:func:`duplicate_where`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DuplicateKeyError(ValueError):
    """A key given more than once in one JSON object.

    ``key`` is the key (as given), ``where`` a JSON path of the object holding it (``$`` the document,
    ``$.a[2]`` …) or ``""`` while unknown (the hook does not know where it is; :func:`loads_unique` fills it).
    """

    def __init__(self, key: str, where: str = "") -> None:
        self.key, self.where = key, where
        super().__init__(self.describe())

    def describe(self) -> str:
        """Readable text: the key (at most 40 characters, non-printable ones escaped) and where."""
        shown = ascii(self.key[:40]) if not self.key[:40].isprintable() else repr(self.key[:40])
        place = f" in the object at {self.where}" if self.where else " in one object"
        return f"the key {shown} is given more than once{place}; give each key once"


def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: the object as a dict, or :class:`DuplicateKeyError`."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return out


class _Pairs(list):  # type: ignore[type-arg]
    """An object's pairs in order, as the locating parse keeps them."""


def duplicate_where(text: str | bytes, **kwargs: Any) -> tuple[str, str] | None:
    """``(path, key)`` of the first object (in document order) that gives a key twice, or ``None``.

    ``kwargs`` are passed on to :func:`json.loads` (``parse_int`` …); errors of the parse propagate."""
    doc = json.loads(text, object_pairs_hook=_Pairs, **kwargs)
    stack: list[tuple[Any, str]] = [(doc, "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, _Pairs):
            seen: set[str] = set()
            for key, _ in item:
                if key in seen:
                    return path, key
                seen.add(key)
            stack.extend(reversed([(v, f"{path}.{k}" if k.isidentifier() else f"{path}[{json.dumps(k)}]")
                                   for k, v in item]))
        elif isinstance(item, list):
            stack.extend(reversed([(v, f"{path}[{i}]") for i, v in enumerate(item)]))
    return None


def loads_unique(text: str | bytes, *, object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] = unique_object,
                 **kwargs: Any) -> Any:
    """:func:`json.loads` refusing a key given twice in any object, at any depth.

    Raises :class:`DuplicateKeyError` (a ``ValueError``) with ``where`` filled in, and whatever
    :func:`json.loads` raises (``JSONDecodeError``, errors of ``kwargs``' hooks). JSON nested deeper than
    Python's stack (json's ``RecursionError``) is a ``JSONDecodeError`` too (found: readers of outside files
    that handle ``JSONDecodeError`` let a traceback through)."""
    try:
        return json.loads(text, object_pairs_hook=object_pairs_hook, **kwargs)
    except DuplicateKeyError as exc:
        raise locate(exc, text, **kwargs) from None
    except RecursionError:  # deeper than Python's stack: the callers handle JSONDecodeError, not this
        raise json.JSONDecodeError("the JSON is nested deeper than it may be", "", 0) from None


def locate(exc: DuplicateKeyError, text: str | bytes, **kwargs: Any) -> DuplicateKeyError:
    """``exc`` with ``where`` filled in by :func:`duplicate_where` (unchanged if that parse fails)."""
    try:
        found = duplicate_where(text, **kwargs)
    except (ValueError, RecursionError):
        found = None
    return DuplicateKeyError(found[1], found[0]) if found else exc


def read_json_file(path: str | Path) -> Any:
    """A UTF-8 JSON file (an operator's GeoJSON import …) read by :func:`loads_unique`.

    Raises ``OSError``, ``UnicodeDecodeError``, ``json.JSONDecodeError`` and :class:`DuplicateKeyError`
    (``the key 'name' is given more than once in the object at $.features[3].properties; give each key once``:
    the caller names the file)."""
    return loads_unique(Path(path).read_text(encoding="utf-8"))
