/* Sonae staff console: alerts with acknowledge, a map of stations / hazard areas / shelters, station charts,
 * evacuation orders, hazard areas drawn on the map, shelter occupancy. The bearer token lives only in
 * this page's memory (a reload asks to log in again). */
"use strict";
(function () {
  const S = window.Sonae;
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 15000;
  const LEVEL_NAMES = { 1: "待機 Standby", 2: "注意 Caution", 3: "高齢者等避難 L3", 4: "避難指示 L4", 5: "緊急安全確保 L5" };
  const HAZARDS = ["flood", "landslide", "storm_surge", "earthquake", "tsunami", "large_fire", "inland_flooding", "volcano"];
  const HAZ_JA = { flood: "洪水", landslide: "土砂災害", storm_surge: "高潮", earthquake: "地震", tsunami: "津波",
    large_fire: "大規模火災", inland_flooding: "内水氾濫", volcano: "火山" };
  const TH_NAMES = { standby: "水防団待機", caution: "氾濫注意", evacuation: "避難判断", danger: "氾濫危険",
    obs_start: "観測開始", crisis: "危険", overflow: "氾濫開始" };

  const state = { token: null, account: null, alerts: [], hazards: [], shelters: [], stations: [], draw: [],
    drawing: false, station: null, es: null, timer: null };
  window.sonaeStaff = state;
  let map = null;

  function notice(text) { $("notice").textContent = text; }

  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401 && state.token) { logout(); throw new Error("ログインが切れました / Session expired"); }
    if (!r.ok) {
      let detail = "HTTP " + r.status;
      try { const p = await r.json(); detail = p.detail || p.title || detail; } catch (e) { /* not JSON */ }
      throw new Error(detail);
    }
    return r.status === 204 ? null : r.json();
  }

  function fmt(iso) {
    if (!iso) return "";
    return new Date(iso).toLocaleString("ja-JP", { month: "numeric", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const k in attrs || {}) {
      if (k === "class") e.className = attrs[k]; else e.setAttribute(k, attrs[k]);
    }
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // -- login --------------------------------------------------------------------------------------------
  async function login(ev) {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const r = await api("POST", "/api/v1/auth/token", { username: $("username").value, password: $("password").value });
      state.token = r.access_token;
      state.account = r.account;
      $("password").value = "";
      showConsole(true);
      await loadAll();
      fitMap();
      connect();
      state.timer = setInterval(() => loadAll(), POLL_MS);
      $("alerts-h").focus && $("alerts-h").setAttribute("tabindex", "-1");
      $("alerts-h").focus();
    } catch (err) {
      $("login-error").textContent = "ログインできません / Login failed: " + err.message;
    }
  }

  function logout() {
    if (state.token) fetch("/api/v1/auth/token", { method: "DELETE", headers: { Authorization: "Bearer " + state.token } }).catch(() => {});
    state.token = null;
    state.account = null;
    if (state.es) state.es.close();
    if (state.timer) clearInterval(state.timer);
    showConsole(false);
  }

  function showConsole(on) {
    $("login-card").hidden = on;
    for (const id of ["alerts-card", "official-card", "map-card", "side", "station-card", "shelters-card", "who-box"]) $(id).hidden = !on;
    if (on) {
      const a = state.account;
      $("who").textContent = (a.display_name || a.username) + "（" + a.role + "・" + (a.municipality_code || "県全域 prefecture") + "）";
    }
    document.body.setAttribute("data-logged-in", String(on));
  }

  // -- data ----------------------------------------------------------------------------------------------
  async function loadAll() {
    try {
      const muni = state.account && state.account.municipality_code
        ? "?municipality=" + encodeURIComponent(state.account.municipality_code) : "";
      const [alerts, hazards, shelters, stations, official] = await Promise.all([
        api("GET", "/api/v1/alerts?audience=all"), api("GET", "/api/v1/hazards?state=all"),
        api("GET", "/api/v1/shelters" + (state.account && state.account.municipality_code
          ? "?municipality=" + encodeURIComponent(state.account.municipality_code) : "")),
        api("GET", "/api/v1/stations"), api("GET", "/api/v1/official" + muni)]);
      state.alerts = alerts.alerts || [];
      state.official = official.official || [];
      state.hazards = hazards.features || [];
      state.shelters = shelters.features.map((f) => ({ ...f.properties, lon: f.geometry.coordinates[0], lat: f.geometry.coordinates[1] }));
      state.stations = stations.stations || [];
      render();
    } catch (err) {
      notice("読み込みに失敗しました / Could not load: " + err.message);
    }
  }

  function render() {
    renderAlerts();
    renderOfficial();
    renderOrders();
    renderHazards();
    renderShelters();
    renderStations();
    drawMap();
    $("drill").hidden = !state.alerts.some((a) => a.exercise);
    document.body.setAttribute("data-loaded", String(Date.now()));
  }

  function stationLevel(id) {
    let lv = 0;
    for (const a of state.alerts) if (a.station_id === id && !a.unconfirmed && a.level > lv) lv = a.level;
    return lv;
  }

  /** Why a station's level differs from what its latest value alone would say: a level held on falling
   * water (hysteresis and dwell, alerting/rules.py), or an unconfirmed jump awaiting the next reading. */
  function stationNote(s) {
    const notes = [];
    const river = state.alerts.find((a) => a.station_id === s.id && a.condition === "river_level");
    if (river && s.latest && river.threshold != null && s.latest.value < river.threshold) {
      notes.push(`${river.threshold} m を下回りました。低下の確認まで保持中 / below ${river.threshold} m: held until the fall is confirmed`);
    }
    const jump = state.alerts.find((a) => a.station_id === s.id && a.unconfirmed);
    if (jump) notes.push(`未確認 レベル${jump.level}（${jump.value} m、ありえない速さの変化。次の観測で確認）/ unconfirmed level ${jump.level}: faster than the river can change, awaiting the next reading`);
    return notes.length ? "（" + notes.join("；") + "）" : "";
  }

  /** An alert condition in Japanese and English (the table in map.js has all three languages). */
  function condition(c) {
    return S.conditionName(c, "ja") + " / " + S.conditionName(c, "en");
  }

  function renderAlerts() {
    const tb = $("alerts");
    tb.textContent = "";
    $("alerts-empty").hidden = state.alerts.length > 0;
    for (const a of state.alerts) {
      const tr = el("tr", { "data-alert-id": a.id });
      const td0 = el("td", { class: "cell-level", "data-label": "レベル / Level" });
      td0.appendChild(el("span", { class: "badge", "data-level": String(a.level) }, String(a.level)));
      tr.appendChild(td0);
      const what = a.condition === "evacuation_order"
        ? "避難情報 " + (LEVEL_NAMES[a.level] || "") + (a.area ? "（区域指定）" : "（全域）")
        : (a.station_name || a.station_id || "") + " " + condition(a.condition) + (a.value != null ? " " + a.value + " m" : "");
      const tdw = el("td", { "data-label": "内容 / What" }, what + " ");
      if (a.exercise) tdw.appendChild(el("span", { class: "tag-ex" }, "訓練 EXERCISE"));
      if (a.unconfirmed) tdw.appendChild(el("span", { class: "tag-unconfirmed" }, "未確認 UNCONFIRMED"));
      if (a.audience === "staff") tdw.appendChild(el("span", { class: "muted" }, " 職員のみ staff only"));
      tr.appendChild(tdw);
      tr.appendChild(el("td", { "data-label": "地域 / Where" }, a.municipality_name || a.municipality_code || ""));
      tr.appendChild(el("td", { "data-label": "時刻 / Since" }, fmt(a.raised_at)));
      const td = el("td", { "data-label": "確認 / Ack" });
      if (a.acknowledged_by) {
        td.textContent = "確認済 " + a.acknowledged_by;
      } else {
        const b = el("button", { type: "button", class: "ack", "data-alert-id": a.id }, "確認 / Acknowledge");
        b.setAttribute("aria-label", "確認 / Acknowledge: " + what);
        b.addEventListener("click", () => acknowledge(a, b));
        td.appendChild(b);
      }
      tr.appendChild(td);
      tb.appendChild(tr);
    }
  }

  /** JMA's information in force, beside the order it suggests (避難情報に関するガイドライン): one click
   * issues that order through the ordinary orders endpoint; JMA's information itself is never re-issued. */
  function renderOfficial() {
    const tb = $("official");
    tb.textContent = "";
    const items = state.official || [];
    $("official-empty").hidden = items.length > 0;
    for (const o of items) {
      const tr = el("tr", { "data-municipality": o.municipality_code });
      const td0 = el("td", { class: "cell-level", "data-label": "レベル / Level" });
      td0.appendChild(el("span", { class: "badge", "data-level": String(o.level) }, String(o.level)));
      tr.appendChild(td0);
      const tdw = el("td", { "data-label": "内容 / What" }, o.names["ja-JP"] + " / " + o.names["en-US"] + " ");
      if (o.exercise) tdw.appendChild(el("span", { class: "tag-ex" }, "訓練 EXERCISE"));
      tr.appendChild(tdw);
      tr.appendChild(el("td", { "data-label": "地域 / Where" }, (o.municipality_name || "") + " " + o.municipality_code));
      tr.appendChild(el("td", { "data-label": "発表 / Since" }, fmt(o.valid_from)));
      const td = el("td", { "data-label": "検討 / Consider" });
      if (o.suggested_order) {
        const label = `${o.suggested_order}（レベル${o.level}）を発令 / Issue level ${o.level}`;
        const b = el("button", { type: "button", class: "danger issue-suggested" }, label);
        b.setAttribute("aria-label", label + ": " + o.names["ja-JP"] + " " + o.municipality_code);
        b.addEventListener("click", async () => {
          if (!window.confirm(`${o.municipality_name || o.municipality_code}に${o.suggested_order}を発令しますか？ / Issue this order?`)) return;
          b.disabled = true;
          try {
            const r = await api("POST", "/api/v1/orders", { level: o.level, municipality_code: o.municipality_code,
              note: o.names["ja-JP"], exercise: !!o.exercise });
            notice(`避難情報を発令しました / Order issued: #${r.order_id}`);
            await loadAll();
          } catch (err) { b.disabled = false; notice("発令できません / Could not issue: " + err.message); }
        });
        td.appendChild(el("span", {}, "検討: " + o.suggested_order + " / consider " + o.suggested_order + " "));
        td.appendChild(b);
      }
      tr.appendChild(td);
      tb.appendChild(tr);
    }
  }

  async function acknowledge(a, b) {
    b.disabled = true;
    try {
      await api("POST", `/api/v1/alerts/${a.id}/acknowledge`, {});
      notice("警報を確認しました / Alert acknowledged: #" + a.id);
      await loadAll();
    } catch (err) {
      b.disabled = false;
      notice("確認できません / Could not acknowledge: " + err.message);
    }
  }

  function renderOrders() {
    const ul = $("orders");
    ul.textContent = "";
    for (const a of state.alerts.filter((x) => x.condition === "evacuation_order" && x.order_id)) {
      const item = el("li", { "data-order-id": a.order_id },
        `レベル${a.level} ${a.municipality_name || a.municipality_code} ${a.area ? "区域" : "全域"} ${fmt(a.raised_at)} `);
      if (a.exercise) item.appendChild(el("span", { class: "tag-ex" }, "訓練"));
      const b = el("button", { type: "button", class: "danger cancel-order" }, "解除 / Cancel");
      b.setAttribute("aria-label", `解除 / Cancel order ${a.order_id}`);
      b.addEventListener("click", async () => {
        if (!window.confirm("この避難情報を解除しますか？ / Cancel this order?")) return;
        try {
          await api("POST", `/api/v1/orders/${a.order_id}/cancel`, {});
          notice("避難情報を解除しました / Order cancelled");
          await loadAll();
        } catch (err) { notice("解除できません / Could not cancel: " + err.message); }
      });
      item.appendChild(b);
      ul.appendChild(item);
    }
    if (!ul.children.length) ul.appendChild(el("li", { class: "muted" }, "なし / None"));
    const sel = $("order-muni");
    const keep = sel.value;
    const codes = new Map();
    if (state.account && state.account.municipality_code) codes.set(state.account.municipality_code, "");
    for (const a of state.alerts) if (a.municipality_code) codes.set(a.municipality_code, a.municipality_name || codes.get(a.municipality_code) || "");
    for (const s of state.shelters) if (s.municipality_code && !codes.has(s.municipality_code)) codes.set(s.municipality_code, "");
    for (const s of state.stations) if (s.municipality_code && !codes.has(s.municipality_code)) codes.set(s.municipality_code, "");
    sel.textContent = "";
    for (const [code, name] of codes) sel.appendChild(el("option", { value: code }, code + (name ? " " + name : "")));
    if (keep && codes.has(keep)) sel.value = keep;
  }

  function renderHazards() {
    const ul = $("hazards");
    ul.textContent = "";
    for (const h of state.hazards.filter((x) => x.properties.in_force !== false)) {
      const p = h.properties;
      const item = el("li", { "data-hazard-id": p.id }, `${HAZ_JA[p.hazard] || p.hazard} ${p.label || ""} (${p.source}) `);
      if (p.exercise) item.appendChild(el("span", { class: "tag-ex" }, "訓練"));
      if (p.source === "staff") {
        const b = el("button", { type: "button", class: "secondary" }, "削除 / Remove");
        b.setAttribute("aria-label", "削除 / Remove " + (p.label || p.id));
        b.addEventListener("click", async () => {
          try { await api("DELETE", "/api/v1/hazards/" + encodeURIComponent(p.id)); notice("危険区域を削除しました / Hazard area removed"); await loadAll(); }
          catch (err) { notice("削除できません / Could not remove: " + err.message); }
        });
        item.appendChild(b);
      }
      ul.appendChild(item);
    }
    if (!ul.children.length) ul.appendChild(el("li", { class: "muted" }, "なし / None"));
  }

  function renderShelters() {
    const tb = $("shelters");
    if (tb.contains(document.activeElement)) return; // do not disturb someone typing
    tb.textContent = "";
    for (const s of state.shelters) {
      const tr = el("tr", { "data-shelter-id": s.id });
      tr.appendChild(el("td", { "data-label": "名前 / Name" }, s.name));
      const open = el("input", { type: "checkbox", "aria-label": s.name + " 開設 / open" });
      open.checked = !!s.is_open;
      const tdo = el("td", { "data-label": "開設 / Open" });
      tdo.appendChild(open);
      tr.appendChild(tdo);
      const occ = el("input", { type: "number", min: "0", inputmode: "numeric", size: "5", "aria-label": s.name + " 収容人数 / occupancy" });
      occ.value = s.occupancy || 0;
      const tdc = el("td", { "data-label": "収容 / Occupancy" });
      tdc.appendChild(occ);
      tdc.appendChild(document.createTextNode(" / " + (s.capacity == null ? "?" : s.capacity)));
      tr.appendChild(tdc);
      const b = el("button", { type: "button", class: "secondary", "aria-label": s.name + " 更新 / update" }, "更新");
      b.addEventListener("click", async () => {
        try {
          await api("PATCH", "/api/v1/shelters/" + encodeURIComponent(s.id), { occupancy: Number(occ.value) || 0, is_open: open.checked });
          notice("避難所を更新しました / Shelter updated: " + s.name);
          await loadAll();
        } catch (err) { notice("更新できません / Could not update: " + err.message); }
      });
      const tdb = el("td", { "data-label": "更新 / Update" });
      tdb.appendChild(b);
      tr.appendChild(tdb);
      tb.appendChild(tr);
    }
  }

  function renderStations() {
    const sel = $("station");
    const keep = sel.value;
    if (sel.options.length !== state.stations.length) {
      sel.textContent = "";
      for (const s of state.stations) sel.appendChild(el("option", { value: s.id }, s.name + (s.name_en ? " / " + s.name_en : "")));
    }
    if (keep) sel.value = keep;
    if (!state.station && state.stations.length) selectStation(state.stations[0].id);
    else if (state.station) showStationNow();
  }

  // -- the map -------------------------------------------------------------------------------------------
  function drawMap() {
    if (!map) return;
    const areas = state.hazards.map((h) => ({ geometry: h.geometry, cls: h.properties.in_force === false ? "hazard-off" : "hazard",
      title: (h.properties.label || h.properties.hazard) + (h.properties.in_force === false ? "（未発動）" : ""), id: h.properties.id }));
    for (const a of state.alerts) if (a.area) areas.push({ geometry: a.area, cls: "order-area", title: "避難情報 レベル" + a.level });
    map.setLayer("areas", areas);
    const pts = state.shelters.map((s) => ({ point: [s.lon, s.lat], r: 7, cls: s.is_open ? "shelter" : "shelter-closed", id: s.id,
      title: `${s.name} ${s.occupancy}/${s.capacity == null ? "?" : s.capacity}${s.is_open ? "" : "（閉鎖）"}` }));
    for (const s of state.stations) {
      if (!s.location) continue;
      const lv = stationLevel(s.id);
      pts.push({ point: [s.location.lon, s.location.lat], shape: "square", r: 10, cls: "station st-" + lv, id: s.id,
        title: `${s.name} ${s.latest ? s.latest.value + " m" : ""} レベル${lv}${stationNote(s)}`, label: s.name, labelPriority: lv,
        onClick: () => selectStation(s.id) });
    }
    map.setLayer("points", pts);
    drawDraft();
  }

  function fitMap() {
    const pts = state.shelters.map((s) => [s.lon, s.lat]);
    for (const s of state.stations) if (s.location) pts.push([s.location.lon, s.location.lat]);
    if (pts.length) map.setView(S.boundsOf(pts), 0.05);
  }

  function drawDraft() {
    const d = state.draw;
    const items = [];
    if (d.length >= 2) items.push({ geometry: { type: d.length >= 3 ? "Polygon" : "LineString", coordinates: d.length >= 3 ? [[...d, d[0]]] : d }, cls: "draw-line" });
    for (const p of d) items.push({ point: p, r: 6, cls: "draw-vertex" });
    map.setLayer("draw", items);
    $("draw-coords").value = d.map((p) => p[0].toFixed(6) + "," + p[1].toFixed(6)).join("\n");
  }

  function addVertex(p) {
    if (!state.drawing) return false;
    state.draw.push([p.lon, p.lat]);
    drawDraft();
    return true;
  }

  function drawnPolygon() {
    const d = state.draw;
    if (d.length < 3) return null;
    return { type: "Polygon", coordinates: [[...d, d[0]]] };
  }

  function setDrawing(on) {
    state.drawing = on;
    const b = $("draw-start");
    b.setAttribute("aria-pressed", String(on));
    b.textContent = on ? "描画終了 / Stop drawing" : "描画開始 / Start drawing";
  }

  // -- orders and hazard areas ------------------------------------------------------------------------------
  async function issueOrder(ev) {
    ev.preventDefault();
    const body = { level: Number($("order-level").value), municipality_code: $("order-muni").value || undefined,
      note: $("order-note").value || undefined, exercise: $("order-exercise").checked };
    if (document.querySelector("input[name=order-area]:checked").value === "drawn") {
      const area = drawnPolygon();
      if (!area) { notice("区域を地図に描いてください（3点以上） / Draw the area on the map (3 points or more)"); return; }
      body.area = area;
    }
    try {
      const r = await api("POST", "/api/v1/orders", body);
      notice(`避難情報を発令しました / Order issued: #${r.order_id}`);
      setDrawing(false);
      await loadAll();
    } catch (err) { notice("発令できません / Could not issue: " + err.message); }
  }

  async function addHazard(ev) {
    ev.preventDefault();
    const geometry = drawnPolygon();
    if (!geometry) { notice("区域を地図に描いてください（3点以上） / Draw the area on the map (3 points or more)"); return; }
    try {
      const r = await api("POST", "/api/v1/hazards", { geometry, hazard: $("hz-type").value, label: $("hz-label").value,
        exercise: $("hz-exercise").checked });
      notice("危険区域を登録しました / Hazard area added: " + r.id);
      state.draw = [];
      setDrawing(false);
      await loadAll();
    } catch (err) { notice("登録できません / Could not add: " + err.message); }
  }

  // -- station charts --------------------------------------------------------------------------------------
  function selectStation(id) {
    state.station = id;
    $("station").value = id;
    showStationNow();
    const now = Date.now();
    chart($("chart-24h"), id, "10m", new Date(now - 24 * 3600e3), new Date(now + 300e3));
    chart($("chart-7d"), id, "1h", new Date(now - 7 * 24 * 3600e3), new Date(now + 300e3));
  }

  function showStationNow() {
    const s = state.stations.find((x) => x.id === state.station);
    if (!s) return;
    const lv = stationLevel(s.id);
    $("station-now").textContent = `${s.name}（${s.river || ""}）: ${s.latest ? s.latest.value + " m @ " + fmt(s.latest.ts) : "データなし / no data"}・レベル ${lv}${stationNote(s)}`;
  }

  async function chart(svg, id, bucket, from, to) {
    const q = new URLSearchParams({ bucket, from: from.toISOString(), to: to.toISOString() });
    let rows = [];
    try { rows = (await api("GET", `/api/v1/stations/${encodeURIComponent(id)}/readings?` + q)).readings || []; }
    catch (err) { rows = []; }
    const st = state.stations.find((x) => x.id === id) || { thresholds: {} };
    const NS = "http://www.w3.org/2000/svg";
    const W = 800, H = 260, L = 52, R = 110, T = 12, B = 30;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const title = svg.querySelector("title");
    svg.textContent = "";
    svg.appendChild(title);
    const add = (name, attrs, text) => {
      const e = document.createElementNS(NS, name);
      for (const k in attrs) e.setAttribute(k, attrs[k]);
      if (text !== undefined) e.textContent = text;
      svg.appendChild(e);
      return e;
    };
    const ths = Object.entries(st.thresholds || {}).filter(([, v]) => v != null);
    const vals = rows.flatMap((r) => [r.min, r.max]).filter((v) => v != null).concat(ths.map(([, v]) => v));
    let lo = Math.min(0, ...vals), hi = Math.max(1, ...vals);
    hi += (hi - lo) * 0.08;
    const x = (t) => L + ((t - from.getTime()) / (to.getTime() - from.getTime())) * (W - L - R);
    const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = lo + ((hi - lo) * i) / 4;
      add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" });
      add("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, v.toFixed(1));
    }
    for (let i = 0; i <= 4; i++) {
      const t = from.getTime() + ((to.getTime() - from.getTime()) * i) / 4;
      add("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, fmt(new Date(t).toISOString()));
    }
    add("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" });
    add("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" });
    for (const [name, v] of ths) {
      add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "th th-" + name, "data-threshold": name });
      add("text", { x: W - R + 4, y: y(v) + 4 }, `${TH_NAMES[name] || name} ${v}`);
    }
    if (rows.length) {
      const ts = rows.map((r) => new Date(r.bucket).getTime());
      let band = "", line = "";
      rows.forEach((r, i) => { band += (i ? "L" : "M") + x(ts[i]).toFixed(1) + " " + y(r.max).toFixed(1); });
      for (let i = rows.length - 1; i >= 0; i--) band += "L" + x(ts[i]).toFixed(1) + " " + y(rows[i].min).toFixed(1);
      rows.forEach((r, i) => { line += (i ? "L" : "M") + x(ts[i]).toFixed(1) + " " + y(r.avg).toFixed(1); });
      add("path", { d: band + "Z", class: "band" });
      add("path", { d: line, class: "series" });
    } else {
      add("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "データなし / no data");
    }
    const max = rows.length ? Math.max(...rows.map((r) => r.max)) : null;
    title.textContent = `${st.name || id}: ${bucket === "10m" ? "24時間 / 24 h" : "7日間 / 7 days"}, ${rows.length} 区間` +
      (max != null ? `, 最高 max ${max.toFixed(2)} m` : "") + (ths.length ? `, 基準 thresholds ${ths.map(([k, v]) => (TH_NAMES[k] || k) + " " + v).join(", ")}` : "");
    svg.setAttribute("data-points", String(rows.length));
  }

  // -- live ------------------------------------------------------------------------------------------------
  /* Server-Sent Events read with fetch: EventSource cannot send the Authorization header that staff
   * streams (audience=all) need. Reconnects with Last-Event-ID; stops at logout. */
  let pending = null;
  function connect() {
    const soon = () => {
      if (pending) return;
      pending = setTimeout(() => { pending = null; loadAll(); }, 300);
    };
    const ctl = new AbortController();
    state.es = { close: () => ctl.abort() };
    let lastId = null;
    const run = async () => {
      while (state.token && !ctl.signal.aborted) {
        try {
          const headers = { Accept: "text/event-stream", Authorization: "Bearer " + state.token };
          if (lastId) headers["Last-Event-ID"] = lastId;
          const r = await fetch("/api/v1/events?audience=all", { headers, signal: ctl.signal });
          if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
          const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let cut;
            while ((cut = buf.indexOf("\n\n")) >= 0) {
              const block = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              let type = "message";
              for (const line of block.split("\n")) {
                if (line.startsWith("id:")) lastId = line.slice(3).trim();
                else if (line.startsWith("event:")) type = line.slice(6).trim();
              }
              if (type === "alert" || type === "hazard_state") soon();
            }
          }
        } catch (err) {
          if (ctl.signal.aborted) return;
        }
        await new Promise((res) => setTimeout(res, 3000));
      }
    };
    run();
  }

  function start() {
    map = new S.SvgMap($("map-svg"), { aspect: 0.75, roads: (b) => fetch("/api/v1/network.geojson?bbox=" + b.map((v) => v.toFixed(4)).join(","))
      .then((r) => (r.ok ? r.json() : { features: [] })).then((d) => d.features), onTap: (p) => addVertex(p) });
    S.keyboard($("map"), map, (p) => addVertex(p));
    window.sonaeStaffMap = map;
    for (const h of HAZARDS) $("hz-type").appendChild(el("option", { value: h }, HAZ_JA[h] + " / " + h));
    $("login").addEventListener("submit", login);
    $("logout").addEventListener("click", logout);
    $("zoom-in").addEventListener("click", () => map.zoom(1.5));
    $("zoom-out").addEventListener("click", () => map.zoom(1 / 1.5));
    $("zoom-fit").addEventListener("click", fitMap);
    $("draw-start").addEventListener("click", () => setDrawing(!state.drawing));
    $("draw-undo").addEventListener("click", () => { state.draw.pop(); drawDraft(); });
    $("draw-clear").addEventListener("click", () => { state.draw = []; drawDraft(); });
    $("draw-coords").addEventListener("change", (ev) => {
      state.draw = ev.target.value.split("\n").map((l) => l.split(",").map(Number))
        .filter((p) => p.length === 2 && p.every(Number.isFinite));
      drawDraft();
    });
    $("order-form").addEventListener("submit", issueOrder);
    $("hazard-form").addEventListener("submit", addHazard);
    $("station").addEventListener("change", (ev) => selectStation(ev.target.value));
    document.body.setAttribute("data-ready", "true");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
