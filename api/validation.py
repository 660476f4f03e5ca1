"""Requests checked against the OpenAPI document (:mod:`api.openapi`), in one place.

:func:`validation_middleware` checks every request routed to a documented operation before its handler
runs, with ``jsonschema`` (Draft 2020-12, the dialect of OpenAPI 3.1):

* path, query and header parameters against their schemas. Query values are text: an ``integer``
  parameter must be ASCII digits (an optional ``-``, at most 18 digits), a ``number`` a finite decimal;
  a parameter given twice is refused (which one was meant is unknown);
* a JSON request body against the operation's ``requestBody`` schema (parsed the one strict way of
  :func:`api.bodies.json_object`: no NaN, depth ≤ 32, no lone surrogates).

A violation is a 400 ``application/problem+json`` that names the field (``field``, dotted with ``[i]``
for list items, e.g. ``subscription.keys.p256dh``) or the parameter (``parameter``) and the rule
(``rule``: the JSON Schema keyword, or ``format:<name>``), and says what is expected.

Rules JSON Schema cannot state are named formats, registered here (:data:`FORMATS`) and described in the
document (``info.x-formats``): ``municipality-code`` (JIS X 0402 check digit), ``p256-public-key`` and
``push-auth-secret`` (Web Push keys, RFC 8291: base64url, padded or not), ``bbox`` (west < east, south <
north, in degrees), ``geojson-area`` / ``geojson-geometry`` (a GeoJSON geometry that shapely reads, with
WGS 84 coordinates, polygons without self-crossings), ``date-time`` (ISO 8601 as
:func:`sonae.japantime.parse_query_time` reads it: without an offset it is Japan time; years 1900 to 2199), ``printable``,
``ngsi-ld-id`` (an absolute URI, ETSI GS CIM 009 §4.5.2), ``ngsi-ld-q`` and ``ngsi-ld-pattern`` (checked
by the parsers of :mod:`ngsi.query`) and ``ngsi-ld-coordinates``.

Query parameters the operation does not document are refused (rule ``unknown``), and request-body
objects are closed (``additionalProperties: false`` in the document): a misspelt name is an error, not
silently ignored. Parameters each valid but not together (``lat`` without ``lon``, ``from`` after
``to``) are the handlers' to refuse, with 422 as the document says.

An inline simulation scenario (an object) is checked by the simulator's parser in its handler: its
grammar (docs/scenarios) is not spelt in the document.

Cost (issue #20): jsonschema takes ~2.5 µs a parameter, and every request passes here. Each (route, method)
gets a plan once: its parameters, each with a :func:`shortcut` (a set lookup for an enum, a parse and two
comparisons for a number…) that accepts only text jsonschema accepts. A request whose parameters the
shortcuts all accept (the usual case) is never given to jsonschema; any other goes through the full check,
which alone refuses and says why, so refusals and their problems are those of the full check. A request to
an operation without parameters or body, and without a query string, costs a dictionary lookup.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError, best_match

from api.bodies import json_object
from api.openapi import COMPONENTS, NO_NUL, document
from api.operations import PerOperation
from api.params import DECIMAL, parse_bbox
from api.problems import Problem
from ngsi.query import QueryError, compile_pattern, parse_q
from notify.webpush import b64u_decode, check_auth, check_p256dh
from sonae.geojson import read_geometry
from sonae.japantime import parse_query_time
from sonae.municipality_code import MunicipalityCodeError, normalise_municipality

NGSI_BAD_REQUEST = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"

# -- the named formats ------------------------------------------------------------------------------
FORMATS = FormatChecker(formats=())
@FORMATS.checks("municipality-code", raises=MunicipalityCodeError)
def _municipality_code(value: object) -> bool:
    if isinstance(value, str):
        normalise_municipality(value)
    return True


@FORMATS.checks("p256-public-key", raises=ValueError)
def _p256(value: object) -> bool:
    if isinstance(value, str):
        check_p256dh(b64u_decode(value))  # ValueError (WebPushError is one) says why
    return True


@FORMATS.checks("push-auth-secret", raises=ValueError)
def _auth_secret(value: object) -> bool:
    if isinstance(value, str):
        check_auth(b64u_decode(value))
    return True


@FORMATS.checks("bbox", raises=ValueError)
def _bbox(value: object) -> bool:
    if isinstance(value, str):
        parse_bbox(value)
    return True


@FORMATS.checks("geojson-area", raises=ValueError)
def _geojson_area(value: object) -> bool:
    if isinstance(value, dict):
        read_geometry(value, areas_only=True)
    return True


@FORMATS.checks("geojson-geometry", raises=ValueError)
def _geojson_geometry(value: object) -> bool:
    if isinstance(value, dict):
        read_geometry(value, areas_only=False)
    return True


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if isinstance(value, str):
        parse_query_time(value)
    return True


@FORMATS.checks("printable", raises=ValueError)
def _printable(value: object) -> bool:
    if isinstance(value, str) and not value.isprintable():
        raise ValueError("printable text (no control characters)")
    return True


@FORMATS.checks("ngsi-ld-id", raises=ValueError)
def _ngsi_ld_id(value: object) -> bool:
    if isinstance(value, str) and not (len(value) <= 512 and value.isprintable()
                                       and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:\S", value)):
        raise ValueError("an absolute URI such as urn:ngsi-ld:WaterObserved:…")
    return True


@FORMATS.checks("ngsi-ld-q", raises=QueryError)
def _ngsi_q(value: object) -> bool:
    if isinstance(value, str):
        parse_q(value)
    return True


@FORMATS.checks("ngsi-ld-pattern", raises=QueryError)
def _ngsi_pattern(value: object) -> bool:
    if isinstance(value, str):
        compile_pattern(value, name="idPattern")
    return True


def _positions(value: Any) -> bool:
    """GeoJSON nesting of [lon, lat] positions: finite numbers at the leaves, at most 4 levels deep."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > 4 or not isinstance(item, list) or not item:
            return False
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in item):
            if len(item) not in (2, 3) or not all(math.isfinite(v) for v in item):
                return False
        else:
            stack.extend((v, depth + 1) for v in item)
    return True


@FORMATS.checks("ngsi-ld-coordinates", raises=ValueError)
def _ngsi_coordinates(value: object) -> bool:
    if isinstance(value, str):
        try:
            parsed = json.loads(value, parse_constant=lambda name: math.nan)
        except (ValueError, RecursionError):
            raise ValueError("not JSON") from None
        if not _positions(parsed):
            raise ValueError("a JSON array of [longitude, latitude] positions")
    return True


# -- parameters ---------------------------------------------------------------------------------------
_INTEGER = re.compile(r"^-?[0-9]{1,18}\Z")


def coerce(raw: str, schema: dict[str, Any]) -> Any:
    """A query/path/header value as the type its schema names; ValueError when it is not one."""
    kind = schema.get("type")
    if kind == "integer":
        if not (raw.isascii() and _INTEGER.match(raw)):
            raise ValueError("a whole number")
        return int(raw)
    if kind == "number":
        if not (raw.isascii() and DECIMAL.match(raw)) or not math.isfinite(float(raw)):
            raise ValueError("a number")
        return float(raw)
    if kind == "boolean":
        if raw not in ("true", "false"):
            raise ValueError("true or false")
        return raw == "true"
    return raw


@dataclass(frozen=True)
class _Parameter:
    name: str
    where: str  # query, path, header
    required: bool
    schema: dict[str, Any]
    validator: Draft202012Validator
    #: True only for raw text the full check (:func:`coerce`, then ``validator``) accepts; None: no shortcut
    accepts: Callable[[str], bool] | None


@dataclass(frozen=True)
class _Operation:
    parameters: tuple[_Parameter, ...]
    body: Draft202012Validator | None
    body_required: bool


@functools.lru_cache(maxsize=512)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """A JSON Schema ``pattern`` (ECMA-262 syntax and meaning, JSON Schema 2020-12 §6.3.3) compiled for
    Python's :mod:`re`, searched as the keyword is (unanchored unless the pattern anchors itself).

    The one difference that matters for the document's patterns is ``$``: in ECMA-262 (no ``m`` flag) it
    matches at the end of the text only; Python's ``$`` also matches before a final newline, so
    ``hazard=flood%0A``, a username ``"alice\\n"`` or a webhook URL ending in a newline passed a pattern
    ``^…$`` (found: jsonschema searches with :func:`re.search` as it is). Each ``$`` outside a character
    class and not escaped becomes ``\\Z``. Raises :class:`re.error` for a pattern Python cannot read.
    """
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i:i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "$":
            c = "\\Z"
        out.append(c)
        i += 1
    return re.compile("".join(out))


def _pattern(validator: Any, pattern: str, instance: Any, schema: dict[str, Any]) -> Iterator[ValidationError]:
    """jsonschema's ``pattern`` keyword with the pattern's ECMA-262 meaning (:func:`ecma_regex`)."""
    if validator.is_type(instance, "string") and not ecma_regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


#: Draft 2020-12 with ``pattern`` read as ECMA-262 (:func:`ecma_regex`)
Validator = validators.extend(Draft202012Validator, {"pattern": _pattern})


def validator_of(schema: dict[str, Any]) -> Draft202012Validator:
    """The jsonschema validator of one parameter or body schema (the document's components, the named formats)."""
    return Validator({**schema, "components": COMPONENTS}, format_checker=FORMATS)  # type: ignore[no-any-return]


#: keywords a shortcut knows; a schema with any other keyword is checked by jsonschema alone
_ANNOTATIONS = frozenset({"description", "default", "title", "examples"})
_SHORTCUT_KEYWORDS = {"string": frozenset({"type", "enum", "pattern", "format", "minLength", "maxLength"}) | _ANNOTATIONS,
                      "integer": frozenset({"type", "minimum", "maximum"}) | _ANNOTATIONS,
                      "number": frozenset({"type", "minimum", "maximum"}) | _ANNOTATIONS,
                      "boolean": frozenset({"type"}) | _ANNOTATIONS}


def shortcut(schema: dict[str, Any]) -> Callable[[str], bool] | None:
    """A check of a parameter's raw text that makes the decision of :func:`coerce` and jsonschema without
    jsonschema's cost (about 2.5 µs a parameter): True only when the full check would accept the text.

    The same :func:`coerce`, then each keyword as jsonschema (4.x) applies it to the coerced value: ``enum``
    (equality: a set of its strings), ``pattern`` (:func:`ecma_regex`, searched), ``format`` (the
    :data:`FORMATS` check), ``minLength``/``maxLength`` (code points), ``minimum``/``maximum``. None for a
    schema with any other keyword (``$ref``, ``oneOf``, ``exclusiveMinimum``…): jsonschema alone checks it.
    A False answer is not a refusal: the full check runs and says why (tests/api/test_api_validation_shortcut.py
    compares both on arbitrary text).
    """
    kind = schema.get("type")
    known = _SHORTCUT_KEYWORDS.get(kind) if isinstance(kind, str) else None
    if known is None or not set(schema) <= known:
        return None
    checks: list[Callable[[Any], bool]] = []
    if "enum" in schema:
        allowed = frozenset(v for v in schema["enum"] if isinstance(v, str))  # a text equals no other JSON value
        checks.append(allowed.__contains__)
    if "pattern" in schema:
        search = ecma_regex(schema["pattern"]).search
        checks.append(lambda value: search(value) is not None)
    if "format" in schema and schema["format"] in FORMATS.checkers:
        name = schema["format"]
        checks.append(lambda value: FORMATS.conforms(value, name))
    if "minLength" in schema:
        shortest = schema["minLength"]
        checks.append(lambda value: len(value) >= shortest)
    if "maxLength" in schema:
        longest = schema["maxLength"]
        checks.append(lambda value: len(value) <= longest)
    if "minimum" in schema:
        lowest = schema["minimum"]
        checks.append(lambda value: not value < lowest)
    if "maximum" in schema:
        highest = schema["maximum"]
        checks.append(lambda value: not value > highest)
    if kind == "string" and len(checks) == 1 and "enum" in schema:
        return allowed.__contains__  # the common case (hazard=flood): one set lookup

    def accepts(raw: str) -> bool:
        try:
            value = coerce(raw, schema)
        except ValueError:
            return False
        return all(check(value) for check in checks)

    return accepts


def _compile(operation: dict[str, Any]) -> _Operation:
    parameters = tuple(_Parameter(p["name"], p["in"], bool(p.get("required")), p["schema"], validator_of(p["schema"]),
                                  shortcut(p["schema"]))
                       for p in operation.get("parameters", ()))
    body = operation.get("requestBody")
    schema = body["content"].get("application/json", {}).get("schema") if body else None
    return _Operation(parameters, validator_of(schema) if schema is not None else None,
                      bool(body and body.get("required")))


#: each application's compiled operations, from its own document (settings change a few rules)
COMPILED: web.AppKey[dict[tuple[str, str], _Operation]] = web.AppKey("validation", dict)


def compiled(app: web.Application) -> dict[tuple[str, str], _Operation]:
    """The operations of ``app``'s document, compiled once (filled on the first request)."""
    table = app[COMPILED]
    if not table:
        for path, methods in document(app)["paths"].items():
            for method, operation in methods.items():
                table[(method, path)] = _compile(operation)
    return table


@dataclass(frozen=True)
class _Plan:
    """What to check of a request to one operation, prepared once per (route, method).

    ``query``: each documented query parameter's shortcut (None: none); ``required``: the required query
    parameters; ``others``: path and header parameters with their shortcuts; ``nothing``: no parameter
    and no body, so a request without a query string has nothing to check.
    """

    operation: _Operation
    query: dict[str, Callable[[str], bool] | None]
    required: frozenset[str]
    others: tuple[tuple[_Parameter, Callable[[str], bool] | None], ...]
    nothing: bool


def _plan(operation: _Operation) -> _Plan:
    query = {p.name: p.accepts for p in operation.parameters if p.where == "query"}
    required = frozenset(p.name for p in operation.parameters if p.where == "query" and p.required)
    others = tuple((p, p.accepts) for p in operation.parameters if p.where != "query")
    return _Plan(operation, query, required, others,
                 nothing=not operation.parameters and operation.body is None)


def _parameters_accepted(request: web.Request, plan: _Plan) -> bool:
    """True when every parameter of ``request`` is one :func:`check_parameters` accepts, decided by the
    shortcuts alone; False when that is not certain (an unknown or repeated parameter, a missing one, a
    value a shortcut does not accept, a parameter without shortcut): then the full check decides."""
    if request.query_string:
        query = request.query
        seen: set[str] = set()
        for name, raw in query.items():
            accepts = plan.query.get(name)
            if accepts is None or name in seen or not accepts(raw):
                return False
            seen.add(name)
        if not plan.required <= seen:
            return False
    elif plan.required:
        return False
    for param, accepts in plan.others:
        given = request.match_info.get(param.name) if param.where == "path" else request.headers.get(param.name)
        if given is None:
            if param.required:
                return False
        elif accepts is None or not accepts(given):
            return False
    return True


def _rule(error: ValidationError) -> str:
    return f"format:{error.validator_value}" if error.validator == "format" else str(error.validator)


_TYPES = {"string": "text", "number": "a number", "integer": "a whole number", "boolean": "true or false",
          "object": "an object", "array": "a list", "null": "null"}


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _explain(error: ValidationError) -> str:
    """What the rule asks, in words a person reads (never the schema's own text, such as a regular expression or
    a keyword like ``minProperties``; the keyword is the problem's ``rule``); the cause of a format error says
    why. A pattern says what it expects by its schema's ``description``, when it has one."""
    rule, value, schema = error.validator, error.validator_value, error.schema
    if rule == "format":
        why = f": {error.cause}" if error.cause is not None and str(error.cause) else ""
        return f"must be a {value}{why}"
    if rule == "required":
        return error.message.replace("is a required property", "is required")
    if rule == "type":
        kinds = value if isinstance(value, list) else [value]
        return "must be " + " or ".join(_TYPES.get(str(k), str(k)) for k in kinds)
    if rule in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        words = {"minimum": "at least", "maximum": "at most", "exclusiveMinimum": "more than",
                 "exclusiveMaximum": "less than"}[str(rule)]
        return f"must be {words} {value:g}" if isinstance(value, int | float) else f"must be {words} {value}"
    if rule == "enum":
        return "must be one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in value)
    if rule == "const":
        return f"must be {json.dumps(value, ensure_ascii=False)}"
    if rule == "minLength":
        return f"must be at least {_plural(value, 'character')} long"
    if rule == "maxLength":
        return f"must be at most {_plural(value, 'character')} long"
    if rule == "minItems":
        return f"must list at least {_plural(value, 'item')}"
    if rule == "maxItems":
        return f"must list at most {_plural(value, 'item')}"
    if rule == "minProperties":
        return f"must give at least {_plural(value, 'field')}" + (
            f" (of {', '.join(schema['properties'])})" if isinstance(schema.get("properties"), dict) else "")
    if rule == "maxProperties":
        return f"must give at most {_plural(value, 'field')}"
    if rule == "pattern":
        if value == NO_NUL:
            return "must not contain a NUL character"
        described = schema.get("description")
        return f"must be {described}" if isinstance(described, str) else "is not in the expected form"
    if rule == "additionalProperties" and isinstance(error.instance, dict):
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        return "takes no field " + ", ".join(repr(k[:40]) for k in extra[:5])
    if rule in ("oneOf", "anyOf"):
        return "matches none of the allowed forms"
    return "is not accepted here"  # never the message: it quotes the value, and the keyword is the rule


def _where(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def check_parameters(request: web.Request, operation: _Operation) -> None:
    """The full check of ``request``'s parameters (jsonschema): raises the 400 problem of the first violation,
    an unknown query parameter first, then each documented parameter in the document's order."""
    known = {p.name for p in operation.parameters if p.where == "query"}
    for name in request.query:
        if name not in known:  # a misspelt parameter would otherwise be ignored without a word
            shown = name[:40] if name.isprintable() else repr(name[:40])
            raise Problem(400, "Bad Request", f"parameter {shown!r} is not one of this operation's"
                          + (f" ({', '.join(sorted(known))})" if known else " (it takes none)"),
                          parameter=name[:40], rule="unknown")
    for param in operation.parameters:
        if param.where == "query":
            values = request.query.getall(param.name, [])
            if len(values) > 1:
                raise Problem(400, "Bad Request", f"parameter {param.name!r} is given more than once",
                              parameter=param.name, rule="repeated")
            raw = values[0] if values else None
        elif param.where == "path":
            raw = request.match_info.get(param.name)
        else:
            raw = request.headers.get(param.name)
        if raw is None:
            if param.required:
                raise Problem(400, "Bad Request", f"parameter {param.name!r} is required", parameter=param.name,
                              rule="required")
            continue
        try:
            value = coerce(raw, param.schema)
        except ValueError as exc:
            raise Problem(400, "Bad Request", f"parameter {param.name!r} must be {exc}", parameter=param.name,
                          rule="type") from None
        error = best_match(param.validator.iter_errors(value))
        if error is not None:
            # never echo the value: it could be a resident's position
            raise Problem(400, "Bad Request", f"parameter {param.name!r}: {_explain(error)}", parameter=param.name,
                          rule=_rule(error))


async def check_request(request: web.Request, key: tuple[str, str]) -> None:
    """Raise a 400 problem when ``request`` does not follow operation ``key`` of the document."""
    operation = compiled(request.app).get(key)
    if operation is not None:
        await _check(request, _plan(operation))


async def _check(request: web.Request, plan: _Plan) -> None:
    """:func:`check_request` with the operation's plan: the shortcuts first, the full check when they are
    not certain (it alone refuses, and says why)."""
    operation = plan.operation
    if not _parameters_accepted(request, plan):
        check_parameters(request, operation)
    if operation.body is None:
        return
    if not request.body_exists:  # (can_read_body turns False once the body is read)
        if operation.body_required:
            raise Problem(400, "Bad Request", "send a JSON object as the body", field="", rule="required")
        return
    body = await json_object(request)
    error = best_match(operation.body.iter_errors(body))
    if error is not None:
        where = _where(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            where = _where([*error.absolute_path, extra[0][:40]]) if extra else where
        name = f"field {where!r}" if where else "the body"
        raise Problem(400, "Bad Request", f"{name}: {_explain(error)}", field=where, rule=_rule(error))


def validation_middleware(operation_of: Callable[[web.Request], tuple[str, str] | None]) -> Any:
    """Check each request against its operation (``operation_of`` gives its (method, path) key; it must
    depend on the matched resource and the method alone: it is asked once per pair, and the plan kept)."""

    def plan_for(request: web.Request) -> _Plan | None:
        key = operation_of(request)
        operation = compiled(request.app).get(key) if key is not None else None
        return _plan(operation) if operation is not None else None

    plan_of = PerOperation(plan_for)

    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        plan = plan_of(request)
        if plan is not None and not (plan.nothing and not request.query_string):
            try:
                await _check(request, plan)
            except Problem as exc:
                if request.path.startswith("/ngsi-ld/") and exc.status == 400:
                    exc.extra["type"] = NGSI_BAD_REQUEST  # NGSI-LD names its error types (GS CIM 009 §5.5.2)
                raise
        return await handler(request)

    return middleware
