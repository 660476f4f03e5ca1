"""`sonae graph fetch` downloads at most a prefecture's scale (``evac.graph.MAX_FETCH_KM2``).

Found: ``sonae graph fetch --bbox`` took a box of half the planet and would have asked Overpass for it.
A box, or a named place's geocoded outline, larger than the limit is one line, status 2, before anything is
downloaded; Fukushima's whole box still passes.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import geopandas as gpd
import pytest
from shapely.geometry import box

import evac.graph as graph
from app.cli import main
from ingest.boundaries import packaged_boundaries


@pytest.mark.parametrize("bbox", ["0,-60,180,60", "-180,-90,180,90", "122.9,24,146,45.6", "139,36,142,39"])
def test_a_box_beyond_a_prefecture_is_refused_before_any_download(
        bbox: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["graph", "fetch", f"--bbox={bbox}", "--overpass-url", "http://127.0.0.1:9/api",
                 "--state-dir", str(tmp_path / "state")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("sonae: --bbox") and "25,000 km²" in err[0] and "sonae graph import" in err[0], err
    assert not (tmp_path / "state" / "cache").exists()  # osmnx was not even configured


def test_fukushimas_box_is_within_the_limit() -> None:
    west = min(b.geometry.bounds[0] for b in packaged_boundaries())
    south = min(b.geometry.bounds[1] for b in packaged_boundaries())
    east = max(b.geometry.bounds[2] for b in packaged_boundaries())
    north = max(b.geometry.bounds[3] for b in packaged_boundaries())
    graph.check_fetch_extent(west, south, east, north, what="Fukushima")
    assert 20_000 < graph.box_km2(west, south, east, north) < graph.MAX_FETCH_KM2


def test_a_place_larger_than_a_prefecture_is_refused_after_geocoding_before_the_streets(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    asked: list[Any] = []
    monkeypatch.setattr(graph.ox, "geocode_to_gdf",
                        lambda query: gpd.GeoDataFrame(geometry=[box(129.0, 31.0, 146.0, 45.0)], crs="EPSG:4326"))
    # the download (evac/query_area.py's polygon goes through graph._download_inside, not ox.graph_from_polygon)
    monkeypatch.setattr(graph, "_download_inside", lambda *a, **k: asked.append(a))
    monkeypatch.setattr(graph.ox, "graph_from_polygon", lambda *a, **k: asked.append(a))
    with pytest.raises(ValueError, match="place '日本' covers about"):
        graph.graph_from_place("日本", state_dir=tmp_path)
    assert asked == []


@pytest.mark.parametrize(("box", "said"), [
    ((146.0, 24.0, 122.9, 45.6), "west (146) must not be east of east (122.9)"),  # all of Japan, west/east swapped
    ((139.0, 45.0, 142.0, 24.0), "south (45) not north of north (24)"),
    ((142.0, 45.0, 139.0, 24.0), "is not a box: west"),  # both: a positive area, and still not a box
    ((139.0, 36.0, float("nan"), 37.0), "is not a box of degrees"),
    ((139.0, 36.0, 200.0, 37.0), "is not a box of degrees"),
])
def test_a_box_that_is_no_box_is_refused_before_any_download(
        box: tuple[float, float, float, float], said: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Found: west > east or south > north gave a negative area (evac.graph.box_km2) and passed the limit."""
    asked: list[Any] = []
    monkeypatch.setattr(graph.ox, "graph_from_bbox", lambda *a, **k: asked.append(a))
    with pytest.raises(ValueError, match=re.escape(said)):
        graph.graph_from_bbox(*box, state_dir=tmp_path)
    assert asked == []
