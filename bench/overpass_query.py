"""What `sonae graph fetch --municipality` sends to Overpass, for every shipped Fukushima boundary.

Run from the repository root::

    .venv/bin/python bench/overpass_query.py

Per municipality: the points of its N03 boundary; the points osmnx sent before (the boundary buffered by
500 m, ``ox.graph_from_polygon``) and the characters of that polygon in the query; the points and characters
sent now (:func:`evac.query_area.covering_polygon`), the margin it was buffered by, the farthest its outline
lies from the border (m, measured every 5 m along it), how much larger its area is than the municipality's
(%), and the seconds it took to find. Offline: nothing is downloaded.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import osmnx as ox
import shapely
from osmnx import _overpass, projection

from evac.query_area import covering_polygon
from ingest.boundaries import packaged_boundaries


def main() -> None:
    print("code   name       boundary  before  chars  now  chars  margin_m  outline_m  area+%  secs")
    rows = []
    for b in sorted(packaged_boundaries(), key=lambda b: -shapely.get_num_coordinates(b.geometry)):
        border, crs = projection.project_geometry(b.geometry)
        old = _overpass._make_overpass_polygon_coord_strs(
            projection.project_geometry(border.buffer(500), crs=crs, to_latlong=True)[0])
        t0 = time.perf_counter()
        asked = covering_polygon(b.geometry)
        secs = time.perf_counter() - t0
        new = _overpass._make_overpass_polygon_coord_strs(asked.polygon)
        cover, _ = projection.project_geometry(asked.polygon, crs=ox.settings.default_crs, to_crs=crs)
        outline = shapely.distance(shapely.points(shapely.segmentize(cover.exterior, 5).coords), border).max()
        grown = 100 * (cover.area / border.area - 1)
        row = (b.code, b.name, asked.boundary_points, sum(len(s.split()) // 2 for s in old), sum(map(len, old)),
               asked.points, sum(map(len, new)), asked.margin_m, outline, grown, secs)
        rows.append(row)
        print(f"{row[0]} {row[1]:6}  {row[2]:7,} {row[3]:7,} {row[4]:7,} {row[5]:4} {row[6]:6,} {row[7]:8.1f} "
              f"{row[8]:9.1f} {row[9]:6.2f} {row[10]:5.2f}")
    print(f"most points sent now: {max(r[5] for r in rows)}; outline at most {max(r[8] for r in rows):.0f} m past "
          f"the border; area at most {max(r[9] for r in rows):.1f} % larger")


if __name__ == "__main__":
    main()
