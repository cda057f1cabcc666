// The visual builder (vanilla JS, no dependencies; CSP: no inline scripts).
// One model (the definition body as JSON) edited by the form builder / rule editor and by the
// YAML text view; every change is pushed on the undo stack, saved as a server-side draft and
// validated by the same checker as `careloop validate`. Problems come back with a path
// ($.fields[2].visible_if) and a line/column in the YAML view.
"use strict";

(() => {
  const root = document.getElementById("builder");
  if (!root) return;
  const KIND = root.dataset.kind, KEY = root.dataset.key, CSRF = root.dataset.csrf;
  const LOCALE = root.dataset.locale || "zh-CN";
  let APP = root.dataset.app;
  const $ = (id) => document.getElementById(id);
  const el = window.CareloopDom.el;

  let M = {};              // i18n messages
  let model = null;        // the definition body
  let types = {};          // field type name -> {title, options, uses_choices, ...}
  let scoreMethods = [];
  let problems = [];
  let selected = -1;
  const undoStack = [], redoStack = [];
  let saveTimer = null;

  const msg = (key, params = {}) =>
    (M[key] || key).replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
  const pick = (label) => (label && typeof label === "object")
    ? (label[LOCALE] || label["zh-CN"] || label.en || "") : (label || "");

  async function api(method, url, body) {
    const opts = { method, headers: { "X-CSRF-Token": CSRF, "Accept": "application/json" } };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const response = await fetch(url, opts);
    const data = await response.json().catch(() => ({}));
    return { status: response.status, data };
  }
  const base = `/api/v1/builder`;
  const status = (text) => { $("b-status").textContent = text; };

  // --- history ------------------------------------------------------------------------------
  function commit(mutate) {
    undoStack.push(JSON.stringify(model));
    redoStack.length = 0;
    mutate();
    changed();
  }
  function undo() {
    if (!undoStack.length) return;
    redoStack.push(JSON.stringify(model));
    model = JSON.parse(undoStack.pop());
    changed();
  }
  function redo() {
    if (!redoStack.length) return;
    undoStack.push(JSON.stringify(model));
    model = JSON.parse(redoStack.pop());
    changed();
  }
  function changed() {
    render();
    clearTimeout(saveTimer);
    saveTimer = setTimeout(save, 300);
  }

  // --- draft, validation, preview -------------------------------------------------------------
  async function save(payload) {
    clearTimeout(saveTimer);
    const body = payload || { body: model };
    const { status: code, data } = await api("PUT", `${base}/drafts/${KIND}/${KEY}`,
      { app: APP, ...body });
    if (code !== 200) { status(data.detail || String(code)); return null; }
    showChecked(data);
    status(msg("builder.saved"));
    if (KIND === "form") preview(true);
    if (KIND === "chart") previewChart();
    return data;
  }
  function showChecked(data) {
    const before = JSON.stringify(problems);
    problems = data.problems || [];
    draftFile = data.file || "";
    if (document.activeElement !== $("b-yaml")) $("b-yaml").value = data.yaml || "";
    const list = $("b-problems");
    list.replaceChildren(...(problems.length ? problems.map((p) => el("li", {
      "data-path": p.path,
      text: `${p.file && p.file !== draftFile ? p.file + ":" : ""}${p.line ? p.line + ":" + (p.column || 1) + " " : ""}${p.code} at ${p.path} — ${p.message}${p.hint ? " (" + p.hint + ")" : ""}`,
    })) : [el("li", { class: "ok", text: msg("builder.no_problems") })]));
    list.classList.toggle("clean", !problems.length);
    // re-render (error marks at the fields) only when the problems changed, so a save that
    // returns while the author is picking a condition does not reset what they picked
    if (JSON.stringify(problems) !== before) render();
  }
  function previewInputs() {
    const phone = $("b-phone");
    const form = phone && phone.shadowRoot && phone.shadowRoot.querySelector("form");
    if (!form) return null;
    const out = {};
    for (const [name, value] of new FormData(form).entries()) {
      if (name.startsWith("_") || name === "csrf_token" || typeof value !== "string") continue;
      (out[name] = out[name] || []).push(value);
    }
    return out;
  }
  async function preview(withInputs) {
    const phone = $("b-phone");
    if (!phone || !model) return;
    const request = { body: model };
    if (withInputs) request.form = previewInputs() || {};
    const { status: code, data } = await api("POST", `${base}/preview/form/${KEY}`, request);
    if (code !== 200 || !data.html) return;
    const doc = new DOMParser().parseFromString(data.html, "text/html");
    const main = doc.querySelector("main");
    const shadow = phone.shadowRoot || phone.attachShadow({ mode: "open" });
    const css = el("link", { rel: "stylesheet", href: "/forms/static/forms.css" });
    shadow.replaceChildren(css, main ? document.importNode(main, true) : el("p"));
    const form = shadow.querySelector("form");
    if (form) {
      // the preview never submits; a change re-renders it through the engine's logic
      form.addEventListener("submit", (e) => e.preventDefault());
      form.addEventListener("change", () => preview(true));
    }
  }

  // --- completion in expression inputs (completion.js): field keys, scores, names, functions ----
  let functions = [];
  const CONTEXT = { form: ["answers", "patient", "encounter", "scores"],
    ruleset: ["answers", "scores", "bands", "patient", "encounter", "event", "task"],
    flow: ["answers", "scores", "bands", "patient", "encounter", "event", "reading", "task", "context"] };
  function fieldKeys(fields, prefix = "") {
    const out = [];
    for (const f of fields || []) {
      if (!f || typeof f.key !== "string") continue;
      out.push([prefix + f.key, f]);
      if (Array.isArray(f.fields)) out.push(...fieldKeys(f.fields, `${prefix}${f.key}.`));
    }
    return out;
  }
  function candidates() {
    const out = [];
    if (KIND === "form") {
      for (const [key, f] of fieldKeys(model.fields)) {
        out.push({ value: `answers.${key}`, detail: `${f.type} · ${pick(f.label)}` });
      }
      for (const s of model.scores || []) out.push({ value: `scores.${s.key}`, detail: s.method || "" });
    }
    if (KIND === "ruleset") {
      for (const key of ruleFields) out.push({ value: `answers.${key}`, detail: msg("builder.field") });
    }
    for (const name of CONTEXT[KIND] || []) out.push({ value: name, detail: msg("builder.context_name") });
    for (const fn of functions) out.push({ value: fn.name, insert: `${fn.name}(`,
      detail: `${fn.signature} — ${fn.doc}` });
    return out;
  }
  const completing = (input) => {
    if (window.CareloopComplete) window.CareloopComplete.attach(input, candidates);
    return input;
  };

  // --- problems at fields -------------------------------------------------------------------
  let draftFile = "";
  function problemsAt(prefix) {
    return problems.filter((p) => {
      if (draftFile && p.file !== draftFile) return false;  // a sibling definition's problem
      const parts = p.path_parts || [];
      return prefix.every((part, i) => parts[i] === part);
    });
  }

  // --- rendering ----------------------------------------------------------------------------
  function render() {
    if (!model) return;
    const typing = typingState();
    if (KIND === "form") renderForm();
    if (KIND === "ruleset") renderRules();
    if (KIND === "flow") renderFlow();
    if (KIND === "chart") renderChart();
    if (KIND === "dashboard") { renderDashboard(); renderTiles(); }
    if (KIND === "alert") renderAlert();
    if (KIND === "decision_table") renderGrid();
    restoreTyping(typing);
  }

  // A re-render (e.g. a draft save returning new problems) replaces the inputs; the one the
  // author is typing in keeps its focus, caret and not-yet-committed text.
  const IDENTITY = ["data-logic", "data-prop", "data-rule", "data-score", "data-choice",
    "data-band", "data-cell", "data-tile", "data-channel"];
  function typingState() {
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
  function restoreTyping(state) {
    if (!state || (document.activeElement && root.contains(document.activeElement)
      && document.activeElement !== document.body && document.activeElement.isConnected
      && document.activeElement.getAttribute(state.attr) === state.id)) return;
    const node = [...root.querySelectorAll(`[${state.attr}]`)]
      .find((n) => n.getAttribute(state.attr) === state.id && n.tagName === "INPUT");
    if (!node) return;
    if (!state.same) node.value = state.value;
    node.focus();
    try { node.setSelectionRange(state.start, state.end); } catch (e) { /* type=number */ }
    if (state.completing && window.CareloopComplete) window.CareloopComplete.reopen(node);
  }

  function newField(type) {
    const t = types[type] || {};
    model.fields = model.fields || [];
    const keys = new Set(model.fields.map((f) => f.key));
    let n = 1;
    while (keys.has(`${type}_${n}`)) n += 1;
    const field = { key: `${type}_${n}`, type, label: { "zh-CN": (t.title || {})["zh-CN"] || type,
      en: (t.title || {}).en || type } };
    if (t.uses_choices) {
      field.choices = [{ code: "a", label: { "zh-CN": "A", en: "A" } },
        { code: "b", label: { "zh-CN": "B", en: "B" } }];
    }
    if (t.uses_rows) field.rows = [{ code: "r1", label: { "zh-CN": "行1", en: "Row 1" } }];
    return field;
  }
  function addField(type, at) {
    commit(() => {
      model.fields = model.fields || [];
      const index = at === undefined ? model.fields.length : at;
      model.fields.splice(index, 0, newField(type));
      selected = index;
    });
  }
  function moveField(from, to) {
    if (to < 0 || to >= model.fields.length || from === to) return;
    commit(() => {
      const [f] = model.fields.splice(from, 1);
      model.fields.splice(to, 0, f);
      selected = to;
    });
  }

  function renderPalette() {
    const list = $("b-palette");
    if (!list) return;
    list.replaceChildren(...Object.entries(types).map(([name, t]) => el("li", {},
      el("button", { type: "button", draggable: "true", "data-type": name, text: pick(t.title),
        title: name,
        ondragstart: (e) => e.dataTransfer.setData("text/x-field-type", name),
        onclick: () => addField(name) }))));
  }

  function renderForm() {
    const list = $("b-fields");
    const fields = model.fields || [];
    if (selected >= fields.length) selected = fields.length - 1;
    const cards = fields.map((f, i) => {
      const errs = problemsAt(["fields", i]);
      const card = el("li", { class: "b-card" + (i === selected ? " selected" : "")
        + (errs.length ? " has-error" : ""), draggable: "true", "data-index": i,
      "data-key": f.key, tabindex: "0" },
      el("div", { class: "b-head" },
        el("span", { class: "b-name", text: `${f.key} · ${f.type}` }),
        el("button", { type: "button", class: "b-up", "aria-label": msg("builder.move_up"),
          text: "↑", onclick: (e) => { e.stopPropagation(); moveField(i, i - 1); } }),
        el("button", { type: "button", class: "b-down", "aria-label": msg("builder.move_down"),
          text: "↓", onclick: (e) => { e.stopPropagation(); moveField(i, i + 1); } }),
        el("button", { type: "button", class: "b-remove", "aria-label": msg("builder.remove"),
          text: "×", onclick: (e) => {
            e.stopPropagation();
            commit(() => { model.fields.splice(i, 1); selected = -1; });
          } })),
      el("div", { class: "b-label", text: pick(f.label) }),
      f.visible_if ? el("div", { class: "b-logic", text: `${msg("builder.show_when")}: ${f.visible_if}` }) : null,
      ...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` })));
      card.addEventListener("click", () => { selected = i; render(); });
      card.addEventListener("keydown", (e) => {
        if (e.altKey && e.key === "ArrowUp") { e.preventDefault(); moveField(i, i - 1); }
        if (e.altKey && e.key === "ArrowDown") { e.preventDefault(); moveField(i, i + 1); }
      });
      card.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/x-field-index", String(i)));
      card.addEventListener("dragover", (e) => e.preventDefault());
      card.addEventListener("drop", (e) => {
        e.preventDefault(); e.stopPropagation();
        const from = e.dataTransfer.getData("text/x-field-index");
        const type = e.dataTransfer.getData("text/x-field-type");
        if (type) addField(type, i);
        else if (from !== "") moveField(Number(from), i);
      });
      return card;
    });
    list.replaceChildren(...(cards.length ? cards : [el("li", { class: "empty", text: msg("builder.empty") })]));
    renderProps();
    renderScores();
  }

  // --- property panel (from the field type's JSON Schema) -------------------------------------
  function textPair(obj, name, label, onSet) {
    const value = obj[name] || {};
    const zh = el("input", { type: "text", value: typeof value === "object" ? value["zh-CN"] || "" : value,
      "data-prop": `${name}.zh-CN` });
    const en = el("input", { type: "text", value: typeof value === "object" ? value.en || "" : "",
      "data-prop": `${name}.en` });
    const apply = () => onSet(zh.value || en.value ? { "zh-CN": zh.value, en: en.value || zh.value } : undefined);
    zh.addEventListener("change", apply); en.addEventListener("change", apply);
    return el("fieldset", {}, el("legend", { text: label }),
      el("label", { text: msg("builder.label_zh") }, zh), el("label", { text: msg("builder.label_en") }, en));
  }
  function setOrDelete(obj, name, value) {
    if (value === undefined || value === "" || value === null || (typeof value === "number" && Number.isNaN(value))) delete obj[name];
    else obj[name] = value;
  }
  function schemaInput(field, name, schema, onSet) {
    // a field's option by default; a score's method option when the score editor passes onSet
    const set = onSet || ((v) => commit(() => setOrDelete(model.fields[selected], name, v)));
    const label = schema["x-label"] ? pick(schema["x-label"]) : name;  // the type's own words
    if (schema.$ref === "#/$defs/text") return textPair(field, name, label, set);
    if (schema.enum) {
      const select = el("select", { "data-prop": name }, el("option", { value: "", text: "" }),
        ...schema.enum.map((v) => el("option", { value: v, text: v, selected: field[name] === v })));
      select.addEventListener("change", () => set(select.value || undefined));
      return el("label", { text: label }, select);
    }
    if (schema.type === "boolean") {
      const box = el("input", { type: "checkbox", "data-prop": name, checked: field[name] === true });
      box.addEventListener("change", () => set(box.checked || undefined));
      return el("label", {}, box, label);
    }
    if (schema.type === "integer" || schema.type === "number") {
      const input = el("input", { type: "number", "data-prop": name, value: field[name] ?? "",
        min: schema.minimum, max: schema.maximum, step: schema.type === "integer" ? 1 : "any" });
      input.addEventListener("change", () => set(input.value === "" ? undefined : Number(input.value)));
      return el("label", { text: label }, input);
    }
    if (schema.type === "object") {  // e.g. weights per field: "q1: 2, q2: 1"
      const input = el("input", { type: "text", "data-prop": name,
        value: Object.entries(field[name] || {}).map(([k, v]) => `${k}: ${v}`).join(", ") });
      input.addEventListener("change", () => {
        const pairs = input.value.split(",").map((p) => p.split(":").map((x) => x.trim()))
          .filter(([k, v]) => k && v !== undefined && v !== "");
        set(pairs.length ? Object.fromEntries(pairs.map(([k, v]) => [k, Number(v)])) : undefined);
      });
      return el("label", { text: label }, input);
    }
    if (schema.type === "array") {
      const input = el("input", { type: "text", "data-prop": name, value: (field[name] || []).join(", ") });
      input.addEventListener("change", () => set(input.value.trim()
        ? input.value.split(",").map((s) => s.trim()).filter(Boolean) : undefined));
      return el("label", { text: label }, input);
    }
    const input = el("input", { type: "text", "data-prop": name, value: field[name] ?? "" });
    input.addEventListener("change", () => set(input.value || undefined));
    return el("label", { text: label }, input);
  }

  function choiceEditor(field, name) {
    const rows = (field[name] || []).map((c, j) => {
      const upd = (prop, v) => commit(() => setOrDelete(model.fields[selected][name][j], prop, v));
      const code = el("input", { type: "text", value: c.code, "data-choice": `${j}.code` });
      code.addEventListener("change", () => upd("code", code.value));
      const zh = el("input", { type: "text", value: pick({ "zh-CN": (c.label || {})["zh-CN"] }), "data-choice": `${j}.zh` });
      const en = el("input", { type: "text", value: (c.label || {}).en || "", "data-choice": `${j}.en` });
      const label = () => upd("label", { "zh-CN": zh.value, en: en.value || zh.value });
      zh.addEventListener("change", label); en.addEventListener("change", label);
      const cells = [code, zh, en];
      if (name === "choices") {
        const score = el("input", { type: "number", step: "any", value: c.score ?? "", "data-choice": `${j}.score` });
        score.addEventListener("change", () => upd("score", score.value === "" ? undefined : Number(score.value)));
        const excl = el("input", { type: "checkbox", checked: c.exclusive === true, "data-choice": `${j}.exclusive` });
        excl.addEventListener("change", () => upd("exclusive", excl.checked || undefined));
        const other = el("input", { type: "checkbox", checked: c.other === true, "data-choice": `${j}.other` });
        other.addEventListener("change", () => upd("other", other.checked || undefined));
        cells.push(score, excl, other);
      }
      const remove = el("button", { type: "button", text: "×", "aria-label": msg("builder.remove"),
        onclick: () => commit(() => model.fields[selected][name].splice(j, 1)) });
      return el("tr", {}, ...cells.map((c2) => el("td", {}, c2)), el("td", {}, remove));
    });
    const heads = [msg("builder.code"), msg("builder.label_zh"), msg("builder.label_en")];
    if (name === "choices") heads.push(msg("builder.score"), msg("builder.exclusive"), msg("builder.other"));
    const add = el("button", { type: "button", class: "b-add-choice", text: msg("builder.add_choice"),
      onclick: () => commit(() => {
        const list = model.fields[selected][name] = model.fields[selected][name] || [];
        const n = list.length + 1;
        list.push({ code: `c${n}`, label: { "zh-CN": `选项${n}`, en: `Option ${n}` } });
      }) });
    return el("fieldset", { class: "b-choices", "data-editor": name },
      el("legend", { text: name === "choices" ? msg("builder.choices") : "rows" }),
      el("table", {}, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { text: h })))),
        el("tbody", {}, ...rows)), add);
  }

  function literal(text) {
    const v = text.trim();
    if (v !== "" && !Number.isNaN(Number(v))) return v;
    if (v === "true" || v === "false") return v;
    return `'${v.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
  }
  const picking = {};  // what the author picked in a condition builder but has not set yet
  function remember(id, ...inputs) {
    const saved = picking[id] || [];
    inputs.forEach((input, n) => {
      if (saved[n] !== undefined) input.value = saved[n];
      const keep = () => { picking[id] = inputs.map((x) => x.value); };
      input.addEventListener("change", keep);
      input.addEventListener("input", keep);
    });
  }
  function logicEditor(field, name, title) {
    const others = (model.fields || []).filter((f) => f.key !== field.key);
    const pickField = el("select", { "data-logic": `${name}.field` },
      el("option", { value: "", text: msg("builder.pick_field") }),
      ...others.map((f) => el("option", { value: f.key, text: `${f.key} (${pick(f.label)})` })));
    const op = el("select", { "data-logic": `${name}.op` },
      ...["==", "!=", "<", "<=", ">", ">=", "in"].map((o) => el("option", { value: o, text: o })));
    const value = el("input", { type: "text", "data-logic": `${name}.value`, placeholder: msg("builder.value") });
    const expr = completing(el("input", { type: "text", "data-logic": `${name}.expression`,
      value: field[name] || "" }));
    remember(`field:${field.key}:${name}`, pickField, op, value);
    const errs = problemsAt(["fields", selected, name]);
    const set = el("button", { type: "button", "data-logic": `${name}.set`, text: msg("builder.set_condition"),
      onclick: () => {
        delete picking[`field:${field.key}:${name}`];
        if (!pickField.value) return;
        const rhs = op.value === "in"
          ? `[${value.value.split(",").map(literal).join(", ")}]` : literal(value.value);
        const text = `answers.${pickField.value} ${op.value} ${rhs}`;
        commit(() => { model.fields[selected][name] = text; });
      } });
    expr.addEventListener("change", () => commit(() => setOrDelete(model.fields[selected], name, expr.value.trim() || undefined)));
    return el("fieldset", { class: "b-logic-editor", "data-editor": name }, el("legend", { text: title }),
      pickField, op, value, set, el("label", { text: msg("builder.expression") }, expr),
      ...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` })));
  }

  function renderProps() {
    const panel = $("b-props");
    const field = (model.fields || [])[selected];
    if (!field) { panel.replaceChildren(); return; }
    const t = types[field.type] || { options: {} };
    const key = el("input", { type: "text", value: field.key, "data-prop": "key" });
    key.addEventListener("change", () => commit(() => { model.fields[selected].key = key.value.trim(); }));
    const required = el("input", { type: "checkbox", checked: field.required === true, "data-prop": "required" });
    required.addEventListener("change", () => commit(() => setOrDelete(model.fields[selected], "required", required.checked || undefined)));
    const parts = [el("label", { text: msg("builder.key") }, key),
      textPair(field, "label", "label", (v) => commit(() => setOrDelete(model.fields[selected], "label", v))),
      el("label", {}, required, msg("builder.required"))];
    for (const [name, schema] of Object.entries(t.options || {})) parts.push(schemaInput(field, name, schema));
    if (t.uses_choices) parts.push(choiceEditor(field, "choices"));
    if (t.uses_rows) parts.push(choiceEditor(field, "rows"));
    parts.push(logicEditor(field, "visible_if", msg("builder.show_when")));
    parts.push(logicEditor(field, "required_if", msg("builder.required_when")));
    panel.replaceChildren(...parts);
  }

  function renderScores() {
    const box = $("b-scores");
    if (!box) return;
    box.replaceChildren(...(model.scores || []).map((s, i) => {
      const upd = (prop, v) => commit(() => setOrDelete(model.scores[i], prop, v));
      const key = el("input", { type: "text", value: s.key, "data-score": `${i}.key` });
      key.addEventListener("change", () => upd("key", key.value.trim()));
      const method = el("select", { "data-score": `${i}.method` },
        ...scoreMethods.map((m) => el("option", { value: m.name, text: pick(m.title) || m.name,
          selected: s.method === m.name })));
      method.addEventListener("change", () => upd("method", method.value));
      const fields = el("input", { type: "text", value: (s.fields || []).join(", "), "data-score": `${i}.fields` });
      fields.addEventListener("change", () => upd("fields", fields.value.trim()
        ? fields.value.split(",").map((x) => x.trim()).filter(Boolean) : undefined));
      const expr = completing(el("input", { type: "text", value: s.expression || "", "data-score": `${i}.expression` }));
      expr.addEventListener("change", () => upd("expression", expr.value.trim() || undefined));
      // the method's own options, from its schema (the server's score-method panels)
      const own = (scoreMethods.find((m) => m.name === s.method) || { options: {} }).options || {};
      const extra = Object.entries(own).filter(([name]) => name !== "expression")
        .map(([name, schema]) => schemaInput(s, name, schema, (v) => upd(name, v)));
      const bands = (s.bands || []).map((b, j) => {
        const ub = (prop, v) => commit(() => setOrDelete(model.scores[i].bands[j], prop, v));
        const code = el("input", { type: "text", value: b.code, "data-band": `${i}.${j}.code` });
        code.addEventListener("change", () => ub("code", code.value.trim()));
        const zh = el("input", { type: "text", value: (b.label || {})["zh-CN"] || "", "data-band": `${i}.${j}.zh` });
        zh.addEventListener("change", () => ub("label", { "zh-CN": zh.value, en: (b.label || {}).en || zh.value }));
        const min = el("input", { type: "number", step: "any", value: b.min ?? "", "data-band": `${i}.${j}.min` });
        min.addEventListener("change", () => ub("min", min.value === "" ? undefined : Number(min.value)));
        const max = el("input", { type: "number", step: "any", value: b.max ?? "", "data-band": `${i}.${j}.max` });
        max.addEventListener("change", () => ub("max", max.value === "" ? undefined : Number(max.value)));
        return el("tr", {}, ...[code, zh, min, max].map((c) => el("td", {}, c)));
      });
      const addBand = el("button", { type: "button", class: "b-add-band", text: msg("builder.add_band"),
        onclick: () => commit(() => {
          const list = model.scores[i].bands = model.scores[i].bands || [];
          const n = list.length + 1;
          list.push({ code: `band${n}`, label: { "zh-CN": `分级${n}`, en: `Band ${n}` } });
        }) });
      const errs = problemsAt(["scores", i]);
      return el("fieldset", { class: "b-score" + (errs.length ? " has-error" : ""), "data-index": i },
        el("legend", { text: s.key }),
        el("label", { text: msg("builder.key") }, key), el("label", { text: msg("builder.method") }, method),
        el("label", { text: msg("builder.fields") }, fields),
        ...("expression" in own ? [el("label", { text: msg("builder.expression") }, expr)] : []), ...extra,
        el("table", {}, el("caption", { text: msg("builder.bands") }), el("tbody", {}, ...bands)), addBand,
        ...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` })));
    }));
  }

  let ruleFields = [];
  // --- rule editor --------------------------------------------------------------------------
  function renderRules() {
    const body = $("b-rules").querySelector("tbody");
    body.replaceChildren(...(model.rules || []).map((r, i) => {
      const when = completing(el("input", { type: "text", value: r.when || "", "data-rule": `${i}.when`, size: 60 }));
      when.addEventListener("change", () => commit(() => setOrDelete(model.rules[i], "when", when.value.trim() || undefined)));
      const errs = problemsAt(["rules", i]);
      const pickField = el("select", { "data-rule": `${i}.field` },
        el("option", { value: "", text: msg("builder.pick_field") }),
        ...ruleFields.map((f) => el("option", { value: f, text: f })));
      const op = el("select", { "data-rule": `${i}.op` },
        ...["==", "!=", "<", "<=", ">", ">=", "in"].map((o) => el("option", { value: o, text: o })));
      const value = el("input", { type: "text", "data-rule": `${i}.value`, size: 8,
        placeholder: msg("builder.value") });
      remember(`rule:${r.key}`, pickField, op, value);
      const set = el("button", { type: "button", "data-rule": `${i}.set`, text: msg("builder.set_condition"),
        onclick: () => {
          delete picking[`rule:${r.key}`];
          if (!pickField.value) return;
          const rhs = op.value === "in"
            ? `[${value.value.split(",").map(literal).join(", ")}]` : literal(value.value);
          commit(() => { model.rules[i].when = `answers.${pickField.value} ${op.value} ${rhs}`; });
        } });
      return el("tr", { "data-rule": r.key, class: errs.length ? "has-error" : "" },
        el("td", { text: r.key }), el("td", {}, when, el("div", { class: "b-rule-builder" }, pickField, op, value, set),
          ...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` }))),
        el("td", { text: (r.then || []).map((a) => a.do).join(", ") }));
    }));
  }
  async function tryRules() {
    let event;
    try { event = JSON.parse($("b-sample").value); } catch (e) { $("b-try-result").textContent = String(e); return; }
    const { status: code, data } = await api("POST", `${base}/rules/${KEY}/try`, { body: model, event });
    const out = $("b-try-result");
    if (code !== 200) { out.textContent = data.detail || String(code); return; }
    const matched = new Set((data.matched || []).map((m) => m.rule || m.key));
    out.replaceChildren(el("ul", { id: "b-try-list" }, ...(model.rules || []).map((r) => el("li", {
      class: matched.has(r.key) ? "b-try-hit" : "b-try-miss", "data-rule": r.key,
      text: `${r.key}: ${matched.has(r.key) ? msg("builder.matched") : msg("builder.not_matched")}`,
    }))), el("pre", { id: "b-try-actions", text: JSON.stringify(data.actions || [], null, 2) }));
  }

  // --- flow designer: steps, their properties, the schedule as a timeline ------------------------
  let stepTypes = [];      // [{name, title, options: {name: JSON Schema}, required}]
  let definitionLists = {};  // kind -> [{key, title, app}] (the step panel's selects)
  let selectedStep = -1;
  function moveStep(from, to) {
    if (to < 0 || to >= model.steps.length || from === to) return;
    commit(() => {
      const [st] = model.steps.splice(from, 1);
      model.steps.splice(to, 0, st);
      selectedStep = to;
    });
  }
  function newStep(type) {
    model.steps = model.steps || [];
    const keys = new Set(model.steps.map((st) => st.key));
    let n = 1;
    while (keys.has(`${type}_${n}`)) n += 1;
    const step = { key: `${type}_${n}`, type };
    if (type === "wait") step.duration = "1d";
    return step;
  }
  function days(duration) {
    const m = /^(\d+(?:\.\d+)?)\s*([dhwm]?)$/.exec(String(duration || "").trim());
    if (!m) return 0;
    const n = Number(m[1]);
    return { d: n, h: n / 24, w: n * 7, m: n / 1440, "": n }[m[2]];
  }
  function renderFlow() {
    const steps = model.steps || [];
    if (selectedStep >= steps.length) selectedStep = steps.length - 1;
    $("b-steps").replaceChildren(...steps.map((st, i) => {
      const errs = problemsAt(["steps", i]);
      const card = el("li", { class: "b-card" + (i === selectedStep ? " selected" : "")
        + (errs.length ? " has-error" : ""), "data-key": st.key, tabindex: "0" },
      el("div", { class: "b-head" }, el("span", { class: "b-name", text: `${st.key} · ${st.type}` }),
        el("button", { type: "button", class: "b-up", "aria-label": msg("builder.move_up"), text: "↑",
          onclick: (e) => { e.stopPropagation(); moveStep(i, i - 1); } }),
        el("button", { type: "button", class: "b-down", "aria-label": msg("builder.move_down"), text: "↓",
          onclick: (e) => { e.stopPropagation(); moveStep(i, i + 1); } }),
        el("button", { type: "button", class: "b-remove", "aria-label": msg("builder.remove"), text: "×",
          onclick: (e) => { e.stopPropagation(); commit(() => { model.steps.splice(i, 1); selectedStep = -1; }); } })),
      ...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` })));
      card.addEventListener("click", () => { selectedStep = i; render(); });
      return card;
    }));
    // the timeline: waits move the day on; every other step happens on the current day
    let day = 0;
    const items = [];
    for (const st of steps) {
      if (st.type === "wait") {
        if (st.duration) day += days(st.duration);
        else if (st.until && typeof st.until === "object") day = Number(st.until.days || 0);
        continue;
      }
      items.push(el("li", { "data-step": st.key }, el("span", { class: "b-day",
        text: msg("builder.day", { n: Math.round(day * 10) / 10 }) }), `${st.key} (${st.type})`));
    }
    $("b-timeline").replaceChildren(...items);
    if (window.CareloopFlowDiagram) window.CareloopFlowDiagram.render(flowHooks);
    const panel = $("b-step-props");
    // the property panel is generated from the step type's option schemas (steppanel.js)
    if (window.CareloopStepPanel) { window.CareloopStepPanel.render(panel, flowHooks); return; }
    const st = steps[selectedStep];
    if (!st) { panel.replaceChildren(); return; }
    const key = el("input", { type: "text", value: st.key, "data-prop": "key" });
    key.addEventListener("change", () => commit(() => { model.steps[selectedStep].key = key.value.trim(); }));
    const rest = Object.fromEntries(Object.entries(st).filter(([k]) => k !== "key" && k !== "type"));
    const json = el("textarea", { rows: 10, "data-prop": "json", spellcheck: "false" });
    json.value = JSON.stringify(rest, null, 2);
    json.addEventListener("change", () => {
      let parsed;
      try { parsed = JSON.parse(json.value); } catch (e) { status(String(e)); return; }
      commit(() => { model.steps[selectedStep] = { key: st.key, type: st.type, ...parsed }; });
    });
    panel.replaceChildren(el("label", { text: msg("builder.key") }, key),
      el("label", { text: msg("builder.step_json") }, json));
  }
  function renderStepPalette() {
    $("b-step-palette").replaceChildren(...stepTypes.map(({ name, title }) => el("li", {},
      el("button", { type: "button", "data-type": name, text: pick(title) || name, title: name,
        onclick: () => commit(() => {
          model.steps = model.steps || [];
          model.steps.push(newStep(name));
          selectedStep = model.steps.length - 1;
        }) }))));
  }

  // the diagram (flowdiagram.js) edits the same model through the same history
  const flowHooks = { model: () => model, commit, msg, problemsAt, newStep, rerender: render,
    stepTypes: () => stepTypes, selected: () => selectedStep, pick, status,
    lists: () => definitionLists, complete: completing,
    select: (i) => { selectedStep = i; render(); }, setSelected: (i) => { selectedStep = i; } };

  // --- chart (dashboard tile) designer -------------------------------------------------------
  let chartOptions = { datasets: [], types: [], channels: [], type_panels: [] };
  function renderChart() {
    const ds = $("b-chart-dataset"), type = $("b-chart-type");
    const dataset = typeof model.dataset === "string" ? model.dataset : "";
    ds.replaceChildren(el("option", { value: "", text: "" }), ...chartOptions.datasets.map((d) =>
      el("option", { value: d, text: d, selected: d === dataset })));
    // each chart type's panel comes from the server: its label and the channels it reads
    const panels = chartOptions.type_panels || [];
    const panel = panels.find((p) => p.name === model.type);
    type.replaceChildren(el("option", { value: "", text: "" }), ...panels.map((p) =>
      el("option", { value: p.name, text: p.title, selected: p.name === model.type })));
    $("b-chart-threshold").value = model.threshold ?? "";
    const enc = model.encoding || {};
    const columns = datasetColumns(dataset);
    const choices = el("datalist", { id: "b-chart-columns" },
      ...[...columns.dimensions, ...columns.measures].map((c) => el("option", { value: c })));
    const channels = panel ? panel.channels : chartOptions.channels;
    $("b-chart-encoding").replaceChildren(choices, ...channels.map((ch) => {
      const input = el("input", { type: "text", value: enc[ch] || "", "data-channel": ch,
        list: "b-chart-columns" });
      input.addEventListener("change", () => commit(() => {
        model.encoding = model.encoding || {};
        setOrDelete(model.encoding, ch, input.value.trim() || undefined);
      }));
      return el("label", { text: ch }, input);
    }));
  }
  // a stored dataset's dimensions and measures, fetched once (then the designer re-renders)
  const columnsCache = {};
  function datasetColumns(key) {
    if (!key) return { dimensions: [], measures: [] };
    if (!(key in columnsCache)) {
      columnsCache[key] = { dimensions: [], measures: [] };
      api("GET", `${base}/datasets/${encodeURIComponent(key)}`).then(({ status: code, data }) => {
        if (code === 200) { columnsCache[key] = data; render(); }
      });
    }
    return columnsCache[key];
  }
  async function previewChart() {
    if (!model) return;
    const { status: code, data } = await api("POST", `${base}/preview/chart/${KEY}`, { body: model });
    if (code !== 200) return;
    const image = $("b-chart-image");
    image.hidden = !data.image;
    if (data.image) image.src = data.image; else image.removeAttribute("src");
    $("b-chart-note").textContent = data.image ? msg("builder.real_data", { n: data.rows }) : data.message;
  }

  // --- dashboard designer: tiles (chart + width), each drawn by the report engine --------------
  const tileImages = {};
  async function tileImage(chart) {
    if (!(chart in tileImages)) {
      const { status: code, data } = await api("GET", `${base}/charts/${encodeURIComponent(chart)}/preview`);
      tileImages[chart] = code === 200 && data.image ? data.image : null;
    }
    return tileImages[chart];
  }
  function renderDashboard() {
    const filters = new Set(model.filters || []), drill = model.drilldown || [];
    const toggle = (prop, value, on, order) => commit(() => {
      const now = (model[prop] || []).filter((v) => v !== value);
      if (on) now.push(value);
      if (order) now.sort((a, b) => order.indexOf(a) - order.indexOf(b));
      setOrDelete(model, prop, now.length ? now : undefined);
    });
    $("b-dash-filters").replaceChildren(...chartOptions.filters.map((f) => {
      const box = el("input", { type: "checkbox", "data-filter": f, checked: filters.has(f) });
      box.addEventListener("change", () => toggle("filters", f, box.checked, chartOptions.filters));
      return el("label", {}, box, msg(`builder.filter.${f}`));
    }));
    $("b-dash-drill").replaceChildren(...chartOptions.drill_levels.map((level) => {
      const box = el("input", { type: "checkbox", "data-drill": level, checked: drill.includes(level) });
      box.addEventListener("change", () => toggle("drilldown", level, box.checked, chartOptions.drill_levels));
      return el("label", {}, box, level);
    }));
    const split = $("b-before-after");
    if (document.activeElement !== split) split.value = model.before_after || "";
    const errs = [...problemsAt(["filters"]), ...problemsAt(["drilldown"]), ...problemsAt(["before_after"])];
    $("b-dash-drill").parentElement.querySelectorAll(".b-err").forEach((n) => n.remove());
    $("b-dash-drill").after(...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` })));
  }
  function moveTile(from, to) {
    const tiles = model.tiles || [];
    if (to < 0 || to >= tiles.length || from === to) return;
    commit(() => { const [tile] = model.tiles.splice(from, 1); model.tiles.splice(to, 0, tile); });
    requestAnimationFrame(() => {
      const moved = $("b-tiles").children[to];
      if (moved) moved.focus();
    });
  }
  function renderTiles() {
    const tiles = model.tiles || [];
    $("b-tiles").replaceChildren(...tiles.map((tile, i) => {
      const chart = typeof tile.chart === "string" ? tile.chart : (tile.chart || {}).key;
      const width = el("input", { type: "number", min: 1, max: 12, value: tile.width ?? "",
        "data-tile": `${i}.width`, "aria-label": msg("builder.width") });
      width.addEventListener("change", () => commit(() => setOrDelete(model.tiles[i], "width",
        width.value === "" ? undefined : Number(width.value))));
      const img = el("img", { alt: chart || "", "data-tile-image": chart });
      tileImage(chart).then((src) => {
        if (src) img.src = src;
        else img.replaceWith(el("p", { class: "b-empty", text: msg("builder.no_data") }));
      });
      const errs = problemsAt(["tiles", i]);
      const item = el("li", { "data-chart": chart, "data-index": i, class: errs.length ? "has-error" : "",
        draggable: "true", tabindex: "0" },
        el("div", { class: "b-head" }, el("span", { class: "b-name", text: chart }), width,
          el("button", { type: "button", class: "b-up", text: "↑", "aria-label": msg("builder.move_up"),
            onclick: () => moveTile(i, i - 1) }),
          el("button", { type: "button", class: "b-down", text: "↓", "aria-label": msg("builder.move_down"),
            onclick: () => moveTile(i, i + 1) }),
          el("button", { type: "button", class: "b-remove", text: "×", "aria-label": msg("builder.remove"),
            onclick: () => commit(() => model.tiles.splice(i, 1)) })),
        img, ...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` })));
      item.style.gridColumn = `span ${Math.min(12, Math.max(1, Number(tile.width) || 6))}`;
      // rearrange: drag a tile onto another (it takes that place), or Alt+↑/↓ when focused
      item.addEventListener("dragstart", (e) => {
        e.dataTransfer.setData("text/x-tile-index", String(i));
        e.dataTransfer.effectAllowed = "move";
      });
      item.addEventListener("dragover", (e) => { e.preventDefault(); item.classList.add("b-drop"); });
      item.addEventListener("dragleave", () => item.classList.remove("b-drop"));
      item.addEventListener("drop", (e) => {
        e.preventDefault();
        item.classList.remove("b-drop");
        const from = e.dataTransfer.getData("text/x-tile-index");
        if (from !== "") moveTile(Number(from), i);
      });
      item.addEventListener("keydown", (e) => {
        if (e.target !== item) return;
        if (e.altKey && e.key === "ArrowUp") { e.preventDefault(); moveTile(i, i - 1); }
        if (e.altKey && e.key === "ArrowDown") { e.preventDefault(); moveTile(i, i + 1); }
      });
      return item;
    }));
  }

  // --- alert designer: a threshold on a dataset's measure per group, tried on current data ---------
  function renderAlert() {
    const dataset = typeof model.dataset === "string" ? model.dataset : "";
    const columns = datasetColumns(dataset);
    const cond = model.condition || {};
    const options = (select, values, current, blankFirst) => {
      select.replaceChildren(...(blankFirst ? [el("option", { value: "", text: "" })] : []),
        ...values.map((v) => el("option", { value: v, text: v, selected: v === current })));
      if (!values.includes(current) && current) select.append(el("option", { value: current, text: current, selected: true }));
    };
    options($("b-alert-dataset"), chartOptions.datasets, dataset, true);
    options($("b-alert-measure"), columns.measures, model.measure || "", true);
    options($("b-alert-group"), chartOptions.dimensions, model.group_by || "", true);
    options($("b-alert-op"), chartOptions.ops, cond.op || "", false);
    options($("b-alert-severity"), chartOptions.severities, model.severity || "", false);
    for (const [id, value] of [["b-alert-value", cond.value], ["b-alert-window", model.window_days],
      ["b-alert-pending", model.pending_minutes]]) {
      if (document.activeElement !== $(id)) $(id).value = value ?? "";
    }
    for (const [id, prefix] of [["b-alert-dataset", ["dataset"]], ["b-alert-measure", ["measure"]],
      ["b-alert-group", ["group_by"]], ["b-alert-value", ["condition"]], ["b-alert-window", ["window_days"]],
      ["b-alert-pending", ["pending_minutes"]], ["b-alert-severity", ["severity"]]]) {
      const label = $(id).closest("label, fieldset");
      label.querySelectorAll(".b-err").forEach((n) => n.remove());
      const errs = problemsAt(prefix);
      label.classList.toggle("has-error", errs.length > 0);
      label.append(...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` })));
    }
  }
  function wireAlert() {
    const number = (v) => (v === "" ? undefined : Number(v));
    const on = (id, apply) => $(id).addEventListener("change", (e) => commit(() => apply(e.target.value)));
    on("b-alert-dataset", (v) => { model.dataset = v; });
    on("b-alert-measure", (v) => { model.measure = v; });
    on("b-alert-group", (v) => { model.group_by = v; });
    on("b-alert-op", (v) => { model.condition = { ...(model.condition || {}), op: v }; });
    on("b-alert-value", (v) => { model.condition = { ...(model.condition || {}), value: number(v) }; });
    on("b-alert-window", (v) => setOrDelete(model, "window_days", number(v)));
    on("b-alert-pending", (v) => setOrDelete(model, "pending_minutes", number(v)));
    on("b-alert-severity", (v) => setOrDelete(model, "severity", v || undefined));
    $("b-alert-try").addEventListener("click", async () => {
      await save();
      const { status: code, data } = await api("POST", `${base}/alerts/${KEY}/try`, { body: model });
      if (code !== 200) { $("b-alert-summary").textContent = data.detail || String(code); return; }
      $("b-alert-summary").textContent = msg("builder.alert_summary", { from: data.date_from,
        to: data.date_to, n: data.breaching, total: data.rows.length, op: data.op, threshold: data.threshold });
      $("b-alert-result").querySelector("tbody").replaceChildren(...data.rows.map((r) => el("tr", {
        "data-group": r.group, class: r.breach ? "b-try-hit" : "b-try-miss" },
      el("td", { text: r.group }), el("td", { text: r.value === null ? msg("builder.too_few")
        : String(Math.round(r.value * 100) / 100) }),
      el("td", { text: r.breach ? msg("builder.breach") : "" }))));
    });
  }

  // --- decision table as a grid: one column per input and output, one row per rule -------------
  function cellValue(text) {
    const v = text.trim();
    if (v === "") return undefined;
    if (v === "true" || v === "false") return v === "true";
    if (!Number.isNaN(Number(v))) return Number(v);
    return v;
  }
  function renderGrid() {
    const inputs = (model.inputs || []).map((x) => x.key), outputs = (model.outputs || []).map((x) => x.key);
    const grid = $("b-grid");
    grid.querySelector("thead").replaceChildren(el("tr", {}, el("th", { text: "#" }),
      ...inputs.map((k) => el("th", { class: "b-in", text: k })),
      ...outputs.map((k) => el("th", { class: "b-out", text: `→ ${k}` })), el("th")));
    grid.querySelector("tbody").replaceChildren(...(model.rows || []).map((row, i) => {
      const cell = (part, k) => {
        const value = (row[part] || {})[k];
        const input = el("input", { type: "text", value: value === undefined ? "" : String(value),
          "data-cell": `${i}.${part}.${k}`, size: 10 });
        input.addEventListener("change", () => commit(() => {
          const target = model.rows[i][part] = model.rows[i][part] || {};
          setOrDelete(target, k, cellValue(input.value));
        }));
        return el("td", {}, input);
      };
      const errs = problemsAt(["rows", i]);
      return el("tr", { class: errs.length ? "has-error" : "", "data-row": i }, el("td", { text: String(i + 1) }),
        ...inputs.map((k) => cell("when", k)), ...outputs.map((k) => cell("then", k)),
        el("td", {}, el("button", { type: "button", text: "×", "aria-label": msg("builder.remove"),
          onclick: () => commit(() => model.rows.splice(i, 1)) }),
        ...errs.map((p) => el("p", { class: "b-err", text: `${p.code}: ${p.message}` }))));
    }));
  }

  // --- publish ------------------------------------------------------------------------------
  async function openPublish() {
    await save();
    const { status: code, data } = await api("POST", `${base}/diff/${KIND}/${KEY}`, { app: APP, body: model });
    if (code !== 200) { status(data.detail || String(code)); return; }
    $("b-diff").textContent = data.diff || "";
    const impact = data.impact || {};
    const lines = [];
    const flagged = [...(impact.orphaned || []), ...(impact.retyped || [])];
    if (flagged.length) {
      lines.push(el("p", { class: "b-orphans", text: msg("builder.orphan_warning") }),
        el("ul", { id: "b-orphan-list" }, ...flagged.map((o) => el("li", {
          text: `${o.field} (${o.answers})${o.to ? " " + o.from + " → " + o.to : ""}` }))));
    }
    if (KIND === "flow") lines.push(el("p", { text: msg("builder.running_flows", { n: impact.running_flows || 0 }) }));
    $("b-impact").replaceChildren(...lines);
    $("b-orphans-label").hidden = !flagged.length;
    $("b-confirm-orphans").checked = false;
    $("b-publish-dialog").showModal();
  }
  async function confirmPublish() {
    const { status: code, data } = await api("POST", `${base}/publish/${KIND}/${KEY}`,
      { app: APP, body: model, confirm_orphans: $("b-confirm-orphans").checked });
    $("b-publish-dialog").close();
    if (code === 202) { status(msg("builder.awaiting_approval")); return; }
    if (code !== 200) { status(data.detail || String(code)); return; }
    $("b-version").textContent = `v${data.version}`;
    status(msg("builder.published", { version: data.version }));
  }

  // --- wiring -------------------------------------------------------------------------------
  async function start() {
    M = (await api("GET", `${base}/i18n`)).data;
    functions = (await api("GET", `${base}/functions`)).data || [];
    if (KIND === "form") {
      const palette = (await api("GET", `${base}/field-types`)).data;
      for (const t of palette) types[t.name] = t;
      scoreMethods = (await api("GET", `${base}/score-method-panels`)).data;  // with titles
      renderPalette();
      const list = $("b-fields");
      list.addEventListener("dragover", (e) => e.preventDefault());
      list.addEventListener("drop", (e) => {
        e.preventDefault();
        const type = e.dataTransfer.getData("text/x-field-type");
        const from = e.dataTransfer.getData("text/x-field-index");
        if (type) addField(type);
        else if (from !== "") moveField(Number(from), model.fields.length - 1);
      });
      $("b-add-score").addEventListener("click", () => commit(() => {
        model.scores = model.scores || [];
        model.scores.push({ key: `score_${model.scores.length + 1}`, method: "sum",
          fields: (model.fields || []).map((f) => f.key).slice(0, 1) });
      }));
    }
    if (KIND === "ruleset") $("b-try").addEventListener("click", tryRules);
    if (KIND === "chart") {
      chartOptions = (await api("GET", `${base}/charts`)).data;
      $("b-chart-dataset").addEventListener("change", (e) => commit(() => { model.dataset = e.target.value; }));
      $("b-chart-type").addEventListener("change", (e) => commit(() => { model.type = e.target.value; }));
      $("b-chart-threshold").addEventListener("change", (e) => commit(() => setOrDelete(model, "threshold",
        e.target.value === "" ? undefined : Number(e.target.value))));
    }
    if (KIND === "decision_table") {
      $("b-add-row").addEventListener("click", () => commit(() => {
        model.rows = model.rows || [];
        model.rows.push({ when: {}, then: {} });
      }));
    }
    if (KIND === "alert") {
      chartOptions = (await api("GET", `${base}/charts`)).data;
      wireAlert();
    }
    if (KIND === "dashboard") {
      const options = chartOptions = (await api("GET", `${base}/charts`)).data;
      $("b-tile-chart").replaceChildren(...options.charts.map((c) => el("option", { value: c, text: c })));
      $("b-before-after").addEventListener("change", (e) => commit(() => setOrDelete(model, "before_after",
        e.target.value || undefined)));
      $("b-add-tile").addEventListener("click", () => commit(() => {
        model.tiles = model.tiles || [];
        model.tiles.push({ chart: $("b-tile-chart").value, width: 6 });
      }));
    }
    if (KIND === "flow") {
      stepTypes = (await api("GET", `${base}/step-types`)).data;
      await Promise.all(["form", "template", "flow", "calendar"].map(async (kind) => {
        const { status: code, data: rows } = await api("GET", `${base}/definitions/${kind}`);
        definitionLists[kind] = code === 200 && Array.isArray(rows) ? rows : [];
      }));
      renderStepPalette();
    }
    const { data } = await api("GET", `${base}/drafts/${KIND}/${KEY}`);
    model = data.body;
    APP = APP || data.app || "";
    $("b-app").textContent = APP;
    if (data.current_version) $("b-version").textContent = `v${data.current_version}`;
    if (data.awaiting_approval) status(msg("builder.awaiting_approval"));
    if (KIND === "ruleset" && model && (model.forms || []).length) {
      $("b-sample").value = JSON.stringify({ form: model.forms[0], answers: {} });
      const seen = new Set();
      for (const form of model.forms) {
        const { status: code, data: keys } = await api("GET", `${base}/forms/${encodeURIComponent(form)}/fields`);
        if (code === 200) keys.forEach((k) => seen.add(k));
      }
      ruleFields = [...seen].sort();
    }
    showChecked(data);
    render();
    if (KIND === "form") preview();
    if (KIND === "chart") previewChart();
    $("b-undo").addEventListener("click", undo);
    $("b-redo").addEventListener("click", redo);
    $("b-save").addEventListener("click", () => save());
    $("b-publish").addEventListener("click", openPublish);
    $("b-confirm").addEventListener("click", confirmPublish);
    $("b-cancel").addEventListener("click", () => $("b-publish-dialog").close());
    $("b-apply-text").addEventListener("click", async () => {
      const text = $("b-yaml").value;
      $("b-yaml").blur();
      const result = await save({ text });
      if (result && result.body) {
        undoStack.push(JSON.stringify(model));
        redoStack.length = 0;
        model = result.body;
        render();
      }
    });
    document.addEventListener("keydown", (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key === "z" && document.activeElement.tagName !== "TEXTAREA") {
        e.preventDefault(); e.shiftKey ? redo() : undo();
      }
    });
    root.dataset.ready = "1";
  }
  start();
})();
