// The "new definition" form opens /builder/edit/<kind>/<key>?app=<app>.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
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
