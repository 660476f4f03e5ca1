"""Every 429 the API sends carries Retry-After (RFC 6585 §4; RFC 9110 §10.2.3): the resident page and the staff
console wait it out and ask again, and so may any other client.

Found: the push sign-up refused over ``notify.push_subscriptions_per_client`` (api/notifications.py) answered 429
with no Retry-After, the only one of the API's 429s without it. This walks the source of every package the API
serves from for each place a 429 is made (a ``Problem`` or ``problem_response`` whose status is 429, an aiohttp
``HTTPTooManyRequests``), and for a status chosen at run time (``status = 429 if … else 503``) the call's too:
each must name a Retry-After header where it is made. The push sign-up's 429 is also asked for from a served
API (tests/notify/test_notify_fairness.py asks the others' limits)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the packages whose code answers HTTP requests (api's handlers call into these)
PACKAGES = ("api", "notify", "evac", "alerting", "sonae", "ngsi", "jma", "app")
MAKERS = {"Problem", "problem_response", "json_response", "Response"}


def _name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _may_be_429(node: ast.expr, assigned: dict[str, list[ast.expr]]) -> bool:
    """Whether a status expression is, or may be, 429 (a name bound anywhere in the module to an expression
    holding the constant 429)."""
    if isinstance(node, ast.Constant):
        return node.value == 429
    if isinstance(node, ast.Name):
        return any(_holds_429(v) for v in assigned.get(node.id, []))
    return _holds_429(node)


def _holds_429(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Constant) and n.value == 429 for n in ast.walk(node))


def _names_retry_after(call: ast.Call, assigned: dict[str, list[ast.expr]]) -> bool:
    for kw in call.keywords:
        if kw.arg != "headers":
            continue
        values = [kw.value] if not isinstance(kw.value, ast.Name) else assigned.get(kw.value.id, [])
        for v in values:
            for d in ast.walk(v):
                if isinstance(d, ast.Dict) and any(isinstance(k, ast.Constant) and str(k.value).lower() == "retry-after"
                                                   for k in d.keys):
                    return True
    return False


def _producers(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[tuple[str, int, bool]]:
    """(file, line, names Retry-After) of every place in ``packages`` that makes a 429."""
    found = []
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            assigned: dict[str, list[ast.expr]] = {}
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        for n in ast.walk(target):
                            if isinstance(n, ast.Name):
                                assigned.setdefault(n.id, []).append(node.value)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = _name(node.func)
                where = str(path.relative_to(root))
                if name == "HTTPTooManyRequests":
                    found.append((where, node.lineno, _names_retry_after(node, assigned)))
                elif name in MAKERS:
                    status = node.args[0] if node.args else next(
                        (kw.value for kw in node.keywords if kw.arg == "status"), None)
                    if status is not None and _may_be_429(status, assigned):
                        found.append((where, node.lineno, _names_retry_after(node, assigned)))
    return found


def test_every_429_the_api_makes_names_retry_after() -> None:
    producers = _producers()
    # the walk finds them all: the rate limit, the login limit, the event streams, the route budget, the push sign-up
    files = {f for f, _, _ in producers}
    assert {"api/ratelimit.py", "api/accounts.py", "api/alerts.py", "api/evacuation.py",
            "api/notifications.py"} <= files, producers
    assert [p for p in producers if not p[2]] == []


def test_the_walk_tells_a_429_without_retry_after(tmp_path: Path) -> None:
    """The check can fail: a module making a 429 without Retry-After is found."""
    fake = tmp_path / "api"
    fake.mkdir()
    (fake / "x.py").write_text(
        "def f(exc):\n"
        "    status = 429 if exc else 503\n"
        "    raise Problem(status, 'Too Many Requests', 'x', field='subscription')\n"
        "def g():\n"
        "    raise Problem(429, 'Too Many Requests', headers={'Retry-After': '1'})\n", encoding="utf-8")
    assert _producers(tmp_path, ("api",)) == [("api/x.py", 3, False), ("api/x.py", 5, True)]
