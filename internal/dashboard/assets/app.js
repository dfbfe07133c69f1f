// splitter dashboard: the overview and one release, live from the
// server's event stream. Text goes into the page as text (never as HTML).
"use strict";

const token = document.querySelector('meta[name="splitter-token"]').content;
const splits = new Map(); // "ns/name" -> summary
let current = null;        // "ns/name" of the release view
let detail = null;         // its last detail
let charts = null;         // {traffic, latency}
let timelineAt = 0;        // when the timeline was last read (ms)
let timelineTimer = null;

const $ = (id) => document.getElementById(id);
const colors = { blue: "#2f6fdf", green: "#1f9d55" };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k === "width") e.style.width = v; // CSSOM: the CSP refuses style attributes
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const key = (s) => s.namespace + "/" + s.name;
const time = (t) => (t ? new Date(t).toLocaleTimeString([], { hour12: false }) : "");
const dateTime = (t) => (t ? new Date(t).toLocaleString() : "");
function took(a, b) {
  const s = Math.round((new Date(b) - new Date(a)) / 1000);
  if (!(s >= 0)) return "";
  return s < 60 ? s + "s" : s < 3600 ? Math.floor(s / 60) + "m" + (s % 60) + "s" : Math.floor(s / 3600) + "h" + Math.floor((s % 3600) / 60) + "m";
}

function weightBar(s) {
  const g = s.weights.green, b = s.weights.blue;
  return el("div", {},
    el("div", { class: "bar", title: "blue " + b + "% / green " + g + "%" },
      el("div", { class: "blue", width: b + "%" }), el("div", { class: "green", width: g + "%" })),
    el("span", { class: "weight", dataset: { green: g, blue: b } }, "blue " + b + "% · green " + g + "%"));
}

function chips(checks) {
  return el("span", {}, ...checks.map((c) =>
    el("span", { class: "chip " + c.verdict, title: (c.value || "no data") + (c.bound ? " (bound " + c.bound + ")" : "") + (c.message ? ": " + c.message : "") },
      c.name + " " + c.verdict)));
}

function waiting(s) {
  if (s.gate) return "approval: " + s.gate;
  if (s.pausedAt) return "resume (paused " + time(s.pausedAt) + ")";
  return "";
}

function lastRelease(s) {
  if (!s.last) return "";
  return s.last.outcome + " " + (s.last.reason || "") + " · " + dateTime(s.last.finishedAt);
}

function stepText(s) {
  return s.step > 0 ? s.step + "/" + s.steps.length : "";
}

// rank/sort as the server does: recent rollbacks first, releases under way, the rest.
function rank(s) {
  if (s.recentRollback) return 0;
  return ["Preparing", "Shifting", "AwaitingApproval", "Promoting"].includes(s.phase) ? 1 : 2;
}
function sorted() {
  return [...splits.values()].sort((a, b) => {
    const ra = rank(a), rb = rank(b);
    if (ra !== rb) return ra - rb;
    if (ra === 0 && a.last && b.last && a.last.finishedAt !== b.last.finishedAt) return a.last.finishedAt < b.last.finishedAt ? 1 : -1;
    return key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0;
  });
}

function renderOverview() {
  const rows = sorted().map((s) =>
    el("tr", { class: "row" + (s.recentRollback ? " rollback" : ""), dataset: { split: key(s), phase: s.phase }, onclick: () => { location.hash = "#/" + key(s); } },
      el("td", {}, el("a", { href: "#/" + key(s) }, key(s))),
      el("td", {}, el("span", { class: "phase " + s.phase }, s.phase || "—")),
      el("td", {}, weightBar(s)),
      el("td", {}, stepText(s)),
      el("td", {}, chips(s.checks)),
      el("td", {}, waiting(s)),
      el("td", {}, lastRelease(s))));
  $("splits").replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
}

// ---- one release ----

// The buttons stay the same elements while the release is shown (a
// click never lands on one being replaced); each change updates them.
let shown = null; // the summary the buttons act on
function renderButtons(s) {
  shown = s;
  const box = $("r-buttons");
  if (box.dataset.split !== key(s)) {
    box.dataset.split = key(s);
    box.replaceChildren(...["approve", "pause", "resume", "abort", "retry"].map((verb) => {
      const b = el("button", { type: "button", dataset: { verb } }, verb);
      b.addEventListener("click", () => act(shown, verb, b));
      return b;
    }));
  }
  for (const b of box.children) {
    const why = s.actions[b.dataset.verb];
    b.disabled = !!why;
    b.title = why || b.dataset.verb + " " + key(s);
  }
}

async function act(s, verb, button) {
  // Abort snaps traffic back: a second click confirms it.
  if (verb === "abort" && !button.classList.contains("armed")) {
    button.classList.add("armed");
    button.textContent = "confirm abort";
    setTimeout(() => { button.classList.remove("armed"); button.textContent = "abort"; }, 5000);
    return;
  }
  const expect = verb === "approve" ? s.gate : s.releaseID;
  const out = $("r-result");
  out.className = "";
  out.textContent = verb + "…";
  try {
    const r = await fetch("/api/splits/" + encodeURIComponent(s.namespace) + "/" + encodeURIComponent(s.name) + "/" + verb + "?expect=" + encodeURIComponent(expect || ""),
      { method: "POST", headers: { "X-Splitter-Token": token } });
    const text = await r.text();
    if (!r.ok) throw new Error(text.trim() || r.statusText);
    out.textContent = JSON.parse(text).done;
  } catch (e) {
    out.className = "error";
    out.textContent = e.message;
  }
}

function renderRelease(d) {
  const s = d;
  $("r-name").textContent = key(s);
  const ph = $("r-phase");
  ph.className = "phase " + s.phase;
  ph.textContent = s.phase;
  $("r-weight").replaceChildren(weightBar(s));
  const st = d.status;
  const facts = [];
  if (st.live) facts.push("live " + st.live + (st.liveRevision ? " (" + st.liveRevision.slice(0, 8) + ")" : ""));
  if (st.candidate) facts.push("candidate " + st.candidate + (st.candidateRevision ? " (" + st.candidateRevision.slice(0, 8) + ")" : ""));
  if (s.step > 0) facts.push("step " + s.step + "/" + s.steps.length + " of [" + s.steps.join(", ") + "]");
  if (s.gate) facts.push("waiting for approval at " + s.gate);
  if (s.pausedAt) facts.push("paused since " + time(s.pausedAt));
  facts.push("policy " + s.policy);
  $("r-facts").textContent = facts.join(" · ");
  renderButtons(s);

  const counts = (name) => d.counts.filter((c) => c.slo === name)
    .map((c) => c.color + ": " + c.requests + " requests, " + c.bad + " bad").join("; ");
  $("r-checks").replaceChildren(...s.checks.map((c) =>
    el("tr", { dataset: { check: c.name } },
      el("td", {}, c.name), el("td", {}, el("span", { class: "chip " + c.verdict }, c.verdict)),
      el("td", {}, c.value || "—"), el("td", {}, c.bound || ""), el("td", {}, c.step || ""),
      el("td", {}, counts(c.name)), el("td", { class: "muted" }, c.message || ""))));
  $("r-history").replaceChildren(...(st.history || []).map((h) =>
    el("tr", { dataset: { outcome: h.outcome } },
      el("td", {}, (h.revision || "").slice(0, 8) + (h.attempt > 1 ? " (attempt " + h.attempt + ")" : "")),
      el("td", {}, h.outcome), el("td", {}, h.reason), el("td", {}, h.step || ""),
      el("td", {}, dateTime(h.startedAt)), el("td", {}, took(h.startedAt, h.finishedAt)), el("td", { class: "muted" }, h.message || ""))));
  $("r-actions").replaceChildren(...(st.actions || []).map((a) =>
    el("li", {}, time(a.at) + " " + a.verb + " by " + a.by + (a.detail ? " (" + a.detail + ")" : ""))));
}

// A Chart.js plugin: a vertical line at each marker.
const markerLines = {
  id: "markerLines",
  afterDatasetsDraw(chart, _args, opts) {
    const ms = opts.markers || [];
    const { ctx, chartArea, scales } = chart;
    ctx.save();
    for (const m of ms) {
      const x = scales.x.getPixelForValue(m.t);
      if (x < chartArea.left || x > chartArea.right) continue;
      const strong = m.kind === "snapback";
      ctx.strokeStyle = strong ? "#d64545" : m.warning ? "rgba(214,69,69,.5)" : "rgba(107,114,128,.35)";
      ctx.lineWidth = strong ? 2 : 1;
      ctx.setLineDash(strong ? [] : [3, 3]);
      ctx.beginPath();
      ctx.moveTo(x, chartArea.top);
      ctx.lineTo(x, chartArea.bottom);
      ctx.stroke();
      if (strong || m.kind === "step" || m.kind === "pause" || m.kind === "promoted") {
        ctx.fillStyle = strong ? "#d64545" : "#6b7280";
        ctx.font = "11px system-ui";
        ctx.fillText(strong ? "snap-back" : m.kind, x + 3, chartArea.top + 10);
      }
    }
    ctx.restore();
  },
};

function xScale(tl) {
  return { type: "linear", min: tl.from, max: tl.to,
    ticks: { callback: (v) => new Date(v).toLocaleTimeString([], { hour12: false }), maxTicksLimit: 6, maxRotation: 0 } };
}
// The top of an axis: the data's highest value and a margin, at least floor.
function axisTop(series, floor) {
  let m = floor;
  for (const ps of series) for (const p of ps) m = Math.max(m, p.y);
  return m === floor ? floor : Math.ceil(m * 1.1);
}
const xy = (ps) => (ps || []).map((p) => ({ x: p.t, y: p.v }));

function renderTimeline(tl) {
  if (!window.Chart) return;
  const blueErr = xy(tl.errorRate.blue).map((p) => ({ x: p.x, y: 100 * p.y }));
  const greenErr = xy(tl.errorRate.green).map((p) => ({ x: p.x, y: 100 * p.y }));
  const traffic = {
    type: "line",
    data: {
      datasets: [
        { label: "green weight %", data: xy(tl.weight), yAxisID: "w", stepped: true, borderColor: colors.green, backgroundColor: "rgba(31,157,85,.12)", fill: true, pointRadius: 0 },
        { label: "blue error rate %", data: blueErr, yAxisID: "e", borderColor: colors.blue, pointRadius: 0, borderWidth: 1.5 },
        { label: "green error rate %", data: greenErr, yAxisID: "e", borderColor: colors.green, borderDash: [5, 3], pointRadius: 0, borderWidth: 1.5 },
      ],
    },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, elements: { line: { tension: 0 } },
      scales: { x: xScale(tl), w: { position: "left", min: 0, max: 100, title: { display: true, text: "weight %" } },
        e: { position: "right", min: 0, max: axisTop([blueErr, greenErr], 1), title: { display: true, text: "error rate %" }, grid: { drawOnChartArea: false } } },
      plugins: { markerLines: { markers: tl.markers }, legend: { labels: { boxWidth: 12 } } },
    },
    plugins: [markerLines],
  };
  const latency = {
    type: "line",
    data: {
      datasets: [
        { label: "blue p99 ms", data: xy(tl.latencyP99.blue), borderColor: colors.blue, pointRadius: 0, borderWidth: 1.5 },
        { label: "green p99 ms", data: xy(tl.latencyP99.green), borderColor: colors.green, borderDash: [5, 3], pointRadius: 0, borderWidth: 1.5 },
      ],
    },
    options: {
      animation: false, maintainAspectRatio: false, parsing: false, elements: { line: { tension: 0 } },
      scales: { x: xScale(tl), y: { min: 0, max: axisTop([xy(tl.latencyP99.blue), xy(tl.latencyP99.green)], 10), title: { display: true, text: "p99 latency ms" } } },
      plugins: { markerLines: { markers: tl.markers }, legend: { labels: { boxWidth: 12 } } },
    },
    plugins: [markerLines],
  };
  if (charts) { charts.traffic.destroy(); charts.latency.destroy(); }
  charts = { traffic: new Chart($("c-traffic"), traffic), latency: new Chart($("c-latency"), latency) };
  $("r-problem").textContent = tl.problem ? tl.problem + (tl.weightSource === "status" ? "" : "") : (tl.weightSource === "status" ? "weight from the Split's status (splitter_split_weight not in Prometheus)" : "");
  $("r-markers").replaceChildren(...tl.markers.map((m) =>
    el("li", { class: m.warning ? "warning" : "", dataset: { kind: m.kind }, title: m.detail || "" },
      el("span", { class: "kind" }, m.kind), time(m.t) + " " + m.label + (m.detail ? " — " + m.detail : ""))));
}

// A weight change seen on the stream goes on the chart at once; the
// rest of the timeline is read again at most every 5 s.
function liveWeight(s) {
  if (!charts) return;
  const ds = charts.traffic.data.datasets[0].data;
  const now = Date.now();
  ds.push({ x: now, y: s.weights.green });
  const x = charts.traffic.options.scales.x;
  if (now > x.max) { x.max = now; charts.latency.options.scales.x.max = now; charts.latency.update("none"); }
  charts.traffic.update("none");
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) throw new Error((await r.text()).trim() || r.statusText);
  return r.json();
}

async function loadDetail() {
  const k = current;
  try {
    const d = await getJSON("/api/splits/" + k.split("/").map(encodeURIComponent).join("/"));
    if (k !== current) return;
    detail = d;
    renderRelease(d);
  } catch (e) {
    $("r-result").className = "error";
    $("r-result").textContent = e.message;
  }
}

async function loadTimeline() {
  const k = current;
  timelineAt = Date.now();
  try {
    const tl = await getJSON("/api/splits/" + k.split("/").map(encodeURIComponent).join("/") + "/timeline");
    if (k === current) renderTimeline(tl);
  } catch (e) {
    $("r-problem").textContent = e.message;
  }
}

function scheduleTimeline() {
  if (timelineTimer) return;
  const wait = Math.max(0, 5000 - (Date.now() - timelineAt));
  timelineTimer = setTimeout(() => { timelineTimer = null; if (current) loadTimeline(); }, wait);
}

function route() {
  const m = location.hash.match(/^#\/([^/]+)\/([^/]+)$/);
  if (charts) { charts.traffic.destroy(); charts.latency.destroy(); charts = null; }
  if (!m) {
    current = null;
    $("overview").hidden = false;
    $("release").hidden = true;
    renderOverview();
    return;
  }
  current = decodeURIComponent(m[1]) + "/" + decodeURIComponent(m[2]);
  $("overview").hidden = true;
  $("release").hidden = false;
  $("r-result").textContent = "";
  // Nothing of the release shown before stays: no click lands on it.
  $("r-buttons").replaceChildren();
  delete $("r-buttons").dataset.split;
  for (const id of ["r-checks", "r-history", "r-actions", "r-markers", "r-weight"]) $(id).replaceChildren();
  $("r-name").textContent = current;
  const s = splits.get(current);
  if (s) { $("r-weight").replaceChildren(weightBar(s)); renderButtons(s); }
  loadDetail();
  loadTimeline();
}

function onSplit(s) {
  const prev = splits.get(key(s));
  splits.set(key(s), s);
  if (!current) { renderOverview(); return; }
  if (key(s) !== current) return;
  $("r-weight").replaceChildren(weightBar(s));
  if (!prev || prev.weights.green !== s.weights.green) liveWeight(s);
  loadDetail();
  scheduleTimeline();
}

function connect() {
  const es = new EventSource("/api/events");
  const live = $("live");
  es.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
  es.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live"; });
  es.addEventListener("failure", (e) => { live.textContent = JSON.parse(e.data).error; live.className = "live"; });
  es.addEventListener("snapshot", (e) => {
    splits.clear();
    for (const s of JSON.parse(e.data)) splits.set(key(s), s);
    if (current) { const s = splits.get(current); if (s) onSplit(s); } else renderOverview();
  });
  es.addEventListener("split", (e) => onSplit(JSON.parse(e.data)));
  es.addEventListener("deleted", (e) => {
    const d = JSON.parse(e.data);
    splits.delete(d.namespace + "/" + d.name);
    if (!current) renderOverview();
  });
}

window.addEventListener("hashchange", route);
connect();
route();
