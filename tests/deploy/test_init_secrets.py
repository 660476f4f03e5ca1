"""deploy/compose/init-secrets.sh writes every value through sonae's one check (issue #16 item 6): a
value with a line break or control character stops the script before anything is written, and
passwords with URL/TOML metacharacters round-trip exactly."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.service_secrets import SecretsError, service_toml

ROOT = Path(__file__).resolve().parents[2]
SONAE = f"{sys.executable} -m app.cli"


def _toml(**over: str) -> str:
    kw = {"db_user": "sonae", "db_password": "pw", "db_host": "timescaledb", "db_port": 5432, "db_name": "sonae",
          "mqtt_user": "sonae-ingest", "mqtt_password": "mq", "mqtt_host": "mosquitto", "mqtt_port": 1883, **over}
    return service_toml(**kw)  # type: ignore[arg-type]


@given(st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp", "Cf")), min_size=1, max_size=60))
def test_any_printable_password_round_trips_through_toml_and_url(password: str) -> None:
    parsed = tomllib.loads(_toml(db_password=password, mqtt_password=password))
    assert set(parsed) == {"database", "mqtt"}  # no table injected
    for url in (parsed["database"]["url"], parsed["mqtt"]["url"]):
        parts = urlsplit(url)
        assert unquote(parts.password or "") == password
        assert parts.hostname in ("timescaledb", "mosquitto")


@pytest.mark.parametrize("field", ["db_password", "mqtt_password", "db_host", "mqtt_user", "db_name"])
@pytest.mark.parametrize("hostile", ['x"\n[database]\nurl = "postgresql://evil', "a\rb", "a\x00b", "a\u2028b",
                                     "a\u202eb"])
def test_control_characters_and_line_breaks_are_refused(field: str, hostile: str) -> None:
    with pytest.raises(SecretsError) as err:
        _toml(**{field: hostile})
    assert field in str(err.value) and "evil" not in str(err.value)


def _run(tmp: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp / "init-secrets.sh"
    shutil.copy(ROOT / "deploy/compose/init-secrets.sh", script)
    return subprocess.run(["sh", str(script)], cwd=tmp, capture_output=True, text=True, timeout=300,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp), "SONAE": SONAE,
                               "PYTHONPATH": str(ROOT), **env})


@pytest.mark.skipif(shutil.which("openssl") is None, reason="init-secrets.sh makes its certificate with openssl")
def test_init_secrets_writes_checked_files_and_stops_on_a_hostile_value(tmp_path: Path) -> None:
    # a hostile host name: refused before any file is written
    bad = tmp_path / "bad-host"
    bad.mkdir()
    run = _run(bad, {"PUBLIC_HOST": "localhost\nDNS:evil.example"})
    assert run.returncode != 0 and "PUBLIC_HOST" in run.stderr, run.stderr
    assert not (bad / "secrets" / "sonae-api.toml").exists() and not (bad / "secrets" / "tls" / "server.crt").exists()

    # a hand-placed database password with a line break and a TOML table: refused, no service file
    planted = tmp_path / "bad-password"
    (planted / "secrets").mkdir(parents=True)
    (planted / "secrets" / "db_password").write_text('x"\n[database]\nurl = "postgresql://evil@evil/x"\n')
    run = _run(planted, {})
    assert run.returncode != 0 and "db_password" in run.stderr and "evil" not in run.stderr, run.stderr
    assert not (planted / "secrets" / "sonae-ingest.toml").exists()

    # the ordinary run: both files parse, and carry the generated passwords exactly
    good = tmp_path / "good"
    good.mkdir()
    run = _run(good, {"PUBLIC_HOST": "sonae.example.jp"})
    assert run.returncode == 0, run.stderr
    secrets = good / "secrets"
    db_password = (secrets / "db_password").read_text().strip()
    for name, user in (("sonae-ingest.toml", "sonae-ingest"), ("sonae-api.toml", "sonae-alerts")):
        parsed = tomllib.loads((secrets / name).read_text())
        db, mqtt = urlsplit(parsed["database"]["url"]), urlsplit(parsed["mqtt"]["url"])
        assert (unquote(db.password or ""), db.hostname) == (db_password, "timescaledb")
        assert (mqtt.username, unquote(mqtt.password or "")) == (user, (secrets / f".mqtt-{user}").read_text().strip())
