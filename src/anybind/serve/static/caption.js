// Captions on the search page (anybind serve --captioner): a "Caption" button for the dropped images / sounds
// (POST /caption/upload) and a "caption" button on each image, sound or video result (POST /caption with the
// item's id: decoded from its vector in the index). Loaded after app.js, whose helpers it uses ($, el, withKey,
// post, state). Without a captioner the API has no /caption and the page shows no caption action.
"use strict";

const CAPTION = { method: "beam" };

async function captionFiles() {
  const out = $("#captions");
  out.hidden = false;
  if (!state.files.length) {
    out.replaceChildren(el("p", { class: "error", text: "drop or choose an image or a sound to caption" }));
    return;
  }
  out.setAttribute("aria-busy", "true");
  out.replaceChildren(el("p", { class: "muted", text: "captioning\u2026" }));
  try {
    const fd = new FormData();
    for (const f of state.files) fd.append("files", f, f.name);
    fd.append("method", CAPTION.method);
    const data = await post("/caption/upload", fd);
    out.replaceChildren(el("div", { class: "muted", text: `captions (${data.took_ms.toFixed(0)} ms)` }));
    for (const c of data.captions) {
      out.append(el("p", { class: "caption" }, el("span", { class: "name", text: c.name || c.modality }),
        el("q", { text: c.caption })));
    }
  } catch (e) {
    out.replaceChildren(el("p", { class: "error", text: e.message }));
  } finally {
    out.setAttribute("aria-busy", "false");
  }
}

async function captionHit(card, btn) {
  let line = card.querySelector(".caption");
  if (!line) { line = el("q", { class: "caption" }); card.append(line); }
  line.classList.remove("error");
  line.textContent = "\u2026";
  btn.disabled = true;
  try {
    const data = await post("/caption", {
      items: [{ id: card.dataset.id, modality: card.dataset.modality }], method: CAPTION.method,
    });
    line.textContent = data.captions[0].caption;
  } catch (e) {
    line.textContent = e.message;
    line.classList.add("error");
  } finally {
    btn.disabled = false;
  }
}

function addHitButtons() {
  for (const card of document.querySelectorAll("#results .hit")) {
    const badge = card.querySelector(".badge");
    if (card.querySelector(".cap-btn") || !badge || badge.classList.contains("text")) continue;
    const btn = el("button", { type: "button", class: "cap-btn", text: "caption", title: "describe this item in words" });
    btn.addEventListener("click", () => captionHit(card, btn));
    card.querySelector(".meta").append(btn);
  }
}

async function hasCaptioner() {
  // the API schema lists /caption only when the service has a captioner (a probe of /caption itself would log
  // a 404 in the console of every page without one)
  try {
    const r = await fetch("/openapi.json", { headers: withKey() });
    if (r.status === 401) return null;  // a key is needed first: asked again once one is given
    return r.ok && "/caption/upload" in ((await r.json()).paths || {});
  } catch (e) {
    return false;
  }
}

async function initCaptions() {
  if ($("#caption-go")) return;
  const has = await hasCaptioner();
  if (has === null) { $("#auth").addEventListener("submit", initCaptions, { once: true }); return; }
  if (!has) return;
  const go = el("button", { id: "caption-go", type: "button", text: "Caption",
    title: "describe the dropped image or sound in words" });
  go.addEventListener("click", captionFiles);
  $("#go").after(go);
  $("#results").before(el("section", { id: "captions", class: "captions", "aria-live": "polite", hidden: "" }));
  new MutationObserver(addHitButtons).observe($("#results"), { childList: true });
  addHitButtons();
}

document.addEventListener("DOMContentLoaded", initCaptions);
