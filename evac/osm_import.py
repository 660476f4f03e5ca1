"""Streamed import of an OpenStreetMap file into :class:`evac.network.RoadNetwork` arrays, without networkx.

The osmnx path (:func:`evac.graph.graph_from_file` then :meth:`RoadNetwork.from_graph`) holds every node
and edge as Python dicts: it peaks at about 9.4 GB for a 1M-node graph, and 3M nodes do not fit in 24 GB
(issue #21). This module reads ``.osm``, ``.osm.bz2`` and ``.osm.pbf`` with pyosmium (libosmium) in one
streamed pass, in which libosmium (C++) keeps every node's location in its index and hands over only the ways
tagged ``highway`` (``KeyFilter``): their node ids and locations and the few tags the profiles and labels
read (interned: each distinct tag combination is stored once). Memory: libosmium's index (16 bytes per
node of the file; ``node_index`` can put it in a file) plus about 100-400 bytes per road node while the
arrays are built; numpy then builds the same arrays as the osmnx path.

The graph is the osmnx path's graph, built the same way (osmnx 2.1 source: ``graph._add_paths``,
``distance.add_edge_lengths``, ``simplification.simplify_graph``):

- a way's consecutive duplicate nodes are dropped; a way is one-way when ``oneway`` is one of
  ``yes|true|1|-1|reverse|T|F`` or it is a roundabout (``junction=roundabout``), reversed for
  ``-1|reverse|T``; other ways give edges in both directions (``bidirectional=False``, as Sonae builds);
- segment lengths are osmnx's great-circle distances (radius 6,371,009 m);
- a node is an *endpoint* when it has no in- or no out-edge, when it does not have exactly two neighbours
  with 2 or 4 incident edges, or when the ways meeting there differ in a tag of
  :data:`evac.graph.SIMPLIFY_DIFFER` (``oneway`` meaning osmnx's one-way flag); every chain of other nodes
  between endpoints becomes one edge, with the chain's geometry and length = sum of its segments;
  merged tags are the set of values along the chain, as in osmnx;
- closed ways without any endpoint stay as their raw segments (``remove_rings=False``), loops through one
  endpoint become self-loop edges;
- ``clip`` keeps what ``osmnx.truncate.truncate_graph_polygon(truncate_by_edge=True)`` keeps: nodes inside
  the polygon or with a neighbour inside it, and the segments between kept nodes.

Where osmnx and this module can differ (documented, tested on the shared extracts):

- when two ways share two consecutive nodes *inside* a chain, osmnx warns and merges the first of the
  parallel segments; here the first is taken too (file order), so the result only differs if osmnx's
  networkx insertion order differed from the file's;
- a way that refers to a node missing from the file: osmnx stops ("Some edges missing nodes"); here the
  segments touching the missing node are left out and their count is reported;
- a street name merged from several differently named ways is joined in sorted order (osmnx keeps a
  Python ``set``, whose order varies from run to run).
"""

from __future__ import annotations

import math
import time
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from evac.graph import (
    EXTRA_WAY_TAGS,
    MIN_EDGE_TIME_S,
    PROFILE_NAMES,
    PROFILES,
    SIMPLIFY_DIFFER,
    LabelTable,
    Progress,
    names_of,
    report_progress,
)

#: Every way tag the profiles (:meth:`evac.graph.Profile.speeds`), labels and simplification read.
WAY_KEYS: tuple[str, ...] = tuple(dict.fromkeys(
    ("highway", "oneway", "junction", "name", "ref", "access", "maxspeed", *SIMPLIFY_DIFFER, *EXTRA_WAY_TAGS)))

#: osmnx ``graph._add_paths``: ``oneway`` values meaning one-way, and those meaning against the node order.
_ONEWAY_VALUES = frozenset({"yes", "true", "1", "-1", "reverse", "T", "F"})
_REVERSED_VALUES = frozenset({"-1", "reverse", "T"})
#: osmnx ``distance.EARTH_RADIUS_M``.
EARTH_RADIUS_M = 6_371_009

#: File endings this module reads (libosmium detects the format from them).
STREAM_SUFFIXES = (".osm", ".osm.bz2", ".xml", ".xml.bz2", ".osm.pbf", ".pbf")

#: ``evac.network.load_network`` streams OSM files from this size on (smaller ones keep the osmnx path, whose
#: graph the tests use as the oracle); ``sonae graph import`` streams every OSM file unless ``--via osmnx``.
STREAM_FROM_BYTES = 16 * 1024 * 1024

_PROGRESS_EVERY_S = 5.0


class _Ticker:
    """Progress lines at most every few seconds while a pass runs (the ``progress`` convention of
    :mod:`evac.graph`: the message goes to the log and to the caller's callback)."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.last = time.monotonic()

    def tick(self, message: str) -> None:
        now = time.monotonic()
        if now - self.last >= _PROGRESS_EVERY_S:
            self.last = now
            report_progress(self.progress, message)


def _great_circle(lat1: np.ndarray, lon1: np.ndarray, lat2: np.ndarray, lon2: np.ndarray) -> np.ndarray:
    """osmnx ``distance.great_circle`` (same operations, so the same floats), metres."""
    y1 = np.deg2rad(lat1)
    y2 = np.deg2rad(lat2)
    dy = y2 - y1
    x1 = np.deg2rad(lon1)
    x2 = np.deg2rad(lon2)
    dx = x2 - x1
    h = np.sin(dy / 2) ** 2 + np.cos(y1) * np.cos(y2) * np.sin(dx / 2) ** 2
    h = np.minimum(1, h)
    arc = 2 * np.arcsin(np.sqrt(h))
    dist = arc * EARTH_RADIUS_M
    dist[np.isnan(dist)] = 0
    return np.asarray(dist, dtype=np.float64)


def _read_ways(path: Path, ticker: _Ticker, node_index: str) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, str]], int]:
    """One pass: every ``highway`` way's node ids and locations, concatenated (``refs`` int64, ``lon``/``lat``
    float64), the ways' offsets into them (int64, W+1), each way's tag-set index (int32), the tag sets, and
    how many references had no location. Node locations come from libosmium's ``node_index`` (C++)."""
    import osmium

    refs = array("q")
    lons = array("d")
    lats = array("d")
    offsets = array("q", [0])
    tagset = array("i")
    sets: list[dict[str, str]] = []
    set_ix: dict[tuple[tuple[str, str], ...], int] = {}
    keys = frozenset(WAY_KEYS)
    missing = 0
    reader = (osmium.FileProcessor(str(path), osmium.osm.NODE | osmium.osm.WAY).with_locations(node_index)
              .with_filter(osmium.filter.EntityFilter(osmium.osm.WAY)).with_filter(osmium.filter.KeyFilter("highway")))
    for n, way in enumerate(reader):
        if not isinstance(way, osmium.osm.Way):
            continue
        prev = None
        for nd in way.nodes:
            ref = nd.ref
            if ref == prev:  # osmnx drops consecutive duplicates (graph._convert_path)
                continue
            prev = ref
            loc = nd.location
            if loc.valid():
                lons.append(loc.lon)
                lats.append(loc.lat)
            else:
                lons.append(math.nan)
                lats.append(math.nan)
                missing += 1
            refs.append(ref)
        offsets.append(len(refs))
        tags = tuple(sorted((t.k, t.v) for t in way.tags if t.k in keys))
        ix = set_ix.get(tags)
        if ix is None:
            ix = set_ix[tags] = len(sets)
            sets.append(dict(tags))
        tagset.append(ix)
        if n % 4096 == 0:
            ticker.tick(f"reading ways: {n:,} highway ways, {len(refs):,} node references")
    return (np.frombuffer(refs, dtype=np.int64), np.frombuffer(lons, dtype=np.float64),
            np.frombuffer(lats, dtype=np.float64), np.frombuffer(offsets, dtype=np.int64),
            np.frombuffer(tagset, dtype=np.int32), sets, missing)


def _unique_sorted(a: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (numpy 2.4's hashing ``unique`` takes seconds per 10^5 structured ids)."""
    s = np.sort(a)
    if s.size:
        s = s[np.concatenate([[True], s[1:] != s[:-1]])]
    return s


def _merged(sets: Iterable[dict[str, str]]) -> dict[str, Any]:
    """osmnx's merge of a chain's attributes: one value where all agree, else the list of distinct ones."""
    values: dict[str, list[str]] = {}
    for tags in sets:
        for k, v in tags.items():
            values.setdefault(k, []).append(v)
    return {k: vs[0] if len(set(vs)) == 1 else sorted(set(vs)) for k, vs in values.items()}


def network_arrays(
    path: Path | str, *, clip: Any = None, progress: Progress | None = None, node_index: str = "sparse_mem_array",
) -> dict[str, Any]:
    """The arrays of a :class:`evac.network.RoadNetwork` from ``.osm``, ``.osm.bz2`` or ``.osm.pbf``, streamed
    (:meth:`evac.network.RoadNetwork.from_osm_file` makes the network from them).

    Parameters
    ----------
    path
        The OpenStreetMap file.
    clip
        Optional shapely (Multi)Polygon in lon/lat: keep roads inside it (osmnx ``truncate_by_edge``).
    progress
        Called with one line per step and every few seconds while reading.
    node_index
        libosmium's node location index (``osmium.index.map_types()``): ``sparse_mem_array`` (default,
        16 bytes per node of the file), or ``sparse_file_array,PATH`` to keep it in a file for very large
        inputs. Not ``flex_mem``/``dense_*``: they are sized by the largest node id (OSM ids reach 1.3e10),
        so an extract's scattered ids touch most pages of a 100 GB array.

    Returns
    -------
    dict
        ``RoadNetwork`` fields by name except ``epsg``: the same nodes, edges, lengths, geometry, labels and
        profile times as the osmnx path. Node ids, lon, lat: ``(N,)``; edges ``(E,)``; ``coords`` ``(M, 2)``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file cannot be read, or holds no highway ways (inside ``clip``).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"road data {path} does not exist: give the path of an .osm(.bz2) or .osm.pbf file")
    ticker = _Ticker(progress)
    kind = "OSM PBF" if path.name.lower().endswith(".pbf") else "OSM XML"
    report_progress(progress, f"reading highway ways of {path.name} ({kind}, streamed with pyosmium)")
    try:
        refs, lon, lat, offsets, way_set, sets, missing = _read_ways(path, ticker, node_index)
    except RuntimeError as exc:
        raise ValueError(f"cannot read {path.name} as {kind} ({exc}): is the file complete?") from None
    if refs.size == 0:
        raise ValueError(f"{path.name} holds no highway ways: check that the extract covers streets")
    if missing:
        report_progress(progress, f"{missing:,} node references are not in the file: their segments are left out")
    # the nodes: sorted unique ids with their locations
    order = np.argsort(refs, kind="stable")
    sorted_refs = refs[order]
    first = np.concatenate([[True], sorted_refs[1:] != sorted_refs[:-1]])
    node_id = sorted_refs[first]
    node_lon, node_lat = lon[order[first]], lat[order[first]]
    del order, sorted_refs, first, lon, lat
    report_progress(progress, f"{offsets.size - 1:,} highway ways use {node_id.size:,} nodes")
    return _build(refs, offsets, way_set, sets, node_id, node_lon, node_lat, clip=clip, progress=progress,
                  name=path.name)


def _build(refs: np.ndarray, offsets: np.ndarray, way_set: np.ndarray, sets: list[dict[str, str]],
           node_id: np.ndarray, node_lon: np.ndarray, node_lat: np.ndarray, *, clip: Any,
           progress: Progress | None, name: str) -> dict[str, Any]:
    """Raw directed segments -> endpoints -> chains -> arrays (see the module docstring)."""
    n_nodes = node_id.size
    # -- raw directed segments, in osmnx's insertion order ---------------------------------------------
    n_sets = len(sets)
    set_oneway = np.array([t.get("oneway") in _ONEWAY_VALUES or t.get("junction") == "roundabout"
                           for t in sets], dtype=bool)
    set_reversed = np.array([t.get("oneway") in _REVERSED_VALUES for t in sets], dtype=bool) & set_oneway
    idx = np.searchsorted(node_id, refs).astype(np.int32)
    present = ~np.isnan(node_lon[idx])
    n_ways = offsets.size - 1
    seg_way = np.repeat(np.arange(n_ways, dtype=np.int32), np.diff(offsets))  # way of each ref
    last = np.zeros(refs.size, bool)
    last[offsets[1:] - 1] = True
    seg = np.flatnonzero(~last)  # a segment runs from ref i to ref i+1 of the same way
    del last
    seg = seg[present[seg] & present[seg + 1]]
    del present
    sw = seg_way[seg]
    one = set_oneway[way_set[sw]]
    rev = set_reversed[way_set[sw]]
    a, b = idx[seg], idx[seg + 1]
    fwd_tail = np.where(rev, b, a)
    fwd_head = np.where(rev, a, b)
    # insertion order: per way its own direction (reversed ways in reversed order), then the other direction
    rank_in_way = np.where(rev, -seg, seg)
    two = ~one
    tail = np.concatenate([fwd_tail, fwd_head[two]])
    head = np.concatenate([fwd_head, fwd_tail[two]])
    way = np.concatenate([sw, sw[two]])
    order_key = np.concatenate([sw.astype(np.int64) * 2, sw[two].astype(np.int64) * 2 + 1])
    order_sub = np.concatenate([rank_in_way, rank_in_way[two]])
    del fwd_tail, fwd_head, rank_in_way, two, sw, one, rev, a, b, seg, seg_way, idx
    ins = np.lexsort((order_sub, order_key))
    tail, head, way = tail[ins], head[ins], way[ins]
    del ins, order_key, order_sub
    if clip is not None:
        tail, head, way = _clip(clip, tail, head, way, node_lon, node_lat, n_nodes)
    m = tail.size
    if m == 0:
        raise ValueError(f"{name} holds no highway segments" + (" inside the given area" if clip is not None else ""))
    report_progress(progress, f"simplifying {m:,} directed segments")
    seg_len = _great_circle(node_lat[tail], node_lon[tail], node_lat[head], node_lon[head])

    # -- endpoints (osmnx simplification._is_endpoint) ----------------------------------------------------
    indeg = np.bincount(head, minlength=n_nodes)
    outdeg = np.bincount(tail, minlength=n_nodes)
    deg = indeg + outdeg
    self_loop = np.zeros(n_nodes, bool)
    self_loop[tail[tail == head]] = True
    pair_key = _unique_sorted(np.concatenate([tail.astype(np.int64) * n_nodes + head, head.astype(np.int64) * n_nodes + tail]))
    pk_node = (pair_key // n_nodes).astype(np.int32)
    n_nb = np.bincount(pk_node, minlength=n_nodes)
    first_nb = np.searchsorted(pk_node, np.arange(n_nodes, dtype=np.int32))  # start of each node's neighbours
    nb = (pair_key % n_nodes).astype(np.int32)
    del pair_key, pk_node
    # the class of the tags that must not differ along a simplified edge (osmnx's oneway flag, not the tag)
    diff_keys = [k for k in SIMPLIFY_DIFFER if k != "oneway"]
    cls_of: dict[tuple[Any, ...], int] = {}
    set_cls = np.array([cls_of.setdefault((bool(set_oneway[i]), *(sets[i].get(k) for k in diff_keys)), len(cls_of))
                        for i in range(n_sets)], dtype=np.int64)
    ecls = set_cls[way_set[way]]
    nc = _unique_sorted(np.concatenate([tail.astype(np.int64) * len(cls_of) + ecls, head.astype(np.int64) * len(cls_of) + ecls]))
    n_cls = np.bincount((nc // len(cls_of)).astype(np.int64), minlength=n_nodes)
    del nc, ecls
    endpoint = ((indeg == 0) | (outdeg == 0) | ~((n_nb == 2) & ((deg == 2) | (deg == 4))) | self_loop | (n_cls > 1))
    del indeg, outdeg, self_loop, n_cls

    # -- chains (simplification._build_path): from an endpoint, through non-endpoints, to an endpoint -------
    # directed segments sorted by (tail, head); ties keep insertion order, so the first is osmnx's key 0
    by_th = np.lexsort((head, tail))
    th_key = tail[by_th].astype(np.int64) * n_nodes + head[by_th]
    # next segment after s = (t -> h), h not an endpoint: h -> the neighbour of h that is not t
    inner = ~endpoint[head]
    h = head[inner]
    nb0 = nb[first_nb[h]]
    nb1 = nb[np.minimum(first_nb[h] + 1, nb.size - 1)]
    other = np.where(nb0 == tail[inner], nb1, nb0)
    want = h.astype(np.int64) * n_nodes + other
    j = np.searchsorted(th_key, want)
    j_ok = j < th_key.size
    j_ok[j_ok] = th_key[j[j_ok]] == want[j_ok]
    nxt = np.full(m, -1, np.int64)
    nxt[np.flatnonzero(inner)[j_ok]] = by_th[j[j_ok]]
    del h, nb0, nb1, other, want, j, j_ok, nb, first_nb
    # chain starts: the first segment of each (endpoint -> non-endpoint) pair
    s_sorted = endpoint[tail[by_th]] & ~endpoint[head[by_th]]
    first_of_pair = np.ones(m, bool)
    first_of_pair[1:] = th_key[1:] != th_key[:-1]
    starts = by_th[s_sorted & first_of_pair]
    del by_th, th_key, s_sorted, first_of_pair
    chain_parts: list[np.ndarray] = []
    chain_ids: list[np.ndarray] = []
    cur = starts.astype(np.int64)
    cid = np.arange(starts.size, dtype=np.int64)
    steps = 0
    while cur.size:
        chain_parts.append(cur)
        chain_ids.append(cid)
        go = ~endpoint[head[cur]]
        cur, cid = nxt[cur[go]], cid[go]
        ok = cur >= 0
        cur, cid = cur[ok], cid[ok]
        steps += 1
        if steps > m:
            raise ValueError(f"{name}: simplification did not terminate (a cycle of non-endpoints)")
    del nxt
    c_seg = np.concatenate(chain_parts) if chain_parts else np.empty(0, np.int64)
    c_id = np.concatenate(chain_ids) if chain_ids else np.empty(0, np.int64)
    del chain_parts, chain_ids
    o = np.argsort(c_id, kind="stable")
    c_seg, c_id = c_seg[o], c_id[o]
    del o
    n_chains = starts.size
    c_start = np.searchsorted(c_id, np.arange(n_chains + 1))
    # interior nodes: heads of every chain segment but each chain's last
    is_last = np.zeros(c_seg.size, bool)
    if n_chains:
        is_last[c_start[1:] - 1] = True
    interior = np.zeros(n_nodes, bool)
    interior[head[c_seg[~is_last]]] = True
    # raw segments that stay: not part of a chain, not touching a removed node (osmnx remove_nodes_from)
    in_chain = np.zeros(m, bool)
    in_chain[c_seg] = True
    keep = np.flatnonzero(~in_chain & ~interior[tail] & ~interior[head])
    del in_chain
    if n_chains:  # a chain that stopped at a node another chain passes through goes with that node (osmnx)
        lengths_c = np.diff(c_start)
        keep_chain = ~interior[tail[c_seg[c_start[:-1]]]] & ~interior[head[c_seg[c_start[1:] - 1]]]
        c_seg = c_seg[np.repeat(keep_chain, lengths_c)]
        c_start = np.concatenate([[0], np.cumsum(lengths_c[keep_chain])])
        n_chains = int(keep_chain.sum())
        del lengths_c, keep_chain

    # -- edges: kept raw segments, then merged chains -----------------------------------------------------
    ne = keep.size + n_chains
    eu = np.concatenate([tail[keep], tail[c_seg[c_start[:-1]]] if n_chains else np.empty(0, np.int32)])
    ev = np.concatenate([head[keep], head[c_seg[c_start[1:] - 1]] if n_chains else np.empty(0, np.int32)])
    length = np.concatenate([seg_len[keep], np.add.reduceat(seg_len[c_seg], c_start[:-1]) if n_chains
                             else np.empty(0)])
    # tag sets per edge: one set, or (chains over several ways' tag sets) the merged attributes
    c_set = way_set[way[c_seg]]
    e_set = np.concatenate([way_set[way[keep]], c_set[c_start[:-1]] if n_chains else np.empty(0, np.int32)])
    e_sig = e_set.astype(np.int64)
    sig_data: list[dict[str, Any]] = [dict(t, oneway=bool(set_oneway[i])) for i, t in enumerate(sets)]
    if n_chains:
        mixed = np.flatnonzero(np.minimum.reduceat(c_set, c_start[:-1]) != np.maximum.reduceat(c_set, c_start[:-1]))
        sig_ix: dict[tuple[int, ...], int] = {}
        for c in mixed.tolist():
            members = tuple(sorted(set(c_set[c_start[c]:c_start[c + 1]].tolist())))
            s = sig_ix.get(members)
            if s is None:
                s = sig_ix[members] = len(sig_data)
                data = _merged(sets[i] for i in members)
                data["oneway"] = bool(set_oneway[members[0]])  # constant along a chain (SIMPLIFY_DIFFER)
                sig_data.append(data)
            e_sig[keep.size + c] = s
    del c_set, seg_len
    # geometry: raw segments have their two nodes; a chain has its tail and every segment's head
    counts = np.concatenate([np.full(keep.size, 2, np.int64), np.diff(c_start) + 1])
    coord_offsets = np.zeros(ne + 1, np.int64)
    np.cumsum(counts, out=coord_offsets[1:])
    cnode = np.empty(int(coord_offsets[-1]), np.int32)
    raw_at = coord_offsets[:keep.size]
    cnode[raw_at] = tail[keep]
    cnode[raw_at + 1] = head[keep]
    if n_chains:
        ch_at = coord_offsets[keep.size:-1]
        cnode[ch_at] = eu[keep.size:]
        # chain c's k-th segment head goes to ch_at[c] + 1 + k
        k_in = np.arange(c_seg.size) - np.repeat(c_start[:-1], np.diff(c_start))
        cnode[np.repeat(ch_at, np.diff(c_start)) + 1 + k_in] = head[c_seg]
        del k_in
    del tail, head, way, keep, c_seg, c_id

    # -- nodes: those edges use, renumbered ------------------------------------------------------------
    used = np.zeros(n_nodes, bool)
    used[eu] = True
    used[ev] = True
    new_ix = np.cumsum(used) - 1
    osmids = node_id[used]
    lon, lat = node_lon[used], node_lat[used]
    coords = np.column_stack([node_lon[cnode], node_lat[cnode]])
    del cnode
    eu32 = new_ix[eu].astype(np.int32)
    ev32 = new_ix[ev].astype(np.int32)

    # -- labels and profile times, once per tag signature -------------------------------------------------
    labels = LabelTable()
    names, intern = labels.labels, labels.index

    n_sig = len(sig_data)
    sig_name = np.empty(n_sig, np.int32)
    sig_hw = np.empty(n_sig, np.int32)
    sig_speed = {p: (np.empty(n_sig), np.empty(n_sig)) for p in PROFILE_NAMES}
    for s, data in enumerate(sig_data):
        label = names_of([data.get("name")]) or names_of([data.get("ref")])
        sig_name[s] = intern(label) if label else -1
        sig_hw[s] = intern(names_of([data.get("highway")]))
        for p in PROFILE_NAMES:
            sig_speed[p][0][s], sig_speed[p][1][s] = PROFILES[p].speeds(data)
    times = {}
    with np.errstate(divide="ignore"):
        for p in PROFILE_NAMES:
            pair = []
            for sp in sig_speed[p]:
                v = sp[e_sig]
                pair.append(np.where(v > 0, np.maximum(length / np.where(v > 0, v, 1.0), MIN_EDGE_TIME_S), math.inf))
            times[p] = (pair[0], pair[1])
    report_progress(progress, f"road graph ready: {osmids.size:,} nodes, {ne:,} edges")
    return {"node_osmid": osmids, "node_lon": lon, "node_lat": lat, "edge_u": eu32, "edge_v": ev32,
            "edge_length": length, "edge_name": sig_name[e_sig], "edge_highway": sig_hw[e_sig],
            "coord_offsets": coord_offsets, "coords": coords, "names": names, "times": times}


def _clip(clip: Any, tail: np.ndarray, head: np.ndarray, way: np.ndarray, lon: np.ndarray, lat: np.ndarray,
          n_nodes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """osmnx ``truncate_graph_polygon(truncate_by_edge=True)``: keep nodes inside ``clip`` or next to one."""
    import shapely

    used = np.zeros(n_nodes, bool)
    used[tail] = True
    used[head] = True
    inside = np.zeros(n_nodes, bool)
    cand = np.flatnonzero(used)
    w, s, e, n = clip.bounds
    cand = cand[(lon[cand] >= w) & (lon[cand] <= e) & (lat[cand] >= s) & (lat[cand] <= n)]
    shapely.prepare(clip)
    inside[cand] = shapely.intersects_xy(clip, lon[cand], lat[cand])
    if not inside.any():
        raise ValueError("no road node lies inside the given area")
    kept = inside.copy()
    kept[tail[inside[head]]] = True
    kept[head[inside[tail]]] = True
    ok = kept[tail] & kept[head]
    return tail[ok], head[ok], way[ok]
