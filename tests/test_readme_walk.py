"""The README's "Follow a reading" walk names real code (issue #20): every file it names exists, every
function it names is defined in that file and is reached: referenced in code (not a docstring) by its own
module or by a module that imports it, or an aiohttp route handler. A name shared by many methods (``run``,
``parse``, ``connect``) is not taken as reached because some unrelated code calls a function of that name.
The links that are not calls hold too: each ``NOTIFY`` channel the walk names is one that step's code uses,
and each API path it names is the route of the handler named after it.
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


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, module: str) -> bool:
    """Whether the code imports ``module`` (``import m``, ``from m import x`` or ``from package import m``)."""
    package, _, name = module.rpartition(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name == module for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and not node.level and (
                node.module == module or (node.module == package and any(a.name == name for a in node.names))):
            return True
    return False


def _referenced(tree: ast.AST, leaf: str) -> bool:
    """Whether the code uses ``leaf`` as a name or an attribute (a call, or a function passed on)."""
    return any((isinstance(n, ast.Name) and n.id == leaf) or (isinstance(n, ast.Attribute) and n.attr == leaf)
               for n in ast.walk(tree))


def _reached_python(path: Path, leaf: str) -> bool:
    module = _module(path)
    for package in PACKAGES:
        for other in (ROOT / package).rglob("*.py"):
            tree = ast.parse(other.read_text(encoding="utf-8"))
            if (other == path or _imports(tree, module)) and _referenced(tree, leaf):
                return True
    return False


def _steps() -> list[str]:
    """The walk's numbered steps, each as one text."""
    return [m.group(1) for m in re.finditer(r"^\d+\. (.*?)(?=^\d+\. |\Z)", _walk(), re.S | re.M)]


def test_the_walk_names_enough_to_follow() -> None:
    named = _named()
    assert len(named) >= 10, named  # the pattern still finds the walk's steps
    assert ("api/pages/resident.js", "connect") in named


def test_every_file_and_function_of_the_walk_exists_and_is_reached() -> None:
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
            if not _reached_python(path, leaf):
                problems.append(f"{file} {name} is defined but nothing that imports it uses it")
            continue
        text = path.read_text(encoding="utf-8")  # a page's script: the functions of that one file
        if not re.search(rf"\bfunction {re.escape(leaf)}\(", text):
            problems.append(f"{file} defines no function {name}")
        elif not re.search(rf"(?<!function )\b{re.escape(leaf)}\(", text):
            problems.append(f"{file} {name} is defined but nothing in it calls it")
    assert not problems, "the README's 'Follow a reading' has drifted from the code: " + "; ".join(problems)


def test_the_links_that_are_not_calls_hold() -> None:
    """``NOTIFY x`` / ``LISTEN on x``: the step's Python code names the channel ``x``; ``/api/v1/…``: the route of a
    handler the step names."""
    steps = _steps()
    assert len(steps) >= 8, steps
    checked = 0
    for step in steps:
        files = [ROOT / f for f in re.findall(r"`([\w/]+\.py)`", step)]
        constants = {n.value for f in files if f.is_file() for n in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
                     if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        for channel in re.findall(r"(?:NOTIFY|LISTEN on) `?(sonae_\w+)", step):
            assert channel in constants, f"no code of {[str(f.relative_to(ROOT)) for f in files]} names {channel}"
            checked += 1
        for route in re.findall(r"`(/api/v1/[\w/]+)`", step):
            handlers = {(f.relative_to(ROOT).as_posix(), name) for f, name in
                        ((ROOT / file, name) for file, name in _named()) if f in files and f.suffix == ".py"}
            decorated = [ast.unparse(d) for file, name in handlers
                         for d in getattr(_defined_python(ROOT / file, name), "decorator_list", [])]
            assert any(f"routes.get('{route}')" == d for d in decorated), (route, decorated)
            checked += 1
    assert checked >= 4  # sonae_readings, sonae_alerts twice, /api/v1/level
