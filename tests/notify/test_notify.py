"""Notifications end to end: alert changes → queue → a real push service stand-in (RFC 8030/8291/8292),
a real webhook receiver verifying HMAC signatures, and a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from prometheus_client import REGISTRY

from alerting import rules as alerts_rules
from alerting import store as alerts
from alerting.rules import Transition
from api.auth import create_account, login
from ingest.registry import Station, upsert_stations
from notify import store
from notify.webpush import encrypt
from notify.worker import DeliveryWorker, _claim
from sonae.embedded import free_port
from tests.notify.support import MailSink, PushService, WebhookReceiver, b64u, rfc8291_decrypt, unb64u

KORIYAMA, FUKUSHIMA = "072036", "072010"
# an order polygon in Fukushima city (lon, lat)
RING = [[140.44, 37.74], [140.50, 37.74], [140.50, 37.78], [140.44, 37.78], [140.44, 37.74]]


# -- helpers (the fixtures nsettings, client, push and hooks: tests/notify/conftest.py) ---------------------
@contextlib.asynccontextmanager
async def running(pool: asyncpg.Pool, **kwargs: Any) -> AsyncIterator[DeliveryWorker]:
    kwargs.setdefault("base_url", "https://sonae.test")
    kwargs.setdefault("retry_base_s", 0.05)
    kwargs.setdefault("max_attempts", 4)
    kwargs.setdefault("sweep_s", 1.0)
    kwargs.setdefault("webhook_rate_per_s", 100)
    kwargs.setdefault("allow_loopback", True)  # the receivers here are on 127.0.0.1 (notify.push_allow_http)
    kwargs.setdefault("webhook_allow_loopback", True)  # and the webhook receiver (notify.webhook_allow_loopback)
    worker = DeliveryWorker(pool, **kwargs)
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    done, _ = await asyncio.wait([task, ready], timeout=60, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert ready in done, "the delivery worker did not start"
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


async def _seed(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute("INSERT INTO municipalities (code, name_ja, name_en) VALUES ($1, '郡山市', 'Koriyama'), "
                           "($2, '福島市', 'Fukushima')", KORIYAMA, FUKUSHIMA)
        await upsert_stations(conn, [
            Station(id="akutsu", name="阿久津", name_en="Akutsu", river="阿武隈川", municipality_code=KORIYAMA,
                    lat=37.41, lon=140.38, th_standby=4.0, th_caution=5.5, th_evacuation=5.7, th_danger=6.8),
            Station(id="fukushima", name="福島", name_en="Fukushima", river="阿武隈川", municipality_code=FUKUSHIMA,
                    lat=37.76, lon=140.48, th_standby=2.0, th_caution=3.0, th_evacuation=4.0, th_danger=5.0)])
        await conn.execute(
            """INSERT INTO shelters (id, name, lat, lon, municipality_code) VALUES
               ('s-kor', '郡山の避難所', 37.40, 140.36, $1), ('s-fks', '福島の避難所', 37.75, 140.47, $2)""",
            KORIYAMA, FUKUSHIMA)


async def change(pool: asyncpg.Pool, station: str, old: int | None, new: int | None, *,
                 exercise: bool = False) -> alerts.AlertChange:
    muni = KORIYAMA if station == "akutsu" else FUKUSHIMA
    async with pool.acquire() as conn, conn.transaction():
        c = await alerts.apply_transition(conn, station_id=station, municipality_code=muni, exercise=exercise,
                                          t=Transition("river_level", old, new, datetime.now(UTC).timestamp(), 5.8,
                                                       5.7, "threshold"))
    assert c is not None
    return c


async def settled(pool: asyncpg.Pool, event_id: int, *, expect: int | None = None, timeout: float = 120) -> list[dict[str, Any]]:
    """Wait until the event has been fanned out and none of its messages is still queued."""
    deadline = time.monotonic() + timeout
    while True:
        async with pool.acquire() as conn:
            fanned = await conn.fetchval(
                "SELECT (SELECT floor FROM notify_cursor) >= (SELECT pos FROM alert_events WHERE id = $1)",
                event_id)
            rows = [dict(r) for r in await conn.fetch(
                "SELECT kind, target_id, state, attempts, last_status FROM notify_queue WHERE alert_event_id = $1 "
                "ORDER BY kind, target_id", event_id)]
        if fanned and all(r["state"] != "queued" for r in rows) and (expect is None or len(rows) == expect):
            return rows
        assert time.monotonic() < deadline, f"event {event_id} not settled: {rows}"
        await asyncio.sleep(0.05)  # polling the database under a deadline


async def subscribe(client: TestClient, browser: Any, areas: list[dict[str, Any]], lang: str,
                    drills: bool = False) -> dict[str, Any]:
    r = await client.post("/api/v1/push/subscriptions", json={"subscription": browser.subscription(),
                                                              "areas": areas, "lang": lang, "drills": drills})
    assert r.status == 201, await r.text()
    return dict(await r.json())


async def staff_token(pool: asyncpg.Pool, username: str, role: str, municipality: str | None) -> dict[str, str]:
    async with pool.acquire() as conn:
        await create_account(conn, username=username, password="correct horse battery", role=role,
                             municipality_code=municipality)
        result = await login(conn, username, "correct horse battery")
    assert result is not None
    return {"Authorization": f"Bearer {result[0]}"}


# -- Web Push ------------------------------------------------------------------------------------------
def test_encryption_matches_rfc8291_appendix_a() -> None:
    """Our encryption, with the RFC's key and salt, gives the RFC's exact message; the stand-in decrypts it."""
    ua_private = ec.derive_private_key(int.from_bytes(unb64u("q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"), "big"),
                                       ec.SECP256R1())
    as_private = ec.derive_private_key(int.from_bytes(unb64u("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"), "big"),
                                       ec.SECP256R1())
    p256dh = unb64u("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
    auth = unb64u("BTBZMqHH6r4Tts7J_aSIgg")
    expected = ("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6P"
                "Bru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
    plaintext = b"When I grow up, I want to be a watermelon"
    body = encrypt(plaintext, p256dh, auth, salt=unb64u("DGv6ra1nlYgDCS1FRnbzlw"), private_key=as_private)
    assert b64u(body) == expected
    assert rfc8291_decrypt(unb64u(expected), ua_private, auth) == plaintext
    assert rfc8291_decrypt(encrypt(plaintext, p256dh, auth), ua_private, auth) == plaintext  # fresh key and salt


async def test_a_level_change_reaches_exactly_the_subscriptions_of_its_areas_in_their_language(
        pool: asyncpg.Pool, client: TestClient, push: PushService, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await _seed(pool)
    koriyama_ja, near_en, far_easy, fukushima_en, koriyama_order_circle = (push.browser() for _ in range(5))
    await subscribe(client, koriyama_ja, [{"municipality_code": KORIYAMA}], "ja-JP")
    # a circle the resident picked near the Akutsu gauge, given with more precision than is kept
    near = await subscribe(client, near_en, [{"lat": 37.40537, "lon": 140.38461, "radius_m": 1500}], "en-US")
    assert near["areas"] == [{"lat": 37.405, "lon": 140.385, "radius_m": 1500}]
    await subscribe(client, far_easy, [{"lat": 37.757, "lon": 140.472, "radius_m": 800}], "ja-easy")
    await subscribe(client, fukushima_en, [{"municipality_code": FUKUSHIMA}], "en")
    # a Koriyama circle far from the gauge: not told about the gauge, told about a city-wide order
    await subscribe(client, koriyama_order_circle, [{"lat": 37.30, "lon": 140.30, "radius_m": 500}], "ja-JP")

    latency_before = REGISTRY.get_sample_value("sonae_notify_latency_seconds_count", {"kind": "push"}) or 0
    async with running(pool):
        c = await change(pool, "akutsu", None, 3)
        rows = await settled(pool, c.event_id, expect=2)
        assert [r["state"] for r in rows] == ["sent", "sent"]
        assert [len(b.received) for b in (koriyama_ja, near_en, far_easy, fukushima_en, koriyama_order_circle)] == \
            [1, 1, 0, 0, 0]
        ja, en = koriyama_ja.received[0], near_en.received[0]
        assert "警戒レベル3相当" in ja["title"] and "阿久津" in ja["body"] and ja["lang"] == "ja-JP"
        assert "alert level 3" in en["title"] and "Akutsu" in en["body"] and en["lang"] == "en-US"
        assert en["url"] == f"https://sonae.test/?lang=en&alert={c.alert_id}" and ja["url"].endswith(
            f"?lang=ja&alert={c.alert_id}")
        assert ja["event_id"] == c.event_id and ja["exercise"] is False and ja["_topic"] == f"sonae-alert-{c.alert_id}"

        # the same level again is no change; a rise to 4 is a new message, urgent
        c4 = await change(pool, "akutsu", 3, 4)
        await settled(pool, c4.event_id, expect=2)
        assert [m["level"] for m in koriyama_ja.received] == [3, 4] and koriyama_ja.received[1]["_urgency"] == "high"

        # an order for a polygon in Fukushima city: the city's subscribers and the circle inside it
        async with pool.acquire() as conn:
            _, order = await alerts.issue_order(conn, municipality_code=FUKUSHIMA, level=4, issued_by="chief",
                                                area={"type": "Polygon", "coordinates": [RING]}, area_desc="渡利地区")
        await settled(pool, order.event_id, expect=2)
        assert "Evacuation order" in fukushima_en.received[0]["title"]
        assert "みんな にげて" in far_easy.received[0]["title"] and far_easy.received[0]["lang"] == "ja-JP-x-easy"

        # a whole-municipality order for Koriyama: its subscribers, and every circle whose centre is in
        # Koriyama (by its nearest shelter), including the one far from the gauge
        async with pool.acquire() as conn:
            _, order2 = await alerts.issue_order(conn, municipality_code=KORIYAMA, level=3, issued_by="chief")
        await settled(pool, order2.event_id, expect=3)
        assert len(koriyama_order_circle.received) == 1 and len(near_en.received) == 3
        assert len(koriyama_ja.received) == 3 and "高齢者等避難" in koriyama_ja.received[2]["title"]

        # cleared: subscribers are told it ended
        cleared = await change(pool, "akutsu", 4, None)
        await settled(pool, cleared.event_id, expect=2)
        assert "解除" in koriyama_ja.received[-1]["title"] and "cleared" in near_en.received[-1]["title"]
        assert [len(b.received) for b in (far_easy, fukushima_en, koriyama_order_circle)] == [1, 1, 1]

    # the same VAPID key signed everything
    assert len({m["_vapid_k"] for b in push.browsers.values() for m in b.received}) == 1
    # nothing about the position beyond the rounded centre is stored anywhere, nor logged
    async with pool.acquire() as conn:
        tables = [r["relname"] for r in await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')")]
        dump = "\n".join([json.dumps([r[0] for r in await conn.fetch(f'SELECT row_to_json(t)::text FROM "{t}" t')])
                          for t in tables])
        areas = await conn.fetch("SELECT lat, lon FROM push_areas WHERE lat IS NOT NULL ORDER BY lat")
    for exact in ("37.40537", "140.38461", "37.4054", "140.3846"):
        assert exact not in dump and exact not in caplog.text
    assert [(a["lat"], a["lon"]) for a in areas] == [(37.3, 140.3), (37.405, 140.385), (37.757, 140.472)]
    assert "37.405" not in caplog.text and "140.385" not in caplog.text
    # the process-wide histogram: other tests add to it too, so only its growth here counts
    latency_after = REGISTRY.get_sample_value("sonae_notify_latency_seconds_count", {"kind": "push"}) or 0
    assert latency_after > latency_before


async def test_an_expired_subscription_is_removed_and_unsubscribing_needs_the_token(
        pool: asyncpg.Pool, client: TestClient, push: PushService) -> None:
    await _seed(pool)
    gone, kept, left = push.browser(), push.browser(), push.browser()
    gone_sub = await subscribe(client, gone, [{"municipality_code": KORIYAMA}], "ja-JP")
    await subscribe(client, kept, [{"municipality_code": KORIYAMA}], "ja-JP")
    left_sub = await subscribe(client, left, [{"municipality_code": KORIYAMA}], "ja-JP")
    gone.answer = 410  # the browser dropped the subscription

    url = f"/api/v1/push/subscriptions/{left_sub['id']}"
    assert (await client.delete(url, headers={"X-Unsubscribe-Token": gone_sub["unsubscribe_token"]})).status == 404
    assert (await client.delete(url)).status == 400
    assert (await client.delete(url, headers={"X-Unsubscribe-Token": left_sub["unsubscribe_token"]})).status == 204

    async with running(pool):
        c = await change(pool, "akutsu", None, 2)
        rows = await settled(pool, c.event_id, expect=2)
    assert {(r["target_id"], r["state"], r["last_status"]) for r in rows} == {
        (gone_sub["id"], "gone", 410), (rows[1]["target_id"] if rows[0]["target_id"] == gone_sub["id"]
                                        else rows[0]["target_id"], "sent", 201)}
    async with pool.acquire() as conn:
        ids = {r["id"] for r in await conn.fetch("SELECT id FROM push_subscriptions")}
        assert await conn.fetchval("SELECT count(*) FROM push_areas WHERE subscription_id = $1", gone_sub["id"]) == 0
    assert gone_sub["id"] not in ids and left_sub["id"] not in ids and len(ids) == 1
    assert len(kept.received) == 1 and not left.received and not gone.received


async def test_subscriptions_are_checked(client: TestClient, push: PushService) -> None:
    b = push.browser()
    good = {"subscription": b.subscription(), "areas": [{"municipality_code": KORIYAMA}], "lang": "ja-JP"}
    bad_keys = {**good, "subscription": {**b.subscription(), "keys": {"p256dh": b64u(b"\x04" + b"1" * 64),
                                                                        "auth": b64u(b"x" * 16)}}}
    for body in (bad_keys,
                 {**good, "areas": []},
                 {**good, "areas": [{"lat": 37.4, "lon": 140.3, "radius_m": 50}]},
                 {**good, "areas": [{"municipality_code": "abc"}]},
                 {**good, "lang": "fr-FR"},
                 {**good, "subscription": {**b.subscription(), "endpoint": "http://10.0.0.1/push/x"}},
                 {**good, "subscription": {**b.subscription(), "endpoint": "ftp://push.example/x"}}):
        r = await client.post("/api/v1/push/subscriptions", json=body)
        assert r.status == 400, (body, await r.text())
    key = (await (await client.get("/api/v1/push/vapid-public-key")).json())["public_key"]
    assert len(unb64u(key)) == 65


#: spellings Accept-Language takes for each language (api.language), as a body's lang gives them → stored
SPELLINGS = {"EN": "en-US", "en-GB": "en-US", "ja-JP-x-easy": "ja-JP-x-easy", "ja-x-easy": "ja-JP-x-easy",
             "JA-jp-X-EASY": "ja-JP-x-easy", "ja-easy": "ja-JP-x-easy", "ja-x-yasashii": "ja-JP-x-easy",
             "ja": "ja-JP", "JA-JP": "ja-JP", "en-us": "en-US"}
#: no language Sonae writes, or no language tag
UNKNOWN_LANGS = ["fr", "fr-FR", "en_US", "*", "", "ja JP", "x-easy", "日本語", "en;q=1"]


async def test_a_bodys_lang_takes_every_spelling_accept_language_takes_and_stores_it_canonical(
        pool: asyncpg.Pool, client: TestClient, push: PushService) -> None:
    """Push subscriptions and roster entries took lang only as ja-JP, en-US, ja-JP-x-easy, ja, en, ja-easy
    (found: ``EN``, ``ja-x-easy``, ``ja-JP-x-easy`` in another case were 400 while Accept-Language takes them).
    One rule now (api.language.tag_of); what is stored is the canonical tag the senders pick texts by."""
    await _seed(pool)
    admin = await staff_token(pool, "admin1", "admin", None)
    await staff_token(pool, "kor1", "staff", KORIYAMA)
    for given, stored in SPELLINGS.items():
        b = push.browser()
        r = await client.post("/api/v1/push/subscriptions", json={
            "subscription": b.subscription(), "areas": [{"municipality_code": KORIYAMA}], "lang": given})
        assert r.status == 201, (given, await r.text())
        sub_id = (await r.json())["id"]
        r = await client.put("/api/v1/roster/kor1", json={"email": "kor1@city.koriyama.example", "lang": given,
                                                          "municipality_code": KORIYAMA}, headers=admin)
        assert r.status == 200, (given, await r.text())
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT lang FROM push_subscriptions WHERE id = $1", sub_id) == stored, given
            assert await conn.fetchval("SELECT lang FROM notify_roster") == stored, given
    for given in UNKNOWN_LANGS:
        for method, path, body, headers in (
                ("POST", "/api/v1/push/subscriptions", {"subscription": push.browser().subscription(),
                                                        "areas": [{"municipality_code": KORIYAMA}]}, {}),
                ("PUT", "/api/v1/roster/kor1", {"email": "kor1@city.koriyama.example",
                                                "municipality_code": KORIYAMA}, admin)):
            r = await client.request(method, path, json={**body, "lang": given}, headers=headers)
            assert r.status in (400, 422), (given, path, await r.text())
            problem = await r.json()
            assert "ja-JP, en-US or ja-JP-x-easy" in problem["detail"], (given, problem)
            assert problem.get("field", problem.get("pointer", "lang")).endswith("lang"), problem


async def test_the_store_keeps_the_rules_of_areas_and_webhooks_whoever_calls_it(pool: asyncpg.Pool) -> None:
    """The rules are notify's, not the HTTP layer's: the store refuses what the API refuses (issue #20)."""
    keys = {"endpoint": "https://push.example/x", "p256dh": b"\x04" + b"1" * 64, "auth": b"a" * 16, "lang": "ja-JP",
            "drills": False}
    async with pool.acquire() as conn:
        for radius in (store.RADIUS_M[0] - 1, store.RADIUS_M[1] + 1, None):
            with pytest.raises(store.NotifyError, match="radius_m"):
                await store.add_subscription(conn, **keys, areas=[store.Area(lat=37.4, lon=140.3, radius_m=radius)])
        for wrong, named in (({"conditions": [alerts_rules.UNCONFIRMED]}, "conditions"), ({"conditions": []}, "conditions"),
                             ({"min_level": 6}, "min_level"), ({"fmt": "xml"}, "format"),
                             ({"url": "https://partner.example:99999/h"}, "url")):
            with pytest.raises(store.WebhookError) as refused:
                await store.add_webhook(conn, **{"url": "https://partner.example/h", "created_by": "test", **wrong})
            assert refused.value.field == named
        assert await conn.fetchval("SELECT count(*) FROM push_subscriptions") == 0
        assert await conn.fetchval("SELECT count(*) FROM webhooks") == 0
        # every condition that is delivered may be asked for: all of the rules' but the unconfirmed reading
        hook = await store.add_webhook(conn, url="https://partner.example/h", created_by="test",
                                       conditions=list(store.WEBHOOK_CONDITIONS))
        assert set(hook["conditions"]) == set(alerts_rules.CONDITIONS) - {alerts_rules.UNCONFIRMED}


async def test_exercise_alerts_go_only_to_those_who_opted_into_drills_and_are_marked(
        pool: asyncpg.Pool, client: TestClient, push: PushService, hooks: WebhookReceiver) -> None:
    await _seed(pool)
    drill_yes, drill_no = push.browser(), push.browser()
    await subscribe(client, drill_yes, [{"municipality_code": KORIYAMA}], "ja-JP", drills=True)
    await subscribe(client, drill_no, [{"municipality_code": KORIYAMA}], "en-US", drills=False)
    async with pool.acquire() as conn:
        for name, drills in (("drill", True), ("real", False)):
            hook = await store.add_webhook(conn, url=hooks.url(name), created_by="admin", drills=drills,
                                            allow_loopback=True)
            hooks.secrets[name] = hook["secret"]
    async with running(pool):
        c = await change(pool, "akutsu", None, 4, exercise=True)
        await settled(pool, c.event_id, expect=2)
        real = await change(pool, "akutsu", None, 2)
        await settled(pool, real.event_id, expect=4)
    assert [m["exercise"] for m in drill_yes.received] == [True, False]
    assert drill_yes.received[0]["title"].startswith("【訓練】")
    assert [m["exercise"] for m in drill_no.received] == [False]
    drill_hook, real_hook = hooks.of("drill"), hooks.of("real")
    assert [d.headers["X-Sonae-Exercise"] for d in drill_hook] == ["true", "false"]
    assert json.loads(drill_hook[0].body)["exercise"] is True
    assert json.loads(drill_hook[0].body)["texts"]["en-US"]["event"].startswith("[EXERCISE]")
    assert [d.headers["X-Sonae-Event-Id"] for d in real_hook] == [str(real.event_id)]


# -- webhooks ------------------------------------------------------------------------------------------
async def test_webhooks_are_filtered_signed_and_their_log_is_scoped(
        pool: asyncpg.Pool, client: TestClient, hooks: WebhookReceiver) -> None:
    await _seed(pool)
    admin = await staff_token(pool, "admin1", "admin", None)
    koriyama_staff = await staff_token(pool, "kor1", "staff", KORIYAMA)
    other_staff = await staff_token(pool, "fks1", "staff", FUKUSHIMA)
    made = {}
    for name, body in (("line", {"municipality_code": KORIYAMA, "min_level": 3, "conditions": ["river_level"]}),
                       ("lalert", {"format": "cap"}),
                       ("fukushima", {"municipality_code": FUKUSHIMA})):
        r = await client.post("/api/v1/webhooks", json={"url": hooks.url(name), **body}, headers=admin)
        assert r.status == 201, await r.text()
        made[name] = await r.json()
        hooks.secrets[name] = made[name]["secret"]
    assert (await client.post("/api/v1/webhooks", json={"url": hooks.url("x")}, headers=koriyama_staff)).status == 403
    listed = await (await client.get("/api/v1/webhooks", headers=koriyama_staff)).json()
    assert [h["id"] for h in listed["webhooks"]] == [made["line"]["id"]] and "secret" not in listed["webhooks"][0]

    async with running(pool):
        two = await change(pool, "akutsu", None, 2)
        await settled(pool, two.event_id, expect=1)           # only the CAP hook: the LINE relay wants ≥ 3
        four = await change(pool, "akutsu", 2, 4)
        await settled(pool, four.event_id, expect=2)
    assert all(d.signature_ok for d in hooks.deliveries)
    line = hooks.of("line")
    assert [d.headers["X-Sonae-Event-Id"] for d in line] == [str(four.event_id)]
    doc = json.loads(line[0].body)
    assert doc["alert"]["level"] == 4 and doc["event"]["kind"] == "escalated" and doc["exercise"] is False
    assert "警戒レベル4相当" in doc["texts"]["ja-JP"]["event"]
    # the signature is over the exact body: a changed byte would not verify
    assert not hmac.compare_digest(
        "sha256=" + hmac.new(made["line"]["secret"].encode(), line[0].body + b" ", hashlib.sha256).hexdigest(),
        line[0].headers["X-Sonae-Signature"])
    cap = hooks.of("lalert")
    assert len(cap) == 2 and cap[1].headers["Content-Type"].startswith("application/cap+xml")
    root = etree.fromstring(cap[1].body)
    ns = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}
    assert root.findtext("cap:status", namespaces=ns) == "Actual"
    assert root.findtext("cap:msgType", namespaces=ns) == "Update"
    assert not hooks.of("fukushima")

    url = f"/api/v1/webhooks/{made['line']['id']}/deliveries"
    r = await client.get(url, headers=koriyama_staff)
    assert r.status == 200
    log = (await r.json())["deliveries"]
    assert [(d["state"], d["attempts"], d["alert_event_id"]) for d in log] == [("sent", 1, four.event_id)]
    assert log[0]["log"][0]["status"] == 204
    assert (await client.get(url, headers=other_staff)).status == 404  # another municipality: as if missing
    assert (await client.get(url)).status == 401
    assert (await client.delete(f"/api/v1/webhooks/{made['line']['id']}", headers=admin)).status == 204
    assert (await client.get(url, headers=admin)).status == 404


async def test_a_receiver_that_is_down_gets_retries_with_backoff_then_a_dead_letter(
        pool: asyncpg.Pool, client: TestClient, hooks: WebhookReceiver, refusing_port: int) -> None:
    await _seed(pool)
    admin = await staff_token(pool, "admin1", "admin", None)
    down_url = f"http://127.0.0.1:{refusing_port}/nobody-listens"
    ids = {}
    for name, url in (("down", down_url), ("flaky", hooks.url("flaky"))):
        r = await client.post("/api/v1/webhooks", json={"url": url}, headers=admin)
        ids[name] = (await r.json())["id"]
        hooks.secrets[name] = (await r.json())["secret"]
    hooks.fail_first["flaky"] = 2  # answers 503 twice, then works
    from sonae.retry import CONNECT_FAILURES

    refused_before = CONNECT_FAILURES.labels("webhook")._value.get()
    async with running(pool, retry_base_s=0.1, max_attempts=4):
        c = await change(pool, "akutsu", None, 3)
        rows = await settled(pool, c.event_id, expect=2)
    states = {r["target_id"]: (r["state"], r["attempts"]) for r in rows}
    assert states == {ids["down"]: ("dead", 4), ids["flaky"]: ("sent", 3)}
    # every refused connection counted (the 503s are answers, not connection failures)
    assert CONNECT_FAILURES.labels("webhook")._value.get() - refused_before == 4
    assert hooks.seen["flaky"] == 3 and len(hooks.of("flaky")) == 1 and hooks.of("flaky")[0].signature_ok

    r = await client.get(f"/api/v1/webhooks/{ids['down']}/deliveries", params={"state": "dead"}, headers=admin)
    dead = (await r.json())["deliveries"]
    assert len(dead) == 1 and dead[0]["last_error"] and "Connect" in dead[0]["last_error"]
    attempts = dead[0]["log"]
    assert [a["attempt"] for a in attempts] == [1, 2, 3, 4]
    at = [datetime.fromisoformat(a["at"]) for a in attempts]
    gaps = [(b - a).total_seconds() for a, b in zip(at, at[1:], strict=False)]
    # exponential backoff: 0.1, 0.2, 0.4 s (±20 % jitter) at least
    assert all(g >= 0.1 * 2 ** i * 0.8 - 0.01 for i, g in enumerate(gaps)), gaps
    flaky = (await (await client.get(f"/api/v1/webhooks/{ids['flaky']}/deliveries", headers=admin)).json())
    assert [a["status"] for a in flaky["deliveries"][0]["log"]] == [503, 503, 204]


# -- the queue -----------------------------------------------------------------------------------------
async def test_the_queue_survives_a_restart_and_never_enqueues_twice(
        pool: asyncpg.Pool, client: TestClient, push: PushService) -> None:
    await _seed(pool)
    browsers = [push.browser() for _ in range(3)]
    for b in browsers:
        await subscribe(client, b, [{"municipality_code": KORIYAMA}], "ja-JP")
    # changes while no worker runs: they wait in the database
    c = await change(pool, "akutsu", None, 3)
    async with pool.acquire() as conn:
        first = await store.fan_out(conn, base_url="https://sonae.test")
        again = await store.fan_out(conn, base_url="https://sonae.test")
        assert first["push"] == 3 and again == {"push": 0, "webhook": 0, "email": 0, "events": 0}
        await conn.execute("UPDATE notify_cursor SET floor = 0")  # as if the pass had been lost: redo it
        assert (await store.fan_out(conn, base_url="https://sonae.test"))["push"] == 0  # unique key holds
        # a process took two messages and died while sending them: they are leased, not lost
        taken = await _claim(conn, 2, 0.3)
        assert len(taken) == 2
    async with running(pool):
        rows = await settled(pool, c.event_id, expect=3)
    assert all(r["state"] == "sent" for r in rows)
    assert sorted(r["attempts"] for r in rows) == [1, 2, 2]
    assert [len(b.received) for b in browsers] == [1, 1, 1]


async def test_fan_out_is_bounded_and_rate_limited_per_push_service(
        pool: asyncpg.Pool, client: TestClient) -> None:
    await _seed(pool)
    slow = PushService(delay_s=0.02)
    await slow.start()
    try:
        browsers = [slow.browser() for _ in range(40)]
        for b in browsers:
            await subscribe(client, b, [{"municipality_code": KORIYAMA}], "ja-JP")
        async with running(pool, concurrency=4, push_rate_per_s=40):
            c = await change(pool, "akutsu", None, 3)
            await settled(pool, c.event_id, expect=40)
        assert all(len(b.received) == 1 for b in browsers)
        # 40 messages, a burst of 40 allowed… so only the concurrency bound holds them back
        assert slow.max_in_flight <= 4
        assert not slow.errors, slow.errors
    finally:
        await slow.close()
    slower = PushService()
    await slower.start()
    try:
        browsers = [slower.browser() for _ in range(30)]
        for b in browsers:
            await subscribe(client, b, [{"municipality_code": FUKUSHIMA}], "ja-JP")
        async with running(pool, push_rate_per_s=10) as worker:
            # watch the worker's own bucket on its own clock: what it grants, and when
            buckets = worker._push_buckets
            granted: list[float] = []
            take = buckets.take

            def watched(key: str, now: float | None = None) -> float:
                now = time.monotonic() if now is None else now
                wait = take(key, now)
                if wait <= 0:
                    granted.append(now)
                return wait

            buckets.take = watched  # type: ignore[method-assign]
            c = await change(pool, "fukushima", None, 3)
            await settled(pool, c.event_id, expect=30)
        assert all(len(b.received) == 1 for b in browsers)
        # every push went out on a token of its own: none was sent on a refused take
        assert len(granted) == 30
        # a burst of 10, then 10 a second: no stretch of grants exceeds burst + rate × its length,
        # however slowly or quickly the machine ran them
        for i in range(len(granted)):
            for j in range(i, len(granted)):
                assert j - i + 1 <= 10 + 10 * (granted[j] - granted[i]) + 1e-6, (i, j, granted[j] - granted[i])
    finally:
        await slower.close()


# -- email ---------------------------------------------------------------------------------------------
async def test_on_call_staff_get_level_3_and_above_by_email(pool: asyncpg.Pool, client: TestClient) -> None:
    await _seed(pool)
    admin = await staff_token(pool, "admin1", "admin", None)
    kor1 = await staff_token(pool, "kor1", "staff", KORIYAMA)
    await staff_token(pool, "kor2", "staff", KORIYAMA)
    await staff_token(pool, "fks1", "staff", FUKUSHIMA)
    for user, body, who in (("kor1", {"email": "kor1@city.koriyama.example", "on_call": True}, kor1),
                            ("kor2", {"email": "kor2@city.koriyama.example", "on_call": False,
                                      "municipality_code": KORIYAMA}, admin),
                            ("fks1", {"email": "fks1@city.fukushima.example", "on_call": True, "lang": "en-US",
                                      "municipality_code": FUKUSHIMA}, admin)):
        r = await client.put(f"/api/v1/roster/{user}", json=body, headers=who)
        assert r.status == 200, await r.text()
    assert (await client.put("/api/v1/roster/kor2", json={"email": "x@example.jp"}, headers=kor1)).status == 403
    assert (await client.put("/api/v1/roster/nobody", json={"email": "x@example.jp", "municipality_code": KORIYAMA},
                             headers=admin)).status == 404
    roster = (await (await client.get("/api/v1/roster", headers=kor1)).json())["roster"]
    assert [(e["username"], e["on_call"]) for e in roster] == [("kor1", True), ("kor2", False)]

    sink = MailSink(free_port())
    sink.controller.start()
    try:
        async with running(pool, smtp_url=sink.url, smtp_from="sonae@pref.fukushima.example"):
            two = await change(pool, "akutsu", None, 2)
            await settled(pool, two.event_id, expect=0)
            three = await change(pool, "akutsu", 2, 3)
            await settled(pool, three.event_id, expect=1)
            await sink.wait_for(1)
            fks = await change(pool, "fukushima", None, 4, exercise=True)
            await settled(pool, fks.event_id, expect=1)
            await sink.wait_for(2)
    finally:
        sink.controller.stop()
    (rcpt1, msg1), (rcpt2, msg2) = sink.messages
    assert rcpt1 == ["kor1@city.koriyama.example"] and msg1["From"] == "sonae@pref.fukushima.example"
    assert "警戒レベル3" in MailSink.subject(msg1) and "阿久津" in MailSink.text(msg1)
    assert rcpt2 == ["fks1@city.fukushima.example"] and "[EXERCISE]" in MailSink.subject(msg2)
    assert "Alert level 4" in MailSink.subject(msg2)


async def test_a_roster_entry_is_in_its_account_s_own_municipality(pool: asyncpg.Pool, client: TestClient) -> None:
    """Found (a tester, as a prefecture admin): PUT /api/v1/roster/<a 郡山市 staff member> without a municipality
    answered 422 "required for an account without a municipality" (the admin's, not the staff member's), a 郡山市
    staff member could be put on 福島市's roster, and an unknown account got that 422 before its 404."""
    await _seed(pool)
    admin = await staff_token(pool, "pref-admin", "admin", None)
    kori_admin = await staff_token(pool, "kori-admin", "admin", KORIYAMA)
    await staff_token(pool, "kor1", "staff", KORIYAMA)
    pref_staff = await staff_token(pool, "pref1", "staff", None)
    r = await client.put("/api/v1/roster/kor1", json={"email": "kor1@city.koriyama.example"}, headers=admin)
    assert r.status == 200, await r.text()
    assert (await r.json())["municipality_code"] == KORIYAMA
    elsewhere = await client.put("/api/v1/roster/kor1", json={"email": "kor1@city.koriyama.example",
                                                              "municipality_code": FUKUSHIMA}, headers=admin)
    assert elsewhere.status == 422 and KORIYAMA in (await elsewhere.json())["detail"], await elsewhere.text()
    same = await client.put("/api/v1/roster/kor1", json={"email": "kor1@city.koriyama.example",
                                                         "municipality_code": KORIYAMA[:5]}, headers=kori_admin)
    assert same.status == 200, await same.text()
    for who in (admin, kori_admin):
        nobody = await client.put("/api/v1/roster/nobody", json={"email": "x@example.jp"}, headers=who)
        assert nobody.status == 404, await nobody.text()
    # a prefecture-wide account names the municipality whose roster it joins, within the caller's scope
    assert (await client.put("/api/v1/roster/pref1", json={"email": "p@pref.fukushima.example"},
                             headers=pref_staff)).status == 422
    chosen = await client.put("/api/v1/roster/pref1", json={"email": "p@pref.fukushima.example",
                                                            "municipality_code": FUKUSHIMA}, headers=pref_staff)
    assert chosen.status == 200 and (await chosen.json())["municipality_code"] == FUKUSHIMA, await chosen.text()
    async with pool.acquire() as conn:
        rows = dict(await conn.fetch("SELECT a.username, r.municipality_code FROM notify_roster r "
                                           "JOIN accounts a ON a.id = r.account_id"))
    assert rows == {"kor1": KORIYAMA, "pref1": FUKUSHIMA}


def test_a_circle_reaches_the_municipalities_it_touches() -> None:
    """``store.placed`` (the rule moved out of the API, issue #20): with boundaries, a circle's
    municipalities are those its rounded circle touches; without, they are left for the store's
    nearest-shelter rule."""
    from shapely.geometry import box

    from ingest.boundaries import Boundary, BoundaryIndex

    index = BoundaryIndex([Boundary("072036", "West", box(140.30, 37.30, 140.40, 37.50)),
                           Boundary("072010", "East", box(140.40, 37.30, 140.50, 37.50))])
    across = store.Area(lat=37.40004, lon=140.39504, radius_m=1000)  # ~440 m west of the line
    inside = store.Area(lat=37.4, lon=140.35, radius_m=1000)
    town = store.Area(municipality_code="072036")
    placed = store.placed([across, inside, town], index)
    assert placed[0].near_municipalities == ("072010", "072036")
    assert (placed[0].lat, placed[0].lon) == (37.4, 140.395)  # rounded as stored
    assert placed[1].near_municipalities == ("072036",)
    assert placed[2] == town.rounded()
    assert [a.near_municipalities for a in store.placed([across, inside], None)] == [None, None]
