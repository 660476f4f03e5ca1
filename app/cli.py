"""The ``sonae`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from sonae.arguments import bbox as bbox_argument
from sonae.arguments import http_url, municipality_code, port, row_id, shown_line
from sonae.arguments import text as text_argument
from sonae.config import ConfigError, Settings, describe_schema, load_settings
from sonae.embedded import EmbeddedError
from sonae.eventloop import lag_watched
from sonae.jsonkeys import loads_unique
from sonae.logs import setup_logging
from sonae.migrations import MigrationError

log = logging.getLogger("sonae.cli")


class CommandError(Exception):
    """Bad input to a command (a file, an argument, the terminal): printed as one line, exit status 2."""


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(config_file=args.config)
    overrides: dict[str, Any] = {}
    if getattr(args, "port", None) is not None:
        overrides["api__port"] = args.port
    if getattr(args, "state_dir", None):
        overrides["state__dir"] = args.state_dir
    return settings.replace(**overrides) if overrides else settings


def _with_services(
    args: argparse.Namespace, body: Callable[[Settings], Coroutine[Any, Any, None]], *, need_broker: bool = True,
    create: bool = True,
) -> int:
    """Run ``body`` with the backing services; ``create=False`` never creates a new embedded database."""
    from app.runtime import BackingServices

    settings = _settings(args)
    setup_logging(level=settings["log.level"], fmt=settings["log.format"])
    services = BackingServices(settings)
    try:
        effective = services.start(need_broker=need_broker, create=create)
        asyncio.run(body(effective))
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()
    return 0


def _on_database(args: argparse.Namespace, action: Callable[[Any], Awaitable[str]]) -> int:
    """Run ``action(connection)`` on the (migrated) database and print the line it returns."""

    async def body(settings: Settings) -> None:
        from app.runtime import open_pool

        pool = await open_pool(settings, migrate_schema=True, create=False)
        try:
            async with pool.acquire() as conn:
                message = await action(conn)
        finally:
            await pool.close()
        if message:
            print(message)

    return _with_services(args, body, need_broker=False, create=False)


# -- commands ------------------------------------------------------------------------------------
#: where a running API records the address it serves, in the state directory (``sonae status`` reads it;
#: the embedded broker records its own in ``mqtt/broker.json``, ``sonae.embedded.EmbeddedBroker``)
API_RECORD = "api.json"


def _live_record(path: Path) -> dict[str, Any] | None:
    """A ``{"pid": .., "port": .., ...}`` record written by a running process, or None when there is none, it
    cannot be read, or its process has ended (a record left by a killed process is not believed)."""
    import os

    try:
        record = json.loads(path.read_text())
        pid, port = int(record["pid"]), int(record["port"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process: alive
    return record if 0 < port < 65536 else None


async def _serve_api(settings: Settings, pool: Any, stop: asyncio.Event) -> None:
    """Serve the API, recording its address in the state directory (:data:`API_RECORD`) while it runs, so
    that ``sonae status`` asks the port this run uses (found: ``run --port 8096`` reported as not running,
    status asking 8080)."""
    import os

    from api.server import serve

    record = settings.state_dir / API_RECORD
    mine = {"pid": os.getpid(), "host": settings["api.host"], "port": settings["api.port"]}
    try:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = record.with_name(f"{API_RECORD}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(mine))
        tmp.replace(record)
    except OSError as exc:  # a read-only state directory: status falls back to the settings
        log.warning("could not record the API's address", extra={"path": str(record), "error": str(exc)})
    try:
        await serve(settings, pool, stop)
    finally:
        with contextlib.suppress(OSError, ValueError):
            if json.loads(record.read_text()).get("pid") == os.getpid():
                record.unlink()


async def _ingest(settings: Settings, pool: Any, stop: asyncio.Event, instance: str = "0") -> None:
    from ingest.housekeeping import housekeeping_loop
    from ingest.service import Ingestor

    ingestor = Ingestor.from_settings(settings, pool, instance=instance)
    house = asyncio.create_task(housekeeping_loop(
        pool, retention_days=settings["database.retention_days"],
        dead_letter_retention_days=settings["ingest.dead_letter_retention_days"]))
    run = asyncio.create_task(ingestor.run())
    # -- alerting: the rules worker (one leader across all processes, elected by advisory lock) --
    from alerting.worker import run_rules_worker

    rules = asyncio.create_task(run_rules_worker(settings, pool, stop))
    # -- end alerting --
    # -- notify: a delivery worker (Web Push, webhooks, email); every process shares the queue --
    from notify.worker import run_delivery_worker

    deliver = asyncio.create_task(run_delivery_worker(settings, pool, stop))
    # -- end notify --
    # -- ngsi: upserts of changed public entities to a context broker (only with ngsi.broker_url) --
    from ngsi.push import run_push_worker

    push = asyncio.create_task(run_push_worker(settings, pool, stop))
    # -- end ngsi --
    from ingest.health import serving_health

    try:
        async with serving_health(ingestor, pool, host=settings["api.host"], port=settings["ingest.metrics_port"]):
            await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                run.result()
    finally:
        ingestor.stop()
        house.cancel()
        rules.cancel()  # alerting
        deliver.cancel()  # notify
        push.cancel()  # ngsi
        await asyncio.gather(run, house, rules, deliver, push, return_exceptions=True)


async def _demo(settings: Settings, pool: Any, stop: asyncio.Event, *, exercise: bool) -> None:
    from ingest.registry import upsert_stations
    from simulators.demo import demo_stations, drilltown_stations, run_demo
    from sonae.mqtt import MqttClient, default_client_id

    scale = settings["simulators.demo_time_scale"]  # the river's clock, and its stations' (the rules judge on it)
    stations = demo_stations(scale)
    if settings["evac.network"] == "drilltown":  # the drill town's own gauges close the loop to routes
        from evac.service import ensure_drilltown

        town = await asyncio.get_running_loop().run_in_executor(None, ensure_drilltown, settings.state_dir)
        stations = drilltown_stations(town, scale)
    async with pool.acquire() as conn:
        await upsert_stations(conn, stations)
    async with MqttClient(settings["mqtt.url"], client_id=default_client_id("sim"),
                          protocol=settings["mqtt.protocol"], target="mqtt-simulator") as mqtt:
        await run_demo(mqtt, prefix=settings["mqtt.topic_prefix"], exercise=exercise, stop=stop, stations=stations,
                       time_scale=scale)


async def _ensure_drill_account(settings: Settings, pool: Any) -> None:
    """The demo's staff account ``drill``: scoped to the simulated municipality; its password is random
    and printed once, when the account is made (``sonae users passwd drill`` sets another)."""
    import secrets

    from api.auth import AccountError, create_account
    from evac.store import name_drill_town
    from simulators.demo import DRILLTOWN_MUNICIPALITY, MUNICIPALITY

    code = DRILLTOWN_MUNICIPALITY if settings["evac.network"] == "drilltown" else MUNICIPALITY
    password = secrets.token_urlsafe(12)
    async with pool.acquire() as conn:
        if await conn.fetchval("SELECT count(*) FROM accounts WHERE username = 'drill'"):
            print("Staff console login: user drill (its password was printed at the first --simulate start; "
                  "`sonae users passwd drill` sets a new one)", flush=True)
            return
        if code == DRILLTOWN_MUNICIPALITY:  # named before its account (accounts name listed municipalities only)
            await name_drill_town(conn)
        try:
            await create_account(conn, username="drill", password=password, role="staff", municipality_code=code,
                                 display_name="訓練 職員 (demo)")
        except AccountError as exc:  # another process made it in the meantime
            log.info("drill account not created", extra={"reason": str(exc)})
            return
    print(f"Staff console login: user drill, password {password} (shown once; staff of the simulated "
          f"municipality {code} only)", flush=True)


def cmd_run(args: argparse.Namespace) -> int:
    if args.real and not args.simulate:
        # found: `sonae run --real` ran as `sonae run`, the option unread. A usage error, not an implied
        # --simulate: whoever types it may mean "real mode, no simulation" (what `sonae run` already is), and
        # guessing the other way would publish simulated readings marked real into a deployment
        raise CommandError("--real marks the simulated gauges' readings as real, so it needs --simulate; "
                           "`sonae run` alone already runs for real, with no simulated readings")

    async def body(settings: Settings) -> None:
        from app.runtime import open_pool, stop_event_on_signals, supervise

        stop = stop_event_on_signals()
        # -- evac: with --simulate, routes run in the generated drill town unless a road network is set --
        if args.simulate and not settings["evac.network"]:
            settings = settings.replace(evac__network="drilltown")
        # -- end evac --
        pool = await open_pool(settings, migrate_schema=True)
        if args.simulate:
            await _ensure_drill_account(settings, pool)
        tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "ingest": lambda: _ingest(settings, pool, stop),
            "api": lambda: _serve_api(settings, pool, stop),
        }
        if args.simulate:
            tasks["simulator"] = lambda: _demo(settings, pool, stop, exercise=not args.real)
        try:
            async with lag_watched():  # sonae_event_loop_lag_seconds
                await supervise(tasks, stop)
        finally:
            await pool.close()
            log.info("sonae stopped")

    return _with_services(args, body)


def cmd_ingest(args: argparse.Namespace) -> int:
    async def body(settings: Settings) -> None:
        from app.runtime import open_pool, stop_event_on_signals

        stop = stop_event_on_signals()
        pool = await open_pool(settings, migrate_schema=True)
        try:
            async with lag_watched():  # sonae_event_loop_lag_seconds
                await _ingest(settings, pool, stop, instance=args.instance)
        finally:
            await pool.close()

    return _with_services(args, body)


def cmd_api(args: argparse.Namespace) -> int:
    async def body(settings: Settings) -> None:
        from app.runtime import open_pool, stop_event_on_signals

        stop = stop_event_on_signals()
        pool = await open_pool(settings, migrate_schema=True)
        try:
            async with lag_watched():  # sonae_event_loop_lag_seconds
                await _serve_api(settings, pool, stop)
        finally:
            await pool.close()

    return _with_services(args, body, need_broker=False)


# -- simulate (simulators/command.py) --
def cmd_simulate(args: argparse.Namespace) -> int:
    from simulators import command

    if getattr(args, "jma", None) is not None:
        from simulators.jma_feed import serve

        if not args.jma.is_dir() or not any(args.jma.glob("*.xml")):
            print(f"sonae simulate: --jma {args.jma} is not a directory of *.xml telegrams", file=sys.stderr)
            return 2
        from app.runtime import stop_event_on_signals

        async def feed() -> None:
            await serve(args.jma, port=args.jma_port, interval_s=args.jma_interval_s, stop=stop_event_on_signals())

        asyncio.run(feed())
        return 0

    if (ignored := command.demo_ignores(args)) is not None:
        print(f"sonae simulate: {ignored}", file=sys.stderr)
        return 2
    planned = command.check(args) if command.wants_fleet(args) else None
    if command.wants_fleet(args) and planned is None:
        return 2

    async def body(settings: Settings) -> None:
        from app.runtime import open_pool, stop_event_on_signals

        stop = stop_event_on_signals()
        if planned is not None:
            await command.run(settings, args, stop, *planned)
            return
        pool = await open_pool(settings, migrate_schema=True)
        try:
            await _demo(settings, pool, stop, exercise=not args.real)
        finally:
            await pool.close()

    return _with_services(args, body)
# -- end simulate --


def cmd_db_migrate(args: argparse.Namespace) -> int:
    async def body(settings: Settings) -> None:
        from app.runtime import open_pool, prepare_schema

        pool = await open_pool(settings)
        try:
            applied = await prepare_schema(pool, settings)
        finally:
            await pool.close()
        if applied:
            print(f"applied {len(applied)} migration(s): " + ", ".join(applied))
        else:
            print("schema is up to date")

    return _with_services(args, body, need_broker=False)


def _mlit_stations(path: str) -> list[Any]:
    """One registry station per gauge of an MLIT 川の水位情報 CSV (the newest row's thresholds)."""
    from simulators.replay import ReplayError, mlit_station, read_mlit_rows

    try:
        rows = read_mlit_rows(path)
    except ReplayError as exc:
        raise CommandError(str(exc)) from None
    newest: dict[str, Any] = {}
    for row in rows:
        if row.station_code not in newest or row.obs_time >= newest[row.station_code].obs_time:
            newest[row.station_code] = row
    stations = []
    for row in newest.values():
        station = mlit_station(row)
        stations.append(station.__class__(**{**station.__dict__, "source": "MLIT 川の水位情報 (import)"}))
    return stations


def _stations_format(path: str) -> str:
    from ingest.registry import read_text_file

    first_line = read_text_file(path).split("\n", 1)[0]
    return "mlit" if first_line.startswith("obs_time_jst,") else "sonae"


def cmd_stations_import(args: argparse.Namespace) -> int:
    from ingest.registry import located_stations

    fmt = args.format if args.format != "auto" else _stations_format(args.file)
    # each station with its file and line: a refusal names them for every rule, the database's too
    located = [("", s) for s in _mlit_stations(args.file)] if fmt == "mlit" else located_stations(args.file)
    stations = [s for _, s in located]
    places = {s.id: where for where, s in located if where}

    async def action(conn: Any) -> str:
        from ingest.registry import upsert_stations

        return f"imported {await upsert_stations(conn, stations, places=places)} stations from {args.file}"

    return _on_database(args, action)


# -- evac: shelters and hazard areas (evac/store.py) --
def cmd_evac_import(args: argparse.Namespace) -> int:
    import getpass

    from evac import store

    actor = args.actor or f"cli:{getpass.getuser()}"

    async def action(conn: Any) -> str:
        if args.evac_what == "shelters":
            hazards = [h for h in (args.default_hazards or "").split(",") if h]
            return _shelter_summary(await store.import_shelter_files(conn, args.file, actor=actor,
                                                                     default_hazards=hazards))
        else:
            link = _map_link(args)
            if link is not None or Path(args.file).suffix.lower() == ".shp" or store.is_national_file(Path(args.file)):
                result = await store.import_hazard_map(conn, args.file, actor=actor, hazard=args.hazard,
                                                       title=args.title, link=link, progress=_progress(args.file))
                return _map_summary(result)
            count = await store.import_hazard_file(conn, args.file, actor=actor, hazard=args.hazard,
                                                   exercise=args.exercise)
        return f"imported {count} {args.evac_what.replace('hazards', 'hazard areas')} from {args.file}"

    return _on_database(args, action)


def _shelter_summary(shelters: list[Any]) -> str:
    """What a shelter import did: sites, designations, sites per hazard, and the unrated ones."""
    from collections import Counter

    from evac.hazards import HAZARD_TYPES

    per_hazard = Counter(h for s in shelters for h in s.hazards)
    designations = Counter(d for s in shelters for d in s.designations)
    both = sum(1 for s in shelters if len(s.designations) > 1)
    unrated = sum(1 for s in shelters if not s.hazards)
    lines = [f"imported {len(shelters)} sites ({', '.join(f'{d} {n}' for d, n in sorted(designations.items()))}"
             f"{'; ' if designations else ''}{both} in both)",
             "sites rated per hazard: " + ", ".join(f"{h} {per_hazard[h]}" for h in HAZARD_TYPES)]
    if unrated:
        lines.append(f"{unrated} sites have no hazard rating: routes never send anyone there (a route asks "
                     "for a site rated for its hazard); rate them with --default-hazards or a file with flags")
    return "\n".join(lines)


def _map_link(args: argparse.Namespace) -> Any:
    """The ``--link KIND:REF --at-level N [--phenomenon P]`` of a hazards command, or None."""
    from evac.store import MapLink, StoreError

    if getattr(args, "link", None) is None:
        if getattr(args, "at_level", None) is not None:
            raise StoreError("--at-level needs --link gauge:ID, river:NAME or jma_area:CODE")
        return None
    if args.at_level is None:
        raise StoreError("--link needs --at-level N: the 警戒レベル (1-5) from which the map is in force, "
                         "e.g. 4 for 氾濫危険")
    return MapLink.parse(args.link, at_level=args.at_level, phenomenon=args.phenomenon)


def _progress(name: str) -> Callable[[int, int], None]:
    """Progress of a long import on stderr (every ~10 %), so a big map does not look stuck."""
    shown = [0]

    def report(done: int, total: int) -> None:
        if total >= 1000 and (done * 10 // total > shown[0] or done == total):
            shown[0] = done * 10 // total
            print(f"{name}: {done}/{total} areas", file=sys.stderr, flush=True)

    return report


def _map_summary(row: dict[str, Any]) -> str:
    link = (f"; in force while {row['link_kind']} {row['link_ref']} is at level {row['at_level']} or higher"
            if row.get("link_kind") else "; not linked, so never in force (link it: sonae hazards link)")
    fixed = f", {row['repaired']} invalid polygons made valid" if row.get("repaired") else ""
    return (f"imported hazard map {row['id']} ({row['hazard']}, {row['format']}: {row['title']}): "
            f"{row['areas']} areas{fixed}{link}. {row['attribution']}")


def cmd_hazards_link(args: argparse.Namespace) -> int:
    import getpass

    from evac import store

    actor = args.actor or f"cli:{getpass.getuser()}"
    link = None if args.unlink else _map_link(args)
    if link is None and not args.unlink:
        raise store.StoreError("give --link KIND:REF --at-level N, or --unlink")

    async def action(conn: Any) -> str:
        row = await store.link_hazard_map(conn, args.map_id, link, actor=actor)
        if link is None:
            return f"hazard map {row['id']} unlinked: never in force"
        return f"hazard map {row['id']} in force while {link.kind} {link.ref} is at level {link.at_level} or higher"

    return _on_database(args, action)


def cmd_hazards_maps(args: argparse.Namespace) -> int:
    from evac import store

    async def action(conn: Any) -> str:
        lines = []
        for r in await store.hazard_map_rows(conn):
            j = store.hazard_map_json(r)
            lk = j["link"]
            where = f"{lk['kind']}:{lk['ref']} at level {lk['at_level']}" if lk else "not linked"
            lines.append(f"{j['id']}\t{j['hazard']}\t{j['areas']} areas\t{where}\t{j['title']}")
        return "\n".join(lines) if lines else "no hazard maps"

    return _on_database(args, action)


def _add_link_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--link", metavar="KIND:REF", help="what puts the map in force: gauge:STATION_ID, river:NAME "
                   "(any of its gauges) or jma_area:MUNICIPALITY_CODE (official JMA warnings)")
    p.add_argument("--at-level", type=int, choices=range(1, 6), metavar="N",
                   help="警戒レベル (1-5) of the link from which the map is in force, e.g. 4 (氾濫危険)")
    p.add_argument("--phenomenon", help="for jma_area links: which warning (flood, landslide, tsunami, ...)")


def _add_evac_commands(sub: Any) -> None:
    for what, text in (("shelters", "Shelters (避難場所・避難所)."), ("hazards", "Hazard areas.")):
        grp = sub.add_parser(what, help=text, description=text)
        grp_sub = grp.add_subparsers(dest=f"{what}_command", required=True, metavar="ACTION")
        p = grp_sub.add_parser("import", help=f"Import {what} from a file (upsert by id).",
                               description=f"Import {what} (upsert by id); every API process reloads them.")
        if what == "shelters":
            p.add_argument("file", nargs="+", help="GSI or generic GeoJSON or CSV; several files are merged per "
                           "site (same id, or same name within 30 m), e.g. GSI 指定緊急避難場所 + 指定避難所")
        else:
            p.add_argument("file", help="Sonae GeoJSON, or a national hazard map")
        p.add_argument("--actor", help="who imports (recorded in each row; default cli:<user>)")
        p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
        if what == "shelters":
            p.add_argument("--default-hazards", help="hazards (comma-separated) for rows without hazard data, e.g. "
                           "GSI 指定避難所 that are no 指定緊急避難場所 (only if the municipality says they are safe "
                           "for those hazards)")
        else:
            p.add_argument("--hazard", help="hazard of features without a 'hazard' property (or of a national "
                           "map whose type the file does not tell)")
            p.add_argument("--exercise", action="store_true", help="mark the areas as drill areas")
            p.add_argument("--title", type=shown_line,
                           help="title of a national hazard map when the file has none (one line, shown to people)")
            _add_link_options(p)
        p.set_defaults(func=cmd_evac_import, evac_what=what)
        if what == "hazards":
            lp = grp_sub.add_parser("link", help="Link an imported hazard map to a gauge, river or warning area.",
                                    description="Put a hazard map in force while a gauge, river or JMA warning "
                                    "area is at a 警戒レベル (or --unlink it).")
            lp.add_argument("map_id", help="map id (see `sonae hazards maps`)")
            _add_link_options(lp)
            lp.add_argument("--unlink", action="store_true", help="remove the link: the map is never in force")
            lp.add_argument("--actor", help="who links (recorded; default cli:<user>)")
            lp.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
            lp.set_defaults(func=cmd_hazards_link)
            mp = grp_sub.add_parser("maps", help="List imported hazard maps and their links.")
            mp.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
            mp.set_defaults(func=cmd_hazards_maps)


def cmd_graph(args: argparse.Namespace) -> int:
    """``sonae graph import FILE`` / ``sonae graph fetch``: build the engine's arrays and say what they cover."""
    from pathlib import Path

    import shapely

    from evac.graph import graph_from_bbox, graph_from_file, graph_from_place, graph_from_polygon
    from evac.network import RoadNetwork, network_report
    from evac.osm_import import STREAM_SUFFIXES
    from evac.shelters import load_shelters

    settings = _settings(args)
    setup_logging(level="warning", fmt=settings["log.format"])
    state = settings.state_dir

    def say(message: str) -> None:
        print(f"  .. {message}", file=sys.stderr, flush=True)

    bbox: tuple[float, float, float, float] | None = args.bbox
    clip = None
    if getattr(args, "polygon", None):
        from shapely.geometry import shape

        try:
            doc = loads_unique(Path(args.polygon).read_text(encoding="utf-8"))
            feats = doc.get("features") or [doc]
            clip = shapely.union_all([shape(f.get("geometry", f)) for f in feats])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            print(f"sonae: --polygon {args.polygon}: not a GeoJSON polygon ({exc})", file=sys.stderr)
            return 2
    elif bbox is not None and args.graph_command == "import":
        clip = shapely.box(*bbox)
    net = None
    try:
        if args.graph_command == "import":
            stem = Path(args.file).name.split(".")[0]
            if args.via == "stream" and Path(args.file).name.lower().endswith(STREAM_SUFFIXES):
                # bounded memory, no networkx; the same graph as the osmnx path (tests/evac/test_evac_osm_import.py)
                net = RoadNetwork.from_osm_file(args.file, clip=clip, progress=say)
            else:
                G = graph_from_file(args.file, state_dir=state, progress=say, clip=clip)
        else:
            overpass = args.overpass_url or settings["evac.overpass_url"]
            if args.municipality:
                name, area = _municipality_area(args, args.municipality)
                G = graph_from_polygon(area, name=f"municipality {name} ({args.municipality})", state_dir=state,
                                       progress=say, overpass_url=overpass)
                stem = args.municipality
            elif args.place:
                G = graph_from_place(args.place, state_dir=state, progress=say, overpass_url=overpass)
                stem = "place"
            elif bbox is not None:
                G = graph_from_bbox(*bbox, state_dir=state, progress=say, overpass_url=overpass)
                stem = "bbox"
            else:
                print("sonae: graph fetch needs --place, --bbox or --municipality", file=sys.stderr)
                return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"sonae: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # downloads: no network, the server refused
        print(f"sonae: could not download the streets ({exc}); use `sonae graph import FILE` with a Geofabrik "
              "extract when this machine is offline", file=sys.stderr)
        return 1
    if net is None:
        net = RoadNetwork.from_graph(G, progress=say)
    out = Path(args.out) if args.out else state / "evac" / f"{stem}.npz"
    net.save(out)
    if args.shelters:
        try:
            shelters = load_shelters(args.shelters)
        except (OSError, ValueError) as exc:
            print(f"sonae: --shelters {args.shelters}: {exc}", file=sys.stderr)
            return 2
        origin = str(args.shelters)
    else:
        shelters, origin = _imported_shelters(args)
    report = network_report(net, shelters)
    print(f"wrote {out}")
    print(f"nodes {report['nodes']:,}  edges {report['edges']:,}  walkable roads {report['walkable_km']} km  "
          f"area {report['area_km2']} km²")
    by = ", ".join(f"{h} {n}" for h, n in report["shelters_by_hazard"].items()) or "none"
    print(f"shelters on this network ({origin}): {report['shelters_on_network']} of {report['shelters']} "
          f"(by hazard: {by})")
    if report["shelters_on_network"] == 0:
        print("warning: no shelter lies on this network: routes would answer no_shelter_in_area. Import the "
              "municipality's shelters (`sonae shelters import`) or check that the area is the right one.",
              file=sys.stderr)
    print(f"use it: SONAE_EVAC_NETWORK={out}  (or [evac] network = \"{out}\" in the config file)")
    return 0


def _imported_shelters(args: argparse.Namespace) -> tuple[list[Any], str]:
    """The shelters in the database (none, with a note, when it cannot be reached)."""
    from evac import store

    found: list[Any] = []

    async def action(conn: Any) -> str:
        found.extend(store.shelter_from_row(r) for r in await store.shelter_rows(conn))
        return ""

    try:
        _on_database(args, action)
    except (EmbeddedError, ConnectionError, OSError) as exc:
        print(f"note: could not read the imported shelters ({exc}); give --shelters FILE to count them",
              file=sys.stderr)
        return [], "database unreachable"
    return found, "imported shelters"


def _municipality_area(args: argparse.Namespace, code: str) -> tuple[str, Any]:
    """The name and boundary (a shapely (Multi)Polygon, lon/lat) of municipality ``code`` (6-digit) for a
    download: its N03 boundary as Sonae ships it (Fukushima's 59 municipalities, ``ingest.boundaries``), else as
    imported into the database (``sonae municipalities import N03.geojson`` for another prefecture).

    No geocoder is asked (found: the code was looked up as a name in the municipalities table, and the name
    sent to Nominatim for its outline, online, whose answer need not be the boundary Sonae places stations,
    orders and residents by).

    Raises
    ------
    ValueError
        The code is the drill town's or no municipality's, or no boundary of it is shipped or imported (the
        message says what to do instead).
    """
    from ingest.boundaries import packaged_boundaries
    from sonae.municipality_code import DRILL_TOWN_CODE, not_a_municipality

    if code == DRILL_TOWN_CODE:
        raise ValueError(f"--municipality {code} is the drill town, a fictional town with no streets in "
                         "OpenStreetMap: the service builds its network itself (SONAE_EVAC_NETWORK=drilltown)")
    problem = not_a_municipality(code)
    if problem is not None:
        raise ValueError(f"--municipality: {problem}")
    for boundary in packaged_boundaries():
        if boundary.code == code:
            return boundary.name, boundary.geometry
    found: list[tuple[str, str]] = []

    async def action(conn: Any) -> str:
        row = await conn.fetchrow("SELECT name, geometry::text AS geometry FROM municipality_boundaries "
                                  "WHERE code = $1", code)
        if row is not None:
            found.append((row["name"], row["geometry"]))
        return ""

    why = "no boundary of it is shipped (Fukushima's are) or imported"
    try:
        _on_database(args, action)
    except (ConfigError, EmbeddedError, ConnectionError, OSError) as exc:  # none here, or not reachable
        why = f"its boundary is not shipped (Fukushima's are), and the database could not be read ({exc})"
    if found:
        import shapely

        return found[0][0], shapely.from_geojson(found[0][1])
    raise ValueError(f"municipality {code}: {why}: import the prefecture's N03 boundaries with `sonae "
                     "municipalities import N03.geojson`, or give --place \"NAME, PREFECTURE\" or --bbox W,S,E,N")


def _add_graph_commands(sub: Any) -> None:
    grp = sub.add_parser("graph", help="Road networks for evacuation routes.",
                         description="Road networks for evacuation routes: build the engine's arrays from an "
                         "OpenStreetMap file or download, and report what they cover.")
    grp_sub = grp.add_subparsers(dest="graph_command", required=True, metavar="ACTION")
    p = grp_sub.add_parser("import", help="Build a network from an .osm, .osm.bz2, .osm.pbf or .graphml file.",
                           description="Build a network from a local OpenStreetMap file (offline), e.g. "
                           "Geofabrik's japan/tohoku-latest.osm.pbf clipped to a municipality.")
    p.add_argument("file")
    p.add_argument("--via", choices=("stream", "osmnx"), default="stream",
                   help="stream: read .osm/.osm.bz2/.osm.pbf with pyosmium into arrays in bounded memory "
                   "(default); osmnx: build a networkx graph through osmnx first (the old path, for comparison; "
                   "needs ~10 GB per million nodes)")
    for q in (p, grp_sub.add_parser("fetch", help="Download a network through osmnx (online; cached).",
                                    description="Download the streets through osmnx (Overpass API; cached in "
                                    "the state directory).")):
        # the area: one way of naming it (found: `fetch --place P --bbox B` took the place and dropped the box
        # unsaid, `import --polygon F --bbox B` the polygon); a download needs one, an import clips to at most one
        area = q.add_mutually_exclusive_group(required=q is not p)
        area.add_argument("--bbox", type=bbox_argument, help="west,south,east,north in degrees (import: clip to it)")
        if q is p:
            area.add_argument("--polygon", help="GeoJSON file: keep only roads inside its polygon(s)")
        else:
            area.add_argument("--place", type=text_argument, help='a place name osmnx knows, e.g. "郡山市, 福島県"')
            area.add_argument("--municipality", type=municipality_code,
                              help="団体コード, 072036 or 07203: the streets inside its N03 boundary (Fukushima's "
                              "are shipped; another prefecture's after `sonae municipalities import N03.geojson`)")
            q.add_argument("--overpass-url", type=http_url, help="Overpass API to download from (default: "
                           "evac.overpass_url, https://overpass-api.de/api)")
        q.add_argument("--out", help="where to write the network (.npz; default <state>/evac/<name>.npz)")
        q.add_argument("--shelters", help="count these shelters (GeoJSON/CSV) instead of the imported ones")
        q.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
        q.set_defaults(func=cmd_graph)
# -- end evac --


# -- jma: official information from files (jma/reader.py) --
def cmd_jma_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from jma.reader import read_files

    paths = [Path(p) for p in args.paths]
    for path in paths:
        if not path.exists():
            raise CommandError(f"{path}: no such file or directory")

    async def action(conn: Any) -> str:
        try:
            outcomes = await read_files(conn, paths)
        except OSError as exc:
            raise CommandError(f"{exc.filename}: {exc.strerror}") from None
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome] = counts.get(outcome, 0) + 1
        return "telegrams: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")

    return _on_database(args, action)


def _add_jma_commands(sub: Any) -> None:
    text = "Official information (気象庁防災情報XML telegrams)."
    grp = sub.add_parser("jma", help=text, description=text)
    grp_sub = grp.add_subparsers(dest="jma_command", required=True, metavar="ACTION")
    p = grp_sub.add_parser("import", help="Read telegrams from files or directories (*.xml), as the feed reader does.",
                           description="Read telegrams from files or directories (*.xml, in name order) through the "
                           "feed reader's path: each kept once, unreadable ones kept with their reason.")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_jma_import)
# -- end jma --


def _new_password(args: argparse.Namespace) -> str:
    """The new password, from SONAE_NEW_PASSWORD or asked twice; refused when too short (api.auth's rule) before
    any database is started."""
    import getpass
    import os

    from api.auth import MIN_PASSWORD_LENGTH, AccountError, check_password

    if args.password_from_env:
        password = os.environ.get("SONAE_NEW_PASSWORD")
        if not password:
            raise CommandError("--password-from-env: SONAE_NEW_PASSWORD is not set")
    elif not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password: set SONAE_NEW_PASSWORD and pass --password-from-env")
    else:
        try:
            password = getpass.getpass(f"password ({MIN_PASSWORD_LENGTH} characters or more): ")
            if getpass.getpass("again: ") != password:
                raise CommandError("the two passwords differ")
        except EOFError:
            raise CommandError("no password given (end of input)") from None
    try:  # the API's rule (api.auth.check_password): no control characters, then the length
        check_password(password)
    except AccountError as exc:
        hint = (" (SONAE_NEW_PASSWORD must hold the password alone: no final line break)"
                if args.password_from_env and password.endswith(("\n", "\r")) else "")
        raise CommandError(f"{exc}{hint}") from None
    return password


#: the audit log's actor of a change made by a command (``sonae users``): not an account, whoever ran it on
#: the server (found by break33: account changes on the command line wrote no audit row at all)
CLI_ACTOR = "command line"  # a space: no account can have this name (usernames are A-Z a-z 0-9 _ . @ -)


async def _account_municipality(conn: Any, username: str) -> str | None:
    """The municipality of an account (None: prefecture-wide), which its audit rows concern."""
    code = await conn.fetchval("SELECT municipality_code FROM accounts WHERE username = $1", username)
    return None if code is None else str(code)


def cmd_users(args: argparse.Namespace) -> int:
    from alerting.audit import record_audit
    from api.auth import AccountError, create_account, list_accounts, set_disabled, set_password

    password = _new_password(args) if args.users_command in ("add", "passwd") else None

    async def body(settings: Settings) -> None:
        from app.runtime import open_pool

        pool = await open_pool(settings, migrate_schema=True, create=False)
        try:
            async with pool.acquire() as conn:
                # each change with its audit row, in one transaction, as the API's (actor: CLI_ACTOR)
                if args.users_command == "add":
                    assert password is not None
                    async with conn.transaction():
                        account = await create_account(conn, username=args.username, password=password,
                                                       role=args.role, municipality_code=args.municipality,
                                                       display_name=args.name)
                        await record_audit(conn, CLI_ACTOR, "account.created", "account", account.username,
                                           {"role": account.role, "municipality_code": account.municipality_code},
                                           municipality_code=account.municipality_code)
                    scope = account.municipality_code or "the whole prefecture"
                    print(f"account {account.username} ({account.role}, {scope}) created")
                elif args.users_command == "passwd":
                    assert password is not None
                    async with conn.transaction():
                        await set_password(conn, args.username, password)
                        await record_audit(conn, CLI_ACTOR, "account.password_changed", "account", args.username, {},
                                           municipality_code=await _account_municipality(conn, args.username))
                    print(f"password of {args.username} changed; its tokens are revoked")
                elif args.users_command in ("disable", "enable"):
                    async with conn.transaction():
                        await set_disabled(conn, args.username, args.users_command == "disable")
                        await record_audit(conn, CLI_ACTOR, f"account.{args.users_command}d", "account",
                                           args.username, {},
                                           municipality_code=await _account_municipality(conn, args.username))
                    print(f"account {args.username} {args.users_command}d")
                else:
                    for a in await list_accounts(conn):
                        state = " (disabled)" if a["disabled"] else ""
                        print(f"{a['username']:<24} {a['role']:<9} {a['municipality_code'] or 'prefecture'}{state}")
        except AccountError as exc:
            raise CommandError(str(exc)) from None
        finally:
            await pool.close()

    return _with_services(args, body, need_broker=False, create=False)


# -- notify: VAPID keys and webhooks (notify/) --
def cmd_vapid(args: argparse.Namespace) -> int:
    from notify.webpush import Vapid, generate_private_pem, load_private_key

    if args.vapid_command == "generate":
        pem = generate_private_pem()
        print(pem, end="")
        print(f"# public key (applicationServerKey): {Vapid(load_private_key(pem), '').public_key}", file=sys.stderr)
        return 0

    async def body(settings: Settings) -> None:
        from app.runtime import open_pool
        from notify.worker import vapid_private_pem

        pool = await open_pool(settings, migrate_schema=True, create=False)
        try:
            async with pool.acquire() as conn:
                pem = await vapid_private_pem(conn, settings["notify.vapid_private_key"])
        finally:
            await pool.close()
        print(Vapid(load_private_key(pem), "").public_key)

    return _with_services(args, body, need_broker=False, create=False)


def cmd_webhooks(args: argparse.Namespace) -> int:
    import getpass

    from ingest.municipalities import DRILL_TOWN_RULE, uncovered
    from notify import store

    if args.webhooks_command == "add":  # the rules need no database: a typo is told before connecting
        store.check_webhook(url=args.url, fmt=args.format, min_level=args.min_level,
                            conditions=args.conditions.split(",") if args.conditions else None,
                            description=args.description or "",
                            allow_loopback=True)  # loopback is judged with the settings, below

    async def body(settings: Settings) -> None:
        from app.runtime import open_pool
        from notify.endpoints import EndpointError, check_webhook_url

        allow_loopback = settings["notify.webhook_allow_loopback"]
        if args.webhooks_command == "add":  # the API's address rule, with this installation's settings
            try:
                store.check_webhook(url=args.url, allow_loopback=allow_loopback)
                await check_webhook_url(args.url, allow_loopback=allow_loopback)
            except (store.WebhookError, EndpointError) as exc:
                raise CommandError(str(exc)) from None
        pool = await open_pool(settings, migrate_schema=True, create=False)
        try:
            async with pool.acquire() as conn:
                if args.webhooks_command == "add":
                    if args.municipality is not None and (why := await uncovered(conn, args.municipality,
                                                                                      exercise=args.drills)):
                        hint = " (here: add --drills)" if why == DRILL_TOWN_RULE else ""
                        raise CommandError(f"--municipality: {why}{hint}")  # the API's rule (api.bodies)
                    hook = await store.add_webhook(
                        conn, url=args.url, created_by=f"cli:{getpass.getuser()}", description=args.description or "",
                        fmt=args.format, municipality_code=args.municipality, min_level=args.min_level,
                        conditions=args.conditions.split(",") if args.conditions else None,
                        include_staff=args.include_staff, drills=args.drills, allow_loopback=allow_loopback)
                    print(f"webhook {hook['id']} created; its signing secret (shown once): {hook['secret']}")
                elif args.webhooks_command == "remove":
                    if not await store.delete_webhook(conn, args.id):
                        raise CommandError(f"no webhook {args.id}")
                    print(f"webhook {args.id} removed")
                else:
                    for h in await store.list_webhooks(conn):
                        print(f"{h['id']:>5} {h['format']:<4} {h['municipality_code'] or 'prefecture':<10} "
                              f"level>={h['min_level']} drills={h['drills']} {h['url']}")
        finally:
            await pool.close()

    return _with_services(args, body, need_broker=False, create=False)


def _add_notify_commands(sub: Any) -> None:
    va = sub.add_parser("vapid", help="Web Push VAPID keys.", description="Web Push VAPID keys (RFC 8292).")
    va_sub = va.add_subparsers(dest="vapid_command", required=True, metavar="ACTION")
    p = va_sub.add_parser("generate", help="Print a new private key (PEM) for SONAE_NOTIFY_VAPID_PRIVATE_KEY.",
                          description="Print a new P-256 private key (PEM); its public key goes to stderr.")
    p.set_defaults(func=cmd_vapid)
    p = va_sub.add_parser("show", help="Print the public key in use.", description="Print the public key in use.")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_vapid)
    wh = sub.add_parser("webhooks", help="Webhooks for partner systems.",
                        description="Webhooks for partner systems (signed with HMAC-SHA256).")
    wh_sub = wh.add_subparsers(dest="webhooks_command", required=True, metavar="ACTION")
    p = wh_sub.add_parser("add", help="Register a webhook.", description="Register a webhook; prints its secret.")
    p.add_argument("url")
    p.add_argument("--format", choices=("json", "cap"), default="json")
    p.add_argument("--municipality", type=municipality_code, help="団体コード: only this municipality's alerts")
    p.add_argument("--min-level", type=int, default=0)
    p.add_argument("--conditions", help="comma-separated: river_level,evacuation_order,…")
    p.add_argument("--include-staff", action="store_true", help="also staff-only alerts")
    p.add_argument("--drills", action="store_true", help="also exercise alerts (marked as drills)")
    p.add_argument("--description", type=shown_line, help="shown to staff (one line)")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_webhooks)
    p = wh_sub.add_parser("remove", help="Remove a webhook.", description="Remove a webhook.")
    p.add_argument("id", type=row_id, help="the webhook's id (see `sonae webhooks list`)")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_webhooks)
    p = wh_sub.add_parser("list", help="List webhooks.", description="List webhooks.")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_webhooks)
# -- end notify --


def cmd_municipalities_import(args: argparse.Namespace) -> int:
    """A municipality list (CSV) or municipal boundaries (N03 GeoJSON, simplified as the shipped ones)."""
    if args.file.lower().endswith((".geojson", ".json", ".geojson.gz", ".json.gz", ".geojson.xz", ".json.xz")):
        from ingest.boundaries import MOVED, BoundaryError, import_boundaries, read_n03, simplify

        try:
            parts = read_n03(args.file)
        except (OSError, BoundaryError) as exc:
            raise CommandError(str(exc)) from None
        log.info("simplifying boundaries", extra={"parts": len(parts), "file": args.file})
        boundaries, _ = simplify(parts)

        async def store(conn: Any) -> str:
            try:
                changes = await import_boundaries(conn, boundaries, source=args.file, replace=args.replace)
            except BoundaryError as exc:  # BoundaryReplaceRefused: what would move, and --replace
                raise CommandError(str(exc)) from None
            moved = [c for c in changes if c.kind == MOVED]
            lines = [c.describe() for c in changes]
            return "\n".join([*lines, f"imported the boundaries of {len(changes)} municipalities from {args.file}"
                               + (f" ({len(moved)} moved, {sum(c.moved_km2 for c in moved):.1f} km² changed "
                                  "municipality; --replace)" if moved else "")])

        return _on_database(args, store)

    from ingest.municipalities import MunicipalityListError, load_municipalities, upsert_municipalities

    if args.replace:
        raise CommandError(f"--replace applies to boundaries (an N03 .geojson/.json), not to {args.file}: "
                           "a municipality list only adds and renames")
    try:
        municipalities = load_municipalities(args.file)
    except (OSError, MunicipalityListError) as exc:
        raise CommandError(str(exc)) from None

    async def action(conn: Any) -> str:
        return f"imported {await upsert_municipalities(conn, municipalities)} municipalities from {args.file}"

    return _on_database(args, action)


def _tcp_answers(url: str, *, default_port: int) -> bool:
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


def _http_status(url: str) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return None


def cmd_status(args: argparse.Namespace) -> int:
    """Which state directory, database and broker a command run here would use, and what they hold.

    Creates nothing: an embedded database that does not exist yet is reported, not made.
    """
    import os

    from sonae.embedded import EmbeddedPostgres

    settings = _settings(args)
    masked = settings.masked()
    state = settings.state_dir
    config_file = args.config or os.environ.get("SONAE_CONFIG") or "none"
    print(f"configuration file: {config_file}")
    print(f"state directory:    {state} (from {settings.origin('state.dir')}"
          f"{'' if state.is_dir() else '; does not exist'})")
    embedded = settings["database.url"] is None
    if embedded:
        found = EmbeddedPostgres(state).initialised
        print(f"database:           embedded PostgreSQL in {state / 'postgres'}"
              f"{'' if found else ' (not created yet: `sonae run` or `sonae db migrate` creates it)'}")
    else:
        found = True
        print(f"database:           {masked['database.url']} (from {settings.origin('database.url')})")
    # the ports a running service uses are those it recorded in the state directory (a run with
    # SONAE_EMBEDDED_MQTT_PORT=18896 and --port 8096 was reported on 18830 and 8080, "not running")
    if settings["mqtt.url"] is None:
        broker = _live_record(state / "mqtt" / "broker.json")
        port = int(broker["port"]) if broker else settings["embedded.mqtt_port"]
        running = _tcp_answers(f"mqtt://127.0.0.1:{port}", default_port=1883)
        recorded = f", recorded by the running pid {broker['pid']}" if broker else ""
        print(f"broker:             embedded, port {port} ({'running' if running else 'not running'}{recorded})")
    else:
        answers = _tcp_answers(settings["mqtt.url"], default_port=1883)
        print(f"broker:             {masked['mqtt.url']} ({'answers' if answers else 'does not answer'})")
    api = _live_record(state / API_RECORD)
    host, api_port = (str(api.get("host") or settings["api.host"]), int(api["port"])) if api else (
        settings["api.host"], settings["api.port"])
    ready = _http_status(f"http://{host}:{api_port}/readyz")
    print(f"API:                http://{host}:{api_port}/ "
          + ("(not running)" if ready is None else f"(readyz {ready})")
          + (f" (recorded by the running pid {api['pid']})" if api else ""))
    if not found:
        return 1

    async def body(effective: Settings) -> None:
        import asyncpg

        try:
            conn = await asyncpg.connect(effective["database.url"], timeout=10)
        except (OSError, asyncpg.PostgresError) as exc:
            raise ConnectionError(f"database: not reachable ({exc})") from None
        try:
            if not await conn.fetchval("SELECT to_regclass('sonae_migrations') IS NOT NULL"):
                print("schema:             none (an empty database: `sonae db migrate` creates the schema)")
                return
            migrations = await conn.fetchval("SELECT count(*) FROM sonae_migrations")
            timescale = await conn.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
            print(f"schema:             {migrations} migrations applied; "
                  f"{'TimescaleDB' if timescale else 'plain PostgreSQL'}")
            counts = []
            for table, label in (("stations", "stations"), ("shelters", "shelters"), ("accounts", "accounts"),
                                 ("municipalities", "municipalities")):
                if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
                    counts.append(f"{await conn.fetchval(f'SELECT count(*) FROM {table}')} {label}")
            print(f"holds:              {', '.join(counts)}")
        finally:
            await conn.close()

    return _with_services(args, body, need_broker=False, create=False)


def cmd_config(args: argparse.Namespace) -> int:
    if args.schema:
        print(describe_schema())
        return 0
    settings = _settings(args)
    shown = {name: {"value": value, "from": settings.origin(name)} for name, value in settings.masked().items()}
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    return 0


# -- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sonae",
        description="Sonae (備え): river sensors → alerts → evacuation guidance.",
        epilog="Configuration: environment variables SONAE_* or a TOML file (--config). "
               "`sonae config --schema` lists every setting.",
    )
    parser.add_argument("--config", help="TOML configuration file (default: $SONAE_CONFIG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=fn)
        p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
        return p

    p = add("run", cmd_run, "Run a whole single-machine deployment: ingest and the API (and simulated "
            "sensors with --simulate). Starts an embedded PostgreSQL and MQTT broker when none is configured.")
    p.add_argument("--simulate", action="store_true", help="also run simulated river gauges")
    p.add_argument("--real", action="store_true",
                   help="with --simulate: mark the simulated readings as real, not as an exercise")
    p.add_argument("--port", type=port, help="API port, 1-65535 (overrides SONAE_API_PORT)")

    p = add("ingest", cmd_ingest, "Run an ingestor: MQTT readings into the database, acknowledged after commit. "
            "Several share the stream by municipality: SONAE_INGEST_PARTITION=0/2, 1/2 (plain persistent subscriptions).")
    p.add_argument("--instance", default="0", help="instance name, part of the persistent MQTT client id")

    p = add("api", cmd_api, "Run the HTTP API.")
    p.add_argument("--port", type=port, help="API port, 1-65535 (overrides SONAE_API_PORT)")

    # -- simulate (simulators/command.py) --
    p = add("simulate", cmd_simulate, "Run simulated sensor fleets, real-event replays and fault drills over MQTT "
            "(an exercise by default). Without --scenario or --replay: the small demo river.")
    from simulators.command import add_arguments as add_simulate_arguments

    add_simulate_arguments(p)
    # -- end simulate --

    db = sub.add_parser("db", help="Database administration.", description="Database administration.")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = db_sub.add_parser("migrate", help="Apply pending schema migrations (idempotent).",
                          description="Apply pending schema migrations (idempotent; uses TimescaleDB when present).")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_db_migrate)

    st = sub.add_parser("stations", help="Station registry.", description="Station registry.")
    st_sub = st.add_subparsers(dest="stations_command", required=True, metavar="ACTION")
    p = st_sub.add_parser("import", help="Import stations from CSV, GeoJSON or an MLIT gauge file (upsert).",
                          description="Import stations (upsert); releases quarantined readings. Formats: Sonae's "
                                      "CSV/GeoJSON (columns = registry fields, see the README) or MLIT "
                                      "川の水位情報 CSV (one station per gauge); .gz is read as is.")
    p.add_argument("file")
    p.add_argument("--format", choices=("auto", "sonae", "mlit"), default="auto",
                   help="file format (default: recognised from the header)")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_stations_import)

    _add_evac_commands(sub)  # evac: `sonae shelters import`, `sonae hazards import`
    _add_graph_commands(sub)  # evac: `sonae graph import|fetch`
    _add_jma_commands(sub)  # jma: `sonae jma import`

    mu = sub.add_parser("municipalities", help="Municipality codes and names.",
                        description="Municipality codes (団体コード) and names: data, imported, not code.")
    mu_sub = mu.add_subparsers(dest="municipalities_command", required=True, metavar="ACTION")
    p = mu_sub.add_parser("import", help="Import municipality names (CSV) or boundaries (N03 GeoJSON).",
                          description="Import municipalities from a CSV with columns code, name_ja, name_kana, "
                                      "name_en, prefecture (5-digit codes get their check digit), or municipal "
                                      "boundaries from a 国土数値情報 N03 GeoJSON (.geojson/.json, also .gz/.xz), "
                                      "simplified as the shipped ones. An empty database gets Japan's list and "
                                      "Fukushima's boundaries from the package.")
    p.add_argument("file")
    p.add_argument("--replace", action="store_true",
                   help="accept boundaries that move loaded borders by more than 10 m (a coarser map, another "
                        "N03 year); without it such an import is refused and says which municipalities change")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_municipalities_import)

    us = sub.add_parser("users", help="Staff, operator and admin accounts.",
                        description="Staff, operator and admin accounts (passwords hashed with argon2id).")
    us_sub = us.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    p = us_sub.add_parser("add", help="Create an account.", description="Create an account; asks for the password.")
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=("staff", "operator", "admin"))
    p.add_argument("--municipality", type=municipality_code,
                   help="団体コード of the account's municipality (072036 or 07203); omit for prefecture-wide")
    p.add_argument("--name", type=shown_line, help="display name (one line, shown to staff)")
    for action, text in (("passwd", "Set a new password (revokes the account's tokens)."),
                         ("disable", "Disable an account (revokes its tokens)."), ("enable", "Enable an account.")):
        q = us_sub.add_parser(action, help=text, description=text)
        q.add_argument("username")
        q.set_defaults(func=cmd_users)
        q.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
        q.add_argument("--password-from-env", action="store_true", help="read the password from SONAE_NEW_PASSWORD")
    q = us_sub.add_parser("list", help="List accounts.", description="List accounts.")
    q.set_defaults(func=cmd_users)
    q.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_users)
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.add_argument("--password-from-env", action="store_true", help="read the password from SONAE_NEW_PASSWORD")

    p = sub.add_parser("status", help="Say which state directory, database and broker this command would use.",
                       description="Say which configuration file, state directory, database, broker and API a "
                                   "command run here would use, and what the database holds. Creates nothing.")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("config", help="Print the effective configuration (secrets masked).",
                       description="Print the effective configuration, with where each value came from; "
                                   "secrets are masked.")
    p.add_argument("--schema", action="store_true", help="list every setting with its default")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_config)

    _add_notify_commands(sub)  # notify: `sonae vapid …`, `sonae webhooks …`

    # -- devices: MQTT credentials and ACL entries (app/provisioning.py) --
    from app.provisioning import add_devices_command

    add_devices_command(sub)
    # -- end devices --
    from app.service_secrets import add_secrets_command

    add_secrets_command(sub)  # `sonae secrets …` for deploy/compose/init-secrets.sh
    return parser


def _input_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that describe bad input in their message (printed as one line, exit status 2).

    Those of the modules the command loaded only: an error of a module never imported was not raised, and
    importing them all (evac.store brings osmnx) cost every refusal 1.6 s."""
    own = tuple(getattr(sys.modules[module], name) for module, name in _INPUT_ERRORS if module in sys.modules)
    return (CommandError, *own, FileExistsError, FileNotFoundError, IsADirectoryError, PermissionError,
            UnicodeError, json.JSONDecodeError)


#: (module, class) of the commands' own bad-input errors (see :func:`_input_error_types`)
_INPUT_ERRORS = (("ingest.registry", "RegistryError"), ("evac.store", "StoreError"), ("api.auth", "AccountError"),
                 ("app.service_secrets", "SecretsError"), ("notify.store", "NotifyError"))


def main(argv: list[str] | None = None) -> int:
    """The ``sonae`` command: every failure ends in one line on stderr, never a traceback.

    Exit status: 0 done; 1 a service or server could not be reached or started, or an unexpected
    error (its traceback is logged at debug level: ``SONAE_LOG_LEVEL=debug``); 2 bad input or
    configuration (argparse's own usage errors are 2 as well).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"sonae: configuration error: {exc}", file=sys.stderr)
        return 2
    except (EmbeddedError, ConnectionError, MigrationError) as exc:
        print(f"sonae: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if isinstance(exc, _input_error_types()):
            print(f"sonae: {exc}", file=sys.stderr)
            return 2
        log.debug("unexpected error", exc_info=True)
        print(f"sonae: unexpected error ({type(exc).__name__}: {exc}); SONAE_LOG_LEVEL=debug shows where",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
