"""The scale-out rehearsal (bench/scaleout.py), smaller: real ingest and API processes, Mosquitto with
the deploy config, nginx with the deploy snippets, kill -9 of an ingestor and of an API process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(280)
def test_scaleout_rehearsal(pg_server_url: str, tmp_path: Path) -> None:
    result = tmp_path / "scaleout.json"
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scaleout.py"), "--devices", "4", "--messages", "4000", "--rate", "800",
         "--http-clients", "3", "--sse-clients", "2", "--database-url", pg_server_url, "--json", str(result)],
        capture_output=True, text=True, timeout=260, cwd=ROOT)
    if out.returncode == 2:
        pytest.skip(out.stderr.strip().splitlines()[-1])
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-6000:]
    report = json.loads(result.read_text())
    assert all(c["ok"] for c in report["checks"].values()), report["checks"]
    m = report["measured"]
    assert m["missing"] == 0 and m["rows"] == m["published"] == 4000
    assert min(m["acked_by_instance"].values()) > 0
    assert m["http"]["failed"] == 0
