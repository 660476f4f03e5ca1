"""Operators start and stop simulator scenarios and drills: ``/api/v1/simulations``.

A run belongs to the API process that started it (one at a time per process); behind a load balancer,
send operator requests to one API instance. Runs are exercises unless ``"exercise": false`` is given.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from alerting.store import _audit as audit
from api.auth import authenticate
from api.bodies import field, json_object
from api.context import POOL, SETTINGS
from api.problems import Problem
from simulators.manager import SimulationBusy, SimulationManager
from simulators.scenario import ScenarioError

routes = web.RouteTableDef()

#: holds this process's SimulationManager under "manager", created on first use
MANAGER = web.AppKey("simulation_manager", dict)
SCENARIO_DIR = Path(__file__).resolve().parents[1] / "docs" / "scenarios"


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


@routes.get("/api/v1/simulations")
async def get_simulation(request: web.Request) -> web.Response:
    await authenticate(request, "operator")
    manager = request.app[MANAGER].get("manager")
    status = manager.status() if manager is not None else {"run": None, "state": "idle"}
    return web.json_response({**status, "scenarios": scenario_names()})


@routes.post("/api/v1/simulations")
async def start_simulation(request: web.Request) -> web.Response:
    account = await authenticate(request, "operator")
    body = await json_object(request)
    scenario = field(body, "scenario", (str, dict))
    if isinstance(scenario, str):
        if scenario not in scenario_names():
            raise Problem(400, "Bad Request", f"unknown scenario; choose one of {', '.join(scenario_names())} "
                          "or send the scenario document itself", field="scenario")
        scenario = SCENARIO_DIR / f"{scenario}.toml"
    exercise = field(body, "exercise", bool, default=True)
    manager = _manager(request)
    try:
        status = await manager.start(scenario, exercise=exercise,
                                     accel=field(body, "accel", (int, float), default=None),
                                     duration_s=field(body, "duration_s", (int, float), default=None))
    except SimulationBusy as exc:
        raise Problem(409, "Conflict", str(exc)) from None
    except (ScenarioError, ValueError, TypeError) as exc:
        raise Problem(400, "Bad Request", str(exc)[:500], field="scenario") from None
    async with request.app[POOL].acquire() as conn:
        await audit(conn, account.username, "simulation.started", "simulation", status.get("run"),
                    {"scenario": str(body["scenario"])[:200] if isinstance(body["scenario"], str) else "inline",
                     "exercise": exercise})
    return web.json_response(status, status=201)


@routes.delete("/api/v1/simulations/current")
async def stop_simulation(request: web.Request) -> web.Response:
    account = await authenticate(request, "operator")
    manager = request.app[MANAGER].get("manager")
    if manager is None or not manager.running:
        raise Problem(404, "Not Found", "no simulation is running")
    status = await manager.stop()
    async with request.app[POOL].acquire() as conn:
        await audit(conn, account.username, "simulation.stopped", "simulation", status.get("run"), {})
    return web.json_response(status)
