"""Serving the API in tests the way production serves it (the path-only access log)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.auth import create_account, login
from api.server import SERVER_OPTIONS, ApiRunner


class ApiTestServer(TestServer):
    """aiohttp's test server run as production runs the API (:class:`api.server.ApiRunner`: requests aiohttp
    cannot parse answered as problems and counted); start it with ``start_server(**SERVER_OPTIONS)``."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return ApiRunner(self.app, **kwargs)


async def start_client(app: web.Application, *, host: str = "127.0.0.1") -> TestClient:
    """Serve ``app`` on a free local port and return a started client (close it when done)."""
    server = ApiTestServer(app, host=host)
    await server.start_server(**SERVER_OPTIONS)
    client = TestClient(server)
    await client.start_server()
    return client


async def signed_in(conn: asyncpg.Connection, accounts: Iterable[tuple[str, str, str | None]],
                    password: str) -> dict[str, str]:
    """Create each ``(username, role, municipality code or None)`` account with ``password`` and log it
    in: ``{username: bearer token}``."""
    tokens = {}
    for name, role, muni in accounts:
        await create_account(conn, username=name, password=password, role=role, municipality_code=muni)
        result = await login(conn, name, password)
        assert result is not None
        tokens[name] = result[0]
    return tokens


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of a request made with ``token`` (from :func:`signed_in`)."""
    return {"Authorization": f"Bearer {token}"}
