"""``sonae simulate``: options and the run itself (the CLI in :mod:`app.cli` only wires them in).

Examples::

    sonae simulate                                   # the small demo river (as `sonae run --simulate`)
    sonae simulate --scenario docs/scenarios/abukuma-flood.toml --register-stations
    sonae simulate --replay jiseiji --accel 60 --from 2023-06-30T06:00+09:00 --to 2023-07-01T18:00+09:00
    sonae simulate --replay jiseiji --register-stations        # 持世寺 plays out in the drill town 079995
    sonae simulate --replay mlit path/to/mlit_rows.csv.gz --station 0700000003 --accel 600
    sonae simulate --scenario docs/scenarios/load-5000.toml --accel max --no-progress

Everything is an exercise unless ``--real`` is given (a scenario file's ``exercise = false`` alone is
not enough: a real-looking flood must be asked for on the command line).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from simulators.fleet import Fleet
from simulators.manager import register_stations
from simulators.progress import ProgressDisplay, summary
from simulators.replay import DEFAULT_DATA_DIR
from simulators.scenario import (
    REPLAY_FORMATS,
    ReplaySpec,
    Scenario,
    ScenarioError,
    load_scenario,
    parse_duration,
)
from simulators.transport import make_publisher
from sonae.arguments import municipality_code, port_or_any, positive_seconds
from sonae.japantime import parse_iso_time
from sonae.mqtt import MqttError
from sonae.municipality_code import DRILL_TOWN_CODE

log = logging.getLogger("sonae.simulators.command")

SHARED_RIVER_LEVELS = DEFAULT_DATA_DIR  # the rule of simulators.replay.default_data_dir
DEFAULT_REPLAY_FILES = {
    "jiseiji": "yamaguchi_kotogawa_jiseiji_level_and_kotogawa_dam_2023-06_to_2023-08_10min.csv.gz",
    "mlit": "mlit_kriver_fukushima_gauges_over_threshold_2025-09_to_2026-08.csv.gz",
    "area_info": "mlit_kriver_area_info_snapshot_2025-11-01T03JST_all_japan.json.gz",
}


#: what ``--accel`` takes, in words (its refusals quote what was typed, then this)
ACCEL_RANGE = "expected a number greater than 0 (1 = real time, 60 = an hour a minute) or 'max' (as fast as possible)"


def _accel(raw: str) -> float:
    if raw == "max":
        return math.inf
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r}: {ACCEL_RANGE}") from None
    if not value > 0 or not math.isfinite(value):  # found: said neither what was typed nor, for inf, why
        raise argparse.ArgumentTypeError(f"{raw!r}: {ACCEL_RANGE}")
    return value


def _positive_int(raw: str) -> int:
    if not (raw.isascii() and raw.isdigit() and 0 < int(raw) <= 10**9):
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number from 1 to 1000000000")
    return int(raw)


def _time(raw: str) -> datetime:
    try:  # without an offset: Japan time (sonae.japantime)
        return parse_iso_time(raw)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO 8601 time") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--scenario", metavar="FILE", help="scenario file (TOML; see docs/scenarios/)")
    src.add_argument("--replay", nargs="+", metavar=("FORMAT", "FILE"),
                     help=f"replay real readings: FORMAT is one of {', '.join(REPLAY_FORMATS)}; FILE defaults "
                          "to the shared data set")
    p.add_argument("--from", dest="replay_from", type=_time, metavar="TIME", help="replay from this time")
    p.add_argument("--to", dest="replay_to", type=_time, metavar="TIME", help="replay up to this time")
    p.add_argument("--station", action="append", default=[], metavar="ID",
                   help="replay only this station (id or name; repeatable)")
    p.add_argument("--municipality", type=municipality_code, metavar="CODE",
                   help="play every replayed gauge out in this covered municipality (団体コード); default: the "
                        f"drill town {DRILL_TOWN_CODE} for 持世寺 (宇部市, outside the covered area), each MLIT "
                        "gauge's own municipality")
    p.add_argument("--accel", type=_accel, metavar="N|max",
                   help="time acceleration (60 = an hour per minute; 'max' = as fast as possible)")
    p.add_argument("--duration", metavar="DURATION", help="scenario time to run, e.g. 6h (default: all of it; "
                                                         "not with --to, which ends a replay itself)")
    p.add_argument("--seed", type=int, help="random seed (default: the scenario's)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--real", action="store_true", help="mark readings as real, not as an exercise")
    mode.add_argument("--exercise", action="store_true", help="mark readings as an exercise (the default)")
    p.add_argument("--register-stations", action="store_true",
                   help="add the simulated stations to the registry first (existing stations are left alone)")
    p.add_argument("--transport", choices=("fast", "paho"), default="fast",
                   help="MQTT publisher: the lean built-in one (default) or Sonae's paho client")
    p.add_argument("--max-outstanding", type=_positive_int, default=20000,
                   help="QoS 1 messages awaiting PUBACK at most (1 or more: 0 would never publish)")
    p.add_argument("--no-progress", action="store_true", help="no live display, just the summary")
    p.add_argument("--jma", metavar="DIR", type=Path,
                   help="serve DIR's JMA telegrams (*.xml, in name order) as a local PULL Atom feed, one more "
                        "every --jma-interval-s; point SONAE_JMA_FEEDS at the printed URL")
    p.add_argument("--jma-port", type=port_or_any, default=18840, metavar="PORT",
                   help="port of the JMA feed (18840; 0: any free port, named in the printed URL)")
    p.add_argument("--jma-interval-s", type=positive_seconds, default=30.0, metavar="S",
                   help="seconds between telegrams of the JMA feed (30)")


def wants_fleet(args: argparse.Namespace) -> bool:
    """False when no scenario or replay was named: then the small demo river runs, as before."""
    return bool(getattr(args, "scenario", None) or getattr(args, "replay", None))


#: options only a scenario or a replay uses (dest, as the user wrote it): the demo river runs as it is
_FLEET_ONLY = (("duration", "--duration"), ("replay_from", "--from"), ("replay_to", "--to"),
               ("station", "--station"), ("accel", "--accel"), ("seed", "--seed"),
               ("register_stations", "--register-stations"), ("municipality", "--municipality"))


def demo_ignores(args: argparse.Namespace) -> str | None:
    """The error to print when options a scenario or replay uses were given without ``--scenario`` or
    ``--replay`` (found: ``sonae simulate --duration xyz`` ran the demo river for ever, the option unread);
    None when there are none, or a scenario or replay was named."""
    if wants_fleet(args):
        return None
    given = [flag for dest, flag in _FLEET_ONLY if getattr(args, dest, None)]
    if not given:
        return None
    return (f"only a --scenario FILE or a --replay FORMAT uses {', '.join(given)}: without either the demo river "
            "runs as it is (only --real changes it)")


def _replay_dir(args: argparse.Namespace) -> str | None:
    """``simulators.data_dir`` of the configuration the command runs with (None: the default)."""
    from sonae.config import ConfigError, load_settings

    try:
        return load_settings(config_file=getattr(args, "config", None))["simulators.data_dir"] or None
    except ConfigError:
        return None  # the service start reports the configuration error itself


def scenario_from_args(args: argparse.Namespace) -> tuple[Scenario, float | None]:
    """The scenario to run and a limit on its span (from ``--duration``).

    Raises
    ------
    ScenarioError
        One line, e.g. ``--from`` after ``--to`` (the one from/to pair of the CLI; a scenario's own
        ``[replay]`` window is checked by :class:`~simulators.scenario.ReplaySpec`).
    """
    replay_dir = _replay_dir(args)
    start, end = getattr(args, "replay_from", None), getattr(args, "replay_to", None)
    if start is not None and end is not None and start > end:
        raise ScenarioError(f"--from {start.isoformat()} is after --to {end.isoformat()}: nothing would be "
                            "replayed (give --from before --to)")
    if start is not None and end is not None and start == end:
        raise ScenarioError(f"--from and --to are both {start.isoformat()}: an empty window, nothing would be "
                            "replayed (give --to after --from, or --duration)")
    if end is not None and getattr(args, "duration", None):
        raise ScenarioError("--to and --duration both say when the replay ends: give one of them")
    if args.scenario:
        scenario = load_scenario(args.scenario, replay_dir=replay_dir)
        municipality = getattr(args, "municipality", None)
        if args.replay_from or args.replay_to or args.station or municipality:
            if scenario.replay is None:
                raise ScenarioError("--from/--to/--station/--municipality apply to replays; the scenario has no "
                                    "[replay]")
            r = scenario.replay
            scenario = scenario.with_overrides(replay=ReplaySpec(
                format=r.format, path=r.path, start=args.replay_from or r.start, end=args.replay_to or r.end,
                stations=tuple(args.station) or r.stations, limit=r.limit, municipality=municipality or r.municipality))
    else:
        fmt, *rest = args.replay
        if fmt not in REPLAY_FORMATS or len(rest) > 1:
            raise ScenarioError(f"--replay: expected FORMAT [FILE] with FORMAT one of {', '.join(REPLAY_FORMATS)}")
        path = Path(rest[0]) if rest else Path(replay_dir or SHARED_RIVER_LEVELS) / DEFAULT_REPLAY_FILES[fmt]
        if not rest and not path.is_file():
            raise ScenarioError(f"--replay {fmt}: the shared data set's {path.name} is not in {path.parent}; name the "
                                "file (--replay FORMAT FILE) or its folder (SONAE_SIMULATORS_DATA_DIR)")
        scenario = Scenario(name=f"replay-{fmt}", accel=60.0,
                            replay=ReplaySpec(format=fmt, path=path, start=args.replay_from, end=args.replay_to,
                                              stations=tuple(args.station),
                                              municipality=getattr(args, "municipality", None)))
    if not args.real and not scenario.exercise:
        log.warning("the scenario says exercise = false, but a real run needs --real: running as an exercise")
    scenario = scenario.with_overrides(exercise=not args.real, accel=args.accel, seed=args.seed)
    limit = parse_duration(args.duration, "--duration") if args.duration else None
    if limit is not None and not limit > 0:
        raise ScenarioError(f"--duration {args.duration!r}: nothing would run (give more than 0, e.g. 6h)")
    if limit is not None and scenario.replay is None:
        scenario = scenario.with_overrides(duration_s=limit)
        limit = None
    return scenario, limit


def check(args: argparse.Namespace) -> tuple[Scenario, float | None] | None:
    """Validate the options and scenario before any service starts; prints the error and returns
    None when they are wrong."""
    try:
        scenario, limit = scenario_from_args(args)
        Fleet(scenario, max_span_s=limit)  # reads replay files, checks the registry records
    except (ScenarioError, ValueError) as exc:
        print(f"sonae simulate: {exc}", file=sys.stderr)
        return None
    return scenario, limit


async def run(settings: Any, args: argparse.Namespace, stop: asyncio.Event, scenario: Scenario,
              limit: float | None = None) -> None:
    """Run the fleet until it ends or ``stop``, with the live display; print the summary."""
    fleet = Fleet(scenario, prefix=settings["mqtt.topic_prefix"], max_future_s=settings["ingest.max_future_s"],
                  max_span_s=limit)
    if args.register_stations:
        from ingest.schema import prepare_schema
        from sonae.db import open_pool

        pool = await open_pool(settings, prepare=lambda pool: prepare_schema(pool, settings))
        try:
            written = await register_stations(pool, fleet.stations)
        finally:
            await pool.close()
        print(f"registered {written} of {len(fleet.stations)} simulated stations "
              f"({len(fleet.stations) - written} were already there)", file=sys.stderr)
    for note in fleet.unseen_dropouts(settings["alerting.silent_factor"]):
        print(f"sonae simulate: note: {note}", file=sys.stderr)
    publisher = make_publisher(settings["mqtt.url"], client_id=f"sonae-sim-{uuid.uuid4().hex[:8]}",
                               transport=args.transport, protocol=settings["mqtt.protocol"],
                               max_outstanding=args.max_outstanding)
    try:
        await publisher.connect()
    except MqttError as exc:  # the CLI's convention for a service it cannot reach: one line, status 1
        raise ConnectionError(f"simulate: {exc}; start the broker or point SONAE_MQTT_URL (mqtt.url) at one that "
                              "runs (unset, sonae starts its own)") from None
    done = asyncio.Event()
    display = None if args.no_progress else ProgressDisplay(fleet.stats)
    shown = asyncio.create_task(display.run(done)) if display else None
    try:
        await fleet.run(publisher, stop=stop)
    finally:
        done.set()
        if shown is not None:
            await shown
        await publisher.close()
        if display is not None:
            display.draw()
        print(summary(fleet.stats))
