"""Every refusal of a time says one rule (sonae.japantime.TIME_RULE, and for a time a request asks about,
QUERY_TIME_RULE: the same words and the range 1900 to 2199). Found: ``api.params.instant`` said "is not an ISO
8601 time from 1900 to 2199 (…)", NGSI-LD's ``timeAt`` "must be an ISO 8601 date-time from 1900 to 2199",
``parse_query_time`` "the time must lie from 1900 to 2199", and a time in NGSI-LD's ``q`` that is no time
(``2026-13-45T00:00``) was compared as None rather than refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient, make_mocked_request
from hypothesis import given
from hypothesis import strategies as st

from api.params import instant
from api.problems import Problem
from ngsi.query import QueryError, parse_q
from sonae.japantime import QUERY_TIME_RULE, TIME_RULE, parse_query_time

BAD_TIMES = ["2026-13-01", "2026-02-30", "2026-12-02T09:00+99:00", "٢٠٢٦-07-12", "2026-12-02\n", " 2026-12-02",
             "1899-12-31T23:59:59Z", "2200-01-01T00:00Z", "0001-01-01T00:00+14:00", "9999-12-31"]
READINGS = "/api/v1/stations/G1/readings"
TEMPORAL = "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WaterObserved:G1"


def test_the_query_rule_is_the_time_rule_and_the_range() -> None:
    assert QUERY_TIME_RULE.startswith(TIME_RULE) and "1900 to 2199" in QUERY_TIME_RULE


@pytest.mark.parametrize("text", BAD_TIMES)
def test_parse_query_time_says_the_rule(text: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_query_time(text)
    assert str(err.value) == QUERY_TIME_RULE


@given(st.text(max_size=30))
def test_whatever_instant_refuses_it_refuses_with_the_rule(text: str) -> None:
    request = make_mocked_request("GET", "/x?at=" + quote(text))
    if request.query.get("at", "") == "":
        return
    try:
        value = instant(request, "at", datetime(2026, 1, 1, tzinfo=UTC))
    except Problem as problem:
        assert problem.detail == f"parameter at {request.query['at'][:40]!r}: {QUERY_TIME_RULE}"
        assert problem.extra == {"parameter": "at"}
    else:
        assert value == parse_query_time(request.query["at"])


@pytest.mark.parametrize("text", BAD_TIMES)
def test_instant_refuses_with_the_rule(text: str) -> None:
    request = make_mocked_request("GET", "/x?from=" + quote(text))
    with pytest.raises(Problem) as err:
        instant(request, "from", datetime(2026, 1, 1, tzinfo=UTC))
    assert err.value.detail == f"parameter from {text!r}: {QUERY_TIME_RULE}"


@pytest.mark.parametrize("text", ["2026-13-45T00:00", "2026-02-30T09:00Z", "2026-12-02T25:00"])
def test_a_time_in_ngsi_q_that_is_no_time_is_refused_with_the_rule(text: str) -> None:
    with pytest.raises(QueryError) as err:
        parse_q(f"dateObserved>{text}")
    assert str(err.value) == f"q: {text!r}: {TIME_RULE}"
    assert parse_q("dateObserved>2026-12-02T09:00") is not None


@pytest.mark.parametrize("text", BAD_TIMES)
async def test_the_api_and_ngsi_ld_refuse_a_time_alike(client: TestClient, text: str) -> None:
    q = quote(text)
    for url in (f"{READINGS}?from={q}", f"{READINGS}?to={q}", f"{TEMPORAL}?timerel=before&timeAt={q}",
                f"{TEMPORAL}?timerel=between&timeAt=2026-01-01T00:00Z&endTimeAt={q}"):
        resp = await client.get(url)
        body: dict[str, Any] = await resp.json()
        assert resp.status == 400, (url, body)
        assert QUERY_TIME_RULE in body["detail"], (url, body)
