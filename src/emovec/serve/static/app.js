"use strict";
// emovec web app: every piece of text goes into the page through textContent, never parsed as markup.
const $ = (id) => document.getElementById(id);
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined) e.textContent = text; if (cls) e.className = cls; return e; };
let INFO = null, MON = null, STEER = null;

function status(msg, bad) { const s = $("status"); s.textContent = msg; s.className = bad ? "err" : ""; }

async function api(path, body) {
  const opts = body === undefined ? {} : {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const r = await fetch(path, opts);
  if (!r.ok) { let m = r.status + ""; try { m = (await r.json()).error; } catch (e) { /* not JSON */ } throw new Error(m); }
  return r;
}

function fillSelect(sel, values, chosen) {
  sel.replaceChildren(...values.map((v) => { const o = el("option", String(v)); o.value = String(v); if (v === chosen) o.selected = true; return o; }));
}

function colour(x) { // x in [-1, 1]: red up, blue down
  const a = Math.min(1, Math.abs(x));
  return x >= 0 ? `rgba(220,40,40,${a * 0.8})` : `rgba(40,80,220,${a * 0.8})`;
}

// ---- monitor ------------------------------------------------------------------------------------
async function runMonitor(format) {
  const body = {layer: Number($("mon-layer").value)};
  const file = $("mon-file").files[0];
  if (file) body.transcript = await file.text(); else body.text = $("mon-text").value;
  if (format) body.format = format;
  status("monitoring…");
  const r = await api("/api/monitor", body);
  status("");
  return r;
}

function drawHeatmap() {
  if (!MON) return;
  const z = $("mon-z").checked, rows = z ? MON.z : MON.raw;
  const e = MON.emotions.indexOf($("mon-emotion").value);
  let scale = 1e-9;
  rows.forEach((row, t) => { if (t > 0) scale = Math.max(scale, Math.abs(row[e])); });
  const box = $("heatmap"); box.replaceChildren();
  MON.tokens.forEach((piece, t) => {
    const s = el("span", piece, "tok");
    s.dataset.t = String(t);
    s.style.background = colour(rows[t][e] / scale);
    box.appendChild(s);
  });
}

function hoverToken(ev) {
  const t = ev.target.dataset && ev.target.dataset.t;
  if (t === undefined || !MON) return;
  const rows = $("mon-z").checked ? MON.z : MON.raw, row = rows[Number(t)];
  const top = row.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 5);
  $("mon-hover").textContent = `token ${t} ${JSON.stringify(MON.tokens[Number(t)])}: ` +
    top.map(([v, i]) => `${MON.emotions[i]} ${v.toFixed(3)}`).join("  ");
}

async function monitorClick() {
  try {
    MON = await (await runMonitor()).json();
    fillSelect($("mon-emotion"), MON.emotions, MON.strongest[0]);
    $("mon-strongest").replaceChildren(el("span", "strongest for this text: "), ...MON.strongest.map((s) => el("span", s, "chip")));
    drawHeatmap();
  } catch (err) { status(err.message, true); }
}

async function exportClick() {
  try {
    const blob = await (await runMonitor("html")).blob();
    const a = el("a"); a.href = URL.createObjectURL(blob); a.download = "monitor.html"; a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  } catch (err) { status(err.message, true); }
}

// ---- steer --------------------------------------------------------------------------------------
function addSlider(emotion) {
  if (!emotion || document.querySelector(`.slider[data-emotion="${CSS.escape(emotion)}"]`)) return;
  const row = el("div", undefined, "slider"); row.dataset.emotion = emotion;
  const input = el("input"); input.type = "range"; input.min = "-0.5"; input.max = "0.5"; input.step = "0.01"; input.value = "0.1";
  const value = el("span", "0.10"); const drop = el("button", "×");
  input.addEventListener("input", () => { value.textContent = Number(input.value).toFixed(2); });
  drop.addEventListener("click", () => row.remove());
  row.append(el("span", emotion), input, value, el("span", "× layer mean norm", "hint"), drop);
  $("sliders").appendChild(row);
}

function weights() {
  const w = {};
  document.querySelectorAll(".slider").forEach((row) => { w[row.dataset.emotion] = Number(row.querySelector("input").value); });
  return w;
}

async function steerClick() {
  if (STEER) STEER.abort();
  STEER = new AbortController();
  $("out-plain").textContent = ""; $("out-steered").textContent = "";
  $("out-plain").classList.remove("ended"); $("out-steered").classList.remove("ended");
  $("steer-run").disabled = true; $("steer-stop").disabled = false;
  const layers = Array.from($("steer-layer").selectedOptions).map((o) => Number(o.value));
  const body = {prompt: $("steer-prompt").value, weights: weights(), layers, max_new_tokens: Number($("steer-tokens").value),
    seed: Number($("steer-seed").value)};
  try {
    const r = await fetch("/api/steer", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body), signal: STEER.signal});
    if (!r.ok) throw new Error((await r.json()).error);
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) { handleEvent(buf.slice(0, i)); buf = buf.slice(i + 2); }
    }
  } catch (err) { if (err.name !== "AbortError") status(err.message, true); }
  $("steer-run").disabled = false; $("steer-stop").disabled = true;
}

function handleEvent(block) {
  let kind = "message", data = "";
  block.split("\n").forEach((line) => { if (line.startsWith("event: ")) kind = line.slice(7); else if (line.startsWith("data: ")) data += line.slice(6); });
  const d = JSON.parse(data || "{}");
  if (kind === "token") $(d.side === "steered" ? "out-steered" : "out-plain").textContent += d.text;
  else if (kind === "end") $(d.side === "steered" ? "out-steered" : "out-plain").classList.add("ended");
  else if (kind === "queue") $("steer-queue").textContent = d.position > 0 ? `waiting: ${d.position} ahead` : "generating";
  else if (kind === "done" || kind === "cancelled") $("steer-queue").textContent = kind;
  else if (kind === "error") status(d.error, true);
}

// ---- explore ------------------------------------------------------------------------------------
let EXP = null, VIEW = {x: 0, y: 0, k: 1};
const SVGNS = "http://www.w3.org/2000/svg";

function valenceColour(v) {
  if (v === null || v === undefined) return "#999";
  const x = Math.max(-1, Math.min(1, (v - 5) / 3));
  return colour(x).replace(/[\d.]+\)$/, "0.9)");
}

// 12 colours told apart in print and by most colour-blind readers (Paul Tol's "muted" + two)
const PALETTE = ["#332288", "#88ccee", "#44aa99", "#117733", "#999933", "#ddcc77", "#cc6677", "#882255", "#aa4499",
  "#dddddd", "#000000", "#ee7733"];
let PICKED = null; // the cluster picked out in the legend, or null

function colouring() { // [fill colour per emotion, legend rows [colour, label, cluster]]
  const mode = $("exp-colour").value;
  if (mode === "valence") {
    return [EXP.valence.map(valenceColour), [["rgba(40,80,220,0.9)", "low valence", null], ["rgba(220,40,40,0.9)", "high valence", null],
      ["#999", "no human rating", null]]];
  }
  const c = EXP.clusters[mode], fill = c.labels.map((k) => (k < 0 ? "#fff" : PALETTE[k % PALETTE.length]));
  const rows = c.names.map((n, k) => [PALETTE[k % PALETTE.length], n, k]);
  if (c.labels.includes(-1)) rows.push(["#fff", "in none of the paper's clusters", -1]);
  return [fill, rows];
}

function drawLegend(rows) {
  const box = $("exp-legend"), mode = $("exp-colour").value;
  const items = rows.map(([c, label, k]) => {
    const row = el("div", undefined, PICKED !== null && k !== PICKED ? "off" : "");
    const sw = el("span", undefined, "swatch"); sw.style.background = c; sw.style.border = "1px solid #666";
    row.append(sw, el("span", label));
    if (k !== null) { row.dataset.k = String(k); row.addEventListener("click", () => { PICKED = PICKED === k ? null : k; drawScatter(); }); }
    return row;
  });
  const head = mode === "kmeans" ? `k-means, k = ${EXP.clusters.kmeans.names.length}, seed ${EXP.clusters.kmeans.seed}` +
    (EXP.clusters.kmeans.adjusted_rand === null ? "" : ` · agreement with the paper's clusters: ARI ${EXP.clusters.kmeans.adjusted_rand.toFixed(2)}`)
    : mode === "paper" ? "the paper's 10 clusters (its Table 12)" : "colour: human valence";
  box.replaceChildren(el("div", head, "hint"), ...items);
}

function drawScatter() {
  const svg = $("scatter"); svg.replaceChildren();
  if (!EXP) return;
  const [fill, rows] = colouring(), mode = $("exp-colour").value;
  const labels = mode === "valence" ? null : EXP.clusters[mode].labels;
  drawLegend(rows);
  const xs = EXP.xy.map((p) => p[0]), ys = EXP.xy.map((p) => p[1] || 0);
  const mx = Math.max(...xs.map(Math.abs), 1e-9), my = Math.max(...ys.map(Math.abs), 1e-9);
  const g = document.createElementNS(SVGNS, "g");
  g.setAttribute("transform", `translate(${300 + VIEW.x} ${225 + VIEW.y}) scale(${VIEW.k})`);
  EXP.emotions.forEach((e, i) => {
    const c = document.createElementNS(SVGNS, "circle");
    c.setAttribute("cx", String(xs[i] / mx * 270)); c.setAttribute("cy", String(-ys[i] / my * 200));
    c.setAttribute("r", String(5 / VIEW.k)); c.setAttribute("fill", fill[i]);
    c.setAttribute("stroke", "#555"); c.setAttribute("stroke-width", String(0.5 / VIEW.k));
    if (labels !== null && PICKED !== null && labels[i] !== PICKED) c.setAttribute("opacity", "0.15");
    c.dataset.i = String(i);
    if (labels !== null) c.dataset.cluster = String(labels[i]);
    const title = document.createElementNS(SVGNS, "title"); title.textContent = e; c.appendChild(title);
    g.appendChild(c);
  });
  svg.appendChild(g);
}

async function reportLinks() {
  const box = $("exp-report");
  try {
    const rep = await (await api("/api/report")).json();
    if (!rep.available) { box.replaceChildren(el("span", "No static report for this artifact yet; write one with: "), el("code", rep.make)); return; }
    const links = rep.links.map((l) => { const a = el("a", l.title); a.href = l.href; a.target = "_blank"; a.rel = "noopener"; return a; });
    box.replaceChildren(el("span", "Report sections: "), ...links);
  } catch (err) { status(err.message, true); }
}

function detail(i) {
  const e = EXP.emotions[i], box = $("exp-detail"), km = EXP.clusters.kmeans, pp = EXP.clusters.paper;
  box.replaceChildren(el("h3", e), el("div", `valence: ${EXP.valence[i] === null ? "unrated" : EXP.valence[i].toFixed(2)}`),
    el("div", `k-means cluster ${km.names[km.labels[i]]}`), el("div", `paper's cluster: ${pp.labels[i] < 0 ? "none" : pp.names[pp.labels[i]]}`),
    el("h4", "nearest neighbours (cosine)"), ...EXP.neighbours[e].map(([n, c]) => el("div", `${n} ${c.toFixed(3)}`)),
    el("h4", "logit lens: top tokens"), el("div", EXP.lens.top[e].map((t) => JSON.stringify(t)).join(" ")),
    el("h4", "bottom tokens"), el("div", EXP.lens.bottom[e].map((t) => JSON.stringify(t)).join(" ")));
}

async function exploreLoad() {
  try {
    status("loading…");
    EXP = await (await api(`/api/explore?layer=${encodeURIComponent($("exp-layer").value)}`)).json();
    VIEW = {x: 0, y: 0, k: 1}; PICKED = null; drawScatter(); status(`PC1 ${(EXP.explained[0] * 100).toFixed(1)}% · PC2 ${((EXP.explained[1] || 0) * 100).toFixed(1)}%`);
  } catch (err) { status(err.message, true); }
}

function wireExplore() {
  const svg = $("scatter"); let drag = null;
  svg.addEventListener("wheel", (ev) => { ev.preventDefault(); VIEW.k = Math.max(0.5, Math.min(20, VIEW.k * (ev.deltaY < 0 ? 1.2 : 1 / 1.2))); drawScatter(); });
  svg.addEventListener("mousedown", (ev) => { drag = [ev.clientX - VIEW.x, ev.clientY - VIEW.y]; });
  window.addEventListener("mouseup", () => { drag = null; });
  svg.addEventListener("mousemove", (ev) => { if (drag) { VIEW.x = ev.clientX - drag[0]; VIEW.y = ev.clientY - drag[1]; drawScatter(); } });
  svg.addEventListener("click", (ev) => { if (ev.target.dataset && ev.target.dataset.i !== undefined) detail(Number(ev.target.dataset.i)); });
}

// ---- start --------------------------------------------------------------------------------------
function showView(name) {
  document.querySelectorAll(".view").forEach((v) => { v.hidden = v.id !== `view-${name}`; });
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("on", b.dataset.view === name));
  if (name === "explore" && !EXP) { exploreLoad(); reportLinks(); }
}

async function start() {
  INFO = await (await api("/api/info")).json();
  $("model").textContent = INFO.model;
  document.querySelectorAll(".layer-select").forEach((s) => fillSelect(s, INFO.layers, INFO.default_layer));
  fillSelect($("mon-emotion"), INFO.emotions, INFO.emotions[0]);
  fillSelect($("steer-add"), [""].concat(INFO.emotions), "");
  $("mon-text").maxLength = INFO.max_text; $("steer-prompt").maxLength = INFO.max_text; $("steer-tokens").max = String(INFO.max_new_tokens);
  document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showView(b.dataset.view)));
  $("mon-run").addEventListener("click", monitorClick);
  $("mon-export").addEventListener("click", exportClick);
  $("mon-z").addEventListener("change", drawHeatmap);
  $("mon-emotion").addEventListener("change", drawHeatmap);
  $("heatmap").addEventListener("mouseover", hoverToken);
  $("steer-add").addEventListener("change", (ev) => { addSlider(ev.target.value); ev.target.value = ""; });
  $("steer-run").addEventListener("click", steerClick);
  $("steer-stop").addEventListener("click", () => { if (STEER) STEER.abort(); });
  $("exp-load").addEventListener("click", exploreLoad);
  $("exp-colour").addEventListener("change", () => { PICKED = null; drawScatter(); });
  wireExplore();
  addSlider(INFO.emotions[0]);
}

document.addEventListener("DOMContentLoaded", () => { start().catch((err) => status(err.message, true)); });
