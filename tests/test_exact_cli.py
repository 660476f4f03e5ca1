"""The command line takes its arguments exactly as typed, and says which argument broke which rule.

Found: ``sonae graph fetch --place $'\\n'`` and ``--overpass-url $'https://x/api\\n'`` were taken;
``--bbox 140,37,141`` was told as a "configuration error:" though it is a command-line argument;
``--municipality $'07203\\n'`` was 07203. Each is now argparse's usage error (status 2), "argument --NAME: …",
before anything is read or downloaded.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(("given", "said"), [
    (["--place", "\n"], "argument --place: '\\n': expected a name"),
    (["--place", " 郡山市"], "argument --place: ' 郡山市': U+0020 at its start"),
    (["--bbox", "140,37,141"], "argument --bbox: '140,37,141': expected four numbers"),
    (["--bbox", "140,37,141,38\n"], "argument --bbox: '140,37,141,38\\n': expected four numbers"),
    (["--municipality", "07203\n"], "argument --municipality: '07203\\n' is not a municipality code"),
    (["--place", "郡山市", "--overpass-url", "https://x.example/api\n"],
     "argument --overpass-url: 'https://x.example/api\\n': expected an http(s) URL without spaces, line breaks"),
])
def test_graph_fetch_arguments_are_taken_as_typed(tmp_path: Path, given: list[str], said: str) -> None:
    result = subprocess.run([sys.executable, "-m", "app.cli", "graph", "fetch", *given, "--state-dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path,
                            env={"PATH": "/usr/bin:/bin", "SONAE_STATE_DIR": str(tmp_path)})
    assert result.returncode == 2, (result.stdout, result.stderr)
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert said in last and "configuration error" not in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
