"""What the OpenAPI document says a parameter takes is what the API takes, and a refusal says it in words.

Found: ``GET /api/v1/route?hazard=fire`` answered 400 "parameter 'hazard': is not in the expected form": the
hazard pattern (hand-built beside the enum of the other hazard parameters) had no description, so the validator
(:mod:`api.validation`), which words a pattern's refusal by its description, could only say that. Lists of
choices now come from the domain's own lists through :func:`api.openapi.comma_list`, whose description is the
rule ("one of: flood, landslide, …"), and every other pattern says its rule too.

Through the whole application as served (its validation middleware, a prefecture-wide admin so that no
operation is refused for its role): every documented value of every enum and list of choices in a query or path
parameter is accepted, and a value outside is refused 400 naming the parameter and every allowed value (or, for
a free-form pattern, its rule); a path outside a route's own form names no resource (404).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import find, given
from hypothesis import strategies as st
from jsonschema.exceptions import best_match

from api.openapi import NO_NUL, comma_list, document
from api.validation import coerce, validator_of
from evac.hazards import HAZARD_TYPES

#: values of the named formats, for required parameters beside the one under test
FORMAT_EXAMPLES = {"municipality-code": "072036", "date-time": "2026-07-12T09:00", "bbox": "140.3,37.3,140.5,37.5",
                   "ngsi-ld-id": "urn:ngsi-ld:WaterObserved:x", "ngsi-ld-q": "waterLevel>2.5",
                   "ngsi-ld-pattern": ".*", "ngsi-ld-coordinates": "[140.47,37.75]", "printable": "x"}
#: values outside most rules; for each parameter the first its schema refuses is sent
OUTSIDE = ["fire", "fire!", "a b", "0" * 19, "-"]


def _accepted(schema: dict[str, Any], raw: str) -> bool:
    """The validator's own verdict on a parameter's text."""
    try:
        value = coerce(raw, schema)
    except ValueError:
        return False
    return best_match(validator_of(schema).iter_errors(value)) is None


def _choices(schema: dict[str, Any]) -> list[str] | None:
    """The allowed values a schema lists: its enum, or the words of a :func:`comma_list` (None: neither)."""
    if "enum" in schema:
        return [str(v) for v in schema["enum"]]
    if schema.get("description", "").startswith("one of: "):
        return schema["description"].removeprefix("one of: ").split(";")[0].split(", ")
    return None


def _example(schema: dict[str, Any]) -> str:
    """A value the document allows (the simplest)."""
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("format") in FORMAT_EXAMPLES:
        return FORMAT_EXAMPLES[schema["format"]]
    if schema.get("type") in ("number", "integer"):
        low, high = schema.get("minimum", 1), schema.get("maximum", 1)
        return str(low if low > 0 else min(high, 0) if high < 0 else 0 if low <= 0 <= high else low)
    if "pattern" in schema and schema["pattern"] != NO_NUL:
        return find(st.from_regex(schema["pattern"], fullmatch=True), lambda t: t != "" and t.isprintable())
    return "x"


def _cases() -> list[tuple[str, str, dict[str, Any], str]]:
    """(method, path, operation, parameter name) of every query and path parameter with a rule of choices or a
    pattern (the no-NUL rule of free text aside: it has its own words, tests/api/test_api_validation.py)."""
    out = []
    for path, methods in document()["paths"].items():
        for method, operation in methods.items():
            for param in operation.get("parameters", ()):
                schema = param["schema"]
                if param["in"] in ("query", "path") and (
                        "enum" in schema or schema.get("pattern", NO_NUL) != NO_NUL):
                    out.append((method, path, operation, param["name"]))
    return out


CASES = _cases()


async def _ask(client: TestClient, token: str, method: str, path: str, operation: dict[str, Any], name: str,
               value: str) -> tuple[int, dict[str, Any] | None]:
    """Send ``value`` as parameter ``name``, every other required or path parameter a valid example; the status,
    and the problem when 400 (a stream, /api/v1/events, is left as soon as its status is known)."""
    query: dict[str, str] = {}
    for param in operation.get("parameters", ()):
        given = value if param["name"] == name else _example(param["schema"]) if (
            param["in"] == "path" or (param["in"] == "query" and param.get("required"))) else None
        if given is None:
            continue
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", quote(given, safe=""))
        elif param["in"] == "query":
            query[param["name"]] = given
    target = path + ("?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items()) if query else "")
    async with client.request(method.upper(), target, headers={"Authorization": f"Bearer {token}"}) as r:
        return r.status, (await r.json() if r.status == 400 else None)


async def test_an_unknown_hazard_is_400_naming_every_hazard(admin_client: tuple[TestClient, str]) -> None:
    client, _ = admin_client
    for endpoint in ("/api/v1/route", "/api/v1/shelters/nearest"):
        r = await client.get(endpoint, params={"lat": "37.39", "lon": "140.36", "hazard": "fire"})
        assert r.status == 400, await r.text()
        assert r.content_type == "application/problem+json"
        problem = await r.json()
        assert problem["parameter"] == "hazard" and problem["rule"] == "pattern", problem
        assert all(hazard in problem["detail"] for hazard in HAZARD_TYPES), problem
        assert "expected form" not in problem["detail"] and "^(" not in problem["detail"], problem  # the rule, no regex
        for hazards in ("flood", "flood,landslide", ",".join(HAZARD_TYPES)):
            ok = await client.get(endpoint, params={"lat": "37.39", "lon": "140.36", "hazard": hazards})
            assert ok.status != 400, await ok.text()


@pytest.mark.parametrize(("method", "path", "operation", "name"), CASES,
                         ids=[f"{m} {p} {n}" for m, p, _, n in CASES])
async def test_what_the_document_allows_is_taken_and_a_refusal_names_the_rule(
        admin_client: tuple[TestClient, str], method: str, path: str, operation: dict[str, Any], name: str) -> None:
    client, token = admin_client
    schema = next(p["schema"] for p in operation["parameters"] if p["name"] == name)
    choices = _choices(schema)
    allowed = ([*choices, ",".join(choices)] if choices and "enum" not in schema else choices) or [_example(schema)]
    for value in allowed:
        assert _accepted(schema, value), f"the document's own value {value!r} of {name} is not valid by its schema"
        status, problem = await _ask(client, token, method, path, operation, name, value)
        assert not (status == 400 and problem is not None and problem.get("parameter") == name), (value, problem)

    outside = next(v for v in OUTSIDE if not _accepted(schema, v))
    status, problem = await _ask(client, token, method, path, operation, name, outside)
    where = next(p["in"] for p in operation["parameters"] if p["name"] == name)
    if status == 404 and where == "path":
        return  # a route that matches only the documented form (/api/v1/alerts/{alert_id:\d{1,18}}): no resource
    assert status == 400 and problem is not None, (outside, status)
    assert problem["parameter"] == name, problem
    if choices:
        assert all(choice in problem["detail"] for choice in choices), (choices, problem)
    else:
        assert schema["description"] in problem["detail"], problem
    assert "expected form" not in problem["detail"] and schema.get("pattern", "\0") not in problem["detail"], problem


@pytest.mark.parametrize(("method", "path", "operation", "name"), CASES,
                         ids=[f"{m} {p} {n}" for m, p, _, n in CASES])
async def test_a_final_line_break_is_outside_every_rule(
        admin_client: tuple[TestClient, str], method: str, path: str, operation: dict[str, Any], name: str) -> None:
    """Found: ``hazard=flood%0A`` was taken (a pattern's ``$``, read by Python's re, also matches before a final
    line break; ECMA-262's, the document's dialect, does not): a documented value with a line break after it is
    refused as the rule says (400), or, for a path that matches only its documented form, names nothing (404)."""
    client, token = admin_client
    schema = next(p["schema"] for p in operation["parameters"] if p["name"] == name)
    choices = _choices(schema)
    value = (choices[0] if choices else _example(schema)) + "\n"
    assert not _accepted(schema, value), value
    status, problem = await _ask(client, token, method, path, operation, name, value)
    where = next(p["in"] for p in operation["parameters"] if p["name"] == name)
    if status == 404 and where == "path":
        return
    assert status == 400 and problem is not None and problem["parameter"] == name, (value, status, problem)


def _patterns(node: Any) -> list[dict[str, Any]]:
    """Every schema with a pattern in ``node`` (parameters and request bodies alike)."""
    if isinstance(node, list):
        return [s for item in node for s in _patterns(item)]
    if not isinstance(node, dict):
        return []
    return ([node] if "pattern" in node else []) + [s for value in node.values() for s in _patterns(value)]


def test_every_pattern_says_its_rule_in_words() -> None:
    """A refusal words a pattern by the schema's description: one without it could only say "is not in the
    expected form" (the no-NUL rule of free text has its own words)."""
    missing = {s["pattern"] for s in _patterns(document()) if s["pattern"] != NO_NUL and not s.get("description")}
    assert not missing, missing


def test_the_hazards_are_the_domain_s_own() -> None:
    """The route's hazard rule comes from evac.hazards.HAZARD_TYPES, not from a copy of it."""
    route = document()["paths"]["/api/v1/route"]["get"]
    hazard = next(p["schema"] for p in route["parameters"] if p["name"] == "hazard")
    assert _choices(hazard) == list(HAZARD_TYPES)
    assert {k: hazard[k] for k in ("pattern", "description")} == {
        k: comma_list(HAZARD_TYPES)[k] for k in ("pattern", "description")}


LISTS = [s for s in _patterns(document()) if _choices(s) and "enum" not in s]
#: text near a list of choices: empty parts, spaces, case, unknown words, other separators, line breaks (a
#: pattern's $ in Python's re also matches before a final one, as ECMA-262's does not: api.validation.ecma_regex)
NEAR = ["", " ", ",", ";", "fire", "Flood", "FLOOD", "flood ", " flood", "min ", "all", "*", "flood\n", "\n"]


@pytest.mark.parametrize("schema", LISTS, ids=[s["description"][:40] for s in LISTS])
@given(data=st.data())
def test_a_list_of_choices_takes_exactly_its_words_joined_by_commas(schema: dict[str, Any],
                                                                    data: st.DataObject) -> None:
    """The validator's verdict on a list parameter is the rule its description says: every comma-separated part
    one of the words, at least one part."""
    words = _choices(schema)
    assert words
    part = st.sampled_from(words) | st.sampled_from(NEAR) | st.text(max_size=12)
    text = data.draw(st.lists(part, min_size=1, max_size=5).map(",".join) | st.text(max_size=30), label="text")
    assert _accepted(schema, text) == all(p in words for p in text.split(",")), text


def test_comma_list_spells_its_rule_and_takes_only_words() -> None:
    schema = comma_list(["min", "max", "totalCount"])
    assert schema["description"] == ("one of: min, max, totalCount; or several of them joined by commas, without "
                                     "spaces (e.g. min,max)")
    assert re.search(schema["pattern"], "max,totalCount,min") and not re.search(schema["pattern"], "max, min")
    for unfit in (["a|b", "c"], ["only"], []):
        with pytest.raises(ValueError, match="two or more ASCII words"):
            comma_list(unfit)
