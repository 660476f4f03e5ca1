"""The README's "Follow a reading" walk names real code (issue #20): every file it names exists, every
function it names is defined in that file, and is reached (called somewhere in the project, or an aiohttp
route handler) rather than left behind by a refactoring.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "sonae", "ingest", "alerting", "evac", "notify", "simulators", "ngsi", "jma", "api")


def _walk() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^### Follow a reading\n(.*?)^#", text, re.S | re.M)
    assert match, "README.md has no '### Follow a reading' section"
    return match.group(1)


def _named() -> list[tuple[str, str]]:
    """(file, function) pairs: a backquoted path followed by backquoted names (``path` `A.b` → `c``)."""
    pairs = []
    for m in re.finditer(r"`([\w/]+\.(?:py|js))`((?:\s*(?:→\s*)?`[A-Za-z_][\w.]*`(?:,|\s)*)+)", _walk()):
        for name in re.findall(r"`([A-Za-z_][\w.]*)`", m.group(2)):
            pairs.append((m.group(1), name))
    return pairs


def _defined_python(path: Path, name: str) -> ast.AST | None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    *owner, leaf = name.split(".")
    scope: list[ast.stmt] = tree.body
    for part in owner:
        cls = next((n for n in scope if isinstance(n, ast.ClassDef) and n.name == part), None)
        if cls is None:
            return None
        scope = cls.body
    return next((n for n in scope if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                 and n.name == leaf), None)


def _sources() -> str:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")]
    files += list((ROOT / "api" / "pages").glob("*.js"))
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def test_the_walk_names_enough_to_follow() -> None:
    named = _named()
    assert len(named) >= 10, named  # the pattern still finds the walk's steps
    assert ("api/pages/resident.js", "connect") in named


def test_every_file_and_function_of_the_walk_exists_and_is_reached() -> None:
    sources = _sources()
    problems = []
    for file, name in _named():
        path = ROOT / file
        if not path.is_file():
            problems.append(f"{file} does not exist")
            continue
        leaf = name.split(".")[-1]
        if file.endswith(".py"):
            node = _defined_python(path, name)
            if node is None:
                problems.append(f"{file} defines no {name}")
                continue
            decorators = [ast.unparse(d) for d in getattr(node, "decorator_list", [])]
            if any(d.startswith("routes.") for d in decorators):
                continue  # an aiohttp handler: the router calls it
        elif not re.search(rf"\bfunction {re.escape(leaf)}\(", path.read_text(encoding="utf-8")):
            problems.append(f"{file} defines no function {name}")
            continue
        if not re.search(rf"(?<!def )(?<!function )\b{re.escape(leaf)}\(", sources):
            problems.append(f"{file} {name} is defined but nothing calls it")
    assert not problems, "the README's 'Follow a reading' has drifted from the code: " + "; ".join(problems)
