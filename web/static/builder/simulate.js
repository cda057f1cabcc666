// "Simulate" (模拟): run a journey scenario of this definition's app against the draft, in a
// scratch database on the server, and show the steps (✓/✗ with what was seen) and the patient's
// timeline. An ES module, CSP-safe (no inline code, no eval).

import { el } from "./dom.js";
import { makeApi } from "./core/api.js";
import { format, pickLabel } from "./core/text.js";

(() => {
  const root = document.getElementById("builder");
  const panel = document.getElementById("b-simulate");
  if (!root || !panel) return;
  const KIND = root.dataset.kind, KEY = root.dataset.key, CSRF = root.dataset.csrf;
  const LOCALE = root.dataset.locale || "zh-CN";
  const $ = (id) => document.getElementById(id);
  const base = "/api/v1/builder";
  let M = {};
  let loaded = false;

  const msg = (key, params = {}) => format(M, key, params);
  const pick = (label) => pickLabel(label, LOCALE);
  const app = () => root.dataset.app || $("b-app").textContent.trim();

  const api = makeApi(CSRF);

  async function load() {
    if (loaded || !app()) return;
    M = (await api("GET", `${base}/i18n`)).data || {};
    const { status, data } = await api("GET", `${base}/apps/${encodeURIComponent(app())}/scenarios`);
    const select = $("b-sim-scenario");
    select.replaceChildren(el("option", { value: "", text: msg("builder.simulate_all") }));
    if (status === 200 && Array.isArray(data)) {
      for (const s of data) select.append(el("option", { value: s.key, text: pick(s.title) || s.key }));
      if (data.length) select.value = data[0].key;
    }
    loaded = true;
  }

  function stepItem(step) {
    const ok = !step.failures.length;
    return el("li", { class: ok ? "b-sim-ok" : "b-sim-fail", "data-step": step.step },
      el("span", { class: "b-sim-mark", text: ok ? "✓" : "✗" }),
      el("span", { class: "b-sim-at", text: step.at }),
      el("span", { text: ` ${step.label}` }),
      step.done ? el("div", { class: "b-sim-done", text: step.done }) : null,
      ...step.failures.map((f) => el("div", { class: "b-sim-failure" },
        el("span", { text: f.message }),
        el("small", { text: ` — ${msg("builder.simulate_expected_at", { where: `${f.file}:${f.line}:${f.column}` })}` }))));
  }

  function show(data) {
    const out = $("b-sim-result");
    const parts = [];
    parts.push(el("p", { id: "b-sim-verdict", class: data.ok ? "b-sim-ok" : "b-sim-fail",
      text: msg(data.ok ? "builder.simulate_passed" : "builder.simulate_failed_run") }));
    if (data.problems && data.problems.length) {
      parts.push(el("p", { text: msg("builder.simulate_problems") }),
        el("ul", { class: "b-sim-problems" }, ...data.problems.map((p) =>
          el("li", { text: `${p.file}:${p.line}:${p.column} ${p.message}` }))));
    }
    for (const run of data.scenarios || []) {
      parts.push(el("h3", { text: `${run.ok ? "✓" : "✗"} ${pick(run.title) || run.scenario}` }),
        el("h4", { text: msg("builder.simulate_steps") }),
        el("ol", { class: "b-sim-steps" }, ...run.steps.map(stepItem)),
        el("h4", { text: msg("builder.simulate_timeline") }),
        el("ol", { class: "b-sim-timeline" }, ...(run.timeline || []).map((e) =>
          el("li", { class: `b-sim-${e.type}` },
            el("span", { class: "b-sim-at", text: e.at }),
            el("span", { text: ` ${e[LOCALE] || e["zh-CN"]}` })))));
    }
    out.replaceChildren(...parts);
  }

  async function run() {
    await load();
    const button = $("b-sim-run"), out = $("b-sim-result");
    button.disabled = true;
    out.replaceChildren(el("p", { role: "status", text: msg("builder.simulate_running") }));
    try {
      const scenario = $("b-sim-scenario").value;
      const { status, data } = await api("POST", `${base}/simulate/${KIND}/${KEY}`,
        { app: app(), text: $("b-yaml").value, ...(scenario ? { scenario } : {}) });
      if (status !== 200) out.replaceChildren(el("p", { class: "b-sim-fail", text: data.detail || String(status) }));
      else show(data);
    } finally {
      button.disabled = false;
    }
  }

  $("b-sim-open").addEventListener("click", async () => {
    const body = $("b-sim-body");
    body.hidden = !body.hidden;
    if (!body.hidden) await load();
  });
  $("b-sim-run").addEventListener("click", run);
})();
