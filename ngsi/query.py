"""A subset of the NGSI-LD query language (ETSI GS CIM 009 §4.9 ``q``, §4.10 geo-queries), evaluated on
key-values entities in memory.

``q`` supported: terms ``attr``, ``!attr`` (existence), ``attr OP value`` with ``==``, ``!=``, ``>``, ``>=``,
``<``, ``<=``, ``~=`` and ``!~=`` (regular expression); values: numbers, ``"strings"``, ``true``/``false``,
ISO 8601 date-times (quoted or not), ranges ``a..b`` and lists ``a,b,"c"`` (with ``==``/``!=``); strings are quoted
(``name=="x"``), as the grammar says; ``;`` (and,
binding tighter) and ``|`` (or), parentheses. An array-valued attribute matches when any member does.
Not supported (→ :class:`QueryError`, answered 400): attribute paths (``a.b``, ``a[b]``), ``@``-
qualified terms and anything else outside this grammar.

Geo: ``georel`` ``near;maxDistance==N`` / ``near;minDistance==N`` (metres, on the WGS 84 ellipsoid with
pyproj) from a Point, ``within`` / ``intersects`` / ``disjoint`` a Polygon or MultiPolygon (shapely, lon/lat),
on ``location``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import re2  # type: ignore[import-untyped]
from pyproj import Geod
from shapely.geometry import Point, shape
from shapely.ops import nearest_points

from sonae.exacttext import EXACT_RULE, loose_end
from sonae.japantime import TIME_RULE, parse_iso_time

_GEOD = Geod(ellps="WGS84")
MAX_Q = 2000


class QueryError(ValueError):
    """The query cannot be answered; the message says what is wrong (for a 400 BadRequestData)."""


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
MAX_PATTERN = 256


@dataclass(frozen=True)
class Pattern:
    """A regular expression from a request, matched by RE2 in linear time: a pattern cannot stall the
    event loop by backtracking (``(\\d+)+x`` is as cheap as any other)."""

    compiled: Any

    def search(self, text: str) -> bool:
        return self.compiled.search(text) is not None


def compile_pattern(text: str, *, name: str = "q") -> Pattern:
    """Compile a request's regular expression (RE2 syntax, at most 256 characters); raises QueryError."""
    if len(text) > MAX_PATTERN:
        raise QueryError(f"{name}: a pattern may have at most {MAX_PATTERN} characters")
    _exact(name, text)
    try:
        return Pattern(re2.compile(text, _RE2_OPTIONS))
    except re2.error:
        raise QueryError(f"{name}: the pattern is not a valid (RE2) regular expression") from None


def _exact(name: str, text: str) -> None:
    """Refuse a request's text with a blank, line break or other control character around it (found: they were
    skipped as white space between tokens, or by ``json.loads``, and the value taken as if clean)."""
    if (where := loose_end(text)) is not None:
        raise QueryError(f"{name}: {where}; the value is {EXACT_RULE}")


@dataclass(frozen=True)
class Term:
    attr: str
    op: str | None  # None: exists; "!": does not exist
    value: Any = None


@dataclass(frozen=True)
class And:
    parts: tuple[Any, ...]


@dataclass(frozen=True)
class Or:
    parts: tuple[Any, ...]


_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<op>==|!=|>=|<=|!~=|~=|>|<)|(?P<punct>[;|()!])'
                    r'|(?P<word>[^\s;|()!=<>~"]+))')
_ATTR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?\Z")


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise QueryError(f"q: unexpected character at position {pos + 1}")
        kind = m.lastgroup or ""
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


def _scalar(raw: str) -> Any:
    if raw.startswith('"'):
        text = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        return _as_time(text) or text
    if raw in ("true", "false"):
        return raw == "true"
    if _DATETIME.match(raw):  # written as a time: one, or refused with the rule (found: 2026-13-45T00:00 was None)
        if (ts := _as_time(raw)) is None:
            raise QueryError(f"q: {raw[:40]!r}: {TIME_RULE}")
        return ts
    try:
        value = float(raw)
    except ValueError:
        raise QueryError(f"q: {raw[:40]!r} is not a number, a quoted string, true/false or a date-time") from None
    if not math.isfinite(value):
        raise QueryError("q: numbers must be finite")
    return value


def _as_time(text: str) -> datetime | None:
    if not _DATETIME.match(text):
        return None
    try:  # no offset: Japan time, the one rule of ingest and the API (sonae.japantime)
        return parse_iso_time(text)
    except (ValueError, OverflowError):
        return None


def _value(raw: str, op: str) -> Any:
    if op in ("~=", "!~="):
        return compile_pattern(raw[1:-1] if raw.startswith('"') else raw)
    if not raw.startswith('"') and ".." in raw:
        lo, _, hi = raw.partition("..")
        return ("range", _scalar(lo), _scalar(hi))
    if "," in raw and op in ("==", "!="):
        items = re.findall(r'"(?:[^"\\]|\\.)*"|[^,]+', raw)
        return ("list", tuple(_scalar(i) for i in items))
    return _scalar(raw)


def parse_q(text: str) -> Any:
    """Parse a ``q`` expression into a tree of :class:`Term`, :class:`And`, :class:`Or`.

    Raises
    ------
    QueryError
        for anything outside the supported subset (the message names it)."""
    if len(text) > MAX_Q:
        raise QueryError(f"q: at most {MAX_Q} characters")
    _exact("q", text)
    toks = _tokens(text)
    pos = 0

    def peek() -> tuple[str, str] | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> tuple[str, str]:
        nonlocal pos
        if pos >= len(toks):
            raise QueryError("q: the expression ends too early")
        pos += 1
        return toks[pos - 1]

    def disjunction(depth: int) -> Any:
        parts = [conjunction(depth)]
        while peek() == ("punct", "|"):
            take()
            parts.append(conjunction(depth))
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def conjunction(depth: int) -> Any:
        parts = [primary(depth)]
        while peek() == ("punct", ";"):
            take()
            parts.append(primary(depth))
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def primary(depth: int) -> Any:
        if depth > 20:
            raise QueryError("q: parentheses nest too deep")
        kind, text_ = take()
        if (kind, text_) == ("punct", "("):
            inner = disjunction(depth + 1)
            if take() != ("punct", ")"):
                raise QueryError("q: a parenthesis is not closed")
            return inner
        negate = False
        if (kind, text_) == ("punct", "!"):
            negate = True
            kind, text_ = take()
        if kind != "word":
            raise QueryError(f"q: expected an attribute name, found {text_[:20]!r}")
        if not _ATTR.match(text_):
            raise QueryError(f"q: {text_[:40]!r} is not a supported attribute name (attribute paths, "
                             "compound members and @-qualified terms are not supported)")
        if negate:
            return Term(text_, "!")
        nxt = peek()
        if nxt is None or nxt[0] != "op":
            return Term(text_, None)
        op = take()[1]
        kind, raw = take()
        if kind not in ("word", "str"):
            raise QueryError(f"q: expected a value after {op}")
        while (nxt := peek()) is not None and nxt[0] in ("word", "str"):  # "a","b" lists: join the pieces
            raw += take()[1]
        return Term(text_, op, _value(raw, op))

    tree = disjunction(0)
    if pos != len(toks):
        raise QueryError(f"q: unexpected {toks[pos][1][:20]!r}")
    return tree


def _cmp(actual: Any, op: str, want: Any) -> bool:
    if isinstance(want, Pattern):
        hit = isinstance(actual, str) and want.search(actual)
        return hit if op == "~=" else not hit
    if isinstance(want, tuple) and want[0] == "list":
        hit = any(_cmp(actual, "==", w) for w in want[1])
        return hit if op == "==" else not hit
    if isinstance(want, tuple) and want[0] == "range":
        hit = _cmp(actual, ">=", want[1]) and _cmp(actual, "<=", want[2])
        return hit if op == "==" else not hit
    if isinstance(want, datetime) and isinstance(actual, str):
        actual = _as_time(actual)
        if actual is None:
            return op == "!="
    if isinstance(want, bool) or isinstance(actual, bool):
        if not (isinstance(want, bool) and isinstance(actual, bool)):
            return op == "!="
    elif isinstance(want, float):
        if not isinstance(actual, (int, float)):
            return op == "!="
    elif type(want) is not type(actual):
        return op == "!="
    try:
        return {"==": actual == want, "!=": actual != want, ">": actual > want, ">=": actual >= want,
                "<": actual < want, "<=": actual <= want}[op]
    except TypeError:
        return False


def matches(tree: Any, entity: dict[str, Any]) -> bool:
    """True when the key-values ``entity`` satisfies the parsed ``q``."""
    if isinstance(tree, And):
        return all(matches(p, entity) for p in tree.parts)
    if isinstance(tree, Or):
        return any(matches(p, entity) for p in tree.parts)
    present = tree.attr in entity and tree.attr not in ("id", "type")
    if tree.op is None:
        return present
    if tree.op == "!":
        return not present
    if not present:
        return False
    actual = entity[tree.attr]
    if isinstance(actual, list):
        hits = [_cmp(a, "==" if tree.op == "!=" else tree.op, tree.value) for a in actual]
        return not any(hits) if tree.op == "!=" else any(hits)
    if isinstance(actual, dict):
        return False
    return _cmp(actual, tree.op, tree.value)


# -- geo-queries --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GeoQuery:
    rel: str  # near, within, intersects, disjoint
    geometry: Any  # shapely geometry in lon/lat
    max_distance: float | None = None
    min_distance: float | None = None


def parse_geo(georel: str, geometry: str | None, coordinates: str | None, geoproperty: str | None) -> GeoQuery:
    """Parse ``georel``/``geometry``/``coordinates``/``geoproperty``; raises :class:`QueryError`."""
    if geoproperty not in (None, "", "location"):
        raise QueryError("geoproperty: only 'location' is supported")
    if not geometry or not coordinates:
        raise QueryError("a geo-query needs georel, geometry and coordinates")
    _exact("coordinates", coordinates)
    try:
        coords = json.loads(coordinates)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python's stack
        raise QueryError("coordinates must be a JSON array, e.g. [140.47,37.75]") from None
    try:
        geom = shape({"type": geometry, "coordinates": coords})
    except Exception:
        raise QueryError(f"coordinates are not a valid {geometry[:20]}") from None
    if geom.is_empty or not all(math.isfinite(v) for v in geom.bounds):
        raise QueryError("coordinates are empty or not finite")
    if not geom.is_valid:
        raise QueryError(f"coordinates are not a valid {geometry[:20]} (a ring crosses itself?)")
    minx, miny, maxx, maxy = geom.bounds
    if not (-180 <= minx <= maxx <= 180 and -90 <= miny <= maxy <= 90):
        raise QueryError("coordinates must be longitude, latitude (WGS 84)")
    rel, *mods = georel.split(";")
    if rel == "near":
        if geometry != "Point":
            raise QueryError("georel=near needs geometry=Point")
        if len(mods) != 1:
            raise QueryError("georel=near needs exactly one of maxDistance==N or minDistance==N")
        key, sep, raw = mods[0].partition("==")
        try:
            distance = float(raw)
        except ValueError:
            distance = float("nan")
        if not sep or key not in ("maxDistance", "minDistance") or not (math.isfinite(distance) and distance >= 0):
            raise QueryError("georel=near needs maxDistance==N or minDistance==N (metres, N >= 0)")
        return GeoQuery("near", geom, distance if key == "maxDistance" else None,
                        distance if key == "minDistance" else None)
    if rel in ("within", "intersects", "disjoint") and not mods:
        if rel == "within" and geometry not in ("Polygon", "MultiPolygon"):
            raise QueryError("georel=within needs geometry=Polygon or MultiPolygon")
        return GeoQuery(rel, geom)
    raise QueryError("georel must be near;maxDistance==N, near;minDistance==N, within, intersects or disjoint "
                     "(equals, contains and overlaps are not supported)")


def distance_m(geometry: Any, point: Point) -> float:
    """Geodesic distance (WGS 84, metres) from ``point`` to the nearest point of ``geometry``."""
    if geometry.covers(point):
        return 0.0
    nearest = nearest_points(geometry, point)[0]
    return float(_GEOD.inv(point.x, point.y, nearest.x, nearest.y)[2])


def geo_matches(query: GeoQuery, entity: dict[str, Any]) -> bool:
    location = entity.get("location")
    if not isinstance(location, dict):
        return False
    geom = shape(location)
    if query.rel == "near":
        d = distance_m(geom, query.geometry)
        if query.max_distance is not None:
            return d <= query.max_distance
        return d >= (query.min_distance or 0.0)
    if query.rel == "within":
        return bool(query.geometry.covers(geom))
    if query.rel == "intersects":
        return bool(query.geometry.intersects(geom))
    return bool(query.geometry.disjoint(geom))
