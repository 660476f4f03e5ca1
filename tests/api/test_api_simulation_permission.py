"""A refusal of permission to start a simulation is 403 before the run's content is judged (api.authorization, rule 7).

Found: an operator without the real-injection grant asking for a real 持世寺 replay (``POST /api/v1/simulations``
with ``"exercise": false``) got 422 "would play out in the drill town" — the placement's answer — where every other
refusal of permission is 403; the permission was checked only after the scenario was placed. 422 stays for a
run the account may start but that cannot be placed (an admin's real 持世寺 replay).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from api.auth import create_account, login, set_real_injection
from sonae.config import Settings
from tests.api.test_api_staff import PASSWORD, auth, make_client
from tests.ingest_support import wait_until

KORIYAMA = "072036"
REAL_JISEIJI = {"scenario": "jiseiji-2023-replay", "exercise": False}
#: a real run of simulated gauges in Koriyama (placeable: no replay, no drill town; refused 403 before too)
REAL_KORIYAMA = {"scenario": "abukuma-flood", "exercise": False}


@pytest.fixture
async def tokens(served_pool: asyncpg.Pool) -> dict[str, str]:
    out = {}
    async with served_pool.acquire() as conn:
        for name, role in (("kori-op", "operator"), ("kori-op-granted", "operator"), ("kori-admin", "admin")):
            await create_account(conn, username=name, password=PASSWORD, role=role, municipality_code=KORIYAMA)
            out[name] = (await login(conn, name, PASSWORD))[0]  # type: ignore[index]
        await set_real_injection(conn, "kori-op-granted", allowed=True)
    return out


@pytest.mark.parametrize("body", [REAL_JISEIJI, REAL_KORIYAMA], ids=["jiseiji", "koriyama"])
async def test_an_operator_without_the_grant_starting_a_real_run_is_refused_403_with_a_readable_body(
        served_pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str], body: dict[str, object]) -> None:
    client = await make_client(served_pool, settings)
    try:
        r = await client.post("/api/v1/simulations", json=body, headers=auth(tokens["kori-op"]))
        assert r.status == 403, await r.text()
        assert r.content_type == "application/problem+json"
        problem = await r.json()
        assert problem["title"] == "Forbidden" and "kori-op" in problem["detail"], problem
        assert "real (non-exercise) run" in problem["detail"] and "exercise" in problem["detail"], problem
        assert "drill town" not in problem["detail"], problem  # not the placement's words
    finally:
        await client.close()
    async with served_pool.acquire() as conn:  # nothing was registered for the refused run
        assert await conn.fetchval("SELECT count(*) FROM stations") == 0


@pytest.mark.parametrize("who", ["kori-admin", "kori-op-granted"])
async def test_an_account_that_may_run_real_gets_422_for_a_real_run_that_cannot_be_placed(
        served_pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str], who: str) -> None:
    client = await make_client(served_pool, settings)
    try:
        r = await client.post("/api/v1/simulations", json=REAL_JISEIJI, headers=auth(tokens[who]))
        assert r.status == 422, await r.text()
        assert "drill town 079995, which is for exercises only" in (await r.json())["detail"]
    finally:
        await client.close()


async def test_another_municipalitys_operator_is_refused_403_not_told_a_run_is_busy(
        served_pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:
    """Found: with a run going, an operator of another municipality asking for a drill on Koriyama's stations got
    409 "simulation … is running" (the busy check came first) where the scope check answers 403: authorization
    answers before anything else about the resource (README, authorization rules)."""
    import asyncio

    from api.simulations import MANAGER
    from simulators.manager import SimulationManager

    async with served_pool.acquire() as conn:
        await create_account(conn, username="fuku-op", password=PASSWORD, role="operator", municipality_code="072010")
        fuku = (await login(conn, "fuku-op", PASSWORD))[0]  # type: ignore[index]
    client = await make_client(served_pool, settings)
    running: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # a run that never ends
    try:
        manager = SimulationManager(mqtt_url="mqtt://127.0.0.1:1", prefix="sonae/v1", pool=served_pool)
        manager._task = running  # type: ignore[assignment]
        client.server.app[MANAGER]["manager"] = manager
        assert manager.running
        r = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood"}, headers=auth(fuku))
        assert r.status == 403, await r.text()
        assert "outside your municipality" in (await r.json())["detail"]
        # Koriyama's own operator is told the run is busy
        mine = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood"},
                                 headers=auth(tokens["kori-op"]))
        assert mine.status == 409, await mine.text()
    finally:
        running.cancel()
        client.server.app[MANAGER].pop("manager", None)
        await client.close()
    async with served_pool.acquire() as conn:  # nothing was registered
        assert await conn.fetchval("SELECT count(*) FROM stations") == 0


async def test_a_refusal_counts_each_station_of_the_run_once(
        served_pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:
    """Found: a station is out of scope both as the scenario places it and as the registry records it, and each
    place was counted: another municipality's operator asking for Koriyama's 6-gauge drill, once Koriyama had run
    it (so its gauges were registered there), was told "12 station(s) of the run are outside your municipality"."""
    async with served_pool.acquire() as conn:
        await create_account(conn, username="fuku-op", password=PASSWORD, role="operator", municipality_code="072010")
        fuku = (await login(conn, "fuku-op", PASSWORD))[0]  # type: ignore[index]
    client = await make_client(served_pool, settings)
    try:
        ran = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood", "duration_s": 3600},
                                headers=auth(tokens["kori-op"]))
        assert ran.status == 201, await ran.text()
        stopped = await client.delete("/api/v1/simulations/current", headers=auth(tokens["kori-op"]))
        assert stopped.status == 200, await stopped.text()
        async with served_pool.acquire() as conn:
            gauges = await conn.fetchval("SELECT count(*) FROM stations WHERE municipality_code = $1", KORIYAMA)
        assert gauges == 6  # the drill's gauges, registered in Koriyama
        r = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood"}, headers=auth(fuku))
        assert r.status == 403, await r.text()
        detail = (await r.json())["detail"]
        assert detail.startswith("6 station(s) of the run are outside your municipality (072010)"), detail
    finally:
        await client.close()


def _fukushima_drill() -> dict[str, object]:
    """abukuma-flood as an inline scenario of 福島市 (072010) on gauges of its own: a run its operators may start."""
    import tomllib

    from api.simulations import SCENARIO_DIR

    text = (SCENARIO_DIR / "abukuma-flood.toml").read_text(encoding="utf-8")
    doc = tomllib.loads(text.replace('station = "sim-', 'station = "sim-fuku-'))
    doc["scenario"]["name"], doc["scenario"]["municipality"] = "fukushima-flood", "072010"
    return {"scenario": doc}


async def test_another_municipalitys_drill_is_invisible_and_only_said_to_be_busy(
        served_pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:
    """One drill runs at a time on a server. Found: an operator or admin of 福島市 read 郡山市's running drill in
    GET /api/v1/simulations (its run id, scenario and gauges) and in the 409 of a start ("simulation <id> is
    running"). Now another municipality's run is seen only as busy, cannot be stopped (404, as none), and a start
    is told another drill is running without its id or municipality; 郡山市's own accounts see and stop it."""
    async with served_pool.acquire() as conn:
        for name, role, muni in (("fuku-op", "operator", "072010"), ("fuku-admin", "admin", "072010"),
                                 ("pref-op", "operator", None)):
            await create_account(conn, username=name, password=PASSWORD, role=role, municipality_code=muni)
            tokens[name] = (await login(conn, name, PASSWORD))[0]  # type: ignore[index]
    client = await make_client(served_pool, settings)
    try:
        started = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood", "duration_s": 3600},
                                    headers=auth(tokens["kori-op"]))
        assert started.status == 201, await started.text()
        run = (await started.json())["run"]
        assert run

        for outsider in ("fuku-op", "fuku-admin"):
            seen = await client.get("/api/v1/simulations", headers=auth(tokens[outsider]))
            assert seen.status == 200
            body = await seen.json()
            assert body["run"] is None and body["state"] == "busy", body
            assert set(body) == {"run", "state", "scenarios"}, body  # no scenario, gauges, counts of the run
            stop = await client.delete("/api/v1/simulations/current", headers=auth(tokens[outsider]))
            assert stop.status == 404, await stop.text()
            assert (await stop.json())["detail"] == "no simulation is running"
            busy = await client.post("/api/v1/simulations", json=_fukushima_drill(), headers=auth(tokens[outsider]))
            assert busy.status == 409, await busy.text()
            text = await busy.text()
            assert "another drill is running on this server (one runs at a time)" in (await busy.json())["detail"]
            assert run not in text and KORIYAMA not in text and "kori" not in text and "郡山" not in text, text

        # the run's own municipality, and the prefecture, see it; another of 郡山市's operators stops it
        for insider in ("kori-op", "kori-admin", "pref-op"):
            seen = await client.get("/api/v1/simulations", headers=auth(tokens[insider]))
            assert (await seen.json())["run"] == run and (await seen.json())["state"] == "running"
        mine = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood"},
                                 headers=auth(tokens["kori-admin"]))
        assert mine.status == 409 and run in (await mine.json())["detail"], await mine.text()
        stopped = await client.delete("/api/v1/simulations/current", headers=auth(tokens["kori-op-granted"]))
        assert stopped.status == 200, await stopped.text()
        assert (await stopped.json())["run"] == run

        # ended: still 郡山市's to read, and to 福島市 nothing runs
        after = await (await client.get("/api/v1/simulations", headers=auth(tokens["fuku-op"]))).json()
        assert after["run"] is None and after["state"] == "idle", after
        assert (await (await client.get("/api/v1/simulations", headers=auth(tokens["kori-op"]))).json())["run"] == run
    finally:
        await client.close()


async def test_while_a_drill_is_being_started_everyone_is_answered_about_that_start(
        served_pool: asyncpg.Pool, settings: Settings, tokens: dict[str, str]) -> None:
    """Found (a tester starting drills of 郡山市 and 福島市 at once): while a start registered its stations, the
    manager still named the last run's starter, so 福島市's operator could "stop" its own ended run (200, and a
    false ``simulation.stopped`` in the audit log) while 郡山市's drill started, saw that ended run instead of
    busy, and 郡山市's own 409 named an old run. The start is held here in the middle, by a real lock on the
    stations table its registration must wait for (reads go on), and everyone asks meanwhile."""
    async with served_pool.acquire() as conn:
        await create_account(conn, username="fuku-op", password=PASSWORD, role="operator", municipality_code="072010")
        tokens["fuku-op"] = (await login(conn, "fuku-op", PASSWORD))[0]  # type: ignore[index]
    client = await make_client(served_pool, settings)
    try:
        # 福島市's drill runs and ends first: the last run the manager knows is theirs
        first = await client.post("/api/v1/simulations", json=_fukushima_drill(), headers=auth(tokens["fuku-op"]))
        assert first.status == 201, await first.text()
        old = (await first.json())["run"]
        assert (await client.delete("/api/v1/simulations/current", headers=auth(tokens["fuku-op"]))).status == 200

        async with served_pool.acquire() as lock:
            tx = lock.transaction()
            await tx.start()
            await lock.execute("LOCK TABLE stations IN EXCLUSIVE MODE")  # upserts wait; reads do not
            start = asyncio.ensure_future(client.post(
                "/api/v1/simulations", json={"scenario": "abukuma-flood", "duration_s": 3600},
                headers=auth(tokens["kori-op"])))

            async def starting() -> bool:
                got = await (await client.get("/api/v1/simulations", headers=auth(tokens["kori-op"]))).json()
                return bool(got["state"] == "starting")

            await wait_until(starting, timeout=60, what="the start waiting for its registration")
            seen = await (await client.get("/api/v1/simulations", headers=auth(tokens["fuku-op"]))).json()
            assert seen["run"] is None and seen["state"] == "busy", seen
            stop = await client.delete("/api/v1/simulations/current", headers=auth(tokens["fuku-op"]))
            assert stop.status == 404, await stop.text()
            busy = await client.post("/api/v1/simulations", json=_fukushima_drill(), headers=auth(tokens["fuku-op"]))
            assert busy.status == 409 and old not in await busy.text(), await busy.text()
            assert "another drill is running" in (await busy.json())["detail"]
            mine = await client.post("/api/v1/simulations", json={"scenario": "abukuma-flood"},
                                     headers=auth(tokens["kori-admin"]))
            assert mine.status == 409 and old not in await mine.text(), await mine.text()
            assert "being started" in (await mine.json())["detail"]
            # 郡山市's own stop, asked now, waits for the start and stops what it started
            kori_stop = asyncio.ensure_future(client.delete("/api/v1/simulations/current",
                                                            headers=auth(tokens["kori-admin"])))
            await tx.rollback()
        started = await start
        assert started.status == 201, await started.text()
        run = (await started.json())["run"]
        stopped = await kori_stop
        assert stopped.status == 200 and (await stopped.json())["run"] == run, await stopped.text()
        async with served_pool.acquire() as conn:
            stops = [r["object_id"] for r in await conn.fetch(
                "SELECT object_id FROM audit_log WHERE action = 'simulation.stopped' ORDER BY id")]
        assert stops == [old, run], stops  # no false stop of the old run
    finally:
        await client.close()
