// The form designer: a palette of field types (from the server: GET field-types, each with its
// options' JSON Schema), the field cards (drag, Alt+↑/↓), the property panel generated from the
// field type's schema, show-when / required-when conditions, scores with their bands, and the
// live preview rendered by the forms engine.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { schemaInput, textPair } from "../core/schemainput.js";
import { conditionPicker } from "../core/conditions.js";
import { fieldKeys, freshKey, parseList, setOrDelete } from "../core/text.js";

const types = {};        // field type name -> {title, options, uses_choices, ...}
let scoreMethods = [];
let selected = -1;

function newField(b, type) {
  const t = types[type] || {};
  b.model.fields = b.model.fields || [];
  const field = { key: freshKey(b.model.fields.map((f) => f.key), type), type,
    label: { "zh-CN": (t.title || {})["zh-CN"] || type, en: (t.title || {}).en || type } };
  if (t.uses_choices) {
    field.choices = [{ code: "a", label: { "zh-CN": "A", en: "A" } },
      { code: "b", label: { "zh-CN": "B", en: "B" } }];
  }
  if (t.uses_rows) field.rows = [{ code: "r1", label: { "zh-CN": "行1", en: "Row 1" } }];
  return field;
}
function addField(b, type, at) {
  b.commit(() => {
    b.model.fields = b.model.fields || [];
    const index = at === undefined ? b.model.fields.length : at;
    b.model.fields.splice(index, 0, newField(b, type));
    selected = index;
  });
}
function moveField(b, from, to) {
  if (to < 0 || to >= b.model.fields.length || from === to) return;
  b.commit(() => {
    const [f] = b.model.fields.splice(from, 1);
    b.model.fields.splice(to, 0, f);
    selected = to;
  });
}

function renderPalette(b) {
  const list = b.$("b-palette");
  if (!list) return;
  list.replaceChildren(...Object.entries(types).map(([name, t]) => el("li", {},
    el("button", { type: "button", draggable: "true", "data-type": name, text: b.pick(t.title),
      title: name,
      ondragstart: (e) => e.dataTransfer.setData("text/x-field-type", name),
      onclick: () => addField(b, name) }))));
}

function renderFields(b) {
  const list = b.$("b-fields");
  const fields = b.model.fields || [];
  if (selected >= fields.length) selected = fields.length - 1;
  const cards = fields.map((f, i) => {
    const errs = b.problemsAt(["fields", i]);
    const card = el("li", { class: "b-card" + (i === selected ? " selected" : "")
      + (errs.length ? " has-error" : ""), draggable: "true", "data-index": i,
    "data-key": f.key, tabindex: "0" },
    el("div", { class: "b-head" },
      el("span", { class: "b-name", text: `${f.key} · ${f.type}` }),
      el("button", { type: "button", class: "b-up", "aria-label": b.msg("builder.move_up"),
        text: "↑", onclick: (e) => { e.stopPropagation(); moveField(b, i, i - 1); } }),
      el("button", { type: "button", class: "b-down", "aria-label": b.msg("builder.move_down"),
        text: "↓", onclick: (e) => { e.stopPropagation(); moveField(b, i, i + 1); } }),
      el("button", { type: "button", class: "b-remove", "aria-label": b.msg("builder.remove"),
        text: "×", onclick: (e) => {
          e.stopPropagation();
          b.commit(() => { b.model.fields.splice(i, 1); selected = -1; });
        } })),
    el("div", { class: "b-label", text: b.pick(f.label) }),
    f.visible_if ? el("div", { class: "b-logic", text: `${b.msg("builder.show_when")}: ${f.visible_if}` }) : null,
    ...b.errorLines(errs));
    card.addEventListener("click", () => { selected = i; b.render(); });
    card.addEventListener("keydown", (e) => {
      if (e.altKey && e.key === "ArrowUp") { e.preventDefault(); moveField(b, i, i - 1); }
      if (e.altKey && e.key === "ArrowDown") { e.preventDefault(); moveField(b, i, i + 1); }
    });
    card.addEventListener("dragstart", (e) => e.dataTransfer.setData("text/x-field-index", String(i)));
    card.addEventListener("dragover", (e) => e.preventDefault());
    card.addEventListener("drop", (e) => {
      e.preventDefault(); e.stopPropagation();
      const from = e.dataTransfer.getData("text/x-field-index");
      const type = e.dataTransfer.getData("text/x-field-type");
      if (type) addField(b, type, i);
      else if (from !== "") moveField(b, Number(from), i);
    });
    return card;
  });
  list.replaceChildren(...(cards.length ? cards : [el("li", { class: "empty", text: b.msg("builder.empty") })]));
}

function choiceEditor(b, field, name) {
  const rows = (field[name] || []).map((c, j) => {
    const upd = (prop, v) => b.commit(() => setOrDelete(b.model.fields[selected][name][j], prop, v));
    const code = el("input", { type: "text", value: c.code, "data-choice": `${j}.code` });
    code.addEventListener("change", () => upd("code", code.value));
    const zh = el("input", { type: "text", value: b.pick({ "zh-CN": (c.label || {})["zh-CN"] }), "data-choice": `${j}.zh` });
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
    const remove = el("button", { type: "button", text: "×", "aria-label": b.msg("builder.remove"),
      onclick: () => b.commit(() => b.model.fields[selected][name].splice(j, 1)) });
    return el("tr", {}, ...cells.map((c2) => el("td", {}, c2)), el("td", {}, remove));
  });
  const heads = [b.msg("builder.code"), b.msg("builder.label_zh"), b.msg("builder.label_en")];
  if (name === "choices") heads.push(b.msg("builder.score"), b.msg("builder.exclusive"), b.msg("builder.other"));
  const add = el("button", { type: "button", class: "b-add-choice", text: b.msg("builder.add_choice"),
    onclick: () => b.commit(() => {
      const list = b.model.fields[selected][name] = b.model.fields[selected][name] || [];
      const n = list.length + 1;
      list.push({ code: `c${n}`, label: { "zh-CN": `选项${n}`, en: `Option ${n}` } });
    }) });
  return el("fieldset", { class: "b-choices", "data-editor": name },
    el("legend", { text: name === "choices" ? b.msg("builder.choices") : "rows" }),
    el("table", {}, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", { text: h })))),
      el("tbody", {}, ...rows)), add);
}

function logicEditor(b, field, name, title) {
  const others = (b.model.fields || []).filter((f) => f.key !== field.key);
  const { pickField, op, value, set } = conditionPicker(b, {
    id: `field:${field.key}:${name}`, attr: "data-logic", prefix: name,
    choices: others.map((f) => [f.key, `${f.key} (${b.pick(f.label)})`]),
    apply: (text) => b.commit(() => { b.model.fields[selected][name] = text; }) });
  const expr = b.completing(el("input", { type: "text", "data-logic": `${name}.expression`,
    value: field[name] || "" }));
  const errs = b.problemsAt(["fields", selected, name]);
  expr.addEventListener("change", () => b.commit(() => setOrDelete(b.model.fields[selected], name, expr.value.trim() || undefined)));
  return el("fieldset", { class: "b-logic-editor", "data-editor": name }, el("legend", { text: title }),
    pickField, op, value, set, el("label", { text: b.msg("builder.expression") }, expr), ...b.errorLines(errs));
}

function renderProps(b) {
  const panel = b.$("b-props");
  const field = (b.model.fields || [])[selected];
  if (!field) { panel.replaceChildren(); return; }
  const t = types[field.type] || { options: {} };
  const setField = (name) => (v) => b.commit(() => setOrDelete(b.model.fields[selected], name, v));
  const key = el("input", { type: "text", value: field.key, "data-prop": "key" });
  key.addEventListener("change", () => b.commit(() => { b.model.fields[selected].key = key.value.trim(); }));
  const required = el("input", { type: "checkbox", checked: field.required === true, "data-prop": "required" });
  required.addEventListener("change", () => setField("required")(required.checked || undefined));
  const parts = [el("label", { text: b.msg("builder.key") }, key),
    textPair(b, field, "label", "label", setField("label")),
    el("label", {}, required, b.msg("builder.required"))];
  for (const [name, schema] of Object.entries(t.options || {})) {
    parts.push(schemaInput(b, field, name, schema, setField(name)));
  }
  if (t.uses_choices) parts.push(choiceEditor(b, field, "choices"));
  if (t.uses_rows) parts.push(choiceEditor(b, field, "rows"));
  parts.push(logicEditor(b, field, "visible_if", b.msg("builder.show_when")));
  parts.push(logicEditor(b, field, "required_if", b.msg("builder.required_when")));
  panel.replaceChildren(...parts);
}

function renderScores(b) {
  const box = b.$("b-scores");
  if (!box) return;
  box.replaceChildren(...(b.model.scores || []).map((s, i) => {
    const upd = (prop, v) => b.commit(() => setOrDelete(b.model.scores[i], prop, v));
    const key = el("input", { type: "text", value: s.key, "data-score": `${i}.key` });
    key.addEventListener("change", () => upd("key", key.value.trim()));
    const method = el("select", { "data-score": `${i}.method` },
      ...scoreMethods.map((m) => el("option", { value: m.name, text: b.pick(m.title) || m.name,
        selected: s.method === m.name })));
    method.addEventListener("change", () => upd("method", method.value));
    const fields = el("input", { type: "text", value: (s.fields || []).join(", "), "data-score": `${i}.fields` });
    fields.addEventListener("change", () => upd("fields", parseList(fields.value)));
    const expr = b.completing(el("input", { type: "text", value: s.expression || "", "data-score": `${i}.expression` }));
    expr.addEventListener("change", () => upd("expression", expr.value.trim() || undefined));
    // the method's own options, from its schema (the server's score-method panels)
    const own = (scoreMethods.find((m) => m.name === s.method) || { options: {} }).options || {};
    const extra = Object.entries(own).filter(([name]) => name !== "expression")
      .map(([name, schema]) => schemaInput(b, s, name, schema, (v) => upd(name, v)));
    const bands = (s.bands || []).map((band, j) => {
      const ub = (prop, v) => b.commit(() => setOrDelete(b.model.scores[i].bands[j], prop, v));
      const code = el("input", { type: "text", value: band.code, "data-band": `${i}.${j}.code` });
      code.addEventListener("change", () => ub("code", code.value.trim()));
      const zh = el("input", { type: "text", value: (band.label || {})["zh-CN"] || "", "data-band": `${i}.${j}.zh` });
      zh.addEventListener("change", () => ub("label", { "zh-CN": zh.value, en: (band.label || {}).en || zh.value }));
      const min = el("input", { type: "number", step: "any", value: band.min ?? "", "data-band": `${i}.${j}.min` });
      min.addEventListener("change", () => ub("min", min.value === "" ? undefined : Number(min.value)));
      const max = el("input", { type: "number", step: "any", value: band.max ?? "", "data-band": `${i}.${j}.max` });
      max.addEventListener("change", () => ub("max", max.value === "" ? undefined : Number(max.value)));
      return el("tr", {}, ...[code, zh, min, max].map((c) => el("td", {}, c)));
    });
    const addBand = el("button", { type: "button", class: "b-add-band", text: b.msg("builder.add_band"),
      onclick: () => b.commit(() => {
        const list = b.model.scores[i].bands = b.model.scores[i].bands || [];
        const n = list.length + 1;
        list.push({ code: `band${n}`, label: { "zh-CN": `分级${n}`, en: `Band ${n}` } });
      }) });
    const errs = b.problemsAt(["scores", i]);
    return el("fieldset", { class: "b-score" + (errs.length ? " has-error" : ""), "data-index": i },
      el("legend", { text: s.key }),
      el("label", { text: b.msg("builder.key") }, key), el("label", { text: b.msg("builder.method") }, method),
      el("label", { text: b.msg("builder.fields") }, fields),
      ...("expression" in own ? [el("label", { text: b.msg("builder.expression") }, expr)] : []), ...extra,
      el("table", {}, el("caption", { text: b.msg("builder.bands") }), el("tbody", {}, ...bands)), addBand,
      ...b.errorLines(errs));
  }));
}

// --- the live preview: the forms engine renders the draft; a change re-renders it ---------------
function previewInputs(b) {
  const phone = b.$("b-phone");
  const form = phone && phone.shadowRoot && phone.shadowRoot.querySelector("form");
  if (!form) return null;
  const out = {};
  for (const [name, value] of new FormData(form).entries()) {
    if (name.startsWith("_") || name === "csrf_token" || typeof value !== "string") continue;
    (out[name] = out[name] || []).push(value);
  }
  return out;
}
async function preview(b, withInputs) {
  const phone = b.$("b-phone");
  if (!phone || !b.model) return;
  const request = { body: b.model };
  if (withInputs) request.form = previewInputs(b) || {};
  const { status: code, data } = await b.api("POST", `${b.base}/preview/form/${b.key}`, request);
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
    form.addEventListener("change", () => preview(b, true));
  }
}

register("form", {
  context: ["answers", "patient", "encounter", "scores"],
  async start(b) {
    const palette = (await b.api("GET", `${b.base}/field-types`)).data;
    for (const t of palette) types[t.name] = t;
    scoreMethods = (await b.api("GET", `${b.base}/score-method-panels`)).data;  // with titles
    renderPalette(b);
    const list = b.$("b-fields");
    list.addEventListener("dragover", (e) => e.preventDefault());
    list.addEventListener("drop", (e) => {
      e.preventDefault();
      const type = e.dataTransfer.getData("text/x-field-type");
      const from = e.dataTransfer.getData("text/x-field-index");
      if (type) addField(b, type);
      else if (from !== "") moveField(b, Number(from), b.model.fields.length - 1);
    });
    b.$("b-add-score").addEventListener("click", () => b.commit(() => {
      b.model.scores = b.model.scores || [];
      b.model.scores.push({ key: `score_${b.model.scores.length + 1}`, method: "sum",
        fields: (b.model.fields || []).map((f) => f.key).slice(0, 1) });
    }));
  },
  render(b) {
    renderFields(b);
    renderProps(b);
    renderScores(b);
  },
  ready: (b) => preview(b),
  saved: (b) => preview(b, true),
  candidates(b) {
    const out = [];
    for (const [key, f] of fieldKeys(b.model.fields)) {
      out.push({ value: `answers.${key}`, detail: `${f.type} · ${b.pick(f.label)}` });
    }
    for (const s of b.model.scores || []) out.push({ value: `scores.${s.key}`, detail: s.method || "" });
    return out;
  },
});
