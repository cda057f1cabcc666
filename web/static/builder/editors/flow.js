// The flow designer: the step palette and list, the schedule as a timeline, the diagram
// (flowdiagram.js) and the step's property panel (steppanel.js), all drawn from the server's
// step types (GET step-types: options, edges, modes, pauses, icon, defaults, delay).

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { newStep, timeline } from "../graph.js";
import { render as renderDiagram } from "../flowdiagram.js";
import { render as renderPanel } from "../steppanel.js";
import { stepLabel } from "../core/words.js";
import { advanced } from "../core/advanced.js";
import { setOrDelete } from "../core/text.js";

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
  renderTrigger(b);
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

// the trigger in words: the event by its name (出院), how often a run starts, by hand too; the
// condition and a schedule are expressions and codes, under "Advanced"
let triggerWords = { events: [], once: [] };
function renderTrigger(b) {
  const trigger = b.model.trigger && typeof b.model.trigger === "object" ? b.model.trigger : {};
  const set = (name, value) => b.commit(() => {
    b.model.trigger = { ...(b.model.trigger || {}) };
    setOrDelete(b.model.trigger, name, value);
  });
  const known = triggerWords.events.some((e) => e.name === trigger.event);
  const event = el("select", { "data-trigger": "event" }, el("option", { value: "", text: "" }),
    ...triggerWords.events.map((e) => el("option", { value: e.name, text: b.pick(e.title), selected: e.name === trigger.event })));
  if (trigger.event && !known) event.append(el("option", { value: trigger.event, text: b.msg("builder.trigger_other"), selected: true }));
  event.addEventListener("change", () => set("event", event.value || undefined));
  const once = el("select", { "data-trigger": "once" }, el("option", { value: "", text: "" }),
    ...triggerWords.once.map((o) => el("option", { value: o.name, text: b.pick(o.title), selected: o.name === trigger.once })));
  once.addEventListener("change", () => set("once", once.value || undefined));
  const manual = el("input", { type: "checkbox", "data-trigger": "manual", checked: trigger.manual === true });
  manual.addEventListener("change", () => set("manual", manual.checked || undefined));
  const text = (name, label, cls) => {
    const input = el("input", { type: "text", "data-trigger": name, value: trigger[name] ?? "", class: cls });
    input.addEventListener("change", () => set(name, input.value.trim() || undefined));
    return el("label", { text: label }, input);
  };
  b.$("b-flow-trigger").replaceChildren(
    el("label", { text: b.msg("builder.trigger_event") }, event),
    el("label", { text: b.msg("builder.trigger_once") }, once),
    el("label", { class: "b-check" }, manual, b.msg("builder.trigger_manual")),
    ...b.errorLines(b.problemsAt(["trigger"])),
    advanced(b, "flow:trigger", b.msg("builder.trigger_advanced"),
      text("event", b.msg("builder.trigger_event_code")),
      text("when", b.msg("builder.trigger_when"), "b-expression"),
      text("cron", b.msg("builder.trigger_cron"))));
  if (b.completing) b.$("b-flow-trigger").querySelectorAll("input.b-expression").forEach((i) => b.completing(i));
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
    triggerWords = (await b.api("GET", `${b.base}/flow-trigger`)).data || triggerWords;
    await Promise.all(["form", "template", "flow", "calendar"].map(async (kind) => {
      const { status: code, data: rows } = await b.api("GET", `${b.base}/definitions/${kind}`);
      definitionLists[kind] = code === 200 && Array.isArray(rows) ? rows : [];
    }));
    renderStepPalette(b);
  },
  render: renderFlow,
  publishNotes: (b, impact) => [el("p", { text: b.msg("builder.running_flows", { n: impact.running_flows || 0 }) })],
});
