"""Routes through the HTTP API after SEQUENCES of hazard/shelter changes, each answer against the
unsimplified-graph oracle (``osm_oracle.WalkOracle``), so the incremental, patch and cache paths are
checked, not only a first computation. Same tolerances as ``test_evac_oracle_api``.

Seed and extracts may be changed by ``SONAE_ORACLE_SEED`` / ``SONAE_ORACLE_EXTRACTS`` (comma list)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import asyncpg
import numpy as np
import pytest
import shapely
from evac_reference import EXTRACTS
from osm_oracle import WalkOracle, answer_faults
from test_evac_oracle_api import _circle, _near_road, _oracle

from api.app import create_app
from api.evacuation import EVAC
from evac import store
from evac.hazards import HazardArea
from evac.shelters import Shelter
from sonae.config import Settings
from tests.api_support import start_client

SEED = int(os.environ.get("SONAE_ORACLE_SEED", "1301"))
NAMES = os.environ.get("SONAE_ORACLE_EXTRACTS", "monaco").split(",")
N_ORIGINS = int(os.environ.get("SONAE_ORACLE_ORIGINS", "60"))
#: edges above which hazard areas find their edges through the grid, not the tree (0: always the grid)
TREE_MAX = os.environ.get("SONAE_ORACLE_TREE_MAX_EDGES")
OSM = "/work/shared/data/osm"
EXTRA = {"oakland": f"{OSM}/osmnx_West-Oakland.osm.bz2", "aguascalientes": f"{OSM}/osmnx_aguascalientes.osm.pbf"}


def _xml_oracle(path: str, tmp: Path, epsg: int) -> WalkOracle:
    """The oracle reads OSM XML; a ``.pbf`` is written out as XML first (pyosmium)."""
    if path.endswith(".pbf"):
        import osmium

        xml = tmp / "extract.osm"
        with osmium.SimpleWriter(str(xml)) as w:
            for obj in osmium.FileProcessor(path):
                w.add(obj)
        path = str(xml)
    return WalkOracle(path, epsg=epsg)


def _holed(lon: float, lat: float, r_m: float) -> shapely.Polygon:
    outer = _circle(lon, lat, r_m)
    inner = _circle(lon, lat, r_m * 0.4)
    return shapely.Polygon(outer.exterior.coords, [inner.exterior.coords[::-1]])


async def _check(client, o: WalkOracle, name: str, step: str, origins, shelters, areas, closed) -> dict[str, int]:
    blocked_p = [a.geometry for a in areas]  # the oracle tests in lon/lat, as the engine does
    qualifying = [(s.id, s.lon, s.lat) for s in shelters if "flood" in s.hazards and s.id not in closed]
    want = o.solve(origins, qualifying, blocked_p)
    places = {s.id: (s.lon, s.lat) for s in shelters}
    statuses: dict[str, int] = {}
    bad: list[tuple] = []
    for (lon, lat), ref in zip(origins, want, strict=True):
        resp = await client.get("/api/v1/route", params={"lat": f"{lat:.4f}", "lon": f"{lon:.4f}",
                                                         "hazard": "flood", "lang": "en"})
        assert resp.status == 200, await resp.text()
        feat = await resp.json(content_type=None)
        p = feat["properties"]
        statuses[p["status"]] = statuses.get(p["status"], 0) + 1
        where = f"{name}/{step} ({lat:.4f}, {lon:.4f})"
        bad += answer_faults(o, feat, ref, lon=lon, lat=lat, shelters=places, blocked=blocked_p,
                             closed=frozenset(closed), where=where, rated=frozenset(q[0] for q in qualifying))
    assert not bad, bad[:10]
    return statuses


@pytest.mark.parametrize("name", NAMES)
async def test_answers_follow_a_sequence_of_changes(name: str, pool: asyncpg.Pool, settings: Settings,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evac.network
    from evac.network import load_network

    if TREE_MAX is not None:
        monkeypatch.setattr(evac.network, "TREE_MAX_EDGES", int(TREE_MAX))
    state = tmp_path / "state"
    path = EXTRACTS.get(name) or EXTRA[name]
    net = load_network(path, state_dir=state)
    print(name, "edges", net.n_edges)
    o = _oracle(name, net.epsg) if name in EXTRACTS else _xml_oracle(path, tmp_path, net.epsg)
    rng = np.random.default_rng(SEED + len(name))
    shelters = []
    for i in range(25):
        lon, lat = _near_road(o, rng, 40.0)
        hz = {"flood", "earthquake"} if i % 5 else {"earthquake"}
        shelters.append(Shelter(id=f"S{i}", name=f"避難所{i}", lat=lat, lon=lon, hazards=frozenset(hz)))
    areas: dict[str, HazardArea] = {}
    for i in range(4):
        lon, lat = _near_road(o, rng, 5.0)
        r = float(rng.uniform(30, 150))
        g = _holed(lon, lat, r) if i % 2 else _circle(lon, lat, r)
        areas[f"H{i}"] = HazardArea(id=f"H{i}", hazard="flood", geometry=g)
    # two sites at one point (a school and its gym): closing one leaves the other
    shelters.append(Shelter(id="S7-gym", name="避難所7 体育館", lat=shelters[7].lat, lon=shelters[7].lon,
                            hazards=frozenset({"flood"})))
    wet = shelters[1]
    areas["H-shelter"] = HazardArea(id="H-shelter", hazard="flood", geometry=_circle(wet.lon, wet.lat, 40.0))
    async with pool.acquire() as conn:
        await store.import_shelters(conn, shelters, actor="test")
        await store.import_hazard_areas(conn, list(areas.values()), actor="test")
    origins = []
    for _ in range(N_ORIGINS):
        lon, lat = _near_road(o, rng, 80.0)
        origins.append((round(lon, 4), round(lat, 4)))
    # origins near the shelters and areas the sequence changes, where answers change
    near = [(s.lon, s.lat) for s in shelters[:8]] + [a.geometry.centroid.coords[0] for a in areas.values()] * 3
    for x0, y0 in near:
        origins.append((round(x0 + float(rng.uniform(-0.002, 0.002)), 4), round(y0 + float(rng.uniform(-0.002, 0.002)), 4)))

    client = await start_client(create_app(pool=pool, settings=settings.replace(
        evac__network=path, state__dir=str(state), api__rate_limit_per_minute=0)))
    try:
        service = client.app[EVAC]
        await asyncio.wait_for(service.loaded.wait(), 180)
        closed: set[str] = set()

        async def step(label: str) -> None:
            await service.refresh()  # the notification may have applied it already; this is the sync point
            st = service.engine.state
            assert {a.id for a in st.active(exercise=False)} == set(areas), (label, sorted(st.areas), sorted(areas))
            got = await _check(client, o, name, label, origins, shelters, list(areas.values()), closed)
            print(label, got)

        await step("start")
        lon, lat = _near_road(o, rng, 3.0)
        new = HazardArea(id="H-new", hazard="flood", geometry=_holed(lon, lat, 120.0))
        async with pool.acquire() as conn:
            await store.add_hazard_area(conn, new, actor="test")
        areas[new.id] = new
        await step("add H-new")
        async with pool.acquire() as conn:
            assert await store.remove_hazard_area(conn, "H0", actor="test")
        h0 = areas.pop("H0")
        await step("remove H0")
        async with pool.acquire() as conn:
            await store.add_hazard_area(conn, h0, actor="test")
        areas["H0"] = h0
        await step("re-add H0")
        twin = HazardArea(id="H0-twin", hazard="flood", geometry=h0.geometry)
        async with pool.acquire() as conn:
            await store.add_hazard_area(conn, twin, actor="test")
        areas[twin.id] = twin
        await step("add twin of H0")
        async with pool.acquire() as conn:
            assert await store.remove_hazard_area(conn, "H0", actor="test")
        areas.pop("H0")
        await step("remove H0 (twin stays)")
        for sid in ("S2", "S3", "S4", "S7"):
            async with pool.acquire() as conn:
                await store.set_shelter_state(conn, sid, actor="test", is_open=False)
            closed.add(sid)
        await step("close S2-S4, S7 (its gym stays)")
        async with pool.acquire() as conn:
            await store.set_shelter_state(conn, "S3", actor="test", is_open=True)
        closed.discard("S3")
        await step("open S3")
        async with pool.acquire() as conn:  # full: not a choice while full
            await store.set_shelter_state(conn, "S6", actor="test", capacity=5, occupancy=5)
        closed.add("S6")
        await step("S6 full")
        async with pool.acquire() as conn:
            await store.set_shelter_state(conn, "S6", actor="test", occupancy=4)
        closed.discard("S6")
        await step("S6 has room")
        async with pool.acquire() as conn:
            assert await store.remove_hazard_area(conn, "H-shelter", actor="test")
            assert await store.remove_hazard_area(conn, "H0-twin", actor="test")
        areas.pop("H-shelter")
        areas.pop("H0-twin")
        await step("remove H-shelter and twin")
        async with pool.acquire() as conn:
            await store.add_hazard_area(conn, h0, actor="test")
            await store.add_hazard_area(conn, twin, actor="test")
        areas["H0"] = h0
        areas["H0-twin"] = twin
        await step("both back")

        # small areas that cut only a leg: a shelter's egress leg, a resident's access leg (not the road,
        # not the point itself), and a ring whose hole holds a shelter
        def leg_cut(lon: float, lat: float, aid: str) -> HazardArea | None:
            x, y = o.xy(lon, lat)
            d, _, px, py = o.points(x, y)
            i = int(np.argmin(d))
            if not 6.0 <= d[i] <= 60.0:
                return None
            mx, my = (x + px[i]) / 2, (y + py[i]) / 2
            clon, clat = o.proj.transform(mx, my, direction="INVERSE")
            return HazardArea(id=aid, hazard="flood", geometry=_circle(float(clon), float(clat), min(2.0, d[i] / 4)))

        cuts = [leg_cut(sh.lon, sh.lat, f"egress-{sh.id}") for sh in shelters[5:15]]
        cuts += [leg_cut(lon, lat, f"access-{k}") for k, (lon, lat) in enumerate(origins[:40])]
        cuts = [c for c in cuts if c is not None]
        print("leg cuts", len(cuts))
        async with pool.acquire() as conn:
            await store.import_hazard_areas(conn, cuts, actor="test")
        areas.update({c.id: c for c in cuts})
        await step("leg cuts")
        ringed = shelters[16]
        ring = HazardArea(id="ring", hazard="flood", geometry=_holed(ringed.lon, ringed.lat, 150.0))
        multi = HazardArea(id="multi", hazard="flood", geometry=shapely.union(  # two parts (a MultiPolygon) unless they overlap
            _circle(*_near_road(o, rng, 2.0), 50.0), _circle(*_near_road(o, rng, 2.0), 70.0)))
        async with pool.acquire() as conn:
            await store.add_hazard_area(conn, ring, actor="test")
            await store.add_hazard_area(conn, multi, actor="test")
        areas["ring"] = ring
        areas["multi"] = multi
        origins.extend((round(ringed.lon + float(dx), 4), round(ringed.lat + float(dy), 4))
                       for dx, dy in rng.uniform(-6e-4, 6e-4, (10, 2)))
        await step("ring around a shelter, multipolygon")
        async with pool.acquire() as conn:
            for c in cuts[::2]:
                assert await store.remove_hazard_area(conn, c.id, actor="test")
                areas.pop(c.id)
        await step("half the leg cuts gone")
        lon, lat = _near_road(o, rng, 3.0)
        moved = HazardArea(id="H1", hazard="flood", geometry=_circle(lon, lat, 90.0))
        async with pool.acquire() as conn:
            await store.add_hazard_area(conn, moved, actor="test")
        areas["H1"] = moved
        await step("H1 moved (same id)")
        async with pool.acquire() as conn:
            await store.set_hazard_area_active(conn, "H1", False, actor="test")
            await store.set_hazard_area_active(conn, "ring", False, actor="test")
        inactive = {"H1": areas.pop("H1"), "ring": areas.pop("ring")}
        await step("H1, ring out of force")
        async with pool.acquire() as conn:
            await store.set_hazard_area_active(conn, "ring", True, actor="test")
        areas["ring"] = inactive["ring"]
        await step("ring in force again")
    finally:
        await client.close()
