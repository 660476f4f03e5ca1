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


HIDDEN = [
    # (file, added code, the module it imports, the contract it breaks): imports that run late or never
    # still count, so a wrong-way arrow cannot hide in a function or behind TYPE_CHECKING
    ("notify/messages.py", "def _late() -> None:\n    import api.problems", "api.problems", "Imports run one way"),
    ("ingest/queries.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import app.cli", "app.cli",
     "Imports run one way"),
    ("sonae/retry.py", "def _late() -> None:\n    from alerting import store", "alerting.store", "Imports run one way"),
]


@pytest.mark.parametrize(("path", "code", "imported", "contract"), HIDDEN, ids=[h[0] + ":" + h[2] for h in HIDDEN])
def test_a_late_or_type_only_wrong_import_breaks_a_contract(copy: Path, path: str, code: str, imported: str,
                                                            contract: str) -> None:
    target = copy / path
    original = target.read_text(encoding="utf-8")
    try:
        target.write_text(original + f"\n\n{code}  # deliberately wrong (tests/test_layers.py)\n", encoding="utf-8")
        result = _lint(copy)
    finally:
        target.write_text(original, encoding="utf-8")
    assert result.returncode != 0, result.stdout
    assert any(row.startswith(contract) for row in result.stdout.splitlines() if " BROKEN" in row), result.stdout
    module = Path(path).with_suffix("").as_posix().replace("/", ".")
    assert f"- {module} -> {imported}" in result.stdout.split("Broken contracts", 1)[1], result.stdout


def test_an_allowance_that_closes_a_cycle_between_domains_breaks_the_domain_order(copy: Path) -> None:
    """Allowing a read against the allowed ones (ingest reading the simulators, which read ingest) passes the
    layers contract, whose allowance it is, but not the order of the domains: no cycle through allowances."""
    pyproject, module = copy / "pyproject.toml", copy / "ingest" / "contract.py"
    original_config, original_code = pyproject.read_text(encoding="utf-8"), module.read_text(encoding="utf-8")
    anchor = 'ignore_imports = [\n'
    assert original_config.count(anchor) == 1
    try:
        pyproject.write_text(original_config.replace(anchor, anchor + '    "ingest.contract -> simulators.scenario",\n'),
                             encoding="utf-8")
        module.write_text(original_code + "\nimport simulators.scenario  # deliberately wrong (tests/test_layers.py)\n",
                          encoding="utf-8")
        result = _lint(copy)
    finally:
        pyproject.write_text(original_config, encoding="utf-8")
        module.write_text(original_code, encoding="utf-8")
    flat = " ".join(result.stdout.split())  # a long contract name wraps over lines
    assert result.returncode != 0 and "Contracts: 2 kept, 1 broken." in flat, result.stdout
    assert "(no cycle through the allowances) BROKEN" in flat, result.stdout
    assert "- ingest.contract -> simulators.scenario" in result.stdout.split("Broken contracts", 1)[1]


def test_every_package_of_the_project_is_under_the_contracts() -> None:
    """A new top-level package that the contracts do not name would be outside every layer: each package the
    distribution installs, and each package folder of the checkout, is a root package of the contracts."""
    found = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    installed = {name.rstrip("*") for name in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert set(CONFIG["root_packages"]) == found == installed
    named = {part.strip() for c in CONFIG["contracts"] if c["id"] == "layers" for layer in c["layers"]
             for part in layer.split("|")}
    assert named == found
