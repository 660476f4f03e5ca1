"""The polygon `sonae graph fetch` asks Overpass for (evac/query_area.py), on the real shipped N03 boundaries.

Found: ``graph fetch --municipality 072036`` sent 郡山市's outline buffered by 500 m, 5,660 points (the
boundary has 10,563), in one Overpass query. Now, for every Fukushima municipality: the polygon as osmnx sends
it covers the whole boundary (shapely ``covers``: no road of the municipality is lost), has at most
:data:`MAX_QUERY_POINTS` (300) points, is at most 8 % larger in area than the municipality, has its outline
no more than 400 m past the border anywhere (no more than its stated ``reach_m``, under 300 m, where the
boundary is one polygon; the islets off いわき市 and 新地町 are joined by bridges; inside the outline, a
bay of a neighbour that the municipality almost encloses is filled, as osmnx sends outlines only) and lies
inside the 500 m buffer osmnx asked for before, so no more is downloaded than before. The network kept is the same as osmnx's own
``graph_from_polygon`` gives for the boundary (a town straddling 郡山市's border, through the local Overpass).
"""

from __future__ import annotations

import math
import random
from functools import cache
from pathlib import Path

import osmnx as ox
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from osmnx import projection
from overpass_standin import overpass_standin
from shapely.geometry import MultiPolygon, Polygon

import evac.graph as graph
from evac.drilltown import generate
from evac.query_area import MAX_QUERY_POINTS, SIMPLIFY_SHARE, covering_polygon, sent_polygons
from ingest.boundaries import Boundary, packaged_boundaries

#: the most the polygon asked for may exceed the municipality's area
MAX_AREA_GROWTH = 0.08
#: the farthest (m) any point of its outline may lie from the municipality (bridges to islets included)
MAX_REACH_M = 400.0


@cache
def _boundaries() -> dict[str, Boundary]:
    return {b.code: b for b in packaged_boundaries()}


def _fukushima() -> list[str]:
    return sorted(_boundaries())


def test_every_fukushima_municipality_is_shipped() -> None:
    assert len(_boundaries()) == 59 and all(code.startswith("07") for code in _boundaries())


@pytest.mark.parametrize("code", _fukushima())
def test_the_polygon_asked_for_covers_the_municipality_with_few_points(code: str) -> None:
    boundary = _boundaries()[code].geometry
    asked = covering_polygon(boundary)
    (sent,) = sent_polygons(asked.polygon)  # one request, as osmnx writes it: 6 decimals, outline only
    assert sent.covers(boundary) and asked.polygon.covers(boundary)
    assert len(sent.exterior.coords) == asked.points <= MAX_QUERY_POINTS
    assert asked.boundary_points == shapely.get_num_coordinates(boundary) > asked.points
    # in metres, in osmnx's UTM zone of the municipality
    border, crs = projection.project_geometry(boundary)
    cover, _ = projection.project_geometry(sent, crs=ox.settings.default_crs, to_crs=crs)
    assert cover.area <= border.area * (1 + MAX_AREA_GROWTH)
    assert border.buffer(MAX_REACH_M).covers(cover.exterior)  # its inside: see below
    if isinstance(boundary, Polygon):  # no bridges: the outline is the margin's buffer, simplified by 0.9 of
        # it (1 %: buffer's arcs are drawn as chords). Its inside may reach farther: a bay whose mouth the
        # buffer closes is filled, as osmnx sends outlines only.
        assert asked.reach_m == pytest.approx(asked.margin_m * (1 + SIMPLIFY_SHARE))
        assert asked.reach_m < 300 and border.buffer(asked.reach_m * 1.01).covers(cover.exterior)
    before = shapely.union_all(sent_polygons(projection.project_geometry(
        border.buffer(500), crs=crs, to_latlong=True)[0]))  # what osmnx asked for before
    assert before.covers(sent)


def test_koriyama_figures() -> None:
    """The figures of the commit and the README: 郡山市 10,563 boundary points, 5,660 sent before, now 289."""
    boundary = _boundaries()["072036"].geometry
    border, crs = projection.project_geometry(boundary)
    before = sent_polygons(projection.project_geometry(border.buffer(500), crs=crs, to_latlong=True)[0])
    asked = covering_polygon(boundary)
    assert (asked.boundary_points, sum(len(p.exterior.coords) for p in before)) == (10_563, 5_660)
    assert asked.points <= MAX_QUERY_POINTS and asked.reach_m < 250


@st.composite
def _ragged(draw: st.DrawFn) -> Polygon | MultiPolygon:
    """A ragged polygon near 郡山市 of 500 to 4,000 points (a star whose radius wanders at random from angle
    to angle), or two or three of them apart: an outline as wiggly as an N03 one, with islets or exclaves."""
    shapes = []
    for i in range(draw(st.integers(1, 3))):
        n = draw(st.integers(500, 4000))
        radius = draw(st.floats(0.005, 0.15))  # degrees: 0.5 to 15 km
        rng = random.Random(draw(st.integers(0, 2**31)))
        x0, y0 = 140.36 + 0.4 * i, 37.4 + draw(st.floats(-0.05, 0.05))
        wander, pts = 0.0, []
        for k in range(n):
            wander = 0.9 * wander + rng.gauss(0, 0.05)
            r = radius * (1 + max(-0.6, min(0.6, wander)))
            a = 2 * math.pi * k / n
            pts.append((x0 + r * math.cos(a) / math.cos(math.radians(y0)), y0 + r * math.sin(a)))
        shapes.append(Polygon(pts))
    return shapes[0] if len(shapes) == 1 else MultiPolygon(shapes)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ragged())
def test_any_ragged_outline_is_covered_with_few_points(boundary: Polygon | MultiPolygon) -> None:
    asked = covering_polygon(boundary)
    sent = shapely.union_all(sent_polygons(asked.polygon))
    assert sent.covers(boundary)
    assert asked.points <= MAX_QUERY_POINTS


def test_the_network_is_the_one_osmnx_keeps_for_the_boundary(tmp_path: Path) -> None:
    """A drill town straddling 郡山市's border, served by the local Overpass: the graph of what is asked now,
    kept inside the boundary, has the nodes, edges and edge data of osmnx's ``graph_from_polygon`` of the
    boundary itself (which asked for it buffered by 500 m)."""
    koriyama = _boundaries()["072036"].geometry
    lat, lon = koriyama.exterior.interpolate(0.5, normalized=True).coords[0][::-1]
    town = generate(tmp_path / "town", rows=8, cols=8, center=(lat, lon))
    with overpass_standin(town.osm) as (url, queries):
        graph.configure_osmnx(state_dir=tmp_path / "state", overpass_url=url)
        ox.settings.use_cache = False
        try:
            theirs = ox.graph_from_polygon(koriyama, network_type="all", simplify=False, retain_all=True)
            ours = graph._download_inside(covering_polygon(koriyama).polygon, koriyama)
        finally:
            ox.settings.use_cache = True
    assert len(queries) == 2 and len(queries[1]) < len(queries[0]) / 10
    assert len(ours) > 0 and set(ours.nodes) == set(theirs.nodes)
    assert sorted(ours.edges(keys=True, data=True)) == sorted(theirs.edges(keys=True, data=True))
    assert dict(ours.nodes(data=True)) == dict(theirs.nodes(data=True))
