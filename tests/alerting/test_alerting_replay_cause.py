"""A late-reading replay's net change carries the time AND the stage of the reading that decided it, and a level
lowered because its reading turned out to be a spike is withdrawn as a spike (alerting.rules.reconcile)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from lxml import etree

from alerting import store
from alerting.cap import CAP_NS, render_cap
from alerting.cap_identity import CapProfile
from alerting.levels import ladder
from alerting.rules import RIVER, SPIKE, UNCONFIRMED, Reading, StationRules, reconcile
from ingest.contract import Reading as IngestReading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from tests.alerting.support import events_of, running_worker
from tests.ingest_support import wait_until

PROFILE = CapProfile("replay-test", "sonae@sonae.test")
#: 水防団待機 3.0, 氾濫注意 4.5, 避難判断 5.4, 氾濫危険 6.4
TH = {"th_standby": 3.0, "th_caution": 4.5, "th_evacuation": 5.4, "th_danger": 6.4}
#: seconds after 18:59 of the on-time readings and their stages (m): standby from 18:19, a rise too slow for the
#: trend rule (氾濫危険水位 not forecast within the hour)
ON_TIME = [(-2400, 3.3), (-1200, 3.6), (0, 3.8), (600, 3.9), (1232, 4.0), (1802, 4.2)]  # … 19:19:32, 19:29:02
RAISE = (1478, 4.5)  # 19:24:38, late
MAKE_SPIKE = [(1441, 4.05), (1510, 4.05)]  # 19:24:00 and 19:25:10, late


async def _write(pool: asyncpg.Pool, t0: datetime, pairs: list[tuple[int, float]]) -> None:
    async with pool.acquire() as conn:
        await write_batch(conn, [IngestReading("bk-r", "level", t0 + timedelta(seconds=s), v) for s, v in pairs])


async def test_replayed_changes_carry_the_time_and_stage_of_their_reading_and_a_spike_is_withdrawn(
        pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [Station(id="bk-r", name="BK-R", municipality_code="072036", **TH)])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)

    async def events(n: int) -> bool:
        return len(await events_of(pool, "bk-r")) >= n

    async with running_worker(pool):
        await _write(pool, t0, ON_TIME)
        await wait_until(lambda: events(1), what="standby raised")
        await _write(pool, t0, [RAISE])
        await wait_until(lambda: events(2), what="level 2 from the late reading")
        raised = (await events_of(pool, "bk-r"))[-1]
        assert (raised["kind"], raised["level"], raised["reason"]) == ("escalated", 2, "threshold")
        # dated at the reading that reached 氾濫注意水位, with its stage: not 19:29:02, when the gauge read 4.2
        assert (raised["reading_ts"], raised["value"]) == (t0 + timedelta(seconds=RAISE[0]), RAISE[1])
        await _write(pool, t0, MAKE_SPIKE)
        await wait_until(lambda: events(4), what="the public alert's end")
    ended, staff = (await events_of(pool, "bk-r"))[-2:]
    spike_ts = t0 + timedelta(seconds=MAKE_SPIKE[1][0])
    # withdrawn as a spike, at the reading that showed it and with its stage: not "threshold", 3.30 m at 19:29:02
    assert (ended["kind"], ended["reason"], ended["reading_ts"], ended["value"]) == ("cleared", SPIKE, spike_ts, 4.05)
    assert (staff["kind"], staff["level"], staff["reason"], staff["reading_ts"], staff["value"]) == (
        "raised", 1, SPIKE, spike_ts, 4.05)
    async with pool.acquire() as conn:
        alert = await store.get_alert(conn, ended["alert_id"])
        assert alert is not None and alert["changed_at"] == spike_ts
        cap = etree.fromstring(render_cap(alert, await store.messages_of(conn, alert["id"]), profile=PROFILE))
        audit = await conn.fetchval("SELECT action FROM audit_log WHERE object_type = 'alert' AND object_id = $1 ORDER BY id DESC LIMIT 1",
                                    str(alert["id"]))
    assert audit == "alert.withdrawn"
    for info in cap.iter(f"{{{CAP_NS}}}info"):
        assert info.findtext(f"{{{CAP_NS}}}responseType") == "Monitor"  # withdrawn, not an all-clear
        assert "4.05" in (info.findtext(f"{{{CAP_NS}}}description") or "")
        assert "3.30" not in (info.findtext(f"{{{CAP_NS}}}description") or "")
    headlines = {info.findtext(f"{{{CAP_NS}}}language"): info.findtext(f"{{{CAP_NS}}}headline")
                 for info in cap.iter(f"{{{CAP_NS}}}info")}
    assert "異常値" in headlines["ja-JP"] and "spike" in headlines["en-US"] and "まちがって" in headlines["ja-JP-x-easy"]


def test_reconcile_of_a_whole_replay_ignores_an_older_rise_to_the_new_level() -> None:
    """Replayed from scratch (no checkpoint), the rise to standby at 18:19 is a replayed transition to the new
    level: it does not explain the fall from a level the spike raised live."""
    steps = ladder("flood_forecast", TH)
    live, replay = StationRules(steps), StationRules(steps)
    live.feed_all(Reading("level", float(s), v) for s, v in sorted([*ON_TIME, RAISE]))
    decided = replay.feed_all(Reading("level", float(s), v) for s, v in sorted([*ON_TIME, RAISE, *MAKE_SPIKE]))
    assert live.open_conditions() == {RIVER: 2} and replay.open_conditions() == {RIVER: 1}
    assert [t.condition for t in decided if t.condition == UNCONFIRMED] == [UNCONFIRMED, UNCONFIRMED]
    [net] = reconcile(live.open_conditions(), replay.open_conditions(), ts=float(ON_TIME[-1][0]), decided=decided,
                      ended=replay.standing())
    assert (net.old_level, net.new_level, net.reason, net.ts, net.value) == (2, 1, SPIKE, 1510.0, 4.05)
    assert net.threshold == 3.0 and net.re_evaluated
