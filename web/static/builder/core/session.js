// The state every editor shares: one model (the definition body as JSON) edited by the page's
// editor and by the YAML text view; every change is pushed on the undo stack, saved as a
// server-side draft and validated by the same checker as `careloop validate`. Problems come
// back with a path ($.fields[2].visible_if) and a line/column in the YAML view.

import { BASE, makeApi } from "./api.js";
import { el } from "../dom.js";
import { format, pickLabel, problemLine, problemWords, problemsUnder } from "./text.js";
import { attach as attachCompletion } from "../completion.js";
import { restoreTyping, typingState } from "./typing.js";

export function createSession(root, editor) {
  const $ = (id) => document.getElementById(id);
  const b = {
    root, editor, $, el, base: BASE,
    kind: root.dataset.kind, key: root.dataset.key, app: root.dataset.app,
    locale: root.dataset.locale || "zh-CN",
    api: makeApi(root.dataset.csrf),
    messages: {}, functions: [], model: null, problems: [], draftFile: "",
    undoStack: [], redoStack: [], saveTimer: null,
  };
  b.msg = (key, params = {}) => format(b.messages, key, params);
  b.pick = (label) => pickLabel(label, b.locale);
  b.status = (text) => { $("b-status").textContent = text; };
  b.problemsAt = (prefix) => problemsUnder(b.problems, prefix, b.draftFile);
  // the problems at one place, as paragraphs under its input
  // (the message in words; the code and path, for the curious, in the tooltip)
  b.errorLines = (errs) => errs.map((p) => el("p", { class: "b-err", text: problemWords(p),
    title: `${p.code} ${p.path}`, "data-code": p.code }));

  // --- history ------------------------------------------------------------------------------
  b.commit = (mutate) => {
    b.undoStack.push(JSON.stringify(b.model));
    b.redoStack.length = 0;
    mutate();
    b.changed();
  };
  b.undo = () => {
    if (!b.undoStack.length) return;
    b.redoStack.push(JSON.stringify(b.model));
    b.model = JSON.parse(b.undoStack.pop());
    b.changed();
  };
  b.redo = () => {
    if (!b.redoStack.length) return;
    b.undoStack.push(JSON.stringify(b.model));
    b.model = JSON.parse(b.redoStack.pop());
    b.changed();
  };
  b.changed = () => {
    b.render();
    clearTimeout(b.saveTimer);
    b.saveTimer = setTimeout(b.save, 300);
  };

  // --- draft and validation -------------------------------------------------------------------
  b.save = async (payload) => {
    clearTimeout(b.saveTimer);
    const body = payload || { body: b.model };
    const { status: code, data } = await b.api("PUT", `${BASE}/drafts/${b.kind}/${b.key}`,
      { app: b.app, ...body });
    if (code !== 200) { b.status(data.detail || String(code)); return null; }
    b.showChecked(data);
    b.status(b.msg("builder.saved"));
    if (editor.saved) editor.saved(b);
    return data;
  };
  b.showChecked = (data) => {
    const before = JSON.stringify(b.problems);
    b.problems = data.problems || [];
    b.draftFile = data.file || "";
    if (document.activeElement !== $("b-yaml")) $("b-yaml").value = data.yaml || "";
    const list = $("b-problems");
    list.replaceChildren(...(b.problems.length ? b.problems.map((p) => el("li", {
      "data-path": p.path, "data-code": p.code, title: problemLine(p, b.draftFile), text: problemWords(p),
    })) : [el("li", { class: "ok", text: b.msg("builder.no_problems") })]));
    list.classList.toggle("clean", !b.problems.length);
    // re-render (error marks at the fields) only when the problems changed, so a save that
    // returns while the author is picking a condition does not reset what they picked
    if (JSON.stringify(b.problems) !== before) b.render();
  };

  // --- rendering ------------------------------------------------------------------------------
  b.render = () => {
    if (!b.model) return;
    if (b.model.title && $("b-title")) $("b-title").textContent = b.pick(b.model.title);
    const typing = typingState(root);
    if (editor.render) editor.render(b);
    restoreTyping(root, typing);
  };

  // --- completion in expression inputs: the editor's names, context names, functions ----------
  b.candidates = () => {
    const out = editor.candidates ? editor.candidates(b) : [];
    for (const name of editor.context || []) out.push({ value: name, detail: b.msg("builder.context_name") });
    for (const fn of b.functions) out.push({ value: fn.name, insert: `${fn.name}(`,
      detail: `${fn.signature} — ${fn.doc}` });
    return out;
  };
  b.completing = (input) => { attachCompletion(input, b.candidates); return input; };
  return b;
}
