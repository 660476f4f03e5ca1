"""Serving the API in tests the way production serves it (the path-only access log)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from api.server import SERVER_OPTIONS


async def start_client(app: web.Application, *, host: str = "127.0.0.1") -> TestClient:
    """Serve ``app`` on a free local port and return a started client (close it when done)."""
    server = TestServer(app, host=host)
    await server.start_server(**SERVER_OPTIONS)
    client = TestClient(server)
    await client.start_server()
    return client
