"""Inputs an adversarial review of issue #16's strict validation still turned into 500s, kept as tests:
times near year 1 or 9999 (window arithmetic overflowed), header bytes that are not UTF-8 (a bearer
token or unsubscribe token hashed with a strict encode), and a body whose Content-Type names an
unknown charset."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.auth import create_account, login
from sonae.config import Settings
from sonae.japantime import EARLIEST_QUERY_TIME, LATEST_QUERY_TIME, parse_query_time
from tests.api_support import start_client

PASSWORD = "correct horse battery"
#: the windows handlers compute from a query time: 366 days back or ahead, and a day for the offset
WIDEST = timedelta(days=367)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
       st.sampled_from(["", "Z", "+09:00", "-12:00", "+14:00"]))
def test_a_query_time_leaves_room_for_any_window(moment: datetime, offset: str) -> None:
    """Either refused with ValueError, or within 1900–2199 with a year of room either side."""
    text = moment.isoformat() + offset
    try:
        ts = parse_query_time(text)
    except ValueError:
        assert not (datetime(1900, 1, 2) <= moment <= datetime(2199, 12, 30))  # refused only near the edges
        return
    assert EARLIEST_QUERY_TIME <= ts < LATEST_QUERY_TIME
    assert ts - WIDEST < ts + WIDEST  # no OverflowError


@pytest.fixture
async def served(pool: asyncpg.Pool, unlimited_settings: Settings) -> Any:
    client = await start_client(create_app(pool=pool, settings=unlimited_settings))
    async with pool.acquire() as conn:
        await create_account(conn, username="admin-all", password=PASSWORD, role="admin", municipality_code=None)
        result = await login(conn, "admin-all", PASSWORD)
        assert result is not None
    try:
        yield client, result[0]
    finally:
        await client.close()


EDGE_TIMES = ["0001-01-01T00:00:00Z", "0001-01-01T09:00", "0001-12-31T00:00Z", "9999-12-31T23:59:59Z",
              "9999-12-31", "9998-12-31T00:00Z", "1899-12-31T23:59:59Z", "2200-01-01T00:00Z"]
READINGS = "/api/v1/stations/G1/readings"
TEMPORAL = "/ngsi-ld/v1/temporal/entities/urn:ngsi-ld:WaterObserved:G1"


@pytest.mark.parametrize("when", EDGE_TIMES)
async def test_times_at_the_edges_of_the_calendar_are_400(served: Any, when: str) -> None:
    client, _ = served
    q = quote(when)
    urls = [f"{READINGS}?to={q}", f"{READINGS}?from={q}", f"{READINGS}?from={q}&to={q}&bucket=1d",
            f"{TEMPORAL}?timerel=before&timeAt={q}", f"{TEMPORAL}?timerel=after&timeAt={q}",
            f"{TEMPORAL}?timerel=before&timeAt={q}&aggrMethods=avg&aggrPeriodDuration=P1D",
            f"{TEMPORAL}?timerel=between&timeAt=2026-01-01T00:00Z&endTimeAt={q}"]
    for url in urls:
        resp = await client.get(url)
        assert resp.status == 400, (url, resp.status, await resp.text())
        body = await resp.json()
        assert body["rule"] == "format:date-time", (url, body)


async def test_times_inside_the_range_reach_the_handler(served: Any) -> None:
    """The first and last accepted days compute their windows: the station is unknown (404), no 500."""
    client, _ = served
    for when in ("1900-01-01T00:00Z", "2199-12-31T23:59:59Z"):
        q = quote(when)
        for url in (f"{READINGS}?to={q}", f"{TEMPORAL}?timerel=before&timeAt={q}",
                    f"{TEMPORAL}?timerel=after&timeAt={q}"):
            resp = await client.get(url)
            assert resp.status == 404, (url, resp.status, await resp.text())


async def _raw(client: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> int:
    """Send header bytes as they are (aiohttp's client would refuse to), return the status."""
    import asyncio

    host, port = client.server.host, client.server.port
    reader, writer = await asyncio.open_connection(host, port)
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: x", b"Connection: close",
             f"Content-Length: {len(body)}".encode(), *(k + b": " + v for k, v in headers)]
    writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    await writer.drain()
    status_line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return int(status_line.split()[1])


@pytest.mark.parametrize("value", [b"Bearer \xe9\xff", b"Bearer \xed\xa0\x80", b"Bearer ok-token\xff"])
async def test_a_bearer_token_that_is_not_utf8_is_401(served: Any, value: bytes) -> None:
    client, token = served
    for method, path in (("GET", "/api/v1/auth/me"), ("GET", "/api/v1/audit"),
                         ("GET", "/ngsi-ld/v1/entities?type=WaterObserved")):
        status = await _raw(client, method, path, [(b"Authorization", value)])
        assert status == (200 if path.startswith("/ngsi-ld") else 401), (path, value, status)
    # the same token in its own bytes still works
    assert await _raw(client, "GET", "/api/v1/auth/me", [(b"Authorization", b"Bearer " + token.encode())]) == 200


async def test_an_unsubscribe_token_that_is_not_utf8_is_404(served: Any) -> None:
    client, _ = served
    status = await _raw(client, "DELETE", "/api/v1/push/subscriptions/1", [(b"X-Unsubscribe-Token", b"\xe9\xff")])
    assert status == 404


@pytest.mark.parametrize("content_type", ['application/json; charset="\xff"', "application/json; charset=x-nonsense",
                                          "application/json; charset=latin-1"])
async def test_a_charset_in_the_content_type_is_ignored(served: Any, content_type: str) -> None:
    """RFC 8259: application/json has no charset; the body is read as UTF-8 whatever the header says."""
    client, token = served
    headers = [(b"Content-Type", content_type.encode("latin-1"))]
    assert await _raw(client, "POST", "/api/v1/auth/token", headers, b"{}") == 400  # username is required
    body = json.dumps({"username": "admin-all", "password": PASSWORD})
    assert await _raw(client, "POST", "/api/v1/auth/token", headers, body.encode()) == 201
    auth = [(b"Authorization", b"Bearer " + token.encode()), *headers]
    assert await _raw(client, "POST", "/api/v1/webhooks", auth, '{"url": "https://p.example/h", "description": "日本"}'
                      .encode()) == 201
    assert await _raw(client, "POST", "/api/v1/webhooks", auth, b'{"url": "https://p.example/h", '
                      b'"description": "\xff"}') == 400  # not UTF-8


def test_the_edges_of_the_query_range() -> None:
    assert parse_query_time("1900-01-01T09:00") == datetime(1900, 1, 1, tzinfo=UTC)  # Japan time
    for text in ("1900-01-01T08:59:59", "2200-01-01T00:00Z", "0001-01-01T00:00+14:00", "2026-02-30"):
        with pytest.raises(ValueError):
            parse_query_time(text)


# -- patterns mean the same to the document's readers and to the server ---------------------------------
def _patterns() -> list[str]:
    from api.openapi import document

    found: set[str] = set()
    stack: list[Any] = [document()]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("pattern"), str):
                found.add(item["pattern"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return sorted(found)


def test_no_pattern_uses_a_class_whose_meaning_depends_on_the_dialect() -> None:
    r"""JSON Schema patterns are ECMA-262; the server checks them with Python's ``re``. ``\s`` is U+0085 and
    U+001C-U+001F to Python but not to ECMA-262 (U+FEFF the other way round), ``\d``/``\w`` are Unicode to
    Python: schemathesis with an admin token found an email with U+0085 that the document allows refused."""
    import re

    for pattern in _patterns():
        assert not re.search(r"(?<!\\)(?:\\\\)*\\[sSdDwWbB]", pattern), pattern


SAMPLES = [f"{head}{c}{tail}" for c in ("\x1c", "\x1f", "\x85", "\ufeff", "\xa0", " ", "\t", "\u2028", "\u3000",
                                        "\u0661", "\u00b2", "x")
           for head, tail in (("a", "b@c.example"), ("a@b", ""), ("https://x.example/p", "q"), ("", ""),
                              ("https://x.example:443/", ""), ("near;maxDistance==1", ""))]


@pytest.mark.skipif(__import__("shutil").which("node") is None, reason="node (an ECMA-262 engine) is not installed")
def test_every_pattern_agrees_with_an_ecma262_engine() -> None:
    """Oracle: node's RegExp (the dialect JSON Schema names) on the characters where the dialects differ."""
    import re
    import subprocess

    patterns = _patterns()
    script = (f"const p = {json.dumps(patterns)}, s = {json.dumps(SAMPLES)}; "
              "console.log(JSON.stringify(p.flatMap((x) => s.map((y) => new RegExp(x, 'u').test(y)))));")
    ecma = json.loads(subprocess.run(["node", "-e", script], capture_output=True, text=True, check=True,
                                     timeout=60).stdout)
    python = [re.search(p, s) is not None for p in patterns for s in SAMPLES]
    pairs = [(p, s) for p in patterns for s in SAMPLES]
    assert [pair for pair, a, b in zip(pairs, ecma, python, strict=True) if a != b] == []


SHARED_LINK_QUERIES = ["fbclid=IwAR0abc", "utm_source=line&utm_medium=social&utm_campaign=typhoon",
                       "gclid=x&lang=ja", "%E3%81%82=%E3%81%84", "a=1&a=2&b", "x=" + "y" * 2000]


@pytest.mark.parametrize("query", SHARED_LINK_QUERIES)
async def test_a_shared_link_opens_the_pages_and_the_api_still_names_unknown_parameters(
        served: Any, query: str) -> None:
    """Links to the pages are shared through LINE, X and mail, and those add ``fbclid`` / ``utm_*`` /
    ``gclid``: the resident and staff pages open with any query. The API is called by the pages and by
    programs, not by shared links: an unknown parameter there is a mistake to name (400), not to drop."""
    client, _ = served
    for page in ("/", "/staff"):
        resp = await client.get(f"{page}?{query}")
        assert resp.status == 200, (page, query)
        assert resp.headers["Content-Type"].startswith("text/html")
    resp = await client.get(f"/api/v1/alerts?{query}")
    assert resp.status == 400
    assert "parameter" in (await resp.text()).lower()
