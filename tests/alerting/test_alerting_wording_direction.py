"""An alert's wording follows what the river did, never only the direction of the alert's last level change
(found by a break-it pass: a level lowered 4 → 3 by the trend rule that then reached 避難判断水位 read "the river
has begun to fall" although the river had just risen to the threshold).

The kind: the row's state (``de-escalated``: how its level last changed) and its reason (what holds the level
now) were combined into "falling" wherever a text is made from the row — CAP (:func:`alerting.cap.render_cap`),
Atom (:func:`alerting.cap.render_atom`), the level answer (:func:`alerting.level.guidance`) — while a same-level
re-check (kind ``re-evaluated``) had changed what holds the level: reached, not held while falling.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, cap_time, render_atom, render_cap
from alerting.cap_identity import CapProfile
from alerting.level import guidance, level_in_force
from alerting.levels import ladder
from alerting.rules import HELD, RIVER, STEPPED_DOWN, Reading, StationRules
from alerting.store import alert_json
from alerting.worker import RulesWorker
from ingest.contract import Reading as IngestReading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from ngsi.store import alert_description
from notify.messages import push_payload
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


async def _stepped_down_by_time(conn: asyncpg.Connection, worker: RulesWorker) -> tuple[datetime, datetime]:
    """Level 3 at 4.10 m, then two readings below it (3.60 m, 3.55 m) and silence; the worker's tick lowers the
    level to 2 by time, 30 minutes after the first reading below and one interval after the last. Returns
    (``t0``, the first reading's time; ``due``, the tick's)."""
    await upsert_stations(conn, [GAUGE])
    now: datetime = await conn.fetchval("SELECT date_trunc('minute', now())")
    t0 = now - timedelta(hours=3)
    await write_batch(conn, [IngestReading(GAUGE.id, "level", t0 + timedelta(minutes=m), v)
                             for m, v in [(0, 4.0), (10, 4.10), (20, 3.60), (30, 3.55)]])
    await worker.step(conn)
    assert (await _open(conn))["level"] == 3
    due = t0 + timedelta(minutes=20 + 30 + 10)  # the dwell from the first reading below, then one interval
    assert await worker.tick(conn, now=due) == 1
    return t0, due


async def test_a_step_down_by_time_says_why_and_dates_its_last_reading(pool: asyncpg.Pool,
                                                                       settings: Settings) -> None:
    """Level 3 at 4.10 m, then two readings below it (3.60 m, 3.55 m) and silence. 30 minutes after the first
    reading below and one interval after the last, the worker's tick lowers the level to 2. That change was dated
    at the tick with the 3.55 m of a reading 20 minutes earlier, and read "the river has begun to fall". It says the
    level was lowered because the river stayed below the threshold for 30 minutes with no newer reading, dated
    when it applied, with 3.55 m as the last reading and that reading's time — in CAP, Atom, push and the level
    answer, in every language."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        t0, due = await _stepped_down_by_time(conn, worker)
        lowered = await _open(conn)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1",
                                    lowered["id"])
        last = t0 + timedelta(minutes=30)
        assert (lowered["level"], lowered["state"], lowered["reason"]) == (2, "de-escalated", STEPPED_DOWN)
        assert (lowered["changed_at"], lowered["value"], lowered["value_at"], lowered["dwell_s"]) == (
            due, 3.55, last, 1800.0)
        assert (event["kind"], event["reading_ts"], event["value"], event["reason"]) == ("de-escalated", due, 3.55,
                                                                                       STEPPED_DOWN)
        said = await _headlines(conn, lowered["id"])
        alert = await store.get_alert(conn, lowered["id"])
        assert alert is not None
        cap = etree.fromstring(render_cap(alert, await store.messages_of(conn, lowered["id"]), profile=PROFILE))
        at_event = await store.alert_at_event(conn, event["id"])
        assert at_event is not None
        told = {"id": event["id"], "kind": event["kind"], "level": event["level"], "old_level": event["old_level"],
                "reason": event["reason"], "actor": event["actor"], "recorded_at": event["recorded_at"]}
        pushed = {lang: push_payload(at_event, told, lang, "https://sonae.test") for lang in FALLING}
        api = alert_json(alert)
    assert (api["reason"], api["value_at"], api["dwell_s"]) == (STEPPED_DOWN, last.isoformat().replace("+00:00", "Z"),
                                                                1800.0)
    period = {"ja-JP": "30分にわたり基準を下回ったまま", "en-US": "stayed below the threshold for 30 minutes",
              "ja-JP-x-easy": "30ぷん ひくい ままでした"}
    jst = last.astimezone(ZoneInfo("Asia/Tokyo"))
    stage = {"ja-JP": f"最後の観測: {jst.month}月{jst.day}日 {jst.hour}時{jst.minute:02d}分 水位 3.55 m",
             "en-US": f"Last reading: 3.55 m at {jst:%H:%M} JST",
             "ja-JP-x-easy": "さいごに はかった かわの みずの たかさ: 3.55 m"}
    infos = {i.findtext("c:language", namespaces=NS): i for i in cap.findall("c:info", namespaces=NS)}
    for lang in FALLING:
        for text in (said[f"cap {lang}"], said[f"level {lang}"], pushed[lang]["body"]):
            assert FALLING[lang] not in text and period[lang] in text, (lang, text)
        assert stage[lang] in (infos[lang].findtext("c:description", namespaces=NS) or ""), lang
        assert stage[lang] in said[f"level {lang}"] and stage[lang] in pushed[lang]["body"], lang
        assert infos[lang].findtext("c:effective", namespaces=NS) == cap_time(due)  # when it applied
    assert "引き下げ" in said["atom ja-JP"] and FALLING["ja-JP"] not in said["atom ja-JP"]
    assert period["ja-JP"] in alert_description(alert)  # the NGSI-LD Alert's description (its CAP headline)


async def test_the_standby_alert_a_fall_leaves_for_staff_says_the_river_fell(pool: asyncpg.Pool,
                                                                             settings: Settings) -> None:
    """Level 2 at 3.60 m, then 3.30 m for half an hour: the public alert ends and a staff-only standby alert goes on
    (``alerting.store._leave_public``). Raised afresh (state ``raised``) with reason ``threshold``, it read "水防団待機
    水位に達しました" — reached, although the river had fallen to it. It is held while the river falls."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        values = [3.60, 3.30, 3.30, 3.30, 3.30]
        await write_batch(conn, [IngestReading(GAUGE.id, "level", now - timedelta(minutes=45 - 10 * i), v)
                                 for i, v in enumerate(values)])
        await worker.step(conn)
        staff = await _open(conn)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1", staff["id"])
        alert = await store.get_alert(conn, staff["id"])
        assert alert is not None
        cap = etree.fromstring(render_cap(alert, await store.messages_of(conn, staff["id"]), profile=PROFILE))
    assert (staff["level"], staff["audience"], staff["state"]) == (1, "staff", "raised")
    assert (staff["reason"], event["reason"], event["value"]) == (HELD, HELD, 3.30)
    for info in cap.findall("c:info", namespaces=NS):
        lang = info.findtext("c:language", namespaces=NS) or ""
        headline = info.findtext("c:headline", namespaces=NS) or ""
        assert FALLING[lang] in headline and "達しました" not in headline and "reached" not in headline, headline


async def test_a_level_the_river_fell_to_and_rose_back_to_reach_is_worded_as_reached(pool: asyncpg.Pool,
                                                                                    settings: Settings) -> None:
    """Level 4 at 4.60 m; the river falls to 3.95 m (within the hysteresis of 避難判断水位 4.0 m) and after the dwell
    level 3 stands, held while the river falls. Then it rises to 4.20 m: it reached 避難判断水位 again, but with no
    change of level nothing was told and the alert kept reading "水位は下がり始めましたが…". It says reached."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        t0 = now - timedelta(minutes=75)
        values = [4.60, 3.95, 3.95, 3.95, 3.95]
        await write_batch(conn, [IngestReading(GAUGE.id, "level", t0 + timedelta(minutes=10 * i), v)
                                 for i, v in enumerate(values)])
        await worker.step(conn)
        held = await _open(conn)
        assert (held["level"], held["state"], held["value"]) == (3, "de-escalated", 3.95)
        assert FALLING["ja-JP"] in (await _headlines(conn, held["id"]))["cap ja-JP"]
        await write_batch(conn, [IngestReading(GAUGE.id, "level", t0 + timedelta(minutes=60), 4.20)])
        await worker.step(conn)
        reached = await _open(conn)
        said = await _headlines(conn, reached["id"])
    assert (reached["id"], reached["level"], reached["value"]) == (held["id"], 3, 4.20)
    for lang in FALLING:
        for channel in ("cap", "level"):
            assert FALLING[lang] not in said[f"{channel} {lang}"] and REACHED[lang] in said[f"{channel} {lang}"], (
                channel, lang, said)
    # still falling, or back within the level: nothing more is told
    m = StationRules(ladder("flood_forecast", {"th_standby": 3.0, "th_caution": 3.5, "th_evacuation": 4.0,
                                              "th_danger": 4.5}))
    out = m.feed_all(Reading("level", 600.0 * i, v) for i, v in enumerate([4.6, 4.2, 4.2, 4.15, 4.1, 4.05]))
    assert [(t.old_level, t.new_level, t.reason) for t in out] == [(None, 4, "threshold"), (4, 3, "threshold")]


async def test_a_moved_alert_is_told_by_what_holds_its_level(pool: asyncpg.Pool, settings: Settings) -> None:
    """Level 3 held while the river falls (4.60 m, then 3.95 m for half an hour); the gauge is registered in
    another municipality and the alert moves with it (event ``moved``, pushed to the new municipality). The push
    was worded by the move's reason, and so as the stage reached: "避難判断水位に達しました". It says the river has
    begun to fall, as CAP and the level answer do."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        values = [4.60, 3.95, 3.95, 3.95, 3.95]
        await write_batch(conn, [IngestReading(GAUGE.id, "level", now - timedelta(minutes=45 - 10 * i), v)
                                 for i, v in enumerate(values)])
        await worker.step(conn)
        held = await _open(conn)
        assert (held["level"], held["state"]) == (3, "de-escalated")
        await upsert_stations(conn, [replace(GAUGE, municipality_code="072010")])
        await worker.follow_registry(conn)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1",
                                    held["id"])
        assert event["kind"] == "moved"
        at_event = await store.alert_at_event(conn, event["id"])
        assert at_event is not None
    told = {"id": event["id"], "kind": event["kind"], "level": event["level"], "old_level": event["old_level"],
            "reason": event["reason"], "actor": event["actor"], "recorded_at": event["recorded_at"]}
    for lang in FALLING:
        body = push_payload(at_event, told, lang, "https://sonae.test")["body"]
        assert FALLING[lang] in body and REACHED[lang] not in body, (lang, body)
async def test_a_reading_after_a_step_down_by_time_ends_none_since(pool: asyncpg.Pool, settings: Settings) -> None:
    """After a step-down by time (level 3 -> 2, "last reading 3.55 m at …, none since"), the gauge reports again:
    3.52 m, still level 2. The alert kept saying the 3.55 m was the last reading and that there was none since, in
    CAP, push and the level answer, while newer readings came in. The reading that holds the level now tells it."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        _, due = await _stepped_down_by_time(conn, worker)
        assert (await _open(conn))["reason"] == STEPPED_DOWN
        await write_batch(conn, [IngestReading(GAUGE.id, "level", due + timedelta(minutes=5), 3.52)])
        await worker.step(conn)
        again = await _open(conn)
        assert again["level"] == 2
        said = await _headlines(conn, again["id"])
    assert again["value_at"] is None and again["value"] == 3.52, dict(again)
    for lang, none_since in {"ja-JP": "その後の観測はありません", "en-US": "none since",
                             "ja-JP-x-easy": "そのあと はかって いません"}.items():
        assert none_since not in said[f"cap {lang}"] and none_since not in said[f"level {lang}"], said
