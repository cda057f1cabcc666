// The dataset designer: where the rows come from (a source by its title, and for questionnaire
// answers the forms by title), what to group by (dimensions by title), what to compute (measures
// by title, a measure of an answer picks the question by its label), "only the last N days", and
// a preview of the rows on the user's own (scoped) data, every value in words. The measure keys
// are proposed from the pick and shown only under "高级"; nothing here is typed as YAML.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { advanced } from "../core/advanced.js";
import { setOrDelete } from "../core/text.js";

let options = { sources: [], dimensions: [], measures: [], forms: [] };
const formFields = {};   // form key -> [{key, label, answer}] (null while loading)

function fieldsOf(b, forms) {
  const out = new Map();
  for (const form of forms) {
    if (!(form in formFields)) {
      formFields[form] = null;
      b.api("GET", `${b.base}/forms/${encodeURIComponent(form)}/field-words`).then(({ status: code, data }) => {
        formFields[form] = code === 200 ? data : [];
        b.render();
      });
    }
    for (const f of formFields[form] || []) {
      if (f.answer === "number" && !out.has(f.key)) out.set(f.key, b.pick(f.label) || f.key);
    }
  }
  return out;
}

// the key a measure gets from its type and question (nps, avg_overall), unique in the dataset
function measureKey(measures, at, type, field) {
  const base = !field || field === type ? type : `${type}_${field}`;
  const taken = new Set(measures.filter((_, i) => i !== at).map((m) => m.key));
  let key = base;
  for (let n = 2; taken.has(key); n += 1) key = `${base}_${n}`;
  return key;
}

function source(b) {
  return options.sources.find((s) => s.name === b.model.source) || { dimensions: [] };
}

function checks(b, list, chosen, attr, prop, onChange) {
  return list.map((item) => {
    const box = el("input", { type: "checkbox", [attr]: item[prop], checked: chosen.includes(item[prop]) });
    box.addEventListener("change", () => onChange(item[prop], box.checked));
    return el("label", { class: "b-check" }, box, item.title);
  });
}

function toggled(list, value, on, order) {
  const now = (list || []).filter((v) => v !== value);
  if (on) now.push(value);
  now.sort((x, y) => order.indexOf(x) - order.indexOf(y));
  return now;
}

function renderSource(b) {
  const select = b.$("b-ds-source");
  select.replaceChildren(...options.sources.map((s) => el("option", { value: s.name, text: s.title,
    selected: s.name === b.model.source })));
  const forms = b.model.forms || [];
  const order = options.forms.map((f) => f.key);
  // questionnaires to count: for a source whose rows belong to a form (answers, links sent)
  b.$("b-ds-forms-box").hidden = !source(b).dimensions.includes("form");
  b.$("b-ds-forms").replaceChildren(...checks(b, options.forms, forms, "data-ds-form", "key",
    (key, on) => b.commit(() => setOrDelete(b.model, "forms", toggled(b.model.forms, key, on, order)))));
  const available = new Set(source(b).dimensions);
  const dims = options.dimensions.filter((d) => available.has(d.name));
  const dimOrder = dims.map((d) => d.name);
  b.$("b-ds-dimensions").replaceChildren(...checks(b, dims, b.model.dimensions || [], "data-ds-dimension", "name",
    (name, on) => b.commit(() => setOrDelete(b.model, "dimensions", toggled(b.model.dimensions, name, on, dimOrder)))));
  const days = b.$("b-ds-last-days");
  if (document.activeElement !== days) days.value = b.model.last_days ?? "";
}

function renderMeasures(b) {
  const measures = b.model.measures || [];
  const types = options.measures.filter((m) => m.sources.includes(b.model.source));
  const fields = fieldsOf(b, b.model.forms || []);
  b.$("b-ds-measures").replaceChildren(...measures.map((m, i) => {
    const info = options.measures.find((t) => t.name === m.type) || {};
    const update = (change) => b.commit(() => {
      const now = b.model.measures[i];
      const auto = now.key === measureKey(b.model.measures, i, now.type, now.field);
      change(now);
      if (!(options.measures.find((t) => t.name === now.type) || {}).needs_field) delete now.field;
      if (auto) now.key = measureKey(b.model.measures, i, now.type, now.field);
    });
    const type = el("select", { "data-ds-measure": `${i}.type`, "aria-label": b.msg("builder.dataset.measure") },
      ...types.map((t) => el("option", { value: t.name, text: t.title, selected: t.name === m.type })));
    if (!types.some((t) => t.name === m.type)) type.prepend(el("option", { value: m.type || "", text: info.title || "", selected: true }));
    type.addEventListener("change", () => update((now) => { now.type = type.value; }));
    const parts = [type];
    if (info.needs_field) {
      const field = el("select", { "data-ds-measure": `${i}.field`, "aria-label": b.msg("builder.dataset.question") },
        el("option", { value: "", text: b.msg("builder.pick_field") }),
        ...[...fields].map(([key, label]) => el("option", { value: key, text: label, selected: key === m.field })));
      const loading = (b.model.forms || []).some((f) => formFields[f] === null);
      if (m.field && !fields.has(m.field)) {
        field.append(el("option", { value: m.field, selected: true,
          text: loading ? "…" : b.msg("builder.dataset.unknown_question") }));
      }
      field.addEventListener("change", () => update((now) => { now.field = field.value || undefined; }));
      parts.push(el("span", { text: b.msg("builder.dataset.of_question") }), field);
    }
    const key = el("input", { type: "text", value: m.key || "", "data-ds-measure": `${i}.key` });
    key.addEventListener("change", () => b.commit(() => { b.model.measures[i].key = key.value.trim(); }));
    const remove = el("button", { type: "button", class: "b-remove", text: "×", "aria-label": b.msg("builder.remove"),
      onclick: () => b.commit(() => b.model.measures.splice(i, 1)) });
    const errs = b.problemsAt(["measures", i]);
    return el("li", { "data-measure": i, class: errs.length ? "has-error" : "" },
      el("div", { class: "b-head" }, ...parts, remove), ...b.errorLines(errs),
      advanced(b, `measure:${i}`, b.msg("builder.dataset.measure_key"), el("label", { text: b.msg("builder.field_key") }, key)));
  }));
  const add = b.$("b-ds-add-type");
  add.replaceChildren(...types.map((t) => el("option", { value: t.name, text: t.title })));
  for (const [id, prefix] of [["b-ds-source", ["source"]], ["b-ds-dimensions", ["dimensions"]],
    ["b-ds-forms", ["forms"]], ["b-ds-last-days", ["last_days"]]]) {
    const box = b.$(id).closest("label, fieldset");
    box.querySelectorAll(".b-err").forEach((n) => n.remove());
    box.append(...b.errorLines(b.problemsAt(prefix)));
  }
  const top = b.problemsAt(["measures"]).filter((p) => (p.path_parts || []).length <= 1);
  const list = b.$("b-ds-measures").parentElement;
  list.querySelectorAll(":scope > .b-err").forEach((n) => n.remove());
  b.$("b-ds-measures").after(...b.errorLines(top));
}

async function previewRows(b) {
  await b.save();
  const { status: code, data } = await b.api("POST", `${b.base}/preview/dataset/${b.key}`, { body: b.model });
  const table = b.$("b-ds-preview");
  if (code !== 200 || !data.columns) {
    b.$("b-ds-note").textContent = code === 200 ? b.msg("builder.dataset.fix_first") : (data.detail || String(code));
    table.hidden = true;
    return;
  }
  b.$("b-ds-note").textContent = data.message;
  table.hidden = false;
  table.querySelector("thead").replaceChildren(el("tr", {}, ...data.columns.map((c) =>
    el("th", { "data-column": c.key, text: c.title }))));
  table.querySelector("tbody").replaceChildren(...data.rows.map((row) => el("tr", {},
    ...row.map((cell) => el("td", { text: cell })))));
}

register("dataset", {
  async start(b) {
    options = (await b.api("GET", `${b.base}/dataset-options`)).data;
    b.$("b-ds-source").addEventListener("change", (e) => b.commit(() => {
      b.model.source = e.target.value;
      const available = new Set(source(b).dimensions);
      setOrDelete(b.model, "dimensions", (b.model.dimensions || []).filter((d) => available.has(d)));
      if (!source(b).dimensions.includes("form")) delete b.model.forms;
    }));
    b.$("b-ds-last-days").addEventListener("change", (e) => b.commit(() => setOrDelete(b.model, "last_days",
      e.target.value === "" ? undefined : Number(e.target.value))));
    b.$("b-ds-add").addEventListener("click", () => b.commit(() => {
      const type = b.$("b-ds-add-type").value;
      b.model.measures = b.model.measures || [];
      b.model.measures.push({ key: measureKey(b.model.measures, -1, type), type });
    }));
    b.$("b-ds-preview-run").addEventListener("click", () => previewRows(b));
  },
  render(b) {
    renderSource(b);
    renderMeasures(b);
  },
});
