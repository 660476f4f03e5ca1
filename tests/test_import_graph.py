"""The import graph drawn from the code itself (an AST walk of every import statement, in functions and under
``TYPE_CHECKING`` too), checked against the layers the README states, independently of import-linter (issue
#20): no domain package imports ``api`` or ``app``, ``api`` does not import ``app``, ``sonae`` imports no other
package; each read of one domain by another is one the contracts allow; no cycle, between packages or modules.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
PACKAGES = tuple(CONFIG["root_packages"])
DOMAIN = {"ingest", "alerting", "evac", "notify", "simulators", "ngsi", "jma"}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports (the deepest module a dotted name reaches)."""
    modules = _modules()

    def resolve(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:i]) for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in modules), None)

    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                names = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                if target is not None and target != module:
                    graph[module].add(target)
    return graph


def _top(module: str) -> str:
    return module.split(".")[0]


def _allowed(source: str, target: str) -> bool:
    """Whether a ``layers`` contract allowance (``a.b -> c.**``) names this import."""
    layers = next(c for c in CONFIG["contracts"] if c["id"] == "layers")
    for rule in layers["ignore_imports"]:
        left, right = (re.escape(side.strip()).replace(r"\.\*\*", r"(\..+)?") for side in rule.split("->"))
        if re.fullmatch(left, source) and re.fullmatch(right, target):
            return True
    return False


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in list(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_the_walk_sees_the_code() -> None:
    graph = _graph()
    assert len(_modules()) > 100 and sum(map(len, graph.values())) > 300
    assert "ingest.store" in graph["alerting.worker"]  # a top-level import
    assert "evac.drilltown" in graph["simulators.demo"]
    assert any(_top(t) == "ingest" for t in graph["simulators.command"])  # one inside a function


def test_imports_run_one_way() -> None:
    wrong = []
    for source, targets in _graph().items():
        for target in targets:
            a, b = _top(source), _top(target)
            if (a in DOMAIN and b in ("api", "app")) or (a == "api" and b == "app") or (a == "sonae" and b != "sonae"):
                wrong.append(f"{source} -> {target}")
            elif a in DOMAIN and b in DOMAIN and a != b and not _allowed(source, target):
                wrong.append(f"{source} -> {target} (between domains, not allowed in pyproject.toml)")
    assert not wrong, wrong


def test_no_cycle_between_packages_or_modules() -> None:
    graph = _graph()
    packages: dict[str, set[str]] = defaultdict(set)
    for source, targets in graph.items():
        packages[_top(source)].update(_top(t) for t in targets if _top(t) != _top(source))
    assert not _cycles(packages)
    assert not _cycles(graph)


def test_the_cycle_finder_finds_cycles() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert not _cycles({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}})
    assert _allowed("notify.store", "alerting.rules") and not _allowed("alerting.rules", "notify.store")
    assert _allowed("evac.service", "alerting.level") and not _allowed("evac.engine", "alerting.level")
