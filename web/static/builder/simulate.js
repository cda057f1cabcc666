// "Simulate" (模拟): run a journey scenario of this definition's app against the draft, in a
// scratch database on the server, and show in words the patient's timeline by day from the
// discharge (第0天 出院 → 第3天 …), who gets which task and when it is due, and each failed
// expectation; the scenario's steps (keys, codes, file:line:col) only under "Advanced".
// An ES module, CSP-safe (no inline code, no eval).

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

  // 第3天 09:30: days from the discharge (day 0), hospital time
  const when = (day, time) => `${day < 0 ? msg("builder.sim.day_before", { n: -day })
    : msg("builder.sim.day", { n: day })} ${time || ""}`.trim();
  const words = (pair) => (pair && (pair[LOCALE] || pair["zh-CN"])) || "";

  function taskLine(e) {
    const task = e.task;
    const due = task.due_day === null || task.due_day === undefined ? msg("builder.sim.task_no_due")
      : msg("builder.sim.task_due", { when: when(task.due_day, task.due_time) });
    return el("li", { class: "b-sim-task" }, el("span", { class: "b-sim-at", text: when(e.day, e.time) }),
      el("span", { text: ` ${msg("builder.sim.task_line", { who: words(task.who), title: task.title,
        priority: words(task.priority), due })}` }));
  }

  // the steps as the scenario file writes them (keys, codes, file:line:col): the advanced view
  function advancedSteps(run) {
    return el("details", { class: "b-advanced b-sim-advanced" },
      el("summary", { text: msg("builder.sim.advanced_steps") }),
      el("h4", { text: msg("builder.simulate_steps") }),
      el("ol", { class: "b-sim-steps" }, ...run.steps.map(stepItem)));
  }

  function show(data) {
    const out = $("b-sim-result");
    const parts = [];
    parts.push(el("p", { id: "b-sim-verdict", class: data.ok ? "b-sim-ok" : "b-sim-fail",
      text: msg(data.ok ? "builder.simulate_passed" : "builder.simulate_failed_run") }));
    if (data.problems && data.problems.length) {
      parts.push(el("p", { text: msg("builder.simulate_problems") }),
        el("ul", { class: "b-sim-problems" }, ...data.problems.map((p) =>
          el("li", { text: p.message }))),
        el("details", { class: "b-advanced" }, el("summary", { text: msg("builder.advanced") }),
          el("ul", {}, ...data.problems.map((p) => el("li", { text: `${p.file}:${p.line}:${p.column}` })))));
    }
    for (const run of data.scenarios || []) {
      const timeline = run.timeline || [];
      const failures = run.steps.flatMap((s) => s.failures).filter((f) => f.words);
      const tasks = timeline.filter((e) => e.task);
      parts.push(el("h3", { text: `${run.ok ? "✓" : "✗"} ${pick(run.title) || msg("builder.simulate")}` }));
      if (failures.length) {
        parts.push(el("h4", { text: msg("builder.sim.failed_expectations") }),
          el("ul", { class: "b-sim-failures" }, ...failures.map((f) => el("li", { class: "b-sim-fail", text: words(f.words) }))));
      }
      parts.push(el("h4", { text: msg("builder.simulate_timeline") }),
        el("ol", { class: "b-sim-timeline" }, ...timeline.map((e) =>
          el("li", { class: `b-sim-${e.type}`, "data-day": String(e.day) },
            el("span", { class: "b-sim-at", text: when(e.day, e.time) }),
            el("span", { text: ` ${words(e)}` })))));
      if (tasks.length) {
        parts.push(el("h4", { text: msg("builder.sim.who_tasks") }),
          el("ul", { class: "b-sim-tasks" }, ...tasks.map(taskLine)));
      }
      parts.push(advancedSteps(run));
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
