"""The metrics the deploy's Prometheus rules read: active alerts by level, silent gauges, SSE clients."""

from __future__ import annotations

import asyncpg

from alerting.store import issue_order
from alerting.worker import ACTIVE_ALERTS, SILENT_GAUGES, RulesWorker
from api.events import SSE_CLIENTS, EventHub, load_alert_events


def _value(gauge, **labels) -> float:  # type: ignore[no-untyped-def]
    return float((gauge.labels(**labels) if labels else gauge)._value.get())


async def test_active_alert_and_silent_gauges(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await issue_order(conn, municipality_code="072036", level=4, issued_by="t")
        await issue_order(conn, municipality_code="072036", level=4, issued_by="t", exercise=True)
        await issue_order(conn, municipality_code="072010", level=5, issued_by="t")
        await RulesWorker(pool).update_gauges(conn)
    assert _value(ACTIVE_ALERTS, level="4", exercise="false") == 1
    assert _value(ACTIVE_ALERTS, level="4", exercise="true") == 1
    assert _value(ACTIVE_ALERTS, level="5", exercise="false") == 1
    assert _value(ACTIVE_ALERTS, level="3", exercise="false") == 0
    assert _value(SILENT_GAUGES) == 0


async def test_sse_client_gauge_follows_subscriptions(pool: asyncpg.Pool) -> None:
    hub = EventHub(pool, "sonae_alerts", load_alert_events)
    before = _value(SSE_CLIENTS)
    subs = [hub.subscribe() for _ in range(3)]
    assert _value(SSE_CLIENTS) == before + 3
    for sub in subs:
        hub.unsubscribe(sub)
    hub.unsubscribe(subs[0])  # twice: counted once
    assert _value(SSE_CLIENTS) == before
