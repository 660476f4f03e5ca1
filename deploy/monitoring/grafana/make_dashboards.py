"""Writes Sonae's Grafana dashboards (dashboards/*.json) from the panel lists below.

    .venv/bin/python deploy/monitoring/grafana/make_dashboards.py

Edit here, not in the JSON; tests/deploy/test_monitoring.py checks the JSON is what this writes and
that every metric it uses exists (or is one that alerting/ is expected to add).
"""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "sonae-prometheus"}
HERE = Path(__file__).resolve().parent


def panel(title: str, exprs: list[tuple[str, str]], *, unit: str = "short", kind: str = "timeseries",
          w: int = 12, h: int = 8, description: str = "") -> dict:
    return {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "gridPos": {"w": w, "h": h, "x": 0, "y": 0},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else
                   {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
        "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": legend, "datasource": DS}
                    for i, (e, legend) in enumerate(exprs)],
    }


def layout(panels: list[dict]) -> list[dict]:
    x = y = 0
    row_h = 0
    for i, p in enumerate(panels):
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y = 0, y + row_h
            row_h = 0
        g["x"], g["y"] = x, y
        x += g["w"]
        row_h = max(row_h, g["h"])
        p["id"] = i + 1
    return panels


def dashboard(uid: str, title: str, panels: list[dict]) -> dict:
    return {
        "uid": uid, "title": title, "tags": ["sonae"], "timezone": "Asia/Tokyo", "schemaVersion": 39,
        "version": 1, "editable": False, "refresh": "30s", "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []}, "annotations": {"list": []}, "panels": layout(panels),
    }


INGEST = dashboard("sonae-ingest", "Sonae / Ingest", [
    panel("Ingestors up", [('sum(up{job="sonae-ingest"})', "up")], kind="stat", w=4, h=4),
    panel("Messages/s", [("sum(rate(sonae_ingest_messages_received_total[5m]))", "received")],
          kind="stat", unit="reqps", w=4, h=4),
    panel("Dead letters (1h)", [("sum(increase(sonae_ingest_dead_letters_total[1h]))", "dead letters")],
          kind="stat", w=4, h=4),
    panel("Quarantined (1h)", [("sum(increase(sonae_ingest_quarantined_total[1h]))", "quarantined")],
          kind="stat", w=4, h=4),
    panel("DB errors (1h)", [("sum(increase(sonae_ingest_db_errors_total[1h]))", "errors")], kind="stat", w=4, h=4),
    panel("Since last commit", [("time() - max(sonae_ingest_last_commit_timestamp_seconds)", "age")],
          kind="stat", unit="s", w=4, h=4),
    panel("Messages per ingestor (the shared-subscription split)",
          [("sum by (instance) (rate(sonae_ingest_messages_acked_total[5m]))", "{{instance}} acked"),
           ("sum by (instance) (rate(sonae_ingest_messages_received_total[5m]))", "{{instance}} received")],
          unit="reqps"),
    panel("Rows written / duplicates skipped",
          [("sum(rate(sonae_ingest_rows_written_total[5m]))", "rows"),
           ("sum(rate(sonae_ingest_duplicates_total[5m]))", "duplicates (redelivered)")], unit="reqps"),
    panel("Reading → commit lag",
          [("histogram_quantile(0.5, sum by (le) (rate(sonae_ingest_lag_seconds_bucket[5m])))", "p50"),
           ("histogram_quantile(0.99, sum by (le) (rate(sonae_ingest_lag_seconds_bucket[5m])))", "p99")], unit="s"),
    panel("Commit time",
          [("histogram_quantile(0.5, sum by (le) (rate(sonae_ingest_commit_seconds_bucket[5m])))", "p50"),
           ("histogram_quantile(0.99, sum by (le) (rate(sonae_ingest_commit_seconds_bucket[5m])))", "p99")], unit="s"),
    panel("Unacknowledged messages", [("sonae_ingest_unacked_messages", "{{instance}}")],
          description="Received, not yet committed. At ingest.max_inflight the ingestor stops reading."),
    panel("Batch size",
          [("histogram_quantile(0.5, sum by (le) (rate(sonae_ingest_batch_messages_bucket[5m])))", "p50"),
           ("sum(rate(sonae_ingest_batch_messages_sum[5m])) / sum(rate(sonae_ingest_batch_messages_count[5m]))",
            "mean")]),
    panel("Dead letters by reason", [("sum by (reason) (increase(sonae_ingest_dead_letters_total[15m]))", "{{reason}}")]),
    panel("Database errors", [("sum by (instance) (increase(sonae_ingest_db_errors_total[5m]))", "{{instance}}")]),
])

ALERTS = dashboard("sonae-alerts", "Sonae / Alerts", [
    panel("Active real alerts (警戒レベル)",
          [('sum by (level) (sonae_alerts_active{exercise="false"})', "レベル{{level}}")], kind="stat", w=8, h=5),
    panel("Active exercise alerts", [('sum by (level) (sonae_alerts_active{exercise="true"})', "レベル{{level}}")],
          kind="stat", w=8, h=5),
    panel("Silent gauges", [("max(sonae_alerts_silent_gauges)", "silent")], kind="stat", w=8, h=5,
          description="Gauges that missed their expected reports: they cannot raise an alert."),
    panel("Active alerts over time", [("sum by (level, exercise) (sonae_alerts_active)", "レベル{{level}} exercise={{exercise}}")],
          w=24),
    panel("Live-alert clients (SSE)", [("sum by (instance) (sonae_sse_clients)", "{{instance}}"),
                                       ("sum(sonae_sse_clients)", "all")]),
    panel("Silent gauges over time", [("max(sonae_alerts_silent_gauges)", "silent")]),
])

API = dashboard("sonae-api", "Sonae / API", [
    panel("API processes up", [('sum(up{job="sonae-api"})', "up")], kind="stat", w=6, h=4),
    panel("Requests/s", [("sum(rate(sonae_api_requests_total[5m]))", "requests")], kind="stat", unit="reqps", w=6, h=4),
    panel("5xx ratio", [('sum(rate(sonae_api_requests_total{status=~"5.."}[5m])) / '
                        "clamp_min(sum(rate(sonae_api_requests_total[5m])), 1e-9)", "5xx")],
          kind="stat", unit="percentunit", w=6, h=4),
    panel("SSE clients", [("sum(sonae_sse_clients)", "clients")], kind="stat", w=6, h=4),
    panel("Requests by route", [("sum by (route) (rate(sonae_api_requests_total[5m]))", "{{route}}")], unit="reqps"),
    panel("Requests by status", [("sum by (status) (rate(sonae_api_requests_total[5m]))", "{{status}}")], unit="reqps"),
    panel("Latency p95 by route",
          [('histogram_quantile(0.95, sum by (le, route) (rate(sonae_api_request_seconds_bucket{route!="/api/v1/events"}[5m])))',
            "{{route}}")], unit="s"),
    panel("Requests per API process", [("sum by (instance) (rate(sonae_api_requests_total[5m]))", "{{instance}}")],
          unit="reqps"),
])


def main() -> None:
    out = HERE / "dashboards"
    out.mkdir(exist_ok=True)
    for d in (INGEST, ALERTS, API):
        (out / f"{d['uid']}.json").write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
