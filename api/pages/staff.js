/* Sonae staff console: alerts with acknowledge, a map of stations / hazard areas / shelters, station charts,
 * evacuation orders, hazard areas drawn on the map, shelter occupancy. The bearer token lives only in
 * this page's memory (a reload asks to log in again). */
"use strict";
(function () {
  const S = window.Sonae;
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 15000;
  /** The orders a municipality issues, by level (避難情報に関するガイドライン; alerting/level.py SUGGESTED_ORDER). */
  const ORDER_OF_LEVEL = { 3: "高齢者等避難", 4: "避難指示", 5: "緊急安全確保" };
  const DRILL_TOWN = "079995"; // sonae.municipality_code.DRILL_TOWN_CODE: exercises only
  const HAZARDS = ["flood", "landslide", "storm_surge", "earthquake", "tsunami", "large_fire", "inland_flooding", "volcano"];
  const HAZ_JA = { flood: "洪水", landslide: "土砂災害", storm_surge: "高潮", earthquake: "地震", tsunami: "津波",
    large_fire: "大規模火災", inland_flooding: "内水氾濫", volcano: "火山" };
  const TH_NAMES = { standby: "水防団待機", caution: "氾濫注意", evacuation: "避難判断", danger: "氾濫危険",
    obs_start: "観測開始", crisis: "危険", overflow: "氾濫開始" };
  const TH_NAMES_EN = { standby: "flood-fighting standby", caution: "flood caution", evacuation: "evacuation decision",
    danger: "flood danger", obs_start: "observation start", crisis: "crisis", overflow: "overflow" };
  const ORDER_EN = { "高齢者等避難": "Elderly and others evacuate", "避難指示": "Evacuation order", "緊急安全確保": "Emergency safety measures" };

  const state = { token: null, account: null, alerts: [], hazards: [], shelters: [], stations: [], draw: [],
    drawing: false, station: null, es: null, timer: null, lang: "ja", municipalities: [],
    // the reads the server refused for now (waitOut), by name: {since, retryAt (ms since the epoch), tries}
    busy: {} };
  window.sonaeStaff = state;
  let map = null;

  const MAX_PEOPLE = 1000000; // api/staff.py MAX_PEOPLE

  /** The whole number typed in a number box, from lo to hi; null when it is empty, not a number (a number box
   * reports "" for what it cannot read, e.g. "1e" or full-width digits some IMEs give), fractional or out of range. */
  function wholeNumber(input, lo, hi) {
    const raw = input.value.trim();
    if (raw === "" || (input.validity && input.validity.badInput)) return null;
    const v = Number(raw);
    return Number.isInteger(v) && v >= lo && v <= hi ? v : null;
  }

  /** The answer to what staff just did (issued, refused, updated, could not …): stays until their next action. */
  function notice(text) { $("notice").textContent = text; }
  /** Whether the console's data could be reloaded (login, the poll, a live event): a line of its own, so that a
   * reload failing in the background never replaces the answer to an action (found: an occupancy refusal
   * overwritten by "Could not load"); emptied by the next reload that succeeds. */
  function loadStatus(text) { $("load-status").textContent = text; }

  /* The console's language: "ja" (Japanese, with the English glosses staff have always had) or "en" (English
   * only: no Japanese word but proper names without an English form). tx(ja, en) picks the text. */
  const isEn = () => state.lang === "en";
  const tx = (ja, en) => (isEn() ? en : ja);
  /** A station's name for this console's readers: name_en in English when it has one. */
  const stationName = (s) => (s ? (isEn() && s.name_en ? s.name_en : s.name) || s.id || "" : "");
  /** A municipality's name in the console's language (/api/v1/municipalities, else the names an alert carries). */
  function muniName(code, fromAlert) {
    if (!code) return "";
    const m = state.municipalities.find((x) => x.code === code);
    const ja = (m && m.name_ja) || (fromAlert && fromAlert.municipality_name) || "";
    const en = (m && m.name_en) || (fromAlert && fromAlert.municipality_name_en) || "";
    return (isEn() ? en || ja : ja) || code;
  }
  const thName = (k) => (isEn() ? TH_NAMES_EN[k] : TH_NAMES[k]) || k;
  const orderName = (o) => (isEn() ? ORDER_EN[o] || o : o);
  /** An issued order in the alerts table: its name once, with its level and area, e.g. 避難指示（警戒レベル4・全域）,
   * "Evacuation order (Level 4, whole municipality)" (found: "Evacuation order: Evacuation order (L4) (whole
   * municipality)" and 避難情報 避難指示 L4（全域）, the condition's name before the order's own). */
  function orderLabel(level, drawn) {
    const name = ORDER_OF_LEVEL[level];
    return isEn()
      ? `${name ? ORDER_EN[name] : "Evacuation order"} (Level ${level}, ${drawn ? "drawn area" : "whole municipality"})`
      : `${name || "避難情報"}（警戒レベル${level}・${drawn ? "区域指定" : "全域"}）`;
  }

  function applyLang() {
    document.documentElement.lang = state.lang;
    for (const e of document.querySelectorAll("[data-en]")) {
      if (e.dataset.ja === undefined) e.dataset.ja = e.innerHTML;
      if (isEn()) e.textContent = e.dataset.en; else e.innerHTML = e.dataset.ja;
    }
    for (const e of document.querySelectorAll("[data-en-aria-label]")) {
      if (e.dataset.jaAriaLabel === undefined) e.dataset.jaAriaLabel = e.getAttribute("aria-label");
      e.setAttribute("aria-label", isEn() ? e.dataset.enAriaLabel : e.dataset.jaAriaLabel);
    }
    for (const e of document.querySelectorAll("[data-en-value]")) {
      if (e.dataset.jaValue === undefined) e.dataset.jaValue = e.value;
      if (e.value === e.dataset.jaValue || e.value === e.dataset.enValue) e.value = isEn() ? e.dataset.enValue : e.dataset.jaValue;
    }
    for (const b of document.querySelectorAll(".langs button[data-lang]")) b.setAttribute("aria-pressed", String(b.dataset.lang === state.lang));
    for (const h of HAZARDS) {
      const o = document.querySelector(`#hz-type option[value="${h}"]`);
      if (o) o.textContent = isEn() ? h.replace(/_/g, " ") : HAZ_JA[h] + " / " + h;
    }
    setDrawing(state.drawing);
    if (state.account) { showConsole(true); render(); if (state.station) selectStation(state.station); }
    renderBusy();
  }

  function setLang(lang) {
    state.lang = lang === "en" ? "en" : "ja";
    applyLang();
  }

  /* -- reads the server refused for now ----------------------------------------------------------------------
   * A 429 (the rate limit of every request, api/ratelimit.py, met by every desk behind one office address; the
   * event streams' cap, api/alerts.py) or a 503 with Retry-After (the road network still loading, the database
   * unreachable: api/edge.py) says "not now", not "nothing there". Found: the map took a refused roads request as
   * no roads and blanked them, a refused chart drew "no data", the lists said "Could not load: Too Many Requests"
   * and the poll asked again at its own pace, and the event stream reconnected every 3 s whatever Retry-After
   * said. Now each read refused keeps what the console shows, #busy-status says the server is busy and what could
   * not be updated, in the console's language, and waitOut asks again once after Retry-After (1 s to a minute,
   * never sooner than a backoff doubling with each refusal, a little later at random); its answer clears the
   * notice (answered). One helper for every read, as on the resident page (resident.js refusedForNow). */
  const RETRY_MAX_S = 60, RETRY_DEFAULT_S = 10;
  const BUSY_WHAT = {
    load: ["警報・避難情報・危険区域・避難所・観測所の一覧", "the alerts, orders, hazard areas, shelters and stations"],
    roads: ["地図の道路", "the roads on the map"],
    "chart-24h": ["水位グラフ", "the river level charts"],
    "chart-7d": ["水位グラフ", "the river level charts"],
    live: ["リアルタイム更新", "live updates"],
  };
  const retryTimers = {};

  function refusedForNow(err) {
    return !!err && (err.status === 429 || (err.status === 503 && !!err.retryAfter));
  }

  function retryAfterS(value) {
    const text = String(value || "").trim();
    let s = /^\d+$/.test(text) ? Number(text) : (Date.parse(text) - Date.now()) / 1000;  // seconds, or an HTTP date
    if (!(s >= 1)) s = text ? 1 : RETRY_DEFAULT_S;
    return Math.min(RETRY_MAX_S, s);
  }

  /* the read ``name`` was refused for now (err: api's error, or httpError's): what it shows stays, the notice says
   * so, and ``again`` runs once after Retry-After (one retry pending a read: a later refusal replaces it); returns
   * the wait (ms) */
  function waitOut(name, err, again) {
    const now = Date.now(), before = state.busy[name];
    const tries = before ? before.tries + 1 : 1;
    const s = Math.max(retryAfterS(err.retryAfter), 2 ** Math.min(6, tries - 1));
    const delay = Math.min(RETRY_MAX_S, s * (1 + 0.2 * Math.random())) * 1000;
    clearTimeout(retryTimers[name]);
    state.busy[name] = { since: before ? before.since : now, retryAt: now + delay, tries };
    retryTimers[name] = setTimeout(() => { delete retryTimers[name]; again(); }, delay);
    renderBusy();
    return delay;
  }

  /* the read ``name`` was answered: its pending retry, if any, is not needed, and the notice no longer names it */
  function answered(name) {
    clearTimeout(retryTimers[name]);
    delete retryTimers[name];
    if (!state.busy[name]) return;
    delete state.busy[name];
    renderBusy();
  }

  /* whether ``name`` waits for its retry (automatic reads of it do not ask the busy server before then) */
  const waiting = (name) => name in retryTimers;

  function clearBusy() {
    for (const name of Object.keys(retryTimers)) clearTimeout(retryTimers[name]);
    for (const name of Object.keys(retryTimers)) delete retryTimers[name];
    state.busy = {};
    renderBusy();
  }

  function renderBusy() {
    const box = $("busy-status");
    const names = Object.keys(state.busy);
    box.hidden = !names.length;
    if (!names.length) { box.textContent = ""; return; }
    const what = (i) => [...new Set(names.map((n) => BUSY_WHAT[n][i]))];  // (both charts: named once)
    const ja = what(0).join("・"), en = what(1).join(", ");
    const english = `The server is busy, so ${en} could not be updated. What is shown stays; it will try again automatically shortly.`;
    box.textContent = tx(`サーバーが混み合っているため、${ja}を更新できませんでした。表示中の内容はそのままです。`
      + `しばらくすると自動でもう一度読み込みます。 / ${english}`, english);
  }

  /* an error for a response not ok: its status and Retry-After */
  function httpError(r, detail) {
    const err = new Error(detail || "HTTP " + r.status);
    err.status = r.status;
    err.retryAfter = r.headers.get("Retry-After");
    return err;
  }

  async function api(method, url, body) {
    const headers = { Accept: "application/json" };
    if (state.token) headers.Authorization = "Bearer " + state.token;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (r.status === 401 && state.token) { logout(); throw new Error(tx("ログインが切れました / Session expired", "Session expired")); }
    if (!r.ok) {
      let detail = "HTTP " + r.status;
      try { const p = await r.json(); detail = p.detail || p.title || detail; } catch (e) { /* not JSON */ }
      throw httpError(r, detail);
    }
    return r.status === 204 ? null : r.json();
  }

  /* A time as staff in Fukushima read it: in Japan time whatever the browser's own zone, marked so ("4/1 11:30
   * JST", "4/1 11:30（日本時間）"); found: in a browser set to UTC an order issued at 11:30 JST showed as 02:30.
   * ``marked`` false: the time alone (the chart's axis, whose caption says the zone once). */
  function fmt(iso, marked = true) {
    if (!iso) return "";
    const shown = new Date(iso).toLocaleString(isEn() ? "en-GB" : "ja-JP", { timeZone: "Asia/Tokyo", month: "numeric",
      day: "numeric", hour: "2-digit", minute: "2-digit" });
    return marked ? shown + tx("（日本時間）", " JST") : shown;
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
      state.timer = setInterval(() => loadAll(true), POLL_MS);
      $("alerts-h").focus && $("alerts-h").setAttribute("tabindex", "-1");
      $("alerts-h").focus();
    } catch (err) {
      $("login-error").textContent = tx("ログインできません / Login failed: ", "Login failed: ") + err.message;
    }
  }

  function logout() {
    if (state.token) fetch("/api/v1/auth/token", { method: "DELETE", headers: { Authorization: "Bearer " + state.token } }).catch(() => {});
    state.token = null;
    state.account = null;
    if (state.es) state.es.close();
    if (state.timer) clearInterval(state.timer);
    clearBusy();
    showConsole(false);
  }

  function showConsole(on) {
    $("login-card").hidden = on;
    for (const id of ["alerts-card", "official-card", "map-card", "side", "station-card", "shelters-card", "who-box"]) $(id).hidden = !on;
    if (on) {
      const a = state.account;
      $("who").textContent = isEn()
        ? (a.display_name || a.username) + " (" + a.role + ", " + (a.municipality_code ? muniName(a.municipality_code) : "whole prefecture") + ")"
        : (a.display_name || a.username) + "（" + a.role + "・" + (a.municipality_code ? muniName(a.municipality_code) : "県全域 prefecture") + "）";
    }
    document.body.setAttribute("data-logged-in", String(on));
  }

  // -- data ----------------------------------------------------------------------------------------------
  /* auto: the poll or a live event (not asked while a refused load waits for its retry: that retry reads all) */
  async function loadAll(auto) {
    if (auto && waiting("load")) return;
    try {
      const muni = state.account && state.account.municipality_code
        ? "?municipality=" + encodeURIComponent(state.account.municipality_code) : "";
      const [alerts, hazards, shelters, stations, official, munis] = await Promise.all([
        api("GET", "/api/v1/alerts?audience=all"), api("GET", "/api/v1/hazards?state=all"),
        api("GET", "/api/v1/shelters" + (state.account && state.account.municipality_code
          ? "?municipality=" + encodeURIComponent(state.account.municipality_code) : "")),
        api("GET", "/api/v1/stations"), api("GET", "/api/v1/official" + muni),
        state.municipalities.length ? null : api("GET", "/api/v1/municipalities").catch(() => null)]);
      if (munis) state.municipalities = munis.municipalities || [];
      state.alerts = alerts.alerts || [];
      state.official = official.official || [];
      state.hazards = hazards.features || [];
      state.shelters = shelters.features.map((f) => ({ ...f.properties, lon: f.geometry.coordinates[0], lat: f.geometry.coordinates[1] }));
      state.stations = stations.stations || [];
      render();
      loadStatus("");
      answered("load");
    } catch (err) {
      if (refusedForNow(err)) { loadStatus(""); waitOut("load", err, () => loadAll()); return; }
      loadStatus(tx("読み込みに失敗しました / Could not load: ", "Could not load: ") + err.message);
    }
  }

  function render() {
    if (state.account) showConsole(true); // the account's municipality by name, once the names are in
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
      notes.push(tx(`${river.threshold} m を下回りました。低下の確認まで保持中 / below ${river.threshold} m: held until the fall is confirmed`,
        `below ${river.threshold} m: held until the fall is confirmed`));
    }
    const jump = state.alerts.find((a) => a.station_id === s.id && a.unconfirmed);
    if (jump) notes.push(tx(`未確認 レベル${jump.level}（${jump.value} m、ありえない速さの変化。次の観測で確認）/ unconfirmed level ${jump.level}: faster than the river can change, awaiting the next reading`,
      `unconfirmed level ${jump.level} (${jump.value} m): faster than the river can change, awaiting the next reading`));
    return notes.length ? (isEn() ? " (" + notes.join("; ") + ")" : "（" + notes.join("；") + "）") : "";
  }

  /** An alert condition in Japanese and English, or English only (the table in map.js has all three languages). */
  function condition(c) {
    return isEn() ? S.conditionName(c, "en") : S.conditionName(c, "ja") + " / " + S.conditionName(c, "en");
  }

  function renderAlerts() {
    const tb = $("alerts");
    tb.textContent = "";
    $("alerts-empty").hidden = state.alerts.length > 0;
    for (const a of state.alerts) {
      const tr = el("tr", { "data-alert-id": a.id });
      const td0 = el("td", { class: "cell-level", "data-label": tx("レベル / Level", "Level") });
      td0.appendChild(el("span", { class: "badge", "data-level": String(a.level) }, String(a.level)));
      tr.appendChild(td0);
      const station = { id: a.station_id, name: a.station_name, name_en: a.station_name_en };
      const what = a.condition === "evacuation_order"
        ? orderLabel(a.level, Boolean(a.area))
        : stationName(station) + " " + condition(a.condition) + (a.value != null ? " " + a.value + " m" : "");
      const tdw = el("td", { "data-label": tx("内容 / What", "What") }, what + " ");
      if (a.exercise) tdw.appendChild(el("span", { class: "tag-ex" }, tx("訓練 EXERCISE", "EXERCISE")));
      if (a.unconfirmed) tdw.appendChild(el("span", { class: "tag-unconfirmed" }, tx("未確認 UNCONFIRMED", "UNCONFIRMED")));
      if (a.audience === "staff") tdw.appendChild(el("span", { class: "muted" }, tx(" 職員のみ staff only", " staff only")));
      tr.appendChild(tdw);
      tr.appendChild(el("td", { "data-label": tx("地域 / Where", "Where") }, muniName(a.municipality_code, a)));
      tr.appendChild(el("td", { "data-label": tx("時刻 / Since", "Since") }, fmt(a.raised_at)));
      const td = el("td", { "data-label": tx("確認 / Ack", "Ack") });
      if (a.acknowledged_by) {
        td.textContent = tx("確認済 ", "Acknowledged by ") + a.acknowledged_by;
      } else {
        const b = el("button", { type: "button", class: "ack", "data-alert-id": a.id }, tx("確認 / Acknowledge", "Acknowledge"));
        b.setAttribute("aria-label", tx("確認 / Acknowledge: ", "Acknowledge: ") + what);
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
      const td0 = el("td", { class: "cell-level", "data-label": tx("レベル / Level", "Level") });
      td0.appendChild(el("span", { class: "badge", "data-level": String(o.level) }, String(o.level)));
      tr.appendChild(td0);
      const tdw = el("td", { "data-label": tx("内容 / What", "What") }, tx(o.names["ja-JP"] + " / " + o.names["en-US"], o.names["en-US"]) + " ");
      if (o.exercise) tdw.appendChild(el("span", { class: "tag-ex" }, tx("訓練 EXERCISE", "EXERCISE")));
      tr.appendChild(tdw);
      const town = muniName(o.municipality_code, o);
      tr.appendChild(el("td", { "data-label": tx("地域 / Where", "Where") }, town + " " + o.municipality_code));
      tr.appendChild(el("td", { "data-label": tx("発表 / Since", "Since") }, fmt(o.valid_from)));
      const td = el("td", { "data-label": tx("検討 / Consider", "Consider") });
      if (o.suggested_order) {
        const label = tx(`${o.suggested_order}（レベル${o.level}）を発令 / Issue level ${o.level}`,
          `Issue ${orderName(o.suggested_order)} (Level ${o.level})`);
        const b = el("button", { type: "button", class: "danger issue-suggested" }, label);
        b.setAttribute("aria-label", label + ": " + tx(o.names["ja-JP"], o.names["en-US"]) + " " + town);
        b.addEventListener("click", async () => {
          if (!window.confirm(tx(`${town}に${o.suggested_order}を発令しますか？ / Issue this order?`,
            `Issue ${orderName(o.suggested_order)} for ${town}?`))) return;
          b.disabled = true;
          try {
            const r = await api("POST", "/api/v1/orders", { level: o.level, municipality_code: o.municipality_code,
              note: o.names["ja-JP"], exercise: !!o.exercise });
            notice(tx(`避難情報を発令しました / Order issued: #${r.order_id}`, `Order issued: #${r.order_id}`));
            await loadAll();
          } catch (err) { b.disabled = false; notice(tx("発令できません / Could not issue: ", "Could not issue: ") + err.message); }
        });
        td.appendChild(el("span", {}, tx("検討: " + o.suggested_order + " / consider " + o.suggested_order + " ",
          "consider: " + orderName(o.suggested_order) + " ")));
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
      notice(tx("警報を確認しました / Alert acknowledged: #", "Alert acknowledged: #") + a.id);
      await loadAll();
    } catch (err) {
      b.disabled = false;
      notice(tx("確認できません / Could not acknowledge: ", "Could not acknowledge: ") + err.message);
    }
  }

  function renderOrders() {
    const ul = $("orders");
    ul.textContent = "";
    for (const a of state.alerts.filter((x) => x.condition === "evacuation_order" && x.order_id)) {
      const town = muniName(a.municipality_code, a);
      const item = el("li", { "data-order-id": a.order_id }, isEn()
        ? `Level ${a.level} ${town} ${a.area ? "drawn area" : "whole municipality"} ${fmt(a.raised_at)} `
        : `レベル${a.level} ${town} ${a.area ? "区域" : "全域"} ${fmt(a.raised_at)} `);
      if (a.exercise) item.appendChild(el("span", { class: "tag-ex" }, tx("訓練", "EXERCISE")));
      const b = el("button", { type: "button", class: "danger cancel-order" }, tx("解除 / Cancel", "Cancel"));
      b.setAttribute("aria-label", tx(`解除 / Cancel order ${a.order_id}`, `Cancel order ${a.order_id}`));
      b.addEventListener("click", async () => {
        if (!window.confirm(tx("この避難情報を解除しますか？ / Cancel this order?", "Cancel this order?"))) return;
        try {
          await api("POST", `/api/v1/orders/${a.order_id}/cancel`, {});
          notice(tx("避難情報を解除しました / Order cancelled", "Order cancelled"));
          await loadAll();
        } catch (err) { notice(tx("解除できません / Could not cancel: ", "Could not cancel: ") + err.message); }
      });
      item.appendChild(b);
      ul.appendChild(item);
    }
    if (!ul.children.length) ul.appendChild(el("li", { class: "muted" }, tx("なし / None", "None")));
    renderOrderMunicipalities();
  }

  /** The municipalities this account may issue an order for (api/authorization.py in_scope, api/bodies.py
   * covered_municipality): a municipal account its own only; a prefecture-wide one every covered municipality,
   * the drill town only while 訓練 / Exercise is ticked (a real order there is refused). */
  function renderOrderMunicipalities() {
    const sel = $("order-muni");
    const keep = sel.value;
    const exercise = $("order-exercise").checked;
    const own = state.account && state.account.municipality_code;
    let codes;
    if (own) codes = [own];
    else {
      codes = state.municipalities.filter((m) => m.covered !== false && m.code !== DRILL_TOWN).map((m) => m.code);
      // an exercise is mostly held in the drill town: first, and chosen when it is newly offered
      if (exercise && state.municipalities.some((m) => m.code === DRILL_TOWN)) codes.unshift(DRILL_TOWN);
    }
    const offered = [...sel.options].map((o) => o.value);
    sel.textContent = "";
    for (const code of codes) sel.appendChild(el("option", { value: code }, code + " " + muniName(code)));
    if (codes.includes(DRILL_TOWN) && !offered.includes(DRILL_TOWN)) sel.value = DRILL_TOWN;
    else if (keep && codes.includes(keep)) sel.value = keep;
  }

  function renderHazards() {
    const ul = $("hazards");
    ul.textContent = "";
    for (const h of state.hazards.filter((x) => x.properties.in_force !== false)) {
      const p = h.properties;
      const kind = isEn() ? p.hazard.replace(/_/g, " ") : HAZ_JA[p.hazard] || p.hazard;
      const item = el("li", { "data-hazard-id": p.id }, `${kind} ${p.label || ""} (${p.source}) `);
      if (p.exercise) item.appendChild(el("span", { class: "tag-ex" }, tx("訓練", "EXERCISE")));
      if (p.source === "staff") {
        const b = el("button", { type: "button", class: "secondary" }, tx("削除 / Remove", "Remove"));
        b.setAttribute("aria-label", tx("削除 / Remove ", "Remove ") + (p.label || p.id));
        b.addEventListener("click", async () => {
          try { await api("DELETE", "/api/v1/hazards/" + encodeURIComponent(p.id)); notice(tx("危険区域を削除しました / Hazard area removed", "Hazard area removed")); await loadAll(); }
          catch (err) { notice(tx("削除できません / Could not remove: ", "Could not remove: ") + err.message); }
        });
        item.appendChild(b);
      }
      ul.appendChild(item);
    }
    if (!ul.children.length) ul.appendChild(el("li", { class: "muted" }, tx("なし / None", "None")));
  }

  function renderShelters() {
    const tb = $("shelters");
    if (tb.contains(document.activeElement)) return; // do not disturb someone typing
    tb.textContent = "";
    for (const s of state.shelters) {
      const tr = el("tr", { "data-shelter-id": s.id });
      const name = isEn() && s.name_en ? s.name_en : s.name;
      tr.appendChild(el("td", { "data-label": tx("名前 / Name", "Name") }, name));
      const open = el("input", { type: "checkbox", "aria-label": name + tx(" 開設 / open", " open") });
      open.checked = !!s.is_open;
      const tdo = el("td", { "data-label": tx("開設 / Open", "Open") });
      tdo.appendChild(open);
      tr.appendChild(tdo);
      const occ = el("input", { type: "number", min: "0", max: String(MAX_PEOPLE), step: "1", inputmode: "numeric", size: "5",
        "aria-label": name + tx(" 収容人数 / occupancy", " occupancy") });
      occ.value = s.occupancy == null ? "" : String(s.occupancy);
      const tdc = el("td", { "data-label": tx("収容 / Occupancy", "Occupancy") });
      tdc.appendChild(occ);
      tdc.appendChild(document.createTextNode(" / " + (s.capacity == null ? "?" : s.capacity)));
      tr.appendChild(tdc);
      const b = el("button", { type: "button", class: "secondary", "aria-label": name + tx(" 更新 / update", " update") }, tx("更新 / Update", "Update"));
      b.addEventListener("click", async () => {
        // an emptied or unreadable box is refused, never sent as 0 (found: a full shelter then looked empty)
        const occupancy = wholeNumber(occ, 0, MAX_PEOPLE);
        if (occupancy === null) {
          occ.setAttribute("aria-invalid", "true");
          notice(tx(`収容人数を 0〜${MAX_PEOPLE} の整数で入力してください（${name}、更新していません） / `
            + `Enter the occupancy as a whole number from 0 to ${MAX_PEOPLE} (${name}: not updated)`,
            `Enter the occupancy as a whole number from 0 to ${MAX_PEOPLE} (${name}: not updated)`));
          occ.focus();
          return;
        }
        occ.removeAttribute("aria-invalid");
        try {
          await api("PATCH", "/api/v1/shelters/" + encodeURIComponent(s.id), { occupancy, is_open: open.checked });
          notice(tx("避難所を更新しました / Shelter updated: ", "Shelter updated: ") + name);
          b.focus();
          await loadAll();
        } catch (err) { notice(tx("更新できません / Could not update: ", "Could not update: ") + err.message); }
      });
      const tdb = el("td", { "data-label": tx("更新 / Update", "Update") });
      tdb.appendChild(b);
      tr.appendChild(tdb);
      tb.appendChild(tr);
    }
  }

  function renderStations() {
    const sel = $("station");
    const keep = sel.value;
    if (sel.options.length !== state.stations.length || sel.getAttribute("data-lang") !== state.lang) {
      sel.setAttribute("data-lang", state.lang);
      sel.textContent = "";
      for (const s of state.stations) sel.appendChild(el("option", { value: s.id }, isEn() ? stationName(s) : s.name + (s.name_en ? " / " + s.name_en : "")));
    }
    if (keep) sel.value = keep;
    if (!state.station && state.stations.length) selectStation(state.stations[0].id);
    else if (state.station) showStationNow();
  }

  // -- the map -------------------------------------------------------------------------------------------
  function drawMap() {
    if (!map) return;
    const areas = state.hazards.map((h) => ({ geometry: h.geometry, cls: h.properties.in_force === false ? "hazard-off" : "hazard",
      title: (h.properties.label || h.properties.hazard) + (h.properties.in_force === false ? tx("（未発動）", " (not in force)") : ""), id: h.properties.id }));
    for (const a of state.alerts) if (a.area) areas.push({ geometry: a.area, cls: "order-area", title: tx("避難情報 レベル", "Evacuation order, level ") + a.level });
    map.setLayer("areas", areas);
    const pts = state.shelters.map((s) => ({ point: [s.lon, s.lat], r: 7, cls: s.is_open ? "shelter" : "shelter-closed", id: s.id,
      title: `${isEn() && s.name_en ? s.name_en : s.name} ${s.occupancy}/${s.capacity == null ? "?" : s.capacity}${s.is_open ? "" : tx("（閉鎖）", " (closed)")}` }));
    for (const s of state.stations) {
      if (!s.location) continue;
      const lv = stationLevel(s.id);
      pts.push({ point: [s.location.lon, s.location.lat], shape: "square", r: 10, cls: "station st-" + lv, id: s.id,
        title: `${stationName(s)} ${s.latest ? s.latest.value + " m" : ""} ${tx("レベル", "level ")}${lv}${stationNote(s)}`, label: stationName(s), labelPriority: lv,
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
    b.textContent = on ? tx("描画終了 / Stop drawing", "Stop drawing") : tx("描画開始 / Start drawing", "Start drawing");
  }

  // -- orders and hazard areas ------------------------------------------------------------------------------
  async function issueOrder(ev) {
    ev.preventDefault();
    const body = { level: Number($("order-level").value), municipality_code: $("order-muni").value || undefined,
      note: $("order-note").value || undefined, exercise: $("order-exercise").checked };
    if (document.querySelector("input[name=order-area]:checked").value === "drawn") {
      const area = drawnPolygon();
      if (!area) { notice(tx("区域を地図に描いてください（3点以上） / Draw the area on the map (3 points or more)", "Draw the area on the map (3 points or more)")); return; }
      body.area = area;
    }
    try {
      const r = await api("POST", "/api/v1/orders", body);
      notice(tx(`避難情報を発令しました / Order issued: #${r.order_id}`, `Order issued: #${r.order_id}`));
      setDrawing(false);
      await loadAll();
    } catch (err) { notice(tx("発令できません / Could not issue: ", "Could not issue: ") + err.message); }
  }

  async function addHazard(ev) {
    ev.preventDefault();
    const geometry = drawnPolygon();
    if (!geometry) { notice(tx("区域を地図に描いてください（3点以上） / Draw the area on the map (3 points or more)", "Draw the area on the map (3 points or more)")); return; }
    try {
      const r = await api("POST", "/api/v1/hazards", { geometry, hazard: $("hz-type").value, label: $("hz-label").value,
        exercise: $("hz-exercise").checked });
      notice(tx("危険区域を登録しました / Hazard area added: ", "Hazard area added: ") + r.id);
      state.draw = [];
      setDrawing(false);
      await loadAll();
    } catch (err) { notice(tx("登録できません / Could not add: ", "Could not add: ") + err.message); }
  }

  // -- station charts --------------------------------------------------------------------------------------
  function selectStation(id) {
    state.station = id;
    $("station").value = id;
    showStationNow();
    for (const name in CHARTS) drawChart(name);
  }

  /* the charts by their element's id: the bucket and the span they show (to now) */
  const CHARTS = { "chart-24h": ["10m", 24 * 3600e3], "chart-7d": ["1h", 7 * 24 * 3600e3] };
  function drawChart(name) {
    const [bucket, span] = CHARTS[name], now = Date.now();
    chart($(name), state.station, bucket, new Date(now - span), new Date(now + 300e3));
  }

  function showStationNow() {
    const s = state.stations.find((x) => x.id === state.station);
    if (!s) return;
    const lv = stationLevel(s.id);
    const reading = s.latest ? s.latest.value + " m @ " + fmt(s.latest.ts) : tx("データなし / no data", "no data");
    $("station-now").textContent = isEn()
      ? `${stationName(s)}${s.river_en ? " (" + s.river_en + ")" : ""}: ${reading}, level ${lv}${stationNote(s)}`
      : `${s.name}（${s.river || ""}）: ${reading}・レベル ${lv}${stationNote(s)}`;
  }

  async function chart(svg, id, bucket, from, to) {
    const q = new URLSearchParams({ bucket, from: from.toISOString(), to: to.toISOString() });
    let rows = [];
    try {
      rows = (await api("GET", `/api/v1/stations/${encodeURIComponent(id)}/readings?` + q)).readings || [];
      answered(svg.id);
    } catch (err) {
      if (refusedForNow(err)) {
        // the chart shown stays (this station's; another's is not shown for it: "not loaded yet")
        waitOut(svg.id, err, () => { if (state.station) drawChart(svg.id); });
        if (svg.getAttribute("data-station") === id) return;
        rows = null;
      } else rows = [];
    }
    svg.setAttribute("data-station", id);
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
      add("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, fmt(new Date(t).toISOString(), false));
    }
    add("text", { x: W - R, y: H - B - 4, "text-anchor": "end", class: "zone" }, tx("日本時間", "JST"));
    add("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" });
    add("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" });
    for (const [name, v] of ths) {
      add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "th th-" + name, "data-threshold": name });
      add("text", { x: W - R + 4, y: y(v) + 4 }, `${thName(name)} ${v}`);
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
      add("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, rows === null
        ? tx("まだ読み込めていません / not loaded yet", "not loaded yet") : tx("データなし / no data", "no data"));
    }
    if (rows === null) rows = [];
    const max = rows.length ? Math.max(...rows.map((r) => r.max)) : null;
    title.textContent = isEn()
      ? `${stationName(st) || id}: ${bucket === "10m" ? "24 h" : "7 days"}, ${rows.length} intervals` +
        (max != null ? `, max ${max.toFixed(2)} m` : "") + (ths.length ? `, thresholds ${ths.map(([k, v]) => thName(k) + " " + v).join(", ")}` : "")
      : `${st.name || id}: ${bucket === "10m" ? "24時間 / 24 h" : "7日間 / 7 days"}, ${rows.length} 区間` +
        (max != null ? `, 最高 max ${max.toFixed(2)} m` : "") + (ths.length ? `, 基準 thresholds ${ths.map(([k, v]) => thName(k) + " " + v).join(", ")}` : "");
    svg.setAttribute("data-points", String(rows.length));
  }

  // -- live ------------------------------------------------------------------------------------------------
  /* Server-Sent Events read with fetch: EventSource cannot send the Authorization header that staff
   * streams (audience=all) need. Reconnects with Last-Event-ID; stops at logout. */
  let pending = null;
  function connect() {
    const soon = () => {
      if (pending) return;
      pending = setTimeout(() => { pending = null; loadAll(true); }, 300);
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
          if (!r.ok || !r.body) throw httpError(r);
          answered("live");
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
              // official: JMA information came into force or ended (api/events.py), shown live, not at the next poll
              if (type === "alert" || type === "hazard_state" || type === "official") soon();
            }
          }
        } catch (err) {
          if (ctl.signal.aborted) return;
          // refused (429: too many streams open from this address, or the rate limit): after Retry-After
          if (refusedForNow(err)) { await new Promise((res) => waitOut("live", err, res)); continue; }
        }
        await new Promise((res) => setTimeout(res, 3000));
      }
    };
    run();
  }

  /* the map's roads (SvgMap asks for a view's): refused for now, the roads shown stay (SvgMap keeps them when this
   * throws) and are asked again after Retry-After for the view shown then; another 4xx is an answer, no roads */
  let roadsRefused = "";
  async function roads(b) {
    const bbox = b.map((v) => v.toFixed(4)).join(",");
    // the same view redrawn (a reload of the lists redraws the map's labels) waits for the retry; a view moved to
    // by staff is asked for at once
    if (waiting("roads") && bbox === roadsRefused) throw new Error("waiting for Retry-After");
    const r = await fetch("/api/v1/network.geojson?bbox=" + bbox);
    if (r.ok) { answered("roads"); return (await r.json()).features; }
    const err = httpError(r);
    if (refusedForNow(err)) {
      roadsRefused = bbox;
      waitOut("roads", err, () => { map.roadKey = ""; map.loadRoads(); });
      throw err;
    }
    return [];
  }

  function start() {
    map = new S.SvgMap($("map-svg"), { aspect: 0.75, roads, onTap: (p) => addVertex(p) });
    S.keyboard($("map"), map, (p) => addVertex(p));
    window.sonaeStaffMap = map;
    for (const h of HAZARDS) $("hz-type").appendChild(el("option", { value: h }, HAZ_JA[h] + " / " + h));
    for (const b of document.querySelectorAll(".langs button[data-lang]")) b.addEventListener("click", () => setLang(b.dataset.lang));
    $("order-exercise").addEventListener("change", renderOrderMunicipalities);
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
    const asked = new URLSearchParams(location.search).get("lang");
    setLang(asked || (/^en\b/i.test(navigator.language || "") ? "en" : "ja"));
    document.body.setAttribute("data-ready", "true");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
