// The rule editor: each rule by its title, its condition as a sentence (built from pickers that
// know the fields of the forms the rule set listens to, and the categories of its classification
// dictionary; the expression only under "Advanced"), its actions by their titles; "try it" runs
// the draft against a sample event.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { conditionPanel } from "../core/conditionpanel.js";
import { advanced } from "../core/advanced.js";
import { setOrDelete } from "../core/text.js";

let ruleFields = [];              // field keys of the rule set's forms (completion)
const words = { fields: {}, categories: {}, classified: "", actions: {} };

function context(b) {
  return { say: b.msg, fields: words.fields, categories: words.categories, classified: words.classified };
}

function actionWords(b, action) {
  const t = words.actions[action.do];
  return t ? b.pick(t) : action.do;
}

function renderRules(b) {
  const body = b.$("b-rules").querySelector("tbody");
  body.replaceChildren(...(b.model.rules || []).map((r, i) => {
    const errs = b.problemsAt(["rules", i]);
    const key = el("input", { type: "text", value: r.key || "", "data-rule": `${i}.key`, size: 20 });
    key.addEventListener("change", () => b.commit(() => { b.model.rules[i].key = key.value.trim(); }));
    const when = conditionPanel(b, { id: `rule:${r.key}`, attr: "data-rule", prefix: String(i),
      title: b.msg("builder.condition_sentence"), text: r.when || "", ctx: context(b),
      errors: b.errorLines(errs),
      onSet: (text) => b.commit(() => setOrDelete(b.model.rules[i], "when", text)) });
    return el("tr", { "data-rule": r.key, class: errs.length ? "has-error" : "" },
      el("td", {}, el("strong", { class: "b-rule-title", text: b.pick(r.title) || r.key }),
        advanced(b, `rule:${i}:key`, b.msg("builder.advanced_rule"),
          el("label", { text: b.msg("builder.word.key") }, key))),
      el("td", {}, when),
      el("td", {}, el("ul", { class: "b-actions" }, ...(r.then || []).map((a) =>
        el("li", { "data-action": a.do, text: actionWords(b, a) })))));
  }));
}

async function tryRules(b) {
  let event;
  try { event = JSON.parse(b.$("b-sample").value); } catch (e) { b.$("b-try-result").textContent = String(e); return; }
  const { status: code, data } = await b.api("POST", `${b.base}/rules/${b.key}/try`, { body: b.model, event });
  const out = b.$("b-try-result");
  if (code !== 200) { out.textContent = data.detail || String(code); return; }
  const matched = new Set((data.matched || []).map((m) => m.rule || m.key));
  out.replaceChildren(el("ul", { id: "b-try-list" }, ...(b.model.rules || []).map((r) => el("li", {
    class: matched.has(r.key) ? "b-try-hit" : "b-try-miss", "data-rule": r.key,
    text: `${b.pick(r.title) || r.key}: ${matched.has(r.key) ? b.msg("builder.matched") : b.msg("builder.not_matched")}`,
  }))), advanced(b, "try:actions", b.msg("builder.advanced"),
    el("pre", { id: "b-try-actions", text: JSON.stringify(data.actions || [], null, 2) })));
}

async function loadWords(b) {
  const { data: actions } = await b.api("GET", `${b.base}/action-types`);
  for (const a of actions || []) words.actions[a.name] = a.title;
  const seen = new Set();
  for (const form of b.model.forms || []) {
    const { status: code, data } = await b.api("GET", `${b.base}/forms/${encodeURIComponent(form)}/field-words`);
    if (code !== 200) continue;
    for (const f of data) {
      seen.add(f.key);
      if (words.fields[f.key]) continue;   // the same question in several forms: first label
      words.fields[f.key] = { label: b.pick(f.label) || b.pick(f.type_title), answer: f.answer,
        choices: f.choices.length ? Object.fromEntries(f.choices.map((c) => [c.code, b.pick(c.label) || c.code]))
          : f.answer === "boolean" ? { yes: b.msg("builder.sentence_yes"), no: b.msg("builder.sentence_no") } : null };
    }
  }
  ruleFields = [...seen].sort();
  const classify = b.model.classify || {};
  if (classify.dictionary) {
    const { status: code, data } = await b.api("GET",
      `${b.base}/dictionaries/${encodeURIComponent(classify.dictionary)}/categories`);
    if (code === 200) for (const c of data) words.categories[c.key] = b.pick(c.title) || c.key;
    words.classified = (words.fields[classify.field] || {}).label || "";
  }
}

register("ruleset", {
  context: ["answers", "scores", "bands", "patient", "encounter", "event", "task"],
  async start(b) {
    b.$("b-try").addEventListener("click", () => tryRules(b));
  },
  // the forms the rule set listens to: a sample event, and the fields the pickers offer
  async loaded(b) {
    if (!b.model) return;
    if ((b.model.forms || []).length) b.$("b-sample").value = JSON.stringify({ form: b.model.forms[0], answers: {} });
    await loadWords(b);
  },
  render: renderRules,
  sentenceContext: context,
  candidates: (b) => ruleFields.map((key) => ({ value: `answers.${key}`, detail: b.msg("builder.field") })),
});
