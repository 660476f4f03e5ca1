"""JSON request bodies with the numbers and shapes that crash naive parsers are a 400 problem, not a 500."""

from __future__ import annotations

import asyncpg
import pytest

from api.app import create_app
from api.auth import create_account, login
from sonae.config import Settings
from tests.api_support import start_client

BODIES = [
    b'{"municipality_code": "072036", "level": 1' + b"0" * 309 + b"}",
    b'{"municipality_code": "072036", "level": ' + b"9" * 5000 + b"}",
    b'{"municipality_code": "072036", "level": 1e309}',
    b'{"municipality_code": "072036", "level": NaN}',
    b'{"municipality_code": "072036", "level": -Infinity}',
    b'{"municipality_code": "072036", "level": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"municipality_code": "072036", "level": 3, "note": "\\xff"}'.replace(b"\\xff", b"\xff"),
    # a lone surrogate (a JSON escape UTF-8 cannot encode): PostgreSQL cannot store it, in any field
    b'{"municipality_code": "072036", "level": 3, "note": "a\\ud800b"}',
    b'{"municipality_code": "072036", "level": 3, "area_desc": "\\udfff"}',
    b'{"municipality_code": "072036", "level": 3, "area": {"type": "Polygon\\udc00", "coordinates": []}}',
]


@pytest.mark.parametrize("body", BODIES, ids=["309_zeros", "5000_digits", "1e309", "NaN", "-Infinity", "deep",
                                              "not_utf8", "surrogate_note", "surrogate_area_desc",
                                              "surrogate_nested"])
async def test_poison_bodies_are_400_problems(pool: asyncpg.Pool, settings: Settings, body: bytes) -> None:
    async with pool.acquire() as conn:
        await create_account(conn, username="kori", password="correct horse battery", role="staff",
                             municipality_code="072036")
        token = (await login(conn, "kori", "correct horse battery"))[0]  # type: ignore[index]
    client = await start_client(create_app(pool=pool, settings=settings))
    try:
        resp = await client.post("/api/v1/orders", data=body, headers={"Authorization": f"Bearer {token}",
                                                                      "Content-Type": "application/json"})
        assert resp.status == 400, await resp.text()
        assert resp.content_type == "application/problem+json"
        problem = await resp.json()
        assert problem["status"] == 400 and problem["detail"]
    finally:
        await client.close()
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM alerts") == 0, "nothing was issued"
