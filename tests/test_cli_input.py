"""Every CLI command answers bad input with one line on stderr and exit status 2, never a traceback;
administrative commands never create a deployment by accident (issue #18)."""

from __future__ import annotations

import csv
import gzip
import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from sonae.embedded import free_port
from tests.conftest import shared_data, with_database

MLIT = ("river_levels", "mlit_kriver_fukushima_gauges_over_threshold_2025-09_to_2026-08.csv.gz")
STATIONS_CSV = (
    "id,name,municipality_code,lat,lon,th_standby,th_caution,th_evacuation,th_danger\n"
    "abukuma-01,阿武隈川 本宮,072036,37.51,140.39,2.0,3.0,3.5,4.0\n"
    "abukuma-02,阿武隈川 阿久津,072036,37.41,140.38,2.5,3.2,3.8,4.4\n"
)


def sonae(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env, input=stdin if stdin is not None
                          else "", capture_output=True, text=True, timeout=180)


def one_line_error(result: subprocess.CompletedProcess[str], *, code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sonae: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
            "SONAE_DATABASE_URL": database_url, "SONAE_STATE_DIR": str(tmp_path / "state"),
            "SONAE_LOG_FORMAT": "text", "SONAE_LOG_LEVEL": "warning"}


async def station_ids(database_url: str) -> list[str]:
    conn = await asyncpg.connect(database_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('stations') IS NOT NULL"):
            return []  # the command stopped before it opened the database
        return [r["id"] for r in await conn.fetch("SELECT id FROM stations ORDER BY id")]
    finally:
        await conn.close()


async def test_station_files_plain_compressed_and_mlit(env: dict[str, str], database_url: str,
                                                       tmp_path: Path) -> None:
    packed = tmp_path / "stations.csv.gz"
    packed.write_bytes(gzip.compress(STATIONS_CSV.encode()))
    done = sonae("stations", "import", str(packed), env=env)
    assert done.returncode == 0 and "imported 2 stations" in done.stdout, done.stderr
    assert await station_ids(database_url) == ["abukuma-01", "abukuma-02"]

    mlit = shared_data(*MLIT)
    with gzip.open(mlit, "rt", encoding="utf-8") as fh:
        expected = {row["station_code"] for row in csv.DictReader(fh) if row["level_m"]}
    done = sonae("stations", "import", str(mlit), env=env)
    assert done.returncode == 0, done.stderr
    assert f"imported {len(expected)} stations" in done.stdout
    assert set(await station_ids(database_url)) == expected | {"abukuma-01", "abukuma-02"}


@pytest.mark.parametrize(("content", "expected"), [
    (None, "no such file"),
    (STATIONS_CSV.replace("th_danger", "th_dangr"), "line 1: unknown column 'th_dangr'"),
    (STATIONS_CSV.replace("id,name", "code,name"), "line 1: missing column 'id'"),
    (STATIONS_CSV.replace("2.5,3.2", "2.5,high"), "line 3: field 'th_caution' has a bad value 'high'"),
    (STATIONS_CSV.encode("cp932"), "not UTF-8 text"),
    ("{not json", "line 1: not JSON"),
    ('{"type": "FeatureCollection", "features": [{"properties": []}]}', "feature 0: properties must be an object"),
], ids=["missing", "misspelt-column", "no-id-column", "bad-value", "shift-jis", "broken-json", "bad-feature"])
async def test_bad_station_files_are_one_line(env: dict[str, str], database_url: str, tmp_path: Path,
                                              content: str | bytes | None, expected: str) -> None:
    path = tmp_path / ("stations.geojson" if isinstance(content, str) and content.startswith("{") else "stations.csv")
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    assert expected in one_line_error(sonae("stations", "import", str(path), env=env))
    assert await station_ids(database_url) == []


def test_folders_and_other_bad_files_are_one_line(env: dict[str, str], tmp_path: Path) -> None:
    assert "folder" in one_line_error(sonae("stations", "import", str(tmp_path), env=env))
    one_line_error(sonae("shelters", "import", str(tmp_path / "none.geojson"), env=env))
    bad = tmp_path / "areas.geojson"
    bad.write_text("{oops", encoding="utf-8")
    one_line_error(sonae("hazards", "import", str(bad), "--hazard", "flood", env=env))


def test_passwords_without_a_terminal_or_too_short(env: dict[str, str]) -> None:
    piped = one_line_error(sonae("users", "add", "hana", "--role", "staff", env=env, stdin="x\n"))
    assert "--password-from-env" in piped
    unset = one_line_error(sonae("users", "add", "hana", "--role", "staff", "--password-from-env", env=env))
    assert "SONAE_NEW_PASSWORD" in unset
    short = one_line_error(sonae("users", "add", "hana", "--role", "staff", "--password-from-env",
                                 env={**env, "SONAE_NEW_PASSWORD": "short"}))
    assert "configuration error" not in short and "10" in short


def test_a_command_in_the_wrong_folder_creates_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "elsewhere"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_STATE_DIR": str(empty), "SONAE_LOG_LEVEL": "warning"}
    for args in (("users", "list"), ("stations", "import", "x.csv"), ("webhooks", "list"), ("vapid", "show")):
        if args[0] == "stations":
            (tmp_path / "x.csv").write_text(STATIONS_CSV, encoding="utf-8")
            args = ("stations", "import", str(tmp_path / "x.csv"))
        message = one_line_error(sonae(*args, env=env))
        assert "no Sonae database" in message and str(empty) in message
    assert not (empty / "postgres").exists()
    status = sonae("status", env=env)
    assert status.returncode == 1 and "not created yet" in status.stdout and str(empty) in status.stdout
    assert not (empty / "postgres").exists()


async def test_a_configured_server_without_the_database_is_not_created(pg_server_url: str, tmp_path: Path) -> None:
    name = f"sonae_absent_{os.getpid()}"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": with_database(pg_server_url, name), "SONAE_STATE_DIR": str(tmp_path)}
    message = one_line_error(sonae("users", "list", env=env))
    assert name in message
    admin = await asyncpg.connect(pg_server_url)
    try:
        assert not await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()


def test_status_names_the_deployment(env: dict[str, str], database_url: str) -> None:
    sonae("users", "list", env=env)  # migrates the (existing, empty) configured database
    status = sonae("status", env=env)
    assert status.returncode == 0, status.stderr
    out = io.StringIO(status.stdout).read()
    assert env["SONAE_STATE_DIR"] in out and "migrations applied" in out and "0 accounts" in out
    assert database_url.rsplit("/", 1)[-1] in out


def test_hazard_maps_import_link_and_bad_input(env: dict[str, str], tmp_path: Path) -> None:
    """National hazard maps through the CLI: the real 沼津市 PLATEAU files, links, and bad input."""
    import json

    fld = shared_data("hazard_plateau", "numazu_plateau2021_fld_kanogawa_L2_52385628.geojson")
    n = len(json.loads(fld.read_text(encoding="utf-8"))["features"])
    done = sonae("hazards", "import", str(fld), "--link", "gauge:kano-01", "--at-level", "4", env=env)
    assert done.returncode == 0, done.stderr
    assert f"{n} areas" in done.stdout and "gauge kano-01 is at level 4" in done.stdout
    assert "PLATEAU" in done.stdout  # the attribution the source asks for
    listed = sonae("hazards", "maps", env=env)
    assert listed.returncode == 0 and "gauge:kano-01 at level 4" in listed.stdout
    map_id = fld.name.split(".")[0]
    unlinked = sonae("hazards", "link", map_id, "--unlink", env=env)
    assert unlinked.returncode == 0 and "unlinked" in unlinked.stdout
    assert "--at-level" in one_line_error(sonae("hazards", "import", str(fld), "--link", "gauge:x", env=env))
    assert "KIND:REF" in one_line_error(sonae("hazards", "link", map_id, "--link", "gauge", "--at-level", "4",
                                              env=env))
    assert "no hazard map" in one_line_error(sonae("hazards", "link", "nope", "--link", "river:x",
                                                   "--at-level", "4", env=env))
    shp = tmp_path / "broken.shp"
    shp.write_bytes(b"not a shapefile")
    assert "shapefile" in one_line_error(sonae("hazards", "import", str(shp), env=env))
    odd = tmp_path / "rank_only.geojson"
    odd.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": '
                   '{"浸水ランク": "1"}, "geometry": {"type": "Polygon", "coordinates": '
                   '[[[0,0],[1,0],[1,1],[0,0]]]}}]}', encoding="utf-8")
    assert "--hazard" in one_line_error(sonae("hazards", "import", str(odd), env=env))


async def test_a_webhook_that_would_never_be_called_is_refused(env: dict[str, str], database_url: str) -> None:
    """The webhook rules are notify's (``notify.store.check_webhook``), so the command keeps them as the API
    does: an unconfirmed reading is never delivered, there is no level 6, an ftp URL cannot be POSTed to."""
    for args, named in ((("https://partner.example/h", "--conditions", "river_level,river_level_unconfirmed"),
                         "conditions"),
                        (("https://partner.example/h", "--conditions", "river-level"), "conditions"),
                        (("https://partner.example/h", "--min-level", "6"), "min_level"),
                        (("ftp://partner.example/h",), "url"),
                        # the address rule (notify.endpoints): found, the API took these and the worker posted there
                        (("http://2130706433:9/x",), "is a loopback address"),
                        (("http://169.254.169.254/latest/meta-data/",), "is a link-local address")):
        assert named in one_line_error(sonae("webhooks", "add", *args, env=env))
    conn = await asyncpg.connect(database_url)
    try:
        if await conn.fetchval("SELECT to_regclass('webhooks') IS NOT NULL"):  # refused before connecting
            assert await conn.fetchval("SELECT count(*) FROM webhooks") == 0
    finally:
        await conn.close()
    for naha in ("472018", "47201"):  # 那覇市: listed (all of Japan), not covered (Fukushima's boundaries): the API's 422
        line = one_line_error(sonae("webhooks", "add", "https://partner.example/h", "--municipality", naha, env=env))
        assert "outside the area Sonae covers" in line and "福島県 (59)" in line, line
    # the drill town has exercises only: a webhook for it takes drills (found: one without got a real alert)
    line = one_line_error(sonae("webhooks", "add", "https://partner.example/h", "--municipality", "079995", env=env))
    assert "for exercises only" in line and "add --drills" in line, line
    done = sonae("webhooks", "add", "https://partner.example/h", "--conditions", "river_level,silent",
                 "--min-level", "5", env=env)
    assert done.returncode == 0 and "created" in done.stdout, done.stderr


@pytest.mark.parametrize("given", [["--duration", "xyz"], ["--seed", "3"], ["--station", "x", "--accel", "60"],
                                   ["--register-stations"], ["--max-outstanding", "0"], ["--max-outstanding", "-3"]])
def test_simulate_refuses_options_the_demo_river_never_reads(env: dict[str, str], given: list[str]) -> None:
    """Without --scenario or --replay the demo river runs, and read none of these: ``sonae simulate
    --duration xyz`` started the services and ran for ever. Now one line and status 2, before anything
    starts (and a --max-outstanding of 0, which would never publish, is refused by its parser)."""
    result = subprocess.run([sys.executable, "-m", "app.cli", "simulate", "--no-progress", *given], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("sonae simulate: ") and "Traceback" not in result.stderr, result.stderr
    assert "embedded" not in result.stderr + result.stdout  # nothing was started


@pytest.mark.parametrize("replay", [["jiseiji"], ["mlit"]])
def test_simulate_replay_from_after_to_is_one_line_and_status_2(env: dict[str, str], replay: list[str],
                                                                tmp_path: Path) -> None:
    """``sonae simulate --replay … --from X --to Y`` with X after Y (found: no word of it). One line naming
    both, status 2, before anything starts; a scenario's own [replay] window the same (the one rule of
    simulators.scenario.ReplaySpec); the same instant twice is a window, not an error."""
    late, early = "2023-07-01T18:00+09:00", "2023-06-30T06:00+09:00"
    result = subprocess.run([sys.executable, "-m", "app.cli", "simulate", "--no-progress", "--replay", *replay,
                             "--from", late, "--to", early], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sonae simulate: ") and "Traceback" not in result.stderr, lines
    assert "--from" in lines[0] and "after --to" in lines[0] and "2023-07-01" in lines[0], lines[0]
    assert "embedded" not in result.stderr + result.stdout  # nothing was started
    from simulators.scenario import ReplaySpec, ScenarioError
    from sonae.japantime import parse_iso_time

    with pytest.raises(ScenarioError, match="after the end"):
        ReplaySpec(format="jiseiji", path=tmp_path / "x.csv", start=parse_iso_time(late), end=parse_iso_time(early))
    ReplaySpec(format="jiseiji", path=tmp_path / "x.csv", start=parse_iso_time(late), end=parse_iso_time(late))


@pytest.mark.parametrize(("given", "said"), [
    (["simulate", "--jma", ".", "--jma-interval-s", "-1"], "--jma-interval-s: '-1'"),
    (["simulate", "--jma", ".", "--jma-interval-s", "nan"], "--jma-interval-s: 'nan'"),
    (["simulate", "--jma", ".", "--jma-interval-s", "0"], "--jma-interval-s: '0'"),
    (["simulate", "--jma", ".", "--jma-port", "70000"], "--jma-port: '70000' is not a port number"),
    (["simulate", "--jma", ".", "--jma-port", "-1"], "--jma-port: '-1' is not a port number"),
    (["simulate", "--replay", "jiseiji", "--from", "2023-07-01T00:00", "--to", "2023-07-01T00:00"],
     "an empty window"),
    (["simulate", "--replay", "jiseiji", "--from", "2023-07-01T00:00", "--to", "2023-07-02T00:00", "--duration", "1h"],
     "--to and --duration both"),
    (["simulate", "--replay", "jiseiji", "--duration", "0"], "--duration '0'"),
    # a finite --accel whose derived pace overflows (found: "unexpected error (OverflowError…)", status 1)
    (["simulate", "--replay", "mlit", "--accel", "1e-320"], "accel 1e-320"),
    (["simulate", "--replay", "jiseiji", "--accel", "1e-300"], "accel 1e-300"),
    # what was typed, and the range (found: "accel must be a positive number or 'max'", the text not quoted)
    (["simulate", "--replay", "jiseiji", "--accel=-6e1"], "--accel: '-6e1': expected a number greater than 0"),
    (["simulate", "--replay", "jiseiji", "--accel", "inf"], "--accel: 'inf': expected a number greater than 0"),
    (["simulate", "--replay", "jiseiji", "--accel", "fast"], "--accel: 'fast': expected a number greater than 0"),
    (["api", "--port", "70000"], "--port: '70000' is not a port number"),
    (["run", "--port", "0"], "--port: '0' is not a port number"),
    (["api", "--port", "0"], "--port: '0' is not a port number from 1 to 65535"),
    (["webhooks", "remove", "99999999999999999999"], "id: '99999999999999999999' is not an id"),
    (["webhooks", "remove", "-3"], "id: '-3' is not an id"),
])
def test_numeric_and_port_options_are_checked_before_anything_starts(env: dict[str, str], tmp_path: Path,
                                                                     given: list[str], said: str) -> None:
    """Found by a new user: ``sonae simulate --jma DIR --jma-interval-s -1`` (or nan) started the feed, "one
    every -1 s"; ``--jma-port 70000`` exited 1 with "unexpected error (OverflowError…)"; ``--to`` with
    ``--duration``, and ``--from`` equal to ``--to``, ran. Now the last line names the option, status 2,
    nothing started (sonae.arguments; simulators.command.scenario_from_args)."""
    result = subprocess.run([sys.executable, "-m", "app.cli", *given[:1], *(["--no-progress"] if given[0] ==
                                                                          "simulate" else []), *given[1:]],
                            env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("sonae ") and said in lines[-1] and "Traceback" not in result.stderr, result.stderr
    assert "embedded" not in result.stderr + result.stdout  # nothing was started


def test_run_real_without_simulate_is_a_usage_error(env: dict[str, str], tmp_path: Path) -> None:
    """Found: ``sonae run --real`` ran as ``sonae run``, the option silently unread. ``--real`` only marks the
    simulated gauges' readings as real: without ``--simulate`` it is one line, status 2, nothing started (not
    an implied ``--simulate``, which would publish simulated readings marked real)."""
    try:
        result = subprocess.run([sys.executable, "-m", "app.cli", "run", "--real", "--port", str(free_port())],
                                env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("`sonae run --real` started the service instead of refusing the option")
    line = one_line_error(result)
    assert "--real" in line and "--simulate" in line, line
    assert not (tmp_path / "state").exists() and not Path(env["SONAE_STATE_DIR"]).exists()  # nothing was started


def test_the_api_port_setting_keeps_the_rule_of_the_option(env: dict[str, str]) -> None:
    """Found by a new operator: ``sonae api --port 0`` was refused, ``SONAE_API_PORT=0`` accepted. One rule
    (sonae.config.LISTEN_PORTS) for both: one line naming the setting, status 2, nothing started."""
    for value in ("0", "65536"):
        line = one_line_error(sonae("api", env={**env, "SONAE_API_PORT": value}))
        assert "SONAE_API_PORT" in line and "1 to 65535" in line, line


@pytest.mark.parametrize("given", [["--min-level", "99"], ["--min-level", "-1"], ["--conditions", "rain"]])
def test_a_webhooks_rules_are_told_before_the_database_is_reached(given: list[str], tmp_path: Path) -> None:
    """Found by a new operator: ``sonae webhooks add URL --min-level 99`` was checked only after PostgreSQL
    answered. With a database that cannot be reached, the rule's own line still comes, status 2."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "SONAE_STATE_DIR": str(tmp_path / "s"),
           "SONAE_LOG_LEVEL": "warning"}
    line = one_line_error(sonae("webhooks", "add", "https://partner.example/h", *given, env=env))
    assert ("min_level" in line) if given[0] == "--min-level" else ("conditions" in line), line


def test_simulate_with_a_broker_that_cannot_be_reached_says_where_and_what_to_do(env: dict[str, str]) -> None:
    """Found by a new operator: the run ended "unexpected error (_NoBroker…)". Now one line naming the broker's
    address and the setting, status 1 (a service that cannot be reached, as for every command)."""
    with socket.socket() as free:  # a port nothing listens on
        free.bind(("127.0.0.1", 0))
        dead = free.getsockname()[1]
    line = one_line_error(sonae("simulate", "--no-progress", "--replay", "jiseiji", "--duration", "1h",
                                env={**env, "SONAE_MQTT_URL": f"mqtt://127.0.0.1:{dead}"}), code=1)
    assert f"127.0.0.1:{dead}" in line and "SONAE_MQTT_URL" in line and "unexpected" not in line, line


@pytest.mark.parametrize(("code", "rule"), [
    ("072035", "check digit"), ("472018", "outside the area Sonae covers"), ("079995", "for exercises only"),
], ids=["check-digit", "uncovered", "drill-town"])
async def test_a_refused_station_names_its_file_and_line_for_every_rule(
        env: dict[str, str], database_url: str, tmp_path: Path, code: str, rule: str) -> None:
    """Found: a wrong check digit was told as "x.csv line 2: …", a code outside the covered area (那覇市)
    as "station …" without the file and line; the database's rules are told as the file's."""
    path = tmp_path / "x.csv"
    path.write_text(STATIONS_CSV + f"bk-far,会津の水位計,{code},37.5,139.9,,,,\n", encoding="utf-8")
    said = one_line_error(sonae("stations", "import", str(path), env=env))
    assert "x.csv line 4: station 'bk-far': municipality_code: " in said and rule in said, said
    assert await station_ids(database_url) == []


async def test_account_changes_on_the_command_line_are_in_the_audit_log(env: dict[str, str],
                                                                       database_url: str) -> None:
    """Found by break33: ``sonae users add|passwd|disable|enable`` changed accounts without an audit row, while the
    same creation through the API wrote ``account.created`` (alerting.audit: every change of an account is one
    row): who disabled an account, or changed its password, could not be read from the audit log."""
    with_password = {**env, "SONAE_NEW_PASSWORD": "correct horse battery"}
    for args in (("add", "hana", "--role", "staff", "--municipality", "072036", "--password-from-env"),
                 ("passwd", "hana", "--password-from-env"), ("disable", "hana"), ("enable", "hana")):
        result = sonae("users", *args, env=with_password)
        assert result.returncode == 0, result.stderr
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch("SELECT actor, action, object_type, object_id, municipality_code, "
                                "detail::jsonb AS detail FROM audit_log ORDER BY id")
    finally:
        await conn.close()
    assert [(r["action"], r["object_type"], r["object_id"]) for r in rows] == [
        ("account.created", "account", "hana"), ("account.password_changed", "account", "hana"),
        ("account.disabled", "account", "hana"), ("account.enabled", "account", "hana")]
    assert {r["actor"] for r in rows} == {"command line"}  # no account's name (a space)
    # each about the account's municipality, so its admin reads them (GET /api/v1/audit)
    assert {r["municipality_code"] for r in rows} == {"072036"}
    assert "correct horse battery" not in str([dict(r) for r in rows])
