// The flow designer: the step palette and list, the schedule as a timeline, the diagram
// (flowdiagram.js) and the step's property panel (steppanel.js), all drawn from the server's
// step types (GET step-types: options, edges, modes, pauses, icon, defaults, delay).

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { newStep, timeline } from "../graph.js";
import { render as renderDiagram } from "../flowdiagram.js";
import { render as renderPanel } from "../steppanel.js";
import { stepLabel } from "../core/words.js";

let stepTypes = [];        // [{name, title, options: {name: JSON Schema}, required, edges, …}]
const definitionLists = {};  // kind -> [{key, title, app}] (the step panel's selects)
let selectedStep = -1;
let hooks = null;

function moveStep(b, from, to) {
  if (to < 0 || to >= b.model.steps.length || from === to) return;
  b.commit(() => {
    const [st] = b.model.steps.splice(from, 1);
    b.model.steps.splice(to, 0, st);
    selectedStep = to;
  });
}

function renderFlow(b) {
  const steps = b.model.steps || [];
  if (selectedStep >= steps.length) selectedStep = steps.length - 1;
  b.$("b-steps").replaceChildren(...steps.map((st, i) => {
    const errs = b.problemsAt(["steps", i]);
    const card = el("li", { class: "b-card" + (i === selectedStep ? " selected" : "")
      + (errs.length ? " has-error" : ""), "data-key": st.key, tabindex: "0" },
    el("div", { class: "b-head" }, el("span", { class: "b-name", text: b.msg("builder.step_n", { n: i + 1, title: stepLabel(stepTypes, st, b.locale, definitionLists) }) }),
      el("button", { type: "button", class: "b-up", "aria-label": b.msg("builder.move_up"), text: "↑",
        onclick: (e) => { e.stopPropagation(); moveStep(b, i, i - 1); } }),
      el("button", { type: "button", class: "b-down", "aria-label": b.msg("builder.move_down"), text: "↓",
        onclick: (e) => { e.stopPropagation(); moveStep(b, i, i + 1); } }),
      el("button", { type: "button", class: "b-remove", "aria-label": b.msg("builder.remove"), text: "×",
        onclick: (e) => { e.stopPropagation(); b.commit(() => { b.model.steps.splice(i, 1); selectedStep = -1; }); } })),
    ...b.errorLines(errs));
    card.addEventListener("click", () => { selectedStep = i; b.render(); });
    return card;
  }));
  // the timeline: steps whose type moves the day on (its "delay") advance it; every other step
  // happens on the current day
  b.$("b-timeline").replaceChildren(...timeline(stepTypes, steps).map((item) =>
    el("li", { "data-step": item.key }, el("span", { class: "b-day",
      text: b.msg("builder.day", { n: item.day }) }),
    stepLabel(stepTypes, steps.find((s) => s.key === item.key), b.locale, definitionLists))));
  renderDiagram(hooks);
  // the property panel is generated from the step type's option schemas (steppanel.js)
  renderPanel(b.$("b-step-props"), hooks);
}

function renderStepPalette(b) {
  b.$("b-step-palette").replaceChildren(...stepTypes.map(({ name, title }) => el("li", {},
    el("button", { type: "button", "data-type": name, text: b.pick(title) || name,
      onclick: () => b.commit(() => {
        b.model.steps = b.model.steps || [];
        b.model.steps.push(newStep(stepTypes, b.model.steps, name));
        selectedStep = b.model.steps.length - 1;
      }) }))));
}

register("flow", {
  context: ["answers", "scores", "bands", "patient", "encounter", "event", "reading", "task", "context"],
  async start(b) {
    // the diagram and the panel edit the same model through the same history
    hooks = { model: () => b.model, commit: b.commit, msg: b.msg, problemsAt: b.problemsAt,
      newStep: (type) => newStep(stepTypes, b.model.steps, type), rerender: b.render,
      stepTypes: () => stepTypes, selected: () => selectedStep, pick: b.pick, status: b.status,
      locale: b.locale, lists: () => definitionLists, complete: b.completing,
      select: (i) => { selectedStep = i; b.render(); }, setSelected: (i) => { selectedStep = i; } };
    stepTypes = (await b.api("GET", `${b.base}/step-types`)).data;
    await Promise.all(["form", "template", "flow", "calendar"].map(async (kind) => {
      const { status: code, data: rows } = await b.api("GET", `${b.base}/definitions/${kind}`);
      definitionLists[kind] = code === 200 && Array.isArray(rows) ? rows : [];
    }));
    renderStepPalette(b);
  },
  render: renderFlow,
  publishNotes: (b, impact) => [el("p", { text: b.msg("builder.running_flows", { n: impact.running_flows || 0 }) })],
});
