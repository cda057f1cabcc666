// The rule editor: each rule by its title, its condition as a sentence (built from pickers that
// know the fields of the forms the rule set listens to, and the categories of its classification
// dictionary; the expression only under "Advanced"), its actions by their titles; "try it" runs
// the draft on a real recent submission the user may see (or the form's own preview) and shows
// each rule hit or missed in words, the reason from the server (web/builder_try.py). "添加规则" adds a rule; "编辑规则" opens one: its title in
// two languages, each action's panel generated from the action type's schema
// (core/actionpanel.js), "添加动作" picks an action type by its title.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { conditionPanel } from "../core/conditionpanel.js";
import { advanced } from "../core/advanced.js";
import { freshKey, setOrDelete } from "../core/text.js";
import { actionPanel } from "../core/actionpanel.js";
import { actionInputKind, actionSummary } from "../core/actionwords.js";
import { setAt } from "../steppanel.js";

let ruleFields = [];              // field keys of the rule set's forms (completion)
const words = { fields: {}, categories: {}, classified: "", actions: {} };
let actionTypes = [];             // [{name, title, options: {name: JSON Schema}, required}]
const lists = {};                 // kind -> [{key, title}]: the definitions an action may name
let openRule = -1;                // the rule being edited (its title, its actions' panels)

function context(b) {
  return { say: b.msg, fields: words.fields, categories: words.categories, classified: words.classified };
}

function actionWords(b, action) {
  const t = words.actions[action.do];
  return t ? b.pick(t) : action.do;
}

function titleInputs(b, i, r) {
  const title = r.title && typeof r.title === "object" ? r.title : {};
  const input = (locale, caption) => {
    const box = el("input", { type: "text", "data-rule": `${i}.title.${locale}`, value: title[locale] || "" });
    box.addEventListener("change", () => b.commit(() => {
      const rule = b.model.rules[i];
      const next = { ...(rule.title && typeof rule.title === "object" ? rule.title : {}), [locale]: box.value.trim() };
      const zh = next["zh-CN"] || next.en, en = next.en || next["zh-CN"];
      setOrDelete(rule, "title", zh ? { "zh-CN": zh, en } : undefined);
    }));
    return el("label", { text: caption }, box);
  };
  return el("fieldset", { class: "b-rule-name" }, el("legend", { text: b.msg("builder.rule_title") }),
    input("zh-CN", b.msg("builder.label_zh")), input("en", b.msg("builder.label_en")));
}

function actionRows(b, i, r) {
  const then = Array.isArray(r.then) ? r.then : [];
  if (i !== openRule) {
    return [el("ul", { class: "b-actions" }, ...then.map((a) =>
      el("li", { "data-action": a.do, text: actionWords(b, a) })))];
  }
  const items = then.map((a, j) => {
    const type = actionTypes.find((t) => t.name === a.do);
    const errs = b.problemsAt(["rules", i, "then", j]);
    return el("li", { "data-action": a.do, class: errs.length ? "has-error" : "" },
      el("div", { class: "b-head" }, el("strong", { text: actionSummary(type, a, b.locale) }),
        el("button", { type: "button", class: "b-remove", "data-rule": `${i}.then.${j}.remove`,
          "aria-label": b.msg("builder.remove_action"), text: "×",
          onclick: () => b.commit(() => { b.model.rules[i].then.splice(j, 1); }) })),
      actionPanel(b, { at: `${i}.${j}`, type, action: a, lists,
        set: (path, value) => b.commit(() => setAt(b.model.rules[i].then[j], path, value)),
        replace: (options) => b.commit(() => { b.model.rules[i].then[j] = { do: a.do, ...options }; }),
        problems: (path) => b.errorLines(b.problemsAt(["rules", i, "then", j, ...path])) }),
      ...b.errorLines(errs.filter((p) => (p.path_parts || []).length <= 4
        || actionInputKind(((type && type.options) || {})[p.path_parts[4]]) === "json")));
  });
  const add = el("select", { "data-rule": `${i}.add-action` },
    el("option", { value: "", text: b.msg("builder.add_action") }),
    ...actionTypes.map((t) => el("option", { value: t.name, text: b.pick(t.title) })));
  add.addEventListener("change", () => {
    if (!add.value) return;
    b.commit(() => {
      const rule = b.model.rules[i];
      rule.then = [...(Array.isArray(rule.then) ? rule.then : []), { do: add.value }];
    });
  });
  return [el("ul", { class: "b-actions b-actions-open" }, ...items), add];
}

function renderRules(b) {
  const body = b.$("b-rules").querySelector("tbody");
  const rules = b.model.rules || [];
  if (openRule >= rules.length) openRule = -1;
  body.replaceChildren(...rules.map((r, i) => {
    const errs = b.problemsAt(["rules", i]);
    const key = el("input", { type: "text", value: r.key || "", "data-rule": `${i}.key`, size: 20 });
    key.addEventListener("change", () => b.commit(() => { b.model.rules[i].key = key.value.trim(); }));
    const when = conditionPanel(b, { id: `rule:${r.key}`, attr: "data-rule", prefix: String(i),
      title: b.msg("builder.condition_sentence"), text: r.when || "", ctx: context(b),
      errors: b.errorLines(errs.filter((p) => i !== openRule || (p.path_parts || [])[2] !== "then")),
      onSet: (text) => b.commit(() => setOrDelete(b.model.rules[i], "when", text)) });
    const edit = el("button", { type: "button", class: "b-rule-edit", "data-rule": `${i}.edit`,
      text: b.msg(i === openRule ? "builder.close_rule" : "builder.edit_rule"),
      onclick: () => { openRule = i === openRule ? -1 : i; b.render(); } });
    return el("tr", { "data-rule": r.key, class: errs.length ? "has-error" : "" },
      el("td", {}, el("strong", { class: "b-rule-title", text: b.pick(r.title) || b.msg("builder.rule_untitled") }),
        i === openRule ? titleInputs(b, i, r) : null, edit,
        advanced(b, `rule:${i}:key`, b.msg("builder.advanced_rule"),
          el("label", { text: b.msg("builder.word.key") }, key))),
      el("td", {}, when),
      el("td", {}, ...actionRows(b, i, r)));
  }));
}

function addRule(b) {
  b.commit(() => {
    b.model.rules = Array.isArray(b.model.rules) ? b.model.rules : [];
    b.model.rules.push({ key: freshKey(b.model.rules.map((r) => r && r.key), "rule"), then: [] });
    openRule = b.model.rules.length - 1;
  });
}

// --- "try it": a real recent submission the user may see, the form's own preview, or (under
// "Advanced") a hand-written event; the server explains each rule in words
let sampleEdited = false;          // the advanced JSON box was typed into: try that instead

function showExplained(b, code, data) {
  const out = b.$("b-try-result");
  if (code !== 200) { out.replaceChildren(el("p", { class: "b-try-miss", text: data.detail || String(code) })); return; }
  out.replaceChildren(el("ul", { id: "b-try-list" }, ...(data.rules || []).map((r) => el("li", {
    class: r.hit ? "b-try-hit" : "b-try-miss", "data-rule": r.key },
    el("strong", { text: r.title }), el("span", { class: "b-try-why", text: ` ${r.text}` }),
    r.actions.length ? el("ul", { class: "b-try-did" }, ...r.actions.map((a) => el("li", { text: a }))) : null))),
  advanced(b, "try:actions", b.msg("builder.advanced"),
    el("pre", { id: "b-try-actions", text: JSON.stringify(data.actions || [], null, 2) })));
}

async function explain(b, source) {
  const { status: code, data } = await b.api("POST", `${b.base}/rules/${b.key}/explain`,
    { body: b.model, ...source });
  showExplained(b, code, data);
}

async function tryRules(b) {
  const picked = b.$("b-try-submission").value;
  if (picked && !sampleEdited) { await explain(b, { submission_id: Number(picked) }); return; }
  let event;
  try { event = JSON.parse(b.$("b-sample").value); } catch (e) { b.$("b-try-result").textContent = String(e); return; }
  await explain(b, { event });
}

async function loadSubmissions(b) {
  const forms = (b.model && b.model.forms) || [];
  const query = forms.map((f) => `form=${encodeURIComponent(f)}`).join("&");
  const { status: code, data } = forms.length ? await b.api("GET", `${b.base}/try/submissions?${query}`)
    : { status: 200, data: [] };
  const rows = code === 200 && Array.isArray(data) ? data : [];
  b.$("b-try-submission").replaceChildren(...(rows.length ? rows.map((s) => el("option", { value: String(s.id), text: s.text }))
    : [el("option", { value: "", text: b.msg("builder.tryit.pick_none") })]));
}

function previewInputs(b) {
  const box = b.$("b-try-preview");
  const form = box && box.shadowRoot && box.shadowRoot.querySelector("form");
  const out = {};
  if (!form) return out;
  for (const [name, value] of new FormData(form).entries()) {
    if (name.startsWith("_") || name === "csrf_token" || typeof value !== "string") continue;
    (out[name] = out[name] || []).push(value);
  }
  return out;
}

async function showPreview(b) {
  const form = b.$("b-try-form").value;
  const box = b.$("b-try-preview");
  if (!form) return;
  const { data: draft } = await b.api("GET", `${b.base}/drafts/form/${encodeURIComponent(form)}`);
  const request = { text: draft.yaml || "" };
  const inputs = previewInputs(b);
  if (Object.keys(inputs).length) request.form = inputs;
  const { status: code, data } = await b.api("POST", `${b.base}/preview/form/${encodeURIComponent(form)}`, request);
  if (code !== 200 || !data.html) return;
  const main = new DOMParser().parseFromString(data.html, "text/html").querySelector("main");
  const shadow = box.shadowRoot || box.attachShadow({ mode: "open" });
  shadow.replaceChildren(el("link", { rel: "stylesheet", href: "/forms/static/forms.css" }),
    main ? document.importNode(main, true) : el("p"));
  const f = shadow.querySelector("form");
  if (f) {
    f.addEventListener("submit", (e) => e.preventDefault());
    f.addEventListener("change", () => showPreview(b));   // show/hide as on the patient's phone
  }
}

function wireTry(b) {
  const forms = (b.model && b.model.forms) || [];
  const select = b.$("b-try-form");
  select.replaceChildren(...forms.map((f) => el("option", { value: f,
    text: b.pick(((lists.form || []).find((d) => d.key === f) || {}).title) || b.msg("builder.tryit.preview_form") })));
  select.onchange = () => { const box = b.$("b-try-preview"); if (box.shadowRoot) box.shadowRoot.replaceChildren(); showPreview(b); };
  b.$("b-try-preview-box").ontoggle = () => { if (b.$("b-try-preview-box").open) showPreview(b); };
  b.$("b-try-with-preview").onclick = () => explain(b, { form: select.value, inputs: previewInputs(b) });
}

async function loadWords(b) {
  const { data: actions } = await b.api("GET", `${b.base}/action-types`);
  actionTypes = Array.isArray(actions) ? actions : [];
  for (const a of actionTypes) words.actions[a.name] = a.title;
  const kinds = new Set(actionTypes.flatMap((t) => Object.values(t.options || {})
    .map((s) => s && s["x-reference"]).filter(Boolean)));
  await Promise.all([...kinds].map(async (kind) => {
    const { status: code, data: rows } = await b.api("GET", `${b.base}/definitions/${kind}`);
    lists[kind] = code === 200 && Array.isArray(rows) ? rows : [];
  }));
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
    b.$("b-sample").addEventListener("input", () => { sampleEdited = true; });
    b.$("b-rules").after(el("button", { type: "button", id: "b-add-rule", text: b.msg("builder.add_rule"),
      onclick: () => addRule(b) }));
  },
  // the forms the rule set listens to: a sample event, and the fields the pickers offer
  async loaded(b) {
    if (!b.model) return;
    if ((b.model.forms || []).length) b.$("b-sample").value = JSON.stringify({ form: b.model.forms[0], answers: {} });
    await loadWords(b);
    if (!lists.form) {
      const { status: code, data: rows } = await b.api("GET", `${b.base}/definitions/form`);
      lists.form = code === 200 && Array.isArray(rows) ? rows : [];
    }
    await loadSubmissions(b);
    wireTry(b);
  },
  render: renderRules,
  sentenceContext: context,
  candidates: (b) => ruleFields.map((key) => ({ value: `answers.${key}`, detail: b.msg("builder.field") })),
});
