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


def test_sonae_is_the_ground_and_app_the_root() -> None:
    """Whole packages are the layers' ends, so a module added to ``sonae/`` is ground and one added to
    ``app/`` is root without being listed; ``sonae/__init__.py`` imports nothing (it is not a re-export hub)."""
    layers = next(c for c in CONFIG["contracts"] if c["id"] == "layers")["layers"]
    assert layers[0].strip() == "app" and layers[-1].strip() == "sonae", layers
    assert {"app", "sonae"} <= set(CONFIG["root_packages"])
    init = (ROOT / "sonae" / "__init__.py").read_text(encoding="utf-8")
    assert "import " not in init, "sonae/__init__.py must import nothing: every package imports sonae"


WRONG = [
    # (file, added import, the contract it breaks)
    ("notify/worker.py", "import api.problems", "Imports run one way"),  # domain -> api
    ("alerting/rules.py", "import app.runtime", "Imports run one way"),  # domain -> composition root
    ("api/alerts.py", "from app import cli", "Imports run one way"),  # api -> composition root
    ("sonae/config.py", "import ingest.contract", "Imports run one way"),  # ground -> domain
    ("sonae/logs.py", "import app.cli", "Imports run one way"),  # ground -> root
    ("sonae/__init__.py", "import app", "Imports run one way"),  # ground's package -> root
    ("sonae/workers.py", "import api.problems", "Imports run one way"),  # ground -> api
    # a module new in sonae/ is ground without being listed anywhere
    ("sonae/newly_added.py", "import app.provisioning", "Imports run one way"),  # new ground -> root
    ("jma/store.py", "import notify.store", "Imports run one way"),  # domain -> domain, not allowed
    ("ingest/contract.py", "import simulators.scenario", "Imports run one way"),  # against an allowance
    ("evac/engine.py", "import evac.routes", "No import cycles"),  # the old engine <-> routes cycle
]


@pytest.mark.parametrize(("path", "line", "contract"), WRONG, ids=[w[0] + ":" + w[1] for w in WRONG])
def test_a_wrong_import_breaks_a_contract(copy: Path, path: str, line: str, contract: str) -> None:
    control = _lint(copy)
    assert control.returncode == 0, control.stdout + control.stderr
    target = copy / path
    new = not target.exists()
    original = "" if new else target.read_text(encoding="utf-8")
    try:
        target.write_text(original + f"\n{line}  # deliberately wrong (tests/test_layers.py)\n", encoding="utf-8")
        result = _lint(copy)
    finally:
        if new:
            target.unlink()
        else:
            target.write_text(original, encoding="utf-8")
    assert result.returncode != 0, result.stdout
    broken = [row for row in result.stdout.splitlines() if " BROKEN" in row]
    assert any(row.startswith(contract) for row in broken), result.stdout
    report = result.stdout.split("Broken contracts", 1)[1]
    if contract.startswith("No import cycles"):  # a cycle is reported relatively to its package
        assert Path(path).stem in report, "the report names the wrong import"
    else:  # "- sonae.logs -> app.cli (l.12)"; a package's __init__ is the package itself
        module = Path(path).with_suffix("").as_posix().replace("/", ".").removesuffix(".__init__")
        assert f"- {module} -> {line.split()[1]}" in report, "the report names the wrong import"
