"""The one rule for a GeoJSON geometry Sonae can use: hazard areas, order areas, request bodies.

Staff draw hazard areas and order areas; imports and the API carry them. Every place that takes such a
geometry asks :func:`read_geometry` (GeoJSON mapping) or :func:`check_shape` (a shapely geometry), so
a polygon the API refuses is refused by the domain functions behind it too, with the same reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import shapely
import shapely.errors
from shapely.geometry import shape
from shapely.validation import explain_validity

AREA_TYPES = ("Polygon", "MultiPolygon")


class GeometryError(ValueError):
    """A geometry Sonae cannot use; the message says why, in words a person drawing it can act on."""


def shape_of(value: Any) -> shapely.Geometry:
    """:func:`shapely.geometry.shape` of a GeoJSON geometry from outside, with one more error turned into
    :class:`GeometryError`: shapely reads ``coordinates`` recursively, and ``coordinates`` nested deeper than
    Python's stack (900 levels, which :mod:`json` reads) raised RecursionError, which the readers of outside
    GeoJSON did not expect (found: a 500 or a traceback instead of their own refusal). Whatever else
    ``shape`` raises is raised unchanged."""
    try:
        return shape(value)
    except RecursionError:
        raise GeometryError("the coordinates are nested deeper than GeoJSON allows (4 levels)") from None


def check_shape(geometry: shapely.Geometry, *, areas_only: bool) -> shapely.Geometry:
    """Returns ``geometry`` if Sonae can use it, or raises :class:`GeometryError` saying why.

    The rules: not empty; every position is ``[lon, lat]`` in WGS 84 degrees (|lon| ≤ 180, |lat| ≤ 90,
    finite); valid under the OGC simple-features rule (closed rings, no self-crossing:
    :func:`shapely.is_valid`). ``areas_only``: only Polygon or MultiPolygon. One repair is made before
    this, by shapely as it reads GeoJSON: a ring whose last position is not its first (RFC 7946 asks for
    it) is closed by repeating the first, the one ring it can mean; the geometry is stored closed.
    """
    if areas_only and geometry.geom_type not in AREA_TYPES:
        raise GeometryError("a Polygon or MultiPolygon is needed")
    if geometry.is_empty:
        raise GeometryError("the geometry is empty")
    coords = shapely.get_coordinates(geometry)
    if not (bool((abs(coords[:, 0]) <= 180).all()) and bool((abs(coords[:, 1]) <= 90).all())):
        raise GeometryError("positions are [longitude, latitude] in degrees (WGS 84)")
    if not geometry.is_valid:
        raise GeometryError(f"the geometry is not valid: {explain_validity(geometry)}")
    return geometry


def read_geometry(value: Mapping[str, Any] | shapely.Geometry, *, areas_only: bool) -> shapely.Geometry:
    """Reads a GeoJSON geometry object (or takes a shapely geometry) and checks it with
    :func:`check_shape`; raises :class:`GeometryError` for anything shapely cannot read as GeoJSON."""
    if isinstance(value, shapely.Geometry):
        return check_shape(value, areas_only=areas_only)
    if not isinstance(value, Mapping):
        raise GeometryError("not a GeoJSON geometry (a JSON object with type and coordinates is needed)")
    try:
        geometry = shape_of(value)
    except GeometryError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, shapely.errors.ShapelyError) as exc:
        raise GeometryError(f"not a GeoJSON geometry ({str(exc)[:120] or type(exc).__name__})") from None
    return check_shape(geometry, areas_only=areas_only)
