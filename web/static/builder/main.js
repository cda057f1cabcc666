// The visual builder's entry (an ES module, no dependencies, no bundler; CSP: no inline scripts).
// Each editor module registers itself for its kind (core/registry.js); this file starts the one
// for the page's kind on the shared session (model, history, draft save, validation), then
// wires the parts every kind has: undo/redo, save, publish, the YAML view.

import { editorFor } from "./core/registry.js";
import { createSession } from "./core/session.js";
import { wirePublish } from "./core/publish.js";
import { wireYamlPane } from "./core/yamlpane.js";
import { wireUsedBy } from "./core/usedby.js";
import "./editors/form.js";
import "./editors/ruleset.js";
import "./editors/flow.js";
import "./editors/chart.js";
import "./editors/dashboard.js";
import "./editors/alert.js";
import "./editors/decision_table.js";
import "./editors/dataset.js";

async function start(root) {
  const editor = editorFor(root.dataset.kind);
  const b = createSession(root, editor);
  b.messages = (await b.api("GET", `${b.base}/i18n`)).data;
  b.functions = (await b.api("GET", `${b.base}/functions`)).data || [];
  if (editor.start) await editor.start(b);
  const { data } = await b.api("GET", `${b.base}/drafts/${b.kind}/${b.key}`);
  b.model = data.body;
  b.app = b.app || data.app || "";
  b.$("b-app").textContent = b.app;
  if (data.current_version) b.$("b-version").textContent = `v${data.current_version}`;
  if (data.awaiting_approval) b.status(b.msg("builder.awaiting_approval"));
  if (editor.loaded) await editor.loaded(b, data);
  b.showChecked(data);
  b.render();
  if (editor.ready) editor.ready(b);
  b.$("b-undo").addEventListener("click", b.undo);
  b.$("b-redo").addEventListener("click", b.redo);
  b.$("b-save").addEventListener("click", () => b.save());
  wirePublish(b);
  wireYamlPane(b);
  wireUsedBy(b);
  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "z" && document.activeElement.tagName !== "TEXTAREA") {
      e.preventDefault();
      if (e.shiftKey) b.redo(); else b.undo();
    }
  });
  root.dataset.ready = "1";
}

const root = document.getElementById("builder");
if (root) start(root);
