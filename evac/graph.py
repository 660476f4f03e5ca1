"""Road graphs from OpenStreetMap via osmnx, and travel profiles.

Graphs come from a place name, a polygon (a municipality's boundary), a point or a bounding box (online,
through osmnx's cache in the state directory), from ``.osm`` / ``.osm.bz2`` / ``.osm.pbf`` files (PBF
through pyosmium, the Python binding of libosmium, which reads Geofabrik's extracts) and from GraphML; any
of them can be clipped to a bounding box or a polygon. Every graph goes through
:func:`prepare_graph`: only ways tagged ``highway`` are kept (``graph_from_xml`` also turns buildings,
land use and rivers into edges), and the graph is simplified without merging ways whose profile-relevant
tags differ (so a flight of steps stays its own edge).

Profiles
--------
``walk`` (default; Japanese evacuation is on foot)
    1.0 m/s, the walking speed the Cabinet Office tsunami-evacuation guidelines assume. Steps take
    twice as long. Pedestrians may walk against one-way streets unless ``oneway:foot=yes``.
``reduced_mobility``
    0.5 m/s (the guidelines' figure for elderly and disabled people); never uses ``highway=steps``,
    ``wheelchair=no``, rough ``smoothness`` or mountain ``sac_scale`` ways; one-way as for ``walk``.
``car``
    ``maxspeed`` when tagged, otherwise a per-class default; only drivable classes; one-way respected.

One-way streets: graphs are built with ``bidirectional=False`` so one-way ways have only their legal
direction; the walking profiles add the reverse direction themselves (see :func:`edge_times`).
"""

from __future__ import annotations

import logging
import math
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import osmnx as ox
import shapely

from evac.query_area import SIMPLIFY_SHARE, covering_polygon

log = logging.getLogger("sonae.evac.graph")

Progress = Callable[[str], None]

#: Tags kept on edges in addition to osmnx's defaults; profiles read them.
EXTRA_WAY_TAGS = (
    "foot", "wheelchair", "motor_vehicle", "motorcar", "vehicle", "sidewalk", "oneway:foot",
    "sac_scale", "surface", "smoothness", "incline",
)
#: Edges whose values of these tags differ are not merged by simplification.
SIMPLIFY_DIFFER = ("highway", "foot", "wheelchair", "access", "oneway", "smoothness", "sac_scale")

PROFILE_NAMES = ("walk", "reduced_mobility", "car")

_NOT_WALKABLE = {
    "motorway", "motorway_link", "construction", "proposed", "abandoned", "platform", "raceway",
    "bus_guideway", "escape", "razed", "planned", "disused", "no",
}
_DRIVABLE_KMH = {
    "motorway": 100.0, "motorway_link": 60.0, "trunk": 60.0, "trunk_link": 40.0, "primary": 50.0,
    "primary_link": 40.0, "secondary": 40.0, "secondary_link": 30.0, "tertiary": 40.0,
    "tertiary_link": 30.0, "unclassified": 30.0, "residential": 30.0, "living_street": 10.0,
    "service": 20.0, "road": 30.0,
}
_ROUGH = {"very_bad", "horrible", "very_horrible", "impassable"}
_NO = {"no", "private"}
_YES = {"yes", "designated", "permissive", "official", "destination"}


@dataclass(frozen=True)
class Profile:
    """A travel mode: which ways it may use, and how fast."""

    name: str
    speed_mps: float
    walking: bool

    def times(self, data: dict[str, Any]) -> tuple[float, float]:
        """Seconds along and against an edge's direction (``inf`` where not allowed)."""
        length = float(data.get("length", 0.0) or 0.0)
        fwd, bwd = self.speeds(data)
        return _seconds(length, fwd), _seconds(length, bwd)

    def speeds(self, data: dict[str, Any]) -> tuple[float, float]:
        """Effective speeds along and against an edge's direction, m/s (0.0 where not allowed).

        ``times`` is ``max(length / speed, MIN_EDGE_TIME_S)``; the streamed importer
        (:mod:`evac.osm_import`) applies the same speeds to whole arrays of lengths.
        """
        highways = _values(data.get("highway"))
        if not highways:
            return 0.0, 0.0
        if self.walking:
            return self._walk_speeds(data, highways)
        return self._car_speeds(data, highways)

    def _walk_speeds(self, data: dict[str, Any], highways: list[str]) -> tuple[float, float]:
        foot = set(_values(data.get("foot")))
        if foot & _NO or (set(highways) & _NOT_WALKABLE and not foot & _YES):
            return 0.0, 0.0
        access = set(_values(data.get("access")))
        if access & _NO and not foot & _YES:
            return 0.0, 0.0
        speed = self.speed_mps
        if "steps" in highways:
            if self.name == "reduced_mobility":
                return 0.0, 0.0
            speed = speed / 2.0  # steps take twice as long (exact: a power of two)
        if self.name == "reduced_mobility":
            if "no" in _values(data.get("wheelchair")) or set(_values(data.get("smoothness"))) & _ROUGH:
                return 0.0, 0.0
            if any(s not in ("", "hiking") for s in _values(data.get("sac_scale"))):
                return 0.0, 0.0
        backward = speed if "yes" not in _values(data.get("oneway:foot")) else 0.0
        return speed, (backward if data.get("oneway") else 0.0)

    def _car_speeds(self, data: dict[str, Any], highways: list[str]) -> tuple[float, float]:
        classes = [h for h in highways if h in _DRIVABLE_KMH]
        if not classes:
            return 0.0, 0.0
        motor = set(_values(data.get("motor_vehicle"))) | set(_values(data.get("motorcar")))
        access = set(_values(data.get("access")))
        if motor & _NO or (access & _NO and not motor & _YES):
            return 0.0, 0.0
        kmh = _maxspeed_kmh(data.get("maxspeed")) or min(_DRIVABLE_KMH[h] for h in classes)
        return kmh / 3.6, 0.0


def _seconds(length: float, speed: float) -> float:
    return max(length / speed, MIN_EDGE_TIME_S) if speed > 0 else math.inf


#: Zero-length OSM segments still cost a little so that every edge has a positive weight.
MIN_EDGE_TIME_S = 0.01

PROFILES: dict[str, Profile] = {
    "walk": Profile("walk", 1.0, True),
    "reduced_mobility": Profile("reduced_mobility", 0.5, True),
    "car": Profile("car", 0.0, False),
}


def get_profile(name: str) -> Profile:
    """Return the profile called ``name``; the error lists the valid names."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}: use one of {', '.join(PROFILE_NAMES)}") from None


def _values(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, list | tuple | set):
        return [str(v) for v in value]
    text = str(value)
    if text.startswith("[") and text.endswith("]"):  # list attributes round-tripped through GraphML
        return [v.strip(" '\"") for v in text[1:-1].split(",") if v.strip(" '\"")]
    return [text]


def _maxspeed_kmh(value: Any) -> float | None:
    speeds = []
    for item in _values(value):
        text = item.strip().lower()
        mph = text.endswith("mph")
        try:
            number = float(text.removesuffix("mph").strip())
        except ValueError:
            continue
        speeds.append(number * 1.609344 if mph else number)
    return min(speeds) if speeds else None


def edge_times(G: nx.MultiDiGraph, profile: str) -> dict[tuple[Any, Any, int], tuple[float, float]]:
    """Travel seconds ``(along, against)`` per edge ``(u, v, key)`` for ``profile``."""
    prof = get_profile(profile)
    return {(u, v, k): prof.times(d) for u, v, k, d in G.edges(keys=True, data=True)}


def add_travel_times(G: nx.MultiDiGraph) -> nx.MultiDiGraph:
    """Set ``travel_time_<profile>`` (seconds along the edge, ``inf`` if not allowed) on every edge."""
    for name, prof in PROFILES.items():
        for _, _, data in G.edges(data=True):
            data[f"travel_time_{name}"] = prof.times(data)[0]
    return G


#: how long (s) the check that the Overpass server is there waits for it
OVERPASS_CONNECT_TIMEOUT_S = 10.0


def _prepare_download() -> None:
    """Before a download: keep osmnx's rate limiting only when the Overpass server answers.

    osmnx asks the server's ``/status`` how long to wait before each query and, when it cannot reach it,
    sleeps 60 s before a query that then fails just the same. With no server the download now fails at
    once (a box osmnx's cache holds still needs no server)."""
    url = ox.settings.overpass_url.rstrip("/") + "/status"
    try:
        with urllib.request.urlopen(url, timeout=OVERPASS_CONNECT_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        reachable = True  # it answered, if not with a status
    except (OSError, ValueError):  # refused, no route, no name, timed out
        reachable = False
    else:
        reachable = True
    ox.settings.overpass_rate_limit = reachable


def configure_osmnx(*, state_dir: Path | str, overpass_url: str | None = None) -> None:
    """Point osmnx's HTTP cache at the state directory and keep the tags the profiles read.

    ``overpass_url``: the Overpass API to download from (``evac.overpass_url``); ``None`` keeps osmnx's.
    """
    if overpass_url:
        ox.settings.overpass_url = overpass_url.rstrip("/")
    cache = Path(state_dir) / "osmnx-cache"
    cache.mkdir(parents=True, exist_ok=True)
    ox.settings.use_cache = True
    ox.settings.cache_folder = str(cache)
    tags = list(ox.settings.useful_tags_way)
    ox.settings.useful_tags_way = tags + [t for t in EXTRA_WAY_TAGS if t not in tags]


def report_progress(progress: Progress | None, message: str) -> None:
    """Log ``message`` (INFO, logger ``sonae.evac.graph``) and pass it to ``progress`` when one is given: how
    graph building and imports show their progress (a CLI prints it, a service logs it)."""
    log.info(message)
    if progress is not None:
        progress(message)


def prepare_graph(G: nx.MultiDiGraph, *, progress: Progress | None = None) -> nx.MultiDiGraph:
    """Keep only ``highway`` ways and simplify without merging across profile-relevant tag changes."""
    drop = [(u, v, k) for u, v, k, d in G.edges(keys=True, data=True) if "highway" not in d]
    G.remove_edges_from(drop)
    G.remove_nodes_from([n for n, deg in list(G.degree()) if deg == 0])
    if len(G) == 0:
        raise ValueError("the graph has no highway ways: check that the OSM data covers streets")
    if len(G) and not G.graph.get("simplified"):
        report_progress(progress, f"simplifying {len(G):,} nodes")
        # remove_rings=False: a closed way with no junction (a ring lane, a park path) is road people
        # live on; osmnx would drop it. Loops with one junction stay as self-loop edges.
        G = ox.simplify_graph(G, edge_attrs_differ=list(SIMPLIFY_DIFFER), remove_rings=False)
    report_progress(progress, f"road graph ready: {len(G):,} nodes, {G.number_of_edges():,} edges")
    return G


#: File endings :func:`graph_from_file` reads.
ROAD_FILE_SUFFIXES = (".osm", ".osm.bz2", ".xml", ".xml.bz2", ".osm.pbf", ".pbf", ".graphml")


def pbf_to_osm_xml(path: Path | str, out: Path | str) -> Path:
    """Write the ``highway`` ways of an OSM PBF file, and the nodes they use, as OSM XML (pyosmium).

    Two passes over the file: the first collects the node ids of highway ways, the second writes those
    nodes and ways. Raises ``ValueError`` for a file pyosmium cannot read.
    """
    import osmium

    out = Path(out)
    out.unlink(missing_ok=True)
    try:
        used: set[int] = set()
        for way in osmium.FileProcessor(str(path), osmium.osm.WAY).with_filter(osmium.filter.KeyFilter("highway")):
            if isinstance(way, osmium.osm.Way):
                used.update(n.ref for n in way.nodes)
        with osmium.SimpleWriter(str(out)) as writer:
            for obj in osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY):
                if isinstance(obj, osmium.osm.Node):
                    if obj.id in used:
                        writer.add_node(obj)
                elif isinstance(obj, osmium.osm.Way) and "highway" in obj.tags:
                    writer.add_way(obj)
    except RuntimeError as exc:
        raise ValueError(f"cannot read {Path(path).name} as OSM PBF ({exc}): is it a complete .osm.pbf file?") from None
    return out


def graph_from_file(
    path: Path | str, *, state_dir: Path | str = ".state", progress: Progress | None = None,
    clip: Any = None,
) -> nx.MultiDiGraph:
    """Load ``.osm``, ``.osm.bz2``, ``.osm.pbf``, ``.xml`` or ``.graphml`` into a prepared osmnx graph.

    ``clip`` (a shapely Polygon/MultiPolygon in lon/lat) keeps only the roads inside it (before
    simplification). Raises ``FileNotFoundError`` or ``ValueError`` with what to do.
    """
    import tempfile

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"road data {path} does not exist: give the path of an .osm(.bz2), .osm.pbf or "
                                ".graphml file")
    configure_osmnx(state_dir=state_dir)
    name = path.name.lower()
    if name.endswith(".graphml"):
        report_progress(progress, f"reading GraphML {path.name}")
        G = ox.load_graphml(path)
    elif name.endswith((".osm", ".osm.bz2", ".xml", ".xml.bz2")):
        report_progress(progress, f"parsing OSM XML {path.name}")
        G = _from_xml(path)
    elif name.endswith(".pbf"):
        report_progress(progress, f"reading OSM PBF {path.name} (pyosmium)")
        with tempfile.TemporaryDirectory(dir=Path(state_dir)) as tmp:
            G = _from_xml(pbf_to_osm_xml(path, Path(tmp) / "roads.osm"))
    else:
        raise ValueError(f"cannot read {path.name}: use .osm, .osm.bz2, .osm.pbf or .graphml")
    if clip is not None:
        report_progress(progress, "clipping to the given area")
        G = ox.truncate.truncate_graph_polygon(G, clip, truncate_by_edge=True)
    return prepare_graph(G, progress=progress)


def _from_xml(path: Path) -> nx.MultiDiGraph:
    import xml.etree.ElementTree as ET

    try:
        return ox.graph_from_xml(path, bidirectional=False, simplify=False, retain_all=True)
    except (ET.ParseError, EOFError, OSError) as exc:
        raise ValueError(f"cannot parse {path.name} as OSM XML ({exc}): is the file complete?") from None
    except ox._errors.InsufficientResponseError:  # osmnx speaks of a "server response" even for a file
        raise ValueError(f"{path.name} holds no OpenStreetMap nodes or ways: check that the extract covers "
                         "the area") from None


#: The largest area a download (``sonae graph fetch``) may cover, km² of its bounding box: a prefecture's scale
#: (Fukushima's 59 municipalities fit in a box of about 21,800 km²). Found: ``--bbox`` took half the planet and
#: would have asked Overpass for it; beyond this a Geofabrik extract and ``sonae graph import`` are the way.
MAX_FETCH_KM2 = 25_000.0


def box_km2(west: float, south: float, east: float, north: float) -> float:
    """The area of a lon/lat box in km², equirectangular at its middle latitude (degrees in, km² out)."""
    middle = math.radians((south + north) / 2)
    return (east - west) * 111.32 * math.cos(middle) * (north - south) * 110.574


def check_fetch_extent(west: float, south: float, east: float, north: float, *, what: str) -> None:
    """Refuse a download whose box exceeds :data:`MAX_FETCH_KM2`, or is no box (degrees, WGS 84).

    Raises
    ------
    ValueError
        Naming ``what`` (the option or place), the box's area and what to do instead; or that the box is
        not one: a coordinate that is not a finite number of degrees within ±180 (lon) and ±90 (lat), west
        east of east, or south north of north (found: such a box has a negative area, :func:`box_km2`, and
        passed the limit whatever its size; a box across the antimeridian is two boxes).
    """
    if not all(math.isfinite(v) for v in (west, south, east, north)) or not (
            -180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        raise ValueError(f"{what} is not a box of degrees: give west,south,east,north with longitudes from -180 to "
                         "180 and latitudes from -90 to 90")
    if west > east or south > north:
        raise ValueError(f"{what} is not a box: west ({west:g}) must not be east of east ({east:g}) and south "
                         f"({south:g}) not north of north ({north:g}); give west,south,east,north in that order")
    area = box_km2(west, south, east, north)
    if area > MAX_FETCH_KM2:
        raise ValueError(
            f"{what} covers about {area:,.0f} km², more than the {MAX_FETCH_KM2:,.0f} km² a download may cover (a "
            "prefecture's scale): fetch one municipality (--municipality CODE or --place) or a smaller --bbox, or "
            "download a Geofabrik extract (e.g. japan/tohoku-latest.osm.pbf) and use `sonae graph import FILE "
            "--bbox W,S,E,N`")


def graph_from_place(
    query: str, *, state_dir: Path | str = ".state", progress: Progress | None = None,
    overpass_url: str | None = None,
) -> nx.MultiDiGraph:
    """Download the streets of a named place (needs internet unless osmnx's cache has it): osmnx's
    ``graph_from_place`` in its two steps (geocode by Nominatim, then :func:`graph_from_polygon`), so that a
    place larger than :data:`MAX_FETCH_KM2` (``日本``) is refused before the streets are asked for.

    Raises
    ------
    ValueError
        When the place's bounding box exceeds :data:`MAX_FETCH_KM2`.
    """
    configure_osmnx(state_dir=state_dir, overpass_url=overpass_url)
    report_progress(progress, f"finding {query}")
    polygon = ox.geocode_to_gdf(query)["geometry"].union_all()
    return graph_from_polygon(polygon, name=f"place {query!r}", state_dir=state_dir, progress=progress,
                              overpass_url=overpass_url)


def graph_from_polygon(
    polygon: Any, *, name: str, state_dir: Path | str = ".state", progress: Progress | None = None,
    overpass_url: str | None = None,
) -> nx.MultiDiGraph:
    """Download the streets inside ``polygon`` (a shapely (Multi)Polygon in lon/lat, WGS 84) from
    ``overpass_url`` (needs internet unless osmnx's cache has it); no geocoder is asked. ``name`` says what
    the area is, in the progress and in a refusal (``municipality 郡山市 (072036)``).

    A municipality's area is its shipped N03 boundary (``sonae graph fetch --municipality``). Overpass is
    asked for the ways in a simpler polygon covering it (:func:`evac.query_area.covering_polygon`: at most
    :data:`~evac.query_area.MAX_QUERY_POINTS` points; found: osmnx sent the outline buffered by 500 m, 5,660
    points for 郡山市, 118,859 characters of the query; now 294), and the nodes inside ``polygon`` itself are
    kept, as osmnx's ``graph_from_polygon`` keeps them (:func:`_download_inside`): the network is the same.

    Raises
    ------
    ValueError
        When the polygon's bounding box exceeds :data:`MAX_FETCH_KM2` (before anything is downloaded).
    """
    check_fetch_extent(*polygon.bounds, what=name)
    configure_osmnx(state_dir=state_dir, overpass_url=overpass_url)
    if not polygon.is_valid:
        raise ValueError(f"the outline of {name} is not a valid polygon ({shapely.is_valid_reason(polygon)})")
    asked = covering_polygon(polygon)
    how = (f"buffered by {asked.margin_m:,.0f} m, then simplified by {asked.margin_m * SIMPLIFY_SHARE:,.0f} m"
           if asked.margin_m else "as it is")
    report_progress(progress, f"outline of {name} for Overpass: {asked.points:,} points sent (the boundary has "
                    f"{asked.boundary_points:,}), covering all of it ({how})"
                    + (f" in {asked.requests} requests" if asked.requests > 1 else ""))
    report_progress(progress, f"downloading streets of {name}")
    _prepare_download()
    G = _download_inside(asked.polygon, polygon)
    return prepare_graph(G, progress=progress)


def _download_inside(query: Any, polygon: Any, network_type: str = "all") -> nx.MultiDiGraph:
    """The ways of ``network_type`` Overpass has in ``query`` (a polygon covering ``polygon``), as a graph
    of the nodes inside ``polygon``: osmnx's ``graph_from_polygon(polygon, network_type=network_type,
    simplify=False, retain_all=True)`` with ``query`` sent in place of ``polygon`` buffered by 500 m.

    osmnx has no way to say what to send, so its own steps are taken here (osmnx 2: download, build,
    truncate to the polygon, count each node's streets in the downloaded graph). Any way with a node inside
    ``polygon`` meets ``query`` too, so the nodes and edges are those osmnx's call gives
    (tests/evac/test_evac_query_area.py compares them)."""
    answers = ox._overpass._download_overpass_network(query, network_type, None)
    downloaded = ox.graph._create_graph(answers, network_type in ox.settings.bidirectional_network_types)
    G = ox.truncate.truncate_graph_polygon(downloaded, polygon, truncate_by_edge=False)
    nx.set_node_attributes(G, ox.stats.count_streets_per_node(downloaded, nodes=G.nodes), name="street_count")
    return G


def graph_from_point(
    lat: float, lon: float, *, dist_m: float = 3000.0, state_dir: Path | str = ".state",
    progress: Progress | None = None, overpass_url: str | None = None,
) -> nx.MultiDiGraph:
    """Download the streets within ``dist_m`` of a point (needs internet unless cached)."""
    configure_osmnx(state_dir=state_dir, overpass_url=overpass_url)
    report_progress(progress, f"downloading streets within {dist_m:.0f} m")
    _prepare_download()
    G = ox.graph_from_point((lat, lon), dist=dist_m, network_type="all", simplify=False, retain_all=True)
    return prepare_graph(G, progress=progress)


def graph_from_bbox(
    west: float, south: float, east: float, north: float, *, state_dir: Path | str = ".state",
    progress: Progress | None = None, overpass_url: str | None = None,
) -> nx.MultiDiGraph:
    """Download the streets in a bounding box (needs internet unless cached), from ``overpass_url``
    (default: osmnx's, the public overpass-api.de).

    Raises
    ------
    ValueError
        When the box exceeds :data:`MAX_FETCH_KM2` (before anything is downloaded).
    """
    check_fetch_extent(west, south, east, north, what=f"--bbox {west:g},{south:g},{east:g},{north:g}")
    configure_osmnx(state_dir=state_dir, overpass_url=overpass_url)
    report_progress(progress, "downloading streets in bounding box")
    _prepare_download()
    G = ox.graph_from_bbox((west, south, east, north), network_type="all", simplify=False, retain_all=True)
    return prepare_graph(G, progress=progress)


def names_of(values: Iterable[Any]) -> str:
    """One display name from an OSM ``name`` attribute that simplification may have made a list: its
    distinct names in sorted order, joined by ``" / "``.

    Sorted because osmnx merges a simplified edge's values through a ``set``, whose order follows
    Python's per-process string hashing: in their own order, two processes building the same network
    named the same street differently (and answered the same position with different bytes)."""
    seen: set[str] = set()
    for v in values:
        seen.update(item for item in _values(v) if item)
    return " / ".join(sorted(seen))


class LabelTable:
    """Distinct labels (street names, highway values) numbered in order of first use; 0 is ``""``.

    The name table of a network's arrays: ``labels[i]`` is the text of number ``i``.
    """

    def __init__(self) -> None:
        self.labels: list[str] = [""]
        self._index: dict[str, int] = {"": 0}

    def index(self, label: str) -> int:
        """The number of ``label``, appended to :attr:`labels` on first use."""
        ix = self._index.get(label)
        if ix is None:
            ix = self._index[label] = len(self.labels)
            self.labels.append(label)
        return ix
