"""Events queued together (an ingest backlog, a receiver that was down, a replay) are each told as the alert
was at that event — level, version, audience, value, municipality — on every channel: webhooks (JSON and
CAP), Web Push, the event stream, and their audience filters; a receiver that was down gets them in order.
The break-it report F3: three events of one alert, fanned out after the last, all arrived as its last
version (level 1, version 3), three identical CAP messages, and a staff-only level-1 event reached a
public webhook."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

import asyncpg
from aiohttp.test_utils import TestClient
from lxml import etree

from alerting import store as alerts
from alerting.rules import Transition
from api.alerts import _matches
from api.events import load_alert_events
from notify import store
from tests.notify.support import PushService, WebhookReceiver
from tests.notify.test_notify import FUKUSHIMA, KORIYAMA, _seed, running, settled, staff_token, subscribe

CAP = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}


async def _level(pool: asyncpg.Pool, old: int | None, new: int | None, value: float) -> alerts.AlertChange:
    """One river-level change of the Akutsu gauge (Koriyama), reading ``value`` metres."""
    async with pool.acquire() as conn, conn.transaction():
        c = await alerts.apply_transition(conn, station_id="akutsu", municipality_code=KORIYAMA, exercise=False,
                                          t=Transition("river_level", old, new, datetime.now(UTC).timestamp(),
                                                       value, 5.5, "threshold"))
    assert c is not None
    return c


async def _backlog(pool: asyncpg.Pool) -> list[alerts.AlertChange]:
    """Raised at the staff-only level 1, escalated to the public level 2, down to 1 — which ends the public
    alert (its ``cleared`` event) and raises a staff-only one at 1 (``alerting.store._leave_public``; the last
    change returned is that raise): all committed before any notification worker runs."""
    return [await _level(pool, None, 1, 4.2), await _level(pool, 1, 2, 5.6), await _level(pool, 2, 1, 4.9)]


async def _event_ids(pool: asyncpg.Pool) -> list[int]:
    """Every alert event, in order: of the backlog, the public alert's raise, escalation and end, then the
    staff-only alert's raise."""
    async with pool.acquire() as conn:
        return [r["id"] for r in await conn.fetch("SELECT id FROM alert_events ORDER BY id")]


async def _hook(client: TestClient, hooks: WebhookReceiver, admin: dict[str, str], name: str, **body: object) -> int:
    r = await client.post("/api/v1/webhooks", json={"url": hooks.url(name), **body}, headers=admin)
    assert r.status == 201, await r.text()
    made = await r.json()
    hooks.secrets[name] = made["secret"]
    return int(made["id"])


async def test_queued_events_reach_webhooks_each_as_the_alert_was_at_it(
        pool: asyncpg.Pool, client: TestClient, hooks: WebhookReceiver) -> None:
    await _seed(pool)
    admin = await staff_token(pool, "admin1", "admin", None)
    await _hook(client, hooks, admin, "staffjson", include_staff=True)
    await _hook(client, hooks, admin, "staffcap", format="cap", include_staff=True)
    await _hook(client, hooks, admin, "public")
    changes = await _backlog(pool)
    ids = await _event_ids(pool)
    async with running(pool):
        for event_id in ids:
            await settled(pool, event_id)
    assert all(d.signature_ok for d in hooks.deliveries)

    # in order per alert (the staff-only alert's raise may come between the public alert's events)
    docs = sorted((json.loads(d.body) for d in hooks.of("staffjson")), key=lambda d: d["event"]["id"])
    assert [d["event"]["id"] for d in docs] == ids
    assert [(d["alert"]["level"], d["alert"]["version"], d["alert"]["value"]) for d in docs] == \
        [(1, 1, 4.2), (2, 2, 5.6), (2, 3, 4.9), (1, 1, 4.9)]
    assert [d["alert"]["audience"] for d in docs[:2]] == ["staff", "public"]
    assert "警戒レベル2相当" in docs[1]["texts"]["ja-JP"]["event"]

    alert_id, standby_id = changes[0].alert_id, changes[2].alert_id
    caps = sorted((etree.fromstring(d.body) for d in hooks.of("staffcap")),
                  key=lambda c: (c.findtext("cap:identifier", namespaces=CAP) or "").rsplit("-", 2)[1] != str(alert_id))
    assert [c.findtext("cap:identifier", namespaces=CAP).rsplit("-", 2)[1:] for c in caps] == \
        [[str(alert_id), "v1"], [str(alert_id), "v2"], [str(alert_id), "v3"], [str(standby_id), "v1"]]
    assert [c.findtext("cap:scope", namespaces=CAP) for c in caps] == ["Restricted", "Public", "Public", "Restricted"]
    # the first public message is an Alert (it names no Restricted message); its end a Cancel
    assert [c.findtext("cap:msgType", namespaces=CAP) for c in caps] == ["Alert", "Alert", "Cancel", "Alert"]
    assert len({d.body for d in hooks.of("staffcap")}) == 4

    # the level-1 raise was staff-only when it happened; the public hook hears the public level and its end
    public = [json.loads(d.body) for d in hooks.of("public")]
    assert [(d["event"]["kind"], d["alert"]["version"]) for d in public] == [("escalated", 2), ("cleared", 3)]


async def test_a_receiver_that_was_down_gets_the_backlog_in_order(
        pool: asyncpg.Pool, client: TestClient, hooks: WebhookReceiver) -> None:
    await _seed(pool)
    admin = await staff_token(pool, "admin1", "admin", None)
    await _hook(client, hooks, admin, "flaky", include_staff=True)
    hooks.fail_first["flaky"] = 2  # still down for the first two requests: retried with backoff
    await _backlog(pool)
    ids = await _event_ids(pool)
    async with running(pool, retry_base_s=0.05):
        for event_id in ids:
            await settled(pool, event_id)
    docs = [json.loads(d.body) for d in hooks.of("flaky")]
    # each alert's events in order: the public alert's three, the staff-only one's raise
    got = [[(d["event"]["id"], d["alert"]["level"], d["alert"]["version"]) for d in docs if d["alert"]["id"] == a]
           for a in dict.fromkeys(sorted(d["alert"]["id"] for d in docs))]
    assert got == [[(ids[0], 1, 1), (ids[1], 2, 2), (ids[2], 2, 3)], [(ids[3], 1, 1)]]


async def test_queued_push_messages_go_to_the_municipality_of_the_alert_at_each_event(
        pool: asyncpg.Pool, client: TestClient, push: PushService) -> None:
    await _seed(pool)
    koriyama, fukushima = push.browser(), push.browser()
    await subscribe(client, koriyama, [{"municipality_code": KORIYAMA}], "ja-JP")
    await subscribe(client, fukushima, [{"municipality_code": FUKUSHIMA}], "ja-JP")
    raised = await _level(pool, None, 3, 5.8)
    async with pool.acquire() as conn, conn.transaction():
        moved = await alerts.move_alert(conn, raised.alert_id, municipality_code=FUKUSHIMA, at=datetime.now(UTC))
    assert moved is not None
    async with running(pool):
        await settled(pool, raised.event_id)
        await settled(pool, moved.event_id)
    # the raise was in Koriyama: its subscriber heard it, and then the move; Fukushima only the move
    assert [(m["event_id"], m["level"]) for m in koriyama.received] == [(raised.event_id, 3), (moved.event_id, 3)]
    assert [m["event_id"] for m in fukushima.received] == [moved.event_id]


async def test_the_event_stream_tells_each_event_as_the_alert_was_at_it(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    await _backlog(pool)
    async with pool.acquire() as conn:
        events = await load_alert_events(conn, 0)
    assert [e.id for e in events] == sorted(e.id for e in events) and len(events) == 4
    shown = [json.loads(e.data)["alert"] for e in events]
    assert [(a["level"], a["version"], a["value"]) for a in shown] == \
        [(1, 1, 4.2), (2, 2, 5.6), (2, 3, 4.9), (1, 1, 4.9)]
    assert [json.loads(e.data)["event_id"] for e in events] == await _event_ids(pool)
    # the public stream: not the staff-only raises; the public level and the change that ended it
    public = [e for e in events if _matches(e, exercise=None, municipality=None, audience="public")]
    assert [json.loads(e.data)["kind"] for e in public] == ["escalated", "cleared"]
    staff = [e for e in events if _matches(e, exercise=None, municipality=None, audience="staff")]
    assert json.loads(staff[0].data)["kind"] == "raised"


async def test_events_recorded_before_their_alert_state_was_kept_get_it_rebuilt(pool: asyncpg.Pool) -> None:
    """Migration 053 on events stored without ``alert_state``: each gets its level, version, value and the
    audience of its level; the fan-out then tells them as they were."""
    await _seed(pool)
    await _backlog(pool)
    await _level(pool, 1, None, 3.0)  # the staff-only standby alert ends
    ids = await _event_ids(pool)
    sql = resources.files("alerting").joinpath("migrations/053_event_alert_state.sql").read_text()
    async with pool.acquire() as conn:
        await conn.execute("UPDATE alert_events SET alert_state = NULL")
        await conn.execute(sql)
        assert await conn.fetchval("SELECT count(*) FROM alert_events WHERE alert_state IS NULL") == 0
        seen = [await alerts.alert_at_event(conn, i) for i in ids]
    assert [(a["level"], a["version"], a["value"], a["state"], a["cleared_at"] is None) for a in seen if a] == [
        (1, 1, 4.2, "raised", True), (2, 2, 5.6, "escalated", True), (2, 3, 4.9, "cleared", False),
        (1, 1, 4.9, "raised", True), (1, 2, 3.0, "cleared", False)]
    assert [a["audience"] for a in seen if a] == ["staff", "public", "public", "staff", "staff"]
    assert [a["told_audience"] for a in seen if a] == ["staff", "public", "public", "staff", "staff"]
    assert [a["max_level"] for a in seen if a] == [1, 2, 2, 1, 1]
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO webhooks (url, secret, created_by) VALUES ('https://x.test/h', 's', 'a')")
        await store.fan_out(conn, base_url="https://sonae.test")
        queued = await conn.fetch("SELECT alert_event_id, payload FROM notify_queue ORDER BY alert_event_id")
    assert [(r["alert_event_id"], json.loads(r["payload"])["alert"]["version"]) for r in queued] == \
        [(ids[1], 2), (ids[2], 3)]


async def test_the_history_lists_each_event_for_its_audience_when_it_happened(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    changes = await _backlog(pool)
    async with pool.acquire() as conn:
        public = await alerts.list_history(conn, audience="public")
        staff = await alerts.list_history(conn, audience="staff")
    assert [(r["id"], r["audience"]) for r in public][1:] == [(changes[1].event_id, "public")]
    assert [r["id"] for r in public][0] == (await _event_ids(pool))[2]  # the end of what the public was told
    assert changes[0].event_id in [r["id"] for r in staff]


async def test_queued_emails_give_the_reading_of_each_event(pool: asyncpg.Pool) -> None:
    await _seed(pool)
    await staff_token(pool, "kor1", "staff", KORIYAMA)
    changes = [await _level(pool, None, 3, 5.8), await _level(pool, 3, 4, 6.9), await _level(pool, 4, 3, 5.75)]
    async with pool.acquire() as conn:
        await store.set_roster(conn, username="kor1", municipality_code=KORIYAMA, email="kor1@city.example",
                               lang="en-US", on_call=True, drills=False, updated_by="admin1")
        await store.fan_out(conn, base_url="https://sonae.test")
        queued = await conn.fetch("SELECT alert_event_id, payload FROM notify_queue WHERE kind = 'email' "
                                  "ORDER BY alert_event_id")
    bodies = [json.loads(r["payload"]) for r in queued]
    assert [r["alert_event_id"] for r in queued] == [c.event_id for c in changes]
    assert [next(line for line in b["body"].splitlines() if line.startswith("akutsu:")) for b in bodies] == \
        ["akutsu: 5.80 m", "akutsu: 6.90 m", "akutsu: 5.75 m"]
    assert ["Alert level 3" in b["subject"] for b in bodies] == [True, False, True]
