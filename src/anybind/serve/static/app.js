// anybind search page: vanilla JS, no build step. Talks to /health, /search, /search/upload, /classify(/upload).
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { files: [], controller: null, previews: [], blobs: [], classifiers: {} };

// API keys (`anybind serve --api-keys`): asked for on the first 401, kept for this tab in sessionStorage,
// sent as `Authorization: Bearer`; stored images and sounds are then fetched with it and shown from blob: URLs.
const KEY = "anybind-api-key";
const apiKey = () => sessionStorage.getItem(KEY) || "";

function withKey(headers = {}) {
  const k = apiKey();
  return k ? { ...headers, authorization: `Bearer ${k}` } : headers;
}

function askKey(why) {
  $("#auth-why").textContent = why;
  $("#auth").hidden = false;
  $("#key").focus();
}

async function api(url, opts = {}) {
  const r = await fetch(url, { ...opts, headers: withKey(opts.headers) });
  if (r.status === 401) {
    let d = "";
    try { d = (await r.clone().json()).detail; } catch (e) { /* not JSON */ }
    askKey(apiKey() ? `the key was refused (${d}); enter another` : "this service needs an API key");
  }
  return r;
}

async function blobInto(node, attr, url) {
  try {
    const r = await api(url);
    if (!r.ok) return;
    const u = URL.createObjectURL(await r.blob());
    state.blobs.push(u);
    node.setAttribute(attr, u);
  } catch (e) { /* a thumbnail that does not load stays empty */ }
}

function mediaSrc(node, attr, url) {
  if (apiKey()) blobInto(node, attr, url);  // <img>/<audio> cannot send the header themselves
  else node.setAttribute(attr, url);
  return node;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

function setStatus(msg, error = false) {
  const s = $("#status");
  s.textContent = msg;
  s.classList.toggle("error", error);
}

// A section still showing what an earlier query found, after this query was refused: dimmed ("stale"), and the
// status line says so beside the error.  Rendering a section afresh clears its mark.
const STALE_NOTE = { results: "results of the previous query", classes: "classes of the previous query" };

function markStale(box, stale) {
  box.classList.toggle("stale", stale);
  if (stale) box.setAttribute("title", STALE_NOTE[box.id]);
  else box.removeAttribute("title");
}

function noteStale(boxes) {
  const shown = boxes.filter((b) => !b.hidden && b.childElementCount > 0);
  for (const b of shown) markStale(b, true);
  if (shown.length) {
    $("#status").append(el("span", { class: "stale-note",
      text: ` \u2014 shown: ${shown.map((b) => STALE_NOTE[b.id]).join(" and ")}` }));
  }
}

async function loadHealth() {
  try {
    const r = await api("/health");
    const h = await r.json();
    $("#byprob-box").hidden = (h.calibrated || []).length === 0;  // offered when the space is calibrated
    const sel = $("#modality");
    for (const [m, n] of Object.entries(h.index.counts)) {
      sel.append(el("option", { value: m, text: `${m} (${n})` }));
    }
    state.classifiers = h.classifiers || {};
    const csel = $("#classifier");
    for (const [name, c] of Object.entries(state.classifiers)) {
      csel.append(el("option", { value: name, text: `${name} (${c.modality}, ${c.classes.length} classes)` }));
    }
    $("#classifier-box").hidden = Object.keys(state.classifiers).length === 0;
    const counts = Object.entries(h.index.counts).map(([m, n]) => `${n} ${m}`).join(", ");
    const enc = Object.entries(h.space.encoders).map(([m, s]) => `${m}: ${s}`).join(", ");
    $("#corpus").textContent = `${h.index.rows} items (${counts}) in a ${h.space.dim}-d space (${enc}).`;
  } catch (e) {
    $("#corpus").textContent = "the service did not answer /health";
  }
}

function labelList() {
  return $("#labels").value.split(",").map((s) => s.trim()).filter(Boolean);
}

function showFiles() {
  const box = $("#files");
  for (const u of state.previews) URL.revokeObjectURL(u);
  state.previews = [];
  box.replaceChildren();
  box.hidden = state.files.length === 0;
  state.files.forEach((f, i) => {
    const url = URL.createObjectURL(f);
    state.previews.push(url);
    const media = f.type.startsWith("audio") || /\.(ogg|oga|flac|wav|mp3)$/i.test(f.name)
      ? el("audio", { controls: "", src: url, preload: "none" })
      : f.type.startsWith("video") || /\.(mp4|m4v|webm)$/i.test(f.name)
        ? el("video", { src: url, muted: "", preload: "metadata" })
        : el("img", { src: url, alt: f.name });
    const rm = el("button", { type: "button", title: "remove", text: "\u00d7" });
    rm.addEventListener("click", () => { state.files.splice(i, 1); showFiles(); search(); });
    box.append(el("div", { class: "chip" }, media, el("span", { text: f.name }), rm));
  });
}

function renderHits(data) {
  const box = $("#results");
  box.replaceChildren();
  markStale(box, false);
  for (const u of state.blobs) URL.revokeObjectURL(u);
  state.blobs = [];
  for (const h of data.hits) {
    let media;
    if (h.media === "image" && h.thumb_url) {
      const img = mediaSrc(el("img", { alt: h.id, loading: "lazy" }), "src", h.thumb_url);
      media = el("a", { href: h.url, target: "_blank", rel: "noopener" }, img);
      media.addEventListener("click", async (e) => {
        if (!apiKey()) return;
        e.preventDefault();
        const r = await api(h.url);
        if (r.ok) window.open(URL.createObjectURL(await r.blob()), "_blank", "noopener");
      });
    } else if (h.media === "video" && h.url) {
      // the poster is the clip's first frame (/thumbs); the clip itself loads only when played
      // (with an API key both come through fetch, as blobs: a <video> cannot send the header)
      media = mediaSrc(el("video", { controls: "", preload: "none", muted: "" }), "src", h.url);
      if (h.thumb_url) mediaSrc(media, "poster", h.thumb_url);
    } else if (h.media === "audio" && h.url) {
      media = mediaSrc(el("audio", { controls: "", preload: "none" }), "src", h.url);
    } else if (h.text !== null && h.text !== undefined) {
      media = el("blockquote", { text: h.text });
    } else if (h.url) {
      media = el("a", { href: h.url, text: "open" });
    }
    const labels = el("div", { class: "labels" });
    for (const [k, v] of Object.entries(h.labels || {})) {
      labels.append(el("span", { title: k, text: Array.isArray(v) ? v.join(", ") : String(v) }));
    }
    const name = h.id.split("/").pop();
    const why = data.query_text ? whyButton(data.query_text, h) : null;
    box.append(el("article", { class: "hit", "data-modality": h.modality, "data-id": h.id },
      el("div", { class: "media" }, media),
      el("div", { class: "name", title: h.id, text: name }),
      el("div", { class: "meta" },
        el("span", { class: `badge ${h.media}`, text: h.modality }),
        h.probability === null || h.probability === undefined ? null
          : el("span", { class: "prob", title: "calibrated P(match) with the query (prior 0.5)",
            text: `P ${(h.probability * 100).toFixed(0)}%` }),
        el("span", { class: "score", text: h.score.toFixed(3) })),
      labels, why));
  }
}

// "why this result": each word's leave-one-word-out drop and the item's nearest vocabulary words (POST /explain)
function whyButton(text, h) {
  const box = el("div", { class: "why" });
  const btn = el("button", { type: "button", class: "why-btn", text: "why?",
    title: "which words of the query drove this match, and the words nearest to this item" });
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      const x = await post("/explain", { text, id: h.id, modality: h.modality, k: 5 });
      const words = el("div", { class: "drops", title: "score lost without each word (red: the match is better without it)" });
      for (const d of x.drops) {
        const w = el("span", { text: d.word, title: `${d.drop >= 0 ? "+" : ""}${d.drop.toFixed(3)}` });
        const a = Math.min(1, Math.abs(d.drop) / Math.max(1e-6, Math.abs(x.score)));
        w.style.background = d.drop >= 0 ? `rgba(40, 160, 80, ${a})` : `rgba(200, 60, 60, ${a})`;
        words.append(w, " ");
      }
      box.replaceChildren(words);
      if (x.words.length) {
        box.append(el("div", { class: "near muted", text: "near: " + x.words.map((w) => w.word).join(", ") },
          vocabLabel(x)));
      }
    } catch (e) {
      box.replaceChildren(el("div", { class: "muted", text: e.message }));
    }
  });
  box.append(btn);
  return box;
}

// where the nearest words came from: the vocabulary stored with the space, or the words of the indexed texts
const VOCAB_SOURCES = {
  space: ["stored vocabulary", "a vocabulary stored with the space (anybind explain --build-vocab)"],
  index: ["indexed texts' words", "the words of the index's texts (the space stores no vocabulary: " +
          "anybind explain SPACE --build-vocab stores one)"],
};

function vocabLabel(x) {
  const [label, title] = VOCAB_SOURCES[x.vocabulary_source] || [x.vocabulary_source, ""];
  return el("span", { class: "vocab", "data-source": x.vocabulary_source,
    text: ` (${label}, ${x.vocabulary} words)`, title: `nearest words from ${title}` });
}

function renderClasses(data) {
  const box = $("#classes");
  markStale(box, false);
  box.replaceChildren(el("div", { class: "muted", text: data.classifier ? `zero-shot (${data.classifier}, balanced)` : "zero-shot" }));
  for (const c of data.results.slice(0, 8)) {
    const bar = el("div", { class: "bar" });
    bar.style.width = `${Math.max(1, Math.round(c.probability * 100))}%`;
    box.append(el("div", { class: "row" }, el("span", { text: c.label }), el("div", {}, bar),
      el("span", { text: `${(c.probability * 100).toFixed(1)}%` })));
  }
  box.hidden = false;
}

async function post(url, body, signal) {
  const opts = { method: "POST", signal };
  if (body instanceof FormData) opts.body = body;
  else { opts.body = JSON.stringify(body); opts.headers = { "content-type": "application/json" }; }
  const r = await api(url, opts);
  let data = null;
  try { data = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) {
    const d = data && data.detail;
    throw new Error(typeof d === "string" ? d : (d ? JSON.stringify(d) : `HTTP ${r.status}`));
  }
  return data;
}

function uploadForm(extra) {
  const fd = new FormData();
  for (const f of state.files) fd.append("files", f, f.name);
  const text = $("#q").value.trim();
  if (text) fd.append("text", text);
  for (const [k, v] of extra) fd.append(k, v);
  return fd;
}

async function search() {
  const text = $("#q").value.trim();
  if (!text && state.files.length === 0) { setStatus(""); return; }
  if (state.controller) state.controller.abort();  // only the latest query matters: spare the CPU
  const controller = new AbortController();
  state.controller = controller;
  $("#results").setAttribute("aria-busy", "true");
  const k = Number($("#k").value);
  const mod = $("#modality").value;
  const labels = labelList();
  setStatus("searching\u2026");
  const fresh = new Set();  // the sections this query has rendered (the others still show an earlier query's)
  try {
    let data;
    const rank_by = $("#byprob").checked && !$("#byprob-box").hidden ? "probability" : "score";
    if (state.files.length) {
      const extra = [["k", String(k)], ["rank_by", rank_by]];
      if (mod) extra.push(["modality", mod]);
      data = await post("/search/upload", uploadForm(extra), controller.signal);
    } else {
      data = await post("/search", { text, k, modality: mod || null, rank_by }, controller.signal);
    }
    data.query_text = text;
    renderHits(data);
    fresh.add("results");
    const what = [text && `"${text}"`, ...state.files.map((f) => f.name)].filter(Boolean).join(" + ");
    setStatus(`${data.hits.length} results for ${what} (${data.took_ms.toFixed(0)} ms)`);
    const clf = $("#classifier").value;
    if (clf && state.files.length) {  // the classifier's classes, in its order; its offsets were balanced on files
      const form = new FormData();
      for (const f of state.files) form.append("files", f, f.name);
      for (const l of state.classifiers[clf].classes) form.append("labels", l);
      form.append("classifier", clf);
      renderClasses(await post("/classify/upload", form, controller.signal));
      fresh.add("classes");
    } else if (labels.length) {
      const cls = state.files.length
        ? await post("/classify/upload", uploadForm(labels.map((l) => ["labels", l])), controller.signal)
        : await post("/classify", { text, labels }, controller.signal);
      renderClasses(cls);
      fresh.add("classes");
    } else {
      $("#classes").hidden = true;
    }
  } catch (e) {
    if (e.name === "AbortError") return;
    setStatus(e.message, true);  // what was shown stays: a refused query (or its classify) clears nothing,
    noteStale([$("#results"), $("#classes")].filter((b) => !fresh.has(b.id)));  // but is marked stale
  } finally {
    if (state.controller === controller) {
      state.controller = null;
      $("#results").setAttribute("aria-busy", "false");
    }
  }
}

function addFiles(list) {
  const files = Array.from(list || []);
  if (!files.length) return;
  state.files = files.slice(0, 8);
  showFiles();
  search();
}

function init() {
  loadHealth();
  $("#auth").addEventListener("submit", (e) => {
    e.preventDefault();
    const k = $("#key").value.trim();
    if (!k) return;
    sessionStorage.setItem(KEY, k);
    $("#key").value = "";
    $("#auth").hidden = true;
    search();
  });
  $("#query").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("#modality").addEventListener("change", search);
  $("#k").addEventListener("change", search);
  $("#byprob").addEventListener("change", search);
  $("#classifier").addEventListener("change", search);
  $("#file").addEventListener("change", (e) => { addFiles(e.target.files); e.target.value = ""; });
  const drop = $("#drop");
  for (const ev of ["dragenter", "dragover"]) {
    drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    drop.addEventListener(ev, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });
  document.addEventListener("dragover", (e) => e.preventDefault());
  document.addEventListener("drop", (e) => { e.preventDefault(); addFiles(e.dataTransfer.files); });
}

document.addEventListener("DOMContentLoaded", init);
