"""The import contracts (pyproject ``[tool.importlinter]``, issue #20) hold, and break on a wrong import.

Each wrong import is added to a copy of the packages and ``lint-imports`` is run on the copy with the
project's own contracts; the unchanged copy is the control (it must pass, so a failure is the import's).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]


def _lint(where: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run([str(LINT), "--no-cache", "--no-logo", str(where / "pyproject.toml")], cwd=where,
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The packages' Python files and pyproject.toml, copied."""
    where = tmp_path_factory.mktemp("layers")
    for package in CONFIG["root_packages"]:
        shutil.copytree(ROOT / package, where / package,
                        ignore=lambda d, names: [n for n in names
                                                 if not (n.endswith(".py") or (Path(d) / n).is_dir())
                                                 or n == "__pycache__"])
    shutil.copy(ROOT / "pyproject.toml", where / "pyproject.toml")
    return where


def test_the_code_keeps_its_contracts() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_module_of_sonae_is_ground_or_root() -> None:
    """A new module in ``sonae/`` must be placed: in the composition root or in the ground layer."""
    layers = next(c for c in CONFIG["contracts"] if c["id"] == "layers")["layers"]
    named = {m.strip() for layer in (layers[0], layers[-1]) for m in layer.split(":")}
    present = {f"sonae.{p.stem}" for p in (ROOT / "sonae").glob("*.py") if p.stem != "__init__"}
    assert present - named == set(), "place these modules in the root or the ground layer of pyproject.toml"


WRONG = [
    # (file, added import, the contract it breaks)
    ("notify/worker.py", "import api.problems", "Imports run one way"),  # domain -> api
    ("alerting/rules.py", "import sonae.runtime", "Imports run one way"),  # domain -> composition root
    ("sonae/config.py", "import ingest.contract", "Imports run one way"),  # ground -> domain
    ("sonae/logs.py", "import sonae.cli", "Imports run one way"),  # ground -> root
    ("jma/store.py", "import notify.store", "Imports run one way"),  # domain -> domain, not allowed
    ("ingest/contract.py", "import simulators.scenario", "Imports run one way"),  # against an allowance
    ("evac/engine.py", "import evac.routes", "No import cycles"),  # the old engine <-> routes cycle
]


@pytest.mark.parametrize(("path", "line", "contract"), WRONG, ids=[w[0] + ":" + w[1] for w in WRONG])
def test_a_wrong_import_breaks_a_contract(copy: Path, path: str, line: str, contract: str) -> None:
    control = _lint(copy)
    assert control.returncode == 0, control.stdout + control.stderr
    target = copy / path
    original = target.read_text(encoding="utf-8")
    try:
        target.write_text(original + f"\n{line}  # deliberately wrong (tests/test_layers.py)\n", encoding="utf-8")
        result = _lint(copy)
    finally:
        target.write_text(original, encoding="utf-8")
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), result.stdout
    module = Path(path).stem  # the report names the importing module (relatively, for a cycle)
    assert module in result.stdout.split("Broken contracts", 1)[1], "the report names the wrong import"
