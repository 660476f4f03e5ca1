"""Failures at the API's edge, through a real server (found by break22): what reaches the logs of a request
aiohttp cannot parse, a stream whose handler fails after its head was sent, the Accept-Encoding precedence
of gzip, and the Allow header of a 405 problem."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
import pytest
import yarl
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from api.app import create_app
from sonae.config import Settings
from tests.api_support import start_client

LAT, LON = "37.4123456", "140.3876543"  # a resident's position: never in a log


async def _raw(client: TestClient, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(request)
        await writer.drain()
        return await reader.read()  # the server answers and closes (a parse error ends the connection)
    finally:
        writer.close()


@pytest.mark.parametrize("line", [
    f"GET /api/v1/stations?lat={LAT}\x00&lon={LON} HTTP/1.1",  # a raw NUL in the query
    f"GET /api/v1/st\x00ations?lat={LAT}&lon={LON} HTTP/1.1",  # in the path
    f"GET /api/v1/stations?lat={LAT}&lon={LON}\x7f HTTP/1.1",  # another control character
    f"G\x01T /api/v1/stations?lat={LAT}&lon={LON} HTTP/1.1",  # not a method
])
async def test_unparsable_requests_never_log_the_query(client: TestClient, caplog: pytest.LogCaptureFixture,
                                                       line: str) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await _raw(client, line.encode("latin-1") + b"\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400") or answer.startswith(b"HTTP/1.0 400")
    plain = logging.Formatter("%(message)s %(exc_info)s")
    text = "\n".join(f"{plain.format(r)} {r.__dict__}" for r in caplog.records)
    assert LAT not in text and LON not in text
    assert "unparsable request" in text, "the fault is still logged"


async def _fails_mid_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await response.write(b"data: first\n\n")
    raise RuntimeError("the stream's source failed")


async def test_a_stream_that_fails_after_its_head_is_cut_not_followed_by_a_problem(
        pool: asyncpg.Pool, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    """A problem answer written after a sent head was read as the stream's next chunk (the client saw a
    broken chunked framing: "HTTP/1.1 500 ..." where a chunk size belongs). The connection is closed
    instead, the failure logged once, and counted as a 500."""
    caplog.set_level(logging.DEBUG)
    app = create_app(pool=pool, settings=settings)
    app.router.add_get("/test/fails-mid-stream", _fails_mid_stream)
    client = await start_client(app)
    try:
        answer = await _raw(client, b"GET /test/fails-mid-stream HTTP/1.1\r\nHost: x\r\n\r\n")
        metrics = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
    assert body.startswith(b"d\r\ndata: first\n\n\r\n") and b"HTTP/1.1" not in body, body
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].name == "sonae.api", [r.getMessage() for r in errors]
    assert 'sonae_api_requests_total{method="GET",route="/test/fails-mid-stream",status="500"} 1.0' in metrics


@pytest.mark.parametrize(("value", "gzip"), [
    ("*;q=0, gzip", True), ("gzip;q=0, *", False), ("identity;q=1, *;q=0", False), ("br, gzip;q=0.5", True),
    ("GZIP;Q=0.000", False), ("", False), ("deflate", False), ("*", True)])
async def test_gzip_answer_follows_accept_encoding(client: TestClient, value: str, gzip: bool) -> None:
    r = await client.get("/api/v1/openapi.json", headers={"Accept-Encoding": value}, auto_decompress=False)
    await r.read()
    assert r.status == 200 and ("Accept-Encoding" in r.headers["Vary"])
    assert (r.headers.get("Content-Encoding") == "gzip") == gzip, value


async def test_method_not_allowed_problem_says_which_are(client: TestClient) -> None:
    """RFC 9110 §15.5.6: a 405 answer MUST carry Allow; the problem answer dropped the exception's headers."""
    r = await client.delete("/healthz?lat=" + LAT)
    assert r.status == 405 and r.content_type == "application/problem+json"
    assert {m.strip() for m in r.headers["Allow"].split(",")} >= {"GET"}
    assert (await r.json())["status"] == 405


async def test_head_of_the_event_stream_is_a_head(client: TestClient) -> None:
    """HEAD /api/v1/events answered with the stream itself: its first event (``retry: 2000``) went out
    after a bodiless head, where the client reads the next answer, and the connection stayed held. Now the
    head alone, and the connection goes on to the next request."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(b"HEAD /api/v1/events HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)  # the server closes after the second answer
    finally:
        writer.close()
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"text/event-stream" in head
    assert rest.startswith(b"HTTP/1.1 200"), rest[:80]
    assert rest.endswith(b'{"status": "ok"}')


# a resident's position carried in the path rather than the query (found by break33: each was written to the
# access log as sent, the percent-encoded ? decoded): a link whose ? a messenger app encoded, a client that
# puts the position in the path, a matrix parameter, a position taken for a station id
_RECORD_FIELDS = {*logging.makeLogRecord({}).__dict__, "message", "asctime"}
POSITION_PATHS = [
    "/api/v1/level%3Flat={lat}%26lon={lon}",
    "/api/v1/level%3Flat={lat}&lon={lon}",
    "/api/v1/route/{lat},{lon}",
    "/api/v1/route;lat={lat};lon={lon}",
    "/api/v1/stations/{lat},{lon}",
    "/api/v1/stations/{lat},{lon}/readings",
    "/ngsi-ld/v1/entities/urn:ngsi-ld:Point:{lat},{lon}",
    "/{lat}/{lon}",
]


@examples(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lat=st.integers(36_800_000, 38_000_000).map(lambda n: f"{n / 1e6:.6f}"),
       lon=st.integers(139_200_000, 141_100_000).map(lambda n: f"{n / 1e6:.6f}"),
       shape=st.sampled_from(POSITION_PATHS))
async def test_a_position_in_the_path_never_reaches_the_access_log(client: TestClient,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   lat: str, lon: str, shape: str) -> None:
    caplog.clear()
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    answer = await client.get(yarl.URL(shape.format(lat=lat, lon=lon), encoded=True))
    assert 400 <= answer.status < 500, answer.status
    records = [r for r in caplog.records if r.name == "aiohttp.access"]
    assert records, "the access log wrote the request"
    # the message and every field the logger adds (LogRecord's own, such as its times, are left out: a time
    # could hold the digits of a position by chance)
    text = " ".join(f"{r.getMessage()} {[v for k, v in r.__dict__.items() if k not in _RECORD_FIELDS]}"
                    for r in records)
    assert lat not in text and lon not in text and lat[:6] not in text and lon[:7] not in text, text


async def test_the_access_log_names_the_route_as_the_metrics_do(client: TestClient,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    for path in ("/api/v1/stations/akutsu", "/api/v1/stations", "/api/v1/no-such-thing"):
        await client.get(path)
    routes = [r.__dict__.get("route") for r in caplog.records if r.name == "aiohttp.access"]
    assert routes == ["/api/v1/stations/{station_id}", "/api/v1/stations", "unmatched"]
