"""Operators start and stop simulator scenarios and drills: ``/api/v1/simulations``.

A run belongs to the API process that started it (one at a time per process); behind a load balancer,
send operator requests to one API instance. Runs are exercises unless ``"exercise": false`` is given,
which only an admin may (``api.authorization.require_may_simulate``); every station of a run must be in
the caller's municipality. A run is seen and stopped only by accounts whose scope covers its starter's
municipality: to any other, the one-at-a-time rule says only that another drill is running (``state`` busy).
A scenario is named (a file of ``docs/scenarios``) or sent inline; an inline replay names its file in the
replay data directory (``[replay] file = NAME``), never a path, and errors never quote a file's content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from alerting.audit import record_audit as audit
from api.auth import authenticate
from api.authorization import in_scope, require_may_run, require_may_simulate
from api.bodies import field, json_object
from api.context import POOL, SETTINGS
from api.problems import Problem
from ingest.registry import RegistryError, Station
from simulators.manager import SimulationBusy, SimulationManager
from simulators.replay import PlacementError, ReplayError
from simulators.scenario import ScenarioError, load_scenario, parse_scenario

routes = web.RouteTableDef()

#: holds this process's SimulationManager under "manager", created on first use
MANAGER = web.AppKey("simulation_manager", dict)
SCENARIO_DIR = Path(__file__).resolve().parents[1] / "docs" / "scenarios"
#: slowest time-lapse a run may ask for (100 × slower than real time); below it time scales overflow
ACCEL_MIN = 0.01


def _manager(request: web.Request) -> SimulationManager:
    holder = request.app[MANAGER]
    manager: SimulationManager | None = holder.get("manager")
    if manager is None:
        settings = request.app[SETTINGS]
        if not settings["mqtt.url"]:
            raise Problem(503, "Service Unavailable", "this API process has no MQTT broker configured")
        manager = SimulationManager.from_settings(settings, request.app[POOL])
        manager.protocol = settings["mqtt.protocol"]
        holder["manager"] = manager
    return manager


async def stop_simulations(app: web.Application) -> None:
    manager = app[MANAGER].get("manager")
    if manager is not None:
        await manager.stop()


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def _sees(account: Any, manager: SimulationManager) -> bool:
    """Whether ``account`` may see (and stop) the manager's current or last run: its starter, or an account
    whose scope covers the municipality of the account that started it (a run of no known starter: only a
    prefecture-wide account). Another municipality's run is not shown, named nor stopped: the one-at-a-time rule
    only says that some drill is running (found: an operator of 福島市 read 郡山市's run id, scenario and gauges
    in GET and in the 409 of a start)."""
    return (manager.started_by is not None and manager.started_by == account.username) or in_scope(
        account, manager.scope)


@routes.get("/api/v1/simulations")
async def get_simulation(request: web.Request) -> web.Response:
    """The run of this server, when the account may see it; another municipality's: ``run`` null and ``state``
    busy while it runs (a start would be refused), else idle."""
    account = await authenticate(request)
    manager = request.app[MANAGER].get("manager")
    if manager is None:
        status: dict[str, Any] = {"run": None, "state": "idle"}
    elif _sees(account, manager):
        status = manager.status()
    else:
        status = {"run": None, "state": "busy" if manager.running else "idle"}
    return web.json_response({**status, "scenarios": scenario_names()})


@routes.post("/api/v1/simulations")
async def start_simulation(request: web.Request) -> web.Response:
    account = await authenticate(request)
    body = await json_object(request)
    raw = field(body, "scenario", (str, dict))
    exercise = field(body, "exercise", bool, default=True)
    require_may_run(account, exercise=exercise)  # 403 before the scenario is read or placed (its 422s)
    accel = field(body, "accel", (int, float), default=None)
    duration_s = field(body, "duration_s", (int, float), default=None)
    for name, value, low in (("accel", accel, ACCEL_MIN), ("duration_s", duration_s, 1.0)):
        if value is not None and not low <= value <= 1e7:
            raise Problem(400, "Bad Request", f"{name} must be a number from {low:g} to 10000000", field=name)
    replay_dir = request.app[SETTINGS]["simulators.data_dir"] or None
    try:
        if isinstance(raw, str):
            if raw not in scenario_names():
                raise Problem(400, "Bad Request", f"unknown scenario; choose one of {', '.join(scenario_names())} "
                              "or send the scenario document itself", field="scenario")
            scenario = load_scenario(SCENARIO_DIR / f"{raw}.toml", replay_dir=replay_dir)
        else:
            scenario = parse_scenario(raw, replay_dir=replay_dir, allow_paths=False)
    except (ScenarioError, ReplayError) as exc:
        raise Problem(400, "Bad Request", str(exc)[:500], field="scenario") from None

    codes: set[str | None] = set()  # the municipalities of the run's gauges (authorize), which it concerns

    async def authorize(stations: list[Station]) -> None:
        async with request.app[POOL].acquire() as conn:
            registered = {r["id"]: r["municipality_code"] for r in await conn.fetch(
                "SELECT id, municipality_code FROM stations WHERE id = ANY($1::text[])", [s.id for s in stations])}
        # the municipality the scenario gives a station, and the one the registry has for it: both count
        places = [(s.id, s.municipality_code) for s in stations] + list(registered.items())
        require_may_simulate(account, exercise=exercise, station_municipalities=places)
        codes.update(code for _, code in places)

    manager = _manager(request)
    try:
        status = await manager.start(scenario, exercise=exercise, accel=accel, duration_s=duration_s,
                                     authorize=authorize, started_by=account.username,
                                     scope=account.municipality_code)
    except SimulationBusy:
        if not _sees(account, manager):  # whose run, and which, is not this account's to know
            raise Problem(409, "Conflict", "another drill is running on this server (one runs at a time); start "
                                           "yours when it has ended") from None
        if manager.starting or manager.run_id is None:
            raise Problem(409, "Conflict", "a drill is being started on this server (one runs at a time); stop it "
                                           "when it runs (DELETE /api/v1/simulations/current)") from None
        raise Problem(409, "Conflict", f"drill {manager.run_id} is running on this server (one runs at a time); "
                                       "stop it first (DELETE /api/v1/simulations/current)") from None
    except (PlacementError, RegistryError) as exc:  # a valid scenario the deployment cannot run as asked
        raise Problem(422, "Unprocessable Content", str(exc)[:1000], field="scenario") from None
    except (ScenarioError, ValueError, TypeError) as exc:  # ReplayError messages never quote a file
        raise Problem(400, "Bad Request", str(exc)[:500], field="scenario") from None
    async with request.app[POOL].acquire() as conn:
        # the run's municipality: the starter's, or the one all its gauges are in (a prefecture admin's drill of
        # one municipality's gauges); None for a run across several
        concerns = account.municipality_code or (next(iter(codes)) if len(codes) == 1 else None)
        await audit(conn, account.username, "simulation.started", "simulation", status.get("run"),
                    {"scenario": str(body["scenario"])[:200] if isinstance(body["scenario"], str) else "inline",
                     "exercise": exercise}, municipality_code=concerns)
    return web.json_response(status, status=201)


@routes.delete("/api/v1/simulations/current")
async def stop_simulation(request: web.Request) -> web.Response:
    account = await authenticate(request)
    manager = request.app[MANAGER].get("manager")
    if manager is None or not manager.running:
        raise Problem(404, "Not Found", "no simulation is running")
    if not _sees(account, manager):
        raise Problem(404, "Not Found", "no simulation is running")  # another municipality's run
    scope = manager.scope  # the starter's municipality (read before the run ends)
    status = await manager.stop()  # (a run being started: once it runs, or nothing when its start failed)
    if status.get("run") is None:
        raise Problem(404, "Not Found", "no simulation is running")
    async with request.app[POOL].acquire() as conn:
        # the municipality its start was audited with (a prefecture admin's drill of one municipality's gauges)
        started = await conn.fetchrow("SELECT municipality_code FROM audit_log WHERE action = 'simulation.started' "
                                      "AND object_id = $1 ORDER BY id DESC LIMIT 1", str(status.get("run")))
        await audit(conn, account.username, "simulation.stopped", "simulation", status.get("run"), {},
                    municipality_code=started["municipality_code"] if started is not None else scope)
    return web.json_response(status)
