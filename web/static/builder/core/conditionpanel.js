// A condition edited as a sentence (form show-when / required-when, a rule's "when"): the
// sentence in words (core/sentence.js), clause rows built from pickers that know each field's
// kind of answer (choices offer the field's choices, numbers a value or a range, dates the last
// N days, text "mentions …" and the classification dictionary's categories), and the
// expression itself only in the closed "Advanced" disclosure.
//
// Inputs carry ``[attr]="<prefix>.field"`` (clause 0) or ``"<prefix>.<n>.field"`` (clause n),
// likewise ``.op``, ``.value``, ``.value2``; ``<prefix>.set`` applies, ``<prefix>.add`` adds a
// clause, ``<prefix>.join``, ``<prefix>.expression`` (advanced). What the author picked but has
// not applied survives re-renders (kept per ``id`` until the condition changes elsewhere).

import { el } from "../dom.js";
import { advanced } from "./advanced.js";
import { OPS_BY_ANSWER, describeCondition, parseCondition, writeCondition } from "./sentence.js";

const CATEGORY = "\u0000category";  // the "comment mentions a category" pseudo-field
const drafts = new Map();            // id -> {text, join, clauses}

function startDraft(id, text) {
  const kept = drafts.get(id);
  if (kept && kept.text === text) return kept;
  const parsed = parseCondition(text);
  const clauses = parsed && parsed.clauses.length
    ? parsed.clauses.map((c) => ({ ...c, field: c.op === "category" ? CATEGORY : c.field }))
    : [{ field: "", op: "", value: "" }];
  const draft = { text, join: parsed ? parsed.join : "and", clauses };
  drafts.set(id, draft);
  return draft;
}

function answerOf(ctx, field) {
  if (field === CATEGORY) return "category";
  return (ctx.fields[field] || {}).answer || "";
}

function opsFor(ctx, field) {
  const answer = answerOf(ctx, field);
  return answer === "category" ? ["category"] : OPS_BY_ANSWER[answer] || [];
}

// The value picker for one clause, by the field's kind of answer and the operator.
function valueInputs(b, ctx, clause, name, onValue) {
  const f = ctx.fields[clause.field] || {};
  if (clause.op === "category") {
    const select = el("select", { [name.attr]: `${name.at}.value` },
      el("option", { value: "", text: b.msg("builder.pick_category") }),
      ...Object.entries(ctx.categories || {}).map(([code, label]) =>
        el("option", { value: code, text: label, selected: clause.value === code })));
    select.addEventListener("change", () => onValue(select.value));
    return [select];
  }
  if (f.choices && clause.op === "in") {
    const chosen = new Set((Array.isArray(clause.value) ? clause.value : []).map(String));
    return Object.entries(f.choices).map(([code, label]) => {
      const box = el("input", { type: "checkbox", [name.attr]: `${name.at}.value.${code}`, checked: chosen.has(code) });
      box.addEventListener("change", () => {
        if (box.checked) chosen.add(code); else chosen.delete(code);
        onValue([...chosen]);
      });
      return el("label", { class: "b-check" }, box, label);
    });
  }
  if (f.choices) {
    const select = el("select", { [name.attr]: `${name.at}.value` },
      el("option", { value: "", text: "" }),
      ...Object.entries(f.choices).map(([code, label]) =>
        el("option", { value: code, text: label, selected: String(clause.value) === code })));
    select.addEventListener("change", () => onValue(select.value));
    return [select];
  }
  const numeric = f.answer === "number" || clause.op === "within_days";
  const read = (input) => (numeric ? (input.value === "" ? "" : Number(input.value)) : input.value);
  if (clause.op === "between") {
    const [lo, hi] = Array.isArray(clause.value) ? clause.value : ["", ""];
    const a = el("input", { type: "number", step: "any", size: 5, value: lo ?? "", [name.attr]: `${name.at}.value` });
    const z = el("input", { type: "number", step: "any", size: 5, value: hi ?? "", [name.attr]: `${name.at}.value2` });
    const both = () => onValue([read(a), read(z)]);
    a.addEventListener("change", both); z.addEventListener("change", both);
    return [a, el("span", { text: ` ${b.msg("builder.value_and")} ` }), z];
  }
  const input = el("input", { type: numeric ? "number" : "text", step: numeric ? "any" : undefined, size: 10,
    value: Array.isArray(clause.value) ? "" : clause.value ?? "", [name.attr]: `${name.at}.value` });
  input.addEventListener("change", () => onValue(read(input)));
  input.addEventListener("input", () => { clause.value = read(input); });
  const out = [input];
  if (clause.op === "within_days") out.push(el("span", { text: b.msg("builder.days") }));
  return out;
}

function clauseRow(b, ctx, draft, n, opts, rerender) {
  const clause = draft.clauses[n];
  const name = { attr: opts.attr, at: n === 0 ? opts.prefix : `${opts.prefix}.${n}` };
  const fields = Object.entries(ctx.fields);
  const field = el("select", { [opts.attr]: `${name.at}.field` },
    el("option", { value: "", text: b.msg("builder.pick_field") }),
    ...fields.map(([key, f]) => el("option", { value: key, text: f.label, selected: clause.field === key })),
    ...(Object.keys(ctx.categories || {}).length ? [el("option", { value: CATEGORY,
      text: `${ctx.classified || b.msg("builder.sentence_comment")} · ${b.msg("builder.op.category")}`,
      selected: clause.field === CATEGORY })] : []));
  field.addEventListener("change", () => {
    clause.field = field.value;
    clause.op = opsFor(ctx, field.value)[0] || "";
    clause.value = "";
    rerender();
  });
  const ops = opsFor(ctx, clause.field);
  if (!ops.includes(clause.op)) clause.op = ops[0] || "";
  const op = el("select", { [opts.attr]: `${name.at}.op` },
    ...ops.map((o) => el("option", { value: o, text: b.msg(`builder.op.${o}`), selected: clause.op === o })));
  op.addEventListener("change", () => { clause.op = op.value; clause.value = ""; rerender(); });
  const remove = draft.clauses.length > 1 ? el("button", { type: "button", text: "×",
    "aria-label": b.msg("builder.remove_clause"), [opts.attr]: `${name.at}.remove`,
    onclick: () => { draft.clauses.splice(n, 1); rerender(); } }) : null;
  return el("div", { class: "b-clause" }, field, op,
    ...(clause.field ? valueInputs(b, ctx, clause, name, (v) => { clause.value = v; }) : []), remove);
}

function complete(clause) {
  if (!clause.field || !clause.op) return false;
  if (Array.isArray(clause.value)) return clause.value.length > 0 && clause.value.every((v) => v !== "");
  return clause.value !== "" && clause.value !== undefined;
}

// The expression the draft's complete clauses write ("" when none is complete).
function written(draft) {
  const clauses = draft.clauses.filter(complete).map((c) => (c.field === CATEGORY
    ? { op: "category", polarity: "negative", value: c.value } : c));
  return clauses.length ? writeCondition({ join: draft.join, clauses }) : "";
}

// ``opts``: {id, attr, prefix, title, text, ctx, onSet(text | undefined), errors: [nodes]}.
export function conditionPanel(b, opts) {
  const { ctx, text } = opts;
  const draft = startDraft(opts.id, text || "");
  const box = el("fieldset", { class: "b-condition", "data-editor": opts.prefix });
  const rerender = () => box.replaceWith(conditionPanel(b, opts));
  const sentence = el("p", { class: "b-sentence", [opts.attr]: `${opts.prefix}.sentence`,
    text: text ? describeCondition(text, ctx) : b.msg("builder.no_condition") });
  const rows = draft.clauses.map((_, n) => clauseRow(b, ctx, draft, n, opts, rerender));
  const join = draft.clauses.length > 1 ? el("select", { [opts.attr]: `${opts.prefix}.join` },
    el("option", { value: "and", text: b.msg("builder.join_and"), selected: draft.join === "and" }),
    el("option", { value: "or", text: b.msg("builder.join_or"), selected: draft.join === "or" })) : null;
  if (join) join.addEventListener("change", () => { draft.join = join.value; });
  const add = el("button", { type: "button", [opts.attr]: `${opts.prefix}.add`, text: b.msg("builder.add_clause"),
    onclick: () => { draft.clauses.push({ field: "", op: "", value: "" }); rerender(); } });
  const set = el("button", { type: "button", [opts.attr]: `${opts.prefix}.set`, text: b.msg("builder.apply_condition"),
    onclick: () => {
      const expression = written(draft);
      if (!expression) return;
      drafts.set(opts.id, { ...draft, text: expression });
      opts.onSet(expression);
    } });
  const clear = text ? el("button", { type: "button", [opts.attr]: `${opts.prefix}.clear`,
    text: b.msg("builder.clear_condition"), onclick: () => { drafts.delete(opts.id); opts.onSet(undefined); } }) : null;
  const expr = b.completing(el("input", { type: "text", class: "b-expression", [opts.attr]: `${opts.prefix}.expression`,
    value: text || "" }));
  expr.addEventListener("change", () => { drafts.delete(opts.id); opts.onSet(expr.value.trim() || undefined); });
  box.append(el("legend", { text: opts.title }), sentence, ...rows, el("div", { class: "b-tools" }, join, add, set, clear),
    ...(opts.errors || []), advanced(b, `${opts.id}:expression`, "", el("label", { text: b.msg("builder.expression") }, expr)));
  return box;
}
