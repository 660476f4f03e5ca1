"""GeoJSON and JSON nested deeper than Python's stack, from outside (a request's query, an imported file, a
subscriber's answer): refused with the parser's own error, never a RecursionError (a 500, a traceback).

Found: ``ngsi.query.parse_geo`` (the NGSI-LD ``coordinates`` parameter) raised RecursionError for 10,000 nested
brackets (its contract: QueryError); shapely's ``shape`` recurses on nested ``coordinates`` (900 levels, within what
``json`` reads), and the readers of hazard areas, hazard maps and boundaries caught ValueError and the like but not
RecursionError; :func:`sonae.jsonkeys.loads_unique` (the one reader of outside JSON files) let json's RecursionError
through to callers that catch ``JSONDecodeError``. Through the NGSI-LD endpoint the parameter is refused 400 by the
document's format check (api/validation.py) before the handler: kept so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from evac.hazardmaps import HazardMapError, read_hazard_map
from evac.hazards import load_hazard_geojson
from ngsi.query import QueryError, parse_geo
from sonae.geojson import GeometryError, read_geometry
from sonae.jsonkeys import read_json_file


def _nested(depth: int) -> Any:
    coords: Any = [140.0, 37.0]
    for _ in range(depth):
        coords = [coords]
    return coords


def test_parse_geo_refuses_deeply_nested_coordinates_with_a_query_error() -> None:
    with pytest.raises(QueryError, match="coordinates"):
        parse_geo("intersects", "Polygon", "[" * 10_000 + "]" * 10_000, None)
    with pytest.raises(QueryError, match="coordinates"):
        parse_geo("intersects", "Polygon", json.dumps(_nested(900)), None)


@pytest.mark.parametrize("kind", ["Point", "LineString", "Polygon", "MultiPolygon"])
def test_shapes_of_deeply_nested_coordinates_are_geometry_errors(kind: str) -> None:
    with pytest.raises(GeometryError, match="nested"):
        read_geometry({"type": kind, "coordinates": _nested(900)}, areas_only=False)


def test_an_imported_hazard_file_nested_too_deep_is_a_value_error(tmp_path: Path) -> None:
    feature = {"type": "Feature", "properties": {"hazard": "flood"},
               "geometry": {"type": "Polygon", "coordinates": _nested(900)}}
    path = tmp_path / "deep.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    with pytest.raises(ValueError, match="feature 0"):
        load_hazard_geojson(path)
    with pytest.raises(HazardMapError, match="feature 0"):
        list(read_hazard_map(path, hazard="flood")[1])


def test_a_json_file_nested_deeper_than_json_reads_is_a_decode_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text("[" * 10_000 + "]" * 10_000)
    with pytest.raises(json.JSONDecodeError, match="nested"):
        read_json_file(path)
    with pytest.raises(HazardMapError, match="not GeoJSON"):
        read_hazard_map(path, hazard="flood")
