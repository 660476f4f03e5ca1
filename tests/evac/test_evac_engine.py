"""Correctness of the engine on real OSM extracts, against an independent networkx Dijkstra."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import shapely
from evac_reference import load_extract, random_polygons, random_shelters, reference_digraph, reference_field

from evac.engine import UNREACHABLE_S, Engine
from evac.hazards import HAZARD_TYPES, HazardArea
from evac.routes import route, route_parts


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("evac-state"))


def _areas(polys, *, penalty_every: int = 0):
    out = []
    for i, p in enumerate(polys):
        if penalty_every and i % penalty_every == 0:
            out.append(HazardArea(id=f"P{i}", hazard="flood", geometry=p, severity="penalty", penalty_factor=3.0))
        else:
            out.append(HazardArea(id=f"H{i}", hazard="flood", geometry=p))
    return out


def _reference_for(G, net, eng: Engine, profile: str, hazard: str, areas):
    blocked = [a.geometry for a in areas if a.severity == "blocked"]
    penalties = [(a.geometry, a.penalty_factor) for a in areas if a.severity == "penalty"]
    D = reference_digraph(G, net, profile, blocked, penalties)
    f = eng.field(profile, hazard)
    return D, reference_field(D, f.sources)


@pytest.mark.parametrize("name", ["monaco", "krems"])
@pytest.mark.parametrize("profile", ["walk", "reduced_mobility", "car"])
def test_field_equals_networkx_dijkstra(name: str, profile: str, state_dir: str) -> None:
    G, net = load_extract(name, state_dir)
    rng = np.random.default_rng(abs(hash((name, profile))) % 2**32)
    for trial in range(3):
        shelters = random_shelters(net, rng, 25, profile=profile)
        areas = _areas(random_polygons(net, rng, 6, radius_m=(60, 300)), penalty_every=3)
        eng = Engine(net, shelters=shelters, areas=areas)
        hazard = str(rng.choice(HAZARD_TYPES))
        f = eng.field(profile, hazard)
        # the sources are exactly the shelters rated for the hazard and outside blocked areas
        blocked = shapely.union_all([a.geometry for a in areas if a.severity == "blocked"])
        expected = {s.id for s in shelters if hazard in s.hazards and not blocked.intersects(shapely.Point(s.lon, s.lat))}
        got = {f.shelters[j].id for j in set(f.sources.shelter.tolist())}
        assert got <= expected, trial
        _, ref = _reference_for(G, net, eng, profile, hazard, areas)
        ours = np.where(f.dist < UNREACHABLE_S, f.dist, np.inf)
        assert np.array_equal(np.isfinite(ours), np.isfinite(ref)), (trial, "reachability differs")
        fin = np.isfinite(ref)
        np.testing.assert_allclose(ours[fin], ref[fin], rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize("name", ["monaco", "krems"])
def test_routes_avoid_hazards_and_end_at_rated_shelters(name: str, state_dir: str) -> None:
    G, net = load_extract(name, state_dir)
    rng = np.random.default_rng(7)
    shelters = random_shelters(net, rng, 30)
    areas = _areas(random_polygons(net, rng, 8, radius_m=(80, 250)))
    eng = Engine(net, shelters=shelters, areas=areas)
    by_id = {s.id: s for s in shelters}
    walk_nodes = net.profile("walk").snap_nodes
    statuses: dict[str, int] = {}
    for hazard in ("flood", "earthquake"):
        _, ref = _reference_for(G, net, eng, "walk", hazard, areas)
        for _ in range(60):
            # random points within about 300 m of the network, and a few far off it
            near = int(rng.choice(walk_nodes))
            spread = 0.004 if rng.random() < 0.9 else 0.05
            lon = float(net.node_lon[near] + rng.uniform(-spread, spread))
            lat = float(net.node_lat[near] + rng.uniform(-spread, spread) * 0.7)
            r = eng.route_result(lat, lon, hazard=hazard)
            feat = route(eng, lat, lon, hazard=hazard)
            json.dumps(feat, ensure_ascii=False)
            assert feat["properties"]["status"] == r.status
            statuses[r.status] = statuses.get(r.status, 0) + 1
            if r.status == "inside_hazard":
                assert any(a.geometry.intersects(shapely.Point(lon, lat)) for a in areas)
                continue
            if r.status == "off_network":
                assert r.snap_distance_m > eng.max_snap_m
                continue
            if r.status in ("no_safe_route", "outside_area", "no_shelter_in_area"):
                continue
            assert r.status == "ok" and r.first is not None
            # the time is the sum of its parts: access leg, partial edges, whole edges, egress leg
            parts = route_parts(net, r)
            assert sum(p[4] for p in parts) == pytest.approx(r.duration_s, rel=1e-9, abs=1e-6)
            if r.path:
                assert r.duration_s == pytest.approx(r.access_s + r.first.seconds + ref[r.path[0]], rel=1e-9,
                                                     abs=1e-6)
            assert r.shelter is not None and hazard in by_id[r.shelter.id].hazards
            line = shapely.geometry.shape(feat["geometry"])  # in lon/lat, the engine's rule (BOUNDARY_RULE)
            assert not any(line.intersects(a.geometry) for a in areas)
            end = feat["geometry"]["coordinates"][-1]
            assert end == pytest.approx([r.shelter.lon, r.shelter.lat], abs=1e-6)
    assert statuses.get("ok", 0) >= 60, statuses
    assert statuses.get("off_network", 0) + statuses.get("outside_area", 0) >= 1, statuses


@pytest.mark.parametrize("name", ["andorra", "bayreuth"])
def test_larger_extracts_sample(name: str, state_dir: str) -> None:
    G, net = load_extract(name, state_dir)
    rng = np.random.default_rng(11)
    shelters = random_shelters(net, rng, 40)
    areas = _areas(random_polygons(net, rng, 10, radius_m=(100, 500)), penalty_every=4)
    eng = Engine(net, shelters=shelters, areas=areas)
    _, ref = _reference_for(G, net, eng, "walk", "flood", areas)
    f = eng.field("walk", "flood")
    ours = np.where(f.dist < UNREACHABLE_S, f.dist, np.inf)
    assert np.array_equal(np.isfinite(ours), np.isfinite(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(ours[fin], ref[fin], rtol=1e-9, atol=1e-6)


def test_nearest_shelters_match_networkx(state_dir: str) -> None:
    import networkx as nx

    G, net = load_extract("krems", state_dir)
    rng = np.random.default_rng(3)
    shelters = random_shelters(net, rng, 30)
    areas = _areas(random_polygons(net, rng, 4, radius_m=(80, 200)))
    eng = Engine(net, shelters=shelters, areas=areas)
    D, _ = _reference_for(G, net, eng, "walk", "earthquake", areas)
    f = eng.field("walk", "earthquake")
    src = f.sources
    checked = 0
    for node in rng.choice(net.profile("walk").snap_nodes, 15, replace=False):
        lat, lon = float(net.node_lat[node]) + 1e-4, float(net.node_lon[node])
        got = eng.nearest_shelters(lat, lon, k=4, hazard="earthquake")
        r = eng.route_result(lat, lon, hazard="earthquake")
        # the API hands over the route it computed already: the same answer as asking afresh
        assert eng.nearest_shelters(lat, lon, k=4, hazard="earthquake", route=r) == got
        if r.status != "ok":
            continue
        assert got[0]["duration_s"] == pytest.approx(round(r.duration_s, 1), abs=0.11)
        starts, direct = eng.starts(r)
        best: dict[int, float] = {}
        for start, off in starts:
            lengths = nx.single_source_dijkstra_path_length(D, int(start), weight="w")
            for k in range(len(src)):
                if int(src.end[k]) in lengths:
                    j = int(src.shelter[k])
                    best[j] = min(best.get(j, np.inf), off + lengths[int(src.end[k])] + float(src.offset[k]))
        for j, tot in direct:
            best[j] = min(best.get(j, np.inf), tot)
        want = sorted(best.values())[:4]
        assert [g["duration_s"] for g in got] == pytest.approx([round(w, 1) for w in want], abs=0.11)
        assert all("earthquake" in g["shelter"]["hazards"] for g in got)
        checked += 1
    assert checked >= 5


def test_full_and_closed_shelters_are_skipped(state_dir: str) -> None:
    _, net = load_extract("monaco", state_dir)
    rng = np.random.default_rng(5)
    shelters = [s for s in random_shelters(net, rng, 20) if "flood" in s.hazards] or pytest.fail("no flood shelter")
    eng = Engine(net, shelters=shelters)
    s0 = shelters[0]
    r = eng.route_result(s0.lat, s0.lon)
    # at the shelter's own position the resident is there (evac.engine.AT_SHELTER_M), not sent on a loop
    assert (r.status, r.shelter, r.duration_s) == ("at_shelter", s0, 0.0)
    walked = eng.route_result(s0.lat, s0.lon, at_shelter=False)
    # walked from the road all the same, the shelter stands on its road point: to the road and back
    assert walked.shelter is not None and walked.shelter.id == s0.id
    assert walked.duration_s == pytest.approx(2 * walked.snap_distance_m, abs=1e-6)
    v = eng.update(occupancy={s0.id: s0.capacity or 0}).version
    r2 = eng.route_result(s0.lat, s0.lon)
    assert r2.state.version == v and r2.shelter is not None and r2.shelter.id != s0.id
    assert s0.id not in [x["shelter"]["id"] for x in eng.nearest_shelters(s0.lat, s0.lon, k=30)]
    assert s0.id in [x["shelter"]["id"] for x in eng.nearest_shelters(s0.lat, s0.lon, k=30, include_full=True)]
    eng.update(occupancy={s0.id: 0}, is_open={s0.id: False})
    r3 = eng.route_result(s0.lat, s0.lon)
    assert r3.shelter is not None and r3.shelter.id != s0.id


def test_shelter_inside_blocked_area_is_not_used_and_origin_inside_gets_vertical_evacuation(state_dir: str) -> None:
    _, net = load_extract("monaco", state_dir)
    rng = np.random.default_rng(9)
    shelters = [s for s in random_shelters(net, rng, 20) if "flood" in s.hazards]
    eng = Engine(net, shelters=shelters)
    s0 = shelters[0]
    area = HazardArea(id="flooded", hazard="flood", geometry=shapely.Point(s0.lon, s0.lat).buffer(0.0008),
                      label="冠水")
    eng.update(add_areas=[area])
    f = eng.field("walk", "flood")
    assert s0.id not in {f.shelters[j].id for j in f.sources.shelter.tolist()}
    feat = route(eng, s0.lat, s0.lon, lang=None)
    p = feat["properties"]
    assert p["status"] == "inside_hazard" and feat["geometry"] is None
    assert "垂直避難" in p["guidance"]["ja"] and "upper floor" in p["guidance"]["en"]
    assert "にげて" in p["guidance"]["ja-easy"]
    assert p["hazard_areas"][0]["id"] == "flooded"
    eng.update(remove_areas=["flooded"])
    assert route(eng, s0.lat, s0.lon)["properties"]["status"] == "at_shelter"  # the area gone: safe there again


def test_update_swaps_state_atomically_and_versions_answers(state_dir: str) -> None:
    _, net = load_extract("monaco", state_dir)
    rng = np.random.default_rng(2)
    shelters = random_shelters(net, rng, 20)
    polys = random_polygons(net, rng, 20, radius_m=(50, 150))
    eng = Engine(net, shelters=shelters, warm=[("walk", "flood", False)])
    old = eng.field("walk", "flood")
    old_dist = old.dist.copy()
    errors: list[str] = []
    stop = threading.Event()
    node_lat, node_lon = float(net.node_lat[100]), float(net.node_lon[100])

    def reader() -> None:
        seen = 0
        while not stop.is_set() or seen == 0:
            r = eng.route_result(node_lat, node_lon)
            # an answer is consistent with the one state it read
            if r.field.version != r.state.version:
                errors.append(f"field v{r.field.version} with state v{r.state.version}")
            if r.status == "ok" and r.path and r.first is not None and not np.isclose(
                    r.duration_s, r.access_s + r.first.seconds + r.field.dist[r.path[0]]):
                errors.append("duration from another field")
            seen += 1

    t = threading.Thread(target=reader)
    t.start()
    versions = [eng.update(add_areas=[HazardArea(id=f"h{i}", hazard="flood", geometry=p)]).version
                for i, p in enumerate(polys)]
    stop.set()
    t.join()
    assert not errors, errors[:3]
    assert versions == list(range(2, 22))
    assert np.array_equal(old.dist, old_dist), "an old field must never change"
    feat = route(eng, node_lat, node_lon)
    assert feat["properties"]["hazard_version"] == 21
    assert feat["properties"]["computed_at"].endswith("+00:00")
