// The "new definition" form asks for a title; the key is proposed from it on the server
// (web/builder_copy.py, like a copy's) and shown only under "高级"; the blank definition is
// saved as the user's draft, then /builder/edit/<kind>/<key>?app=<app> opens.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // search across apps: the definitions whose title, kind or app name contains every word typed
  const search = document.getElementById("builder-search");
  if (search) {
    search.addEventListener("input", () => {
      const words = search.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      for (const section of document.querySelectorAll("section.builder-app")) {
        const app = section.querySelector("h2").textContent.toLowerCase();
        let inApp = 0;
        for (const row of section.querySelectorAll("tr[data-key]")) {
          const text = `${app} ${row.textContent.toLowerCase()} ${row.dataset.key}`;
          row.hidden = !words.every((w) => text.includes(w));
          if (!row.hidden) inApp += 1;
        }
        section.hidden = words.length > 0 && inApp === 0;
        shown += inApp;
      }
      document.getElementById("builder-search-none").hidden = shown > 0 || !words.length;
      findInside(search.value.trim());
    });
  }
  wireCopy();
  wireNew();
});

function wireNew() {
  const form = document.getElementById("builder-new");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  let keyTouched = false;
  $("new-key").addEventListener("input", () => { keyTouched = true; });
  let asked = 0;   // only the answer to the latest question is used (typing sends several)
  const propose = async () => {
    if (keyTouched) return;
    const ticket = ++asked;
    const kind = $("new-kind").value;
    const en = $("new-title-en").value.trim();
    let data = null;
    try {
      const response = await fetch(`/api/v1/builder/new/key?kind=${encodeURIComponent(kind)}&en=${encodeURIComponent(en)}`);
      data = response.ok ? await response.json() : null;
    } catch {
      return;  // the page is being left (the request aborted) or the server is away: no proposal
    }
    if (data && ticket === asked && !keyTouched) $("new-key").value = data.key;
  };
  $("new-title-en").addEventListener("input", propose);
  $("new-kind").addEventListener("change", propose);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const body = { kind: $("new-kind").value, app: $("new-app").value,
      title: { "zh-CN": $("new-title-zh").value.trim(), en: $("new-title-en").value.trim() } };
    // a key the author typed is sent; a proposal may be stale (the last title typed may still be
    // on its way to the server), so without one the server proposes it from the title sent
    if (keyTouched && $("new-key").value.trim()) body.key = $("new-key").value.trim();
    let response;
    let data;
    try {
      response = await fetch("/api/v1/builder/new", { method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf },
        body: JSON.stringify(body) });
      data = await response.json();
    } catch {
      $("new-status").textContent = form.dataset.offline || "";
      return;
    }
    if (response.status === 201) location.href = data.url;
    else $("new-status").textContent = data.detail || "";
  });
  propose();
}

// search inside the definitions too (field, choice, rule and step labels), on the server, in the
// page's language: each hit says where the words were found ("字段「疼痛评分」")
let searching = 0;
async function findInside(query) {
  const list = document.getElementById("builder-search-hits");
  const ticket = ++searching;
  if (!query) { list.hidden = true; list.replaceChildren(); return; }
  let response;
  try {
    response = await fetch(`/api/v1/builder/search?q=${encodeURIComponent(query)}`,
      { headers: { Accept: "application/json" } });
  } catch {
    return;  // aborted (the page is being left) or the server is away
  }
  if (ticket !== searching || !response.ok) return;
  const hits = await response.json();
  const inside = hits.filter((hit) => hit.found.length);
  list.replaceChildren(...inside.map((hit) => {
    const item = document.createElement("li");
    item.dataset.kind = hit.kind;
    item.dataset.key = hit.key;
    const link = document.createElement("a");
    link.href = hit.url;
    link.textContent = hit.title;
    const where = document.createElement("span");
    where.className = "muted";
    where.textContent = ` ${hit.kind_title} · ${hit.app_name} — ${hit.found.join("；")}`;
    item.append(link, where);
    return item;
  }));
  list.hidden = inside.length === 0;
  if (inside.length) document.getElementById("builder-search-none").hidden = true;
}

// start from a template or a copy: the new key is proposed from the English title
function wireCopy() {
  const form = document.getElementById("builder-copy-form");
  if (!form) return;
  const $ = (id) => document.getElementById(id);
  const source = () => $("copy-source").value.split("/");
  let keyTouched = false;
  $("copy-key").addEventListener("input", () => { keyTouched = true; });
  let asked = 0;   // only the answer to the latest question is used (typing sends several)
  const propose = async () => {
    if (keyTouched) return;
    const ticket = ++asked;
    const [kind, key] = source();
    const en = $("copy-title-en").value.trim();
    let data = null;
    try {
      const response = await fetch(`/api/v1/builder/copy/key?kind=${encodeURIComponent(kind)}&key=${encodeURIComponent(key)}&en=${encodeURIComponent(en)}`);
      data = response.ok ? await response.json() : null;
    } catch {
      return;  // the page is being left (the request aborted) or the server is away: no proposal
    }
    if (data && ticket === asked && !keyTouched) $("copy-key").value = data.key;
  };
  $("copy-title-en").addEventListener("input", propose);
  $("copy-source").addEventListener("change", propose);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const [kind, key] = source();
    const body = { kind, key, app: $("copy-app").value,
      title: { "zh-CN": $("copy-title-zh").value.trim(), en: $("copy-title-en").value.trim() } };
    if (keyTouched && $("copy-key").value.trim()) body.new_key = $("copy-key").value.trim();
    let response;
    let data;
    try {
      response = await fetch("/api/v1/builder/copy", { method: "POST",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": form.dataset.csrf },
        body: JSON.stringify(body) });
      data = await response.json();
    } catch {
      $("copy-status").textContent = document.getElementById("builder-new")?.dataset.offline || "";
      return;
    }
    if (response.status === 201) location.href = data.url;
    else $("copy-status").textContent = data.detail || "";
  });
  propose();
}
