"""One shortest password for accounts, ``api.auth.MIN_PASSWORD_LENGTH``, said the same wherever it is said: the
API's refusal and its OpenAPI document, ``sonae users add|passwd``, the README and the deployment guide (found:
the README said "at least 12 characters" while the code and the OpenAPI document took 10)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from api.auth import MIN_PASSWORD_LENGTH, AccountError, hash_password
from api.openapi import document
from tests.api_support import signed_in

ROOT = Path(__file__).resolve().parents[2]
#: a length of characters as the documents state one: "at least 10 characters", "10 characters or more"
_STATED = re.compile(r"at least (\d+) characters|(\d+) characters or more")


@pytest.mark.parametrize("name", ["README.md", "deploy/README.md"])
def test_the_documents_state_the_codes_minimum(name: str) -> None:
    text = (ROOT / name).read_text(encoding="utf-8")
    stated = [int(m[1] or m[2]) for m in _STATED.finditer(text) if "password" in text[max(0, m.start() - 200):m.start()].lower()]
    assert stated, f"{name} says nowhere how long an account's password must be"
    assert set(stated) == {MIN_PASSWORD_LENGTH}, f"{name} states {stated}, the code {MIN_PASSWORD_LENGTH}"


def test_the_openapi_document_and_the_refusal_state_the_minimum() -> None:
    schema = document()["paths"]["/api/v1/accounts"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["password"]["minLength"] == MIN_PASSWORD_LENGTH
    with pytest.raises(AccountError, match=f"at least {MIN_PASSWORD_LENGTH} characters"):
        hash_password("x" * (MIN_PASSWORD_LENGTH - 1))
    assert hash_password("x" * MIN_PASSWORD_LENGTH).startswith("$argon2id$")


async def test_the_api_refuses_one_character_less_and_takes_the_minimum(client: TestClient, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        token = (await signed_in(conn, [("pref-admin", "admin", None)], "admin-passphrase-1"))["pref-admin"]
    headers = {"Authorization": f"Bearer {token}"}
    short = await client.post("/api/v1/accounts", headers=headers, json={
        "username": "hana", "password": "x" * (MIN_PASSWORD_LENGTH - 1), "role": "staff"})
    assert short.status == 400
    assert f"at least {MIN_PASSWORD_LENGTH} characters" in (await short.json())["detail"]
    enough = await client.post("/api/v1/accounts", headers=headers, json={
        "username": "hana", "password": "x" * MIN_PASSWORD_LENGTH, "role": "staff"})
    assert enough.status == 201, await enough.text()


@pytest.mark.parametrize("action", ["add", "passwd"])
def test_the_command_refuses_a_short_password_before_it_looks_for_the_database(action: str, tmp_path: Path) -> None:
    """One line with the rule, status 2, even where no database answers (found: the rule was told only after
    the database was reached; the prompt said 10 from a number of its own)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "SONAE_STATE_DIR": str(tmp_path / "s"),
           "SONAE_NEW_PASSWORD": "x" * (MIN_PASSWORD_LENGTH - 1)}
    extra = ["--role", "staff"] if action == "add" else []
    done = subprocess.run([sys.executable, "-m", "app.cli", "users", action, "hana", *extra, "--password-from-env"],
                          env=env, capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and lines == [f"sonae: a password needs at least {MIN_PASSWORD_LENGTH} characters"], \
        done.stderr
