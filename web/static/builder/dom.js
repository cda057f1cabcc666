// One DOM helper for the builder's modules:
// el("button", {type: "button", text: "…", onclick: f, disabled: true}, ...children).
// `text` sets textContent, `on…` adds a listener, true gives an empty (boolean) attribute,
// false / null / undefined leave the attribute out; children that are falsy are skipped.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v === true) node.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) node.setAttribute(k, String(v));
  }
  for (const c of children) if (c) node.append(c);
  return node;
}
