"""A deterministic synthetic drill town (訓練用の架空の町), written as real-format files.

The town is a street grid cut by a river running west to east, crossed only by bridges. It is written
as OSM XML (so that demos and benchmarks go through the same osmnx import path as real data), with:

* ``town.osm``: streets (named, some one-way, some steps, some ways tagged ``wheelchair=no``), the river
  (``waterway=river``, dropped by the road import) and bridges;
* ``shelters.geojson``: shelters in GSI format (hazard flags ``"1"``/``""``) plus ``capacity``; sites near
  the river are not rated for floods, sites on the northern hill side are not rated for landslides;
* ``hazards.geojson``: flood areas along the river linked to the gauges (level 3: the bank blocks next
  to the river; level 4: a wider band), marked ``exercise``;
* ``gauges.json``: the gauges along the river; ``population.csv``: people per block.

Everything follows from the parameters and ``seed``: the same call writes the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from evac.hazards import GSI_FLAGS
from sonae.municipality_code import DRILL_TOWN_CENTER, DRILL_TOWN_CODE
from sonae.xmltext import xml_text

_M_PER_DEG_LAT = 111_320.0

# The drill town's 団体コード, DRILL_TOWN_CODE (imported above): 079995 = 07999 with its JIS X 0402 check digit (5), so it passes every
# check a real code passes, and it cannot be a real municipality's: the municipal part 999 lies outside
# every range JIS X 0402 assigns to municipalities (100–199 designated cities and their wards, 201–299
# cities, 301–7xx towns and villages grouped by 郡; the highest in use anywhere is 694, in Hokkaido) and
# is in neither the 総務省 list nor the J-LIS list (a test checks the shipped list). Until issue #14 it
# was 079999, which fails the check digit; the migrations rewrite stored 079999 rows to this code. It lives
# in the ground (``sonae.municipality_code``) with its names, which every layer shows.


__all__ = ["DRILL_TOWN_CODE", "DrillTown", "generate", "main", "size_for_nodes"]


@dataclass(frozen=True)
class DrillTown:
    """Paths of the files one :func:`generate` call wrote."""

    directory: Path
    osm: Path
    shelters: Path
    hazards: Path
    gauges: Path
    population: Path
    rows: int
    cols: int



def gauge_names(number: int) -> dict[str, str]:
    """The names of the drill town's gauge ``number`` (1, 2, …) as the registry keeps them: ``name`` (Japanese),
    ``name_en`` (what English texts name it) and ``kana`` (its reading, shown after the kanji in やさしい日本語).
    Found: the gauges were registered with their station id as English name and no reading, so English alert
    texts and the resident page named a gauge "DT-G01"."""
    return {"name": f"訓練川 第{number}水位観測所", "name_en": f"Kunren River Gauge No. {number} (drill)",
            "kana": f"くんれんがわ だい{number} すいい かんそくじょ"}

def generate(
    out_dir: Path | str, *, rows: int = 30, cols: int = 30, spacing_m: float = 80.0, seed: int = 7,
    center: tuple[float, float] = DRILL_TOWN_CENTER, shelter_every: int = 6, bridge_every: int = 6,
    gauge_every: int = 15,
) -> DrillTown:
    """Write a drill town of ``rows`` x ``cols`` street intersections to ``out_dir``.

    ``center`` is (lat, lon); the default lies near Koriyama, by the Abukuma river.
    """
    if rows < 6 or cols < 4:
        raise ValueError("a drill town needs at least 6 rows and 4 columns of intersections")
    rnd = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lat0, lon0 = center
    dlat = spacing_m / _M_PER_DEG_LAT
    dlon = spacing_m / (_M_PER_DEG_LAT * math.cos(math.radians(lat0)))
    south = lat0 - dlat * (rows - 1) / 2
    west = lon0 - dlon * (cols - 1) / 2
    river_row = rows // 2  # the river flows between rows river_row - 1 and river_row
    river_lat = south + dlat * (river_row - 0.5)

    def pos(r: float, c: float) -> tuple[float, float]:
        return south + dlat * r, west + dlon * c

    def grid_id(r: int, c: int) -> int:
        return 1_000_000 + r * cols + c

    node_lines: list[str] = []
    way_lines: list[str] = []
    next_id = [1_000_000 + rows * cols + 1]

    def new_node(lat: float, lon: float, tags: dict[str, str] | None = None) -> int:
        nid = next_id[0]
        next_id[0] += 1
        node_lines.append(_node(nid, lat, lon, tags))
        return nid

    for r in range(rows):
        for c in range(cols):
            la, lo = pos(r, c)
            node_lines.append(_node(grid_id(r, c), la, lo, None))
    way_id = [1]

    def way(nds: list[int], tags: dict[str, str]) -> None:
        way_lines.append(_way(way_id[0], nds, tags))
        way_id[0] += 1

    def with_mid(a: tuple[int, int], b: tuple[int, int]) -> list[int]:
        """The segment a-b, sometimes with a bent middle node (real streets are rarely straight)."""
        if rnd.random() < 0.25:
            la1, lo1 = pos(*a)
            la2, lo2 = pos(*b)
            jitter = (rnd.random() - 0.5) * 0.25
            return [grid_id(*a), new_node((la1 + la2) / 2 + jitter * dlat, (lo1 + lo2) / 2 + jitter * dlon)]
        return [grid_id(*a)]

    # east-west streets: one way per segment run; a few are one-way, a few short pieces are steps
    for r in range(rows):
        major = r % 5 == 0
        name = f"{r + 1}条通り"
        tags = {"highway": "secondary" if major else "residential", "name": name}
        if r % 7 == 3:
            tags["oneway"] = "yes"
        c = 0
        while c < cols - 1:
            run_end = min(cols - 1, c + rnd.randint(3, 8))
            special = rnd.random()
            if not major and special < 0.04:
                # a pedestrian staircase on one block (a shortcut residents know)
                way([grid_id(r, c), grid_id(r, c + 1)], {"highway": "steps", "name": f"{r + 1}条の階段"})
                c += 1
                continue
            nds: list[int] = []
            for cc in range(c, run_end):
                nds += with_mid((r, cc), (r, cc + 1))
            nds.append(grid_id(r, run_end))
            seg_tags = dict(tags)
            if special > 0.97:
                seg_tags["wheelchair"] = "no"
            way(nds, seg_tags)
            c = run_end
    # north-south streets: cross the river only on bridges
    bridge_cols = [c for c in range(cols) if c % bridge_every == bridge_every // 2]
    for c in range(cols):
        major = c % 5 == 0
        tags = {"highway": "primary" if c in bridge_cols and major else ("tertiary" if major else "residential"),
                "name": f"{c + 1}丁目通り"}
        parts = [(0, river_row - 1), (river_row, rows - 1)]
        for lo_r, hi_r in parts:
            nds = []
            for rr in range(lo_r, hi_r):
                nds += with_mid((rr, c), (rr + 1, c))
            nds.append(grid_id(hi_r, c))
            way(nds, tags)
        if c in bridge_cols:
            way([grid_id(river_row - 1, c), grid_id(river_row, c)],
                {**tags, "bridge": "yes", "layer": "1", "name": f"第{bridge_cols.index(c) + 1}大橋"})
    # the river itself
    river_nodes = [new_node(river_lat, west - dlon + i * dlon, None) for i in range(cols + 2)]
    way(river_nodes, {"waterway": "river", "name": "訓練川"})

    # shelters: on blocks spread over the town, rated like GSI data
    shelters = []
    sid = 0
    for r in range(1, rows - 1, shelter_every):
        for c in range(1, cols - 1, shelter_every):
            rr = min(rows - 2, r + rnd.randint(0, shelter_every - 1))
            cc = min(cols - 2, c + rnd.randint(0, shelter_every - 1))
            la, lo = pos(rr + 0.3, cc + 0.3)  # inside the block, off the street
            near_river = abs(rr + 0.3 - (river_row - 0.5)) <= 3
            hill = rr >= rows - max(3, rows // 6)
            hazards = {
                "flood": not near_river and rnd.random() < 0.95,
                "inland_flooding": not near_river and rnd.random() < 0.9,
                "landslide": not hill and rnd.random() < 0.9,
                "earthquake": rnd.random() < 0.9,
                "large_fire": rnd.random() < 0.7,
                "storm_surge": False, "tsunami": False, "volcano": rnd.random() < 0.5,
            }
            sid += 1
            props: dict[str, object] = {
                "NO": sid, "共通ID": f"DT{sid:05d}", "都道府県名及び市町村名": "訓練県訓練町",
                "施設・場所名": f"訓練町第{sid}避難所", "住所": f"訓練町{rr + 1}条{cc + 1}丁目",
            }
            props.update({GSI_FLAGS[h]: "1" if ok else "" for h, ok in hazards.items()})
            props.update({"municipality_code": DRILL_TOWN_CODE,
                          "capacity": None if rnd.random() < 0.1 else rnd.randrange(50, 801, 10),
                          "occupancy": 0, "is_open": True})
            shelters.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [round(lo, 7), round(la, 7)]},
                             "properties": props})

    # gauges along the river, each with flood areas at alert levels 3 and 4
    gauges, areas = [], []
    gauge_cols = list(range(gauge_every // 2, cols, gauge_every)) or [cols // 2]
    for gi, gc in enumerate(gauge_cols):
        station = f"DT-G{gi + 1:02d}"
        gauges.append({"station_id": station, **gauge_names(gi + 1), "lat": round(river_lat, 7),
                       "lon": round(pos(0, gc)[1], 7), "levels_m": {"3": 4.0, "4": 5.5, "5": 6.8}})
        c_lo, c_hi = max(0, gc - gauge_every // 2) - 0.5, min(cols - 1, gc + gauge_every // 2) + 0.5
        for level, half_rows in ((3, 1.2), (4, 2.4)):
            s_lat, n_lat = river_lat - half_rows * dlat, river_lat + half_rows * dlat
            w_lon, e_lon = pos(0, c_lo)[1], pos(0, c_hi)[1]
            ring = [[w_lon, s_lat], [e_lon, s_lat], [e_lon, n_lat], [w_lon, n_lat], [w_lon, s_lat]]
            areas.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[round(x, 7), round(y, 7)]
                                                                                           for x, y in ring]]},
                          "properties": {"id": f"{station}-L{level}", "hazard": "flood", "severity": "blocked",
                                         "source": "gauge", "station_id": station, "activation_level": level,
                                         "exercise": True, "label": f"訓練川 氾濫想定 (レベル{level})"}})

    osm_path = out / "town.osm"
    with osm_path.open("w", encoding="utf-8") as fh:
        fh.write('<?xml version="1.0" encoding="UTF-8"?>\n<osm version="0.6" generator="sonae-drilltown">\n')
        fh.write(f'  <bounds minlat="{south - dlat:.7f}" minlon="{west - 2 * dlon:.7f}" '
                 f'maxlat="{south + dlat * rows:.7f}" maxlon="{west + dlon * (cols + 1):.7f}"/>\n')
        fh.writelines(node_lines)
        fh.writelines(way_lines)
        fh.write("</osm>\n")
    shelters_path = out / "shelters.geojson"
    shelters_path.write_text(json.dumps({"type": "FeatureCollection", "features": shelters}, ensure_ascii=False),
                             encoding="utf-8")
    hazards_path = out / "hazards.geojson"
    hazards_path.write_text(json.dumps({"type": "FeatureCollection", "features": areas}, ensure_ascii=False),
                            encoding="utf-8")
    gauges_path = out / "gauges.json"
    gauges_path.write_text(json.dumps(gauges, ensure_ascii=False, indent=1), encoding="utf-8")
    pop_path = out / "population.csv"
    with pop_path.open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["block", "lat", "lon", "people"])
        for r in range(rows - 1):
            for c in range(cols - 1):
                if r == river_row - 1:
                    continue  # the river
                la, lo = pos(r + 0.5, c + 0.5)
                w.writerow([f"{r}-{c}", f"{la:.7f}", f"{lo:.7f}", rnd.randint(0, 60)])
    return DrillTown(out, osm_path, shelters_path, hazards_path, gauges_path, pop_path, rows, cols)


def _tags(tags: dict[str, str] | None) -> str:
    return "".join(f"    <tag k={quoteattr(xml_text(k))} v={quoteattr(xml_text(v))}/>\n" for k, v in (tags or {}).items())


def _node(nid: int, lat: float, lon: float, tags: dict[str, str] | None) -> str:
    head = f'  <node id="{nid}" version="1" lat="{lat:.7f}" lon="{lon:.7f}"'
    return f"{head}/>\n" if not tags else f"{head}>\n{_tags(tags)}  </node>\n"


def _way(wid: int, nds: list[int], tags: dict[str, str]) -> str:
    refs = "".join(f'    <nd ref="{n}"/>\n' for n in nds)
    return f'  <way id="{wid}" version="1">\n{refs}{_tags(tags)}  </way>\n'


def size_for_nodes(nodes: int) -> tuple[int, int]:
    """Rows and columns of a square-ish town with at least ``nodes`` intersections."""
    side = math.ceil(math.sqrt(nodes))
    return side, side


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a deterministic drill town as OSM XML and GeoJSON.")
    parser.add_argument("out", type=Path, help="output directory")
    parser.add_argument("--nodes", type=int, default=900, help="about how many street intersections")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rows, cols = size_for_nodes(args.nodes)
    town = generate(args.out, rows=rows, cols=cols, seed=args.seed)
    print(f"wrote {town.osm} ({rows} x {cols} intersections) and shelters, hazards, gauges, population")


if __name__ == "__main__":
    main()
