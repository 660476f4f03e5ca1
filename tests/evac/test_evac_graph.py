"""Loading, profiles, one-way handling, snapping and caching of road networks (real OSM data)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import networkx as nx
import numpy as np
import osmnx as ox
import pytest
from evac_reference import EXTRACTS, load_extract
from hypothesis import given
from hypothesis import strategies as st

from evac.graph import add_travel_times, get_profile, graph_from_file, names_of
from evac.network import RoadNetwork, load_network, network_cache_path


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("evac-graph-state"))


def test_only_highways_are_kept_and_osmnx_cache_lives_in_state_dir(tmp_path: Path, state_dir: str) -> None:
    oakland = graph_from_file("/work/shared/data/osm/osmnx_West-Oakland.osm.bz2", state_dir=tmp_path)
    assert Path(ox.settings.cache_folder).resolve().is_relative_to(tmp_path.resolve())
    assert len(oakland) > 10 and all("highway" in d for _, _, d in oakland.edges(data=True))
    G, net = load_extract("krems", state_dir)
    assert all("highway" in d for _, _, d in G.edges(data=True))
    assert net.n_nodes == len(G) and net.n_edges == G.number_of_edges()


@pytest.mark.parametrize("name", ["krems", "monaco"])
def test_profiles_respect_steps_wheelchair_and_oneway(name: str, state_dir: str) -> None:
    G, net = load_extract(name, state_dir)
    hw = np.array([net.names[i] for i in net.edge_highway])
    steps = np.array(["steps" in h for h in hw])
    assert steps.any(), "the extract has steps"
    rm = net.profile("reduced_mobility")
    assert not steps[rm.de_base].any(), "reduced mobility never uses steps"
    walk = net.profile("walk")
    assert steps[walk.de_base].any()
    car = net.profile("car")
    assert not np.isin(hw[car.de_base], ["footway", "steps", "path", "pedestrian", "cycleway"]).any()
    oneway = np.array([bool(d.get("oneway")) for _, _, d in G.edges(data=True)])
    # cars never go against a one-way street; pedestrians may
    assert not car.de_rev.any()
    assert (oneway[walk.de_base[walk.de_rev]]).all() and walk.de_rev.any()
    # walking speed 1 m/s, reduced mobility 0.5 m/s on the same plain edge
    e = int(np.flatnonzero((hw == "residential") & (net.edge_length > 10))[0])
    assert net.times["walk"][0][e] == pytest.approx(net.edge_length[e] / 1.0)
    assert net.times["reduced_mobility"][0][e] == pytest.approx(net.edge_length[e] / 0.5)


def test_travel_time_attributes_and_errors(state_dir: str) -> None:
    G, _ = load_extract("monaco", state_dir)
    H = add_travel_times(G.copy())
    data = next(iter(H.edges(data=True)))[2]
    assert {"travel_time_walk", "travel_time_reduced_mobility", "travel_time_car"} <= set(data)
    with pytest.raises(ValueError, match="use one of walk"):
        get_profile("bicycle")
    with pytest.raises(FileNotFoundError, match="give the path"):
        graph_from_file("/nonexistent/town.osm", state_dir=state_dir)
    # PBF (Geofabrik's format) is read through pyosmium; an unknown kind of file is refused by name
    pbf = graph_from_file("/work/shared/data/osm/osmnx_aguascalientes.osm.pbf", state_dir=state_dir)
    assert len(pbf) > 500 and all("highway" in d for _, _, d in pbf.edges(data=True))
    shp = Path(state_dir) / "roads.shp"
    shp.write_text("not OSM", encoding="utf-8")
    with pytest.raises(ValueError, match="use .osm, .osm.bz2, .osm.pbf or .graphml"):
        graph_from_file(shp, state_dir=state_dir)


def test_snapping_uses_largest_strong_component(state_dir: str) -> None:
    G, net = load_extract("krems", state_dir)
    for profile in ("walk", "car"):
        pg = net.profile(profile)
        D = nx.DiGraph()
        D.add_edges_from(zip(pg.de_tail.tolist(), pg.de_head.tolist(), strict=True))
        largest = max(nx.strongly_connected_components(D), key=len)
        assert set(pg.snap_nodes.tolist()) == largest
        rng = np.random.default_rng(4)
        x, y = net.project(net.node_lon, net.node_lat)
        for _ in range(20):
            i = int(rng.integers(net.n_nodes))
            lon, lat = net.node_lon[i] + 1e-4, net.node_lat[i] - 1e-4
            node, d = net.snap(lon, lat, profile=profile)
            px, py = net.project(lon, lat)
            brute = np.hypot(x[pg.snap_nodes] - px, y[pg.snap_nodes] - py)
            assert d == pytest.approx(brute.min()) and node in pg.snap_nodes


def test_npz_cache_and_graphml_round_trip(tmp_path: Path) -> None:
    src = EXTRACTS["monaco"]
    net = load_network(src, state_dir=tmp_path)
    cache = network_cache_path(src, state_dir=tmp_path)
    assert cache.exists()
    again = load_network(src, state_dir=tmp_path, progress=(msgs := []).append)
    assert any("cached" in m for m in msgs)
    for attr in ("node_osmid", "edge_u", "edge_v", "coords"):
        assert np.array_equal(getattr(net, attr), getattr(again, attr))
    assert np.array_equal(net.times["walk"][0], again.times["walk"][0])
    G = graph_from_file(src, state_dir=tmp_path)
    path = tmp_path / "monaco.graphml"
    ox.save_graphml(G, path)
    from_graphml = RoadNetwork.from_graph(graph_from_file(path, state_dir=tmp_path))
    assert from_graphml.n_nodes == net.n_nodes and from_graphml.n_edges == net.n_edges
    assert np.nansum(np.where(np.isfinite(from_graphml.times["car"][0]), from_graphml.times["car"][0], 0)) == \
        pytest.approx(np.nansum(np.where(np.isfinite(net.times["car"][0]), net.times["car"][0], 0)))


@given(st.lists(st.one_of(st.none(), st.text(max_size=6), st.lists(st.text(max_size=6), max_size=3)), max_size=6),
       st.randoms(use_true_random=False))
def test_a_merged_name_does_not_depend_on_the_order_of_its_parts(values: list, rnd: random.Random) -> None:
    # osmnx merges a simplified edge's names through a set: their order follows the process's hash seed
    shuffled = [list(v) if isinstance(v, list) else v for v in values]
    rnd.shuffle(shuffled)
    for v in shuffled:
        if isinstance(v, list):
            rnd.shuffle(v)
    assert names_of(shuffled) == names_of(values)
    parts = {p for v in values for p in (v if isinstance(v, list) else [v]) if p}
    assert set(filter(None, names_of(values).split(" / "))) <= {q for p in parts for q in p.split(" / ")} | parts


_NAMES_OF_TOWN = """
import sys
from pathlib import Path
from evac.drilltown import generate
from evac.network import load_network
town = generate(Path(sys.argv[1]) / "town", rows=50, cols=50, seed=5)
net = load_network(town.osm, state_dir=Path(sys.argv[1]) / "state")
print("\\n".join(sorted(n for n in net.names if " / " in n)))
"""


def test_two_processes_name_the_same_merged_streets_alike(tmp_path: Path) -> None:
    """Built from the same OSM file under two hash seeds, a network names its merged streets alike."""
    outs = []
    for seed in ("1", "2"):
        (tmp_path / seed).mkdir()
        done = subprocess.run([sys.executable, "-c", _NAMES_OF_TOWN, str(tmp_path / seed)], capture_output=True,
                              text=True, env={**os.environ, "PYTHONHASHSEED": seed}, cwd=Path(__file__).parents[2],
                              check=True)
        outs.append(done.stdout)
    assert outs[0].strip(), "the drill town has streets whose merged edges carry two names"
    assert outs[0] == outs[1]
