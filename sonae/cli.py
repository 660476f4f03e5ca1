"""The ``sonae`` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from sonae.config import ConfigError, Settings, describe_schema, load_settings
from sonae.embedded import EmbeddedError
from sonae.logs import setup_logging

log = logging.getLogger("sonae.cli")


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(config_file=args.config)
    overrides: dict[str, Any] = {}
    if getattr(args, "port", None) is not None:
        overrides["api__port"] = args.port
    if getattr(args, "state_dir", None):
        overrides["state__dir"] = args.state_dir
    return settings.replace(**overrides) if overrides else settings


def _with_services(
    args: argparse.Namespace, body: Callable[[Settings], Coroutine[Any, Any, None]], *, need_broker: bool = True
) -> int:
    from sonae.runtime import BackingServices

    settings = _settings(args)
    setup_logging(level=settings["log.level"], fmt=settings["log.format"])
    services = BackingServices(settings)
    try:
        effective = services.start(need_broker=need_broker)
        asyncio.run(body(effective))
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()
    return 0


# -- commands ------------------------------------------------------------------------------------
async def _serve_api(settings: Settings, pool: Any, stop: asyncio.Event) -> None:
    from api.server import serve

    await serve(settings, pool, stop)


async def _ingest(settings: Settings, pool: Any, stop: asyncio.Event, instance: str = "0") -> None:
    from ingest.housekeeping import housekeeping_loop
    from ingest.service import Ingestor

    ingestor = Ingestor.from_settings(settings, pool, instance=instance)
    house = asyncio.create_task(housekeeping_loop(pool, retention_days=settings["database.retention_days"]))
    run = asyncio.create_task(ingestor.run())
    try:
        await asyncio.wait([run, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if run.done():
            run.result()
    finally:
        ingestor.stop()
        house.cancel()
        await asyncio.gather(run, house, return_exceptions=True)


async def _demo(settings: Settings, pool: Any, stop: asyncio.Event, *, exercise: bool) -> None:
    from ingest.registry import upsert_stations
    from simulators.demo import DEMO_STATIONS, run_demo
    from sonae.mqtt import MqttClient, default_client_id

    async with pool.acquire() as conn:
        await upsert_stations(conn, DEMO_STATIONS)
    async with MqttClient(settings["mqtt.url"], client_id=default_client_id("sim"),
                          protocol=settings["mqtt.protocol"]) as mqtt:
        await run_demo(mqtt, prefix=settings["mqtt.topic_prefix"], exercise=exercise, stop=stop)


def cmd_run(args: argparse.Namespace) -> int:
    async def body(settings: Settings) -> None:
        from sonae.runtime import open_pool, stop_event_on_signals, supervise

        stop = stop_event_on_signals()
        pool = await open_pool(settings, migrate_schema=True)
        tasks: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            "ingest": lambda: _ingest(settings, pool, stop),
            "api": lambda: _serve_api(settings, pool, stop),
        }
        if args.simulate:
            tasks["simulator"] = lambda: _demo(settings, pool, stop, exercise=not args.real)
        try:
            await supervise(tasks, stop)
        finally:
            await pool.close()
            log.info("sonae stopped")

    return _with_services(args, body)


def cmd_ingest(args: argparse.Namespace) -> int:
    async def body(settings: Settings) -> None:
        from sonae.runtime import open_pool, stop_event_on_signals

        stop = stop_event_on_signals()
        pool = await open_pool(settings, migrate_schema=True)
        try:
            await _ingest(settings, pool, stop, instance=args.instance)
        finally:
            await pool.close()

    return _with_services(args, body)


def cmd_api(args: argparse.Namespace) -> int:
    async def body(settings: Settings) -> None:
        from sonae.runtime import open_pool, stop_event_on_signals

        stop = stop_event_on_signals()
        pool = await open_pool(settings, migrate_schema=True)
        try:
            await _serve_api(settings, pool, stop)
        finally:
            await pool.close()

    return _with_services(args, body, need_broker=False)


def cmd_simulate(args: argparse.Namespace) -> int:
    async def body(settings: Settings) -> None:
        from sonae.runtime import open_pool, stop_event_on_signals

        stop = stop_event_on_signals()
        pool = await open_pool(settings, migrate_schema=True)
        try:
            await _demo(settings, pool, stop, exercise=not args.real)
        finally:
            await pool.close()

    return _with_services(args, body)


def cmd_db_migrate(args: argparse.Namespace) -> int:
    async def body(settings: Settings) -> None:
        from sonae.runtime import open_pool

        pool = await open_pool(settings, migrate_schema=True)
        await pool.close()
        print("schema is up to date")

    return _with_services(args, body, need_broker=False)


def cmd_stations_import(args: argparse.Namespace) -> int:
    from ingest.registry import load_stations

    stations = load_stations(args.file)

    async def body(settings: Settings) -> None:
        from ingest.registry import upsert_stations
        from sonae.runtime import open_pool

        pool = await open_pool(settings, migrate_schema=True)
        try:
            async with pool.acquire() as conn:
                count = await upsert_stations(conn, stations)
        finally:
            await pool.close()
        print(f"imported {count} stations from {args.file}")

    return _with_services(args, body, need_broker=False)


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
    p.add_argument("--real", action="store_true", help="mark simulated readings as real, not as an exercise")
    p.add_argument("--port", type=int, help="API port (overrides SONAE_API_PORT)")

    p = add("ingest", cmd_ingest, "Run an ingestor: MQTT readings into the database, acknowledged after commit. "
            "Several share the stream through an MQTT shared subscription.")
    p.add_argument("--instance", default="0", help="instance name, part of the persistent MQTT client id")

    p = add("api", cmd_api, "Run the HTTP API.")
    p.add_argument("--port", type=int, help="API port (overrides SONAE_API_PORT)")

    p = add("simulate", cmd_simulate, "Run simulated river gauges publishing over MQTT (a drill by default).")
    p.add_argument("--real", action="store_true", help="mark readings as real, not as an exercise")

    db = sub.add_parser("db", help="Database administration.", description="Database administration.")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    p = db_sub.add_parser("migrate", help="Apply pending schema migrations (idempotent).",
                          description="Apply pending schema migrations (idempotent; uses TimescaleDB when present).")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_db_migrate)

    st = sub.add_parser("stations", help="Station registry.", description="Station registry.")
    st_sub = st.add_subparsers(dest="stations_command", required=True, metavar="ACTION")
    p = st_sub.add_parser("import", help="Import stations from CSV or GeoJSON (upsert).",
                          description="Import stations from CSV or GeoJSON (upsert); releases quarantined readings.")
    p.add_argument("file")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_stations_import)

    p = sub.add_parser("config", help="Print the effective configuration (secrets masked).",
                       description="Print the effective configuration, with where each value came from; "
                                   "secrets are masked.")
    p.add_argument("--schema", action="store_true", help="list every setting with its default")
    p.add_argument("--state-dir", help="state directory (overrides SONAE_STATE_DIR)")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"sonae: configuration error: {exc}", file=sys.stderr)
        return 2
    except (EmbeddedError, ConnectionError) as exc:
        print(f"sonae: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
