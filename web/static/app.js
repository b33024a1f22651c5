// waphone console: vanilla JS, no dependencies, nothing inline (the CSP forbids it).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const pages = ["now", "history", "health", "headset", "settings"];
  let state = "idle", muted = false, stream = null, levelTimer = null;

  async function api(method, path, body) {
    const opt = { method, headers: {}, credentials: "same-origin" };
    if (body !== undefined) { opt.headers["Content-Type"] = "application/json"; opt.body = JSON.stringify(body); }
    const r = await fetch(path, opt);
    if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
    let data = {};
    try { data = await r.json(); } catch (e) { /* empty body */ }
    if (!r.ok) throw new Error(data.error || r.statusText);
    return data;
  }

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  // ---- Now ----
  function showState(st, info, since) {
    state = st || "idle";
    const s = $("state");
    s.textContent = state;
    s.className = "state state-" + state;
    s.dataset.state = state;
    $("since").textContent = since && state !== "idle" ? "since " + new Date(since).toLocaleTimeString() : "";
    $("btn-answer").disabled = state !== "ringing";
    $("btn-hangup").disabled = state === "idle";
    $("btn-mute").disabled = state !== "talking";
    $("btn-mute").textContent = muted ? "Unmute" : "Mute";
    const dl = $("caller");
    dl.replaceChildren();
    if (info && state !== "idle") {
      const rows = [["Caller", info.remote], ["Name", info.display_name], ["WhatsApp user", info.username],
        ["BSUID", info.user_id], ["Parent BSUID", info.parent_user_id], ["CTA payload", info.cta_payload],
        ["Deeplink payload", info.deeplink_payload], ["WACID", info.wacid]];
      for (const [k, v] of rows) {
        if (!v) continue;
        dl.append(el("dt", k), el("dd", v));
      }
      dl.hidden = false;
    } else {
      dl.hidden = true;
    }
    if (state === "talking") $("quality").hidden = false;
    if (state === "ringing" || state === "dialing") resetPlots();
  }

  const series = { jitter: [], loss: [], rtt: [], mos: [] };
  const maxPoints = 120;
  function resetPlots() { for (const k in series) series[k].length = 0; drawPlots(); }
  function pushMedia(m) {
    const v = { jitter: m.JitterMs || 0, loss: m.LossPercent || 0, rtt: m.RTTMs || 0, mos: m.MOS || 0 };
    for (const k in v) { series[k].push(v[k]); if (series[k].length > maxPoints) series[k].shift(); }
    $("v-jitter").textContent = v.jitter.toFixed(1) + " ms";
    $("v-loss").textContent = v.loss.toFixed(1) + " %";
    $("v-rtt").textContent = v.rtt.toFixed(0) + " ms";
    $("v-mos").textContent = v.mos.toFixed(2);
    $("quality").dataset.points = String(series.mos.length);
    drawPlots();
  }
  function drawPlot(id, data, lo, hi, color) {
    const c = $(id);
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 300, h = c.clientHeight || 80;
    if (c.width !== w * dpr) { c.width = w * dpr; c.height = h * dpr; }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    g.strokeStyle = "#d0d7de"; g.lineWidth = 1;
    g.beginPath(); g.moveTo(0, h - 0.5); g.lineTo(w, h - 0.5); g.stroke();
    if (!data.length) return;
    if (data.length === 1) { data = [data[0], data[0]]; }
    const top = Math.max(hi, ...data);
    g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
    data.forEach((v, i) => {
      // The line fills the width from ten seconds on, then scrolls (two minutes).
      const span = Math.max(data.length, 10) - 1;
      const x = data.length === 1 ? 0 : (i / span) * w;
      const y = h - 2 - ((v - lo) / (top - lo || 1)) * (h - 4);
      if (i === 0) g.moveTo(x, y); else g.lineTo(x, y);
    });
    g.stroke();
  }
  function drawPlots() {
    drawPlot("plot-jitter", series.jitter, 0, 30, "#0969da");
    drawPlot("plot-loss", series.loss, 0, 5, "#cf222e");
    drawPlot("plot-rtt", series.rtt, 0, 300, "#8250df");
    drawPlot("plot-mos", series.mos, 1, 4.5, "#1a7f37");
  }

  function connect() {
    if (stream) stream.close();
    stream = new EventSource("/api/events");
    stream.addEventListener("open", () => { $("live").textContent = "live"; });
    stream.addEventListener("error", () => { $("live").textContent = "reconnecting…"; });
    stream.addEventListener("status", (e) => {
      const st = JSON.parse(e.data);
      muted = !!st.muted;
      showState(st.state, st.call, st.since);
      if (st.media) pushMedia(st.media);
    });
    stream.addEventListener("phone", (e) => {
      const ev = JSON.parse(e.data);
      muted = !!ev.muted;
      showState(ev.state, ev.call, ev.at);
    });
    stream.addEventListener("media", (e) => pushMedia(JSON.parse(e.data)));
  }

  async function command(path, body) {
    $("cmd-error").textContent = "";
    try {
      const r = await api("POST", path, body);
      if (r.muted !== undefined) { muted = r.muted; $("btn-mute").textContent = muted ? "Unmute" : "Mute"; }
    } catch (e) { $("cmd-error").textContent = e.message; }
  }

  // ---- History ----
  function fmtDur(s) { s = Math.round(s); return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0"); }
  async function loadHistory() {
    const q = new URLSearchParams();
    if ($("h-from").value) q.set("from", $("h-from").value);
    if ($("h-to").value) q.set("to", $("h-to").value);
    $("csv").href = "/history.csv" + (q.toString() ? "?" + q : "");
    $("history-error").textContent = "";
    const tb = $("history").tBodies[0];
    try {
      const r = await api("GET", "/api/history?" + q);
      tb.replaceChildren();
      for (const c of r.calls) {
        const tr = el("tr");
        const who = c.username ? c.remote + " (" + c.username + ")" : c.remote;
        const cells = [["When", new Date(c.start).toLocaleString()], ["Dir", c.direction === "inbound" ? "in" : "out"],
          ["Remote", who], ["Duration", c.answered ? fmtDur(c.duration_s) : "—"], ["Ended by", c.ended_by],
          ["MOS", c.mos ? c.mos.toFixed(2) : ""], ["WACID", c.wacid]];
        for (const [label, v] of cells) {
          const td = el("td", v, label === "WACID" ? "wacid" : "");
          td.dataset.label = label;
          tr.append(td);
        }
        tb.append(tr);
      }
      if (!r.calls.length) { const tr = el("tr"); const td = el("td", "No calls.", "muted"); td.colSpan = 7; tr.append(td); tb.append(tr); }
    } catch (e) { $("history-error").textContent = e.message; }
  }

  // ---- Health ----
  function kv(tableId, obj) {
    const tb = $(tableId).tBodies[0];
    tb.replaceChildren();
    if (!obj) { const tr = el("tr"); tr.append(el("td", "not available"), el("td", "")); tb.append(tr); return; }
    for (const k of Object.keys(obj)) { const tr = el("tr"); tr.append(el("td", k.replaceAll("_", " ")), el("td", obj[k])); tb.append(tr); }
  }
  async function loadHealth() {
    $("health-loading").hidden = false;
    try {
      const r = await api("GET", "/api/health");
      const ul = $("checks"); ul.replaceChildren();
      for (const c of r.checks || []) ul.append(el("li", c.text, c.level));
      if (!r.checks) ul.append(el("li", "no doctor on this phone"));
      const cl = $("certs"); cl.replaceChildren();
      for (const c of r.certs || []) {
        const days = Math.floor((new Date(c.not_after) - Date.now()) / 86400000);
        cl.append(el("li", c.use + ": " + c.subject + ", expires " + new Date(c.not_after).toLocaleDateString() + " (" + days + " days)"));
      }
      kv("defence", r.defence);
      kv("audio", r.audio);
      $("meta").textContent = r.meta ? JSON.stringify(r.meta, null, 2) : (r.meta_error || "not read");
    } catch (e) { $("checks").replaceChildren(el("li", e.message, "fail")); }
    $("health-loading").hidden = true;
  }

  // ---- Headset ----
  async function tone() {
    $("tone-result").textContent = "playing…";
    try { await api("POST", "/api/headset/tone"); $("tone-result").textContent = "done"; }
    catch (e) { $("tone-result").textContent = e.message; }
  }
  function startLevel() {
    stopLevel();
    levelTimer = setInterval(async () => {
      try {
        const r = await api("GET", "/api/headset/level");
        const pct = Math.min(100, Math.round(Math.sqrt(r.level) * 100));
        $("meter-bar").style.width = pct + "%";
        $("meter-value").textContent = r.level > 0 ? (20 * Math.log10(r.level)).toFixed(0) + " dBFS" : "silence";
      } catch (e) { $("meter-value").textContent = e.message; stopLevel(); }
    }, 200);
  }
  function stopLevel() { if (levelTimer) clearInterval(levelTimer); levelTimer = null; }

  // ---- Settings ----
  function fillSelect(id, devices, current, allowEmpty) {
    const s = $(id); s.replaceChildren();
    const opts = new Set(["default", "null"]);
    for (const d of devices || []) opts.add("device:" + d);
    if (current) opts.add(current);
    if (allowEmpty) s.append(new Option("(the earpiece)", ""));
    for (const o of opts) s.append(new Option(o, o));
    s.value = current || "";
  }
  async function loadSettings() {
    try {
      const r = await api("GET", "/api/settings");
      const s = r.settings;
      $("s-answer").value = s.answer; $("s-auto").value = s.auto_answer_delay; $("s-ring").value = s.ring_timeout;
      $("s-speed").value = s.speed_dial;
      fillSelect("s-capture", r.devices, s.capture); fillSelect("s-playback", r.devices, s.playback);
      fillSelect("s-ringer", r.devices, s.ringer, true);
      $("settings-result").textContent = r.devices_error || "";
    } catch (e) { $("settings-result").textContent = e.message; }
  }
  async function saveSettings(ev) {
    ev.preventDefault();
    const body = { answer: $("s-answer").value, auto_answer_delay: $("s-auto").value, ring_timeout: $("s-ring").value,
      speed_dial: $("s-speed").value, capture: $("s-capture").value, playback: $("s-playback").value, ringer: $("s-ringer").value };
    try {
      const r = await api("POST", "/api/settings", body);
      $("settings-result").textContent = r.restart && r.restart.length ? "Saved. Takes effect after a restart: " + r.restart.join(", ") : "Saved and applied.";
    } catch (e) { $("settings-result").textContent = e.message; }
  }

  // ---- pages ----
  function route() {
    const name = pages.includes(location.hash.slice(1)) ? location.hash.slice(1) : "now";
    for (const p of pages) { $("page-" + p).hidden = p !== name; $("nav-" + p).classList.toggle("active", p === name); }
    if (name === "headset") startLevel(); else stopLevel();
    if (name === "history") loadHistory();
    if (name === "health") loadHealth();
    if (name === "settings") loadSettings();
    if (name === "now") drawPlots();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("btn-answer").addEventListener("click", () => command("/api/answer"));
    $("btn-hangup").addEventListener("click", () => command("/api/hangup"));
    $("btn-mute").addEventListener("click", () => command("/api/mute"));
    $("form-call").addEventListener("submit", (e) => { e.preventDefault(); command("/api/call", { number: $("call-number").value }); });
    $("form-dtmf").addEventListener("submit", (e) => { e.preventDefault(); command("/api/dtmf", { digits: $("dtmf-digits").value }); });
    $("form-history").addEventListener("submit", (e) => { e.preventDefault(); loadHistory(); });
    $("btn-tone").addEventListener("click", tone);
    $("form-settings").addEventListener("submit", saveSettings);
    window.addEventListener("hashchange", route);
    connect();
    route();
  });
})();
