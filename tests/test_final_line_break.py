"""A final line break is outside every rule written as a regular expression ending in ``$``.

Found: ``hazard=flood%0A`` was taken by the API, because Python's ``$`` also matches before a final line
break, where ECMA-262's (the dialect of the OpenAPI document's patterns) and every other reader's does not.
The document's patterns are read with ECMA-262's meaning (:func:`api.validation.ecma_regex`); the project's
own expressions end in ``\\Z``.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.openapi import document
from api.validation import coerce, ecma_regex
from notify.webpush import b64u_decode
from simulators.scenario import ScenarioError, parse_duration


def _patterns(node: Any) -> set[str]:
    if isinstance(node, list):
        return {p for item in node for p in _patterns(item)}
    if not isinstance(node, dict):
        return set()
    own = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
    return own | {p for value in node.values() for p in _patterns(value)}


#: the document's patterns that end in an anchor ``$`` (not an escaped one)
ANCHORED = sorted(p for p in _patterns(document()) if re.search(r"(?<!\\)\$$", p))


def test_the_hazard_rule_refuses_a_line_break_that_python_s_dollar_takes() -> None:
    route = document()["paths"]["/api/v1/route"]["get"]
    pattern = next(p["schema"]["pattern"] for p in route["parameters"] if p["name"] == "hazard")
    assert re.search(pattern, "flood\n")  # the fault, in Python's own reading
    assert ecma_regex(pattern).search("flood") and not ecma_regex(pattern).search("flood\n")
    assert len(ANCHORED) >= 5, ANCHORED


@pytest.mark.parametrize("pattern", ANCHORED)
@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_text_a_pattern_takes_is_refused_with_a_line_break_after_it(pattern: str, data: st.DataObject) -> None:
    """The oracle: :func:`re.fullmatch`, which a ``$`` before a final line break cannot satisfy (a text with a
    line break after it is taken only by a pattern whose characters include line breaks: free text)."""
    text = data.draw(st.from_regex(re.compile(pattern), fullmatch=True), label="text")
    assert ecma_regex(pattern).search(text), text
    assert bool(ecma_regex(pattern).search(text + "\n")) == bool(re.fullmatch(pattern, text + "\n")), text


def test_only_the_anchor_changes() -> None:
    assert ecma_regex(r"^[$]+$").search("$$") and not ecma_regex(r"^[$]+$").search("$$\n")
    assert ecma_regex(r"^a\$$").search("a$") and not ecma_regex(r"^a\$$").search("a$\n")
    assert ecma_regex(r"^[^\]$]*$").search("ab") and not ecma_regex(r"^[^\]$]*$").search("a$")
    assert ecma_regex("x|y$").search("x\n")  # unanchored alternatives still search
    assert ecma_regex("[^\\u0000]").search("a")


@pytest.mark.parametrize(("raw", "schema"), [("37.5\n", {"type": "number"}), ("5\n", {"type": "integer"}),
                                             ("-1\n", {"type": "integer"})])
def test_numbers_in_parameters_end_where_they_end(raw: str, schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        coerce(raw, schema)
    assert coerce(raw.rstrip("\n"), schema) is not None


def test_base64url_keys_and_durations_end_where_they_end() -> None:
    assert b64u_decode("AAAA") == b"\0\0\0"
    with pytest.raises(ValueError):
        b64u_decode("AAAA\n")
    assert parse_duration("10m", "duration") == 600
    with pytest.raises(ScenarioError):
        parse_duration("10m\n", "duration")
