// The rule editor: each rule's condition (as an expression, or by the field / operator / value
// picker that writes one) and its actions; "try it" runs the draft against a sample event.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { conditionPicker } from "../core/conditions.js";
import { setOrDelete } from "../core/text.js";

let ruleFields = [];

function renderRules(b) {
  const body = b.$("b-rules").querySelector("tbody");
  body.replaceChildren(...(b.model.rules || []).map((r, i) => {
    const when = b.completing(el("input", { type: "text", value: r.when || "", "data-rule": `${i}.when`, size: 60 }));
    when.addEventListener("change", () => b.commit(() => setOrDelete(b.model.rules[i], "when", when.value.trim() || undefined)));
    const errs = b.problemsAt(["rules", i]);
    const { pickField, op, value, set } = conditionPicker(b, {
      id: `rule:${r.key}`, attr: "data-rule", prefix: String(i), size: 8,
      choices: ruleFields.map((f) => [f, f]),
      apply: (text) => b.commit(() => { b.model.rules[i].when = text; }) });
    return el("tr", { "data-rule": r.key, class: errs.length ? "has-error" : "" },
      el("td", { text: r.key }), el("td", {}, when, el("div", { class: "b-rule-builder" }, pickField, op, value, set),
        ...b.errorLines(errs)),
      el("td", { text: (r.then || []).map((a) => a.do).join(", ") }));
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
    text: `${r.key}: ${matched.has(r.key) ? b.msg("builder.matched") : b.msg("builder.not_matched")}`,
  }))), el("pre", { id: "b-try-actions", text: JSON.stringify(data.actions || [], null, 2) }));
}

register("ruleset", {
  context: ["answers", "scores", "bands", "patient", "encounter", "event", "task"],
  async start(b) {
    b.$("b-try").addEventListener("click", () => tryRules(b));
  },
  // the forms the rule set listens to: a sample event and the field keys the picker offers
  async loaded(b) {
    if (!b.model || !(b.model.forms || []).length) return;
    b.$("b-sample").value = JSON.stringify({ form: b.model.forms[0], answers: {} });
    const seen = new Set();
    for (const form of b.model.forms) {
      const { status: code, data: keys } = await b.api("GET", `${b.base}/forms/${encodeURIComponent(form)}/fields`);
      if (code === 200) keys.forEach((k) => seen.add(k));
    }
    ruleFields = [...seen].sort();
  },
  render: renderRules,
  candidates: (b) => ruleFields.map((key) => ({ value: `answers.${key}`, detail: b.msg("builder.field") })),
});
