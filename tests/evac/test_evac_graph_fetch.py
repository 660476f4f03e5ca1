"""`sonae graph fetch` offline: osmnx downloads from a local Overpass API (tests/evac/overpass_standin.py)
that serves the real Krems extract, chosen with ``--overpass-url`` (setting ``evac.overpass_url``).

Checked: the network is written and loadable; inside the box it has the same road nodes as `sonae graph
import` of the same file clipped to the box, except nodes only on ways osmnx's download filter leaves
out (``highway=platform`` …, read from the extract's own tags); a second fetch of the same box needs no
server (osmnx's cache in the state directory); with no server and no cache the command says to use
`sonae graph import` and exits 1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from evac_reference import EXTRACTS
from overpass_standin import Extract, overpass_standin

from app.cli import main
from evac.network import load_network

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


def test_the_overpass_setting_is_checked(tmp_path: Path, no_shelters: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SONAE_EVAC_OVERPASS_URL", "overpass.example")
    code = main(["graph", "fetch", "--bbox", BBOX, "--state-dir", str(tmp_path), "--shelters", str(no_shelters)])
    assert code == 2
    err = capsys.readouterr().err
    assert "SONAE_EVAC_OVERPASS_URL" in err and "http(s) URL" in err
