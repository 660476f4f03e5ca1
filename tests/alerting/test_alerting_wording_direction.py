"""An alert's wording follows what the river did, never only the direction of the alert's last level change
(found by a break-it pass: a level lowered 4 → 3 by the trend rule that then reached 避難判断水位 read "the river
has begun to fall" although the river had just risen to the threshold).

The kind: the row's state (``de-escalated``: how its level last changed) and its reason (what holds the level
now) were combined into "falling" wherever a text is made from the row — CAP (:func:`alerting.cap.render_cap`),
Atom (:func:`alerting.cap.render_atom`), the level answer (:func:`alerting.level.guidance`) — while a same-level
re-check (kind ``re-evaluated``) had changed what holds the level: reached, not held while falling.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_atom, render_cap
from alerting.cap_identity import CapProfile
from alerting.level import guidance, level_in_force
from alerting.levels import ladder
from alerting.rules import RIVER, Reading, StationRules
from alerting.worker import RulesWorker
from ingest.contract import Reading as IngestReading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.config import Settings
from tests.alerting.cap_support import assert_valid_cap

PROFILE = CapProfile("wording-test", "sonae@sonae.test")
NS = {"c": CAP_NS}
ATOM = {"a": "http://www.w3.org/2005/Atom"}
#: 水防団待機 3.0, 氾濫注意 3.5, 避難判断 4.0, 氾濫危険 4.5 (m), every 600 s
GAUGE = Station(id="wording", name="Wording", river="阿武隈川", municipality_code="072036", th_standby=3.0,
                th_caution=3.5, th_evacuation=4.0, th_danger=4.5)
FALLING = {"ja-JP": "下がり始め", "en-US": "begun to fall", "ja-JP-x-easy": "へりはじめ"}
REACHED = {"ja-JP": "避難判断水位に達しました", "en-US": "reached the evacuation-judgement stage",
           "ja-JP-x-easy": "あぶなく なっています"}


async def _open(conn: asyncpg.Connection) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM alerts WHERE station_id = $1 AND condition = $2 AND cleared_at IS NULL",
                               GAUGE.id, RIVER)


async def _headlines(conn: asyncpg.Connection, alert_id: int) -> dict[str, str]:
    """What CAP, Atom and the level answer say of the alert, by channel and language."""
    alert = await store.get_alert(conn, alert_id)
    assert alert is not None
    xml = render_cap(alert, await store.messages_of(conn, alert_id), profile=PROFILE)
    assert_valid_cap(xml)
    out = {f"cap {i.findtext('c:language', namespaces=NS)}": i.findtext("c:headline", namespaces=NS) or ""
           for i in etree.fromstring(xml).findall("c:info", namespaces=NS)}
    feed = [x for x in await store.list_feed(conn) if x["id"] == alert_id]
    atom = etree.fromstring(render_atom(feed, base_url="https://sonae.test", profile=PROFILE))
    out["atom ja-JP"] = atom.findtext("a:entry/a:title", namespaces=ATOM) or ""
    answer = await level_in_force(conn, municipality=GAUGE.municipality_code)
    for lang in FALLING:
        said = guidance(answer, lang)
        assert said["alert_id"] == alert_id
        out[f"level {lang}"] = said["headline"]
    return out


async def test_a_level_lowered_by_the_trend_then_reached_is_worded_as_reached(pool: asyncpg.Pool,
                                                                              settings: Settings) -> None:
    """Level 4 at 4.60 m; an hour later the river is at 3.60 m and rising fast (0.72 m/h, 氾濫危険水位 4.5 m
    forecast within the hour): after the dwell the trend rule holds level 3 (4 → 3, de-escalated, forecast).
    Then 4.08 m: the river reached 避難判断水位 (a same-level re-check, reason threshold). It read "水位は下がり
    始めましたが…" in CAP, Atom and the level answer; it says reached, with that reading's stage."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        t0 = now - timedelta(minutes=105)
        minutes = [(0, 4.60), (61, 3.60), (71, 3.72), (81, 3.84), (91, 3.96)]
        await write_batch(conn, [IngestReading(GAUGE.id, "level", t0 + timedelta(minutes=m), v) for m, v in minutes])
        await worker.step(conn)
        lowered = await _open(conn)
        assert (lowered["level"], lowered["state"], lowered["reason"]) == (3, "de-escalated", "trend")
        forecast = await _headlines(conn, lowered["id"])
        assert not any(word in forecast[f"{ch} {lang}"] for lang, word in FALLING.items() for ch in ("cap", "level"))
        await write_batch(conn, [IngestReading(GAUGE.id, "level", t0 + timedelta(minutes=101), 4.08)])
        await worker.step(conn)
        reached = await _open(conn)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1",
                                    reached["id"])
        assert reached["id"] == lowered["id"] and (reached["level"], reached["state"]) == (3, "de-escalated")
        assert (event["kind"], event["value"], event["reading_ts"]) == ("re-evaluated", 4.08,
                                                                      t0 + timedelta(minutes=101))
        said = await _headlines(conn, reached["id"])
        cap = etree.fromstring(render_cap(await store.get_alert(conn, reached["id"]),  # type: ignore[arg-type]
                                          await store.messages_of(conn, reached["id"]), profile=PROFILE))
    for lang in FALLING:
        for channel in ("cap", "level"):
            assert FALLING[lang] not in said[f"{channel} {lang}"], (channel, lang, said)
            assert REACHED[lang] in said[f"{channel} {lang}"], (channel, lang, said)
    assert REACHED["ja-JP"] in said["atom ja-JP"] and FALLING["ja-JP"] not in said["atom ja-JP"]
    ja = next(i for i in cap.findall("c:info", namespaces=NS) if i.findtext("c:language", namespaces=NS) == "ja-JP")
    assert ja.findtext("c:description", namespaces=NS) == "水位 4.08 m / 基準 4.00 m"
    assert ja.findtext("c:certainty", namespaces=NS) == "Observed"


def test_a_level_above_3_is_never_lowered_as_forecast() -> None:
    """A crisis gauge (危険水位 3.0 m, 氾濫開始水位 4.0 m) at level 5 falls back to 2.96 m and rises fast: level 4
    is kept within the hysteresis of 危険水位 while the trend points up. The 5 → 4 step-down carried the reason
    ``trend`` — at level 4, "forecast to reach" the 危険水位 it holds, with CAP certainty Likely; the trend rule
    holds only a level 3."""
    steps = ladder("crisis", {"th_obs_start": 1.0, "th_crisis": 3.0, "th_overflow": 4.0})
    m = StationRules(steps)
    out = m.feed_all(Reading("level", 1.0e9 + 60 * t, v) for t, v in
                     [(0, 4.2), (61, 2.60), (71, 2.72), (81, 2.84), (91, 2.96)])
    (down,) = [t for t in out if t.old_level == 5]
    assert (down.new_level, down.reason, down.value) == (4, "threshold", 2.96)
