"""The validation shortcuts (issue #20: the middleware cost ~40 µs a request, most of it jsonschema) decide
exactly as the full check: a parameter's raw text is accepted by :func:`api.validation.shortcut` if and
only if :func:`api.validation.coerce` and jsonschema (the oracle) accept it, on arbitrary text, exotic
numerals and near misses included; and a whole request is refused by the middleware, with the same
problem, exactly when the full parameter check (:func:`api.validation.check_parameters`) refuses it.

Pure logic: requests are made up (``make_mocked_request``) and routed by the application's own router."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from jsonschema.exceptions import best_match

from api.app import create_app
from api.authorization import operation_key
from api.openapi import document
from api.problems import Problem
from api.validation import check_parameters, coerce, compiled, shortcut, validation_middleware, validator_of
from sonae.config import load_settings

#: text a lenient number or enum parser takes and the document's rules do not (or do: the oracle says)
EXOTIC = ["", " ", "\n", "\t", "\u3000", "\x85", "\ufeff", "١", "٣٧.٤", "１", "²", "٠", "1e3", "1E3", "1e", "1e999",
          "1e-999", " 1", "1 ", "1\n", "\n1", "37.4\n", "NaN", "nan", "Infinity", "-Infinity", "inf", "+1", "-1", "-0",
          "-", ".", ".5", "5.", "0x1", "0b1", "0o7", "1_000", "00", "007", "1.0", "10", "5000", "5001", "1000000000",
          "1000000001", "999999999999999999", "-999999999999999999", "9999999999999999999", "90", "90.0000001",
          "-90", "-90.1", "180", "180.5", "true", "True", "TRUE", "false", "false ", "flood", "Flood", "flood\n",
          "ｆｌｏｏｄ", "ja-easy", "ja_easy", "072036", "07203", "072037", "072036\n", " 072036", "2026-07-12T09:00",
          "2026-07-12T00:00Z", "2026-07-12", "1899-12-31T23:59:59Z", "2026-13-01", "140.3,37.3,140.5,37.5",
          "140.5,37.3,140.3,37.5", "1,2,3", "urn:ngsi-ld:WaterObserved:G1", "no-colon", "a: b", "waterLevel>2.5",
          "waterLevel>", "urn:ngsi-ld:.*", "[[140.3,37.4]]", "[140.3,37.4]", "within", "near;maxDistance==100",
          "near;maxDistance==x", "keyValues", "keyValues,sysAttrs", "keyValues,", "0", "12", "abc\x00", "x" * 101]


def _schemas() -> list[dict[str, Any]]:
    """Every distinct parameter schema of the document (query, path and header)."""
    seen: dict[str, dict[str, Any]] = {}
    for methods in document()["paths"].values():
        for operation in methods.values():
            for param in operation.get("parameters", ()):
                seen.setdefault(json.dumps(param["schema"], sort_keys=True), param["schema"])
    return list(seen.values())


SCHEMAS = _schemas()


def _full(schema: dict[str, Any], raw: str) -> bool:
    """The oracle: the text's coercion, then jsonschema's verdict on the value."""
    try:
        value = coerce(raw, schema)
    except ValueError:
        return False
    return best_match(validator_of(schema).iter_errors(value)) is None


def _numerals() -> st.SearchStrategy[str]:
    signs = st.sampled_from(["", "", "-", "+", " ", "0", "\n", "\t"])
    numbers = st.one_of(st.integers(-(10**20), 10**20).map(str), st.floats().map(repr), st.floats().map(str),
                        st.floats(-200, 200).map(lambda v: f"{v:.6f}"), st.floats().map(lambda v: f"{v:e}"),
                        st.decimals(allow_nan=True).map(str))
    return st.builds(lambda a, n, b: a + n + b, signs, numbers, st.sampled_from(["", "", " ", "\n", "x", "e1"]))


def _texts(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """Arbitrary text, and text near the schema's accepted values (valid ones and near misses)."""
    parts = [st.text(max_size=40), st.sampled_from(EXOTIC), _numerals()]
    if "enum" in schema:
        values = [str(v) for v in schema["enum"]]
        parts.append(st.sampled_from(values))
        parts.append(st.builds(lambda v, a, b: a + v + b, st.sampled_from(values),
                               st.sampled_from(["", " ", "\n", "x"]), st.sampled_from(["", " ", "\n", "\u00a0"])))
        parts.append(st.sampled_from(values).map(str.upper))
    if "pattern" in schema:
        parts.append(st.from_regex(schema["pattern"]))
    fmt = schema.get("format")
    if fmt in ("municipality-code", "bbox", "date-time"):
        parts.append(st.text("0123456789", min_size=4, max_size=7))
    if fmt == "bbox":
        coordinate = st.floats(-200, 200).map(lambda v: f"{v:.3f}")
        parts.append(st.lists(coordinate, min_size=3, max_size=5).map(",".join))
    if fmt == "date-time":
        parts.append(st.builds(lambda t, z: t.isoformat() + z, st.datetimes(),
                               st.sampled_from(["", "Z", "+09:00", "-12:00", " "])))
    if fmt in ("ngsi-ld-q", "ngsi-ld-pattern", "ngsi-ld-id", "ngsi-ld-coordinates", "printable"):
        parts.append(st.text("abcW:;.,=<>!~|()[]0123456789-\"' *", max_size=30))
    return st.one_of(parts)


@pytest.mark.parametrize("schema", SCHEMAS, ids=[json.dumps(s, sort_keys=True)[:60] for s in SCHEMAS])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_shortcut_decides_as_jsonschema(schema: dict[str, Any], data: st.DataObject) -> None:
    accepts = shortcut(schema)
    assert accepts is not None, f"no shortcut for {schema}: every parameter would cost jsonschema's ~2.5 µs"
    raw = data.draw(_texts(schema), label="raw")
    assert accepts(raw) == _full(schema, raw), f"{raw!r} against {schema}"


@pytest.mark.parametrize("raw", EXOTIC)
def test_exotic_numerals_are_decided_as_jsonschema_does(raw: str) -> None:
    """Every listed exotic text against every schema (hypothesis draws them, too, but not all every run)."""
    for schema in SCHEMAS:
        accepts = shortcut(schema)
        assert accepts is not None and accepts(raw) == _full(schema, raw), f"{raw!r} against {schema}"


def test_a_schema_with_other_keywords_has_no_shortcut() -> None:
    """Keywords the shortcut does not implement leave the decision to jsonschema (never a silent accept)."""
    for schema in ({"type": "integer", "exclusiveMinimum": 0}, {"type": "string", "const": "x"},
                   {"$ref": "#/components/schemas/Problem"}, {"oneOf": [{"type": "string"}]},
                   {"type": ["string", "null"]}, {"type": "string", "multipleOf": 2}, {"enum": ["a"]}):
        assert shortcut(schema) is None, schema
    assert shortcut({"type": "string", "description": "free text"}) is not None


# -- whole requests --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[web.Application]:
    state: Path = tmp_path_factory.mktemp("state")
    yield create_app(pool=None, settings=load_settings(environ={  # type: ignore[arg-type]  # never connects
        "SONAE_DATABASE_URL": "postgresql://unused@127.0.0.1:1/unused", "SONAE_STATE_DIR": str(state)}))


#: operations with query, path and header parameters (path templates filled with a test value)
OPERATIONS = [("GET", "/api/v1/route", "/api/v1/route"), ("GET", "/api/v1/alerts", "/api/v1/alerts"),
              ("GET", "/api/v1/shelters/nearest", "/api/v1/shelters/nearest"),
              ("GET", "/api/v1/stations/{station_id}/readings", "/api/v1/stations/{}/readings"),
              ("GET", "/ngsi-ld/v1/entities", "/ngsi-ld/v1/entities"),
              ("GET", "/ngsi-ld/v1/entities/{entity_id}", "/ngsi-ld/v1/entities/{}"),
              ("DELETE", "/api/v1/push/subscriptions/{subscription_id}", "/api/v1/push/subscriptions/{}"),
              ("HEAD", "/api/v1/alerts", "/api/v1/alerts"), ("GET", "/healthz", "/healthz")]


def _outcome(call: Any) -> tuple[Any, ...] | None:
    try:
        call()
    except Problem as exc:
        return exc.status, exc.title, exc.detail, exc.extra
    return None


async def _routed(app: web.Application, method: str, url: str, headers: dict[str, str]) -> web.Request:
    request = make_mocked_request(method, url, headers=headers, app=app)
    match = await app.router.resolve(request)
    match.add_app(app)
    match.freeze()
    request._match_info = match  # as the application's handler does before the middlewares
    return request


#: a valid value of each named format
FORMAT_EXAMPLES = {"municipality-code": ["072036", "07203"], "date-time": ["2026-07-12T09:00", "2026-07-12T00:00Z"],
                   "bbox": ["140.3,37.3,140.5,37.5"], "ngsi-ld-id": ["urn:ngsi-ld:WaterObserved:G1"],
                   "ngsi-ld-q": ["waterLevel>2.5"], "ngsi-ld-pattern": ["urn:ngsi-ld:.*"],
                   "ngsi-ld-coordinates": ["[140.3,37.4]"], "printable": ["abc", "郡山"]}


def _valid(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """Text the schema accepts (mostly: the oracle decides)."""
    if "enum" in schema:
        return st.sampled_from([str(v) for v in schema["enum"]])
    if schema.get("type") == "integer":
        return st.integers(schema.get("minimum", -(10**6)), schema.get("maximum", 10**6)).map(str)
    if schema.get("type") == "number":
        return st.floats(schema.get("minimum", -1e6), schema.get("maximum", 1e6)).map(lambda v: f"{v:.5f}")
    if "pattern" in schema:
        return st.from_regex(schema["pattern"])
    if schema.get("format") in FORMAT_EXAMPLES:
        return st.sampled_from(FORMAT_EXAMPLES[schema["format"]])
    return st.text(max_size=8)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
async def test_the_middleware_refuses_what_the_full_check_refuses(app: web.Application, data: st.DataObject) -> None:
    method, template, filled = data.draw(st.sampled_from(OPERATIONS), label="operation")
    operation = compiled(app)[(method.lower().replace("head", "get"), template)]
    query = [p for p in operation.parameters if p.where == "query"]
    # mostly a valid request: required parameters, some optional ones, valid values
    items = [(p.name, data.draw(_valid(p.schema), label=p.name)) for p in query
             if data.draw(st.integers(0, 9), label=f"{p.name}?") < (9 if p.required else 4)]
    # then none, one or a few changes: a value from arbitrary text, a parameter given twice, an unknown name
    for change in data.draw(st.lists(st.sampled_from(["value", "twice", "unknown", "drop"]), max_size=2),
                            label="changes"):
        if change == "unknown":
            items.append((data.draw(st.sampled_from(["x", "Lat", "lat ", "", "q", "LIMIT"])), "1"))
        elif items:
            i = data.draw(st.integers(0, len(items) - 1))
            name = items[i][0]
            schema = next((p.schema for p in query if p.name == name), {"type": "string"})  # (an unknown one)
            if change == "value":
                items[i] = (name, data.draw(_texts(schema), label="changed"))
            elif change == "twice":
                items.append((name, data.draw(st.one_of(st.just(items[i][1]), _valid(schema)), label="again")))
            else:
                del items[i]
    segment = data.draw(st.one_of(st.sampled_from(["G1", "urn:ngsi-ld:WaterObserved:G1", "12", "a:b", "x y"]),
                                  st.text("abc:12-_", min_size=1, max_size=8)), label="segment")
    headers = {}
    if data.draw(st.booleans(), label="with header"):
        headers["X-Unsubscribe-Token"] = data.draw(st.text("abc\t 12", max_size=4).map(lambda t: t.strip() or "t"))
    text = "&".join(f"{quote(n, safe='')}={quote(v, safe='')}" for n, v in items)
    url = filled.replace("{}", quote(segment, safe=":")) + ("?" + text if items else "")
    request = await _routed(app, method, url, headers)
    expected = _outcome(lambda: check_parameters(request, operation))
    if request.path.startswith("/ngsi-ld/") and expected is not None:
        expected[3]["type"] = "https://uri.etsi.org/ngsi-ld/errors/BadRequestData"
    event("refused" if expected is not None else "accepted")
    middleware = validation_middleware(operation_key)

    async def handler(_: web.Request) -> web.StreamResponse:
        return web.Response(text="handled")

    for _ in range(2):  # the second time with the plan kept
        try:
            response = await middleware(request, handler)
        except Problem as exc:
            assert (exc.status, exc.title, exc.detail, exc.extra) == expected, url
        else:
            assert expected is None and response.text == "handled", (url, expected)


def test_the_documented_rules_hold_in_the_shortcuts() -> None:
    """A few decisions spelt out (the oracle above compares; these say what the rules are)."""
    lat = shortcut({"type": "number", "minimum": -90, "maximum": 90})
    assert lat is not None and lat("37.4") and lat("-90") and lat(".5") and lat("1e1")
    assert not any(lat(t) for t in ("١", " 1", "NaN", "Infinity", "+1", "0x1", "90.0001", "1e999", ""))
    limit = shortcut({"type": "integer", "minimum": 1, "maximum": 5000})
    assert limit is not None and limit("1") and limit("5000") and limit("007")
    assert not any(limit(t) for t in ("0", "5001", "1.0", "1e3", "+1", "١", "9" * 19))
    hazard = shortcut({"type": "string", "enum": ["flood", "landslide"], "default": "flood"})
    assert hazard is not None and hazard("flood") and not hazard("Flood") and not hazard("flood ")
    digits = shortcut({"type": "string", "pattern": "^[0-9]{1,18}$"})
    assert digits is not None and digits("12") and not digits("1a") and not digits("")
    # ECMA-262's "$" (the document's dialect) is the end of the text, not before a final line break as Python's
    assert re.search("^[0-9]{1,18}$", "12\n") and not digits("12\n")
