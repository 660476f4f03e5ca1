"""The README's set-up path, run literally: every command of the ``setup:begin``/``setup:end`` block, in
order, as a subprocess, against the shared data and a private database; then /readyz, a route to a
flood-rated site and a staff login (the block's own last commands) are checked.

Only the documented placeholders are given: ``$DATA``, ``$STATE``, ``$PORT``, ``$ADMIN_PASSWORD``,
``$STAFF_PASSWORD``, plus ``SONAE_DATABASE_URL`` / ``SONAE_MQTT_URL`` (the README's "existing PostgreSQL
and broker"). ``export`` lines carry into the following commands as in one shell; a line ending in ``&``
is the service, started in the background and stopped with Ctrl-C (SIGINT) at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from sonae.embedded import free_port
from tests.conftest import shared_data

README = Path(__file__).resolve().parents[1] / "README.md"
STEP_TIMEOUT_S = 300.0  # a bound per step (the wait for /readyz is one): generous for a loaded machine


def setup_commands() -> list[str]:
    """The commands of the README's set-up block (comments and blank lines left out)."""
    text = README.read_text(encoding="utf-8")
    match = re.search(r"<!-- setup:begin -->\s*```sh\n(.*?)```\s*<!-- setup:end -->", text, re.S)
    assert match, "README.md has no <!-- setup:begin --> ```sh ... ``` <!-- setup:end --> block"
    return [line.strip() for line in match[1].splitlines() if line.strip() and not line.strip().startswith("#")]


def _expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$(\w+)", lambda m: env[m[1]], value)


async def _db(url: str) -> tuple[dict[str, int], int, list[str], dict[str, list[str]]]:
    conn = await asyncpg.connect(url)
    try:
        per_hazard = {r["h"]: r["n"] for r in await conn.fetch(
            "SELECT h, count(*) AS n FROM shelters, unnest(hazards) AS h GROUP BY h")}
        unrated = await conn.fetchval("SELECT count(*) FROM shelters WHERE hazards = '{}'")
        both = [r["id"] for r in await conn.fetch(
            "SELECT id FROM shelters WHERE designations @> ARRAY['指定緊急避難場所', '指定避難所']")]
        hazards = {r["id"]: list(r["hazards"]) for r in await conn.fetch("SELECT id, hazards FROM shelters")}
        return per_hazard, int(unrated), both, hazards
    finally:
        await conn.close()


@pytest.mark.timeout(1800)
def test_readme_setup_block_runs_end_to_end(tmp_path: Path, database_url: str, mqtt_url: str,
                                            mqtt_protocol: str) -> None:
    commands = setup_commands()
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = {"PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": os.environ.get("HOME", "/root"),
           "DATA": str(shared_data()), "STATE": str(tmp_path / "state"), "PORT": str(port),
           "ADMIN_PASSWORD": "admin-setup-passphrase-1", "STAFF_PASSWORD": "koriyama-staff-passphrase-2",
           "SONAE_DATABASE_URL": database_url, "SONAE_MQTT_URL": mqtt_url, "SONAE_MQTT_PROTOCOL": mqtt_protocol,
           "SONAE_MQTT_TOPIC_PREFIX": f"setup{port}/v1", "SONAE_INGEST_SHARED_GROUP": "",
           "SONAE_LOG_FORMAT": "text"}
    outputs: dict[str, str] = {}
    service: subprocess.Popen[str] | None = None
    service_log = tmp_path / "service.log"
    try:
        for line in commands:
            export = re.fullmatch(r"export (\w+)=(\S+)", line)
            if export:
                env[export[1]] = _expand(export[2], env)
                continue
            if line.endswith("&"):
                assert service is None, "one background service in the block"
                with service_log.open("w") as log:
                    service = subprocess.Popen(["bash", "-c", f"exec {line[:-1].strip()}"], env=env, stdout=log,
                                               stderr=subprocess.STDOUT, text=True)
                continue
            done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True,
                                  timeout=STEP_TIMEOUT_S)
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}\n{service_log.read_text() if service else ''}"
            outputs[line] = done.stdout
    finally:
        if service is not None:
            service.send_signal(signal.SIGINT)
            service.wait(timeout=180)
    assert service is not None and service.returncode == 0, service_log.read_text()

    def output(fragment: str) -> str:
        return next(out for line, out in outputs.items() if fragment in line)

    assert re.search(r"\b1916 municipalities\b", output("sonae status")), output("sonae status")
    per_hazard, unrated, both, hazards = asyncio.run(_db(database_url))
    summary = output("gsi_fukushima_designated_shelters.geojson")
    shown = dict((h, int(n)) for h, n in re.findall(r"(\w+) (\d+)", summary.split("sites rated per hazard:")[1]
                                                    .splitlines()[0]))
    # oracle: the database's own rows (the stand-in file is imported after this summary)
    assert shown["flood"] == per_hazard["flood"] - 1 and shown["landslide"] == per_hazard["landslide"] - 1
    assert f"{unrated} sites have no hazard rating" in summary and unrated > 0
    assert f"{len(both)} in both" in summary and both
    emergency = json.loads(shared_data("shelters", "gsi_fukushima_designated_emergency_evacuation_sites.geojson")
                           .read_text(encoding="utf-8"))["features"]
    flagged = {f["properties"]["共通ID"] for f in emergency if f["properties"]["洪水"] == "1"}
    assert {i for i in both if "flood" in hazards[i]} <= flagged  # a merged site keeps the GSI flags

    assert output("/readyz").strip()
    route = json.loads(output("/api/v1/route"))
    props = route["properties"]
    assert props["status"] == "ok", props
    assert "flood" in hazards[props["shelter"]["id"]]
    assert props["shelter"]["id"] == "standin-flood"  # the nearer site is not rated for floods
    token = json.loads(output("/api/v1/auth/token"))
    assert token["access_token"] and token["account"]["username"] == "koriyama-staff"
    assert token["account"]["role"] == "staff"
