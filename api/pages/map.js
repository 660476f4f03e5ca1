/* Sonae map: draws Sonae's own GeoJSON (roads, areas, points, a route) into an SVG. No tiles, no library.
 * Equirectangular projection around the view's centre (good enough for a town); strokes do not scale. */
"use strict";
(function (global) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 1000;

  function el(name, attrs, parent) {
    const e = document.createElementNS(NS, name);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }

  class SvgMap {
    /* svg: an <svg> element; opts.roads(bounds) -> Promise<FeatureCollection|null> gives road lines;
     * opts.onTap({lon, lat}) is called when the map is clicked (not dragged). */
    constructor(svg, opts) {
      this.svg = svg;
      this.opts = opts || {};
      this.H = Math.round(W * (opts.aspect || 0.75));
      svg.setAttribute("viewBox", `0 0 ${W} ${this.H}`);
      svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
      this.layers = {};
      for (const name of ["roads", "areas", "route", "points", "draw", "me"]) {
        this.layers[name] = el("g", { class: "layer-" + name }, svg);
      }
      this.view = null;
      this.roadKey = "";
      svg.addEventListener("click", (ev) => {
        if (!this.opts.onTap || !this.view) return;
        const p = this.unproject(this.clientToSvg(ev.clientX, ev.clientY));
        this.opts.onTap(p, ev);
      });
    }

    /* bounds: [west, south, east, north]; pads and keeps the aspect ratio */
    setView(b, pad) {
      pad = pad === undefined ? 0.15 : pad;
      let [w, s, e, n] = b;
      const cy = (s + n) / 2;
      const kx = Math.cos((cy * Math.PI) / 180);
      let dx = Math.max((e - w) * kx, 0.0015), dy = Math.max(n - s, 0.0015);
      dx *= 1 + 2 * pad; dy *= 1 + 2 * pad;
      const aspect = this.H / W;
      if (dy / dx > aspect) dx = dy / aspect; else dy = dx * aspect;
      const cx = (w + e) / 2;
      this.view = { cx, cy, kx, scale: W / dx };
      this.redraw();
    }

    zoom(factor) {
      if (!this.view) return;
      this.view.scale *= factor;
      this.redraw();
    }

    pan(fx, fy) {
      if (!this.view) return;
      const v = this.view;
      v.cx += (fx * W) / v.scale / v.kx;
      v.cy -= (fy * this.H) / v.scale;
      this.redraw();
    }

    bounds() {
      const a = this.unproject([0, this.H]), b = this.unproject([W, 0]);
      return [a.lon, a.lat, b.lon, b.lat];
    }

    center() { return this.unproject([W / 2, this.H / 2]); }

    project(lon, lat) {
      const v = this.view;
      return [W / 2 + (lon - v.cx) * v.kx * v.scale, this.H / 2 - (lat - v.cy) * v.scale];
    }

    unproject(p) {
      const v = this.view;
      return { lon: v.cx + (p[0] - W / 2) / v.scale / v.kx, lat: v.cy - (p[1] - this.H / 2) / v.scale };
    }

    clientToSvg(x, y) {
      const pt = this.svg.createSVGPoint();
      pt.x = x; pt.y = y;
      const r = pt.matrixTransform(this.svg.getScreenCTM().inverse());
      return [r.x, r.y];
    }

    /* the page coordinates of a position (for tests and for placing things over the map) */
    toClient(lon, lat) {
      const [x, y] = this.project(lon, lat);
      const pt = this.svg.createSVGPoint();
      pt.x = x; pt.y = y;
      const r = pt.matrixTransform(this.svg.getScreenCTM());
      return { x: r.x, y: r.y };
    }

    pathOf(coords, close) {
      let d = "";
      for (let i = 0; i < coords.length; i++) {
        const [x, y] = this.project(coords[i][0], coords[i][1]);
        d += (i ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      }
      return close ? d + "Z" : d;
    }

    geomPath(g) {
      if (!g) return "";
      switch (g.type) {
        case "LineString": return this.pathOf(g.coordinates, false);
        case "MultiLineString": return g.coordinates.map((c) => this.pathOf(c, false)).join("");
        case "Polygon": return g.coordinates.map((c) => this.pathOf(c, true)).join("");
        case "MultiPolygon": return g.coordinates.map((p) => p.map((c) => this.pathOf(c, true)).join("")).join("");
        default: return "";
      }
    }

    /* Layers are described by the page (lists of {geometry, cls, title, ...}); redraw projects them again. */
    setLayer(name, items) {
      this.layers[name]._items = items;
      this.drawLayer(name);
    }

    drawLayer(name) {
      const g = this.layers[name];
      g.textContent = "";
      if (!this.view) return;
      for (const it of g._items || []) {
        let node;
        if (it.point) {
          const [x, y] = this.project(it.point[0], it.point[1]);
          if (it.shape === "square") {
            const r = it.r || 9;
            node = el("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, class: it.cls || "" }, g);
          } else if (it.shape === "pin") {
            node = el("path", { d: `M${x} ${y}l-11 -22a13 13 0 1 1 22 0z`, class: it.cls || "" }, g);
          } else {
            node = el("circle", { cx: x, cy: y, r: it.r || 8, class: it.cls || "" }, g);
          }
          if (it.label) {
            const t = el("text", { x: x + 12, y: y + 5, class: "map-label " + (it.labelCls || "") }, g);
            t.textContent = it.label;
          }
        } else {
          node = el("path", { d: this.geomPath(it.geometry), class: it.cls || "",
            "vector-effect": "non-scaling-stroke" }, g);
        }
        if (it.id) node.setAttribute("data-id", it.id);
        if (it.title) el("title", {}, node).textContent = it.title;
        if (it.onClick) {
          node.addEventListener("click", (ev) => { ev.stopPropagation(); it.onClick(ev); });
          node.classList.add("clickable");
        }
      }
    }

    redraw() {
      for (const name in this.layers) this.drawLayer(name);
      this.loadRoads();
    }

    async loadRoads() {
      if (!this.opts.roads || !this.view) return;
      const b = this.bounds();
      const key = b.map((v) => v.toFixed(4)).join(",");
      if (key === this.roadKey) return;
      this.roadKey = key;
      try {
        const lines = await this.opts.roads(b);
        if (key !== this.roadKey || !lines) return;
        this.setLayer("roads", lines.map((f) => ({
          geometry: f.geometry,
          cls: "road road-" + (["motorway", "trunk", "primary", "secondary", "tertiary"].indexOf(
            (f.properties.highway || "").split("/")[0]) >= 0 ? "major" : "minor"),
        })));
      } catch (err) {
        this.roadKey = "";
      }
    }
  }

  /* Road lines through a cache of coarse grid cells (0.01°): a request names a cell, never a position. */
  function roadCells(cellDeg, maxCells) {
    const cache = new Map();
    return async function (b) {
      const x0 = Math.floor(b[0] / cellDeg), y0 = Math.floor(b[1] / cellDeg);
      const x1 = Math.ceil(b[2] / cellDeg), y1 = Math.ceil(b[3] / cellDeg);
      if ((x1 - x0) * (y1 - y0) > maxCells) return null;
      const jobs = [];
      for (let x = x0; x < x1; x++) {
        for (let y = y0; y < y1; y++) {
          const k = x + ":" + y;
          if (!cache.has(k)) {
            const bbox = [x * cellDeg, y * cellDeg, (x + 1) * cellDeg, (y + 1) * cellDeg].map((v) => v.toFixed(4));
            cache.set(k, fetch("/api/v1/network.geojson?bbox=" + bbox.join(","))
              .then((r) => (r.ok ? r.json() : { features: [] }))
              .then((d) => d.features)
              .catch(() => { cache.delete(k); return []; }));
          }
          jobs.push(cache.get(k));
        }
      }
      return (await Promise.all(jobs)).flat();
    };
  }

  /* ray casting; ring = [[lon, lat], ...] */
  function inRing(lon, lat, ring) {
    let inside = false;
    for (let i = 0, j = ring.length - 1; i < ring.length; j = i++) {
      const [xi, yi] = ring[i], [xj, yj] = ring[j];
      if ((yi > lat) !== (yj > lat) && lon < ((xj - xi) * (lat - yi)) / (yj - yi) + xi) inside = !inside;
    }
    return inside;
  }

  function inGeometry(lon, lat, g) {
    if (!g) return false;
    const polys = g.type === "Polygon" ? [g.coordinates] : g.type === "MultiPolygon" ? g.coordinates : [];
    return polys.some((p) => inRing(lon, lat, p[0]) && !p.slice(1).some((h) => inRing(lon, lat, h)));
  }

  function distanceM(a, b) {
    const R = 6371008.8, rad = Math.PI / 180;
    const dlat = (b.lat - a.lat) * rad, dlon = (b.lon - a.lon) * rad;
    const h = Math.sin(dlat / 2) ** 2 + Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(dlon / 2) ** 2;
    return 2 * R * Math.asin(Math.sqrt(h));
  }

  function boundsOf(coords) {
    let w = Infinity, s = Infinity, e = -Infinity, n = -Infinity;
    for (const [x, y] of coords) {
      if (x < w) w = x; if (x > e) e = x; if (y < s) s = y; if (y > n) n = y;
    }
    return [w, s, e, n];
  }

  /* Keyboard use of a focusable map wrapper: arrows pan, +/- zoom, Enter picks the centre. */
  function keyboard(wrapper, map, onPick) {
    wrapper.addEventListener("keydown", (ev) => {
      const step = 0.1;
      const keys = {
        ArrowLeft: () => map.pan(-step, 0), ArrowRight: () => map.pan(step, 0),
        ArrowUp: () => map.pan(0, -step), ArrowDown: () => map.pan(0, step),
        "+": () => map.zoom(1.5), "=": () => map.zoom(1.5), "-": () => map.zoom(1 / 1.5),
        Enter: () => onPick && onPick(map.center()), " ": () => onPick && onPick(map.center()),
      };
      const fn = keys[ev.key];
      if (fn) { ev.preventDefault(); fn(); }
    });
  }

  global.Sonae = { SvgMap, roadCells, inGeometry, distanceM, boundsOf, keyboard };
})(window);
