"""The evacuation engine's service in one process: load, keep current, publish changes.

Hosted by the API process (``api.evacuation`` creates it, starts and stops it with the application and
turns :class:`EngineUnavailable` into a 503 problem); it imports nothing from ``api``.

Startup (a background task started from the application's cleanup context, so the API answers at
once and ``/readyz`` reports ``evac graph: not ready`` until the engine is built):

1. the road network comes from the setting ``evac.network``: a file (``.npz`` from ``sonae graph
   import``, ``.osm``, ``.osm.bz2``, ``.osm.pbf``, ``.graphml``), or ``drilltown``: the deterministic drill town is generated once into
   ``<state>/evac/drilltown`` and, while the ``shelters`` table is empty, its shelters and its
   gauge-linked exercise flood areas are imported (so ``sonae run --simulate`` routes out of the box);
   an empty setting disables routing (a fictional town must never answer real residents);
2. the network is loaded (through the ``.npz`` cache in the state directory) in an executor;
3. a dedicated connection LISTENs on ``sonae_evac`` (shelters and hazard areas changed) and, when the
   alerting tables exist, ``sonae_alerts`` (gauge alert levels changed), and when the JMA tables exist,
   ``sonae_official`` (official information applied); it reconnects with backoff and reloads everything
   after a reconnect;
4. shelters, hazard areas and current gauge levels are read and the engine is built in an executor.

Afterwards every notification marks the state dirty; one loop re-reads the database (notifications
coalesce), recomputes in an executor (the engine swaps its state atomically) and then publishes a
route-safety event ``{"type": "hazard_state", "version": .., "changed_at": ..}`` to in-process
subscribers (:meth:`EvacService.subscribe`) and with ``pg_notify('sonae_evac', ...)``.

Gauge areas and drills: the engine keys alert levels by station id. A drill (``exercise``) area is
keyed ``exercise:<station>`` and follows the station's *exercise* alerts; a real area follows its real
alerts. A drill therefore never puts a real area in force, and real routes never see drill areas.

Maps linked to official warnings (key ``jma_area:<6-digit code>:<phenomenon>``) take the highest level
of the official information in force for that municipality (``jma.store.in_force``, the source of
``alerting.level``) whose phenomenon names the same route hazard (``alerting.level.HAZARD_OF``: 土砂災害 →
landslide, 洪水 (氾濫) → flood, 津波 → tsunami, 高潮 → storm_surge); the link's phenomenon may be given
as that hazard (``landslide``) or as JMA names it (``土砂災害``, ``氾濫``); without one, the map's own
hazard is used. Real telegrams arm real maps, 訓練 telegrams arm drill maps only. 大雨 names no hazard and
arms nothing (see ``alerting.level``).

``hazard_version`` in answers is this process's engine version: it grows with every change this
process applied; processes count independently.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import math
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import shapely

from alerting.level import HAZARD_OF
from evac import store
from evac.coldfields import ColdFieldBudget, ColdFieldRefused
from evac.engine import Engine, FieldAt, FieldKey
from evac.graph import PROFILE_NAMES
from evac.hazards import HAZARD_TYPES, HazardArea, load_hazard_geojson
from evac.network import RoadNetwork, load_network
from evac.search import ProcessSearch, search_in_process
from evac.shelters import Shelter, load_shelters
from jma.store import in_force as official_in_force
from sonae.config import ConfigError, Settings
from sonae.db import DATABASE_ERRORS
from sonae.retry import keep_connected

log = logging.getLogger("sonae.api.evac")

DRILLTOWN = "drilltown"
#: The drill town the service generates: 50 x 50 intersections (about 2,500 nodes, under a second to build).
DRILLTOWN_SIZE = 50
DRILLTOWN_SEED = 7
ALERTS_CHANNEL = "sonae_alerts"
OFFICIAL_CHANNEL = "sonae_official"
JMA_AREA_PREFIX = "jma_area:"
EXERCISE_PREFIX = "exercise:"
#: How far beyond the outermost road node a position still counts as inside the service area.
SERVICE_MARGIN_M = 1000.0
#: Positions are rounded to 1e-4 degrees (about 10 m, finer than phone GPS in a town) before routing
#: (``api/evacuation.py``; the resident page rounds the same way before it sends one): a cell
POSITION_DECIMALS = 4
#: half a cell (degrees): how far outside the service area a position may lie and still be answered
HALF_CELL_DEG = 0.5 * 10.0 ** -POSITION_DECIMALS
#: times :meth:`EvacService.ensure_field` computes a field while the hazard state keeps changing under it before
#: it gives up (:class:`ColdFieldRefused` ``busy``: 503 with Retry-After): each try is a search, and the key is
#: kept (and so recomputed by every update) from the first on, so a second try rarely fails
FIELD_TRIES = 3
_SEED_LOCK = 0x45_56_41_43  # "EVAC": one process imports the drill town's data


def parse_warm(text: str) -> list[FieldKey]:
    """``walk:flood,car:flood:exercise`` → field keys; raises :class:`ConfigError` naming the setting.

    Spaces around an item are taken (``walk:flood, walk:landslide`` as typed in a TOML file); any other
    character around one (a line break, a tab, U+3000) makes it no known item (found: ``walk:flood\n`` was
    taken as ``walk:flood``, as every space-like character was trimmed)."""
    keys: list[FieldKey] = []
    for item in (p.strip(" ") for p in str(text).split(",")):
        if not item:
            continue
        parts = item.split(":")
        if (len(parts) not in (2, 3) or parts[0] not in PROFILE_NAMES or parts[1] not in HAZARD_TYPES
                or (len(parts) == 3 and parts[2] != "exercise")):
            raise ConfigError(f"evac.warm={text!r}: {item!r} is not profile:hazard[:exercise] with a profile of "
                              f"{', '.join(PROFILE_NAMES)} and a hazard of {', '.join(HAZARD_TYPES)}")
        keys.append((parts[0], parts[1], len(parts) == 3))
    return keys


def drilltown_dir(state_dir: Path) -> Path:
    return state_dir / "evac" / DRILLTOWN


def ensure_drilltown(state_dir: Path) -> Path:
    """Generate the drill town once (atomically: written aside, then renamed); returns its directory."""
    from evac.drilltown import generate

    target = drilltown_dir(state_dir)
    if (target / "town.osm").exists():
        return target
    tmp = target.with_name(f"{target.name}.tmp-{threading.get_ident()}-{id(target)}")
    shutil.rmtree(tmp, ignore_errors=True)
    generate(tmp, rows=DRILLTOWN_SIZE, cols=DRILLTOWN_SIZE, seed=DRILLTOWN_SEED)
    try:
        tmp.rename(target)
    except OSError:  # another process got there first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "town.osm").exists():
            raise
    return target


def network_path(source: str, state_dir: Path) -> Path:
    """The road network file for the setting ``evac.network`` (generating the drill town if asked)."""
    if source == DRILLTOWN:
        return ensure_drilltown(state_dir) / "town.osm"
    return Path(source).expanduser()


def link_hazard(phenomenon: str, *, map_hazard: str) -> str | None:
    """The route hazard a ``jma_area`` link's phenomenon names (None: none, the link never arms).

    ``landslide`` / ``土砂災害`` → landslide, ``flood`` / ``洪水`` / ``氾濫`` → flood, ...; empty → ``map_hazard``.
    """
    p = phenomenon.strip()
    if not p:
        return map_hazard
    if p in HAZARD_TYPES:
        return p
    return HAZARD_OF.get("洪水" if p == "氾濫" else p)


def official_levels(rows: list[dict[str, Any]], keys: dict[str, str]) -> dict[str, int]:
    """Levels of ``jma_area`` keys from official information in force.

    ``rows`` as :func:`jma.store.in_force`; ``keys`` maps each key (``[exercise:]jma_area:CODE:PHENOMENON``)
    to the hazard of the map using it. A key's level is the highest of the rows of its municipality whose
    phenomenon names the key's hazard, real rows for real keys and 訓練 rows for drill keys; keys with
    nothing in force are left out.
    """
    best: dict[tuple[str, str, bool], int] = {}
    for r in rows:
        hazard = HAZARD_OF.get(r["phenomenon"])
        if hazard is not None:
            k = (r["municipality_code"], hazard, bool(r["exercise"]))
            best[k] = max(best.get(k, 0), int(r["level"]))
    out: dict[str, int] = {}
    for key, map_hazard in keys.items():
        exercise = key.startswith(EXERCISE_PREFIX)
        code, _, phenomenon = key.removeprefix(EXERCISE_PREFIX).removeprefix(JMA_AREA_PREFIX).partition(":")
        hazard = link_hazard(phenomenon, map_hazard=map_hazard)
        level = best.get((code, hazard, exercise), 0) if hazard else 0
        if level:
            out[key] = level
    return out


def _area_for_engine(area: HazardArea) -> HazardArea:
    if area.source == "gauge" and area.exercise and area.station_id is not None:
        return replace(area, station_id=EXERCISE_PREFIX + area.station_id)
    return area


# -- the road map for drawing (network.geojson) ---------------------------------------------------
_RANK = {"motorway": 0, "trunk": 0, "primary": 0, "secondary": 0, "tertiary": 0, "motorway_link": 0,
         "trunk_link": 0, "primary_link": 0, "secondary_link": 0, "tertiary_link": 0, "unclassified": 1,
         "residential": 1, "living_street": 1, "road": 1, "service": 2}


class NetworkMap:
    """Road lines for drawing a map without tiles: one line per street segment, simplified, bounded."""

    MAX_FEATURES = 8000
    MAX_SPAN_DEG = 1.0
    GRID_DEG = 0.005  # requests are widened to this grid, so similar views share a cache entry
    CACHE_SIZE = 64

    def __init__(self, net: RoadNetwork) -> None:
        self.net = net
        a, b = np.minimum(net.edge_u, net.edge_v), np.maximum(net.edge_u, net.edge_v)
        key = np.stack([a, b, np.round(net.edge_length).astype(np.int64)], axis=1)
        _, first = np.unique(key, axis=0, return_index=True)  # a two-way street is drawn once
        edges = np.sort(first)
        starts = net.coord_offsets[:-1]
        lon, lat = net.coords[:, 0], net.coords[:, 1]
        self.edges = edges
        self.xmin = np.minimum.reduceat(lon, starts)[edges]
        self.xmax = np.maximum.reduceat(lon, starts)[edges]
        self.ymin = np.minimum.reduceat(lat, starts)[edges]
        self.ymax = np.maximum.reduceat(lat, starts)[edges]
        rank_of_name = [min((_RANK.get(p.strip(), 3) for p in n.split("/")), default=3) for n in net.names]
        self.rank = np.array(rank_of_name, dtype=np.int8)[net.edge_highway[edges]]
        self.bounds = (float(net.node_lon.min()), float(net.node_lat.min()), float(net.node_lon.max()),
                       float(net.node_lat.max()))
        self._cache: OrderedDict[tuple[int, int, int, int], tuple[bytes, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def grid_key(self, west: float, south: float, east: float, north: float) -> tuple[int, int, int, int]:
        g = self.GRID_DEG
        return (math.floor(west / g), math.floor(south / g), math.ceil(east / g), math.ceil(north / g))

    def geojson(self, key: tuple[int, int, int, int]) -> tuple[bytes, bytes]:
        """The FeatureCollection for a grid-aligned box: JSON bytes and their gzip (cached)."""
        with self._lock:
            body = self._cache.get(key)
            if body is not None:
                self._cache.move_to_end(key)
                return body
        raw = self._build(key)
        body = (raw, gzip.compress(raw, compresslevel=6, mtime=0))
        with self._lock:
            self._cache[key] = body
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return body

    def _build(self, key: tuple[int, int, int, int]) -> bytes:
        g = self.GRID_DEG
        west, south, east, north = key[0] * g, key[1] * g, key[2] * g, key[3] * g
        hit = np.flatnonzero((self.xmax >= west) & (self.xmin <= east) & (self.ymax >= south) & (self.ymin <= north))
        truncated = hit.size > self.MAX_FEATURES
        if truncated:  # keep the main roads
            hit = hit[np.argsort(self.rank[hit], kind="stable")[:self.MAX_FEATURES]]
            hit.sort()
        net = self.net
        features: list[dict[str, Any]] = []
        if hit.size:
            edges = self.edges[hit]
            starts, ends = net.coord_offsets[edges], net.coord_offsets[edges + 1]
            counts = ends - starts
            idx = np.concatenate([np.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])
            lines = shapely.linestrings(net.coords[idx], indices=np.repeat(np.arange(edges.size), counts))
            tolerance = max(east - west, north - south) / 2000.0  # about a pixel on a large screen
            lines = shapely.simplify(lines, tolerance, preserve_topology=False)
            for e, line in zip(edges.tolist(), lines.tolist(), strict=True):
                name_ix = int(net.edge_name[e])
                features.append({"type": "Feature", "geometry": {
                    "type": "LineString", "coordinates": np.round(shapely.get_coordinates(line), 5).tolist()},
                    "properties": {"name": net.names[name_ix] if name_ix >= 0 else "",
                                   "highway": net.names[int(net.edge_highway[e])]}})
        doc = {"type": "FeatureCollection", "bbox": [round(west, 6), round(south, 6), round(east, 6), round(north, 6)],
               "truncated": bool(truncated), "features": features}
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


# -- the service ----------------------------------------------------------------------------------
#: the Retry-After (s) of an answer that has to wait for the road network still loading
LOADING_RETRY_AFTER_S = 5


class EngineUnavailable(Exception):
    """No engine to answer with; ``retry_after_s`` is set when waiting will help (still loading)."""

    def __init__(self, reason: str, *, retry_after_s: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class EvacService:
    """One process's engine, kept in step with the database."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings, *, reconnect_max_s: float = 5.0) -> None:
        self.pool = pool
        self.settings = settings
        self.source: str = settings["evac.network"] or ""  # exactly as set (sonae.config refuses blanks around it)
        self.warm = parse_warm(settings["evac.warm"])
        self.search: ProcessSearch | None = ProcessSearch() if settings["evac.search_worker"] else None
        #: admission of fields a request asks for that are neither warm nor computed (:mod:`evac.coldfields`)
        self.cold = ColdFieldBudget(per_client_per_minute=settings["evac.cold_fields_per_client_per_minute"],
                                    per_minute=settings["evac.cold_fields_per_minute"],
                                    waiting=settings["evac.cold_fields_waiting"])
        self.reconnect_max_s = reconnect_max_s
        self.engine: Engine | None = None
        self.network: RoadNetwork | None = None
        self.map: NetworkMap | None = None
        self.service_area: tuple[float, float, float, float] | None = None
        self.failed: str | None = None
        self.loaded = asyncio.Event()
        #: set once the first load has ended, loaded or not; ``file_fault`` then says the file was bad
        self.settled = asyncio.Event()
        self.file_fault: str | None = None
        self.listening = asyncio.Event()
        self.listen_pid: int | None = None  # server pid of the LISTEN connection
        self.area_rows: dict[str, dict[str, Any]] = {}  # rows of the engine's areas, for the hazards endpoint
        self._pending_rows: dict[str, dict[str, Any]] = {}
        self._areas: dict[str, HazardArea] = {}  # as given to the engine (objects reused while unchanged)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._wake = asyncio.Event()
        self._dirty_evac = False
        self._dirty_alerts = False
        self._has_alerts = False
        self._has_official = False
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return bool(self.source)

    def is_ready(self) -> bool:
        return self.engine is not None

    # -- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        if not self.enabled:
            log.warning("evacuation routing is off: set evac.network to a road network file (or 'drilltown')")
            return
        self._tasks.append(asyncio.create_task(self._run(), name="evac-service"))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.search is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.search.close)
        # let go of the network's mapped arrays (each holds a file descriptor) even where something still
        # holds this service (aiohttp caches a stopped application's middleware chain)
        self.engine, self.network, self.map = None, None, None
        self.area_rows, self._areas = {}, {}

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        state_dir = self.settings.state_dir
        try:
            path = await loop.run_in_executor(None, network_path, self.source, state_dir)
            if self.source == DRILLTOWN:
                await self._seed_drilltown(path.parent)
            log.info("loading road network", extra={"source": str(path)})
            try:
                net = await loop.run_in_executor(None, partial(load_network, path, state_dir=state_dir))
            except (ValueError, OSError) as exc:  # the file itself: damaged, truncated, the wrong arrays
                self.file_fault = str(exc)
                raise
            async with self.pool.acquire() as conn:
                self._has_alerts = bool(await conn.fetchval("SELECT to_regclass('alerts') IS NOT NULL"))
                self._has_official = bool(await conn.fetchval(
                    "SELECT to_regclass('jma_official_info') IS NOT NULL"))
            self._tasks.append(asyncio.create_task(self._listen(), name="evac-listen"))
            await self.listening.wait()  # changes from here on are seen, so the read below is not stale
            self._dirty_evac = self._dirty_alerts = False
            shelters, areas = await self._read_evac()
            levels = await self._read_levels()
            engine = await loop.run_in_executor(None, partial(
                Engine, net, shelters=shelters, areas=areas, alert_levels=levels, warm=self.warm,
                max_fields=self.settings["evac.max_fields"],
                search=self.search or search_in_process))
            nmap = await loop.run_in_executor(None, NetworkMap, net)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed = f"{type(exc).__name__}: {exc}"
            # one readable line (the setting's check already stopped start-up for a missing file)
            log.error("the road network could not be loaded: routes answer 503 until evac.network is fixed",
                      extra={"source": self.source, "error": self.failed})
            return
        finally:
            self.settled.set()
        self.network, self.map, self.area_rows = net, nmap, self._pending_rows
        w, s, e, n = nmap.bounds
        mid = math.radians((s + n) / 2)
        dlat = SERVICE_MARGIN_M / 111_320.0
        dlon = dlat / max(math.cos(mid), 0.01)
        self.service_area = (w - dlon, s - dlat, e + dlon, n + dlat)
        self.engine = engine
        self.loaded.set()
        log.info("evacuation engine ready", extra={"nodes": net.n_nodes, "edges": net.n_edges,
                                                     "shelters": len(shelters), "hazard_areas": len(areas)})
        await self._apply_loop()

    async def _seed_drilltown(self, town: Path) -> None:
        """Name the drill town (its municipalities row); import its shelters and flood areas while the shelters
        table is empty."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SEED_LOCK)
            await store.name_drill_town(conn)
            if await store.count_shelters(conn):
                return
            shelters = load_shelters(town / "shelters.geojson")
            areas = load_hazard_geojson(town / "hazards.geojson", source_kind="gauge")
            await store.import_shelters(conn, shelters, actor=DRILLTOWN, source=DRILLTOWN)
            await store.import_hazard_areas(conn, areas, actor=DRILLTOWN)
        log.info("imported the drill town's shelters and hazard areas",
                 extra={"shelters": len(shelters), "hazard_areas": len(areas)})

    # -- reading the database ---------------------------------------------------------------------
    async def _read_evac(self) -> tuple[list[Shelter], list[HazardArea]]:
        async with self.pool.acquire() as conn:
            shelter_rows = await store.shelter_rows(conn)
            area_rows = await store.hazard_area_rows(conn)
        shelters = [store.shelter_from_row(r) for r in shelter_rows]
        areas: dict[str, HazardArea] = {}
        rows: dict[str, dict[str, Any]] = {}
        for r in area_rows:
            if r["source"] == "gauge" and not r["active"]:
                continue  # a disarmed gauge area
            try:
                a = _area_for_engine(store.area_from_row(r))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                log.warning("hazard area skipped", extra={"area_id": r["id"], "error": str(exc)})
                continue
            old = self._areas.get(a.id)
            areas[a.id] = old if old == a else a  # the same object keeps the engine's edge-hit cache
            rows[a.id] = r
        self._areas = areas
        self._pending_rows = rows  # shown by the hazards endpoint once the engine has these areas
        return shelters, list(areas.values())

    async def _read_levels(self) -> dict[str, int]:
        """Current levels of the keys linked areas use: gauges, rivers and official warning areas."""
        if not (self._has_alerts or self._has_official):
            return {}
        official = {a.station_id: a.hazard for a in self._areas.values()
                    if a.source == "gauge" and a.station_id
                    and a.station_id.removeprefix(EXERCISE_PREFIX).startswith(JMA_AREA_PREFIX)}
        async with self.pool.acquire() as conn:
            recs = [] if not self._has_alerts else await conn.fetch(
                """SELECT a.station_id, a.exercise, max(a.level) AS level, s.river FROM alerts a
                   LEFT JOIN stations s ON s.id = a.station_id
                   WHERE a.cleared_at IS NULL AND a.condition = 'river_level' AND a.station_id IS NOT NULL
                   GROUP BY a.station_id, a.exercise, s.river""")
            rows = await official_in_force(conn) if official and self._has_official else []
        linked = {a.station_id for a in self._areas.values() if a.source == "gauge"}
        levels: dict[str, int] = {}
        for r in recs:
            prefix = EXERCISE_PREFIX if r["exercise"] else ""
            keys = [prefix + r["station_id"]]
            if r["river"]:  # a hazard map linked to a river is in force at the highest level of its gauges
                keys.append(f"{prefix}river:{r['river']}")
            for key in keys:
                levels[key] = max(levels.get(key, 0), int(r["level"]))
        levels = {k: v for k, v in levels.items() if k in linked}  # other gauges change no route
        return levels | official_levels(rows, official)

    # -- listening and applying -------------------------------------------------------------------
    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if channel == store.NOTIFY_CHANNEL:
            try:
                if json.loads(payload).get("type") == "hazard_state":
                    return  # a process announcing its own recompute, not a data change
            except (ValueError, AttributeError):
                pass
            self._dirty_evac = True
        else:
            self._dirty_alerts = True
        self._wake.set()

    async def _listen(self) -> None:
        await keep_connected(self._listen_once, target="postgres-listen", stopped=lambda: self._stopping,
                             cap=self.reconnect_max_s)

    async def _listen_once(self, connected: Callable[[], None]) -> None:
        async with self.pool.acquire() as conn:
            lost = asyncio.Event()

            def on_lost(*_: Any, lost: asyncio.Event = lost) -> None:
                lost.set()

            conn.add_termination_listener(on_lost)
            channels = ([store.NOTIFY_CHANNEL] + ([ALERTS_CHANNEL] if self._has_alerts else [])
                        + ([OFFICIAL_CHANNEL] if self._has_official else []))
            for ch in channels:
                await conn.add_listener(ch, self._on_notify)
            if self.listening.is_set():  # a reconnect: changes may have been missed
                self._dirty_evac = self._dirty_alerts = True
                self._wake.set()
            self.listen_pid = conn.get_server_pid()
            self.listening.set()
            connected()
            try:
                await lost.wait()
            finally:
                for ch in channels:
                    with contextlib.suppress(Exception):
                        await conn.remove_listener(ch, self._on_notify)
            raise ConnectionError("evac listen connection lost")

    async def _apply_loop(self) -> None:
        """Apply changes as notifications arrive. A failed reload is tried again by itself, after
        ``retry_s`` doubling from 1 s up to ``reconnect_max_s`` (and at once on the next notification or
        reconnect): a failure that is not the database's (a damaged file, a bug) must not leave this
        process on an old hazard state until something else happens to change."""
        retry_s = 1.0
        retry: asyncio.TimerHandle | None = None
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            evac, alerts = self._dirty_evac, self._dirty_alerts
            self._dirty_evac = self._dirty_alerts = False
            if not (evac or alerts):
                continue
            if retry is not None:
                retry.cancel()
                retry = None
            try:
                await self.refresh(evac=evac, alerts=alerts)
                retry_s = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._dirty_evac |= evac
                self._dirty_alerts |= alerts
                log.warning("evac reload failed; trying again", extra={
                    "error": f"{type(exc).__name__}: {str(exc)[:300]}", "retry_s": retry_s})
                retry = asyncio.get_running_loop().call_later(retry_s, self._wake.set)
                retry_s = min(retry_s * 2, max(1.0, self.reconnect_max_s))

    async def refresh(self, *, evac: bool = True, alerts: bool = True) -> bool:
        """Re-read the database and recompute if anything changed; True when the state changed."""
        engine = self.engine
        if engine is None:
            return False
        st = engine.state
        changes: dict[str, Any] = {}
        if evac:
            shelters, areas = await self._read_evac()
            if {s.id: s for s in shelters} != dict(st.shelters):
                changes["shelters"] = shelters
            if {a.id: a for a in areas} != dict(st.areas):
                changes["areas"] = areas
        if (alerts or evac) and (self._has_alerts or self._has_official):  # new linked areas need their level
            levels = await self._read_levels()
            full = {k: 0 for k in st.alert_levels} | levels  # a cleared alert puts its areas out of force
            if {k: v for k, v in full.items() if v} != {k: v for k, v in st.alert_levels.items() if v}:
                changes["alert_levels"] = full
        if not changes:
            self.area_rows = self._pending_rows  # e.g. a municipality code changed: nothing to recompute
            return False
        loop = asyncio.get_running_loop()
        new = await loop.run_in_executor(None, partial(engine.update, **changes))
        self.area_rows = self._pending_rows
        log.info("hazard state changed", extra={"version": new.version, "changed": ",".join(sorted(changes))})
        await self._publish({"type": "hazard_state", "version": new.version,
                             "changed_at": new.changed_at.isoformat().replace("+00:00", "Z")})
        return True

    # -- route-safety events ------------------------------------------------------------------------
    def subscribe(self, maxsize: int = 64) -> asyncio.Queue[dict[str, Any]]:
        """A queue receiving every route-safety event of this process (drop it with :meth:`unsubscribe`)."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    async def _publish(self, event: dict[str, Any]) -> None:
        for q in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                q.put_nowait(event)
        try:
            async with self.pool.acquire() as conn:
                await conn.execute("SELECT pg_notify($1, $2)", store.NOTIFY_CHANNEL, json.dumps(event))
        except DATABASE_ERRORS as exc:
            log.warning("could not publish the hazard state event", extra={"error": str(exc)})

    # -- for handlers ---------------------------------------------------------------------------------
    def require(self) -> Engine:
        """The engine.

        Raises
        ------
        EngineUnavailable
            There is none (routing not configured, the network failed to load, or still loading).
        """
        if self.engine is not None:
            return self.engine
        if not self.enabled:
            raise EngineUnavailable("evacuation routing is not configured on this server")
        if self.failed:
            raise EngineUnavailable("the road network could not be loaded; operators see the log")
        raise EngineUnavailable("the road network is still loading; try again shortly",
                                retry_after_s=LOADING_RETRY_AFTER_S)

    @property
    def loading(self) -> bool:
        """Whether the road network is still being loaded: configured, not loaded, not failed (waiting helps)."""
        return self.enabled and self.engine is None and not self.failed and not self.settled.is_set()

    def in_service_area(self, lat: float, lon: float) -> bool:
        a = self.service_area
        return a is not None and a[0] <= lon <= a[2] and a[1] <= lat <= a[3]

    def placed(self, lat: float, lon: float) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """The position and its cell, ``((lat, lon), (cell_lat, cell_lon))`` in degrees, both held within
        :attr:`service_area`; None when the position's cell lies outside it.

        A cell is the position rounded to :data:`POSITION_DECIMALS` (about 10 m), so a position on the
        area's edge may round over it, and a page that rounds before sending (``resident.js``) may send
        a position just over it: a position is in the area when it lies within half a cell of it, and
        what is answered for is held on the edge (the engine's ``in_area`` is the same box, so it never
        answers ``outside_area`` for a position this accepted).
        """
        a = self.service_area
        h = HALF_CELL_DEG
        if a is None or not (a[0] - h <= lon <= a[2] + h and a[1] - h <= lat <= a[3] + h):
            return None

        def held(y: float, x: float) -> tuple[float, float]:
            return min(max(y, a[1]), a[3]), min(max(x, a[0]), a[2])

        return held(lat, lon), held(round(lat, POSITION_DECIMALS), round(lon, POSITION_DECIMALS))

    async def ensure_field(self, key: FieldKey, *, client: str | None = None) -> FieldAt:
        """The field of ``key`` at the current hazard state, with that state, computed off the event loop
        when it is not yet.

        Answer from what this returns (the engine's queries take it as ``at=``): the engine's state may
        change at any moment (updates swap a new one in from another thread), and a field may be pushed out
        of those kept by other keys; a query asking the engine for the field again could then find none and
        compute it where it runs, on the event loop (issue 21: ~0.5 s at 1M nodes, ~2 s at 3M, a stall of
        the whole API). When the state changed while the field was computed (the field is for the previous
        state and the new one has none), it is computed again at the new state, up to :data:`FIELD_TRIES`
        times in all (the tries after the first charged to the process only, not to the client).

        Configured fields (``evac.warm``) always are computed, and are never refused; up to
        ``evac.max_fields`` others are kept while used. Any other (a *cold* field) is computed within
        :attr:`cold`'s budget: requests for a key in flight share its computation; ``client`` (an address,
        or None for no per-client bound) is charged for a new one.

        Raises
        ------
        EngineUnavailable
            No engine (:meth:`require`).
        evac.coldfields.ColdFieldRefused
            The client's budget (``reason`` ``client``) or the process's (``busy``) is used up, or the
            hazard state changed under every try (``busy``).
        """
        engine = self.require()
        loop = asyncio.get_running_loop()

        async def compute() -> FieldAt:
            at = engine.computed(*key)  # (it may have been computed while this waited its turn)
            return at if at is not None else await loop.run_in_executor(None, partial(engine.field_at, *key))

        for attempt in range(FIELD_TRIES):
            at = engine.computed(*key)
            if at is not None:
                return at
            if key in engine.warm:  # (computed at every change; only between a swap and its fields, if ever)
                at = await loop.run_in_executor(None, partial(engine.field_at, *key))
            else:
                at = await self.cold.run((key, id(engine)), client if attempt == 0 else None, compute)
            if at.state is engine.state:
                return at
        at = engine.computed(*key)
        if at is not None:
            return at
        log.warning("the hazard state changed under every computation of a route field; answered busy",
                    extra={"field": ":".join((*key[:2], "exercise") if key[2] else key[:2]),
                           "tries": FIELD_TRIES, "version": engine.state.version})
        raise ColdFieldRefused("busy", self.cold.last_s)
