"""`sonae devices`: password hashes Mosquitto accepts, ACL blocks that can be replaced and removed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.provisioning import (
    AclFile,
    Grant,
    ProvisioningError,
    adapt_mosquitto_config,
    add_client,
    emqx_requests,
    grants_for,
    list_clients,
    mosquitto_hash,
    remove_client,
    verify_mosquitto_hash,
)

ROOT = Path(__file__).resolve().parents[2]


def test_hash_has_mosquitto_format_and_verifies() -> None:
    h = mosquitto_hash("s3cret", salt=b"0123456789ab", iterations=101)
    assert h.startswith("$7$101$MDEyMzQ1Njc4OWFi$")
    assert verify_mosquitto_hash("s3cret", h)
    assert not verify_mosquitto_hash("s3creT", h)
    assert not verify_mosquitto_hash("x", "$7$garbage")


def test_iterations_are_bounded_both_ways(tmp_path: Path) -> None:
    """A PBKDF2 count the broker would pay for minutes on every connection is refused in one line, exit 2
    (found: ``sonae devices hash --iterations 10000000000000`` hashed for ever); a stored hash asking for
    one is not verified (no minutes of CPU for a hash mosquitto_hash never makes)."""
    with pytest.raises(ProvisioningError, match="1 to 1,000,000"):
        mosquitto_hash("s3cret", iterations=1_000_001)
    assert mosquitto_hash("s3cret", iterations=1_000_000).startswith("$7$1000000$")
    huge = mosquitto_hash("s3cret", salt=b"0123456789ab", iterations=1).replace("$7$1$", "$7$10000000000000$")
    assert not verify_mosquitto_hash("s3cret", huge)
    for action in (["hash"], ["add", "dev-i", "--municipality", "072036", "--password-stdin", "--dir",
                              str(tmp_path)]):
        run = subprocess.run([sys.executable, "-m", "app.cli", "devices", *action, "--iterations",
                              "10000000000000"], input="pw-long-enough-123\n", capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        assert run.returncode == 2, run
        assert run.stderr.strip().count("\n") == 0 and "iterations must be 1 to 1,000,000" in run.stderr, run.stderr
    assert not (tmp_path / "passwd").exists() or "dev-i" not in (tmp_path / "passwd").read_text()


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_reads_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(f), "alice", "wonder land"], check=True)
    hashed = f.read_text().strip().split(":", 1)[1]
    assert verify_mosquitto_hash("wonder land", hashed)
    assert not verify_mosquitto_hash("wonderland", hashed)


def test_grants_by_role() -> None:
    assert grants_for("device", "g1", municipalities=["072036"]) == (Grant("write", "sonae/v1/072036/g1/+"),)
    assert grants_for("device", "g1", municipalities=["072036"], stations=["a", "b"]) == (
        Grant("write", "sonae/v1/072036/a/+"), Grant("write", "sonae/v1/072036/b/+"))
    assert grants_for("ingest", "i") == (Grant("read", "sonae/v1/#"),)
    assert grants_for("viewer", "v") == (Grant("read", "sonae/alerts/#"),)
    assert grants_for("viewer", "v", municipalities=["072036", "072044"]) == (
        Grant("read", "sonae/alerts/072036/#"), Grant("read", "sonae/alerts/072044/#"))
    with pytest.raises(ProvisioningError, match="exactly one --municipality"):
        grants_for("device", "g1")
    with pytest.raises(ProvisioningError):
        grants_for("device", "g1", municipalities=["0720+6"])  # wildcards never reach an ACL
    with pytest.raises(ProvisioningError):
        grants_for("device", "g1", municipalities=["072036"], stations=["a/#"])
    with pytest.raises(ProvisioningError):
        Grant.parse("read:sonae/#/x")
    with pytest.raises(ProvisioningError):
        Grant.parse("read:$share/g/sonae/v1/#")


def test_add_replace_remove_keep_hand_written_parts(tmp_path: Path) -> None:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    acl.write_text("# site notes\n\nuser monitoring\ntopic read $SYS/#\n")
    files = {"passwd_file": passwd, "acl_file": acl}
    first = add_client("g1", municipalities=["072036"], **files)  # type: ignore[arg-type]
    assert first.generated and first.password and len(first.password) >= 32
    add_client("g2", municipalities=["072036"], stations=["s2"], **files)  # type: ignore[arg-type]
    with pytest.raises(ProvisioningError, match="already exists"):
        add_client("g1", municipalities=["072036"], **files)  # type: ignore[arg-type]
    with pytest.raises(ProvisioningError, match="hand-written"):
        add_client("monitoring", role="viewer", **files)  # type: ignore[arg-type]
    again = add_client("g1", municipalities=["072044"], password="chosen", replace=True, **files)  # type: ignore[arg-type]
    assert not again.generated
    text = acl.read_text()
    assert text.startswith("# site notes\n\nuser monitoring\ntopic read $SYS/#\n")
    assert text.count("user g1\n") == 1 and "sonae/v1/072044/g1/+" in text and "072036/g1" not in text
    users = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert set(users) == {"g1", "g2"} and verify_mosquitto_hash("chosen", users["g1"])
    listed = {c["username"]: c for c in list_clients(**files)}  # type: ignore[arg-type]
    assert listed["g2"]["grants"] == ["write sonae/v1/072036/s2/+"] and listed["g2"]["role"] == "device"
    assert remove_client("g1", **files)  # type: ignore[arg-type]
    assert not remove_client("g1", **files)  # type: ignore[arg-type]
    # the user names of the password file, not its text: a hash's base64 may hold "g1" (a flaky failure)
    assert [line.split(":", 1)[0] for line in passwd.read_text().splitlines()] == ["g2"]
    assert "user g1" not in acl.read_text()
    assert AclFile(acl).clients() == ["g2"]
    assert oct(passwd.stat().st_mode & 0o777) == "0o640"


def test_emqx_rules_mirror_the_acl() -> None:
    from app.provisioning import Client

    client = Client("g1", "device", grants_for("device", "g1", municipalities=["072036"]))
    users, rules = emqx_requests(client, "pw")
    assert users["body"] == {"user_id": "g1", "password": "pw", "is_superuser": False}
    assert rules["body"][0]["rules"] == [{"action": "publish", "permission": "allow",
                                          "topic": "sonae/v1/072036/g1/+"},
                                         {"action": "all", "permission": "deny", "topic": "#"},
                                         {"action": "all", "permission": "deny", "topic": "$SYS/#"}]


def _emqx_decides(rules: list[dict[str, str]], action: str, topic: str, *, no_match: str = "allow") -> str:
    """EMQX 5's built-in database authorizer: a user's rules in order, the first that matches decides; none:
    ``authorization.no_match`` (default allow)."""
    from sonae.mosquitto_files import topic_matches

    for rule in rules:
        if rule["action"] in (action, "all") and topic_matches(topic, rule["topic"]):
            return rule["permission"]
    return no_match


def test_emqx_rules_deny_what_they_do_not_allow_even_with_emqxs_default_no_match() -> None:
    """Found (breakit7 F4): allow rules only, and EMQX 5 defaults ``authorization.no_match = allow``, so a
    device could publish any other station's readings."""
    from app.provisioning import Client

    client = Client("g1", "device", grants_for("device", "g1", municipalities=["072036"]))
    rules = emqx_requests(client, "pw")[1]["body"][0]["rules"]
    assert _emqx_decides(rules, "publish", "sonae/v1/072036/g1/level") == "allow"
    for action, topic in (("publish", "sonae/v1/072036/other/level"), ("publish", "sonae/alerts/072036/x"),
                          ("subscribe", "sonae/v1/#"), ("subscribe", "$SYS/brokers"), ("publish", "anything")):
        assert _emqx_decides(rules, action, topic) == "deny", (action, topic)


def test_cli(tmp_path: Path) -> None:
    def sonae(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "devices", *args, "--dir", str(tmp_path)],
                              input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)

    out = sonae("add", "gauge-7", "--municipality", "072036", "--station", "akutsu-01", "--format", "json")
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["grants"] == [{"access": "write", "topic": "sonae/v1/072036/akutsu-01/+"}]
    assert verify_mosquitto_hash(made["password"], (tmp_path / "passwd").read_text().split(":", 1)[1].strip())
    out = sonae("add", "gauge-7", "--municipality", "072036")
    assert out.returncode == 2 and "already exists" in out.stderr
    out = sonae("add", "partner", "--role", "viewer", "--password-stdin", stdin="pw\n")
    assert out.returncode == 0 and "pw" not in out.stdout
    out = sonae("list")
    assert "gauge-7" in out.stdout and "partner" in out.stdout
    assert sonae("remove", "gauge-7").returncode == 0
    assert sonae("remove", "gauge-7").returncode == 1
    out = sonae("add", "gauge-8", "--municipality", "072036", "--format", "emqx")
    assert out.returncode == 0 and json.loads(out.stdout)[1]["body"][0]["rules"][-2]["permission"] == "deny"
    assert "authorization.no_match = deny" in out.stderr


def test_adapting_a_config_keeps_everything_but_ports_and_paths(tmp_path: Path) -> None:
    text = (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text()
    adapted = adapt_mosquitto_config(text, ports=[1234], passwd_file=tmp_path / "p", acl_file=tmp_path / "a",
                                     persistence_dir=tmp_path)
    lines = [ln for ln in adapted.splitlines() if ln and not ln.startswith("#")]
    assert "listener 1234 127.0.0.1" in lines and sum(ln.startswith("listener") for ln in lines) == 1
    assert not any(ln.startswith(("certfile", "keyfile", "pid_file")) for ln in lines)
    for kept in ("allow_anonymous false", "max_inflight_messages 0", "max_queued_messages 1000000",
                 "per_listener_settings false"):
        assert kept in lines


def test_note_with_a_line_break_cannot_add_an_acl_line(tmp_path: Path) -> None:
    """Issue #16 trial: ``sonae devices add dev-c --note $'x\\ntopic readwrite #'`` wrote a line giving the
    previous user in the file read/write on every topic."""
    run = subprocess.run([sys.executable, "-m", "app.cli", "devices", "add", "dev-b", "--municipality", "072036",
                          "--dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    before = (tmp_path / "acl").read_text()
    run = subprocess.run([sys.executable, "-m", "app.cli", "devices", "add", "dev-c", "--municipality", "072036",
                          "--note", "x\ntopic readwrite #", "--dir", str(tmp_path)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 2 and "note" in run.stderr and "control character" in run.stderr
    assert (tmp_path / "acl").read_text() == before
    assert "dev-c" not in (tmp_path / "passwd").read_text()


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_no_value_ever_adds_a_line_to_a_generated_file(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """Whatever a note, username, station or grant holds, the files keep one line per entry: a value
    is written whole or refused (ProvisioningError), and the files read back the same clients."""
    d = tmp_path_factory.mktemp("fuzz")
    files = {"passwd_file": d / "passwd", "acl_file": d / "acl"}
    for call in (lambda: add_client("dev", municipalities=["072036"], note=text, **files),
                 lambda: add_client(text, municipalities=["072036"], **files),
                 lambda: add_client("dev2", municipalities=["072036"], stations=[text], **files),
                 lambda: add_client("dev3", role="viewer", extra=[Grant("read", text)], **files),
                 lambda: add_client("dev4", role="viewer", password=text, **files)):
        try:
            call()
        except ProvisioningError:
            continue
    acl_lines = (d / "acl").read_text().splitlines() if (d / "acl").exists() else []
    assert all(ln.startswith(("#", "user ", "topic ")) or not ln for ln in acl_lines)
    assert [ln.split()[1] for ln in acl_lines if ln.startswith("user ")] == AclFile(d / "acl").clients()
    for line in ((d / "passwd").read_text().splitlines() if (d / "passwd").exists() else []):
        assert line.count(":") == 1 and line.split(":")[1].startswith("$7$")


def test_emqx_calls_refuse_what_the_files_refuse() -> None:
    from app.provisioning import Client

    with pytest.raises(ProvisioningError):
        Client("dev\nx", "device", ())
    client = Client("dev", "device", (Grant("write", "sonae/v1/072036/dev/+"),))
    with pytest.raises(ProvisioningError):
        emqx_requests(client, "pass\nword")


@pytest.mark.parametrize("root", ["", "/", "//", "sonae/+", "sonae/#", "#", "+/v1", "sonae/v+1"])
@pytest.mark.parametrize("option", ["prefix", "alerts_prefix"])
def test_a_topic_root_is_not_empty_and_has_no_wildcard(tmp_path: Path, root: str, option: str) -> None:
    """As ``mqtt.topic_prefix`` must be (found: ``--topic-prefix ''`` wrote ``topic write /072036/g/+``, a
    topic ingest never reads; ``sonae/+`` gave a device every municipality's topics)."""
    with pytest.raises(ProvisioningError, match="topic root|topic filter"):
        add_client("gauge-1", municipalities=["072036"], role="device", passwd_file=tmp_path / "passwd",
                   acl_file=tmp_path / "acl", password="pw-long-enough-123", iterations=1, **{option: root})
    assert not (tmp_path / "acl").exists() or "gauge-1" not in (tmp_path / "acl").read_text()
    made = add_client("gauge-1", municipalities=["072036"], role="device", passwd_file=tmp_path / "passwd",
                      acl_file=tmp_path / "acl", password="pw-long-enough-123", iterations=1,
                      **{option: "/city/sonae"})  # a leading slash is a topic MQTT allows, as the setting does
    assert made.client.grants


@pytest.mark.parametrize("grant", ["write:#", "readwrite:#", "read:#", "write:+/#", "readwrite:+/+/#"])
def test_a_grant_that_reaches_every_topic_needs_an_explicit_flag(tmp_path: Path, grant: str) -> None:
    """``sonae devices add dev --grant write:#`` gave a device every topic of the broker without a word. Now
    one line and status 2, nothing written; with --allow-every-topic it is done as asked; narrower grants
    (a literal level before the wildcard) are not touched."""
    def add(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "devices", "add", "dev-w", "--municipality", "072036",
                               "--dir", str(tmp_path), "--grant", grant, *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    run = add()
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("sonae devices: "), run.stderr
    assert "every topic" in lines[0] and "--allow-every-topic" in lines[0] and grant in lines[0]
    assert not (tmp_path / "passwd").exists() or "dev-w" not in (tmp_path / "passwd").read_text()
    run = add("--allow-every-topic")
    assert run.returncode == 0, run.stderr
    access, _, topic = grant.partition(":")
    assert f"topic {access} {topic}" in (tmp_path / "acl").read_text()


def test_only_filters_without_a_literal_level_reach_every_topic() -> None:
    from app.provisioning import reaches_every_topic

    assert all(reaches_every_topic(t) for t in ("#", "+/#", "+/+/#"))
    assert not any(reaches_every_topic(t) for t in ("sonae/#", "+", "+/+", "sonae/cmd/dev1/#", "+/cmd/#", "$SYS/#"))


def _add_with_grant(tmp_path: Path, grant: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", "devices", "add", "dev-w", "--municipality", "072036",
                           "--dir", str(tmp_path), "--grant", grant, *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


@pytest.mark.parametrize(("grant", "reaches"), [
    ("read:sonae/#", "every station's topics under sonae/v1"),
    ("write:+/v1/#", "every station's topics under sonae/v1"),
    ("write:sonae/v1/+/+/#", "every station's topics under sonae/v1"),
    ("write:sonae/v1/072036/+/level", "every station's topics under sonae/v1"),
    ("read:sonae/+/072036/gauge-1/+", "every station's topics under sonae/v1"),
    ("read:sonae/alerts/+/#", "every municipality's alerts under sonae/alerts"),
    # another station, municipality or device named literally (found by a new operator: only wildcards counted)
    ("write:sonae/v1/072036/other/level", "readings under sonae/v1 that are not this client's own"),
    ("write:sonae/v1/072037/gauge-1/+", "readings under sonae/v1 that are not this client's own"),
    ("write:sonae/v1/072037/dev-w/+", "readings under sonae/v1 that are not this client's own"),
    ("readwrite:sonae/cmd/+/#", "command topics under sonae/cmd that are not this client's own"),
    ("read:+/cmd/#", "command topics under sonae/cmd that are not this client's own"),
    ("read:sonae/cmd/other/#", "command topics under sonae/cmd that are not this client's own"),
    ("read:sonae/alerts/072037/#", "alerts under sonae/alerts that are not this client's own"),
    ("write:$SYS/#", "$SYS"),
    ("write:/#", "every topic"),
])
def test_a_grant_that_reaches_other_clients_topics_needs_the_flag(tmp_path: Path, grant: str, reaches: str) -> None:
    """Found by a new user: only ``#``, ``+/#``, ``+/+/#`` were refused; ``write:sonae/#`` and the like let one
    device forge every station's readings (Sonae's tree is {prefix}/{municipality}/{station}/{kind})."""
    run = _add_with_grant(tmp_path, grant)
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(lines) == 1 and lines[0].startswith("sonae devices: "), run.stderr
    assert grant in lines[0] and reaches in lines[0] and "--allow-every-topic" in lines[0], lines[0]
    assert not (tmp_path / "acl").exists() or "dev-w" not in (tmp_path / "acl").read_text()
    run = _add_with_grant(tmp_path, grant, "--allow-every-topic")
    assert run.returncode == 0, run.stderr
    access, _, topic = grant.partition(":")
    assert f"topic {access} {topic}" in (tmp_path / "acl").read_text()


@pytest.mark.parametrize(("grant", "why"), [("write:foo/../#", "not a parent"), ("write:sonae/./x", "literal"),
                                            ("write:＃", "U+FF03"), ("write:sonae／v1/072036/g/+", "separator"),
                                            ("write:sonae/v1/072036/g/＋", "wildcard"),
                                            # found by a new operator: lookalikes NFKC does not fold
                                            ("write:♯", "U+266F"), ("write:⧣", "U+29E3"),
                                            ("write:sonae/v1/072036/dev-w⁄level", "U+2044"),
                                            ("write:sonae/v1/072036/dev-w/lévél", "not ASCII")])
def test_a_grant_with_a_path_or_full_width_level_is_refused_as_a_likely_mistake(tmp_path: Path, grant: str,
                                                                                why: str) -> None:
    """MQTT topic names are literal: ``..`` is a level named "..", ``＃`` matches only "＃"; the flag does not
    make them mean what they look like."""
    for flags in ((), ("--allow-every-topic",)):
        run = _add_with_grant(tmp_path, grant, *flags)
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode == 2 and len(lines) == 1 and grant in lines[0] and why in lines[0], run.stderr
    assert not (tmp_path / "acl").exists()


@pytest.mark.parametrize("grant", ["write:sonae/v1/072036/dev-w/+", "write:sonae/v1/072036/dev-w/#",
                                   "readwrite:sonae/v1/072036/dev-w/level/raw", "read:sonae/cmd/dev-w/#",
                                   "readwrite:+/cmd/dev-w/#", "read:sonae/alerts/072036/#",
                                   "write:sonae/v1", "read:other/+/x"])
def test_a_grant_of_one_clients_topics_is_accepted(tmp_path: Path, grant: str) -> None:
    run = _add_with_grant(tmp_path, grant)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("grant", ["write:sonae/alerts/072036/#", "readwrite:sonae/alerts/+/#",
                                   "write:sonae/alerts/072036/1", "write:+/alerts/072036/#",
                                   "write:sonae/#", "readwrite:sonae/+/072036/#"])
def test_a_device_never_writes_alerts(tmp_path: Path, grant: str) -> None:
    """Found by a new operator: ``--grant write:sonae/alerts/072036/#`` let a device forge public alerts. Only
    the alerts service (--role alerts) publishes them; the flag does not change that."""
    for flags in ((), ("--allow-every-topic",)):
        run = _add_with_grant(tmp_path, grant, *flags)
        lines = [line for line in run.stderr.splitlines() if line.strip()]
        assert run.returncode == 2 and len(lines) == 1 and grant in lines[0] and "--role alerts" in lines[0], run
    assert not (tmp_path / "acl").exists()


def test_the_old_flag_name_and_the_new_one_both_accept_another_stations_grant(tmp_path: Path) -> None:
    for flag in ("--allow-every-topic", "--allow-other-topics"):
        run = _add_with_grant(tmp_path, "write:sonae/v1/072036/other/+", flag, "--replace")
        assert run.returncode == 0, run.stderr


@pytest.mark.parametrize(("prefix", "alerts"), [("sonae/v1", "sonae/v1"), ("sonae/v1/alerts", "sonae/v1"),
                                                ("sonae", "sonae/alerts"), ("sonae/alerts/x", "sonae/alerts")])
def test_readings_and_alerts_roots_are_apart(tmp_path: Path, prefix: str, alerts: str) -> None:
    with pytest.raises(ProvisioningError, match="one is inside the other"):
        add_client("gauge-1", municipalities=["072036"], passwd_file=tmp_path / "passwd", acl_file=tmp_path / "acl",
                   password="pw-long-enough-123", iterations=1, prefix=prefix, alerts_prefix=alerts)
    assert not (tmp_path / "acl").exists()


def test_devices_add_uses_the_deployments_topic_prefix(tmp_path: Path) -> None:
    """Found by a new operator: --topic-prefix defaulted to sonae/v1 whatever SONAE_MQTT_TOPIC_PREFIX said, so
    a device was granted topics ingest never reads and the own-topic checks guarded the wrong tree."""
    import os

    env = {**os.environ, "SONAE_MQTT_TOPIC_PREFIX": "city/kawa"}

    def add(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "devices", "add", "dev-w", "--municipality", "072036",
                               "--dir", str(tmp_path), "--format", "json", *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)

    run = add("--grant", "write:city/kawa/072036/other/+")
    assert run.returncode == 2 and "readings under city/kawa" in run.stderr, run.stderr
    run = add("--grant", "write:city/alerts/072036/#")
    assert run.returncode == 2 and "city/alerts" in run.stderr, run.stderr
    run = add()
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["grants"] == [{"access": "write", "topic": "city/kawa/072036/dev-w/+"}]
