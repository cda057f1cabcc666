// A re-render (e.g. a draft save returning new problems) replaces the inputs; the one the author
// is typing in keeps its focus, caret and not-yet-committed text.

import { reopen } from "../completion.js";

const IDENTITY = ["data-logic", "data-prop", "data-rule", "data-score", "data-choice",
  "data-band", "data-cell", "data-tile", "data-channel", "data-act"];

export function typingState(root) {
  const a = document.activeElement;
  if (!a || !root.contains(a) || a.tagName !== "INPUT" || a.type === "checkbox") return null;
  const attr = IDENTITY.find((name) => a.hasAttribute(name));
  if (!attr) return null;
  const completing = a.getAttribute("aria-expanded") === "true";
  if (a.value === a.defaultValue) return { attr, id: a.getAttribute(attr), same: true,
    start: a.selectionStart, end: a.selectionEnd, completing };
  return { attr, id: a.getAttribute(attr), value: a.value, start: a.selectionStart,
    end: a.selectionEnd, completing };
}

export function restoreTyping(root, state) {
  if (!state || (document.activeElement && root.contains(document.activeElement)
    && document.activeElement !== document.body && document.activeElement.isConnected
    && document.activeElement.getAttribute(state.attr) === state.id)) return;
  const node = [...root.querySelectorAll(`[${state.attr}]`)]
    .find((n) => n.getAttribute(state.attr) === state.id && n.tagName === "INPUT");
  if (!node) return;
  if (!state.same) node.value = state.value;
  node.focus();
  try { node.setSelectionRange(state.start, state.end); } catch { /* type=number */ }
  if (state.completing) reopen(node);
}
