"""The station-id rule (``ingest.contract.STATION_ID``), one rule at every entry.

Found: an id of dots only (``.``, ``..``, ``...``) passed the pattern: the API took it and
``sonae devices add --station ..`` wrote it into a Mosquitto ACL line. ``.`` and ``..`` are path steps
wherever an id becomes part of a path (URLs, files, ACLs).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.openapi import STATION_ID as OPENAPI_STATION_ID
from app.provisioning import ProvisioningError, grants_for
from ingest.contract import STATION_ID, Parser, PayloadError
from ingest.registry import RegistryError, Station
from simulators.scenario import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parents[1]
DOTS = (".", "..", "...", "." * 64)
ALLOWED = st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=64)


@given(ALLOWED)
def test_the_rule_refuses_dots_only_and_nothing_else_of_the_alphabet(value: str) -> None:
    assert bool(STATION_ID.match(value)) == (set(value) != {"."})
    # the OpenAPI document's pattern (ECMA-262) is the same rule
    assert bool(re.fullmatch(OPENAPI_STATION_ID["schema"]["pattern"].replace("$", r"\Z"), value)) == (
        set(value) != {"."})


@pytest.mark.parametrize("dots", DOTS)
def test_every_entry_refuses_an_id_of_dots(dots: str) -> None:
    parser = Parser(prefix="sonae/v1", max_future_s=300, max_payload_bytes=65536)
    with pytest.raises(PayloadError):
        parser.parse(f"sonae/v1/072036/{dots}/level", b'{"ts": "2026-11-29T01:20:00Z", "value": 1.0}')
    with pytest.raises(RegistryError, match="not dots only"):
        Station(id=dots, name="x").validate()
    for station, username in (([dots], "gauge-1"), ([], dots)):
        with pytest.raises(ProvisioningError, match="not dots only"):
            grants_for("device", username, municipalities=["072036"], stations=station)


def test_a_scenario_refuses_an_id_of_dots(tmp_path: Path) -> None:
    shipped = (ROOT / "docs" / "scenarios" / "abukuma-flood.toml").read_text(encoding="utf-8")
    assert 'station = "sim-abukuma-akutsu"' in shipped
    (tmp_path / "dots.toml").write_text(shipped.replace('station = "sim-abukuma-akutsu"', 'station = ".."'),
                                        encoding="utf-8")
    load_scenario(ROOT / "docs" / "scenarios" / "abukuma-flood.toml")
    with pytest.raises(ScenarioError, match="not dots only"):
        load_scenario(tmp_path / "dots.toml")


def test_devices_add_refuses_it_in_one_line(tmp_path: Path) -> None:
    for args in (["gauge-7", "--station", ".."], [".."]):
        out = subprocess.run([sys.executable, "-m", "app.cli", "devices", "add", *args, "--municipality", "072036",
                              "--dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 2 and len(lines) == 1 and "not dots only" in lines[0], out.stderr
    assert not (tmp_path / "acl").exists() or ".." not in (tmp_path / "acl").read_text()
