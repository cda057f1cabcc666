// An input generated from an option's JSON Schema (a field type's options, a score method's
// options): which input is decided by schemaform.optionInputKind; ``set(value)`` commits it.

import { el } from "../dom.js";
import { optionInputKind } from "../schemaform.js";
import { formatPairs, parseList, parsePairs } from "./text.js";

// A {zh-CN, en} text as two inputs in a fieldset.
export function textPair(b, obj, name, label, onSet) {
  const value = obj[name] || {};
  const zh = el("input", { type: "text", value: typeof value === "object" ? value["zh-CN"] || "" : value,
    "data-prop": `${name}.zh-CN` });
  const en = el("input", { type: "text", value: typeof value === "object" ? value.en || "" : "",
    "data-prop": `${name}.en` });
  const apply = () => onSet(zh.value || en.value ? { "zh-CN": zh.value, en: en.value || zh.value } : undefined);
  zh.addEventListener("change", apply); en.addEventListener("change", apply);
  return el("fieldset", {}, el("legend", { text: label }),
    el("label", { text: b.msg("builder.label_zh") }, zh), el("label", { text: b.msg("builder.label_en") }, en));
}

export function schemaInput(b, obj, name, schema, set) {
  const label = schema["x-label"] ? b.pick(schema["x-label"]) : name;  // the type's own words
  const kind = optionInputKind(schema);
  if (kind === "text-pair") return textPair(b, obj, name, label, set);
  if (kind === "enum") {
    const select = el("select", { "data-prop": name }, el("option", { value: "", text: "" }),
      ...schema.enum.map((v) => el("option", { value: v, selected: obj[name] === v,
        text: b.pick((schema["x-enum-labels"] || {})[v]) || v })));
    select.addEventListener("change", () => set(select.value || undefined));
    return el("label", { text: label }, select);
  }
  if (kind === "boolean") {
    const box = el("input", { type: "checkbox", "data-prop": name, checked: obj[name] === true });
    box.addEventListener("change", () => set(box.checked || undefined));
    return el("label", {}, box, label);
  }
  if (kind === "number") {
    const input = el("input", { type: "number", "data-prop": name, value: obj[name] ?? "",
      min: schema.minimum, max: schema.maximum, step: schema.type === "integer" ? 1 : "any" });
    input.addEventListener("change", () => set(input.value === "" ? undefined : Number(input.value)));
    return el("label", { text: label }, input);
  }
  if (kind === "pairs") {  // e.g. weights per field: "q1: 2, q2: 1"
    const input = el("input", { type: "text", "data-prop": name, value: formatPairs(obj[name]) });
    input.addEventListener("change", () => set(parsePairs(input.value)));
    return el("label", { text: label }, input);
  }
  if (kind === "list") {
    const input = el("input", { type: "text", "data-prop": name, value: (obj[name] || []).join(", ") });
    input.addEventListener("change", () => set(parseList(input.value)));
    return el("label", { text: label }, input);
  }
  const input = el("input", { type: "text", "data-prop": name, value: obj[name] ?? "" });
  input.addEventListener("change", () => set(input.value || undefined));
  return el("label", { text: label }, input);
}
