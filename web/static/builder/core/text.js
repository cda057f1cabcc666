// Pure helpers shared by every editor (no DOM, no window: unit-tested with node --test in
// web/frontend/test/): message formatting, picking a label in the page's language, a problem as
// one line, the decision grid's cell values, durations (conditions: sentence.js).

// The message ``key`` from the catalogue with {name} placeholders filled (the key itself when the
// catalogue lacks it, so a missing translation is visible rather than blank).
export function format(messages, key, params = {}) {
  return (messages[key] || key).replace(/\{(\w+)\}/g, (_, name) => String(params[name] ?? ""));
}

// A {zh-CN, en} label in ``locale`` (then zh-CN, then en); a plain string as it is.
export function pickLabel(label, locale) {
  return (label && typeof label === "object")
    ? (label[locale] || label["zh-CN"] || label.en || "") : (label || "");
}

// One problem as the problem list shows it: [file:]line:col code at path — message (hint).
export function problemLine(p, draftFile) {
  const file = p.file && p.file !== draftFile ? `${p.file}:` : "";
  const where = p.line ? `${p.line}:${p.column || 1} ` : "";
  return `${file}${where}${p.code} at ${p.path} — ${p.message}${p.hint ? ` (${p.hint})` : ""}`;
}

// One problem in words, as a person reads it: the message and its hint (the code and path
// stay in problemLine, the tooltip).
export function problemWords(p) {
  return `${p.message}${p.hint ? ` (${p.hint})` : ""}`;
}

// The problems located at or under ``prefix`` (path parts), of this draft's own file only.
export function problemsUnder(problems, prefix, draftFile) {
  return problems.filter((p) => {
    if (draftFile && p.file !== draftFile) return false;  // a sibling definition's problem
    const parts = p.path_parts || [];
    return prefix.every((part, i) => parts[i] === part);
  });
}

// A decision-table cell: empty → undefined, true/false, numbers, else the text.
export function cellValue(text) {
  const v = text.trim();
  if (v === "") return undefined;
  if (v === "true" || v === "false") return v === "true";
  if (!Number.isNaN(Number(v))) return Number(v);
  return v;
}

// A duration ("3d", "12h", "2w", "30m", "5") in days; 0 when it is not one.
export function days(duration) {
  const m = /^(\d+(?:\.\d+)?)\s*([dhwm]?)$/.exec(String(duration || "").trim());
  if (!m) return 0;
  const n = Number(m[1]);
  return { d: n, h: n / 24, w: n * 7, m: n / 1440, "": n }[m[2]];
}

export function isBlank(value) {
  return value === undefined || value === "" || value === null
    || (typeof value === "number" && Number.isNaN(value));
}

// obj[name] = value, or the property removed for an empty value.
export function setOrDelete(obj, name, value) {
  if (isBlank(value)) delete obj[name];
  else obj[name] = value;
}

// "q1: 2, q2: 1" ⇄ {q1: 2, q2: 1} (a score's weights per field)
export function parsePairs(text) {
  const pairs = text.split(",").map((p) => p.split(":").map((x) => x.trim()))
    .filter(([k, v]) => k && v !== undefined && v !== "");
  return pairs.length ? Object.fromEntries(pairs.map(([k, v]) => [k, Number(v)])) : undefined;
}
export function formatPairs(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k}: ${v}`).join(", ");
}

// "a, b ,, c" → ["a", "b", "c"]; blank → undefined
export function parseList(text) {
  return text.trim() ? text.split(",").map((s) => s.trim()).filter(Boolean) : undefined;
}

// The first "<prefix>_<n>" not in ``taken`` (n from 1).
export function freshKey(taken, prefix) {
  const keys = new Set(taken);
  let n = 1;
  while (keys.has(`${prefix}_${n}`)) n += 1;
  return `${prefix}_${n}`;
}

// Every field key of a form, nested groups as "group.child", with its field.
export function fieldKeys(fields, prefix = "") {
  const out = [];
  for (const f of fields || []) {
    if (!f || typeof f.key !== "string") continue;
    out.push([prefix + f.key, f]);
    if (Array.isArray(f.fields)) out.push(...fieldKeys(f.fields, `${prefix}${f.key}.`));
  }
  return out;
}
