"""An alert's wording says what holds its level (found by a break-it pass: the reason and stage residents read did
not match what held the level).

The kind: a cause made up for a level that no transition of its own explains — a level judged again under new
thresholds (``alerting.worker.RulesWorker._judge_again``), a late-reading replay's net change
(``alerting.rules.reconcile`` and its fallback ``StationRules.standing``) — was taken from whatever held the level
at the end, with the newest stage, without checking that the stage showed it:

1. a level held by hysteresis after new thresholds read "避難判断水位に達しました 水位 4.05 m / 基準 4.06 m";
   a replay explained a rise (2 → 3) by the fall that ended it (up to 4, down to 3 after the dwell);
2. a level lowered by new thresholds kept ``REJUDGED`` as its reason, so a level 3 the trend rule holds was worded
   as 避難判断水位 reached;
3. a replay closed an unconfirmed alert with a bare ``re-evaluated``;
4. a threshold edit's re-evaluation was dated at the edit with an earlier reading's stage (and a resumed
   unconfirmed level had the registry change as its reason and the last accepted stage, not its suspect's).

(The fifth instance, the Atom summary of an alert first public after staff-only messages, is in
``test_alerting_atom_first_public``.)
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_cap
from alerting.cap_identity import CapProfile
from alerting.levels import Step, ladder
from alerting.rules import (
    CONFIRMED,
    HELD,
    IMPLAUSIBLE,
    RIVER,
    UNCONFIRMED,
    Reading,
    StationRules,
    Transition,
    reconcile,
)
from alerting.texts import LANGUAGES, REJUDGED, RESUMED, text_for
from alerting.worker import RulesWorker
from ingest.contract import Reading as IngestReading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.config import Settings
from tests.alerting.cap_support import assert_valid_cap

PROFILE = CapProfile("held-test", "sonae@sonae.test")
NS = {"c": CAP_NS}
#: 水防団待機 3.0, 氾濫注意 3.5, 避難判断 4.0, 氾濫危険 4.5 (m)
TH = {"th_standby": 3.0, "th_caution": 3.5, "th_evacuation": 4.0, "th_danger": 4.5}
GAUGE = Station(id="held", name="Held", river="阿武隈川", municipality_code="072036", th_standby=3.0, th_caution=3.5,
                th_evacuation=4.0, th_danger=4.5)  # every 600 s


def _steps(**changed: float) -> tuple[Step, ...]:
    return ladder("flood_forecast", {**TH, **changed})


def _feed(machine: StationRules, values: list[float], *, t0: float = 1.0e9) -> list[Transition]:
    return machine.feed_all(Reading("level", t0 + 600 * i, v) for i, v in enumerate(values))


async def _write(conn: asyncpg.Connection, points: list[tuple[datetime, float]]) -> None:
    await write_batch(conn, [IngestReading(GAUGE.id, "level", ts, v) for ts, v in points])


async def _open(conn: asyncpg.Connection, condition: str = RIVER) -> asyncpg.Record:
    return await conn.fetchrow("SELECT * FROM alerts WHERE station_id = $1 AND condition = $2 AND cleared_at IS NULL",
                               GAUGE.id, condition)


async def _cap(conn: asyncpg.Connection, alert_id: int) -> dict[str, etree._Element]:
    alert = await store.get_alert(conn, alert_id)
    assert alert is not None
    xml = render_cap(alert, await store.messages_of(conn, alert_id), profile=PROFILE)
    assert_valid_cap(xml)
    return {i.findtext("c:language", namespaces=NS): i for i in etree.fromstring(xml).findall("c:info", namespaces=NS)}


async def _told_at_a_reading(conn: asyncpg.Connection, event: asyncpg.Record) -> bool:
    """The event's time and stage are those of one stored reading."""
    return bool(await conn.fetchval("SELECT count(*) FROM readings WHERE station_id = $1 AND kind = 'level' "
                                    "AND ts = $2 AND value = $3", GAUGE.id, event["reading_ts"], event["value"]))


# -- the rules (pure) ----------------------------------------------------------------------------------------------
def test_a_level_held_by_hysteresis_stands_by_the_reading_that_reached_it() -> None:
    """Reached 4.06 m at 4.10 m, held at 4.05 m (within the hysteresis): told by 4.10 m, never "reached" at 4.05 m."""
    m = StationRules(_steps(th_evacuation=4.06))
    _feed(m, [3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1, 4.05])
    (held,) = m.standing()
    assert (held.new_level, held.reason, held.ts, held.value, held.threshold) == (3, "threshold", 1.0e9 + 3600, 4.1, 4.06)
    # at or above the threshold again: the newest reading shows it
    m.feed(Reading("level", 1.0e9 + 4800, 4.07))
    assert [(t.value, t.reason) for t in m.standing()] == [(4.07, "threshold")]


def test_a_level_the_river_fell_to_stands_as_held_while_it_falls() -> None:
    m = StationRules(_steps())
    out = _feed(m, [3.6, 4.6, 3.95, 3.95, 3.95, 3.95])
    assert [(t.old_level, t.new_level) for t in out][-1] == (4, 3)
    (held,) = m.standing()
    assert (held.new_level, held.reason, held.value, held.threshold) == (3, HELD, 3.95, 4.0)
    # a state stored before causes were kept, with its stage below the level's threshold: held, not reached
    old = m.to_json()
    old.pop("cause")
    (legacy,) = StationRules(_steps(), state=old).standing()
    assert (legacy.reason, legacy.value) == (HELD, 3.95)


def test_a_replayed_rise_is_never_explained_by_a_fall() -> None:
    """Live at 2 (3.95 m is below 避難判断水位); a late 4.60 m raises 4 in the replay, which falls back to 3 after the
    dwell (3.95 m is within the hysteresis of 4.0 m). The net rise 2 → 3 was explained by that fall: "reached
    避難判断水位 at 3.95 m". It is the rise that reached it, at 4.60 m."""
    live, replay = StationRules(_steps()), StationRules(_steps())
    on_time = [(0, 3.9), (600, 3.9), (1800, 3.95), (2400, 3.95), (3000, 3.95), (3600, 3.95)]
    live.feed_all(Reading("level", float(t), v) for t, v in on_time)
    decided = replay.feed_all(Reading("level", float(t), v) for t, v in sorted([*on_time, (1200, 4.6)]))
    assert live.open_conditions() == {RIVER: 2} and replay.open_conditions() == {RIVER: 3}
    (net,) = reconcile(live.open_conditions(), replay.open_conditions(), ts=3600.0, decided=decided,
                       ended=replay.standing())
    assert (net.old_level, net.new_level, net.reason, net.ts, net.value, net.threshold) == (
        2, 3, "threshold", 1200.0, 4.6, 4.0)
    # from a checkpoint after the rise (no rise replayed): held while the river falls, not reached
    (held,) = reconcile(live.open_conditions(), replay.open_conditions(), ts=3600.0, decided=decided[-1:],
                        ended=replay.standing())
    assert (held.reason, held.value) == (HELD, 3.95)


def test_a_replay_never_closes_an_unconfirmed_alert_bare() -> None:
    """A 4.75 m reading 10 minutes after 3.0 m is suspect (an unconfirmed level 4); late readings in between show a
    real, fast rise: the replay closes it as confirmed, at that reading — not ``re-evaluated`` without a stage."""
    live, replay = StationRules(_steps()), StationRules(_steps())
    on_time = [(0, 3.0), (600, 3.0), (1200, 4.75)]
    live.feed_all(Reading("level", float(t), v) for t, v in on_time)
    assert live.open_conditions() == {RIVER: 1, UNCONFIRMED: 4}
    late = [(660 + 60 * i, 3.0 + 0.25 * (i + 1)) for i in range(6)]  # 3.25 … 4.50, one a minute
    decided = replay.feed_all(Reading("level", float(t), v) for t, v in sorted([*on_time, *late]))
    ended = [*replay.standing(), *replay.settled(live.state.pending, live.state.unconfirmed)]
    nets = {t.condition: t for t in reconcile(live.open_conditions(), replay.open_conditions(), ts=1200.0,
                                             decided=decided, ended=ended)}
    closed = nets[UNCONFIRMED]
    assert (closed.new_level, closed.reason, closed.ts, closed.value, closed.threshold) == (None, CONFIRMED, 1200.0,
                                                                                           4.75, 4.5)
    assert nets[RIVER].new_level == 4


def test_held_texts_in_every_language() -> None:
    for lang in LANGUAGES:
        for level in (1, 2, 3, 4, 5):
            t = text_for("river_level", level, lang, reason=HELD)
            assert t.headline and t.instruction and t.event
            assert "達しました" not in t.headline and "reached" not in t.headline
        # a level 3 the trend rule holds is forecast, also when new thresholds lowered it to 3 (de-escalated)
        assert text_for("river_level", 3, lang, reason="trend", falling=True) == text_for("river_level", 3, lang,
                                                                                           reason="trend")
    assert "下がり始め" in text_for("river_level", 3, "ja-JP", reason=HELD).headline
    assert "fall" in text_for("river_level", 1, "en-US", reason=HELD).headline
    assert "へりはじめ" in text_for("river_level", 4, "ja-JP-x-easy", reason=HELD).headline


# -- through the worker --------------------------------------------------------------------------------------------
async def test_new_thresholds_never_word_a_held_level_as_reached(pool: asyncpg.Pool, settings: Settings) -> None:
    """避難判断水位 raised from 4.00 m to 4.06 m while the gauge reads 4.05 m after 4.10 m: the alert read
    "避難判断水位に達しました 水位 4.05 m / 基準 4.06 m", dated at the edit. It is told by the reading that reached
    4.06 m (4.10 m), at that reading's time."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        values = [3.5, 3.6, 3.7, 3.8, 3.9, 4.0, 4.1, 4.05]
        start = now - timedelta(minutes=5 + 10 * (len(values) - 1))
        await _write(conn, [(start + timedelta(minutes=10 * i), v) for i, v in enumerate(values)])
        await worker.step(conn)
        before = await _open(conn)
        assert (before["level"], before["reason"], before["threshold"]) == (3, "threshold", 4.0)
        await upsert_stations(conn, [replace(GAUGE, th_evacuation=4.06)])
        await worker.follow_registry(conn)
        after = await _open(conn)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1",
                                    after["id"])
        assert after["id"] == before["id"] and after["level"] == 3
        assert (after["reason"], after["value"], after["threshold"]) == ("threshold", 4.1, 4.06)
        assert after["value"] >= after["threshold"]
        assert event["kind"] == "re-evaluated" and event["note"] == REJUDGED
        assert after["changed_at"] == event["reading_ts"] == start + timedelta(minutes=60)
        assert await _told_at_a_reading(conn, event)
        infos = await _cap(conn, after["id"])
    assert infos["ja-JP"].findtext("c:description", namespaces=NS) == "水位 4.10 m / 基準 4.06 m"


async def test_a_level_lowered_by_new_thresholds_says_what_holds_it(pool: asyncpg.Pool, settings: Settings) -> None:
    """Level 4 at 5.50 m (氾濫危険水位 5.45 m); the thresholds are raised (避難判断 6.1 m, 氾濫危険 6.2 m) and the trend
    rule holds level 3 (6.20 m forecast within the hour). The alert kept ``REJUDGED`` as its reason and read
    "避難判断水位に達しました 水位 5.50 m / 基準 6.10 m"; it is forecast, with 6.20 m, at the reading that shows it."""
    worker = RulesWorker.from_settings(settings, pool)
    gauge = replace(GAUGE, th_standby=3.0, th_caution=4.5, th_evacuation=5.4, th_danger=5.45)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [gauge])
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        points = [(now - timedelta(minutes=45 - 10 * i), v) for i, v in enumerate([4.97, 5.10, 5.23, 5.37, 5.50])]
        await _write(conn, points)
        await worker.step(conn)
        assert (await _open(conn))["level"] == 4
        await upsert_stations(conn, [replace(gauge, th_caution=6.0, th_evacuation=6.1, th_danger=6.2)])
        await worker.follow_registry(conn)
        after = await _open(conn)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1",
                                    after["id"])
        assert (after["level"], after["state"], after["reason"], after["threshold"]) == (3, "de-escalated", "trend", 6.2)
        assert (event["kind"], event["reason"], event["note"]) == ("de-escalated", "trend", REJUDGED)
        assert (event["reading_ts"], event["value"]) == points[-1] and await _told_at_a_reading(conn, event)
        infos = await _cap(conn, after["id"])
    ja = infos["ja-JP"]
    assert "見込み" in ja.findtext("c:headline", namespaces=NS)
    assert "下がり始め" not in ja.findtext("c:headline", namespaces=NS)  # the river did not fall: the ladder moved
    assert ja.findtext("c:certainty", namespaces=NS) == "Likely"
    assert ja.findtext("c:description", namespaces=NS) == "水位 5.50 m / 基準 6.20 m / 氾濫危険水位への到達が見込まれます"
    assert "forecast" in infos["en-US"].findtext("c:headline", namespaces=NS)


async def test_a_replay_closes_an_unconfirmed_alert_as_the_rules_would(pool: asyncpg.Pool, settings: Settings) -> None:
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        t0: datetime = await conn.fetchval("SELECT date_trunc('minute', now()) - interval '40 minutes'")
        await _write(conn, [(t0, 3.0), (t0 + timedelta(minutes=10), 3.0), (t0 + timedelta(minutes=20), 4.75)])
        await worker.step(conn)
        suspect = await _open(conn, UNCONFIRMED)
        assert suspect is not None and suspect["level"] == 4
        await _write(conn, [(t0 + timedelta(minutes=11 + i), 3.0 + 0.25 * (i + 1)) for i in range(6)])
        await worker.step(conn)
        ended = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1 ORDER BY id DESC LIMIT 1",
                                    suspect["id"])
        river = await _open(conn)
    assert (ended["kind"], ended["reason"], ended["value"], ended["reading_ts"]) == (
        "cleared", CONFIRMED, 4.75, t0 + timedelta(minutes=20))
    assert river["level"] == 4


async def test_new_thresholds_that_take_a_level_below_the_public_ones_withdraw_it(pool: asyncpg.Pool,
                                                                                  settings: Settings) -> None:
    """氾濫注意水位 raised from 3.5 m to 3.7 m: under it the river reached 3.8 m and fell back to 3.5 m for half an
    hour, so 水防団待機 stands, held while the river falls. Residents' alert is withdrawn by the new thresholds (not
    an all-clear), and staff's standby alert says what holds it: held while the river falls, at the reading that
    lowered it."""
    worker = RulesWorker.from_settings(settings, pool)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        points = [(now - timedelta(minutes=45 - 10 * i), v) for i, v in enumerate([3.8, 3.5, 3.5, 3.5, 3.5])]
        await _write(conn, points)
        await worker.step(conn)
        public = await _open(conn)
        assert (public["level"], public["audience"]) == (2, "public")
        await upsert_stations(conn, [replace(GAUGE, th_caution=3.7)])
        await worker.follow_registry(conn)
        ended = await conn.fetchrow("SELECT * FROM alerts WHERE id = $1", public["id"])
        staff = await _open(conn)
        staff_event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1", staff["id"])
    assert (ended["state"], ended["reason"]) == ("cleared", REJUDGED)
    assert (staff["level"], staff["audience"], staff["reason"], staff["value"], staff["threshold"]) == (
        1, "staff", HELD, 3.5, 3.0)
    assert (staff_event["reading_ts"], staff_event["value"]) == points[-1]
    assert "下がり始め" in text_for("river_level", 1, "ja-JP", reason=staff["reason"]).headline


async def test_a_station_real_again_tells_its_unconfirmed_level_by_its_suspect_reading(
        pool: asyncpg.Pool, settings: Settings) -> None:
    """Switched to exercise and back to real while a 4.75 m reading after 3.0 m awaited confirmation: the resumed
    unconfirmed level had reason ``RESUMED`` and the stage of the last accepted reading (3.0 m), dated at the
    switch. It is beyond the plausible rate, at the suspect reading."""
    worker = RulesWorker.from_settings(settings, pool, exercise_grace_s=0)
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE])
        now: datetime = await conn.fetchval("SELECT date_trunc('second', now())")
        points = [(now - timedelta(minutes=25), 3.0), (now - timedelta(minutes=15), 3.0),
                  (now - timedelta(minutes=5), 4.75)]
        await _write(conn, points)
        await worker.step(conn)
        assert (await _open(conn, UNCONFIRMED))["level"] == 4
        await upsert_stations(conn, [replace(GAUGE, exercise=True)])
        await worker.follow_registry(conn)
        assert await _open(conn, UNCONFIRMED) is None
        await upsert_stations(conn, [GAUGE])
        await worker.follow_registry(conn)
        again = await _open(conn, UNCONFIRMED)
        event = await conn.fetchrow("SELECT * FROM alert_events WHERE alert_id = $1", again["id"])
    assert (again["level"], again["reason"], again["value"], again["threshold"]) == (4, IMPLAUSIBLE, 4.75, 4.5)
    assert (event["reading_ts"], event["value"], event["note"]) == (*points[-1], RESUMED)
