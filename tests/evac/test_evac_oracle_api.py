"""Routes as residents get them (HTTP API) against an independent oracle on the UNSIMPLIFIED graph.

For each real extract: shelters at random places near roads (some not rated for floods), random blocked
flood areas (some cutting roads, one over a shelter), a few hundred random positions on the API's own
~10 m grid (so the privacy rounding changes nothing). The oracle (``osm_oracle.WalkOracle``) parses the
OSM file itself and walks from the exact position along a straight access leg to the nearest road point.
Every answer must: end at its shelter (15 m); take a walk within 1 % + 25 m of the oracle's shortest
walk to any qualifying shelter; name that shelter or one the oracle reaches within the same tolerance;
cross no blocked area (access legs included); say ``no_safe_route`` only where the oracle finds none.
"""

from __future__ import annotations

import math
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import shapely
from evac_reference import EXTRACTS
from osm_oracle import WalkOracle, answer_faults

from api.app import create_app
from api.evacuation import EVAC
from evac import store
from evac.hazards import HazardArea
from evac.shelters import Shelter
from sonae.config import Settings
from tests.api_support import start_client

ORIGINS = {"monaco": 150, "krems": 150, "andorra": 100, "bayreuth": 200}
_ORACLES: dict[str, WalkOracle] = {}


def _oracle(name: str, epsg: int) -> WalkOracle:
    if name not in _ORACLES:
        _ORACLES[name] = WalkOracle(EXTRACTS[name], epsg=epsg)
    return _ORACLES[name]


def _near_road(o: WalkOracle, rng: np.random.Generator, max_off_m: float) -> tuple[float, float]:
    i = int(rng.integers(len(o.a)))
    t = float(rng.random())
    x = o.x[o.a[i]] + t * (o.x[o.b[i]] - o.x[o.a[i]])
    y = o.y[o.a[i]] + t * (o.y[o.b[i]] - o.y[o.a[i]])
    ang, r = rng.uniform(0, 2 * math.pi), rng.uniform(0, max_off_m)
    lon, lat = o.proj.transform(x + r * math.cos(ang), y + r * math.sin(ang), direction="INVERSE")
    return float(lon), float(lat)


def _circle(lon: float, lat: float, r_m: float) -> shapely.Polygon:
    dlat = r_m / 111_320.0
    return shapely.Point(lon, lat).buffer(1.0, quad_segs=6).__class__(
        [(lon + dlat / math.cos(math.radians(lat)) * math.cos(a), lat + dlat * math.sin(a))
         for a in np.linspace(0, 2 * math.pi, 13)[:-1]])


@pytest.mark.parametrize("name", list(ORIGINS))
async def test_routes_match_the_unsimplified_oracle(name: str, pool: asyncpg.Pool, settings: Settings,
                                                    tmp_path: Path) -> None:
    from evac.network import load_network

    state = tmp_path / "state"
    net = load_network(EXTRACTS[name], state_dir=state)
    o = _oracle(name, net.epsg)
    rng = np.random.default_rng(13 + len(name))
    shelters = []
    for i in range(30):
        lon, lat = _near_road(o, rng, 40.0)
        hz = {"flood", "earthquake"} if i % 5 else {"earthquake"}
        shelters.append(Shelter(id=f"S{i}", name=f"避難所{i}", lat=lat, lon=lon, hazards=frozenset(hz)))
    # two sites at one point (a school and its gym)
    shelters.append(Shelter(id="S0-gym", name="避難所0 体育館", lat=shelters[0].lat, lon=shelters[0].lon,
                            hazards=frozenset({"flood"})))
    areas = []
    for i in range(5):
        lon, lat = _near_road(o, rng, 5.0)
        areas.append(HazardArea(id=f"H{i}", hazard="flood", geometry=_circle(lon, lat, float(rng.uniform(30, 150)))))
    wet = shelters[1]
    areas.append(HazardArea(id="H-shelter", hazard="flood", geometry=_circle(wet.lon, wet.lat, 40.0)))
    async with pool.acquire() as conn:
        await store.import_shelters(conn, shelters, actor="test")
        await store.import_hazard_areas(conn, areas, actor="test")
    origins = []
    for _ in range(ORIGINS[name]):
        lon, lat = _near_road(o, rng, 80.0)
        origins.append((round(lon, 4), round(lat, 4)))
    blocked_p = [a.geometry for a in areas]  # the oracle tests in lon/lat, as the engine does
    qualifying = [(s.id, s.lon, s.lat) for s in shelters if "flood" in s.hazards]
    want = o.solve(origins, qualifying, blocked_p)
    places = {s.id: (s.lon, s.lat) for s in shelters}

    client = await start_client(create_app(pool=pool, settings=settings.replace(
        evac__network=EXTRACTS[name], state__dir=str(state), api__rate_limit_per_minute=0)))
    try:
        import asyncio

        await asyncio.wait_for(client.app[EVAC].loaded.wait(), 120)
        statuses: dict[str, int] = {}
        for (lon, lat), ref in zip(origins, want, strict=True):
            resp = await client.get("/api/v1/route", params={"lat": f"{lat:.4f}", "lon": f"{lon:.4f}",
                                                             "hazard": "flood", "lang": "en"})
            assert resp.status == 200, await resp.text()
            feat = await resp.json(content_type=None)
            p = feat["properties"]
            statuses[p["status"]] = statuses.get(p["status"], 0) + 1
            where = f"{name} ({lat:.4f}, {lon:.4f})"
            faults = answer_faults(o, feat, ref, lon=lon, lat=lat, shelters=places, blocked=blocked_p,
                                   start=(lon, lat), where=where)
            assert not faults, faults
        assert statuses.get("ok", 0) >= 0.6 * len(origins), statuses
        assert statuses.get("no_safe_route", 0) + statuses.get("inside_hazard", 0) >= 1, statuses
    finally:
        await client.close()
