"""`sonae status` reports the ports the running service uses, whatever the environment `status` itself sees.

Found (break-it pass 6): after ``SONAE_EMBEDDED_MQTT_PORT=18896 sonae run --simulate --port 8096``,
``sonae status --state-dir DIR`` reported the broker on 18830 and the API on 8080, both "not running".
A real ``sonae run`` (real PostgreSQL, its own embedded broker), then a real ``sonae status``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sonae.embedded import free_port


def _env(**extra: str) -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"), **extra}


def _status(state: Path, database_url: str) -> str:
    done = subprocess.run([sys.executable, "-m", "app.cli", "status", "--state-dir", str(state)],
                          env=_env(SONAE_DATABASE_URL=database_url), capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def _wait_ready(proc: subprocess.Popen[str], port: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sonae run exited early:\n{proc.stdout.read() if proc.stdout else ''}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)  # polling a real process's readiness, with a deadline
    raise AssertionError("sonae run did not become ready")


def test_status_reads_the_ports_the_run_uses(tmp_path: Path, database_url: str) -> None:
    state = tmp_path / "state"
    api_port, broker_port = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--state-dir", str(state), "--port", str(api_port)],
                            env=_env(SONAE_DATABASE_URL=database_url, SONAE_EMBEDDED_MQTT_PORT=str(broker_port),
                                     SONAE_LOG_FORMAT="text"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_ready(proc, api_port)
        said = _status(state, database_url)  # without the run's SONAE_EMBEDDED_MQTT_PORT and --port
        assert f"embedded, port {broker_port} (running, recorded by the running pid" in said, said
        assert f":{api_port}/ (readyz 200) (recorded by the running pid {proc.pid})" in said, said
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    # once stopped, nothing it recorded is believed: the API's record is gone, the broker's with it
    assert not (state / "api.json").exists()
    said = _status(state, database_url)
    assert str(api_port) not in said and f"port {broker_port}" not in said, said
