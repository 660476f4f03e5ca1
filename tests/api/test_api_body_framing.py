"""A body whose framing breaks after its head was read (api/server.py ``ProblemRequestHandler.data_received``,
api/edge.py): answered at once with a 400 problem counted as unparsable, never the 408 of a body waited out
(``api.bodies.BODY_TIMEOUT_S``), checked with raw bytes over real sockets to the API served as production
serves it.

The head is sent with ``Expect: 100-continue`` (HTTP/1.1: aiohttp sends no ``100 Continue`` to HTTP/1.0):
aiohttp sends ``100 Continue`` once it has parsed and routed the head, so the broken bytes, written after it, reach the parser in a later read than the head (the same
bytes in one read are a request aiohttp cannot parse at all: tests/api/test_api_unparsable.py). Every read
has a failure guard of :data:`GUARD_S` seconds, far below the 15 s body timeout and aiohttp's 10 s lingering
read that the faults waited out.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp.http_parser
import asyncpg
import pytest
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError, InvalidHeader, LineTooLong
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.app import create_app
from api.edge import STATS, UNPARSABLE
from api.parsefaults import FAULT_CHUNKED, FAULT_OTHER, FAULTS
from sonae.config import Settings
from tests.api_support import start_client

#: a failure guard on each read (an answer arrives at once or the fault is back); not a timing assertion
GUARD_S = 5.0
LOGIN = "/api/v1/auth/token"
#: a body the login endpoint reads and refuses by its content (no password): a request whose body was read
BODY = b'{"username": "resident-of-okuma"}'
#: what the problem says of the body: llhttp (aiohttp's C parser, the one used) only says the framing broke;
#: aiohttp's Python parser (AIOHTTP_NO_EXTENSIONS=1) hands its own error to the reader: a trailer's bad byte or
#: a line too long is named as such
_BODY_DETAILS = {FAULT_CHUNKED} if aiohttp.http_parser.HttpRequestParser is not aiohttp.http_parser.HttpRequestParserPy \
    else {FAULT_CHUNKED, dict(FAULTS)[InvalidHeader], dict(FAULTS)[LineTooLong]}
#: a route added for these tests: its handler waits for the body's end without reading it, then answers 200
WAITS = "/test/waits-for-the-body"


@dataclass
class Answer:
    version: str
    status: int
    headers: dict[str, str]
    body: bytes


async def _answer(reader: asyncio.StreamReader) -> Answer:
    """One answer read from ``reader``: its head, then its Content-Length of body."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_S)
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), GUARD_S)
    version, status, *_ = status_line.split(" ")
    return Answer(version, int(status), headers, body)


@contextlib.asynccontextmanager
async def _connection(client: TestClient) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        yield reader, writer
    finally:
        writer.close()


async def _refused_whole(client: TestClient, raw: bytes) -> Answer:
    """Send ``raw`` in one write: its answer, checked to be a 400 in HTTP/1.1 with ``Connection: close``
    after which the server closes the connection at once."""
    async with _connection(client) as (reader, writer):
        writer.write(raw)
        answer = await _answer(reader)
        after = await asyncio.wait_for(reader.read(), GUARD_S)
    assert (answer.version, answer.status, answer.headers["connection"], after) == ("HTTP/1.1", 400, "close", b"")
    return answer


async def _send_in_two(client: TestClient, head: bytes, rest: bytes) -> tuple[Answer, bytes]:
    """Send ``head`` (with ``Expect: 100-continue``), wait for ``100 Continue``, send ``rest``: the answer,
    and what follows it until the server closes the connection (``b""`` when it closes right after)."""
    async with _connection(client) as (reader, writer):
        writer.write(head)
        await writer.drain()
        continued = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_S)
        assert continued == b"HTTP/1.1 100 Continue\r\n\r\n", continued
        writer.write(rest)
        await writer.drain()
        answer = await _answer(reader)
        return answer, await asyncio.wait_for(reader.read(), GUARD_S)


def _head(method: str, path: str, *, extra: str = "") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            f"Expect: 100-continue\r\n{extra}\r\n").encode()


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    """``body`` cut at ``cuts``."""
    points = sorted({c for c in cuts if 0 < c < len(body)})
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]


def _chunk(piece: bytes, *, zeros: int = 0, upper: bool = False, extension: str = "") -> bytes:
    """``piece`` framed as one chunk: its size in hex (``zeros`` leading zeros, in upper case or not), an
    extension, the data, CRLF."""
    size = "0" * zeros + f"{len(piece):x}"
    return f"{size.upper() if upper else size}{extension}\r\n".encode() + piece + b"\r\n"


def _check_unparsable(answer: Answer, after: bytes) -> None:
    """A 400 problem saying the body's framing broke, in HTTP/1.1, secured, the connection closed after it."""
    assert (answer.version, answer.status) == ("HTTP/1.1", 400), answer
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.headers["connection"] == "close"
    assert (answer.headers["x-content-type-options"], answer.headers["referrer-policy"],
            answer.headers["x-frame-options"]) == ("nosniff", "no-referrer", "DENY")
    problem = json.loads(answer.body)
    assert (problem["status"], problem["type"]) == (400, "about:blank"), problem
    assert problem["detail"] in _BODY_DETAILS, problem
    assert b"resident-of-okuma" not in answer.body and b"okuma" not in answer.body  # the body is never echoed
    assert after == b"", after


def _counts() -> dict[tuple[str, str, int], int]:
    return dict(STATS.counts)


def _counted(before: dict[tuple[str, str, int], int]) -> dict[tuple[str, str, int], int]:
    """The request counts added since ``before``."""
    return {k: n - before.get(k, 0) for k, n in STATS.counts.items() if n != before.get(k, 0)}


_HEX = "0123456789abcdefABCDEF"
#: bytes that cannot follow a chunk size (";" starts an extension; llhttp parses requests strictly)
_NOT_SIZE = "ghijklmnopqrstuvwxyzGHIJKLMNOPQRSTUVWXYZ@+-_.,/:=?!#$%&'*|~"
_WORD = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)


@st.composite
def _broken_tails(draw: st.DrawFn) -> tuple[str, bytes]:
    """The bytes after a valid start of chunks: a framing broken one way (the kind, the bytes)."""
    kind = draw(st.sampled_from(["chunk size", "longer than announced", "no CRLF after a chunk", "bad trailer"]))
    if kind == "chunk size":
        line = draw(st.text(_HEX, max_size=3)) + draw(st.sampled_from(_NOT_SIZE)) + draw(st.text(_HEX + "xyz", max_size=4))
        return kind, line.encode() + b"\r\n" + BODY + b"\r\n0\r\n\r\n"
    if kind == "longer than announced":
        size = draw(st.integers(1, 16))
        data = draw(st.binary(min_size=size, max_size=size)) + draw(_WORD).encode()
        return kind, b"%x\r\n%s\r\n0\r\n\r\n" % (size, data)
    if kind == "no CRLF after a chunk":
        size = draw(st.integers(1, 16))
        after = draw(st.sampled_from([b"", b"\n", b"\rX", b"X\r\n", b"\n\r"]))
        return kind, b"%x\r\n%s%s0\r\n\r\n" % (size, draw(st.binary(min_size=size, max_size=size)), after)
    name, value = draw(_WORD), draw(_WORD)
    line = draw(st.sampled_from([f"{name} {value}: v", f"{name}: {value}\x00", f"{name}\x01: {value}",
                                 f"{name}{value}", f"({name}): {value}", f"{name}: {value}\x7f"]))
    return kind, b"0\r\n" + line.encode("latin-1") + b"\r\n\r\n"


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, len(BODY) - 1), max_size=3), sent=st.integers(0, 3), tail=_broken_tails())
async def test_a_body_whose_framing_breaks_after_its_head_is_a_prompt_counted_problem(
        client: TestClient, cuts: list[int], sent: int, tail: tuple[str, bytes]) -> None:
    """A reading endpoint (the login) gets a 400 problem at once, counted once as unparsable (before: a 408
    after 15 s, counted under the login)."""
    chunks = [_chunk(p) for p in _pieces(BODY, cuts)]
    start = b"".join(chunks[:sent])  # some valid chunks first (never the whole body)
    before = _counts()
    answer, after = await _send_in_two(client, _head("POST", LOGIN) + start, tail[1])
    _check_unparsable(answer, after)
    assert _counted(before) == {(UNPARSABLE, "UNKNOWN", 400): 1}, tail[0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, len(BODY) - 1), max_size=4), sent=st.integers(0, 4),
       extension=st.sampled_from(["", ";a=b", ";x"]), trailer=st.sampled_from(["", "X-Check: 1\r\n"]),
       zeros=st.integers(0, 2), upper=st.booleans())
async def test_a_body_with_valid_framing_is_still_read(client: TestClient, cuts: list[int], sent: int,
                                                       extension: str, trailer: str, zeros: int, upper: bool) -> None:
    """The control: the same body with valid chunked framing (cut anywhere, sizes with leading zeros or in
    upper case, chunk extensions, a trailer) is read by the login, which refuses it for its content."""
    chunks = [_chunk(p, zeros=zeros, upper=upper, extension=extension) for p in _pieces(BODY, cuts)]
    last = b"0\r\n" + trailer.encode() + b"\r\n"
    before = _counts()
    answer, _ = await _send_in_two(client, _head("POST", LOGIN, extra="Connection: close\r\n")
                                   + b"".join(chunks[:sent]), b"".join(chunks[sent:]) + last)
    assert answer.status == 400, answer
    problem = json.loads(answer.body)
    assert "password" in problem["detail"], problem  # the body was read: its field is named
    assert _counted(before) == {(LOGIN, "POST", 400): 1}


async def test_the_same_bytes_in_one_read_are_the_same_answer(client: TestClient) -> None:
    """The head and a broken chunk in one write: aiohttp's own unparsable path, the same status, headers
    and count (its detail is llhttp's plain kind: it cannot tell the body from the head)."""
    raw = _head("POST", LOGIN).replace(b"Expect: 100-continue\r\n", b"") + b"zz\r\n" + BODY + b"\r\n0\r\n\r\n"
    before = _counts()
    answer = await _refused_whole(client, raw)
    assert json.loads(answer.body)["detail"] in {text for _, text in FAULTS} | {FAULT_CHUNKED} | {
        "the request could not be parsed as HTTP/1.1 (its request line, a header or the body's framing)"}
    assert _counted(before) == {(UNPARSABLE, "UNKNOWN", 400): 1}


async def test_a_get_answered_before_its_body_broke_keeps_its_answer_and_the_connection_closes(
        client: TestClient) -> None:
    """A GET whose handler never reads the body (/healthz) answers at once; its broken body, arriving after
    that answer, closes the connection at once (before: aiohttp's lingering read waited 10 s for body bytes
    its parser had dropped, then closed). The answer stands and is counted once, under its route."""
    before = _counts()
    async with _connection(client) as (reader, writer):
        writer.write(_head("GET", "/healthz") + b"4\r\n{\"a\"\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), GUARD_S) == b"HTTP/1.1 100 Continue\r\n\r\n"
        answer = await _answer(reader)  # answered before its body ends
        assert answer.status == 200, answer
        writer.write(b"1\r\nxyz\r\n0\r\n\r\n")  # a chunk longer than announced
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), GUARD_S) == b""
    assert _counted(before) == {("/healthz", "GET", 200): 1}


async def _waits_for_the_body(request: web.Request) -> web.Response:
    with contextlib.suppress(Exception):  # a handler that never reads the body, but answers after its end
        await request.content.wait_eof()
    return web.json_response({"ok": True})


@pytest.fixture
async def waiting_client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    app = create_app(pool=pool, settings=settings)
    app.router.add_get(WAITS, _waits_for_the_body)
    c = await start_client(app)
    try:
        yield c
    finally:
        await c.close()


async def test_a_handler_that_answers_after_the_body_broke_without_reading_it_is_overruled(
        waiting_client: TestClient) -> None:
    """A handler that does not read the body but answers after it broke: its answer is replaced by the
    problem, counted as unparsable (before: the body's end never came and the handler waited for ever)."""
    before = _counts()
    answer, after = await _send_in_two(waiting_client, _head("GET", WAITS), b"3\r\n{}\r\n\r\n")
    _check_unparsable(answer, after)
    assert _counted(before) == {(UNPARSABLE, "UNKNOWN", 400): 1}


async def test_a_body_that_cannot_be_decoded_is_a_counted_problem(client: TestClient,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A body whose Content-Encoding cannot be decoded (aiohttp sets its error on the payload; reading it
    raised an unexpected error, a logged 500): a 400 problem saying so, counted as unparsable, and logged
    as one warning line (found: aiohttp's drain after the answer logged "Unhandled exception" with a
    traceback, for anyone's request)."""
    caplog.set_level(logging.DEBUG)
    good = gzip.compress(BODY)
    for body in (b"not gzip at all", good[:10] + bytes(20) + good[30:]):
        raw = (f"POST {LOGIN} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        before = _counts()
        answer = await _refused_whole(client, raw)
        assert json.loads(answer.body)["detail"] == dict(FAULTS)[ContentEncodingError]
        assert _counted(before) == {(UNPARSABLE, "UNKNOWN", 400): 1}
    loud = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == [], loud


@pytest.mark.parametrize("broken", [
    b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",  # bad chunk size
    b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
])
@pytest.mark.parametrize("good", [b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n",
                                  b"POST " + LOGIN.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY])
async def test_a_pipelined_good_request_keeps_its_answer_before_a_broken_one(client: TestClient, good: bytes,
                                                                             broken: bytes) -> None:
    """A good request followed on the same connection, in the same bytes, by one whose framing is broken:
    the good one is answered, then the broken one with a 400 problem and ``Connection: close`` (before: the
    parser's error took the good request with it, and only the 400 came back)."""
    async with _connection(client) as (reader, writer):
        writer.write(good + broken)
        await writer.drain()
        first = await _answer(reader)
        second = await _answer(reader)
        after = await asyncio.wait_for(reader.read(), GUARD_S)
    faulted = first.status == 400 and json.loads(first.body).get("detail") in {*dict(FAULTS).values(), FAULT_OTHER}
    assert not faulted, first  # the good request's own answer (the health check's 200, the login's refusal)
    assert first.headers.get("connection") != "close", first
    assert (second.status, second.headers["connection"], after) == (400, "close", b""), second
    assert second.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("good_count", [31, 32, 33, 40, 60, 100])
async def test_every_pipelined_request_before_a_broken_one_is_answered(client: TestClient, good_count: int) -> None:
    """More good requests than aiohttp's queue holds (32: its parser keeps the rest of the read and parses it
    as the queue drains) before a broken one, in one write: each gets its own answer, in order, then the 400
    (found: of 33, the 33rd got none; of 60, the last 12)."""
    good = b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
    async with _connection(client) as (reader, writer):
        writer.write(good * good_count + b"GARBAGE\r\n\r\n")
        await writer.drain()
        answers = [await _answer(reader) for _ in range(good_count + 1)]
        after = await asyncio.wait_for(reader.read(), GUARD_S)
    # each its own answer (this app has no health route: its 404 problem, never the fault's 400)
    assert [a.status for a in answers[:-1]] == [404] * good_count
    assert (answers[-1].status, answers[-1].headers["connection"], after) == (400, "close", b"")
