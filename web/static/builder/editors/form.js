// The form designer: a palette of field types (from the server: GET field-types, each with its
// options' JSON Schema), the field cards (drag, Alt+↑/↓), the property panel generated from the
// field type's schema, show-when / required-when conditions, scores with their bands, and the
// live preview rendered by the forms engine.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { schemaInput, textPair } from "../core/schemainput.js";
import { conditionPanel } from "../core/conditionpanel.js";
import { advanced } from "../core/advanced.js";
import { describeCondition, fieldContext } from "../core/sentence.js";
import { fieldKeys, freshKey, setOrDelete } from "../core/text.js";

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

// A field type in words (单选题), from the palette; its name only if the type is unknown.
function typeTitle(b, type) {
  return types[type] ? b.pick(types[type].title) || type : type;
}

// What a condition on this form can name: the other answerable fields, by label.
function sentenceContext(b, except) {
  const fields = fieldContext(b.model.fields, types, b.pick, b.msg);
  delete fields[except];
  return { say: b.msg, fields };
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
      el("span", { class: "b-name", text: b.pick(f.label) || typeTitle(b, f.type) }),
      el("small", { class: "b-type", text: typeTitle(b, f.type) }),
      el("button", { type: "button", class: "b-up", "aria-label": b.msg("builder.move_up"),
        text: "↑", onclick: (e) => { e.stopPropagation(); moveField(b, i, i - 1); } }),
      el("button", { type: "button", class: "b-down", "aria-label": b.msg("builder.move_down"),
        text: "↓", onclick: (e) => { e.stopPropagation(); moveField(b, i, i + 1); } }),
      el("button", { type: "button", class: "b-remove", "aria-label": b.msg("builder.remove"),
        text: "×", onclick: (e) => {
          e.stopPropagation();
          b.commit(() => { b.model.fields.splice(i, 1); selected = -1; });
        } })),
    f.visible_if ? el("div", { class: "b-logic",
      text: `${b.msg("builder.show_when")}: ${describeCondition(f.visible_if, sentenceContext(b, f.key))}` }) : null,
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
  const codes = [];
  const rows = (field[name] || []).map((c, j) => {
    const upd = (prop, v) => b.commit(() => setOrDelete(b.model.fields[selected][name][j], prop, v));
    const code = el("input", { type: "text", value: c.code, "data-choice": `${j}.code` });
    code.addEventListener("change", () => upd("code", code.value));
    const zh = el("input", { type: "text", value: b.pick({ "zh-CN": (c.label || {})["zh-CN"] }), "data-choice": `${j}.zh` });
    const en = el("input", { type: "text", value: (c.label || {}).en || "", "data-choice": `${j}.en` });
    const label = () => upd("label", { "zh-CN": zh.value, en: en.value || zh.value });
    zh.addEventListener("change", label); en.addEventListener("change", label);
    zh.placeholder = b.msg("builder.label_zh"); en.placeholder = b.msg("builder.label_en");
    const cells = [zh, en];
    if (name === "choices") {
      const score = el("input", { type: "number", step: "any", value: c.score ?? "", "data-choice": `${j}.score` });
      score.addEventListener("change", () => upd("score", score.value === "" ? undefined : Number(score.value)));
      const excl = el("input", { type: "checkbox", checked: c.exclusive === true, "data-choice": `${j}.exclusive` });
      excl.addEventListener("change", () => upd("exclusive", excl.checked || undefined));
      const other = el("input", { type: "checkbox", checked: c.other === true, "data-choice": `${j}.other` });
      other.addEventListener("change", () => upd("other", other.checked || undefined));
      score.setAttribute("aria-label", b.msg("builder.score"));
      cells.push(el("label", { class: "b-check", text: b.msg("builder.score") }, score),
        el("label", { class: "b-check" }, excl, b.msg("builder.exclusive")),
        el("label", { class: "b-check" }, other, b.msg("builder.other")));
    }
    const remove = el("button", { type: "button", text: "×", "aria-label": b.msg("builder.remove"),
      onclick: () => b.commit(() => b.model.fields[selected][name].splice(j, 1)) });
    codes.push(el("label", { text: b.pick(c.label) || c.code }, code));
    return el("li", { class: "b-choice", "data-index": j }, ...cells, remove);
  });
  const add = el("button", { type: "button", class: "b-add-choice", text: b.msg("builder.add_choice"),
    onclick: () => b.commit(() => {
      const list = b.model.fields[selected][name] = b.model.fields[selected][name] || [];
      const n = list.length + 1;
      list.push({ code: `c${n}`, label: { "zh-CN": `选项${n}`, en: `Option ${n}` } });
    }) });
  return el("fieldset", { class: "b-choices", "data-editor": name },
    el("legend", { text: name === "choices" ? b.msg("builder.choices") : b.msg("builder.items.rows") }),
    el("ol", { class: "b-choice-list" }, ...rows), add,
    advanced(b, `choices:${name}`, `${b.msg("builder.advanced")}: ${b.msg("builder.choice_codes")}`, ...codes));
}

function logicEditor(b, field, name, title) {
  return conditionPanel(b, { id: `field:${field.key}:${name}`, attr: "data-logic", prefix: name, title,
    text: field[name] || "", ctx: sentenceContext(b, field.key),
    errors: b.errorLines(b.problemsAt(["fields", selected, name])),
    onSet: (text) => b.commit(() => setOrDelete(b.model.fields[selected], name, text)) });
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
  const parts = [el("p", { class: "b-type", text: b.msg("builder.field_kind", { type: typeTitle(b, field.type) }) }),
    textPair(b, field, "label", b.msg("builder.word.label"), setField("label")),
    el("label", {}, required, b.msg("builder.required"))];
  for (const [name, schema] of Object.entries(t.options || {})) {
    parts.push(schemaInput(b, field, name, schema, setField(name)));
  }
  if (t.uses_choices) parts.push(choiceEditor(b, field, "choices"));
  if (t.uses_rows) parts.push(choiceEditor(b, field, "rows"));
  parts.push(logicEditor(b, field, "visible_if", b.msg("builder.show_when")));
  parts.push(logicEditor(b, field, "required_if", b.msg("builder.required_when")));
  parts.push(advanced(b, "field:key", b.msg("builder.advanced_field"), el("label", { text: b.msg("builder.field_key") }, key)));
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
    // the scored fields by label, one checkbox each (nested group fields too)
    const picked = new Set(s.fields || []);
    const fields = el("div", { class: "b-score-fields" }, ...Object.entries(fieldContext(b.model.fields, types, b.pick, b.msg))
      .map(([fkey, f]) => {
        const box = el("input", { type: "checkbox", checked: picked.has(fkey), "data-score": `${i}.fields.${fkey}` });
        box.addEventListener("change", () => {
          const now = new Set(b.model.scores[i].fields || []);
          if (box.checked) now.add(fkey); else now.delete(fkey);
          upd("fields", now.size ? [...now] : undefined);
        });
        return el("label", { class: "b-check" }, box, f.label);
      }));
    const expr = b.completing(el("input", { type: "text", value: s.expression || "", "data-score": `${i}.expression` }));
    expr.addEventListener("change", () => upd("expression", expr.value.trim() || undefined));
    // the method's own options, from its schema (the server's score-method panels)
    const own = (scoreMethods.find((m) => m.name === s.method) || { options: {} }).options || {};
    const extra = Object.entries(own).filter(([name]) => name !== "expression")
      .map(([name, schema]) => schemaInput(b, s, name, schema, (v) => upd(name, v)));
    const bandCodes = [];
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
      bandCodes.push(el("label", { text: b.pick(band.label) || band.code }, code));
      return el("tr", {}, ...[zh, min, max].map((c) => el("td", {}, c)));
    });
    const addBand = el("button", { type: "button", class: "b-add-band", text: b.msg("builder.add_band"),
      onclick: () => b.commit(() => {
        const list = b.model.scores[i].bands = b.model.scores[i].bands || [];
        const n = list.length + 1;
        list.push({ code: `band${n}`, label: { "zh-CN": `分级${n}`, en: `Band ${n}` } });
      }) });
    const errs = b.problemsAt(["scores", i]);
    const zhLabel = el("input", { type: "text", value: (s.label || {})["zh-CN"] || "", "data-score": `${i}.label.zh-CN` });
    zhLabel.addEventListener("change", () => upd("label", zhLabel.value
      ? { "zh-CN": zhLabel.value, en: (s.label || {}).en || zhLabel.value } : undefined));
    return el("fieldset", { class: "b-score" + (errs.length ? " has-error" : ""), "data-index": i },
      el("legend", { text: b.pick(s.label) || b.msg("builder.items.scores") }),
      el("label", { text: b.msg("builder.word.label") }, zhLabel),
      el("label", { text: b.msg("builder.method") }, method),
      el("fieldset", {}, el("legend", { text: b.msg("builder.score_fields") }), fields), ...extra,
      el("table", {}, el("caption", { text: b.msg("builder.bands") }), el("tbody", {}, ...bands)), addBand,
      ...b.errorLines(errs),
      advanced(b, `score:${i}`, b.msg("builder.advanced"), el("label", { text: b.msg("builder.score_key") }, key),
        ...("expression" in own ? [el("label", { text: b.msg("builder.expression") }, expr)] : []), ...bandCodes));
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
      const n = b.model.scores.length + 1;
      b.model.scores.push({ key: `score_${n}`, label: { "zh-CN": `评分${n}`, en: `Score ${n}` }, method: "sum",
        fields: (b.model.fields || []).map((f) => f.key).slice(0, 1) });
    }));
  },
  render(b) {
    renderFields(b);
    renderProps(b);
    renderScores(b);
  },
  sentenceContext: (b) => sentenceContext(b, null),
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
