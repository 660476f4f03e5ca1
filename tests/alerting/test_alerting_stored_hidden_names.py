"""Station names stored before the name rule (``sonae.nametext``) may still hold characters that show nothing or
reorder what is shown: a right-to-left override, a zero-width space, a Hangul filler. They reached CAP, the Atom
feed, Web Push and webhook headlines as they were stored (found: a row written before the rule, or by SQL, put
'厚東川 持世\u202e寺' into a CAP headline, shown reversed).

The rule (``alerting.store``, where every alert read from the database takes its station's and municipality's
names; ``sonae.nametext.shown_text``): the names an alert carries are the shown text of the stored ones —
invisible and reordering characters dropped, line breaks and controls a space — so every output built from an
alert (CAP, Atom, push, webhooks, SSE, MQTT, the level page) shows what the name shows."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, place_name, render_atom, render_cap
from alerting.cap_identity import CapProfile
from alerting.worker import RulesWorker
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from notify import messages
from sonae.config import Settings
from sonae.nametext import hidden_character, shown_text

GAUGE = Station(id="gauge", name="持世寺", river="厚東川", municipality_code="072036", th_standby=3.80,
                th_caution=5.00, th_evacuation=5.10, th_danger=5.50)
HIDDEN = {"name": "持世\u202e寺\u200b", "name_en": "Jisei\u2066ji\u3164", "river": "厚東\u200d川\n"}


def test_shown_text_keeps_what_shows_and_drops_what_does_not() -> None:
    assert shown_text("持世\u202e寺\u200b") == "持世寺"
    assert shown_text("a\tb\u2028c") == "a b c"
    assert shown_text("葛\U000e0100城") == "葛\U000e0100城"  # an ideographic variation sequence is kept
    assert shown_text("\u3164\ufe0f") == ""
    for text in HIDDEN.values():
        assert hidden_character(shown_text(text)) is None


async def test_names_stored_before_the_rule_reach_no_alert_output_with_hidden_characters(
        pool: asyncpg.Pool, settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        # a row of before the rule (the registry's load rules now refuse these names)
        await conn.execute("UPDATE stations SET name = $1, name_en = $2, river = $3 WHERE id = 'gauge'",
                           HIDDEN["name"], HIDDEN["name_en"], HIDDEN["river"])
        now: datetime = await conn.fetchval("SELECT now()")
        await write_batch(conn, [Reading("gauge", "level", now - timedelta(minutes=30 - 10 * i), v)
                                 for i, v in enumerate([5.20, 5.22, 5.25])])
        await worker.step(conn)
        alert_id = await conn.fetchval("SELECT id FROM alerts WHERE station_id = 'gauge'")
        alert = await store.get_alert(conn, alert_id)
        feed = await store.list_feed(conn)
        events = await store.events_after(conn, 0)
        previous = await store.messages_of(conn, alert_id)
    assert alert is not None
    profile = CapProfile("t", "bousai@{municipality}.example")
    cap = etree.fromstring(render_cap(alert, previous, profile=profile))
    atom = render_atom(feed, base_url="https://sonae.test", profile=profile)
    event = {"kind": "raised", "level": 3, "old_level": None, "id": events[-1]["event_id"], "actor": "rules",
             "recorded_at": now}
    pushed = [messages.push_payload(alert, event, lang, "https://sonae.test") for lang in ("ja-JP", "en-US")]
    texts = [place_name(alert), place_name(alert, lang="en-US"), etree.tostring(cap, encoding="unicode"),
             atom if isinstance(atom, str) else atom.decode(), str(pushed), str(messages.webhook_json(alert, event,
                                                                                                    "https://sonae.test"))]
    texts += [str(e.get("station_name")) + str(e.get("river")) for e in events]
    for text in texts:
        assert all(ch not in text for ch in "\u202e\u200b\u2066\u3164\u200d"), text
    assert place_name(alert) == "厚東川 持世寺" and cap.find(f".//{{{CAP_NS}}}headline") is not None
