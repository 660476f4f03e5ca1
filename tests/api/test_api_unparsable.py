"""Requests aiohttp cannot parse (api/server.py ``ProblemRequestHandler``): answered as RFC 9457 problems that
never quote the request, and counted in ``sonae_api_requests_total{route="unparsable"}``, checked with raw
bytes over real sockets to the API served as production serves it (``ApiRunner``)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from api.edge import STATS, UNPARSABLE
from api.server import FAULT_OTHER, FAULTS, serve
from sonae.config import Settings
from sonae.embedded import free_port

#: a resident's position, as a route query carries it: no answer may quote it
SECRET = "lat=35.681236&lon=139.767125"
TARGET = f"/api/v1/evacuation/route?{SECRET}"

#: one malformed request of each kind (all in one write: aiohttp sees the fault before answering)
MALFORMED: dict[str, bytes] = {
    "garbage version": f"GET {TARGET} HTTQ/1.1\r\nHost: x\r\n\r\n".encode(),
    "bad version": f"GET {TARGET} HTTP/9.Z\r\nHost: x\r\n\r\n".encode(),
    "invalid method": f"G@T {TARGET} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "TLS on the HTTP port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + SECRET.encode(),
    "control byte in the target": f"GET {TARGET}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "header name with a space": f"GET {TARGET} HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".encode(),
    "header value with a NUL": f"GET {TARGET} HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n".encode(),
    "request line too long": f"GET {TARGET}&pad={'9' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "header line too long": f"GET {TARGET} HTTP/1.1\r\nHost: x\r\nX-Long: {'a' * 9000}\r\n\r\n".encode(),
    "bad chunk size": (f"POST {TARGET} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n").encode(),
    "chunked and Content-Length": (f"POST {TARGET} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n").encode(),
    "bad Content-Length": f"POST {TARGET} HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n{{}}".encode(),
    # an HTTP/1.0 client is answered in HTTP/1.0 (as aiohttp answers its parsed requests), still saying the close
    "HTTP/1.0 header name with a space": f"GET {TARGET} HTTP/1.0\r\nHost: x\r\nBad Name: v\r\n\r\n".encode(),
}

_DETAILS = {text for _, text in FAULTS} | {FAULT_OTHER}


async def _unparsable_counts(client: TestClient) -> dict[int, float]:
    """``sonae_api_requests_total{route="unparsable",method="UNKNOWN"}`` by status, from ``/metrics``."""
    text = await (await client.get("/metrics")).text()
    out: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "sonae_api_requests":
            for s in family.samples:
                if s.name == "sonae_api_requests_total" and s.labels["route"] == UNPARSABLE:
                    assert s.labels["method"] == "UNKNOWN"
                    out[int(s.labels["status"])] = s.value
    return out


async def _raw_answer(client: TestClient, raw: bytes) -> bytes:
    """Send ``raw`` on a new connection and read until the server closes it (aiohttp does after a parse
    error)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def _exchange(client: TestClient, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``raw`` on a new connection; the answer's status, headers (lower-case names) and body, read to
    the end of the connection (aiohttp closes it after a parse error); the answer's HTTP version is under
    the key ``version``."""
    answer = await _raw_answer(client, raw)
    status, headers, body = _parse(answer)
    assert len(body) == int(headers["content-length"]), answer
    return status, headers, body


def _parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """An answer's status, headers (lower-case names; its HTTP version under the key ``version``) and body."""
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    headers["version"] = status_line.split()[0]
    return int(status_line.split()[1]), headers, body


def _check_problem(status: int, headers: dict[str, str], body: bytes, sent: bytes, *,
                   version: str | None = None) -> dict[str, Any]:
    """A problem answer to the unparsable ``sent``, in ``version`` (by default the one its request line names,
    HTTP/1.1 unless it is HTTP/1.0)."""
    assert status in (400, 413, 431), (status, body)
    assert headers["content-type"].startswith("application/problem+json")
    # the headers of every answer (api.edge.secured), and the close said (it was HTTP/1.0 without it)
    assert (headers["x-content-type-options"], headers["referrer-policy"], headers["x-frame-options"]) == (
        "nosniff", "no-referrer", "DENY")
    assert headers["connection"] == "close"
    if version is None:
        version = "HTTP/1.0" if sent.split(b"\r\n", 1)[0].endswith(b" HTTP/1.0") else "HTTP/1.1"
    assert headers["version"] == version
    problem = json.loads(body)
    assert problem["status"] == status and problem["type"] == "about:blank"
    assert problem["detail"] in _DETAILS
    first_line = sent.split(b"\r\n", 1)[0]
    for secret in (SECRET.encode(), first_line, first_line[:40]):
        assert secret not in body
    assert b"lat=" not in body and b"139.76" not in body
    return problem


async def test_each_kind_of_unparsable_request_is_a_counted_problem(client: TestClient) -> None:
    before = await _unparsable_counts(client)
    seen: dict[int, int] = {}
    details = set()
    for kind, raw in MALFORMED.items():
        status, headers, body = await _exchange(client, raw)
        try:
            details.add(_check_problem(status, headers, body, raw)["detail"])
        except AssertionError as exc:
            raise AssertionError(f"{kind}: {exc}") from exc
        seen[status] = seen.get(status, 0) + 1
    after = await _unparsable_counts(client)
    assert {s: after[s] - before.get(s, 0.0) for s in after} == {s: float(n) for s, n in seen.items()}
    assert len(details) >= 5, details  # the kinds are told apart, not one text for all
    # a well-formed request is still answered by the application and counted under its route
    assert (await client.get("/healthz")).status == 200
    assert await _unparsable_counts(client) == after


_BAD_BYTES = st.sampled_from([bytes([b]) for b in (*range(0x00, 0x09), *range(0x0b, 0x0d), *range(0x0e, 0x20), 0x7f)])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_BAD_BYTES, st.integers(0, len(TARGET)), st.sampled_from(["GET", "POST", "HEAD"])),
                min_size=1, max_size=4))
async def test_request_lines_with_bad_bytes_are_counted_problems(
        client: TestClient, lines: list[tuple[bytes, int, str]]) -> None:
    before = await _unparsable_counts(client)
    seen: dict[int, int] = {}
    for bad, at, method in lines:
        target = TARGET.encode()
        raw = method.encode() + b" " + target[:at] + bad + target[at:] + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        if method == "HEAD":  # RFC 9110 §9.3.2: its answer has no content; §8.6: its length is the GET's
            status, headers, body = _parse(await _raw_answer(client, raw))
            assert status in (400, 413, 431) and body == b"", (status, body)
            _, _, as_get = await _exchange(client, b"GET" + raw[len(b"HEAD"):])
            assert headers.get("content-length", str(len(as_get))) == str(len(as_get)), headers
            seen[status] = seen.get(status, 0) + 1  # (and the GET's)
        else:
            status, headers, body = await _exchange(client, raw)
            _check_problem(status, headers, body, raw)
        seen[status] = seen.get(status, 0) + 1
    after = await _unparsable_counts(client)
    assert {s: after[s] - before.get(s, 0.0) for s in after if after[s] != before.get(s)} == {
        s: float(n) for s, n in seen.items()}


async def test_the_server_of_sonae_api_answers_and_counts_them_too(pool: asyncpg.Pool, settings: Settings) -> None:
    """``api.server.serve`` (what ``sonae api`` runs) uses the same handler as the test servers."""
    port = free_port()
    stop = asyncio.Event()
    served = asyncio.create_task(serve(settings.replace(**{"api.host": "127.0.0.1", "api.port": port}), pool, stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # until it listens (each try a connection refused at once, or its answer)
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        assert resp.status == 200
                        break
                except aiohttp.ClientConnectionError:
                    await asyncio.wait({served}, timeout=0.05)
                    assert not served.done(), served
            before = STATS.counts.get((UNPARSABLE, "UNKNOWN", 400), 0)
            raw = MALFORMED["invalid method"]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            answer = await asyncio.wait_for(reader.read(), 10)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 ") and b"application/problem+json" in head
            assert b"\r\nConnection: close\r\n" in head
            assert SECRET.encode() not in body and json.loads(body)["detail"] in _DETAILS
            assert STATS.counts.get((UNPARSABLE, "UNKNOWN", 400), 0) == before + 1
    finally:
        stop.set()
        await served


async def test_a_client_that_spoke_http_10_on_the_connection_is_answered_in_it(client: TestClient) -> None:
    """A malformed request after a parsed HTTP/1.0 one on a kept-alive connection: the problem is in HTTP/1.0
    (the version of the connection's last parsed request), still saying the close."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(b"GET /healthz HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.0 200 ") and b"Connection: keep-alive" in head, head
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
        await asyncio.wait_for(reader.readexactly(length), 10)
        raw = MALFORMED["garbage version"]
        writer.write(raw)
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    status, headers, body = _parse(answer)
    assert (headers["version"], status, headers["connection"]) == ("HTTP/1.0", 400, "close"), answer
    _check_problem(400, headers, body, raw, version="HTTP/1.0")


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.7", "HTTP/0.9", "HTTP/1.2", "HTTP/2"])
async def test_a_request_line_in_another_http_version_is_answered_505(client: TestClient, version: str) -> None:
    """RFC 9110 §15.6.6: ``GET / HTTP/2.0`` (or 3.7) on an HTTP/1.1 connection was answered ``HTTP/2.0 200``.
    Now 505, a problem in HTTP/1.1 saying which versions are spoken, the connection closed; counted as
    unparsable; a request pipelined after it is not answered."""
    before = STATS.counts.get((UNPARSABLE, "UNKNOWN", 505), 0)
    raw = f"GET {TARGET} {version}\r\nHost: x\r\n\r\n".encode()
    status, headers, body = await _exchange(client, raw + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    if version == "HTTP/2":  # not HTTP-version syntax (two digits): a malformed request line, as before
        assert status == 400, body
        return
    assert (status, headers["version"], headers["connection"]) == (505, "HTTP/1.1", "close"), (headers, body)
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["status"] == 505 and problem["title"] == "HTTP Version Not Supported"
    assert "HTTP/1.1" in problem["detail"] and SECRET not in body.decode()
    assert STATS.counts.get((UNPARSABLE, "UNKNOWN", 505), 0) == before + 1
    # a supported version on its own connection is answered as ever, in its own version
    for good in ("HTTP/1.1", "HTTP/1.0"):
        status, headers, _ = await _exchange(client, f"GET /healthz {good}\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        assert (status, headers["version"]) == (200, good)


@pytest.mark.parametrize(("raw", "status"), [
    (b"HEAD /api/v1/level HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    (b"HEAD /api/v1/level HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    (f"HEAD {TARGET} HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n".encode(), 400),
    (f"HEAD {TARGET}\x01 HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 400),
    (f"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD {TARGET} HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n".encode(), 400),
])
async def test_a_head_the_connection_edge_refuses_is_answered_without_content(
        client: TestClient, raw: bytes, status: int) -> None:
    """RFC 9110 §9.3.2: no content in an answer to HEAD (found: ``HEAD /api/v1/level HTTP/1.2`` got its 505,
    and a HEAD with a malformed header its 400, with the problem document as a body); §8.6: a Content-Length
    only if it is the GET's (found: ``Content-Length: 0``). The same request as GET still gets the problem."""
    answer = await _raw_answer(client, raw)
    if raw.startswith(b"GET /healthz"):  # the good request before it is answered as ever, then the fault
        answer = answer[answer.index(b"HTTP/1.1 ", 1):]
    head_status, head_headers, body = _parse(answer)
    assert head_status == status, answer
    assert body == b"", answer
    assert head_headers["connection"] == "close", answer
    as_get = raw.replace(b"HEAD ", b"GET ")
    got_status, _, got_body = await _exchange(client, as_get if not as_get.startswith(b"GET /healthz") else as_get[
        as_get.index(b"GET ", 1):])
    assert got_status == status and json.loads(got_body)["status"] == status
    # RFC 9110 §8.6: a HEAD's Content-Length, if sent, is the GET's (found: 0 against the GET's 227)
    assert head_headers.get("content-length", str(len(got_body))) == str(len(got_body)), answer
