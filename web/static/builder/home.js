// The "new definition" form opens /builder/edit/<kind>/<key>?app=<app>.
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
    });
  }
  const form = document.getElementById("builder-new");
  if (!form) return;
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const kind = document.getElementById("new-kind").value;
    const key = document.getElementById("new-key").value.trim();
    const app = document.getElementById("new-app").value;
    if (!/^[a-z][a-z0-9_]*$/.test(key)) return;
    location.href = `/builder/edit/${encodeURIComponent(kind)}/${encodeURIComponent(key)}?app=${encodeURIComponent(app)}`;
  });
});
