// A rule action's property panel, generated from its type's option schemas (GET action-types:
// options and required, web/builder_words.py): a {zh-CN, en} text as two inputs, a due time as
// an amount and a unit (4 小时), a role or a department picked by its name, an enum by its words,
// a reference by the definition's title. Nothing here names an action type, so a plugin's action
// gets its panel the same way. Codes (tags, statuses, task kinds) and the action as JSON (lists
// such as escalation) are under the closed "高级 / Advanced".
//
// Inputs carry ``data-act="<rule>.<action>.<path>"`` ("3.0.assignee.role", "3.0.due.unit").

import { el } from "../dom.js";
import { advanced } from "./advanced.js";
import { getAt } from "../steppanel.js";
import { DUE_UNITS, actionInputKind, dueParts, dueValue } from "./actionwords.js";

function label(b, name) {
  for (const key of [`builder.action_prop.${name}`, `builder.prop.${name}`]) {
    const text = b.msg(key);
    if (text !== key) return text;
  }
  return name;
}

// ``opts``: {at: "<rule>.<action>", type, action, lists: {kind: [{key, title}]}, set(path, value),
// replace(options), problems(path) → [nodes]}
export function actionPanel(b, opts) {
  const { type, action } = opts;
  const hidden = [];
  const parts = [];
  const required = new Set((type && type.required) || []);
  for (const [name, schema] of Object.entries((type && type.options) || {})) {
    const input = option(b, opts, [name], schema, required.has(name), hidden);
    if (input) parts.push(input);
  }
  const rest = Object.fromEntries(Object.entries(action).filter(([k]) => k !== "do"));
  const json = el("textarea", { rows: 6, spellcheck: "false", "data-act": `${opts.at}.json` });
  json.value = JSON.stringify(rest, null, 2);
  json.addEventListener("change", () => {
    let parsed;
    try { parsed = JSON.parse(json.value); } catch (e) { b.status(String(e)); return; }
    if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) { b.status(b.msg("builder.json_object")); return; }
    opts.replace(parsed);
  });
  hidden.push(el("label", { text: b.msg("builder.action_json") }, json));
  return el("fieldset", { class: "b-action-panel", "data-act": opts.at }, ...parts,
    advanced(b, `action:${opts.at}`, b.msg("builder.action_advanced"), ...hidden));
}

function option(b, opts, path, schema, required, hidden) {
  const name = path[path.length - 1];
  const at = `${opts.at}.${path.join(".")}`;
  const value = getAt(opts.action, path);
  const set = (v) => opts.set(path, v);
  const text = label(b, name) + (required ? " *" : "");
  const wrap = (...inputs) => el("label", { "data-act-for": at }, el("span", { text }), ...inputs, ...opts.problems(path));
  const kind = actionInputKind(schema);
  if (kind === "text-pair") {
    const obj = value && typeof value === "object" ? value : { "zh-CN": value || "" };
    const zh = el("input", { type: "text", "data-act": `${at}.zh-CN`, value: obj["zh-CN"] || "" });
    const en = el("input", { type: "text", "data-act": `${at}.en`, value: obj.en || "" });
    const apply = () => set(zh.value.trim() || en.value.trim()
      ? { "zh-CN": zh.value.trim() || en.value.trim(), en: en.value.trim() || zh.value.trim() } : undefined);
    zh.addEventListener("change", apply); en.addEventListener("change", apply);
    return el("fieldset", { "data-act-for": at }, el("legend", { text }),
      el("label", { text: b.msg("builder.label_zh") }, zh), el("label", { text: b.msg("builder.label_en") }, en),
      ...opts.problems(path));
  }
  if (kind === "due") {
    const { amount, unit } = dueParts(value);
    const number = el("input", { type: "number", min: 0, step: "any", "data-act": at, value: amount ?? "",
      "aria-label": b.msg("builder.duration_amount") });
    const units = el("select", { "data-act": `${at}.unit`, "aria-label": b.msg("builder.duration_unit") },
      ...DUE_UNITS.map((u) => el("option", { value: u, text: b.msg(`builder.due_unit.${u}`), selected: u === unit })));
    const apply = () => set(dueValue(number.value, units.value, value));
    number.addEventListener("change", apply);
    units.addEventListener("change", () => { if (number.value !== "") apply(); });
    return wrap(number, units);
  }
  if (kind === "definition") {
    const rows = opts.lists[schema["x-reference"]] || [];
    const select = el("select", { "data-act": at }, el("option", { value: "", text: "" }),
      ...rows.map((r) => el("option", { value: r.key, selected: value === r.key, text: b.pick(r.title) || r.key })));
    select.addEventListener("change", () => set(select.value || undefined));
    return wrap(select);
  }
  if (kind === "enum") {
    const labels = schema["x-enum-labels"] || {};
    const select = el("select", { "data-act": at }, el("option", { value: "", text: "" }),
      ...schema.enum.map((v) => el("option", { value: String(v), selected: value === v,
        text: labels[v] ? b.pick(labels[v]) : String(v) })));
    select.addEventListener("change", () => set(select.value || undefined));
    return wrap(select);
  }
  if (kind === "boolean") {
    const box = el("input", { type: "checkbox", "data-act": at, checked: value === true });
    box.addEventListener("change", () => set(box.checked || undefined));
    return el("label", { class: "b-check", "data-act-for": at }, box, text, ...opts.problems(path));
  }
  if (kind === "number") {
    const input = el("input", { type: "number", "data-act": at, value: value ?? "", min: schema.minimum, max: schema.maximum,
      step: schema.type === "integer" ? 1 : "any" });
    input.addEventListener("change", () => set(input.value === "" ? undefined : Number(input.value)));
    return wrap(input);
  }
  if (kind === "group") {
    const inner = Object.entries(schema.properties)
      .map(([sub, s]) => option(b, opts, [...path, sub], s || {}, false, hidden)).filter(Boolean);
    return el("fieldset", { "data-act-for": at }, el("legend", { text }), ...inner, ...opts.problems(path));
  }
  if (kind === "code") {
    const input = el("input", { type: "text", "data-act": at, value: value ?? "" });
    input.addEventListener("change", () => set(input.value.trim() || undefined));
    hidden.push(wrap(input));
  }
  return null;   // "json": the action's JSON under "Advanced"
}
