"""Compose, Kubernetes, systemd and nginx configuration: parsed and checked with the real tools where
the machine has them (docker compose, kubectl kustomize, systemd-analyze, nginx -t)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from sonae.config import SCHEMA

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
#: settings the deploy configs use that Sonae does not have yet (see deploy/README.md)
PENDING_SETTINGS = {"SONAE_INGEST_METRICS_PORT"}
KNOWN_ENV = {s.env for s in SCHEMA} | {"SONAE_CONFIG"} | PENDING_SETTINGS


def _docker_compose() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


# -- Compose ----------------------------------------------------------------------------------------------
def test_compose_stack_has_every_part() -> None:
    services = _compose()["services"]
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:") and \
        re.search(r"-pg1[56]$", services["timescaledb"]["image"])
    version = re.search(r":(\d+)\.(\d+)\.(\d+)-", services["timescaledb"]["image"])
    assert version, "pin an exact TimescaleDB version"
    # 2.17.x stores neither row of an ON CONFLICT DO NOTHING batch into a compressed chunk (fixed 2.18.1)
    assert tuple(int(v) for v in version.groups()) >= (2, 18, 1)
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    ingestors = [n for n in services if n.startswith("ingest-")]
    assert len(ingestors) >= 2
    for n in ingestors:
        s = services[n]
        assert s["hostname"] == n and s["command"][:2] == ["ingest", "--instance"], n
    assert services["api"]["deploy"]["replicas"]
    assert services["proxy"]["image"].startswith("nginx:")
    assert {"prometheus", "grafana", "migrate"} <= set(services)
    for name, s in services.items():
        image = s.get("image", "")
        assert ":" in image and not image.endswith(":latest") or image.startswith("${APP_IMAGE"), \
            f"{name}: pin the image version"


def test_compose_keeps_secrets_out_of_the_file() -> None:
    doc = _compose()
    for s in doc["secrets"].values():
        assert s["file"].startswith("./secrets/")
    assert "secrets/" in (DEPLOY / "compose" / ".gitignore").read_text()
    for name, s in doc["services"].items():
        for key in s.get("environment", {}):
            if "PASSWORD" in key:
                assert key.endswith("_FILE"), f"{name}: {key} must name a file, not hold the password"
            if key.startswith("SONAE_"):
                assert key in KNOWN_ENV, f"{name}: {key} is not a Sonae setting"
            assert not re.search(r"mqtt://[^@]+:[^@]+@|postgresql://[^@]+:[^@]+@", str(s["environment"][key]))


def test_compose_mounts_exist() -> None:
    for name, s in _compose()["services"].items():
        for volume in s.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith(".") and "/secrets" not in source:
                assert (COMPOSE.parent / source).exists(), f"{name}: {source} does not exist"
    dockerfile = DEPLOY / "docker" / "Dockerfile"
    text = dockerfile.read_text()
    assert "USER 10001" in text and "HEALTHCHECK" in text


def test_the_image_copies_every_package_the_project_installs() -> None:
    """The Dockerfile copies each package pyproject installs (a missing one fails only at run time)."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*") for pattern in include}
    copied = set(re.findall(r"^COPY (\w+) /src/\1$", (DEPLOY / "docker" / "Dockerfile").read_text(), re.M))
    assert packages - copied == set(), f"deploy/docker/Dockerfile does not COPY {sorted(packages - copied)}"
    assert all((ROOT / package / "__init__.py").is_file() for package in packages)


def test_docker_compose_config(tmp_path: Path) -> None:
    compose = _docker_compose()
    if compose is None:
        pytest.skip("`docker compose` is not available on this machine")
    workdir = tmp_path / "compose"
    shutil.copytree(DEPLOY / "compose", workdir, ignore=shutil.ignore_patterns("secrets"))
    (workdir / "secrets").mkdir()
    for f in ("db_password", "sonae-ingest.toml", "sonae-api.toml", "grafana_admin_password"):
        (workdir / "secrets" / f).write_text("x\n")
    # relative mounts reach ../nginx, ../monitoring and the build context ../..
    out = subprocess.run(compose + ["-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True,
                         cwd=COMPOSE.parent, env={**os.environ, "COMPOSE_PROJECT_NAME": "sonae-test"})
    assert out.returncode == 0, out.stderr


# -- Kubernetes -------------------------------------------------------------------------------------------
def _k8s_docs() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s")], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return [d for d in yaml.safe_load_all(out.stdout) if d]
    kustomization = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())
    docs = []
    for f in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / "k8s" / f).read_text()) if d]
    return docs


def test_k8s_workloads_probes_and_autoscaler() -> None:
    docs = _k8s_docs()
    by = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    api = by[("Deployment", "sonae-api")]
    ingest = by[("StatefulSet", "sonae-ingest")]
    for workload in (api, ingest):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (c,) = pod["containers"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert c[probe]["httpGet"]["path"] in ("/healthz", "/readyz"), probe
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["resources"]["requests"]
        for env in c.get("env", []):
            if env["name"].startswith("SONAE_"):
                assert env["name"] in KNOWN_ENV, env["name"]
        assert pod["volumes"][0]["secret"]["secretName"] == "sonae-secrets"
    assert api["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/readyz"
    hpa = by[("HorizontalPodAutoscaler", "sonae-api")]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "sonae-api"}
    assert hpa["spec"]["minReplicas"] >= 2
    config = by[("ConfigMap", "sonae-config")]
    assert set(config["data"]) <= KNOWN_ENV
    # the example secret is never applied
    assert ("Secret", "sonae-secrets") not in by
    # ingestors keep their MQTT identity across restarts
    env = {e["name"]: e for e in ingest["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SONAE_MQTT_CLIENT_ID"]["value"] == "$(POD_NAME)"
    # ... and each takes its own partition of the municipalities: ordinal / replicas (issue #23)
    assert env["SONAE_INGEST_PARTITION"]["value"] == f"$(POD_INDEX)/{ingest['spec']['replicas']}"
    assert "pod-index" in env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert "SONAE_INGEST_SHARED_GROUP" not in config["data"], "shared subscriptions lose readings"


# -- systemd --------------------------------------------------------------------------------------------
def test_systemd_units_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    sonae = shutil.which("sonae") or str(Path(sys.executable).parent / "sonae")
    for f in (DEPLOY / "systemd").glob("sonae*"):
        if f.suffix in (".service", ".target"):
            (tmp_path / f.name).write_text(f.read_text().replace("/opt/sonae/venv/bin/sonae", sonae))
    units = ["sonae-ingest@1.service", "sonae-api@8081.service", "sonae-migrate.service", "sonae.target"]
    out = subprocess.run([analyze, "verify", "--man=no", *[f"./{u}" for u in units]], cwd=tmp_path,
                         capture_output=True, text=True)
    problems = [ln for ln in (out.stdout + out.stderr).splitlines() if tmp_path.name in ln or "sonae" in ln]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


# -- nginx ----------------------------------------------------------------------------------------------
def _nginx_test(conf: str, tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None:
        pytest.skip("nginx is not installed (apt-get install nginx)")
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed for a test certificate")
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / d).mkdir(parents=True, exist_ok=True)
    temp = "".join(f"    {d}_temp_path {tmp_path}/tmp/{d.split('_')[0]};\n"
                   for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")).replace("client/", "body/")
    conf = conf.replace("http {", "http {\n" + temp.replace("tmp/client;", "tmp/body;"), 1)
    path = tmp_path / "nginx.conf"
    path.write_text(conf)
    out = subprocess.run([nginx, "-t", "-c", str(path), "-p", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_nginx_compose_config(tmp_path: Path) -> None:
    conf = (DEPLOY / "compose" / "nginx" / "nginx.conf").read_text()
    conf = (conf.replace("/etc/nginx/sonae/", f"{DEPLOY}/nginx/")
                .replace("/etc/nginx/mime.types", "/etc/nginx/mime.types" if Path("/etc/nginx/mime.types").exists()
                         else f"{DEPLOY}/nginx/sonae-http.conf")
                .replace("/etc/nginx/tls/", f"{tmp_path}/")
                .replace("server api:8080", "server 127.0.0.1:9")
                .replace("pid /tmp/nginx.pid;", f"pid {tmp_path}/nginx.pid;")
                .replace("listen 80;", "listen 127.0.0.1:8;").replace("listen 443 ssl", "listen 127.0.0.1:9 ssl"))
    _nginx_test(conf, tmp_path)


def test_nginx_bare_metal_site(tmp_path: Path) -> None:
    site = (DEPLOY / "nginx" / "sonae.conf").read_text()
    site = (site.replace("/etc/nginx/sonae/", f"{DEPLOY}/nginx/")
                .replace("/etc/letsencrypt/live/sonae.example.jp/fullchain.pem", f"{tmp_path}/server.crt")
                .replace("/etc/letsencrypt/live/sonae.example.jp/privkey.pem", f"{tmp_path}/server.key"))
    site = re.sub(r"listen (\[::\]:)?80;", "listen 127.0.0.1:8;", site, count=1)
    site = re.sub(r"\n\s*listen \[::\]:80;", "", site)
    site = re.sub(r"listen 443 ssl http2;[^\n]*", "listen 127.0.0.1:9 ssl http2;", site)
    site = re.sub(r"\n\s*listen \[::\]:443 ssl http2;", "", site)
    conf = f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n{site}\n}}\n"
    _nginx_test(conf, tmp_path)


def test_nginx_never_logs_query_strings() -> None:
    text = (DEPLOY / "nginx" / "sonae-http.conf").read_text()
    fmt = text.split("log_format", 1)[1].split(";", 1)[0]
    for leaky in ("$request ", "$request'", "$request_uri", "$args", "$query_string"):
        assert leaky not in fmt, leaky
    assert "access_log /dev/stdout sonae_path;" in (DEPLOY / "nginx" / "sonae-locations.conf").read_text()
