"""Prometheus rules and config (promtool), Grafana dashboards, and that every metric they use exists."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
MON = DEPLOY / "monitoring"
RULES = MON / "prometheus" / "rules" / "sonae.rules.yml"
PROMTOOL = shutil.which("promtool") or ""
needs_promtool = pytest.mark.skipif(not PROMTOOL, reason="promtool is not installed (apt-get install prometheus)")

#: metrics the configs may use before their code exists (none: every one is defined)
EXPECTED_ELSEWHERE: set[str] = set()


def _known_metrics() -> set[str]:
    from prometheus_client import REGISTRY

    for module in ("ingest.metrics", "api.app", "alerting.worker", "api.events", "notify.worker", "sonae.eventloop"):
        try:
            importlib.import_module(module)
        except ImportError:
            pass
    names: set[str] = set()
    for metric in REGISTRY.collect():
        names.add(metric.name)
        if metric.type == "counter":
            names.add(metric.name + "_total")
        if metric.type == "histogram":
            names |= {metric.name + s for s in ("_bucket", "_sum", "_count")}
    return names


def _used_metrics(text: str) -> set[str]:
    return set(re.findall(r"\bsonae_[a-z0-9_]+", text)) - {"sonae_api", "sonae_ingest"}


@needs_promtool
def test_promtool_check_rules() -> None:
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_rule_unit_tests() -> None:
    out = subprocess.run([PROMTOOL, "test", "rules", "sonae.rules.test.yml"], cwd=RULES.parent,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_check_config(tmp_path: Path) -> None:
    config = (MON / "prometheus" / "prometheus.yml").read_text()
    (tmp_path / "rules").mkdir()
    shutil.copy(RULES, tmp_path / "rules" / RULES.name)
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/rules/", "rules/"))
    out = subprocess.run([PROMTOOL, "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_cover_what_operators_must_know() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    rules = {r["alert"]: r for g in groups for r in g["rules"]}
    text = RULES.read_text()
    for needle in ("sonae_ingest_lag_seconds", "sonae_ingest_dead_letters_total", "sonae_alerts_silent_gauges",
                   "sonae_ingest_db_errors_total", "sonae_api_requests_total", "sonae_api_request_seconds",
                   "sonae_sse_clients", 'up{job="sonae-ingest"}', 'up{job="sonae-api"}'):
        assert needle in text, needle
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        assert rule["annotations"]["summary"]


def test_every_metric_used_exists() -> None:
    known = _known_metrics() | EXPECTED_ELSEWHERE
    used = _used_metrics(RULES.read_text())
    for f in (MON / "grafana" / "dashboards").glob("*.json"):
        used |= _used_metrics(f.read_text())
    unknown = sorted(m for m in used if m not in known)
    assert not unknown, f"metrics used by rules/dashboards that no code defines: {unknown}"


def test_dashboards_are_what_the_generator_writes(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_dashboards", MON / "grafana" / "make_dashboards.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for d in (module.INGEST, module.ALERTS, module.API):
        path = MON / "grafana" / "dashboards" / f"{d['uid']}.json"
        assert json.loads(path.read_text()) == d, f"{path.name} differs: run make_dashboards.py"
        assert d["panels"] and all(p["targets"] for p in d["panels"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))
    provisioning = yaml.safe_load((MON / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert provisioning["datasources"][0]["uid"] == "sonae-prometheus"
