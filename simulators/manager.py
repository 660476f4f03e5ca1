"""Start, stop and watch a simulation from inside a running service (the API's operator endpoints).

The manager owns at most one run at a time, in a task on the caller's event loop; ``status()`` is a
JSON-ready dict. It never decides who may call it: the API's auth layer does (operator role).
Exercise mode is the default; a real-mode run must be asked for explicitly (``exercise=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from ingest.registry import Station
from simulators.fleet import Fleet, Stats
from simulators.scenario import Scenario, load_scenario, parse_scenario
from simulators.transport import make_publisher
from sonae.municipality_code import DRILL_TOWN_CODE

log = logging.getLogger("sonae.simulators.manager")


class SimulationBusy(RuntimeError):
    """A simulation is already running."""


#: the simulator's way out of a municipality the registry refuses
_WAY_OUT = (". A simulation places its gauges in a covered municipality with --municipality CODE (a replay; "
            "079995, the drill town, for an exercise) or a scenario file's municipality keys")


async def register_stations(pool: Any, stations: Sequence[Station], *, overwrite: bool = False) -> int:
    """Put the fleet's stations in the registry so ingest does not quarantine their readings.

    Stations already in the registry are left alone unless ``overwrite``: a drill must never
    rewrite a real gauge's thresholds. Returns how many were written. A run with stations in the drill town
    (a 持世寺 replay, :func:`simulators.replay.placed`) adds the town to the municipality list when it is
    missing (:func:`evac.store.name_drill_town`), as every service using it does: there it is covered, for
    exercises only, and named 訓練町 in the alerts' texts.

    Raises
    ------
    ingest.registry.RegistryError
        A station the registry refuses (:func:`ingest.registry.upsert_stations`: e.g. one of a municipality
        the deployment does not cover), or, without ``overwrite``, one already registered in another
        municipality than the run publishes it under: ingest would refuse every reading of it
        (``wrong_municipality``), so the drill would show nothing (found: a 持世寺 registered in 宇部市 by an
        earlier run while the replay now plays it in the drill town). Nothing is written then.
    """
    from ingest.municipalities import uncovered
    from ingest.registry import RegistryError, station_places, upsert_stations

    async with pool.acquire() as conn:
        if not overwrite:
            known = await station_places(conn, [s.id for s in stations])
            # a run into a municipality Sonae does not cover is refused for that first: a gauge registered
            # elsewhere was otherwise told to move there (found: --municipality 352021, 宇部市, answered "move
            # it there (PATCH … 352021)", which the registry refuses). The drill town is named by this run below.
            for s in stations:
                if s.id in known and s.municipality_code not in (None, DRILL_TOWN_CODE) and (
                        why := await uncovered(conn, s.municipality_code, exercise=s.exercise)):
                    raise RegistryError(f"station {s.id!r}: municipality_code: {why}{_WAY_OUT}")
            elsewhere = [(s, known[s.id].municipality) for s in stations
                         if s.id in known and known[s.id].municipality != s.municipality_code]
            if elsewhere:
                s, there = elsewhere[0]
                move = f"municipality_code {s.municipality_code}" + (", exercise true" if s.exercise else "")
                stay = f", or replay it where it is registered (--municipality {there})" if there else ""
                raise RegistryError(
                    f"station {s.id!r} is registered in {there or 'no municipality'}, but this run publishes it "
                    f"under {s.municipality_code}, so ingest would refuse its readings: move it there "
                    f"(PATCH /api/v1/stations/{s.id} with {move}){stay}")
            stations = [s for s in stations if s.id not in known]
        if any(s.municipality_code == DRILL_TOWN_CODE for s in stations):
            from evac.store import name_drill_town

            await name_drill_town(conn)  # a run using the drill town names it, as every service using it does
        try:
            return await upsert_stations(conn, stations) if stations else 0
        except RegistryError as exc:  # the registry's rule, with the simulator's way out
            raise RegistryError(f"{exc}{_WAY_OUT}") from None


class SimulationManager:
    def __init__(self, *, mqtt_url: str, prefix: str, pool: Any = None, transport: str = "fast",
                 protocol: str = "3.1.1", max_outstanding: int = 20000, max_future_s: float = 300.0) -> None:
        self.mqtt_url = mqtt_url
        self.prefix = prefix
        self.pool = pool
        self.transport = transport
        self.protocol = protocol
        self.max_outstanding = max_outstanding
        self.max_future_s = max_future_s
        self.run_id: str | None = None
        #: who started the current run and in which municipality (set by the caller; None: unknown)
        self.started_by: str | None = None
        self.scope: str | None = None
        self.fleet: Fleet | None = None
        self._task: asyncio.Task[Stats] | None = None
        self._stop = asyncio.Event()
        #: a start is between its busy check and its run's task (registering stations, connecting); set when
        #: that start has its task or has failed (what a stop asked meanwhile waits for)
        self._starting = False
        self._start_done = asyncio.Event()
        self._start_done.set()

    @classmethod
    def from_settings(cls, settings: Any, pool: Any = None) -> SimulationManager:
        return cls(mqtt_url=settings["mqtt.url"], prefix=settings["mqtt.topic_prefix"], pool=pool,
                   max_future_s=settings["ingest.max_future_s"])

    @property
    def running(self) -> bool:
        """A run is going, or a start has passed its busy check and is setting one up."""
        return self._starting or (self._task is not None and not self._task.done())

    async def start(self, scenario: Scenario | dict[str, Any] | str | Path, *, exercise: bool | None = None,
                    accel: float | None = None, duration_s: float | None = None,
                    register: bool = True,
                    authorize: Callable[[list[Station]], Awaitable[None]] | None = None,
                    started_by: str | None = None, scope: str | None = None) -> dict[str, Any]:
        """Start a run; ``scenario`` is a :class:`Scenario`, a parsed TOML document or a file path.
        ``started_by`` and ``scope`` (the starter's account and municipality, None: unknown or prefecture-wide)
        become :attr:`started_by` and :attr:`scope` as the start passes its busy check, with :attr:`run_id`
        None until the run has its id: whoever asks meanwhile is answered about this start, never about the
        run before it (found: another municipality's operator could "stop" the last, ended run, writing a
        false audit entry, and a 409 named the asker's own old run, while a new drill was being started).

        ``authorize`` is awaited with every station the run would publish for, before any station is
        registered or any message sent; whatever it raises stops the start.

        Raises :class:`SimulationBusy` while another run is active and
        :class:`~simulators.scenario.ScenarioError` for an invalid scenario. ``authorize`` is asked before
        the run is found busy: a caller who may not run these stations is refused as such, and learns
        nothing of a run going (found: another municipality's operator got 409 "simulation … is running"
        where the scope check answers 403).
        """
        if isinstance(scenario, dict):
            scenario = parse_scenario(scenario)
        elif isinstance(scenario, str | Path):
            scenario = load_scenario(scenario)
        scenario = scenario.with_overrides(exercise=exercise, accel=accel, duration_s=duration_s)
        fleet = Fleet(scenario, prefix=self.prefix, max_future_s=self.max_future_s)
        if authorize is not None:
            await authorize(list(fleet.stations))
        if self.running:
            raise SimulationBusy("a simulation is starting; try again when it runs, then stop it first"
                                 if self._starting else f"simulation {self.run_id} is running; stop it first")
        # from the busy check to the run's task, this start holds the manager: a second start arriving
        # while the stations register or the publisher connects (both await) is busy, never a second run
        # whose task would replace this one's and leave it running out of reach of stop()
        self._starting = True
        self._start_done.clear()
        self.started_by, self.scope = started_by, scope
        self.run_id, self.fleet = None, None
        try:
            if register and self.pool is not None:
                await register_stations(self.pool, fleet.stations)
            publisher = make_publisher(self.mqtt_url, client_id=f"sonae-sim-{uuid.uuid4().hex[:8]}",
                                       transport=self.transport, protocol=self.protocol,
                                       max_outstanding=self.max_outstanding)
            await publisher.connect()
        except BaseException:
            self._starting = False
            self._start_done.set()
            raise
        self._stop = asyncio.Event()
        self.fleet = fleet
        self.run_id = uuid.uuid4().hex[:12]
        log.info("simulation started", extra={"run": self.run_id, "scenario": scenario.name,
                                              "exercise": scenario.exercise})

        async def body() -> Stats:
            try:
                return await fleet.run(publisher, stop=self._stop)
            finally:
                await publisher.close()
                log.info("simulation ended", extra={"run": self.run_id, "state": fleet.stats.state,
                                                    "published": fleet.stats.published})

        fleet.stats.state = "running"  # from now on, even before the task's first step
        self._task = asyncio.get_running_loop().create_task(body())
        self._starting = False
        self._start_done.set()
        return self.status()

    @property
    def starting(self) -> bool:
        """A start has passed its busy check and is registering its stations or connecting to the broker."""
        return self._starting

    async def stop(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """Stop the run (published messages are flushed first) and return its final status. Asked while a
        run is starting, it waits for that start (its task, or its failure) and stops what it started."""
        if self._starting:
            await self._start_done.wait()
        if self._task is not None and not self._task.done():
            self._stop.set()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
            except Exception:
                pass  # the state and error are in the stats
        return self.status()

    async def wait(self) -> dict[str, Any]:
        """Wait for the current run to end by itself."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)
        return self.status()

    def status(self) -> dict[str, Any]:
        if self._starting:
            return {"run": None, "state": "starting"}
        if self.fleet is None:
            return {"run": None, "state": "idle"}
        stats = self.fleet.stats
        stats.update_rate()
        return {"run": self.run_id, **stats.as_dict()}
