"""Routes for several hazards in force at once (a gauge's flood and a 土砂災害 warning): the field of a hazard set
ends at shelters rated for every hazard of it, checked against a networkx oracle that picks those shelters by
their GSI flags itself; with none rated for all, the answer says so (no route to a partly rated site)."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import shapely
from evac_reference import reference_digraph
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evac.engine import UNREACHABLE_S, Engine
from evac.guidance import LANGS, status_text
from evac.hazards import HazardArea, hazard_set
from evac.network import RoadNetwork
from evac.routes import route
from evac.shelters import Shelter

ROWS, COLS = 6, 7
STEP = 5e-4  # degrees: ~55 m north-south, ~44 m east-west at 37.4 N
RATINGS = ("flood", "landslide", "earthquake")


def _grid() -> nx.MultiDiGraph:
    G = nx.MultiDiGraph(crs="epsg:4326")
    for r in range(ROWS):
        for c in range(COLS):
            G.add_node(1000 + r * COLS + c, x=140.36 + c * STEP, y=37.40 + r * STEP)
    for r in range(ROWS):
        for c in range(COLS):
            u = 1000 + r * COLS + c
            for v, length in ((u + 1, 44.2) if c + 1 < COLS else (None, 0.0),
                              (u + COLS, 55.6) if r + 1 < ROWS else (None, 0.0)):
                if v is None:
                    continue
                data = {"highway": "residential", "length": length, "oneway": False, "name": f"r{u}-{v}"}
                G.add_edge(u, v, **data)
                G.add_edge(v, u, **data)
    return G


@st.composite
def case(draw: st.DrawFn) -> tuple[list[tuple[int, frozenset[str]]], list[tuple[int, int, int, int]], str]:
    cells = draw(st.lists(st.integers(0, ROWS * COLS - 1), min_size=1, max_size=8, unique=True))
    rated = [(cell, frozenset(draw(st.sets(st.sampled_from(RATINGS), min_size=1, max_size=3)))) for cell in cells]
    boxes = draw(st.lists(st.tuples(st.integers(0, COLS - 2), st.integers(0, ROWS - 2), st.integers(1, 2),
                                    st.integers(1, 2)), max_size=2))
    hazards = draw(st.sets(st.sampled_from(RATINGS), min_size=2, max_size=3))
    return rated, boxes, hazard_set(",".join(sorted(hazards)))


def _box(c0: int, r0: int, w: int, h: int) -> shapely.Polygon:
    # between grid lines, so no shelter node lies on a boundary: blocked streets are those crossing it
    x0, y0 = 140.36 + (c0 + 0.3) * STEP, 37.40 + (r0 + 0.3) * STEP
    return shapely.box(x0, y0, x0 + (w - 0.6) * STEP, y0 + (h - 0.6) * STEP)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case())
def test_a_hazard_set_routes_to_shelters_rated_for_all_as_networkx_does(c) -> None:
    rated, boxes, hazards = c
    G = _grid()
    net = RoadNetwork.from_graph(G)
    index = {int(o): i for i, o in enumerate(net.node_osmid)}
    shelters = [Shelter(id=f"s{i}", name=f"s{i}", lat=G.nodes[1000 + cell]["y"], lon=G.nodes[1000 + cell]["x"],
                        hazards=flags) for i, (cell, flags) in enumerate(rated)]
    # areas of different hazards: every one in force is avoided, whatever hazard the route is for
    areas = [HazardArea(id=f"a{i}", hazard=("flood", "landslide")[i % 2], geometry=_box(*b))
             for i, b in enumerate(boxes)]
    eng = Engine(net, shelters=shelters, areas=areas, max_snap_m=1e6)
    f = eng.field("walk", hazards)
    wanted = hazards.split(",")
    # the oracle: its own pick of shelters (GSI flags include every hazard of the set), its own graph
    # (a site inside an area in force is no refuge: left out, as for one hazard)
    targets = {index[1000 + cell] for cell, flags in rated if all(h in flags for h in wanted)
               and not any(a.geometry.intersects(shapely.Point(G.nodes[1000 + cell]["x"], G.nodes[1000 + cell]["y"]))
                           for a in areas)}
    D = reference_digraph(G, net, "walk", [a.geometry for a in areas])
    ref = np.full(net.n_nodes, np.inf)
    if targets:
        for n, d in nx.multi_source_dijkstra_path_length(D.reverse(copy=False), targets, weight="w").items():
            ref[n] = d
    ours = np.where(f.dist < UNREACHABLE_S, f.dist, np.inf)
    assert np.array_equal(np.isfinite(ours), np.isfinite(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(ours[fin], ref[fin], rtol=1e-9, atol=1e-6)
    for s in f.shelter_at.values():
        assert all(h in s.hazards for h in wanted), (s.hazards, hazards)
    # a resident at every street corner: the route ends at a shelter rated for all, or says none is
    for node in range(0, net.n_nodes, 3):
        lat, lon = float(net.node_lat[node]) + 1e-5, float(net.node_lon[node]) + 1e-5
        r = eng.route_result(lat, lon, hazard=hazards)
        if r.shelter is not None:
            assert all(h in r.shelter.hazards for h in wanted)
        if not any(all(h in flags for h in wanted) for _, flags in rated):
            assert r.status in ("no_shelter_for_all_hazards", "inside_hazard")
        elif r.status == "ok":
            assert math.isfinite(r.duration_s)


def test_no_shelter_rated_for_all_is_said_so_in_every_language() -> None:
    """A flood-only and a landslide-only site: each hazard alone has a route, the pair has none; the answer
    names both hazards and gives 屋内安全確保, never a route to a site rated for one of them."""
    G = _grid()
    net = RoadNetwork.from_graph(G)
    shelters = [Shelter(id="river", name="若葉公園", lat=G.nodes[1000]["y"], lon=G.nodes[1000]["x"],
                        hazards=frozenset({"landslide"})),
                Shelter(id="hill", name="八幡公園", lat=G.nodes[1000 + ROWS * COLS - 1]["y"],
                        lon=G.nodes[1000 + ROWS * COLS - 1]["x"], hazards=frozenset({"flood"}))]
    eng = Engine(net, shelters=shelters, max_snap_m=1e6)
    lat, lon = float(net.node_lat[10]) + 1e-5, float(net.node_lon[10]) + 1e-5
    assert eng.route_result(lat, lon, hazard="flood").status == "ok"
    assert eng.route_result(lat, lon, hazard="landslide").status == "ok"
    feat = route(eng, lat, lon, hazard=hazard_set("landslide,flood"))
    props = feat["properties"]
    assert props["status"] == "no_shelter_for_all_hazards" and props["hazard"] == "flood,landslide"
    assert feat["geometry"] is None and "shelter" not in props
    assert "洪水・土砂災害" in props["guidance"]["ja"] and "屋内安全確保" in props["guidance"]["ja"]
    assert "flood and landslide" in props["guidance"]["en"]
    assert "こうずい" in props["guidance"]["ja-easy"] and "どしゃさいがい" in props["guidance"]["ja-easy"]
    for lang in LANGS:
        assert status_text("no_shelter_for_all_hazards", lang=lang, hazard="flood,landslide")


def test_hazard_sets_are_canonical_and_bounded_like_any_field() -> None:
    assert hazard_set("landslide,flood,flood") == "flood,landslide" == hazard_set(" flood , landslide")
    assert hazard_set("flood") == "flood"
    for bad in ("", "flood,", "flood,lava", "Flood"):
        with pytest.raises(ValueError, match="use one of"):
            hazard_set(bad)
    net = RoadNetwork.from_graph(_grid())
    eng = Engine(net, max_fields=2)
    with pytest.raises(ValueError):
        eng.field("walk", "landslide,flood")  # not canonical: one set, one field
    for key in ("flood,landslide", "flood,earthquake", "landslide,earthquake", "flood,landslide,earthquake"):
        eng.field("walk", key)
    assert len(eng._snap.fields) <= 2  # on-demand sets fall in the bounded LRU (evac.max_fields)


def test_the_level_lists_every_hazard_in_force_highest_first_ties_in_one_order() -> None:
    from alerting.level import HAZARD_ORDER, LevelInForce, Source
    from evac.hazards import HAZARD_TYPES

    assert HAZARD_ORDER == HAZARD_TYPES  # alerting keeps its own copy (it may not import evac)

    def src(kind: str, level: int, hazard: str | None) -> Source:
        return Source(kind, level, False, {"ja-JP": kind, "en-US": kind, "ja-JP-x-easy": kind}, hazard)

    official, gauge, rain = src("official", 4, "landslide"), src("gauge", 4, "flood"), src("official", 5, None)
    answer = LevelInForce("072036", rain, [rain, official, gauge, src("gauge", 3, "flood")])
    assert [(h.hazard, h.level, len(h.sources)) for h in answer.hazards] == [("flood", 4, 2), ("landslide", 4, 1)]
    assert answer.hazard == "flood" and answer.route_hazard == "flood,landslide"
    higher = LevelInForce("072036", official, [src("official", 5, "landslide"), gauge])
    assert higher.hazard == "landslide" and higher.route_hazard == "flood,landslide"  # the set keeps one order
    assert LevelInForce("072036", rain, [rain]).hazards == [] and LevelInForce(None, None).route_hazard is None
    assert answer.hazards[1].as_json("en-US") == {"hazard": "landslide", "level": 4, "exercise": False,
                                                  "sources": [{"kind": "official", "level": 4, "exercise": False,
                                                               "name": "official"}]}


def test_inside_an_area_the_guidance_names_the_areas_hazards_not_the_routes() -> None:
    """A resident inside a landslide area who asked for a flood route is told they are in a landslide area
    (it said 洪水: the hazard asked for, one picked from several)."""
    G = _grid()
    net = RoadNetwork.from_graph(G)
    x, y = G.nodes[1000 + 2 * COLS + 3]["x"], G.nodes[1000 + 2 * COLS + 3]["y"]
    areas = [HazardArea(id="slope", hazard="landslide", geometry=shapely.Point(x, y).buffer(3e-4))]
    eng = Engine(net, shelters=[Shelter(id="s", name="s", lat=G.nodes[1000]["y"], lon=G.nodes[1000]["x"],
                                        hazards=frozenset({"flood", "landslide"}))], areas=areas, max_snap_m=1e6)
    for asked in ("flood", "flood,landslide"):
        props = route(eng, y, x, hazard=asked)["properties"]
        assert props["status"] == "inside_hazard"
        assert "土砂災害の危険区域" in props["guidance"]["ja"] and "landslide area" in props["guidance"]["en"]
        assert "洪水" not in props["guidance"]["ja"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(RATINGS + ("tsunami", "", " flood", "x")), max_size=6)
                 .map(",".join)))
def test_any_text_is_a_canonical_set_or_a_clear_error(text: str) -> None:
    from evac.hazards import HAZARD_TYPES, hazard_parts

    try:
        key = hazard_set(text)
    except ValueError as exc:
        assert "use one of" in str(exc)
        return
    parts = hazard_parts(key)
    assert parts and set(parts) == {p.strip() for p in text.split(",")} <= set(HAZARD_TYPES)
    assert list(parts) == [h for h in HAZARD_TYPES if h in parts] and hazard_set(key) == key
