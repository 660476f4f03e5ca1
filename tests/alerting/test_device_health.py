"""The device-health snapshot of the staff console (``GET /api/v1/sensors/health``) follows the rules that raise
device-health alerts: :func:`alerting.rules.device_problems` against :class:`alerting.rules.StationRules` (the
oracle) and the rules worker's silent-gauge factor, then through the API on real rows (issue #20: the HTTP
layer held its own copy, which ignored a device that reports ``low_battery`` itself)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from hypothesis import given
from hypothesis import strategies as st

from alerting.levels import ladder
from alerting.rules import (
    FAULT,
    LOW_BATTERY,
    SILENT,
    SILENT_FACTOR,
    STATUS_FAULT,
    STATUS_LOW_BATTERY,
    STATUS_MAINTENANCE,
    STATUS_OK,
    Reading,
    RuleConfig,
    StationRules,
    device_problems,
    is_silent,
)
from alerting.worker import RulesWorker
from api.app import create_app
from ingest.contract import STATUS_CODES, STATUS_NAMES
from sonae.config import Settings
from tests.api_support import signed_in, start_client

THRESHOLDS = {"th_standby": 1.0, "th_caution": 2.0, "th_evacuation": 3.0, "th_danger": 4.0}


def _raised(reading: Reading) -> set[str]:
    """What a fresh rules machine (one bad report is enough) raises on one telemetry reading."""
    machine = StationRules(ladder("flood_forecast", THRESHOLDS), RuleConfig(health_dwell_samples=1))
    return {t.condition for t in machine.feed(reading) if t.kind == "raised"}


@given(battery=st.floats(0, 100, allow_nan=False))
def test_battery_level_alone_agrees_with_the_rules(battery: float) -> None:
    snapshot = device_problems(silent=False, battery_pct=battery, status=None)
    assert set(snapshot) == _raised(Reading("battery_pct", 1.0, battery))


def test_the_rules_read_the_status_codes_of_the_contract() -> None:
    assert (STATUS_OK, STATUS_LOW_BATTERY, STATUS_FAULT, STATUS_MAINTENANCE) == tuple(
        STATUS_CODES[n] for n in ("ok", "low_battery", "fault", "maintenance"))


@given(status=st.sampled_from(sorted(STATUS_NAMES)))
def test_device_status_alone_agrees_with_the_rules(status: int) -> None:
    snapshot = device_problems(silent=False, battery_pct=None, status=status)
    assert set(snapshot) == _raised(Reading("status", 1.0, float(status)))


@given(interval=st.integers(1, 86400), age=st.one_of(st.none(), st.floats(-60, 10**6, allow_nan=False)),
       registered=st.floats(0, 10**6, allow_nan=False), factor=st.floats(1, 10, allow_nan=False),
       switched=st.one_of(st.none(), st.floats(0, 10**6, allow_nan=False)))
def test_silent_after_factor_intervals_since_data_or_registration(interval: int, age: float | None,
                                                                   registered: float, factor: float,
                                                                   switched: float | None) -> None:
    # counted from the newest of: the data (else registration) and the last switch of the exercise flag
    quiet_for = registered if age is None else age
    if switched is not None:
        quiet_for = min(quiet_for, switched)
    assert is_silent(station_kind="river_level", seconds_since_data=age, seconds_since_registered=registered,
                     expected_interval_s=interval, factor=factor,
                     seconds_since_switch=switched) == (quiet_for > factor * interval)
    assert not is_silent(station_kind="gateway", seconds_since_data=age, seconds_since_registered=registered,
                         expected_interval_s=interval, factor=factor)  # may relay only others' readings
    problems = device_problems(silent=True, battery_pct=None, status=None)
    assert problems == [SILENT] and device_problems(silent=False, battery_pct=None, status=None) == []


def test_the_worker_and_the_console_read_one_configured_factor(settings: Settings) -> None:
    assert RulesWorker.__init__.__kwdefaults__["silent_factor"] == SILENT_FACTOR  # type: ignore[index]
    assert settings["alerting.silent_factor"] == SILENT_FACTOR
    other = settings.replace(alerting__silent_factor=5.0)
    assert RulesWorker.from_settings(other, None).silent_factor == 5.0  # type: ignore[arg-type]


async def test_the_console_lists_a_device_that_says_its_battery_is_low(pool: asyncpg.Pool,
                                                                       settings: Settings) -> None:
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO stations (id, name, municipality_code, expected_interval_s) VALUES ($1, $2, '072036', 600)",
            [("says-low", "Says low"), ("empty-cell", "Empty cell"), ("broken", "Broken"), ("quiet", "Quiet")])
        rows = [("says-low", "level", now, 1.0), ("says-low", "status", now, 1.0), ("says-low", "battery_pct", now, 80.0),
                ("empty-cell", "level", now, 1.0), ("empty-cell", "battery_pct", now, 12.0),
                ("broken", "level", now, 1.0), ("broken", "status", now, 2.0),
                ("quiet", "level", now - timedelta(seconds=3 * 600 + 60), 1.0)]
        await conn.executemany("INSERT INTO readings (station_id, kind, ts, value) VALUES ($1, $2, $3, $4)", rows)
        tokens = await signed_in(conn, (("health-staff", "staff", "072036"),), "correct horse battery")
        await RulesWorker(pool).step(conn)  # the console shows what the rules worker has read
    client = await start_client(create_app(pool=pool, settings=settings))
    try:
        r = await client.get("/api/v1/sensors/health", headers={"Authorization": f"Bearer {tokens['health-staff']}"})
        assert r.status == 200, await r.text()
        found = {s["station_id"]: s for s in (await r.json())["stations"]}
    finally:
        await client.close()
    assert found["says-low"]["problems"] == [LOW_BATTERY] and found["says-low"]["status"] == "low_battery"
    assert found["empty-cell"]["problems"] == [LOW_BATTERY]
    assert found["broken"]["problems"] == [FAULT] and found["broken"]["status"] == "fault"
    assert found["quiet"]["problems"] == [SILENT]
