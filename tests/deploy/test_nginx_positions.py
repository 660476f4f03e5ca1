"""No resident position reaches an nginx log (breakit6: with a replica down, the shipped site wrote
``request: "GET /api/v1/route?lat=37.40012&lon=140.36034…"`` and the client address into its error log, 4 lines
a request), while upstream failures are still recorded.

The real nginx runs the shipped bare-metal site (``deploy/nginx/``) and the Compose stack's nginx.conf, each with its
error log at ``info``, in front of two dead replicas: one refuses connections, the other accepts and closes at once.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from api.openapi import document
from sonae.embedded import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
LAT, LON = "37.40012", "140.36034"
#: query parameters of the API that can say where a resident is
POSITION_PARAMETERS = {"lat", "lon", "bbox", "coordinates", "georel", "geometry"}


def _quiet_location() -> re.Pattern[str]:
    text = (DEPLOY / "nginx" / "sonae-locations.conf").read_text()
    found = re.search(r"^location ~\* (\S+) \{\n    error_log /dev/null;", text, re.M)
    assert found, "the locations without an error log are gone from sonae-locations.conf"
    return re.compile(found[1], re.I)


def test_every_parameter_that_can_carry_a_position_is_on_a_path_without_an_error_log() -> None:
    """The API's own description (OpenAPI) of every operation: one that takes a position parameter in its query
    must be served by the location that writes no error log (a new endpoint with ``lat`` fails here)."""
    quiet = _quiet_location()
    checked = []
    for path, operations in document()["paths"].items():
        for op in operations.values():
            if not isinstance(op, dict):
                continue
            names = {p.get("name") for p in op.get("parameters", []) if p.get("in") == "query"}
            if names & POSITION_PARAMETERS:
                checked.append(path)
                assert quiet.match(path), f"{path} takes {sorted(names & POSITION_PARAMETERS)} but nginx logs its errors"
    assert {"/api/v1/route", "/api/v1/level", "/api/v1/shelters/nearest"} <= set(checked)


def test_a_path_that_may_hold_a_position_is_judged_alike_by_the_access_log_and_the_error_log() -> None:
    """The map that writes such a path as "-" and the location that gives it no error log: one expression; every
    route of the API (its templates filled with ids) is logged as is."""
    logged = re.search(r'map \$uri \$sonae_logged_uri \{\n\s+"~([^"]+)"\s+"-";',
                       (DEPLOY / "nginx" / "sonae-http.conf").read_text())
    quiet = re.search(r'^location ~ "([^"]+)" \{\n    error_log /dev/null;',
                      (DEPLOY / "nginx" / "sonae-locations.conf").read_text(), re.M)
    assert logged and quiet and logged[1] == quiet[1]
    position = re.compile(logged[1])
    for path in document()["paths"]:
        filled = re.sub(r"\{[^}]+\}", "0700000003", path)
        assert not position.search(filled), f"{filled} would be logged as -"
    for path in ("/", "/staff", "/sw.js", "/api/v1/alerts/12.cap", "/api/v1/stations/abukuma-motomiya/readings"):
        assert not position.search(path), path


def _site(tmp: Path, *, https: int, http: int, dead: int, closing: int) -> str:
    site = (DEPLOY / "nginx" / "sonae.conf").read_text()
    site = (site.replace("/etc/nginx/sonae/", f"{tmp}/sonae/")
                .replace("/etc/letsencrypt/live/sonae.example.jp/fullchain.pem", f"{tmp}/server.crt")
                .replace("/etc/letsencrypt/live/sonae.example.jp/privkey.pem", f"{tmp}/server.key")
                .replace("127.0.0.1:8081", f"127.0.0.1:{dead}").replace("127.0.0.1:8082", f"127.0.0.1:{closing}"))
    site = re.sub(r"listen 80;", f"listen 127.0.0.1:{http};", site, count=1)
    site = re.sub(r"\n\s*listen \[::\]:80;", "", site)
    site = re.sub(r"listen 443 ssl http2;[^\n]*", f"listen 127.0.0.1:{https} ssl http2;", site)
    return re.sub(r"\n\s*listen \[::\]:443 ssl http2;", "", site)


def _compose(tmp: Path, logs: Path, *, https: int, http: int, dead: int, closing: int) -> str:
    """The Compose stack's whole nginx.conf, only paths and ports changed (its error log at ``info``)."""
    conf = (DEPLOY / "compose" / "nginx" / "nginx.conf").read_text()
    assert "error_log /dev/stderr warn;" in conf and "server api:8080 " in conf
    return (conf.replace("/etc/nginx/sonae/", f"{tmp}/sonae/").replace("/etc/nginx/tls/", f"{tmp}/")
                .replace("server api:8080 ", f"server 127.0.0.1:{dead} max_fails=1 fail_timeout=10s;\n"
                                             f"        server 127.0.0.1:{closing} ")
                .replace("pid /tmp/nginx.pid;", f"pid {tmp}/nginx.pid;")
                .replace("error_log /dev/stderr warn;", f"error_log {logs}/error.log info;")
                .replace("listen 80;", f"listen 127.0.0.1:{http};")
                .replace("listen 443 ssl", f"listen 127.0.0.1:{https} ssl")
                .replace("/dev/stdout", f"{logs}/access.log"))


def _start_nginx(nginx: str, conf: Path, tmp: Path) -> None:
    subprocess.run([nginx, "-c", str(conf), "-p", str(tmp)], check=True, capture_output=True, timeout=30)


def _stop_nginx(nginx: str, conf: Path, tmp: Path) -> None:
    subprocess.run([nginx, "-c", str(conf), "-p", str(tmp), "-s", "quit"], capture_output=True, timeout=30)


def _get(url: str) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=ctx), NoRedirect)
    try:
        with opener.open(url, timeout=60) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _nginx() -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if nginx is None or shutil.which("openssl") is None:
        pytest.skip("nginx and openssl are needed (apt-get install nginx openssl)")
    return nginx


def _configure(tmp_path: Path, variant: str, *, https: int, http: int, dead: int,
               closing: int) -> tuple[Path, Path]:
    """The shipped site and its included files under ``tmp_path``, only paths and ports changed; returns the
    nginx.conf and the folder of every log."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=t",
                    "-keyout", str(tmp_path / "server.key"), "-out", str(tmp_path / "server.crt")],
                   check=True, capture_output=True)
    (tmp_path / "sonae").mkdir()
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("sonae-http.conf", "sonae-locations.conf"):  # the shipped files; only the log's path is local
        text = (DEPLOY / "nginx" / name).read_text().replace("/dev/stdout", f"{logs}/access.log")
        (tmp_path / "sonae" / name).write_text(text)
    site = _site(tmp_path, https=https, http=http, dead=dead, closing=closing).replace(
        "/dev/stdout", f"{logs}/access.log")
    temp = "".join(f"    {d}_temp_path {tmp_path}/tmp/{d};\n" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / "tmp" / d).mkdir(parents=True)
    mime = "include /etc/nginx/mime.types;\n" if Path("/etc/nginx/mime.types").exists() else ""
    conf = tmp_path / "nginx.conf"
    # the strictest level nginx logs without a debug build: nothing it would write may hold a position;
    # and an http-level access log in the default format, as Debian's nginx.conf has: a server of the site that
    # sets none of its own writes there, request line and client address included
    default_log = f"access_log {logs}/default-access.log combined;\n"
    if variant == "compose":  # its own nginx.conf; nginx's built-in default access log is modelled the same way
        whole = _compose(tmp_path, logs, https=https, http=http, dead=dead, closing=closing)
        whole = whole.replace("http {", "http {\n" + temp + default_log, 1)
        conf.write_text(whole.replace("include /etc/nginx/mime.types;", mime))
        return conf, logs
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {logs}/error.log info;\nevents {{}}\n"
                    f"http {{\n{temp}{mime}{default_log}{site}\n}}\n")
    return conf, logs


def _read_logs(logs: Path) -> dict[str, str]:
    return {p.name: p.read_text(errors="replace") for p in logs.iterdir()}


def _gone(path: Path) -> bool:
    return not path.exists()


@pytest.mark.parametrize("variant", ["bare-metal", "compose"])
async def test_shipped_nginx_logs_no_position_when_replicas_are_down(tmp_path: Path, variant: str) -> None:
    nginx = _nginx()

    async def close_at_once(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.transport.abort()

    closing_server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    closing = closing_server.sockets[0].getsockname()[1]
    https, http, dead = free_port(), free_port(), free_port()
    conf, logs = await asyncio.to_thread(_configure, tmp_path, variant, https=https, http=http, dead=dead, closing=closing)
    await asyncio.to_thread(_start_nginx, nginx, conf, tmp_path)
    try:
        base = f"https://127.0.0.1:{https}"
        position = f"lat={LAT}&lon={LON}"
        box = f"bbox={LON},{LAT},140.36100,37.40100"
        urls = [f"{base}/api/v1/route?{position}&hazard=flood", f"{base}/api/v1/level?{position}",
                f"{base}/api/v1/shelters/nearest?{position}", f"{base}/api/v1/shelters?{box}",
                f"{base}/api/v1/network.geojson?{box}",
                f"{base}/ngsi-ld/v1/entities?type=Shelter&georel=near;maxDistance==500&geometry=Point"
                f"&coordinates=[{LON},{LAT}]",
                f"{base}/api/v1/route/?{position}", f"{base}/API/v1/Route?{position}"]
        # a position in the path (break33): a link whose ? a messenger app encoded (nginx's $uri decodes it),
        # a position taken for a station id or a path segment; each was in the access log, the last two in the
        # error log too
        urls += [f"{base}/api/v1/level%3F{position}", f"{base}/api/v1/level%3Flat%3D{LAT}%26lon%3D{LON}",
                 f"{base}/api/v1/stations/{LAT},{LON}", f"{base}/api/v1/stations/{LAT}/readings",
                 f"{base}/{LAT}/{LON}", f"{base}/api/v1/route;lat={LAT};lon={LON}"]
        for url in urls:
            assert await asyncio.to_thread(_get, url) in (502, 504), url
        # the redirect from http: logged path-only too
        assert await asyncio.to_thread(_get, f"http://127.0.0.1:{http}/api/v1/route?{position}") == 301
        # a request without a position: its upstream failure goes to the error log in full
        assert await asyncio.to_thread(_get, f"{base}/api/v1/stations") in (502, 504)
    finally:
        await asyncio.to_thread(_stop_nginx, nginx, conf, tmp_path)
        closing_server.close()
    pid = tmp_path / "nginx.pid"
    for _ in range(600):  # nginx -s quit returns at once; the logs are complete once the master has gone
        if await asyncio.to_thread(_gone, pid):
            break
        await asyncio.sleep(0.05)
    written = await asyncio.to_thread(_read_logs, logs)
    assert set(written) == {"access.log", "default-access.log", "error.log"}
    for name, text in written.items():
        assert LAT not in text and LON not in text, f"{name} holds the resident's position:\n{text}"
    access = written["access.log"]
    assert re.search(r'GET "/api/v1/route" 50[24] .*127\.0\.0\.1', access), access  # the failed replica, by path
    assert re.search(r'GET "/api/v1/route" 301', access), access  # the redirect's line: path only
    assert len(re.findall(r'GET "-" 50[24]', access)) == 6, access  # a path holding a position: not written
    error = written["error.log"]
    assert "/api/v1/stations" in error and re.search(r"connect\(\) failed|no live upstreams|prematurely closed",
                                                     error), error
