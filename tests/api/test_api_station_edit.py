"""``PATCH /api/v1/stations/{station_id}``: staff edit a gauge (before, moves and threshold changes came only
from registry imports or SQL). Roles and scope as every staff action, bad input a readable problem, an
audit entry, and the change followed by the real rules worker exactly as a registry change is: new
thresholds judge the level again, a move takes the open alerts along, an exercise switch ends the real
alerts."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from alerting.rules import RIVER
from alerting.texts import ENDED_EXERCISE, REJUDGED
from ingest.contract import Reading
from ingest.registry import Station, upsert_stations
from ingest.store import write_batch
from sonae.nametext import shown_text
from tests.alerting.support import running_worker
from tests.api_support import signed_in
from tests.ingest_support import wait_until

KORI, FUKU = "072036", "072010"
PASSWORD = "correct horse battery"
GAUGE = Station(id="gauge", name="Gauge", river="阿武隈川", municipality_code=KORI, th_standby=3.80,
                th_caution=5.00, th_evacuation=5.10, th_danger=5.50)  # a flood-forecast gauge, m
CRISIS = Station(id="crisis", name="Crisis", municipality_code=KORI, gauge_type="crisis", th_obs_start=1.0,
                 th_crisis=2.0, th_overflow=3.0)


@pytest.fixture
async def tokens(pool: asyncpg.Pool) -> dict[str, str]:
    async with pool.acquire() as conn:
        await upsert_stations(conn, [GAUGE, CRISIS])
        return await signed_in(conn, (("kori-staff", "staff", KORI), ("fuku-staff", "staff", FUKU),
                                      ("pref-staff", "staff", None), ("kori-op", "operator", KORI),
                                      ("kori-admin", "admin", KORI)), PASSWORD)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _patch(client: TestClient, body: Any, token: str | None, station: str = "gauge") -> tuple[int, Any]:
    r = await client.patch(f"/api/v1/stations/{station}", json=body,
                           headers=auth(token) if token else {})
    if r.status >= 400:
        assert r.content_type == "application/problem+json", await r.text()
    return r.status, await r.json()


async def _stored(pool: asyncpg.Pool) -> dict[str, Any]:
    return dict(await pool.fetchrow("SELECT * FROM stations WHERE id = 'gauge'"))


async def test_only_staff_of_the_stations_municipality_may_edit_it(client: TestClient, pool: asyncpg.Pool,
                                                                   tokens: dict[str, str]) -> None:
    before = await _stored(pool)
    body = {"th_danger": 5.40}
    assert (await _patch(client, body, None))[0] == 401
    assert (await _patch(client, body, "garbage-token"))[0] == 401
    assert (await _patch(client, body, tokens["kori-op"]))[0] == 403  # operators run drills, not the registry
    assert (await _patch(client, body, tokens["fuku-staff"]))[0] == 404  # another municipality's: not revealed
    status, problem = await _patch(client, {"municipality_code": FUKU}, tokens["kori-staff"])
    assert status == 403 and FUKU not in problem["detail"] and "own municipality" in problem["detail"]
    assert await _stored(pool) == before
    for who in ("kori-staff", "pref-staff", "kori-admin"):
        status, station = await _patch(client, {"name": f"Gauge ({who})"}, tokens[who])
        assert status == 200 and station["name"] == f"Gauge ({who})"


async def test_bad_input_is_a_readable_problem_and_changes_nothing(client: TestClient, pool: asyncpg.Pool,
                                                                   tokens: dict[str, str]) -> None:
    staff = tokens["kori-staff"]
    before = await _stored(pool)
    cases: list[tuple[Any, int, str]] = [
        ({}, 400, ""),  # nothing to change
        ({"th_danger": 5.05}, 422, "th_danger (5.05 m) is below th_evacuation (5.1 m)"),  # with the stored ones
        ({"th_caution": 5.20}, 422, "th_evacuation (5.1 m) is below th_caution (5.2 m)"),
        ({"th_standby": 6.0}, 422, "th_caution (5 m) is below th_standby (6 m)"),
        ({"th_danger": None}, 400, "th_danger"),  # the four stages stay: none is removed here
        ({"th_danger": "high"}, 400, "th_danger"),
        ({"th_danger": True}, 400, "th_danger"),
        ({"th_danger": 1e9}, 400, "th_danger"),
        ({"municipality_code": "072037"}, 400, "municipality_code"),  # wrong check digit
        ({"municipality_code": None}, 400, "municipality_code"),
        ({"exercise": "yes"}, 400, "exercise"),
        ({"name": "   "}, 400, "name"),
        ({"name": "x" * 201}, 400, "name"),
        ({"kind": "rainfall"}, 400, "kind"),  # not editable here
        ({"th_obs_start": 1.0}, 400, "th_obs_start"),
    ]
    for body, expected, words in cases:
        status, problem = await _patch(client, body, staff)
        assert (status, words in problem.get("detail", "") + str(problem)) == (expected, True), (body, problem)
    status, problem = await _patch(client, {"th_crisis": 2.5}, staff, station="crisis")
    assert status == 400  # not a field of this operation
    status, problem = await _patch(client, {"th_danger": 2.5}, staff, station="crisis")
    assert status == 422 and "crisis" in problem["detail"]
    assert (await _patch(client, {"name": "x"}, staff, station="no-such-gauge"))[0] == 404
    assert (await _patch(client, {"name": "x"}, staff, station="bad id!"))[0] in (400, 404)
    r = await client.patch("/api/v1/stations/gauge", data=b"{", headers={**auth(staff),
                                                                          "Content-Type": "application/json"})
    assert r.status == 400 and r.content_type == "application/problem+json"
    assert await _stored(pool) == before


async def test_an_edit_is_stored_audited_and_answered(client: TestClient, pool: asyncpg.Pool,
                                                      tokens: dict[str, str]) -> None:
    status, station = await _patch(client, {"th_danger": 5.45, "th_standby": 3.5, "municipality_code": "07201",
                                            "name": " 本宮 ", "exercise": True}, tokens["pref-staff"])
    assert status == 200, station
    assert (station["name"], station["municipality_code"], station["exercise"], station["thresholds"]) == \
           ("本宮", FUKU, True, {"standby": 3.5, "caution": 5.00, "evacuation": 5.10, "danger": 5.45})
    stored = await _stored(pool)
    assert (stored["name"], stored["municipality_code"], stored["th_standby"], stored["th_danger"],
            stored["exercise"]) == ("本宮", FUKU, 3.5, 5.45, True)
    [entry] = await pool.fetch("SELECT * FROM audit_log WHERE action = 'station.updated'")
    assert (entry["actor"], entry["object_type"], entry["object_id"]) == ("pref-staff", "station", "gauge")
    detail = json.loads(entry["detail"])
    assert detail == {"from": {"name": "Gauge", "municipality_code": KORI, "exercise": False, "th_standby": 3.8,
                               "th_danger": 5.5},
                      "to": {"name": "本宮", "municipality_code": FUKU, "exercise": True, "th_standby": 3.5,
                             "th_danger": 5.45}}
    # the same again changes nothing: the unchanged station, no audit entry (tests/api/test_api_station_edit_rules.py)
    assert (await _patch(client, {"th_danger": 5.45}, tokens["pref-staff"])) == (200, station)
    assert await pool.fetchval("SELECT count(*) FROM audit_log WHERE action = 'station.updated'") == 1


@pytest.mark.parametrize("zero", ["-0.0", "-1e-400", "-0e5", "-0.000"])
async def test_a_negative_zero_threshold_is_stored_and_shown_as_zero(client: TestClient, pool: asyncpg.Pool,
                                                                     tokens: dict[str, str], zero: str) -> None:
    """``-1e-400`` (underflowing to -0.0) or ``-0.0`` was stored and shown as ``-0.0`` (found by enduser)."""
    # a threshold of 0 m lies on the default 欠測 sentinel (refused: test_api_station_missing_rule); this gauge has none
    await pool.execute("UPDATE stations SET missing_at_or_below = NULL WHERE id = 'gauge'")
    r = await client.patch("/api/v1/stations/gauge", data=f'{{"th_standby": {zero}}}'.encode(),
                           headers={**auth(tokens["kori-staff"]), "Content-Type": "application/json"})
    assert r.status == 200, await r.text()
    text = await r.text()
    assert '"standby":0.0' in text.replace(" ", "") and "-0" not in text, text
    stored = (await _stored(pool))["th_standby"]
    assert stored == 0.0 and math.copysign(1.0, stored) == 1.0
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT th_standby::text FROM stations WHERE id = 'gauge'") == "0"


async def _open_real(pool: asyncpg.Pool) -> asyncpg.Record | None:
    return await pool.fetchrow("SELECT * FROM alerts WHERE station_id = 'gauge' AND condition = $1 "
                               "AND NOT exercise AND cleared_at IS NULL", RIVER)


async def test_edits_reach_the_alerts_through_the_rules_worker(client: TestClient, pool: asyncpg.Pool,
                                                               tokens: dict[str, str]) -> None:
    staff = tokens["pref-staff"]
    now: datetime = await pool.fetchval("SELECT now()")
    async with pool.acquire() as conn:  # the gauge's last readings: 5.20 … 5.25 m, 警戒レベル3
        await write_batch(conn, [Reading("gauge", "level", now - timedelta(minutes=30 - 10 * i), v)
                                 for i, v in enumerate([5.20, 5.22, 5.25])])
    async with running_worker(pool, exercise_grace_s=0):  # follows registry changes only when announced (silent check hourly)

        async def level_is(level: int) -> bool:
            alert = await _open_real(pool)
            return alert is not None and alert["level"] == level

        await wait_until(lambda: level_is(3), what="the level-3 alert")
        alert_id = (await _open_real(pool))["id"]

        # 氾濫危険水位 lowered below the stage: level 4 at once, no reading needed
        assert (await _patch(client, {"th_danger": 5.20}, staff))[0] == 200
        await wait_until(lambda: level_is(4), what="the level to be judged again under the new thresholds")

        # moved to Fukushima city: the open alert goes along
        assert (await _patch(client, {"municipality_code": FUKU}, staff))[0] == 200

        async def moved() -> bool:
            alert = await _open_real(pool)
            return alert is not None and alert["municipality_code"] == FUKU

        await wait_until(moved, what="the alert to follow the station")

        # an exercise station now: the real alert ends (its readings stopped above the line)
        assert (await _patch(client, {"exercise": True}, staff))[0] == 200

        async def ended() -> bool:
            return await _open_real(pool) is None

        await wait_until(ended, what="the real alert to end")
    events = await pool.fetch("SELECT kind, reason, note, municipality_code FROM alert_events WHERE alert_id = $1 "
                              "ORDER BY id", alert_id)
    assert [(e["kind"], e["reason"]) for e in events][-3:] == [("escalated", "threshold"), ("moved", events[-2]["reason"]),
                                                             ("cleared", ENDED_EXERCISE)]
    assert events[-1]["municipality_code"] == FUKU and events[-3]["note"] == REJUDGED  # worded by its rule


async def test_stored_station_texts_leave_the_api_as_they_show(client: TestClient, pool: asyncpg.Pool,
                                                               tokens: dict[str, str]) -> None:
    """Texts stored before the name rule (or by SQL) may hold hidden or reordering characters; alerts show
    them cleaned (sonae.nametext.shown_text), and so does every station answer (found: the station list, a
    PATCH answer and the staff sensor-health view served them raw)."""
    raw = {"name": "Ga\u202euge\u200b", "name_en": "G\u2066auge\u00ad", "river": "阿武\u200d隈川\u0007"}
    shown = {k: shown_text(v) for k, v in raw.items()}
    assert shown != raw and all(v.strip() for v in shown.values())
    await pool.execute("UPDATE stations SET name = $1, name_en = $2, river = $3 WHERE id = 'gauge'",
                       raw["name"], raw["name_en"], raw["river"])

    def texts(station: dict[str, Any]) -> dict[str, Any]:
        return {k: station[k] for k in raw}

    listed = {s["id"]: s for s in (await (await client.get("/api/v1/stations")).json())["stations"]}
    assert texts(listed["gauge"]) == shown
    geo = await (await client.get("/api/v1/stations", params={"format": "geojson"})).json()
    assert texts(next(f["properties"] for f in geo["features"] if f["id"] == "gauge")) == shown
    csv_text = await (await client.get("/api/v1/stations", params={"format": "csv"})).text()
    assert all(c not in csv_text for c in "\u202e\u200b\u2066\u00ad\u200d\u0007") and shown["name"] in csv_text
    assert texts(await (await client.get("/api/v1/stations/gauge")).json()) == shown
    status, patched = await _patch(client, {"th_standby": 3.9}, tokens["kori-staff"])
    assert status == 200 and texts(patched) == shown
    health = await client.get("/api/v1/sensors/health", headers=auth(tokens["kori-staff"]))
    assert health.status == 200
    assert next(s["name"] for s in (await health.json())["stations"] if s["station_id"] == "gauge") == shown["name"]
    device = await client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Device:gauge", params={"options": "keyValues"},
                              headers=auth(tokens["kori-staff"]))
    assert device.status == 200 and (await device.json())["name"] == shown["name"]
    # the stored text is kept, for staff to correct at its source
    assert (await _stored(pool))["name"] == raw["name"]
