"""``sonae devices add`` checks a device's stations against the registry (ingest.placement's rule).

Found by a break-it pass: ``sonae devices add bk-ff --municipality 072010`` wrote an ACL for a gauge registered
in 072036 without a word; every reading it would send is dead-lettered ``wrong_municipality``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from ingest.registry import Station, upsert_stations

ROOT = Path(__file__).resolve().parents[2]


async def _add(tmp_path: Path, database_url: str | None, *args: str,
               state: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
    env["SONAE_STATE_DIR"] = str(state or tmp_path / "no-state")  # never the checkout's .state
    if database_url:
        env["SONAE_DATABASE_URL"] = database_url
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app.cli", "devices", "add", *args, "--iterations", "1000",
                         "--dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60)


async def test_a_device_is_not_granted_another_municipality_than_its_station(
        tmp_path: Path, database_url: str, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="bk-ff", name="郡山の水位計", municipality_code="072036")])
    refused = await _add(tmp_path, database_url, "bk-ff", "--municipality", "072010")
    assert refused.returncode == 2, refused
    assert len(refused.stderr.strip().splitlines()) == 1 and "registered in 072036" in refused.stderr
    assert not (tmp_path / "acl").exists() or "bk-ff" not in (tmp_path / "acl").read_text()
    ok = await _add(tmp_path, database_url, "bk-ff", "--municipality", "07203")  # the 5-digit form is 072036
    assert ok.returncode == 0, ok.stderr
    assert "sonae/v1/072036/bk-ff/+" in (tmp_path / "acl").read_text()
    newcomer = await _add(tmp_path, database_url, "bk-new", "--municipality", "072010")
    assert newcomer.returncode == 0 and "not in the registry yet" in newcomer.stderr


async def test_without_a_reachable_registry_it_says_the_check_was_not_made(tmp_path: Path) -> None:
    unset = await _add(tmp_path, None, "dev-a", "--municipality", "072010")
    assert unset.returncode == 0 and "not checked" in unset.stderr
    closed = await _add(tmp_path, "postgresql://root@127.0.0.1:1/sonae", "dev-b", "--municipality", "072010")
    assert closed.returncode == 0 and "not reachable" in closed.stderr and "not checked" in closed.stderr


def _sonae(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
    env["SONAE_STATE_DIR"] = str(state)
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


@pytest.mark.skipif(os.geteuid() == 0 and not Path("/usr/sbin/useradd").exists(), reason="needs useradd as root")
async def test_the_embedded_database_of_the_state_dir_is_checked(private_tmp: Path) -> None:
    """Found (breakit7 F3): with the README's setup (embedded database, no database.url) ``devices add
    abukuma-motomiya --municipality 072010`` issued credentials and said "database.url is not set… not
    checked", though ``sonae users`` and the imports used that very database."""
    state = private_tmp / "state"
    assert _sonae(state, "db", "migrate").returncode == 0
    csv = private_tmp / "stations.csv"
    csv.write_text("id,name,municipality_code,lat,lon\nabukuma-motomiya,本宮,072036,37.5130,140.3940\n",
                   encoding="utf-8")
    imported = _sonae(state, "stations", "import", str(csv))
    assert imported.returncode == 0, imported.stderr
    refused = await _add(private_tmp, None, "abukuma-motomiya", "--municipality", "072010", state=state)
    assert refused.returncode == 2, refused
    assert "registered in 072036" in refused.stderr
    assert not (private_tmp / "acl").exists() or "abukuma-motomiya" not in (private_tmp / "acl").read_text()
    ok = await _add(private_tmp, None, "abukuma-motomiya", "--municipality", "072036", state=state)
    assert ok.returncode == 0 and "not checked" not in ok.stderr, ok.stderr
    assert not (state / "postgres" / "data" / "postmaster.pid").exists(), "the embedded database was left running"
