"""The route answer the API sends (``evac.routes.route_body``: the walk from the node where a route joins
the field formatted once per field and node, joined to the head as JSON text) is byte for byte the JSON of
the answer formatted from scratch (``evac.routes.route``, i.e. ``route_feature``: the oracle, kept).

Compared over hypothesis-random positions on the drill town and the north-Bayreuth extract, with hazard
areas in force (blocked and penalty, real and drill), every language and profile, and for every status;
and when the field changes (an area added or removed) the answers follow it (issue #21).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from evac_reference import EXTRACTS, random_polygons, random_shelters
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evac.drilltown import generate
from evac.engine import Engine, RouteResult, RouteStart
from evac.graph import PROFILE_NAMES
from evac.hazards import HazardArea, load_hazard_geojson
from evac.network import load_network
from evac.routes import dumps, route, route_body
from evac.shelters import load_shelters

LANGS = [None, "ja", "en", "ja-easy"]
_ENGINES: dict[str, Engine] = {}


def _engine(name: str, tmp: Path) -> Engine:
    """The drill town with its gauge areas raised and two staff areas, or the extract with random shelters
    and random blocked, penalty and drill areas (built once per session)."""
    if name not in _ENGINES:
        rng = np.random.default_rng(21)
        if name == "drilltown":
            town = generate(tmp / "town", rows=24, cols=24, seed=3)
            net = load_network(town.osm, state_dir=tmp / "state")
            shelters = load_shelters(town.shelters)
            areas = load_hazard_geojson(town.hazards, source_kind="gauge")
            levels = {a.station_id: 4 for a in areas if a.station_id}
        else:
            net = load_network(EXTRACTS[name], state_dir=tmp / "state")
            shelters = random_shelters(net, rng, 25)
            areas, levels = [], {}
        polys = random_polygons(net, rng, 8, radius_m=(40.0, 250.0))
        areas = [*areas, *(HazardArea(id=f"a{i}", hazard=("flood", "earthquake")[i % 2], geometry=p,
                                      severity="penalty" if i % 3 == 1 else "blocked", penalty_factor=3.0,
                                      exercise=i % 4 == 3) for i, p in enumerate(polys))]
        _ENGINES[name] = Engine(net, shelters=shelters, areas=areas, alert_levels=levels)
    return _ENGINES[name]


@pytest.fixture(scope="module")
def tmp_nets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("route_body")


def _position(engine: Engine, fx: float, fy: float) -> tuple[float, float]:
    """(lat, lon) at fractions of the network's box, rounded as the API rounds positions."""
    net = engine.network
    lon0, lon1 = float(net.node_lon.min()), float(net.node_lon.max())
    lat0, lat1 = float(net.node_lat.min()), float(net.node_lat.max())
    return round(lat0 + fy * (lat1 - lat0), 4), round(lon0 + fx * (lon1 - lon0), 4)


def _same(engine: Engine, lat: float, lon: float, **kw: object) -> bytes:
    """Assert the fast answer equals the oracle's, from a cold and then a warm walk; return it."""
    want = dumps(route(engine, lat, lon, **kw)).encode()  # type: ignore[arg-type]
    assert route_body(engine, lat, lon, **kw) == want  # type: ignore[arg-type]
    assert route_body(engine, lat, lon, **kw) == want  # type: ignore[arg-type]
    return want


@pytest.mark.parametrize("name", ["drilltown", "bayreuth"])
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fx=st.floats(-0.05, 1.05), fy=st.floats(-0.05, 1.05), lang=st.sampled_from(LANGS),
       hazard=st.sampled_from(["flood", "earthquake", "landslide"]), profile=st.sampled_from(PROFILE_NAMES),
       exercise=st.booleans())
def test_answers_equal_the_oracle_at_random_positions(name: str, tmp_nets: Path, fx: float, fy: float,
                                                     lang: str | None, hazard: str, profile: str,
                                                     exercise: bool) -> None:
    engine = _engine(name, tmp_nets)
    lat, lon = _position(engine, fx, fy)
    _same(engine, lat, lon, lang=lang, hazard=hazard, profile=profile, exercise=exercise)


@pytest.mark.parametrize("name", ["drilltown", "bayreuth"])
def test_every_status_equals_the_oracle(name: str, tmp_nets: Path) -> None:
    """A sweep that meets ok (joining the field, and straight to a shelter on the resident's own edge),
    inside_hazard, off_network, outside_area and no_safe_route, in every language."""
    engine = _engine(name, tmp_nets)
    net = engine.network
    seen: dict[str, int] = {}
    kinds = {"field": 0, "own edge": 0}
    rng = np.random.default_rng(5)
    points = [_position(engine, float(fx), float(fy)) for fx, fy in rng.uniform(-0.1, 1.1, (150, 2))]
    # next to shelters (a walk along the resident's own edge) and inside the blocked areas in force
    points += [(round(s.lat + 1e-4, 4), round(s.lon, 4)) for s in engine.state.shelters.values()]
    points += [(round(a.geometry.representative_point().y, 4), round(a.geometry.representative_point().x, 4))
               for a in engine.state.active(exercise=False) if a.severity == "blocked"]
    points.append((35.0, 135.0))
    for lat, lon in points:
        for lang in LANGS:
            body = _same(engine, lat, lon, lang=lang, hazard="flood")
        status = route(engine, lat, lon, hazard="flood")["properties"]["status"]
        seen[status] = seen.get(status, 0) + 1
        if status == "ok":
            start = engine.route_start(lat, lon, hazard="flood")
            kinds["own edge" if isinstance(start, RouteResult) else "field"] += 1
    # off the network: inside the service area's margin, far from any road
    lat_off = round(float(net.node_lat.min()) - 0.0054, 4)
    lon_off = round(float(net.node_lon.min()) - 0.0072, 4)
    body = _same(engine, lat_off, lon_off, lang="en", hazard="flood")
    assert b'"status":"off_network"' in body
    # no safe route: a ring of blocked area around a node
    node = int(net.profile("walk").snap_nodes[len(net.profile("walk").snap_nodes) // 3])
    c = shapely.Point(float(net.node_lon[node]), float(net.node_lat[node]))
    engine.update(add_areas=[HazardArea(id="ring", hazard="flood", geometry=c.buffer(0.0015).difference(
        c.buffer(0.0002)))])
    try:
        for lang in LANGS:
            body = _same(engine, c.y, c.x, lang=lang, hazard="flood")
        if not any(c.buffer(0.0002).contains(shapely.Point(s.lon, s.lat)) for s in engine.state.shelters.values()):
            assert b'"status":"no_safe_route"' in body
    finally:
        engine.update(remove_areas=["ring"])
    assert {"ok", "inside_hazard", "outside_area"} <= set(seen), seen
    assert kinds["field"] >= 20 and kinds["own edge"] >= 1, kinds


def _free_hazard(engine: Engine, *, but: str = "") -> str:
    """A hazard some shelter is rated for and no area of the fixture is about."""
    return next(h for h in ("landslide", "storm_surge", "tsunami", "large_fire", "inland_flooding", "volcano")
                if h != but and any(s.rated_for(h) for s in engine.state.shelters.values()))


def _walk_node(engine: Engine, lat: float, lon: float, hazard: str) -> tuple[RouteStart, list[int]] | None:
    start = engine.route_start(lat, lon, hazard=hazard)
    if not isinstance(start, RouteStart):
        return None
    path = start.field.path(start.end)
    return (start, path) if len(path) >= 4 else None


@pytest.mark.parametrize("name", ["drilltown", "bayreuth"])
def test_a_changed_field_changes_the_kept_walks(name: str, tmp_nets: Path) -> None:
    """Walks are kept per field: an area that cuts a kept walk changes the answers that used it (a new
    field, new walks), removing it brings the first answers back; a change that leaves the field as it
    was (another hazard) keeps the walks but not the version in the answer."""
    engine = _engine(name, tmp_nets)
    hazard = _free_hazard(engine)  # only this test's areas change its field
    rng = np.random.default_rng(9)
    found = None
    for fx, fy in rng.uniform(0.1, 0.9, (200, 2)):
        lat, lon = _position(engine, float(fx), float(fy))
        found = _walk_node(engine, lat, lon, hazard)
        if found:
            break
    assert found is not None
    start, path = found
    before = _same(engine, lat, lon, lang=None, hazard=hazard)
    f0 = start.field
    assert start.end in f0.tails and all(isinstance(k, int) for k in f0.tails if k is not None)  # nodes only
    # a change that leaves the field as it was (a gauge nobody links to): its walks shared, the version new
    engine.update(alert_levels={"no-such-gauge": 5})
    f1 = engine.field(hazard=hazard)
    assert f1 is not f0 and f1.tails is f0.tails and f1.version > f0.version
    carried = _same(engine, lat, lon, lang=None, hazard=hazard)
    assert carried != before and f'"hazard_version":{f1.version},'.encode() in carried
    # a blocked area on a node in the middle of the kept walk (away from the resident)
    mid = path[len(path) // 2]
    net = engine.network
    cut = shapely.Point(float(net.node_lon[mid]), float(net.node_lat[mid])).buffer(0.0002)
    assert not cut.contains(shapely.Point(lon, lat))
    engine.update(add_areas=[HazardArea(id="cut", hazard=hazard, geometry=cut)])
    try:
        f2 = engine.field(hazard=hazard)
        assert f2.tails is not f0.tails
        after = _same(engine, lat, lon, lang=None, hazard=hazard)
        old_coords = before.split(b'"properties"')[0]
        assert after.split(b'"properties"')[0] != old_coords  # another way round, or none
        again = engine.route_start(lat, lon, hazard=hazard)
        assert not isinstance(again, RouteStart) or mid not in f2.path(again.end)
    finally:
        engine.update(remove_areas=["cut"])
    restored = _same(engine, lat, lon, lang=None, hazard=hazard)
    assert restored.split(b'"properties"')[0] == before.split(b'"properties"')[0]


def test_kept_walks_are_bounded(tmp_nets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evac import routes

    monkeypatch.setattr(routes, "TAIL_CACHE_NODES", 5)
    engine = _engine("drilltown", tmp_nets)
    hazard = _free_hazard(engine)
    f = engine.field(hazard=hazard)
    rng = np.random.default_rng(3)
    for fx, fy in rng.uniform(0.0, 1.0, (40, 2)):
        lat, lon = _position(engine, float(fx), float(fy))
        _same(engine, lat, lon, lang="ja", hazard=hazard)
    assert 0 < len([k for k in f.tails if k is not None]) <= 5
    assert math.isfinite(float(f.dist[next(k for k in f.tails if k is not None)]))


def test_kept_walks_are_bounded_by_their_text(tmp_nets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``TAIL_CACHE_BYTES`` the oldest walks go; the count kept matches the walks' own text."""
    from evac import routes

    monkeypatch.setattr(routes, "TAIL_CACHE_BYTES", 6000)
    engine = _engine("drilltown", tmp_nets)
    hazard = _free_hazard(engine)
    f = engine.field(hazard=hazard)
    rng = np.random.default_rng(5)
    for fx, fy in rng.uniform(0.0, 1.0, (40, 2)):
        lat, lon = _position(engine, float(fx), float(fy))
        _same(engine, lat, lon, lang="ja", hazard=hazard)
        kept = [t for k, t in f.tails.items() if k is not None]
        assert f.tails.nbytes == sum(len(t.coords) + 64 * len(t.metres) + 512 for t in kept)
        assert f.tails.nbytes <= 6000 or len(f.tails) == 1
    assert kept


def test_walks_of_a_chain_share_their_text(tmp_nets: Path) -> None:
    """The walks built along one chain are suffixes of one text and one list of metres (built in time
    linear in the chain, not quadratic), and each is its leg's points before the next node's walk: the
    text the former code built by joining ``leg + "," + next walk`` node by node."""
    from evac import routes

    engine = _engine("drilltown", tmp_nets)
    hazard = _free_hazard(engine)
    f = engine.field(hazard=hazard)
    net = engine.network
    pg = net.profile(f.profile)
    f.tails.clear()  # walks kept by earlier tests would end the chain early
    f.tails.nbytes = 0
    far = int(np.argmax(np.where(f.dist < 1e9, f.dist, -1.0)))  # the longest walk of the field
    tail = routes._tail(engine, f, far)
    chain = 0
    while tail.next is not None:
        nxt = f.tails[tail.next]
        if nxt.next is not None:  # the last walk (its parts leave the graph) has its own text
            assert tail.text is nxt.text and tail.metres_all is nxt.metres_all
        d = pg.best_edge(far, tail.next, f.de_weight)
        e = int(pg.de_base[d])
        leg = dumps(np.round(net.edge_coords(e, reverse=bool(pg.de_rev[d]))[1:], 7).tolist())[1:-1]
        assert tail.coords == (f"{leg},{nxt.coords}" if leg else nxt.coords)
        assert tail.metres == [float(net.edge_length[e]), *nxt.metres]
        far, tail, chain = tail.next, nxt, chain + 1
    assert chain >= 3  # a walk of several legs was checked
