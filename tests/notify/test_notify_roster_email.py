"""An on-call address follows the shown-text rule (sonae.nametext) in the API's pattern and where it is stored.

Found: the roster's email pattern (``^[^@SPACE]+@[^@SPACE]+$``) and the database's check (``^[^@\\s]+@[^@\\s]+$``)
took ``"kor1\\u202e@city.example"`` (RIGHT-TO-LEFT OVERRIDE), ``"kor1@city\\u200b.example"`` (ZERO WIDTH SPACE) and
other invisible characters, shown to staff in the roster and written into the headers of the mail sent."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st

from api.auth import create_account, login
from api.openapi import EMAIL_PATTERN
from api.validation import ecma_regex
from notify import store
from sonae.nametext import hidden_character

KORIYAMA = "072036"
HIDDEN = ["\u202e", "\u202a", "\u2066", "\u2069", "\u200b", "\u200f", "\u061c", "\ufeff", "\u00ad", "\x00", "\x1b",
          "\x85", "\u2028", "\u3164", "\ue000"]
#: what only the store refuses: above U+FFFF (a tag, private use, a musical format character) and a lone surrogate
BEYOND_THE_PATTERN = ["\U000e0001", "\U000f0000", "\U0001d173", "\ud800"]


@pytest.mark.parametrize("char", HIDDEN)
@pytest.mark.parametrize("where", ["start", "local", "domain", "end"])
def test_the_pattern_refuses_every_hidden_character(char: str, where: str) -> None:
    email = {"start": char + "kor1@city.example", "local": "kor" + char + "1@city.example",
             "domain": "kor1@ci" + char + "ty.example", "end": "kor1@city.example" + char}[where]
    assert ecma_regex(EMAIL_PATTERN).search(email) is None
    assert store.email_problem(email) is not None


@given(st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cn", "Cs"]), min_size=1, max_size=6),
       st.text(st.characters(max_codepoint=0xFFFF, exclude_categories=["Cn", "Cs"]), min_size=1, max_size=6))
def test_pattern_and_store_agree_below_u_ffff(local: str, domain: str) -> None:
    """For assigned characters up to U+FFFF (surrogates aside) the document's pattern and the stored rule are one rule."""
    email = f"{local}@{domain}"
    assert (ecma_regex(EMAIL_PATTERN).search(email) is not None) == (store.email_problem(email) is None), email


@pytest.mark.parametrize("email", ["kor1@city.koriyama.example", "山田@市役所.jp", "a+b@c"])
def test_plain_addresses_are_taken(email: str) -> None:
    assert ecma_regex(EMAIL_PATTERN).search(email) is not None and store.email_problem(email) is None


async def _account(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO municipalities (code, name_ja, name_en) VALUES ($1, '郡山市', 'Koriyama')",
                           KORIYAMA)
        await create_account(conn, username="kor1", password="correct horse battery", role="staff",
                             municipality_code=KORIYAMA)


@pytest.mark.parametrize("char", HIDDEN[:3] + BEYOND_THE_PATTERN)
async def test_the_store_refuses_a_hidden_character_naming_it(pool: asyncpg.Pool, char: str) -> None:
    await _account(pool)
    async with pool.acquire() as conn:
        with pytest.raises(store.NotifyError) as err:
            await store.set_roster(conn, username="kor1", municipality_code=KORIYAMA, email=f"kor1{char}@city.example",
                                   lang="ja-JP", on_call=True, drills=True, updated_by="test")
        assert await conn.fetchval("SELECT count(*) FROM notify_roster") == 0
    assert str(err.value) == f"email holds {hidden_character('kor1' + char)}: remove it"


@pytest.mark.parametrize("email", ["kor1\u202e@city.example", "kor1@city\u200b.example", "kor1@city.example\n",
                                   "kor1\U000e0001@city.example"])
async def test_the_api_refuses_a_hidden_character(pool: asyncpg.Pool, client: TestClient, email: str) -> None:
    await _account(pool)
    async with pool.acquire() as conn:
        signed = await login(conn, "kor1", "correct horse battery")
    assert signed is not None
    token = signed[0]
    resp = await client.put("/api/v1/roster/kor1", json={"email": email}, headers={"Authorization": f"Bearer {token}"})
    body = await resp.json()
    assert resp.status == 400, body
    assert body.get("field") == "email" or body["detail"].startswith("email holds U+"), body
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM notify_roster") == 0
    ok = await client.put("/api/v1/roster/kor1", json={"email": "kor1@city.example"},
                          headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200, await ok.text()
