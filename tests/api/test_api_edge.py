"""The API's outermost middleware (api/edge.py): problems, security headers, compression and the request
metrics, checked through a real server and against counts recomputed from the requests made."""

from __future__ import annotations

import asyncio
import gzip

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from api.edge import (
    CLIENT_CLOSED_REQUEST,
    LATENCY_BUCKETS,
    STATS,
    RequestStats,
    edge_middleware,
    secure_on_prepare,
)


async def _samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = await (await client.get("/metrics")).text()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name in ("sonae_api_requests", "sonae_api_request_seconds"):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_each_answer_by_route_method_status(client: TestClient) -> None:
    before = await _samples(client)
    asked = [("/healthz", "GET", 200, "/healthz")] * 3 + [
        ("/api/v1/nothing-here", "GET", 404, "unmatched"),
        ("/api/v1/stations?limit=%00", "GET", 400, "/api/v1/stations"),
        ("/healthz", "DELETE", 405, "unmatched"),
    ]
    for path, method, status, _ in asked:
        resp = await client.request(method, path)
        assert resp.status == status, path
    after = await _samples(client)
    expected: dict[tuple[str, str, int], int] = {}
    for _, method, status, route in asked:
        expected[(route, method, status)] = expected.get((route, method, status), 0) + 1
    for (route, method, status), n in expected.items():
        key = ("sonae_api_requests_total", (("method", method), ("route", route), ("status", str(status))))
        assert after[key] - before.get(key, 0.0) == n, (route, method, status)
    per_route: dict[str, int] = {}
    for (route, _, _), n in expected.items():
        per_route[route] = per_route.get(route, 0) + n
    for route, n in per_route.items():
        count = ("sonae_api_request_seconds_count", (("route", route),))
        assert after[count] - before.get(count, 0.0) == n, route
        inf = ("sonae_api_request_seconds_bucket", (("le", "+Inf"), ("route", route)))
        assert after[inf] == after[count]
        bounds = [after[("sonae_api_request_seconds_bucket", (("le", repr(float(b))), ("route", route)))]
                  for b in LATENCY_BUCKETS]
        assert bounds == sorted(bounds) and bounds[-1] <= after[inf]
        assert after[("sonae_api_request_seconds_sum", (("route", route),))] > 0


async def test_security_headers_on_answers_and_problems(client: TestClient) -> None:
    for path, status in (("/healthz", 200), ("/api/v1/nothing-here", 404), ("/api/v1/stations?limit=%00", 400)):
        resp = await client.get(path)
        assert resp.status == status
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Frame-Options"] == "DENY"
        if status >= 400:
            assert resp.content_type == "application/problem+json"
            assert (await resp.json())["status"] == status


async def test_large_json_is_gzipped_only_when_accepted(client: TestClient) -> None:
    plain = await client.get("/api/v1/openapi.json", headers={"Accept-Encoding": "identity"})
    body = await plain.read()
    assert plain.status == 200 and len(body) >= 1024
    assert "Content-Encoding" not in plain.headers and "Accept-Encoding" in plain.headers["Vary"]
    zipped = await client.get("/api/v1/openapi.json", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(await zipped.read()) == body


@given(st.lists(st.tuples(st.sampled_from(["/a", "/b"]), st.sampled_from([200, 404]),
                          st.one_of(st.floats(0, 5), st.sampled_from(LATENCY_BUCKETS))), max_size=60))
def test_request_stats_buckets_equal_a_recount(observed: list[tuple[str, int, float]]) -> None:
    stats = RequestStats()
    for route, status, seconds in observed:
        stats.observe(route, "GET", status, seconds)
    families = {f.name: f for f in stats.collect()}
    for route in {r for r, _, _ in observed}:
        times = [s for r, _, s in observed if r == route]
        samples = {(s.name, s.labels.get("le")): s.value for s in families["sonae_api_request_seconds"].samples
                   if s.labels["route"] == route}
        for bound in LATENCY_BUCKETS:  # "le": at most the bound (the Prometheus convention)
            assert samples[("sonae_api_request_seconds_bucket", repr(float(bound)))] == sum(t <= bound for t in times)
        assert samples[("sonae_api_request_seconds_bucket", "+Inf")] == len(times)
        assert samples[("sonae_api_request_seconds_count", None)] == len(times)
        assert samples[("sonae_api_request_seconds_sum", None)] == pytest.approx(sum(times))
    counts = {(s.labels["route"], s.labels["status"]): s.value for s in families["sonae_api_requests"].samples}
    for route, status, _ in observed:
        assert counts[(route, str(status))] == sum(1 for r, c, _ in observed if (r, c) == (route, status))


async def test_a_request_whose_client_left_counts_as_499_not_as_a_server_error() -> None:
    async def gone(request: web.Request) -> web.StreamResponse:
        raise asyncio.CancelledError  # what aiohttp raises in a handler when its client disconnects

    request = make_mocked_request("GET", "/api/v1/events")
    before = dict(STATS.counts)
    with pytest.raises(asyncio.CancelledError):
        await edge_middleware(request, gone)
    grew = {k: n - before.get(k, 0) for k, n in STATS.counts.items() if n != before.get(k, 0)}
    assert [(method, status, n) for (_, method, status), n in grew.items()] == [("GET", CLIENT_CLOSED_REQUEST, 1)]


async def _edge_only(handlers: dict[str, web.StreamResponse]) -> TestClient:
    """A client of an application with the edge middleware alone and one GET route per path, each answering
    a fresh copy of the given response's status, headers and body."""
    from aiohttp.test_utils import TestServer

    app = web.Application(middlewares=[edge_middleware])
    app.on_response_prepare.append(secure_on_prepare)  # (the security headers, as create_app adds them)
    for path, made in handlers.items():
        assert isinstance(made, web.Response)

        async def handler(request: web.Request, made: web.Response = made) -> web.Response:
            return web.Response(status=made.status, body=made.body, headers=made.headers)

        app.router.add_get(path, handler)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.mark.parametrize("target", ["/items/%00", "/items/a%00b", "/items?q=%00", "/items?q=a&r=%00"])
async def test_a_nul_anywhere_in_the_target_is_a_problem(target: str) -> None:
    # the NUL check reads the target as sent (api.edge): an escaped NUL in the path or in the query
    client = await _edge_only({"/items": web.Response(text="ok"), "/items/{name}": web.Response(text="ok")})
    try:
        resp = await client.get(target)
        assert resp.status == 400 and resp.content_type == "application/problem+json"
        assert "NUL" in (await resp.json())["detail"]
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    finally:
        await client.close()


@pytest.mark.parametrize("target", ["/items/%2500", "/items?q=%2500", "/items?q=100%25&r=0"])
async def test_an_escaped_percent_before_00_is_no_nul(target: str) -> None:
    client = await _edge_only({"/items": web.Response(text="ok"), "/items/{name}": web.Response(text="ok")})
    try:
        assert (await client.get(target)).status == 200
    finally:
        await client.close()


async def test_compression_reads_the_media_type_and_respects_a_handlers_own_vary() -> None:
    body = b'{"k": "' + b"x" * 4000 + b'"}'
    client = await _edge_only({
        # a media type with parameters, in capitals: still JSON (RFC 9110 §8.3.1: case-insensitive)
        "/json": web.Response(body=body, headers={"Content-Type": "Application/JSON; charset=utf-8",
                                                  "Vary": "Accept-Language"}),
        "/binary": web.Response(body=body, content_type="application/octet-stream"),
        # a handler that names Accept-Encoding chose the encoding itself: left as it is
        "/chosen": web.Response(body=body, headers={"Content-Type": "application/json", "Vary": "Accept-Encoding"}),
    })
    try:
        resp = await client.get("/json", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert resp.headers["Content-Encoding"] == "gzip" and gzip.decompress(await resp.read()) == body
        assert resp.headers["Vary"] == "Accept-Language, Accept-Encoding"
        plain = await client.get("/json", headers={"Accept-Encoding": "identity"})
        assert "Content-Encoding" not in plain.headers and plain.headers["Vary"] == "Accept-Language, Accept-Encoding"
        binary = await client.get("/binary", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert "Content-Encoding" not in binary.headers and "Vary" not in binary.headers
        chosen = await client.get("/chosen", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
        assert "Content-Encoding" not in chosen.headers and chosen.headers.getall("Vary") == ["Accept-Encoding"]
        assert await chosen.read() == body
    finally:
        await client.close()


async def test_every_answer_of_the_event_stream_carries_the_security_headers(client: TestClient) -> None:
    """The stream's head is sent inside its handler, before the edge middleware sees its answer (found: its
    GET lacked the security headers its HEAD and every other answer carried): they are added as each head
    is written. A page keeps its own policy headers beside them."""
    for method in ("GET", "HEAD"):
        resp = await client.request(method, "/api/v1/events")
        try:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert (resp.headers.get("X-Content-Type-Options"), resp.headers.get("Referrer-Policy"),
                    resp.headers.get("X-Frame-Options")) == ("nosniff", "no-referrer", "DENY"), method
        finally:
            resp.close()
    page = await client.get("/")
    assert page.status == 200
    assert "Content-Security-Policy" in page.headers and page.headers["X-Content-Type-Options"] == "nosniff"
