import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sonae.config import DEMO_TIME_SCALE_MAX, ConfigError, load_settings, mask_url


def test_defaults_leave_services_embedded() -> None:
    s = load_settings(environ={})
    assert s["database.url"] is None and s["mqtt.url"] is None
    assert s["ingest.batch_size"] == 5000
    assert s.origin("api.port") == "default"


def test_environment_overrides_and_types() -> None:
    s = load_settings(environ={"SONAE_API_PORT": "9001", "SONAE_MQTT_URL": "mqtt://dev:pw@broker:1884"})
    assert s["api.port"] == 9001 and s.origin("api.port") == "env"
    assert s["mqtt.url"] == "mqtt://dev:pw@broker:1884"


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"SONAE_MQTT_URL": "nonsense"}, "SONAE_MQTT_URL"),
        ({"SONAE_DATABASE_URL": "mysql://x"}, "SONAE_DATABASE_URL"),
        ({"SONAE_API_PORT": "eighty"}, "SONAE_API_PORT"),
        ({"SONAE_API_PORT": "70000"}, "SONAE_API_PORT"),
        ({"SONAE_INGEST_UNKNOWN_STATIONS": "drop"}, "SONAE_INGEST_UNKNOWN_STATIONS"),
        ({"SONAE_INGEST_MAX_INFLIGHT": "100000"}, "SONAE_INGEST_MAX_INFLIGHT"),
        ({"SONAE_NO_SUCH_THING": "1"}, "SONAE_NO_SUCH_THING"),
    ],
)
def test_bad_values_name_the_key(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert fragment in str(info.value)


def test_toml_file_and_precedence(tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "sonae.toml"
    f.write_text('[api]\nport = 9100\nhost = "0.0.0.0"\n[ingest]\nbatch_size = 100\n')
    s = load_settings(config_file=f, environ={"SONAE_API_PORT": "9200"})
    assert s["api.port"] == 9200 and s["api.host"] == "0.0.0.0" and s["ingest.batch_size"] == 100
    assert s.origin("ingest.batch_size") == "file"
    f.write_text("[api]\nprot = 1\n")
    with pytest.raises(ConfigError, match="api.prot"):
        load_settings(config_file=f, environ={})


def test_secrets_are_masked() -> None:
    assert mask_url("postgresql://sonae:s3cret@db:5432/sonae") == "postgresql://sonae:***@db:5432/sonae"
    s = load_settings(environ={"SONAE_MQTT_URL": "mqtt://u:topsecret@h:1883"})
    assert "topsecret" not in str(s.masked())


def test_cli_reports_bad_config_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "run"], env={"SONAE_MQTT_URL": "nonsense", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "SONAE_MQTT_URL" in lines[0] and "Traceback" not in proc.stderr


def test_config_command_masks_and_every_command_has_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "app.cli", "config"],
                          env={"SONAE_DATABASE_URL": "postgresql://a:hunter2@h/db", "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "hunter2" not in proc.stdout and "***" in proc.stdout
    for cmd in (["run"], ["ingest"], ["api"], ["simulate"], ["db", "migrate"], ["config"]):
        out = subprocess.run([sys.executable, "-m", "app.cli", *cmd, "--help"], capture_output=True,
                             text=True, timeout=60)
        assert out.returncode == 0 and "usage: sonae" in out.stdout and len(out.stdout) > 80


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    from sonae.config import SCHEMA

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    missing = [s.env for s in SCHEMA if s.env not in readme]
    assert not missing, f"README's configuration table lacks {missing}"


@pytest.mark.parametrize(("name", "value"), [
    # spans that took a date beyond year 9999 (OverflowError): every message, CAP or login failed
    ("SONAE_INGEST_MAX_FUTURE_S", "1000000000000"), ("SONAE_CAP_EXPIRES_HOURS", "1000000000"),
    ("SONAE_DATABASE_RETENTION_DAYS", "100000000"), ("SONAE_INGEST_DEAD_LETTER_RETENTION_DAYS", "100000000"),
    ("SONAE_API_TOKEN_TTL_HOURS", "1000000000"),
])
def test_time_spans_beyond_any_date_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(environ={name: value})


def test_empty_variable_means_empty_where_empty_means_something(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SONAE_INGEST_SHARED_GROUP= overrides the file (issue #23: it used to fall back to a shared group)."""
    conf = tmp_path / "sonae.toml"
    conf.write_text('[ingest]\nshared_group = "from-file"\nbatch_size = 7\n', encoding="utf-8")
    s = load_settings(config_file=conf, environ={"SONAE_INGEST_SHARED_GROUP": "", "SONAE_INGEST_BATCH_SIZE": ""})
    assert s["ingest.shared_group"] == "" and s.origin("ingest.shared_group") == "env"
    assert s["ingest.batch_size"] == 7 and s.origin("ingest.batch_size") == "file"  # empty number: not set here
    assert load_settings(environ={"SONAE_DATABASE_URL": ""})["database.url"] is None
    assert load_settings(environ={})["ingest.shared_group"] == "", "the default subscribes plainly"
    with pytest.raises(ConfigError, match="SONAE_MQTT_TOPIC_PREFIX"):
        load_settings(environ={"SONAE_MQTT_TOPIC_PREFIX": ""})


def test_config_command_shows_an_empty_variable() -> None:
    import json
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")} | {"SONAE_INGEST_SHARED_GROUP": ""}
    out = subprocess.run([sys.executable, "-m", "app.cli", "config"], env=env, capture_output=True, text=True,
                         check=True).stdout
    shown = json.loads(out)["ingest.shared_group"]
    assert shown == {"value": "", "from": "env"}


@pytest.mark.parametrize("value", ["2/2", "1", "a/b", "-1/2", "1/0"])
def test_partition_must_be_i_of_n(value: str) -> None:
    with pytest.raises(ConfigError, match="SONAE_INGEST_PARTITION"):
        load_settings(environ={"SONAE_INGEST_PARTITION": value})


def test_partition_and_shared_group_exclude_each_other() -> None:
    assert load_settings(environ={"SONAE_INGEST_PARTITION": "1/3"})["ingest.partition"] == "1/3"
    with pytest.raises(ConfigError, match="only one"):
        load_settings(environ={"SONAE_INGEST_PARTITION": "0/2", "SONAE_INGEST_SHARED_GROUP": "g"})


def test_demo_time_scale_is_a_setting() -> None:
    """``sonae run --simulate``'s demo river ran at a fixed 30 times real time (simulators.demo): now an operator's
    drill (and a test) may run it faster or slower."""
    assert load_settings(environ={})["simulators.demo_time_scale"] == 30.0
    s = load_settings(environ={"SONAE_SIMULATORS_DEMO_TIME_SCALE": "150"})
    assert s["simulators.demo_time_scale"] == 150.0 and s.origin("simulators.demo_time_scale") == "env"
    assert load_settings(environ={"SONAE_SIMULATORS_DEMO_TIME_SCALE": "1"})["simulators.demo_time_scale"] == 1.0


@pytest.mark.parametrize(("value", "fragment"), [
    ("0", "from 1 (real time) to 600"), ("-30", "from 1 (real time) to 600"), ("0.5", "from 1 (real time) to 600"),
    ("1e9", "from 1 (real time) to 600"), ("nan", "finite"), ("inf", "finite"), ("fast", "expected a number"),
])
def test_demo_time_scale_refuses_nonsense(value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ={"SONAE_SIMULATORS_DEMO_TIME_SCALE": value})
    assert "SONAE_SIMULATORS_DEMO_TIME_SCALE" in str(err.value) and fragment in str(err.value)
    assert repr(value) in str(err.value)  # what was written, not what it was read as
    assert "unknown setting" not in str(err.value)


#: how people write a number in an environment variable or a file (Python's float() reads them all)
_WRITTEN = st.floats(allow_nan=False, allow_infinity=False).flatmap(lambda x: st.sampled_from([
    repr(x), f"{x:e}", f"{x:.3f}", f" {x!r} ", f"{x:E}", f"{x:_.2f}", f"+{abs(x)!r}"]))


@given(_WRITTEN)
def test_a_refused_time_scale_is_told_back_as_written_with_the_range(written: str) -> None:
    """Found: SONAE_SIMULATORS_DEMO_TIME_SCALE=1e9 was told back as 1000000000.0, " 0.5" as 0.5: the value read,
    not what was written. The message now quotes the variable's text and says the range."""
    try:
        scale = load_settings(environ={"SONAE_SIMULATORS_DEMO_TIME_SCALE": written})["simulators.demo_time_scale"]
    except ConfigError as exc:
        rule = f"expected a number from 1 (real time) to {DEMO_TIME_SCALE_MAX:g} (times faster than real time)"
        if written != written.strip() or "_" in written:  # taken exactly as written: blanks and 1_000 are no number
            assert str(exc).startswith(f"SONAE_SIMULATORS_DEMO_TIME_SCALE={written!r}: not a finite decimal number")
            assert str(exc).endswith(rule)
        else:
            assert str(exc) == f"SONAE_SIMULATORS_DEMO_TIME_SCALE={written!r}: {rule}"
    else:
        assert 1 <= scale <= DEMO_TIME_SCALE_MAX and scale == float(written)


def test_a_refused_value_from_the_file_is_told_back_as_the_file_gives_it(tmp_path: Path) -> None:
    """A TOML integer stays one (1000, not the 1000.0 it was read as); TOML keeps no text of its numbers."""
    path = tmp_path / "sonae.toml"
    path.write_text("[simulators]\ndemo_time_scale = 1_000\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"demo_time_scale=1000: expected a number from 1 \(real time\) to 600"):
        load_settings(config_file=path, environ={})
