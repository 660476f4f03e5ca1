"""`sonae graph fetch` offline: osmnx downloads from a local Overpass API (tests/evac/overpass_standin.py)
that serves the real Krems extract, chosen with ``--overpass-url`` (setting ``evac.overpass_url``).

Checked: the network is written and loadable; inside the box it has the same road nodes as `sonae graph
import` of the same file clipped to the box, except nodes only on ways osmnx's download filter leaves
out (``highway=platform`` …, read from the extract's own tags); a second fetch of the same box needs no
server (osmnx's cache in the state directory); with no server and no cache the command says to use
`sonae graph import` and exits 1. ``--municipality`` asks for the streets inside the municipality's N03
boundary (shipped, or imported into the database), never a geocoder (served from a drill town here)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest
import shapely
from evac_reference import EXTRACTS
from hypothesis import given
from hypothesis import strategies as st
from overpass_standin import QUERY, Extract, overpass_standin

import evac.graph as graph
from app.cli import main
from evac.drilltown import generate
from evac.network import load_network
from evac.query_area import MAX_QUERY_POINTS
from ingest.boundaries import Boundary, packaged_boundaries, store_boundaries
from sonae.arguments import http_url
from sonae.municipality_code import DRILL_TOWN_CENTER

WEST, SOUTH, EAST, NORTH = 15.59, 48.39, 15.63, 48.42
BBOX = f"{WEST},{SOUTH},{EAST},{NORTH}"
#: osmnx 2's "all" network filter: ways with these highway values are not downloaded
NOT_DOWNLOADED = re.compile("abandoned|construction|no|planned|platform|proposed|raceway|razed|rest_area|services")


@pytest.fixture
def no_shelters(tmp_path: Path) -> Path:
    path = tmp_path / "none.geojson"
    path.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    return path


def _fetch(state: Path, out: Path, url: str, shelters: Path, bbox: str = BBOX) -> int:
    return main(["graph", "fetch", "--bbox", bbox, "--overpass-url", url, "--state-dir", str(state),
                 "--out", str(out), "--shelters", str(shelters)])


def test_fetch_through_a_configured_overpass_matches_the_import_of_the_same_data(
        tmp_path: Path, no_shelters: Path, capsys: pytest.CaptureFixture[str]) -> None:
    krems = Path(EXTRACTS["krems"])
    with overpass_standin(krems) as (url, queries):
        assert _fetch(tmp_path / "state", tmp_path / "fetched.npz", url, no_shelters) == 0
        assert len(queries) == 1
    out = capsys.readouterr()
    assert "downloading streets in bounding box" in out.err  # progress is shown
    assert f"wrote {tmp_path / 'fetched.npz'}" in out.out
    assert "warning: no shelter lies on this network" in out.err
    fetched = load_network(tmp_path / "fetched.npz")
    assert fetched.n_nodes > 300
    # osmnx truncates a download to the box (not by edge): every node lies in it
    assert (fetched.node_lon >= WEST).all() and (fetched.node_lon <= EAST).all()
    assert (fetched.node_lat >= SOUTH).all() and (fetched.node_lat <= NORTH).all()

    assert main(["graph", "import", str(krems), "--bbox", BBOX, "--via", "osmnx", "--state-dir",
                 str(tmp_path / "state"), "--out", str(tmp_path / "imported.npz"), "--shelters",
                 str(no_shelters)]) == 0
    imported = load_network(tmp_path / "imported.npz")
    margin = 0.002  # ~150-220 m: both cut the box's edge roads differently (by node / by edge)

    def inner(net: object) -> set[int]:
        lon, lat, ids = net.node_lon, net.node_lat, net.node_osmid  # type: ignore[attr-defined]
        keep = (lon > WEST + margin) & (lon < EAST - margin) & (lat > SOUTH + margin) & (lat < NORTH - margin)
        return set(ids[keep].tolist())

    differ = inner(fetched) ^ inner(imported)
    extract = Extract(krems)
    ways_of: dict[int, list[str]] = {}
    for _, refs, tags in extract.ways:
        for ref in refs:
            ways_of.setdefault(ref, []).append(tags.get("highway", ""))
    for node in differ:  # only nodes whose every road is one osmnx does not download
        assert node in inner(imported), f"node {node} fetched but not imported"
        assert all(NOT_DOWNLOADED.search(h) for h in ways_of[node] if h), (node, ways_of[node])
    assert len(differ) < 0.02 * len(inner(imported))


def test_a_second_fetch_of_the_same_box_needs_no_server(tmp_path: Path, no_shelters: Path) -> None:
    with overpass_standin(Path(EXTRACTS["krems"])) as (url, queries):
        assert _fetch(tmp_path / "state", tmp_path / "a.npz", url, no_shelters) == 0
    assert len(queries) == 1
    # the stand-in is gone: the same URL and box come from osmnx's cache in the state directory
    assert _fetch(tmp_path / "state", tmp_path / "b.npz", url, no_shelters) == 0
    a, b = load_network(tmp_path / "a.npz"), load_network(tmp_path / "b.npz")
    assert a.n_nodes == b.n_nodes and (a.node_osmid == b.node_osmid).all()


def test_no_server_and_no_cache_says_to_import_a_file(tmp_path: Path, no_shelters: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with overpass_standin(Path(EXTRACTS["krems"])) as (url, _):
        pass  # a port that was just closed
    assert _fetch(tmp_path / "state", tmp_path / "c.npz", url, no_shelters) == 1
    err = capsys.readouterr().err
    assert "could not download the streets" in err and "sonae graph import FILE" in err
    assert not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("value", ["overpass.example", "http://", "https:///api", "ftp://overpass.example/api"])
def test_the_overpass_setting_is_checked(value: str, tmp_path: Path, no_shelters: Path,
                                         monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SONAE_EVAC_OVERPASS_URL", value)
    code = main(["graph", "fetch", "--bbox", BBOX, "--state-dir", str(tmp_path), "--shelters", str(no_shelters)])
    assert code == 2
    err = capsys.readouterr().err
    assert "SONAE_EVAC_OVERPASS_URL" in err and "http(s) URL" in err


@pytest.mark.parametrize("value", ["notaurl", "overpass-api.de/api", "http://", "https://:8080/api",
                                   "ftp://overpass.example/api", "http://overpass.example:99999/api", "http:// /api"])
def test_an_overpass_url_option_that_is_no_url_is_one_usage_line(value: str, tmp_path: Path, no_shelters: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Found: ``--overpass-url notaurl`` ended in the HTTP library's "Invalid URL 'notaurl/interpreter': No scheme
    supplied. Perhaps you meant https://…", after osmnx was set up. Now argparse's one line, status 2, quoting
    what was typed and saying what is expected, before anything is set up."""
    with pytest.raises(SystemExit) as info:
        main(["graph", "fetch", "--bbox", BBOX, "--overpass-url", value, "--state-dir", str(tmp_path / "state"),
              "--shelters", str(no_shelters)])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert info.value.code == 2 and "Traceback" not in err, err
    assert last.startswith("sonae graph fetch: error: argument --overpass-url: " + repr(value)), last
    assert "http(s) URL" in last and "https://overpass-api.de/api" in last, last
    assert not (tmp_path / "state").exists()


@given(st.text(max_size=60) | st.from_regex(r"(https?|ftp|)://[a-z0-9.:\[\]@ -]{0,20}(/[a-z]{0,5})?", fullmatch=True))
def test_a_url_option_is_a_url_with_a_host_or_one_refusal(raw: str) -> None:
    """Whatever is typed, :func:`sonae.arguments.http_url` gives an http(s) URL with a host, or refuses it in
    argparse's way (never another exception, which would be a traceback)."""
    try:
        url = http_url(raw)
    except argparse.ArgumentTypeError as exc:
        assert repr(raw) in str(exc) and "http(s) URL" in str(exc)
        return
    parts = urlsplit(url)
    assert parts.scheme.lower() in ("http", "https") and parts.hostname
    assert parts.port is None or 0 <= parts.port <= 65535  # (a port that is none raises here)
    assert not any(c.isspace() or not c.isprintable() for c in url), url


def test_a_url_option_keeps_what_was_typed() -> None:
    """As typed, or refused: blanks around a URL are no longer trimmed (the rule of every value from outside)."""
    assert http_url("https://overpass.example:8080/api") == "https://overpass.example:8080/api"
    assert http_url("HTTP://[::1]:9/api") == "HTTP://[::1]:9/api"
    for loose in (" https://overpass.example:8080/api ", "https://overpass.example/api\n"):
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(loose))):
            http_url(loose)


def test_a_municipality_is_fetched_inside_its_shipped_boundary_without_a_geocoder(
        tmp_path: Path, no_shelters: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Found: ``--municipality`` looked the code's name up in the database and sent it to Nominatim (a geocoder,
    online) for an outline. Now the streets asked of Overpass are those in 郡山市's shipped N03 boundary, given
    in its 5-digit code: no geocoder and no database are asked. A small town straddling the city's border is
    served; the network keeps the nodes inside the border only. The polygon asked for covers the boundary with at
most 300 points (found: its outline buffered by 500 m, 5,660 points)."""
    koriyama = next(b.geometry for b in packaged_boundaries() if b.code == "072036")
    lat, lon = koriyama.exterior.interpolate(0.5, normalized=True).coords[0][::-1]  # a point of its border
    town = generate(tmp_path / "town", rows=8, cols=8, center=(lat, lon))
    town_nodes = Extract(town.osm).nodes
    outside = [n for n, (y, x, _) in town_nodes.items() if not koriyama.contains(shapely.Point(x, y))]
    assert 0 < len(outside) < len(town_nodes)  # the town straddles the border
    geocoded: list[str] = []
    monkeypatch.setattr(graph.ox, "geocode_to_gdf", lambda query, *a, **k: geocoded.append(query))
    monkeypatch.delenv("SONAE_DATABASE_URL", raising=False)
    out = tmp_path / "koriyama.npz"
    with overpass_standin(town.osm) as (url, queries):
        code = main(["graph", "fetch", "--municipality", "07203", "--overpass-url", url, "--state-dir",
                     str(tmp_path / "state"), "--out", str(out), "--shelters", str(no_shelters)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert geocoded == [] and "郡山市 (072036)" in err
    assert not (tmp_path / "state" / "postgres").exists()  # no database was started either
    (query,) = queries
    numbers = [float(v) for v in QUERY.match(query.strip())["poly"].split()]  # type: ignore[index]
    asked = shapely.Polygon(list(zip(numbers[1::2], numbers[::2], strict=True)))
    # found: osmnx asked for the boundary buffered by 500 m, 5,660 points in one query; now a polygon covering
    # it of at most 300 (evac/query_area.py; tests/evac/test_evac_query_area.py), and the command says so
    assert asked.covers(koriyama) and koriyama.buffer(0.01).contains(asked)
    assert len(numbers) // 2 <= MAX_QUERY_POINTS
    assert f"{len(numbers) // 2:,} points sent (the boundary has 10,563)" in err
    net = load_network(out)
    inside = shapely.contains_xy(koriyama, net.node_lon, net.node_lat)
    assert net.n_nodes > 0 and inside.all()
    assert not set(net.node_osmid.tolist()) & set(outside)


def test_a_municipality_without_a_shipped_or_imported_boundary_says_what_to_do(
        tmp_path: Path, no_shelters: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """千代田区 (13101) has no shipped boundary, and here no database: one line, status 2, nothing downloaded."""
    monkeypatch.delenv("SONAE_DATABASE_URL", raising=False)
    with overpass_standin(Path(EXTRACTS["monaco"])) as (url, queries):
        code = main(["graph", "fetch", "--municipality", "13101", "--overpass-url", url, "--state-dir",
                     str(tmp_path / "state"), "--shelters", str(no_shelters)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert "131016" in err[0] and "sonae municipalities import" in err[0] and "--bbox" in err[0], err
    assert queries == []


async def test_a_municipality_whose_boundary_was_imported_is_fetched_inside_it(
        pool: asyncpg.Pool, database_url: str, tmp_path: Path, no_shelters: Path) -> None:
    """Another prefecture's municipality: the boundary `sonae municipalities import` put in the database (here a
    square standing in for it, over part of a town the local Overpass serves)."""
    town = generate(tmp_path / "town", rows=8, cols=8)
    lat, lon = DRILL_TOWN_CENTER
    square = shapely.box(lon - 0.002, lat - 0.002, lon + 0.002, lat + 0.002)
    async with pool.acquire() as conn:
        await store_boundaries(conn, [Boundary("131016", "千代田区", square)], source="test")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root"),
           "SONAE_DATABASE_URL": database_url, "SONAE_LOG_LEVEL": "warning"}
    out = tmp_path / "chiyoda.npz"
    with overpass_standin(town.osm) as (url, queries):
        done = await asyncio.to_thread(subprocess.run, [
            sys.executable, "-m", "app.cli", "graph", "fetch", "--municipality", "131016", "--overpass-url", url,
            "--state-dir", str(tmp_path / "state"), "--out", str(out), "--shelters", str(no_shelters)],
            env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "千代田区 (131016)" in done.stderr
    (query,) = queries
    numbers = [float(v) for v in QUERY.match(query.strip())["poly"].split()]  # type: ignore[index]
    asked = shapely.Polygon(list(zip(numbers[1::2], numbers[::2], strict=True)))
    assert asked.contains(square) and square.buffer(0.01).contains(asked)
    net = load_network(out)
    assert net.n_nodes > 0 and shapely.contains_xy(square, net.node_lon, net.node_lat).all()


@pytest.mark.parametrize(("given", "said"), [
    (["fetch", "--place", "郡山市, 福島県", "--bbox", BBOX], "argument --bbox: not allowed with argument --place"),
    (["fetch", "--bbox", BBOX, "--place", "郡山市, 福島県"], "argument --place: not allowed with argument --bbox"),
    (["fetch", "--municipality", "07203", "--place", "郡山市"],
     "argument --place: not allowed with argument --municipality"),
    (["fetch", "--municipality", "07203", "--bbox", BBOX], "argument --bbox: not allowed with argument --municipality"),
    (["fetch"], "one of the arguments --bbox --place --municipality is required"),
    (["import", "town.osm", "--polygon", "city.geojson", "--bbox", BBOX],
     "argument --bbox: not allowed with argument --polygon"),
])
def test_the_area_is_named_one_way_only(given: list[str], said: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Found: ``graph fetch --place P --bbox B`` downloaded the place and dropped the box unsaid (and
    ``--municipality`` won over both); ``graph import --polygon F --bbox B`` clipped to the polygon only. Now
    argparse's one line, status 2, before anything is read or downloaded."""
    with pytest.raises(SystemExit) as info:
        main(["graph", *given, "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"sonae graph {given[0]}: error: {said}", err
    assert not (tmp_path / "state").exists()
