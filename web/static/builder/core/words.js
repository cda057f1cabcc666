// A flow's steps in words (pure: no DOM; unit-tested in web/frontend/test/words.test.js): what a
// step is called ("发送问卷：出院第3天关怀问卷"), a duration ("2 个工作日", never "2d"), when a wait
// moves the day on. Nothing here names a step type: a step's detail is read from its type's
// option schemas (a {zh-CN, en} text such as the task title, else the title of the definition
// an option refers to, "x-reference").

import { pickLabel } from "./text.js";

const UNITS = ["m", "h", "d", "w"];

// "3d" → {amount: 3, unit: "d"}; anything else → {amount: null, unit: "d"}
export function durationParts(value) {
  const m = /^([0-9]+)(m|h|d|w)$/.exec(String(value ?? "").trim());
  return m ? { amount: Number(m[1]), unit: m[2] } : { amount: null, unit: "d" };
}

// {amount, unit} → "3d"; an empty or negative amount → undefined (the option is removed)
export function durationValue(amount, unit) {
  const n = Number(amount);
  if (amount === "" || amount === null || !Number.isInteger(n) || n < 0 || !UNITS.includes(unit)) return undefined;
  return `${n}${unit}`;
}

export const durationUnits = () => [...UNITS];

// "3d" → "3 天" (messages: builder.unit.<u>); not a duration → ""
export function durationWords(value, msg) {
  const { amount, unit } = durationParts(value);
  return amount === null ? "" : `${amount} ${msg(`builder.unit.${unit}`)}`;
}

// {days: 2, working_days: true, at: "09:30"} → "2 个工作日 09:30"
export function untilWords(until, msg) {
  if (!until || typeof until !== "object") return "";
  const parts = [];
  if (until.days !== undefined) parts.push(`${until.days} ${msg(until.working_days ? "builder.unit.wd" : "builder.unit.d")}`);
  if (until.hours) parts.push(`${until.hours} ${msg("builder.unit.h")}`);
  if (until.at) parts.push(String(until.at));
  return parts.join(" ");
}

// how long a step waits, in words (its type's ``delay``: duration, until or event)
export function delayWords(type, st, msg) {
  const d = type && type.delay;
  if (!d || !st) return "";
  if (d.duration && st[d.duration]) return `⏱ ${durationWords(st[d.duration], msg)}`;
  if (d.until && st[d.until] && typeof st[d.until] === "object") return `⏱ ${untilWords(st[d.until], msg)}`;
  if (d.event && st[d.event]) return `◷ ${msg("builder.prop.event")}`;
  return "";
}

// the words that tell this step from others of its type: a {zh-CN, en} option other than the
// title (a task's title), else the title of the definition an option names
export function stepDetail(type, st, locale, lists) {
  const options = (type && type.options) || {};
  for (const [name, schema] of Object.entries(options)) {
    if (name !== "title" && schema && schema["x-def"] === "text" && st[name]) return pickLabel(st[name], locale);
  }
  for (const [name, schema] of Object.entries(options)) {
    const kind = schema && schema["x-reference"];
    if (kind && typeof st[name] === "string") {
      const row = ((lists || {})[kind] || []).find((r) => r.key === st[name]);
      if (row) return pickLabel(row.title, locale);
    }
  }
  return "";
}

// what a step is called: its own title, else its type's title and its detail
export function stepLabel(types, st, locale, lists) {
  if (!st || typeof st !== "object") return "";
  if (st.title) return pickLabel(st.title, locale);
  const type = (types || []).find((t) => t.name === st.type);
  const title = type ? pickLabel(type.title, locale) : "";
  const detail = stepDetail(type, st, locale, lists);
  return detail ? `${title}：${detail}` : title;
}

// a label for each enum value (x-enum-labels), else the value itself
export function enumLabel(schema, value, locale) {
  const labels = (schema && schema["x-enum-labels"]) || {};
  return labels[value] ? pickLabel(labels[value], locale) : String(value);
}

// an option a person never reads as such: an expression, a key-like code, a name → expression map
export function isAdvancedOption(schema, inputKind) {
  if (inputKind === "map") return true;
  if (inputKind !== "text" || !schema) return false;
  if (schema["x-def"] === "expression" || schema["x-def"] === "key") return true;
  return typeof schema.pattern === "string" && /^\^\[a-z/.test(schema.pattern);
}

// a decision-table cell as a person reads it: ">= 70" → "≥ 70" (and back)
const SIGNS = [[">=", "≥"], ["<=", "≤"], ["!=", "≠"]];
export function cellWords(value) {
  if (value === undefined || value === null) return "";
  let text = String(value);
  for (const [code, sign] of SIGNS) text = text.split(code).join(sign);
  return text;
}
export function cellCode(text) {
  let out = String(text ?? "");
  for (const [code, sign] of SIGNS) out = out.split(sign).join(code);
  return out;
}

// a column's header: its title, else its key
export const columnTitle = (column, locale) => pickLabel(column.title, locale) || column.key;

// the values a column offers by their words (its ``labels``, then booleans as yes/no); null
// when the column is typed freely
export function cellChoices(column, rows, part, msg, locale) {
  const labels = column.labels || {};
  const choices = Object.entries(labels).map(([value, words]) => ({ value, text: pickLabel(words, locale) }));
  if (choices.length) return choices;
  const seen = rows.map((r) => (r[part] || {})[column.key]).filter((v) => v !== undefined);
  if (seen.length && seen.every((v) => typeof v === "boolean")) {
    return [{ value: true, text: msg("builder.yes") }, { value: false, text: msg("builder.no") }];
  }
  return null;
}
