"""api.operations.PerOperation: one computation per (route, method), bounded against made-up methods."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from api.operations import PerOperation


def _matched(method: str, resource: web.AbstractResource) -> web.Request:
    request = make_mocked_request(method, "/x")
    match_info = web.UrlMappingMatchInfo({}, next(iter(resource)))
    request._match_info = match_info  # as Application._handle sets it
    return request


async def _ok(request: web.Request) -> web.Response:
    return web.Response()


def test_each_operation_is_computed_once_and_made_up_methods_cannot_grow_the_memo() -> None:
    app = web.Application()
    one = app.router.add_resource("/one")
    one.add_route("*", _ok)
    two = app.router.add_resource("/two")
    two.add_route("*", _ok)
    calls: list[tuple[str, str]] = []

    def compute(request: web.Request) -> str:
        calls.append((request.match_info.route.resource.canonical, request.method))  # type: ignore[union-attr]
        return f"{request.method} {request.match_info.route.resource.canonical}"  # type: ignore[union-attr]

    memo = PerOperation(compute, max_operations=3)
    for _ in range(3):
        assert memo(_matched("GET", one)) == "GET /one"
        assert memo(_matched("GET", two)) == "GET /two"
        assert memo(_matched("POST", one)) == "POST /one"
    assert calls == [("/one", "GET"), ("/two", "GET"), ("/one", "POST")]
    # full: another operation is still answered right, each time computed, never kept
    for _ in range(2):
        assert memo(_matched("BREW", two)) == "BREW /two"
    assert calls[3:] == [("/two", "BREW")] * 2
    assert memo(_matched("GET", one)) == "GET /one" and len(calls) == 5
