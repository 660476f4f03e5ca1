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
     * opts.onTap({lon, lat}) is called when the map is clicked (not dragged); opts.onView(bounds) after
     * each change of view. */
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
      // labels of every layer share one collision list, so a redraw of one layer redraws them all
      if (items.some((it) => it.label) || this.layers[name].querySelector("text")) this.redraw();
      else this.drawLayer(name);
    }

    /* SVG units per CSS pixel: labels are sized for the screen (about 15 px), not for the viewBox */
    unitsPerPx() {
      const w = this.svg.getBoundingClientRect().width;
      return w > 0 ? W / w : 1;
    }

    drawLayer(name) {
      const g = this.layers[name];
      g.textContent = "";
      if (!this.view) return;
      const items = g._items || [];
      const k = this.unitsPerPx();
      const font = 15 * k, margin = 30 * k;
      // Labels never overlap and never leave the map: higher labelPriority first, then in order; a label
      // that would cross the right edge goes to the left of its point; one that fits nowhere is left out
      // (the point keeps its <title>). Points outside the view are not drawn at all.
      const placed = this.labelBoxes || [];
      const order = items.map((it, i) => i).filter((i) => items[i].label)
        .sort((a, b) => (items[b].labelPriority || 0) - (items[a].labelPriority || 0) || a - b);
      const labelAt = new Map();
      for (const i of order) {
        const it = items[i];
        const [x, y] = this.project(it.point[0], it.point[1]);
        const w = textWidth(it.label) * font, h = font * 1.2;
        const gap = 0.8 * font;
        for (const side of [1, -1]) {
          const x0 = side > 0 ? x + gap : x - gap - w;
          const box = [x0, y - h / 2, x0 + w, y + h / 2];
          if (box[0] < 2 || box[2] > W - 2 || box[1] < 2 || box[3] > this.H - 2) continue;
          if (placed.some((b) => box[0] < b[2] && box[2] > b[0] && box[1] < b[3] && box[3] > b[1])) continue;
          placed.push(box);
          labelAt.set(i, { x: side > 0 ? x + gap : x - gap, y: y + font * 0.35, anchor: side > 0 ? "start" : "end" });
          break;
        }
      }
      items.forEach((it, i) => {
        let node;
        if (it.point) {
          const [x, y] = this.project(it.point[0], it.point[1]);
          if (x < -margin || x > W + margin || y < -margin || y > this.H + margin) return;
          if (it.shape === "square") {
            const r = it.r || 9;
            node = el("rect", { x: x - r, y: y - r, width: 2 * r, height: 2 * r, class: it.cls || "" }, g);
          } else if (it.shape === "pin") {
            node = el("path", { d: `M${x} ${y}l-11 -22a13 13 0 1 1 22 0z`, class: it.cls || "" }, g);
          } else {
            node = el("circle", { cx: x, cy: y, r: it.r || 8, class: it.cls || "" }, g);
          }
          const at = labelAt.get(i);
          if (at) {
            const t = el("text", { x: at.x, y: at.y, "text-anchor": at.anchor, "font-size": font.toFixed(1),
              class: "map-label " + (it.labelCls || "") }, g);
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
      });
    }

    redraw() {
      this.labelBoxes = [];
      for (const name in this.layers) this.drawLayer(name);
      this.loadRoads();
      if (this.opts.onView && this.view) this.opts.onView(this.bounds());
    }

    async loadRoads() {
      if (!this.opts.roads || !this.view) return;
      const b = this.bounds();
      const key = b.map((v) => v.toFixed(4)).join(",");
      if (key === this.roadKey) return;
      this.roadKey = key;
      clearTimeout(this.roadRetry);  // (a move of the view asks for its own roads)
      this.roadRetry = null;
      try {
        const lines = await this.opts.roads(b);
        if (key !== this.roadKey || !lines) return;
        this.setLayer("roads", lines.map((f) => ({
          geometry: f.geometry,
          cls: "road road-" + (["motorway", "trunk", "primary", "secondary", "tertiary"].indexOf(
            (f.properties.highway || "").split("/")[0]) >= 0 ? "major" : "minor"),
        })));
        // some cells not answered (roadCells): the lines drawn are those answered; the rest is asked for again,
        // once, after the wait they were given, never sooner than a backoff doubling from 1 s to a minute with
        // each try, a little later at random (pages told the same wait spread out)
        this.roadTries = lines.retryMs ? (this.roadTries || 0) + 1 : 0;
        if (lines.retryMs) {
          const wait = Math.max(lines.retryMs, 1000 * 2 ** Math.min(6, this.roadTries - 1));
          this.roadRetry = setTimeout(() => {
            this.roadRetry = null;
            if (this.roadKey === key) { this.roadKey = ""; this.loadRoads(); }
          }, Math.min(1000 * ROAD_RETRY_MAX_S, wait * (1 + 0.2 * Math.random())));
        }
      } catch (err) {
        this.roadKey = "";
      }
    }
  }

  /* the width of a label in font sizes: CJK and full-width characters 1, others about 0.6 */
  function textWidth(s) {
    let w = 0;
    for (const ch of s) w += /[\u1100-\u115f\u2e80-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6]/.test(ch) ? 1 : 0.62;
    return w;
  }

  /* Alert conditions (alerting/rules.py CONDITIONS) in ja, en and やさしい日本語: never show the raw key */
  const CONDITIONS = {
    river_level: ["水位", "River level", "かわの みずの たかさ"],
    river_level_unconfirmed: ["水位（未確認）", "River level (unconfirmed)", "かわの みずの たかさ（まだ たしかでは ない）"],
    low_battery: ["電池残量低下", "Low battery", "でんちが すくない"],
    fault: ["機器の故障", "Device fault", "きかいの こしょう"],
    silent: ["観測途絶", "Gauge silent", "はかる きかいから じょうほうが こない"],
    evacuation_order: ["避難情報", "Evacuation order", "ひなんの じょうほう"],
  };
  const LANG_INDEX = { ja: 0, en: 1, "ja-easy": 2 };
  function conditionName(cond, lang) {
    const names = CONDITIONS[cond];
    return names ? names[LANG_INDEX[lang] || 0] : lang === "en" ? "Other alert" : lang === "ja-easy" ? "ほかの けいほう" : "その他の警報";
  }

  /* Road lines through a cache of coarse grid cells (0.01°): a request names a cell, never a position.
   * A cell the server did not answer (a 429: a per-client limit, behind a busy address; a 5xx; no network) is not
   * cached: the lines returned then carry ``retryMs``, when to ask again (its Retry-After, 1 s to 60 s, else 10 s),
   * and SvgMap.loadRoads asks again then (found: cached as a cell with no roads, it stayed empty for the session).
   * Another 4xx is an answer: no roads there. */
  const ROAD_RETRY_MAX_S = 60, ROAD_RETRY_DEFAULT_S = 10;
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
              .then((r) => {
                if (r.ok) return r.json().then((d) => ({ features: d.features }));
                if (r.status !== 429 && r.status < 500) return { features: [] };
                cache.delete(k);
                const ra = String(r.headers.get("Retry-After") || "").trim();
                const s = /^\d+$/.test(ra) ? Math.max(1, Number(ra)) : ROAD_RETRY_DEFAULT_S;
                return { features: [], retryMs: 1000 * Math.min(ROAD_RETRY_MAX_S, s) };
              })
              .catch(() => { cache.delete(k); return { features: [], retryMs: 1000 * ROAD_RETRY_DEFAULT_S }; }));
          }
          jobs.push(cache.get(k));
        }
      }
      const cells = await Promise.all(jobs);
      const lines = cells.flatMap((c) => c.features);
      const waits = cells.filter((c) => c.retryMs).map((c) => c.retryMs);
      if (waits.length) lines.retryMs = Math.max(...waits);
      return lines;
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

  global.Sonae = { SvgMap, roadCells, textWidth, CONDITIONS, conditionName, inGeometry, distanceM, boundsOf, keyboard };
})(window);
