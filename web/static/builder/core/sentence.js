// Conditions as sentences (pure: no DOM, unit-tested with node --test in web/frontend/test/).
// A condition the pickers can build is a list of clauses joined by one word ("and" / "or"):
//
//   "answers.overall <= 2 and contains(answers.comment, '用药')"
//     ⇄ {join: "and", clauses: [{field: "overall", op: "<=", value: 2},
//                                {field: "comment", op: "mentions", value: "用药"}]}
//     → "当 总体满意度 ≤ 2 且 评论 提到 “用药”"   (render, with the fields' labels)
//
// Clause forms (what each field's kind of answer offers, see OPS_BY_ANSWER):
//   answers.F <op> literal            op: == != < <= > >=
//   answers.F in [a, b]               "is one of"
//   'code' in answers.F               a multiple-choice answer includes a choice ("has")
//   contains(answers.F, 'word')       a text mentions a word ("mentions")
//   0 <= days_between(answers.F, today()) <= N   a date within the last N days ("within_days";
//                                            read without the "0 <=" too, as older drafts wrote it)
//   'cat' in classification.negative  the classified comment mentions a category ("category")
// Anything else is not a sentence: parseCondition answers null and the page says "a custom
// condition (see Advanced)", never the expression.

// The operators a field offers, by the kind of its answer (the server's field-type panel
// `answer`, derived from the type's FHIR item type — no field type is named here).
export const OPS_BY_ANSWER = {
  number: ["<=", ">=", "==", "!=", "<", ">", "between"],
  choice: ["==", "!=", "in"],
  choices: ["has"],
  boolean: ["==", "!="],
  text: ["mentions"],
  date: ["within_days"],
};

const SYMBOL = { "==": "=", "!=": "≠", "<": "<", "<=": "≤", ">": ">", ">=": "≥" };

// --- parsing -----------------------------------------------------------------------------

// Split on a top-level word (" and " / " or ") outside quotes and brackets.
function splitTop(text, word) {
  const parts = [];
  let depth = 0, quote = "", start = 0;
  for (let i = 0; i < text.length; i += 1) {
    const c = text[i];
    if (quote) {
      if (c === "\\") i += 1;
      else if (c === quote) quote = "";
    } else if (c === "'" || c === '"') quote = c;
    else if (c === "(" || c === "[") depth += 1;
    else if (c === ")" || c === "]") depth -= 1;
    else if (depth === 0 && text.startsWith(word, i)) {
      parts.push(text.slice(start, i));
      start = i + word.length;
      i = start - 1;
    }
  }
  parts.push(text.slice(start));
  return parts.map((p) => p.trim());
}

const STRING = String.raw`'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"`;
const LITERAL = String.raw`(?:${STRING}|-?\d+(?:\.\d+)?|true|false)`;
const FIELD = String.raw`answers\.([A-Za-z_][\w.]*)`;

function unquote(text) {
  return text.slice(1, -1).replace(/\\(.)/g, "$1");
}

// A literal's value: quoted text, a number, true / false.
export function literalValue(text) {
  const t = text.trim();
  if (t.startsWith("'") || t.startsWith('"')) return unquote(t);
  if (t === "true" || t === "false") return t === "true";
  return Number(t);
}

const FORMS = [
  [new RegExp(String.raw`^${FIELD}\s*(==|!=|<=|>=|<|>)\s*(${LITERAL})$`),
    (m) => ({ field: m[1], op: m[2], value: literalValue(m[3]) })],
  [new RegExp(String.raw`^${FIELD}\s+in\s+\[((?:\s*${LITERAL}\s*,?)*)\]$`),
    (m) => ({ field: m[1], op: "in", value: (m[2].match(new RegExp(LITERAL, "g")) || []).map(literalValue) })],
  [new RegExp(String.raw`^(${STRING})\s+in\s+${FIELD}$`),
    (m) => ({ field: m[2], op: "has", value: unquote(m[1]) })],
  [new RegExp(String.raw`^contains\(\s*${FIELD}\s*,\s*(${STRING})\s*\)$`),
    (m) => ({ field: m[1], op: "mentions", value: unquote(m[2]) })],
  [new RegExp(String.raw`^(?:0\s*<=\s*)?days_between\(\s*${FIELD}\s*,\s*today\(\)\s*\)\s*<=\s*(\d+)$`),
    (m) => ({ field: m[1], op: "within_days", value: Number(m[2]) })],
  [new RegExp(String.raw`^(${STRING})\s+in\s+classification\.(negative|positive)$`),
    (m) => ({ op: "category", polarity: m[2], value: unquote(m[1]) })],
];

function parseClause(text) {
  for (const [pattern, make] of FORMS) {
    const m = pattern.exec(text);
    if (m) return make(m);
  }
  return null;
}

// The clauses of a condition, or null when it is not one the pickers can show as a sentence.
export function parseCondition(text) {
  const t = String(text || "").trim();
  if (!t) return { join: "and", clauses: [] };
  const ands = splitTop(t, " and "), ors = splitTop(t, " or ");
  if (ands.length > 1 && ors.length > 1) return null;  // mixed: precedence is not a sentence
  const join = ors.length > 1 ? "or" : "and";
  const clauses = (join === "or" ? ors : ands).map(parseClause);
  return clauses.every(Boolean) ? { join, clauses } : null;
}

// --- writing -----------------------------------------------------------------------------

// A value as an expression literal: numbers and booleans as they are, text quoted.
export function toLiteral(value) {
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return `'${String(value).replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

function writeClause(c) {
  const f = `answers.${c.field}`;
  if (c.op === "in") return `${f} in [${(c.value || []).map(toLiteral).join(", ")}]`;
  if (c.op === "has") return `${toLiteral(c.value)} in ${f}`;
  if (c.op === "mentions") return `contains(${f}, ${toLiteral(c.value)})`;
  // not a future date: "within the last N days" is 0 to N days ago
  if (c.op === "within_days") return `0 <= days_between(${f}, today()) <= ${Number(c.value)}`;
  if (c.op === "category") return `${toLiteral(c.value)} in classification.${c.polarity || "negative"}`;
  if (c.op === "between") return `${f} >= ${toLiteral(c.value[0])} and ${f} <= ${toLiteral(c.value[1])}`;
  return `${f} ${c.op} ${toLiteral(c.value)}`;
}

// The expression for clauses joined by ``join``.
export function writeCondition({ join = "and", clauses }) {
  return clauses.map(writeClause).join(` ${join} `);
}

// --- rendering ---------------------------------------------------------------------------

// ``ctx``: {say(key, params) → words in the page's language, fields: {key → {label, choices:
// {code → label}}}, categories: {code → label}, classified: label of the classified field}.
function fieldWords(ctx, key) {
  const f = ctx.fields[key];
  return f ? f.label : ctx.say("builder.sentence_unknown_field");
}

function valueWords(ctx, field, value) {
  const f = ctx.fields[field] || {};
  if (f.choices && Object.hasOwn(f.choices, String(value))) {
    return ctx.say("builder.sentence_choice", { label: f.choices[String(value)] });
  }
  return typeof value === "number" ? String(value) : `“${value}”`;
}

function renderClause(ctx, c) {
  const who = c.op === "category" ? (ctx.classified || ctx.say("builder.sentence_comment")) : fieldWords(ctx, c.field);
  const value = (v) => valueWords(ctx, c.field, v);
  if (c.op === "in") {
    return `${who} ${ctx.say("builder.sentence_one_of")} ${c.value.map(value).join(ctx.say("builder.sentence_list_sep"))}`;
  }
  if (c.op === "has") return `${who} ${ctx.say("builder.sentence_has")} ${value(c.value)}`;
  if (c.op === "mentions") return `${who} ${ctx.say("builder.sentence_mentions")} “${c.value}”`;
  if (c.op === "category") {
    const label = (ctx.categories || {})[c.value] || `“${c.value}”`;
    return `${who} ${ctx.say("builder.sentence_mentions")} ${label}`;
  }
  if (c.op === "within_days") return `${who} ${ctx.say("builder.sentence_within_days", { n: c.value })}`;
  if (c.op === "between") return `${who} ${ctx.say("builder.sentence_between", { a: c.value[0], b: c.value[1] })}`;
  const f = ctx.fields[c.field] || {};
  if (f.choices && (c.op === "==" || c.op === "!=")) {
    return `${who} ${ctx.say(c.op === "==" ? "builder.sentence_is" : "builder.sentence_is_not")} ${value(c.value)}`;
  }
  return `${who} ${SYMBOL[c.op]} ${value(c.value)}`;
}

// The sentence for a parsed condition ("当 总体满意度 ≤ 2 且 评论 提到 “用药”"); "" for none.
export function renderCondition(parsed, ctx) {
  if (!parsed || !parsed.clauses.length) return "";
  const glue = ` ${ctx.say(parsed.join === "or" ? "builder.sentence_or" : "builder.sentence_and")} `;
  return `${ctx.say("builder.sentence_when")} ${parsed.clauses.map((c) => renderClause(ctx, c)).join(glue)}`;
}

// The sentence for an expression text, or the "custom condition" words when it is not one.
export function describeCondition(text, ctx) {
  const parsed = parseCondition(text);
  return parsed ? renderCondition(parsed, ctx) : ctx.say("builder.sentence_custom");
}

// The fields of a form as the sentence context needs them, from its definition body and the
// field-type palette ({name → {answer}}): key → {label, answer, choices: {code → label}}.
export function fieldContext(fields, types, pick, say, prefix = "") {
  const out = {};
  const yesNo = () => ({ yes: say("builder.sentence_yes"), no: say("builder.sentence_no") });
  for (const f of fields || []) {
    if (!f || typeof f.key !== "string") continue;
    const answer = (types[f.type] || {}).answer || null;
    let choices = Array.isArray(f.choices)
      ? Object.fromEntries(f.choices.map((c) => [String(c.code), pick(c.label) || String(c.code)])) : null;
    if (!choices && answer === "boolean") choices = yesNo();
    if (answer) out[prefix + f.key] = { label: pick(f.label) || pick((types[f.type] || {}).title), answer, choices };
    if (Array.isArray(f.fields)) Object.assign(out, fieldContext(f.fields, types, pick, say, `${prefix}${f.key}.`));
  }
  return out;
}
