"""A resident at (or within AT_SHELTER_M of) a suitable shelter is told they are there, not sent out to the
road and back (found: a route asked from a shelter's own position answered 39.5 m). The shelter must still be
suitable: open, rated for the hazard by its GSI flags, not full, not in a blocked area in force (real or drill,
as the route asked), with no blocked area between. Engine answers against the brute-force rule of
``route_start_oracle.at_shelter``; the API's bytes (``route_body``) against ``route``."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import route_start_oracle as oracle
import shapely
from evac_reference import load_extract, random_shelters

from api.evacuation import _nearest
from evac.engine import AT_SHELTER_M, Engine
from evac.guidance import LANGS
from evac.hazards import HAZARD_TYPES, HazardArea
from evac.routes import dumps, route, route_body
from evac.shelters import Shelter


@pytest.fixture(scope="module")
def town(tmp_path_factory: pytest.TempPathFactory) -> tuple[Engine, list[Shelter]]:
    _, net = load_extract("monaco", str(tmp_path_factory.mktemp("at-shelter")))
    rng = np.random.default_rng(5)
    shelters = [s for s in random_shelters(net, rng, 20) if "flood" in s.hazards]
    assert len(shelters) >= 4
    return Engine(net, shelters=shelters), shelters


def _moved(eng: Engine, s: Shelter, dx: float, dy: float = 0.0) -> tuple[float, float]:
    """(lat, lon) ``dx``, ``dy`` metres from a shelter (in the network's projected CRS)."""
    x, y = eng.network.project_point(s.lon, s.lat)
    lon, lat = eng.network.transformer(inverse=True).transform(x + dx, y + dy)
    return float(lat), float(lon)


def _alone(eng: Engine, s: Shelter, shelters: list[Shelter]) -> bool:
    """No other shelter within 3 radii (so that the answer near ``s`` is about ``s`` alone)."""
    x, y = eng.network.project_point(s.lon, s.lat)
    return all(math.dist((x, y), eng.network.project_point(o.lon, o.lat)) > 3 * AT_SHELTER_M
               for o in shelters if o.id != s.id)


def test_at_a_shelter_the_answer_is_that_you_are_there(town: tuple[Engine, list[Shelter]]) -> None:
    eng, shelters = town
    checked = 0
    for s in shelters:
        if not _alone(eng, s, shelters):
            continue
        # its own position, the API's rounded cell of it (up to 7.2 m away), and 9.5 m off on each side
        positions = [(s.lat, s.lon), (round(s.lat, 4), round(s.lon, 4)), _moved(eng, s, 9.5), _moved(eng, s, 0, -9.5)]
        for lat, lon in positions:
            feat = route(eng, lat, lon, hazard="flood")
            p = feat["properties"]
            assert (p["status"], p["shelter"]["id"]) == ("at_shelter", s.id), (s.id, lat, lon, p)
            assert (p["distance_m"], p["duration_s"], p["steps"], feat["geometry"]) == (0.0, 0.0, [], None)
            assert set(p["guidance"]) == set(LANGS) and all(s.name in t for t in p["guidance"].values())
            assert "You are at" in p["guidance"]["en"] and "います" in p["guidance"]["ja-easy"]
            assert "現在地は" in p["guidance"]["ja"]
            for lang in (None, *LANGS):  # the API's bytes are the same answer
                assert route_body(eng, lat, lon, hazard="flood", lang=lang) == dumps(
                    route(eng, lat, lon, hazard="flood", lang=lang)).encode()
            assert oracle.at_shelter(eng, eng.field("walk", "flood"), lon, lat) == s
        # walked the old way, from 9.5 m off, it was a loop out to the road and back
        assert eng.route_result(*positions[2], at_shelter=False).duration_s > 0
        # just outside the radius: a route as before
        far = route(eng, *_moved(eng, s, AT_SHELTER_M + 0.5), hazard="flood")["properties"]
        assert far["status"] != "at_shelter" and (far["status"] != "ok" or far["distance_m"] > 0), far
        checked += 1
    assert checked >= 3


def test_the_shelter_must_still_be_suitable(town: tuple[Engine, list[Shelter]]) -> None:
    eng, shelters = town
    s, not_rated = next((s, h) for s in shelters if _alone(eng, s, shelters) for h in sorted(HAZARD_TYPES)
                        if h not in s.hazards and any(h in o.hazards for o in shelters))

    def answer(**kw: object) -> tuple[str, str | None]:
        r = eng.route_result(s.lat, s.lon, **kw)  # type: ignore[arg-type]
        return r.status, r.shelter.id if r.shelter else None

    assert answer() == ("at_shelter", s.id)
    status, sid = answer(hazard=not_rated)  # not rated for it by its GSI flags: to one that is
    assert status != "at_shelter" and sid != s.id
    for change in ({"is_open": {s.id: False}}, {"occupancy": {s.id: s.capacity or 10}}):
        if "occupancy" in change and s.capacity is None:
            eng.update(shelters=[*(o for o in eng.state.shelters.values() if o.id != s.id), replace(s, capacity=10)])
        eng.update(**change)  # type: ignore[arg-type]
        try:
            status, sid = answer()
            assert status != "at_shelter" and sid != s.id, change
        finally:
            eng.update(shelters=shelters, is_open={s.id: True}, occupancy={s.id: 0})
    assert answer() == ("at_shelter", s.id)
    # a blocked area over the shelter, or a strip of one between it and the resident 8 m off: not there
    lat, lon = _moved(eng, s, 8.0)
    x, y = eng.network.project_point(s.lon, s.lat)
    inv = eng.network.transformer(inverse=True)
    ring = shapely.Polygon([inv.transform(x + dx, y + dy) for dx, dy in ((-3, -3), (3, -3), (3, 3), (-3, 3))])
    strip = shapely.Polygon([inv.transform(x + dx, y + dy) for dx, dy in ((4, -20), (5, -20), (5, 20), (4, 20))])
    for area in (HazardArea(id="over", hazard="flood", geometry=ring),
                 HazardArea(id="between", hazard="flood", geometry=strip)):
        assert not area.geometry.intersects(shapely.Point(lon, lat))
        assert eng.route_result(lat, lon).status == "at_shelter"
        eng.update(add_areas=[area])
        try:
            r = eng.route_result(lat, lon)
            assert r.status != "at_shelter", area.id
            if area.id == "over":  # in the area: no shelter (between: reached round it by the roads, if at all)
                assert r.shelter is None or r.shelter.id != s.id
            assert oracle.at_shelter(eng, eng.field("walk", "flood"), lon, lat) is None
        finally:
            eng.update(remove_areas=[area.id])
        eng.update(add_areas=[replace(area, id="drill-" + area.id, exercise=True)])  # for drills only
        try:
            assert eng.route_result(lat, lon).status == "at_shelter"
            assert eng.route_result(lat, lon, exercise=True).status != "at_shelter"
        finally:
            eng.update(remove_areas=["drill-" + area.id])


def test_nearest_shelters_at_a_shelter_list_it_first(town: tuple[Engine, list[Shelter]]) -> None:
    eng, shelters = town
    s = next(s for s in shelters if _alone(eng, s, shelters))
    status, _, found, here = _nearest(eng, s.lat, s.lon, k=3, profile="walk", hazard="flood", exercise=False)
    assert (status, here) == ("at_shelter", s.name)
    assert found[0] == {"duration_s": 0.0, "shelter": s.to_dict()} and len(found) == 3
    others = eng.nearest_shelters(s.lat, s.lon, k=4, hazard="flood")
    assert [(f["duration_s"], f["shelter"]) for f in found[1:]] == [
        (o["duration_s"], o["shelter"]) for o in others if o["shelter"]["id"] != s.id][:2]
    assert all(f["duration_s"] > 0 for f in found[1:])
