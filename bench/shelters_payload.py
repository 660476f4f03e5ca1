"""Bytes a phone receives for shelters: every GSI site (the resident page before) against one map view
(``bbox`` on the page's 0.05° grid, ``limit=400``, the page now), plain and gzip, serialised as the API does.

    .venv/bin/python bench/shelters_payload.py ../shared/data/shelters/*.geojson
"""

import gzip
import json
import sys
from pathlib import Path
from typing import Any

# bench/ holds a module named evac: the project's root comes first
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from evac import store
from evac.shelters import load_shelters

sites: dict[str, Any] = {}
for f in sys.argv[1:]:
    for s in load_shelters(f):
        sites.setdefault(s.id, s)
def feature(s: Any) -> dict[str, Any]:
    row = {"id": s.id, "name": s.name, "address": s.address, "lat": s.lat, "lon": s.lon, "hazards": sorted(s.hazards),
           "municipality_code": s.municipality_code, "capacity": s.capacity, "occupancy": 0, "is_open": True,
           "source": "gsi", "updated_at": None}
    return store.shelter_feature(row)
def size(feats: list[dict[str, Any]]) -> tuple[int, int]:
    b = json.dumps({"type": "FeatureCollection", "features": feats}, ensure_ascii=False, separators=(",", ":"), default=str).encode()
    return len(b), len(gzip.compress(b, 6))
allf = [feature(s) for s in sites.values()]
# a phone's map view around 福島市役所 (37.7608, 140.4748), widened to the 0.05° grid as the page does
w, s_, e, n = 140.45, 37.75, 140.50, 37.80
view = [f for f in allf if w <= f["geometry"]["coordinates"][0] <= e and s_ <= f["geometry"]["coordinates"][1] <= n][:400]
print(f"sites {len(allf)}: all plain {size(allf)[0]:,} B, gzip {size(allf)[1]:,} B; one view ({len(view)} sites): plain {size(view)[0]:,} B, gzip {size(view)[1]:,} B")
