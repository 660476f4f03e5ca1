"""A replay plays out where Sonae covers, so staff can act on it (simulators.replay.placed).

Found: on a database prepared as every service prepares it (Fukushima's 59 boundaries), the documented
``sonae simulate --replay jiseiji --register-stations`` — and the same replay started through the API — was
refused: the 持世寺 gauge is in 宇部市 (352021), "outside the area Sonae covers". The tests' ``pool`` loads no
boundaries, which hid it; these run on ``served_pool``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import asyncpg
import pytest
from shapely.geometry import Point

from api.auth import create_account, login
from ingest.boundaries import packaged_boundaries
from ingest.registry import RegistryError, Station, get_station, upsert_stations
from simulators import command
from simulators.fleet import Fleet
from simulators.manager import SimulationManager, register_stations
from simulators.replay import JISEIJI_ID, JISEIJI_MUNICIPALITY, ReplayError
from simulators.scenario import load_scenario
from sonae.config import Settings
from sonae.municipality_code import DRILL_TOWN_CENTER, DRILL_TOWN_CODE
from tests.api.test_api_staff import PASSWORD, auth, make_client
from tests.simulators.support import SCENARIOS

KORIYAMA = "072036"
WINDOW = ["--from", "2023-06-30T18:00+09:00", "--to", "2023-07-01T06:00+09:00"]


def _fleet(*argv: str) -> Fleet:
    """The fleet of ``sonae simulate ARGV`` (its options, parsed as the command parses them)."""
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    scenario, limit = command.scenario_from_args(parser.parse_args(list(argv)))
    return Fleet(scenario, max_span_s=limit)


def _topics(fleet: Fleet) -> set[str]:
    return {fleet.message(d)[0].split("/")[-3] for d in list(fleet.deliveries())[:5]}


async def test_the_documented_jiseiji_replay_plays_out_in_the_drill_town(served_pool: asyncpg.Pool) -> None:
    fleet = _fleet("--replay", "jiseiji", "--register-stations", *WINDOW)
    assert await register_stations(served_pool, fleet.stations) == 1
    async with served_pool.acquire() as conn:
        station = await get_station(conn, JISEIJI_ID)
    assert station is not None and (station.municipality_code, station.exercise) == (DRILL_TOWN_CODE, True)
    assert _topics(fleet) == {DRILL_TOWN_CODE}  # published where it is registered
    assert "from 352021" in (station.source or "")
    # on the drill town's river, inside real 郡山市 (where /api/v1/level and the routes meet its alerts)
    assert station.lat == DRILL_TOWN_CENTER[0] and abs((station.lon or 0) - DRILL_TOWN_CENTER[1]) <= 0.012
    koriyama = next(b.geometry for b in packaged_boundaries() if b.code == KORIYAMA)
    assert koriyama.contains(Point(station.lon, station.lat))


async def test_a_replay_named_into_a_covered_municipality_plays_out_there(served_pool: asyncpg.Pool) -> None:
    fleet = _fleet("--replay", "jiseiji", "--municipality", "07203", *WINDOW)
    assert await register_stations(served_pool, fleet.stations) == 1
    async with served_pool.acquire() as conn:
        station = await get_station(conn, JISEIJI_ID)
    assert station is not None and station.municipality_code == KORIYAMA and _topics(fleet) == {KORIYAMA}
    assert (station.lat, station.lon) == (None, None)  # not Ube's position in 郡山市


async def test_a_replay_into_an_uncovered_municipality_is_refused_naming_the_station(
        served_pool: asyncpg.Pool) -> None:
    fleet = _fleet("--replay", "jiseiji", "--municipality", JISEIJI_MUNICIPALITY, *WINDOW)
    with pytest.raises(RegistryError, match=rf"station '{JISEIJI_ID}': municipality_code: municipality '352021' "
                                            r"\(宇部市\) is outside the area Sonae covers.*--municipality CODE"):
        await register_stations(served_pool, fleet.stations)
    assert await served_pool.fetchval("SELECT count(*) FROM stations") == 0


def test_a_real_replay_is_never_played_in_the_drill_town() -> None:
    with pytest.raises(ReplayError, match="drill town 079995, which is for exercises only.*--municipality"):
        _fleet("--replay", "jiseiji", "--real", *WINDOW)
    [station] = _fleet("--replay", "jiseiji", "--real", "--municipality", KORIYAMA, *WINDOW).stations
    assert (station.municipality_code, station.exercise) == (KORIYAMA, False)


async def test_a_gauge_registered_elsewhere_by_an_earlier_run_is_named(pool: asyncpg.Pool) -> None:
    """Stations already registered are left alone; one registered in another municipality than the run
    publishes it under would have every reading refused (wrong_municipality): said, not run silently."""
    fleet = _fleet("--replay", "jiseiji", *WINDOW)
    async with pool.acquire() as conn:  # as an earlier version registered it, in 宇部市
        await upsert_stations(conn, [Station(id=JISEIJI_ID, name="持世寺", municipality_code=JISEIJI_MUNICIPALITY)])
    with pytest.raises(RegistryError, match=rf"'{JISEIJI_ID}' is registered in 352021, but this run publishes it "
                                            r"under 079995.*exercise true.*--municipality 352021"):
        await register_stations(pool, fleet.stations)


@pytest.mark.parametrize("scenario", sorted(p.name for p in SCENARIOS.glob("*.toml")))
async def test_every_shipped_scenario_registers_its_gauges_where_sonae_covers(
        scenario: str, served_pool: asyncpg.Pool) -> None:
    fleet = Fleet(load_scenario(SCENARIOS / scenario))
    assert await register_stations(served_pool, fleet.stations) == len(fleet.stations)


async def test_a_replay_started_through_the_manager_registers_its_gauge(served_pool: asyncpg.Pool,
                                                                        settings: Settings) -> None:
    """The API's path (POST /api/v1/simulations → SimulationManager.start), with a named scenario file."""
    manager = SimulationManager.from_settings(settings, pool=served_pool)
    status = await manager.start(Path(SCENARIOS / "jiseiji-2023-replay.toml"), accel=1e7)
    try:
        assert status["state"] == "running"
    finally:
        await manager.stop()
    async with served_pool.acquire() as conn:
        station = await get_station(conn, JISEIJI_ID)
    assert station is not None and (station.municipality_code, station.exercise) == (DRILL_TOWN_CODE, True)


async def test_the_api_starts_the_jiseiji_drill_and_refuses_it_real_with_a_422(served_pool: asyncpg.Pool,
                                                                              settings: Settings) -> None:
    """POST /api/v1/simulations with the named scenario: the drill starts (201, its gauge in the drill town);
    asked real, the replay cannot play out in the drill town: a 422 that says so and what to do."""
    async with served_pool.acquire() as conn:
        await create_account(conn, username="pref-admin", password=PASSWORD, role="admin")
        token = (await login(conn, "pref-admin", PASSWORD))[0]  # type: ignore[index]
    client = await make_client(served_pool, settings)
    try:
        real = await client.post("/api/v1/simulations", json={"scenario": "jiseiji-2023-replay", "exercise": False},
                                 headers=auth(token))
        assert real.status == 422, await real.text()
        assert "drill town 079995, which is for exercises only" in (await real.json())["detail"]
        started = await client.post("/api/v1/simulations", json={"scenario": "jiseiji-2023-replay", "duration_s": 60},
                                    headers=auth(token))
        assert started.status == 201, await started.text()
        assert (await client.delete("/api/v1/simulations/current", headers=auth(token))).status == 200
    finally:
        await client.close()
    assert await served_pool.fetchval("SELECT municipality_code FROM stations WHERE id = $1", JISEIJI_ID) == \
        DRILL_TOWN_CODE


async def test_a_gauge_registered_elsewhere_is_not_told_to_move_outside_the_covered_area(
        served_pool: asyncpg.Pool) -> None:
    """Found by breakit7: with 持世寺 registered in 郡山市, ``--municipality 352021`` (宇部市) answered "move it there
    (PATCH /api/v1/stations/… with municipality_code 352021)", a move the registry refuses (422): the coverage
    refusal comes first, naming the station, and nothing is written."""
    async with served_pool.acquire() as conn:
        await upsert_stations(conn, [Station(id=JISEIJI_ID, name="持世寺", municipality_code=KORIYAMA, exercise=True)])
    fleet = _fleet("--replay", "jiseiji", "--municipality", JISEIJI_MUNICIPALITY, *WINDOW)
    with pytest.raises(RegistryError) as refused:
        await register_stations(served_pool, fleet.stations)
    message = str(refused.value)
    assert f"station '{JISEIJI_ID}': municipality_code: municipality '352021'" in message
    assert "outside the area Sonae covers" in message and "--municipality CODE" in message
    assert "PATCH" not in message
    async with served_pool.acquire() as conn:
        station = await get_station(conn, JISEIJI_ID)
    assert station is not None and station.municipality_code == KORIYAMA
