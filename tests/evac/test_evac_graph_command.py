"""`sonae graph import` (.osm, .osm.bz2, .osm.pbf made here offline with pyosmium) and the evac.network check."""

from __future__ import annotations

import bz2
import json
import os
import socket
from pathlib import Path

import numpy as np
import osmium
import pytest
from evac_reference import EXTRACTS

from app.cli import main
from evac.engine import Engine
from evac.graph import graph_from_file
from evac.network import RoadNetwork, load_network
from evac.shelters import load_shelters
from sonae.config import ConfigError, load_settings


@pytest.fixture(scope="module")
def krems_pbf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Krems as OSM PBF, written by pyosmium from the real .osm.bz2 extract."""
    out = tmp_path_factory.mktemp("pbf") / "krems.osm.pbf"
    with osmium.SimpleWriter(str(out)) as writer:
        for obj in osmium.FileProcessor(EXTRACTS["krems"]):
            if isinstance(obj, osmium.osm.Node):
                writer.add_node(obj)
            elif isinstance(obj, osmium.osm.Way):
                writer.add_way(obj)
    assert out.read_bytes()[:2] == b"\x00\x00"
    return out


def _shelters_file(path: Path, net: RoadNetwork) -> Path:
    feats = []
    rng = np.random.default_rng(4)
    for i, node in enumerate(rng.choice(net.n_nodes, 6, replace=False).tolist()):
        flags = {"洪水": "1" if i % 2 == 0 else "", "地震": "1"}
        feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [
            float(net.node_lon[node]), float(net.node_lat[node])]}, "properties": {"id": f"K{i}", "施設・場所名": f"K{i}", **flags}})
    feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [140.36, 37.40]},  # Koriyama
                  "properties": {"id": "far", "施設・場所名": "far", "洪水": "1"}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False), encoding="utf-8")
    return path


def test_import_pbf_offline_reports_and_routes(krems_pbf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SONAE_EVAC_NETWORK", raising=False)
    xml = RoadNetwork.from_graph(graph_from_file(EXTRACTS["krems"], state_dir=tmp_path / "x"))
    shelters = _shelters_file(tmp_path / "shelters.geojson", xml)
    out = tmp_path / "krems.npz"
    code = main(["graph", "import", str(krems_pbf), "--out", str(out), "--shelters", str(shelters),
                 "--state-dir", str(tmp_path / "state")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"wrote {out}" in captured.out
    assert f"nodes {xml.n_nodes:,}  edges {xml.n_edges:,}" in captured.out
    assert "shelters on this network" in captured.out and "6 of 7" in captured.out
    assert "earthquake 6" in captured.out and "flood 3" in captured.out
    assert f"SONAE_EVAC_NETWORK={out}" in captured.out
    net = load_network(out)
    assert (net.n_nodes, net.n_edges) == (xml.n_nodes, xml.n_edges)
    assert float(net.edge_length.sum()) == pytest.approx(float(xml.edge_length.sum()))
    eng = Engine(net, shelters=load_shelters(shelters))
    s = load_shelters(shelters)[0]
    assert eng.route_result(s.lat + 3e-4, s.lon, hazard="earthquake").status == "ok"
    # the setting accepts the result
    monkeypatch.setenv("SONAE_EVAC_NETWORK", str(out))
    assert load_settings()["evac.network"] == str(out)


def test_import_clips_and_warns_when_no_shelter_is_inside(krems_pbf: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    full = load_network(EXTRACTS["krems"], state_dir=tmp_path / "s")
    w, s, n = float(full.node_lon.min()), float(full.node_lat.min()), float(full.node_lat.max())
    mid = float(np.median(full.node_lon))  # the town is dense in the west: cut at the median node
    half = f"{w},{s},{mid},{n}"
    empty = tmp_path / "none.geojson"
    empty.write_text(json.dumps({"type": "FeatureCollection", "features": []}), encoding="utf-8")
    code = main(["graph", "import", EXTRACTS["krems"], "--bbox", half, "--out", str(tmp_path / "west.npz"),
                 "--shelters", str(empty), "--state-dir", str(tmp_path / "state")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    west = load_network(tmp_path / "west.npz")
    assert 0.2 * full.n_nodes < west.n_nodes < 0.8 * full.n_nodes
    assert float(np.median(west.node_lon)) < mid
    assert "warning: no shelter lies on this network" in captured.err


@pytest.mark.parametrize("content", [None, b"garbage, not OSM", b""])
def test_bad_or_missing_network_stops_startup_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch, content: bytes | None) -> None:
    path = tmp_path / "town.osm.pbf"
    if content is not None:
        path.write_bytes(content)
    monkeypatch.setenv("SONAE_EVAC_NETWORK", str(path))
    with pytest.raises(ConfigError, match="SONAE_EVAC_NETWORK"):
        load_settings()
    code = main(["api", "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "SONAE_EVAC_NETWORK" in err and "Traceback" not in err
    # the import command says the same kind of thing about its input
    monkeypatch.delenv("SONAE_EVAC_NETWORK")
    code = main(["graph", "import", str(tmp_path / "missing.osm.pbf"), "--state-dir", str(tmp_path / "state")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not exist" in err


def test_damaged_pbf_is_a_readable_error(tmp_path: Path) -> None:
    bad = tmp_path / "cut.osm.pbf"
    bad.write_bytes(b"\x00\x00\x00\x0d" + b"\x01" * 40)
    with pytest.raises(ValueError, match="cannot read cut.osm.pbf as OSM PBF"):
        graph_from_file(bad, state_dir=tmp_path)


def _cut(src: Path, dst: Path, keep: float) -> Path:
    data = bz2.decompress(src.read_bytes()) if src.suffix == ".bz2" else src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("kind", ["osm", "pbf", "npz"])
def test_a_damaged_network_past_the_quick_check_stops_startup_with_one_line(
        kind: str, krems_pbf: Path, database_url: str, tmp_path: Path) -> None:
    """A truncated .osm or .osm.pbf, or an .npz that is a zip of the wrong arrays, passes the setting's
    quick look at the first bytes; `sonae api` must still stop with one readable line (exit 2), not
    say "Sonae is up" and answer 503 to every route (#13 item 6)."""
    import subprocess
    import sys
    import zipfile

    if kind == "osm":
        path = _cut(Path(EXTRACTS["monaco"]), tmp_path / "town.osm", 0.4)
    elif kind == "pbf":
        path = _cut(krems_pbf, tmp_path / "town.osm.pbf", 0.5)
    else:
        path = tmp_path / "town.npz"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("x.npy", b"not arrays")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAE_")}
    with socket.socket() as free:  # a port of its own (0 is refused: the API must listen where it says)
        free.bind(("127.0.0.1", 0))
        api_port = str(free.getsockname()[1])
    env.update(SONAE_DATABASE_URL=database_url, SONAE_EVAC_NETWORK=str(path), SONAE_API_PORT=api_port,
               SONAE_LOG_LEVEL="error", SONAE_STATE_DIR=str(tmp_path / "state"))
    done = subprocess.run([sys.executable, "-m", "app.cli", "api"], env=env, capture_output=True, text=True,
                          timeout=280)
    lines = [line for line in done.stderr.splitlines() if not line.startswith("{")]
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-800:])
    assert "Sonae is up" not in done.stdout
    assert len(lines) == 1 and "SONAE_EVAC_NETWORK" in lines[0] and path.name in lines[0], done.stderr


def test_an_empty_osm_file_says_so_not_server_response(tmp_path: Path) -> None:
    """An ``.osm`` file without elements is a file fault, not osmnx's "No data elements in server response"."""
    empty = tmp_path / "empty.osm"
    empty.write_text('<?xml version="1.0"?><osm version="0.6"></osm>', encoding="utf-8")
    with pytest.raises(ValueError, match="empty.osm holds no OpenStreetMap") as info:
        graph_from_file(empty, state_dir=tmp_path)
    assert "server" not in str(info.value)
