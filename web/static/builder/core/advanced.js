// The "高级 / Advanced" disclosure: keys, codes and expressions live here, closed by default.
// Whether the author opened one survives re-renders (kept per ``id``).

import { el } from "../dom.js";

const opened = new Set();

export function advanced(b, id, title, ...children) {
  const box = el("details", { class: "b-advanced", "data-advanced": id, open: opened.has(id) },
    el("summary", { text: title || b.msg("builder.advanced") }), ...children);
  box.addEventListener("toggle", () => { if (box.open) opened.add(id); else opened.delete(id); });
  return box;
}
