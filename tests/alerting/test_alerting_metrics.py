"""The metrics the deploy's Prometheus rules read: active alerts by level, silent gauges, SSE clients."""

from __future__ import annotations

import asyncpg

from alerting.rules import IMPLAUSIBLE, UNCONFIRMED, Transition
from alerting.store import apply_transition, issue_order
from alerting.worker import ACTIVE_ALERTS, SILENT_GAUGES, UNCONFIRMED_ALERTS, RulesWorker
from api.events import SSE_CLIENTS, EventHub, load_alert_events
from ingest.registry import Station, upsert_stations


def _value(gauge, **labels) -> float:  # type: ignore[no-untyped-def]
    return float((gauge.labels(**labels) if labels else gauge)._value.get())


async def test_active_alert_and_silent_gauges(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await issue_order(conn, municipality_code="072036", level=4, issued_by="t")
        await issue_order(conn, municipality_code="072036", level=4, issued_by="t", exercise=True)
        await issue_order(conn, municipality_code="072010", level=5, issued_by="t")
        await upsert_stations(conn, [Station(id="jump", name="Jump", municipality_code="072036")])
        async with conn.transaction():  # an unconfirmed level 5 is not an active level-5 alert
            await apply_transition(conn, station_id="jump", municipality_code="072036", exercise=False,
                                   t=Transition(UNCONFIRMED, None, 5, 1.7e9, 9.9, 9.0, IMPLAUSIBLE))
        await RulesWorker(pool).update_gauges(conn)
    assert _value(ACTIVE_ALERTS, level="4", exercise="false") == 1
    assert _value(ACTIVE_ALERTS, level="4", exercise="true") == 1
    assert _value(ACTIVE_ALERTS, level="5", exercise="false") == 1
    assert _value(ACTIVE_ALERTS, level="3", exercise="false") == 0
    assert _value(SILENT_GAUGES) == 0
    assert _value(UNCONFIRMED_ALERTS) == 1


async def test_sse_client_gauge_follows_subscriptions(pool: asyncpg.Pool) -> None:
    hub = EventHub(pool, "sonae_alerts", load_alert_events)
    before = _value(SSE_CLIENTS)
    subs = [hub.subscribe() for _ in range(3)]
    assert _value(SSE_CLIENTS) == before + 3
    for sub in subs:
        hub.unsubscribe(sub)
    hub.unsubscribe(subs[0])  # twice: counted once
    assert _value(SSE_CLIENTS) == before
