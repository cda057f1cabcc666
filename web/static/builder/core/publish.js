// Publish: what changes, in words (the server compares the two definitions as structures,
// web/builder_changes.py; a changed condition is shown as its two sentences), the line-by-line
// text diff under "Advanced", what it affects (answers of removed or retyped fields; an editor
// adds its own notes, e.g. the flow's running runs), then publish (or wait for a second
// person's approval).

import { el } from "../dom.js";
import { advanced } from "./advanced.js";
import { orphanLabel, orphanLine } from "./orphans.js";
import { describeCondition } from "./sentence.js";

// One change as a line; a condition's old and new expressions become sentences when the editor
// knows the words for them (its ``sentenceContext``).
function changeText(b, change) {
  if (change.prop === undefined || change.prop === null || !b.editor.sentenceContext) return change.text;
  const ctx = b.editor.sentenceContext(b);
  const words = (text) => describeCondition(text, ctx);
  if (change.op === "changed") {
    return b.msg("builder.change.changed", { where: change.where, prop: change.prop, old: words(change.old), new: words(change.new) });
  }
  if (change.op === "set") return b.msg("builder.change.set", { where: change.where, prop: change.prop, new: words(change.new) });
  if (change.op === "unset") return b.msg("builder.change.unset", { where: change.where, prop: change.prop, old: words(change.old) });
  return change.text;
}

async function openPublish(b) {
  await b.save();
  const { status: code, data } = await b.api("POST", `${b.base}/diff/${b.kind}/${b.key}`, { app: b.app, body: b.model });
  if (code !== 200) { b.status(data.detail || String(code)); return; }
  const changes = data.changes || [];
  b.$("b-change-count").textContent = changes.length
    ? b.msg("builder.change_count", { n: changes.length }) : b.msg("builder.no_changes");
  b.$("b-changes").replaceChildren(...changes.map((c) => el("li", { "data-op": c.op, "data-path": c.path,
    text: changeText(b, c) })));
  b.$("b-diff").textContent = data.diff || "";
  const impact = data.impact || {};
  const lines = [];
  const flagged = [...(impact.orphaned || []), ...(impact.retyped || [])];
  if (flagged.length) {
    lines.push(el("p", { class: "b-orphans", text: b.msg("builder.orphan_warning") }),
      el("ul", { id: "b-orphan-list" }, ...flagged.map((o) => el("li", { "data-field": o.field,
        text: orphanLine(o, b.locale, b.msg) }))),
      advanced(b, "publish:orphan-keys", b.msg("builder.orphan_keys"),
        el("ul", { id: "b-orphan-keys" }, ...flagged.map((o) => el("li", {
          text: b.msg("builder.orphan_key", { label: orphanLabel(o, b.locale), key: o.field }) })))));
  }
  if (b.editor.publishNotes) lines.push(...b.editor.publishNotes(b, impact));
  b.$("b-impact").replaceChildren(...lines);
  b.$("b-orphans-label").hidden = !flagged.length;
  b.$("b-confirm-orphans").checked = false;
  b.$("b-publish-dialog").showModal();
}

async function confirmPublish(b) {
  const { status: code, data } = await b.api("POST", `${b.base}/publish/${b.kind}/${b.key}`,
    { app: b.app, body: b.model, confirm_orphans: b.$("b-confirm-orphans").checked });
  b.$("b-publish-dialog").close();
  if (code === 202) { b.status(b.msg("builder.awaiting_approval")); return; }
  if (code !== 200) { b.status(data.detail || String(code)); return; }
  b.$("b-version").textContent = `v${data.version}`;
  b.status(b.msg("builder.published", { version: data.version }));
}

export function wirePublish(b) {
  b.$("b-publish").addEventListener("click", () => openPublish(b));
  b.$("b-confirm").addEventListener("click", () => confirmPublish(b));
  b.$("b-cancel").addEventListener("click", () => b.$("b-publish-dialog").close());
}
