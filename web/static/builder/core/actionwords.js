// A rule action's options as a person reads them (pure: no DOM; unit-tested in
// web/frontend/test/actionwords.test.js): which input an option gets, decided from the JSON Schema
// the server serves for it (GET action-types, web/builder_words.py), and a due time as an
// amount and a unit ({hours: 4} ⇄ "4 小时").

import { pickLabel } from "./text.js";

export const DUE_UNITS = ["hours", "working_days"];

// {hours: 4} → {amount: 4, unit: "hours"}; nothing → {amount: null, unit: "hours"}
export function dueParts(due) {
  for (const unit of DUE_UNITS) {
    if (due && typeof due === "object" && typeof due[unit] === "number") return { amount: due[unit], unit };
  }
  return { amount: null, unit: "hours" };
}

// (4, "hours") → {hours: 4} (a calendar kept); an empty or negative amount → undefined
export function dueValue(amount, unit, before) {
  const n = Number(amount);
  if (amount === "" || amount === null || amount === undefined || !Number.isFinite(n) || n < 0
    || !DUE_UNITS.includes(unit)) return undefined;
  const out = { [unit]: unit === "working_days" ? Math.round(n) : n };
  if (before && typeof before === "object" && before.calendar) out.calendar = before.calendar;
  return out;
}

// The input an action option gets: "text-pair" ({zh-CN, en}), "due", "definition" (a select of
// the stored definitions of its kind), "enum", "boolean", "number", "group" (an object's
// properties), "code" (a key-like text: under "Advanced") or "json" (lists and maps: the
// action's JSON, under "Advanced").
export function actionInputKind(schema) {
  if (!schema || typeof schema !== "object") return "json";
  if (schema["x-def"] === "text") return "text-pair";
  if (schema["x-def"] === "due") return "due";
  if (schema["x-reference"]) return "definition";
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "object" && schema.properties) return "group";
  if (schema.type === "string") return "code";
  return "json";
}

// An action in words: its type's title, and what tells it apart (a task's title, a role).
export function actionSummary(type, action, locale) {
  const title = type ? pickLabel(type.title, locale) : String((action && action.do) || "");
  const options = (type && type.options) || {};
  if (action && action.title) return `${title}：${pickLabel(action.title, locale)}`;
  const role = options.role && action && action.role;
  const labels = role && options.role["x-enum-labels"];
  return labels && labels[role] ? `${title}：${pickLabel(labels[role], locale)}` : title;
}
