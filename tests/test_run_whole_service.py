"""`sonae run --simulate` as a user runs it: a real process, real services, Ctrl-C at the end."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from sonae.embedded import free_port


def _get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _start(env: dict[str, str], port: int, state: Path) -> subprocess.Popen[str]:
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
            "SONAE_STATE_DIR": str(state), "SONAE_API_PORT": str(port), **env}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--simulate"], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for_advancing_readings(proc: subprocess.Popen[str], port: int, timeout: float = 240) -> dict[str, str]:
    """Return {station: latest ts} once every station's latest reading has advanced at least once."""
    deadline = time.monotonic() + timeout
    first: dict[str, str] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sonae run exited early:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            stations = _get(f"http://127.0.0.1:{port}/api/v1/stations")["stations"]
        except OSError:
            time.sleep(0.2)
            continue
        latest = {s["id"]: s["latest"]["ts"] for s in stations if s["latest"]}
        if latest and len(latest) == len(stations):
            if not first:
                first = latest
            elif all(latest[k] > first[k] for k in first):
                return latest
        time.sleep(0.2)
    raise AssertionError("readings did not advance within the time limit")


def _wait_for_metric(port: int, name: str, ok: Callable[[float], bool], timeout: float = 240) -> float:
    """The value of the unlabelled metric ``name`` once ``ok(value)`` holds (the service's /metrics, polled)."""
    deadline = time.monotonic() + timeout
    value = math.nan
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            found = re.search(rf"^{name} (\S+)$", resp.read().decode(), re.M)
        if found and ok(value := float(found[1])):
            return value
        time.sleep(0.2)
    raise AssertionError(f"{name} stayed {value} for {timeout} s")


def _interrupt(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_run_with_configured_services_starts_nothing_embedded(tmp_path: Path, database_url: str, mqtt_url: str,
                                                             mqtt_protocol: str) -> None:
    port = free_port()
    proc = _start({"SONAE_DATABASE_URL": database_url, "SONAE_MQTT_URL": mqtt_url,
                   "SONAE_MQTT_PROTOCOL": mqtt_protocol, "SONAE_MQTT_TOPIC_PREFIX": f"run{port}/v1",
                   "SONAE_INGEST_SHARED_GROUP": ""}, port, tmp_path / "state")
    try:
        _wait_for_advancing_readings(proc, port)
        # the process's event loop is watched (sonae.eventloop): its timer has woken and been counted
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        count = re.search(r"^sonae_event_loop_lag_seconds_count (\S+)$", metrics, re.M)
        assert count and float(count[1]) > 0, metrics[:2000]
        # and once the road network is loaded, what start-up built is out of the garbage collector's way
        _wait_for_metric(port, "sonae_gc_frozen_objects", lambda v: v > 0)
        # a resident page's live stream stays open while the service stops: it must not hold it up
        stream = socket.create_connection(("127.0.0.1", port), timeout=60)
        stream.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
        head = stream.recv(200)
        assert b"200" in head
    finally:
        out = _interrupt(proc)
    # The service ended the stream itself as it stopped: the handler returned and wrote the last chunk.
    # A stream that held the shutdown up would instead be cut off when the server's grace period ran
    # out, without that chunk (a check on what the server did, not on how long it took).
    rest = head
    while chunk := stream.recv(65536):
        rest += chunk
    stream.close()
    assert b"Transfer-Encoding: chunked" in rest and rest.endswith(b"\r\n0\r\n\r\n"), rest[-200:]
    assert not (tmp_path / "state" / "postgres").exists()
    assert not (tmp_path / "state" / "mqtt").exists()
    assert "embedded" not in out
    # the demo console is reachable: a drill staff account whose one-time password was printed
    match = re.search(r"Staff console login: user drill, password (\S+) ", out)
    assert match, out
    asyncio.run(_drill_login_works(database_url, match[1]))


async def _drill_login_works(database_url: str, password: str) -> None:
    import asyncpg

    from api.auth import login
    from simulators.demo import DRILLTOWN_MUNICIPALITY

    conn = await asyncpg.connect(database_url)
    try:
        assert await login(conn, "drill", "wrong-password") is None
        done = await login(conn, "drill", password)
        assert done is not None
        account = done[2]
        assert account.role == "staff" and account.municipality_code == DRILLTOWN_MUNICIPALITY
    finally:
        await conn.close()


@pytest.mark.skipif(os.geteuid() == 0 and not Path("/usr/sbin/useradd").exists(), reason="needs useradd as root")
def test_run_embedded_defaults_survive_a_restart(private_tmp: Path) -> None:
    port = free_port()
    env = {"SONAE_EMBEDDED_MQTT_PORT": str(free_port())}
    state = private_tmp / "state"
    proc = _start(env, port, state)
    try:
        first = _wait_for_advancing_readings(proc, port)
        pg_pid = int((state / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
        broker_pid = json.loads((state / "mqtt" / "broker.json").read_text())["pid"]
    finally:
        _interrupt(proc)
    assert not _alive(pg_pid), "embedded PostgreSQL left running"
    assert not _alive(broker_pid), "embedded broker left running"

    proc = _start(env, port, state)
    try:
        _wait_for_advancing_readings(proc, port)
        station = next(iter(first))
        series = _get(f"http://127.0.0.1:{port}/api/v1/stations/{station}/readings")["readings"]
        assert any(r["ts"] <= first[station] for r in series), "data of the first run is still there"
    finally:
        _interrupt(proc)


def test_demo_gauges_of_the_drill_town(tmp_path: Path) -> None:
    """`run --simulate` uses the drill town's own gauges, so their alerts arm the town's flood areas."""
    from evac.drilltown import generate
    from simulators.demo import DRILLTOWN_MUNICIPALITY, drilltown_stations

    town = tmp_path / "town"
    generate(town, rows=12, cols=12, seed=3)
    stations = drilltown_stations(town)
    gauges = json.loads((town / "gauges.json").read_text(encoding="utf-8"))
    assert [s.id for s in stations] == [g["station_id"] for g in gauges]
    for s, g in zip(stations, gauges, strict=True):
        assert s.exercise and s.municipality_code == DRILLTOWN_MUNICIPALITY
        assert s.th_evacuation == float(g["levels_m"]["3"]) and s.th_danger == float(g["levels_m"]["4"])
        assert s.th_standby is not None and s.th_caution is not None
        assert s.th_standby < s.th_caution < s.th_evacuation < s.th_danger


#: the demo river's clock in the test (``simulators.demo_time_scale``): a 2.5-hour flood in one minute, not five
#: (the default 30) — the same cycle on the river's clock, a reading a minute of river time (every 0.4 s)
CYCLE_TIME_SCALE = 150.0


@pytest.mark.timeout(600)
def test_simulate_shows_a_gauge_going_to_level_4_and_back_to_cleared(tmp_path: Path, database_url: str,
                                                                      mqtt_url: str, mqtt_protocol: str) -> None:
    """The demo's whole cycle within one flood period: up to level 4, then stepped down and cleared (the demo
    river and its exercise rules run on the scenario's clock, ``simulators.demo_time_scale``; see simulators.demo).

    The period (2.5 hours of river time: one minute at the test's scale, five at the default) is checked on
    that clock, the times of the readings behind the alert events, not on the test's: a loaded machine starts
    the service more slowly but does not change the cycle. One alert is followed from raised to cleared (the
    events of a station between them), so a flood whose start the service missed does not count.
    """
    from simulators.demo import DemoRiver

    port = free_port()
    proc = _start({"SONAE_DATABASE_URL": database_url, "SONAE_MQTT_URL": mqtt_url,
                   "SONAE_MQTT_PROTOCOL": mqtt_protocol, "SONAE_MQTT_TOPIC_PREFIX": f"cycle{port}/v1",
                   "SONAE_INGEST_SHARED_GROUP": "", "SONAE_SIMULATORS_DEMO_TIME_SCALE": str(CYCLE_TIME_SCALE)},
                  port, tmp_path / "state")
    try:
        deadline = time.monotonic() + 400  # a bound on the wait only: the cycle is judged below
        cycles: dict[str, list[list[tuple[str, int | None, datetime]]]] = {}
        done: list[tuple[str, int | None, datetime]] | None = None
        while done is None:
            assert time.monotonic() < deadline, f"no gauge went to level 4 and back to cleared: {cycles}"
            if proc.poll() is not None:
                raise AssertionError(f"sonae run exited early:\n{proc.stdout.read() if proc.stdout else ''}")
            try:
                events = _get(f"http://127.0.0.1:{port}/api/v1/alerts/history?exercise=true")["events"]
            except OSError:
                time.sleep(0.5)
                continue
            cycles = {}
            for e in sorted(events, key=lambda e: e["event_id"]):
                if e["condition"] == "river_level" and e["station_id"]:
                    seen = cycles.setdefault(e["station_id"], [])
                    if e["kind"] == "raised" or not seen:
                        seen.append([])
                    seen[-1].append((e["kind"], e["level"], datetime.fromisoformat(e["reading_ts"])))
            done = next((c for seen in cycles.values() for c in seen if c[0][0] == "raised" and c[-1][0] == "cleared"
                         and max(lv or 0 for _, lv, _ in c) >= 4), None)
            time.sleep(1.0)
        assert done[-1][1] is None
        # raised to cleared within one period of the readings' own times (the demo's clock)
        period = DemoRiver().period_s / CYCLE_TIME_SCALE
        assert (done[-1][2] - done[0][2]).total_seconds() <= period, done
        # ... and stepped down on its way: a level below 4 between the top and the clearing
        levels = [lv for _, lv, _ in done]
        top = levels.index(max(lv or 0 for lv in levels))
        assert any(lv is not None and lv < levels[top] for lv in levels[top:]), done
        # re-evaluated: the level held by another rule at the same level (a trend's level 3 reaching 避難判断水位)
        kinds = ("raised", "escalated", "de-escalated", "re-evaluated", "cleared")
        assert all(e[0] in kinds for e in done), done
    finally:
        _interrupt(proc)


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process below ``pid`` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            try:
                out.append((child, Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()))
            except (FileNotFoundError, ProcessLookupError):
                pass
    return out


def test_ctrl_c_stops_the_whole_service_without_a_traceback(tmp_path: Path, database_url: str, mqtt_url: str,
                                                            mqtt_protocol: str) -> None:
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group, the route search worker
    (evac/search.py, a spawned process) too: it died with a KeyboardInterrupt traceback on stderr. Now the
    stop is clean: no traceback, exit status 0 (``app.cli.main``: 130 only for an interrupt that ends
    the command before its own stop)."""
    port = free_port()
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
            "SONAE_STATE_DIR": str(tmp_path / "state"), "SONAE_API_PORT": str(port),
            "SONAE_DATABASE_URL": database_url, "SONAE_MQTT_URL": mqtt_url, "SONAE_MQTT_PROTOCOL": mqtt_protocol,
            "SONAE_MQTT_TOPIC_PREFIX": f"run{port}/v1", "SONAE_INGEST_SHARED_GROUP": ""}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--simulate"], env=full, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        worker: list[tuple[int, str]] = []
        while time.monotonic() < deadline and not worker:
            assert proc.poll() is None, proc.communicate()
            try:  # a route makes the engine search (in the worker once it is up)
                area = _get(f"http://127.0.0.1:{port}/api/v1/service")["service_area"]
                if area:
                    lat, lon = (area[1] + area[3]) / 2, (area[0] + area[2]) / 2
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/route?lat={lat:.4f}&lon={lon:.4f}"
                                           "&profile=wheelchair", timeout=60).read()
            except OSError:
                pass
            worker = [p for p in _descendants(proc.pid) if "spawn_main" in p[1] and "resource_tracker" not in p[1]]
            if not worker:
                time.sleep(0.5)
        assert worker, "the route search worker never started"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        out, err = proc.communicate(timeout=180)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
    assert proc.returncode == 0, (proc.returncode, err[-2000:])
