"""Route answers: GeoJSON along real geometry, steps with names, shelter, guidance in three languages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from evac_reference import load_extract, random_shelters

from evac.engine import Engine
from evac.guidance import LANGS, status_text
from evac.hazards import HazardArea, load_hazard_geojson
from evac.routes import route


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    _, net = load_extract("krems", str(tmp_path_factory.mktemp("evac-routes")))
    rng = np.random.default_rng(1)
    return Engine(net, shelters=random_shelters(net, rng, 15))


def test_feature_shape_geometry_and_steps(engine: Engine) -> None:
    net = engine.network
    rng = np.random.default_rng(8)
    named = 0
    for node in rng.choice(net.profile("walk").snap_nodes, 25, replace=False).tolist():
        lat, lon = float(net.node_lat[node]) + 2.31e-5, float(net.node_lon[node]) + 1.73e-5
        feat = route(engine, lat, lon, hazard="earthquake")
        text = json.dumps(feat, ensure_ascii=False)
        p = feat["properties"]
        if p["status"] != "ok":
            continue
        assert feat["type"] == "Feature" and feat["geometry"]["type"] == "LineString"
        # the line starts where the resident stands (the API has rounded it to ~10 m before) and walks the
        # access leg to the road; it ends at the shelter itself
        assert feat["geometry"]["coordinates"][0] == pytest.approx([lon, lat], abs=1e-7)
        assert feat["geometry"]["coordinates"][-1] == pytest.approx([p["shelter"]["lon"], p["shelter"]["lat"]], abs=1e-7)
        assert p["access_m"] >= 0 and p["egress_m"] >= 0 and text
        line = shapely.geometry.shape(feat["geometry"])
        proj = net.project_geometry(line)
        assert proj.length == pytest.approx(p["distance_m"], rel=0.03, abs=2)
        steps = p["steps"]
        assert steps[-1]["type"] == "arrive" and steps[0]["type"] == ("depart" if len(steps) > 1 else "arrive")
        assert sum(s["distance_m"] for s in steps) == pytest.approx(p["distance_m"], abs=0.1 * len(steps))
        assert sum(s["duration_s"] for s in steps) == pytest.approx(p["duration_s"], abs=0.1 * len(steps))
        named += any(s["name"] for s in steps[:-1])
        assert set(steps[0]["text"]) == set(LANGS) and set(p["guidance"]) == set(LANGS)
        sh = p["shelter"]
        assert "earthquake" in sh["hazards"] and {"name", "address", "occupancy", "capacity"} <= set(sh)
        assert sh["name"] in p["guidance"]["ja"] and "避難" in p["guidance"]["ja"]
        assert "Evacuate to" in p["guidance"]["en"] and "にげて" in p["guidance"]["ja-easy"]
    assert named >= 5


def test_single_language_and_bad_language(engine: Engine) -> None:
    net = engine.network
    node = int(net.profile("walk").snap_nodes[0])
    feat = route(engine, float(net.node_lat[node]), float(net.node_lon[node]), lang="ja-easy")
    assert isinstance(feat["properties"]["guidance"], str)
    with pytest.raises(ValueError, match="use one of ja, en, ja-easy"):
        route(engine, float(net.node_lat[node]), float(net.node_lon[node]), lang="fr")
    with pytest.raises(ValueError, match="unknown hazard"):
        route(engine, float(net.node_lat[node]), float(net.node_lon[node]), hazard="zombies")


def test_no_safe_route_and_off_network(engine: Engine) -> None:
    net = engine.network
    far = route(engine, 35.0, 135.0, lang="en")["properties"]
    assert far["status"] == "outside_area" and "outside the area" in far["guidance"]
    # inside the network's area but 600 m from any road: off the network, with the distance
    lon0, lat0 = float(net.node_lon.min()), float(net.node_lat.min())
    off = route(engine, lat0 - 0.0054, lon0 - 0.0072, lang="en")["properties"]
    assert off["status"] == "off_network" and "too far" in off["guidance"], off
    assert off["snap_distance_m"] > engine.max_snap_m and f"{off['snap_distance_m'] / 1000:.1f} km" in off["guidance"]
    # surround a node with a ring of blocked area: the node itself is outside, every way out is blocked
    node = int(net.profile("walk").snap_nodes[10])
    c = shapely.Point(float(net.node_lon[node]), float(net.node_lat[node]))
    ring = c.buffer(0.0015).difference(c.buffer(0.0001))
    state = engine.update(add_areas=[HazardArea(id="ring", hazard="flood", geometry=ring)])
    try:
        p = route(engine, c.y, c.x, hazard="earthquake", lang=None)["properties"]
        if any(c.buffer(0.0001).contains(shapely.Point(s.lon, s.lat)) for s in engine.state.shelters.values()):
            pytest.skip("a shelter lies inside the ring")
        assert p["status"] == "no_safe_route" and p["hazard_version"] == state.version
        assert "垂直避難" in p["guidance"]["ja"] and p["steps"] == [] and p["duration_s"] is None
    finally:
        engine.update(remove_areas=["ring"])


def test_hazard_area_validation_and_geojson_import(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="station_id and activation_level"):
        HazardArea(id="g", hazard="flood", geometry=shapely.box(0, 0, 1, 1), source="gauge")
    with pytest.raises(ValueError, match="unknown hazard"):
        HazardArea(id="g", hazard="lava", geometry=shapely.box(0, 0, 1, 1))
    with pytest.raises(ValueError, match="Polygon"):
        HazardArea(id="g", hazard="flood", geometry=shapely.Point(0, 0))
    a = HazardArea(id="x", hazard="landslide", geometry=shapely.box(0, 0, 1, 1), severity="penalty",
                   penalty_factor=4.0, exercise=True, label="がけ崩れ")
    path = tmp_path / "h.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [a.to_feature()]}), encoding="utf-8")
    (b,) = load_hazard_geojson(path)
    assert b == a
    assert "垂直避難" in status_text("inside_hazard", lang="ja", hazard="flood")
