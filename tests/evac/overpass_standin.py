"""A local Overpass API over a real OSM extract, so `sonae graph fetch` runs offline in tests.

It answers the one query form osmnx 2 sends for a road network,
``[out:json]…;(way[tag filters](poly:'lat lon …');>;);out;``, as Overpass does: the ways whose tags pass
every filter (``["k"]`` present, ``["k"="v"]``, ``["k"~"re"]``, ``["k"!~"re"]`` (absent or not matching))
and whose line meets the polygon, then all their nodes; and ``/status`` with free slots. Anything else
is a 400, so a change in what osmnx asks shows up as a failing test, not as a silently wrong graph.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import osmium
import shapely

QUERY = re.compile(r"^(?P<settings>(?:\[[^\]]*\])*);\(way(?P<filters>(?:\[[^\]]*\])*)\(poly:'(?P<poly>[-0-9. ]+)'\);>;\);out;$")
FILTER = re.compile(r'\["(?P<key>[^"]+)"(?:(?P<op>!~|~|!=|=)"(?P<value>[^"]*)")?\]')


class Extract:
    """The nodes and ways of an OSM file, in memory."""

    def __init__(self, path: Path) -> None:
        self.nodes: dict[int, tuple[float, float, dict[str, str]]] = {}
        self.ways: list[tuple[int, list[int], dict[str, str]]] = []
        for obj in osmium.FileProcessor(str(path)):
            if isinstance(obj, osmium.osm.Node) and obj.location.valid():
                self.nodes[obj.id] = (obj.location.lat, obj.location.lon, dict(obj.tags))
            elif isinstance(obj, osmium.osm.Way):
                self.ways.append((obj.id, [n.ref for n in obj.nodes], dict(obj.tags)))

    def answer(self, query: str) -> dict[str, Any] | None:
        """The Overpass JSON answer to ``query``, or ``None`` for a query form it does not know."""
        m = QUERY.match(query.strip())
        if m is None:
            return None
        conditions = [(f["key"], f["op"], f["value"]) for f in FILTER.finditer(m["filters"])]
        if "".join(f.group(0) for f in FILTER.finditer(m["filters"])) != m["filters"]:
            return None  # a filter form this stand-in does not understand
        numbers = [float(v) for v in m["poly"].split()]
        polygon = shapely.Polygon([(lon, lat) for lat, lon in zip(numbers[::2], numbers[1::2], strict=True)])
        shapely.prepare(polygon)
        elements: list[dict[str, Any]] = []
        wanted: set[int] = set()
        for way_id, refs, tags in self.ways:
            if not all(_passes(tags, *c) for c in conditions):
                continue
            points = [(self.nodes[r][1], self.nodes[r][0]) for r in refs if r in self.nodes]
            if not points:
                continue
            line = shapely.LineString(points) if len(points) > 1 else shapely.Point(points[0])
            if not polygon.intersects(line):
                continue
            elements.append({"type": "way", "id": way_id, "nodes": refs, "tags": tags})
            wanted.update(refs)
        for node_id in sorted(wanted):
            if node_id in self.nodes:
                lat, lon, tags = self.nodes[node_id]
                elements.append({"type": "node", "id": node_id, "lat": lat, "lon": lon, **({"tags": tags} if tags else {})})
        return {"version": 0.6, "generator": "sonae test stand-in", "elements": elements}


def _passes(tags: dict[str, str], key: str, op: str | None, value: str | None) -> bool:
    have = tags.get(key)
    if op is None:
        return have is not None
    if op == "=":
        return have == value
    if op == "!=":
        return have != value
    found = have is not None and re.search(value or "", have) is not None
    return found if op == "~" else not found


@contextmanager
def overpass_standin(path: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``path`` as an Overpass API on 127.0.0.1: yields (base URL ending in ``/api``, the list of
    queries answered so far)."""
    extract = Extract(path)
    queries: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/api/status":
                text = ("Connected as: 1\nCurrent time: 2026-11-29T00:00:00Z\nAnnouncement: \n"
                        "Rate limit: 2\n2 slots available now.\nCurrently running queries (pid, space limit, "
                        "time limit, start time):\n")
                self._send(200, text.encode(), "text/plain")
            else:
                self._send(404, b"not found", "text/plain")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(length).decode())
            query = (form.get("data") or [""])[0]
            answer = extract.answer(query) if self.path.rstrip("/") == "/api/interpreter" else None
            if answer is None:
                self._send(400, f"stand-in cannot answer {query[:200]!r}".encode(), "text/plain")
                return
            queries.append(query)
            self._send(200, json.dumps(answer).encode(), "application/json")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/api", queries
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
