// The flow designer's diagram (vanilla JS, no dependencies; CSP: no inline scripts or styles).
// editors/flow.js calls render(hooks) (this ES module's export) whenever a flow draft re-renders; the
// diagram is an SVG drawn from the draft JSON: one box per step, an arrow per target (next,
// decision branches, parallel branches, approval rejects, timeouts), laid out top to bottom by the
// longest path from the first step. Edits go through hooks.commit (undo, draft save, validation).
// Pointer gestures (pointer events, so Chromium and Firefox alike; no HTML5 drag and drop on SVG):
// drag from a box's out-port (the circle at its bottom) onto another box to connect them (a
// rubber-band line follows the pointer; Escape cancels), drag a box onto another to move it just
// before that one in the step list.
import { el as html } from "./dom.js";
import {
  graphOf, hasNext, layers, loopWithoutPause, setSlot, slots as slotsOf, typeOf,
} from "./graph.js";
import { delayWords, stepDetail, stepLabel } from "./core/words.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 170, H = 58, GAP_X = 36, GAP_Y = 54, PAD = 24;
const clip = (text) => (text.length > 13 ? `${text.slice(0, 12)}…` : text);  // what fits a box
// null | {phase: "source"} | {phase: "target", from: index}
//      | {phase: "drop", from, to}: a port dragged onto a box whose source has several slots
let connect = null;
// a pointer gesture: {mode: "press" | "move" | "wire", from, …}; renders wait until it ends
let drag = null;
let deferred = null;
let suppressClick = false;
let lastHooks = null;
const DRAG_MIN = 6;

const svg = (tag, attrs = {}, ...children) => {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null && v !== false) node.setAttribute(k, String(v));
  }
  for (const c of children) if (c) node.append(c);
  return node;
};

// Everything about a step's type comes from the server (GET /api/v1/builder/step-types, each
// StepType's edges, modes, pauses, icon and delay): graph.js reads it; no graph rule is
// written here, so a plugin's step type (its own edge such as on_no_answer) is drawn,
// connected and checked like a built-in one.
const types = () => (lastHooks ? lastHooks.stepTypes() : []);
const labelOf = (e) => (lastHooks ? lastHooks.pick(e.label) : e.option) || e.option;
const slots = (st) => slotsOf(types(), st, labelOf);
// the words of the last connection the graph check refused (shown until the next gesture)
let refused = "";

export function render(h) {
  lastHooks = h;
  if (drag && drag.mode !== "press") { deferred = h; return; }
  drag = null;
  const box = document.getElementById("b-diagram");
  if (!box) return;
  const model = h.model();
  const steps = Array.isArray(model.steps) ? model.steps.filter((s) => s && typeof s === "object") : [];
  const selected = h.selected();
  const graph = graphOf(types(), steps, labelOf);
  const { layer, back } = layers(steps, graph);
  const rows = [];
  steps.forEach((st, i) => {
    const l = layer.get(st.key);
    (rows[l] = rows[l] || []).push(i);
  });
  const widest = Math.max(1, ...rows.map((r) => (r ? r.length : 0)));
  const width = PAD * 2 + widest * W + (widest - 1) * GAP_X + 80;
  const height = PAD * 2 + Math.max(1, rows.length) * (H + GAP_Y);
  const pos = new Map();
  rows.forEach((row, l) => {
    if (!row) return;
    const rowWidth = row.length * W + (row.length - 1) * GAP_X;
    const x0 = (width - 80 - rowWidth) / 2;
    row.forEach((i, j) => pos.set(steps[i].key, { x: x0 + j * (W + GAP_X), y: PAD + l * (H + GAP_Y), i }));
  });

  const marker = svg("marker", { id: "fd-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5,
    markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
  svg("path", { d: "M0,0 L10,5 L0,10 z", class: "fd-arrowhead" }));
  const edgeLayer = svg("g", { class: "fd-edges" });
  const nodeLayer = svg("g", { class: "fd-nodes" });
  for (const st of steps) {
    const from = pos.get(st.key);
    for (const [slot, target, label] of graph.get(st.key)) {
      const to = pos.get(target);
      if (!to) continue;  // a missing target: the problem shows on the source box
      const x1 = from.x + W / 2, y1 = from.y + H, x2 = to.x + W / 2, y2 = to.y;
      let d;
      if (back.has(`${st.key}>${target}`) || to.y <= from.y) {
        const side = Math.max(from.x, to.x) + W + 30;
        d = `M${from.x + W},${from.y + H / 2} C${side},${from.y + H / 2} ${side},${to.y + H / 2} ${to.x + W},${to.y + H / 2}`;
      } else {
        const my = (y1 + y2) / 2;
        d = `M${x1},${y1} C${x1},${my} ${x2},${my} ${x2},${y2}`;
      }
      const g = svg("g", { class: `fd-edge fd-${slot.split(".")[0]}`, "data-from": st.key,
        "data-to": target, "data-slot": slot },
      svg("path", { d, "marker-end": "url(#fd-arrow)" }));
      if (label) {
        g.append(svg("text", { x: (x1 + x2) / 2 + 4, y: (y1 + y2) / 2, class: "fd-edge-label" }, label));
      }
      edgeLayer.append(g);
    }
  }
  for (const st of steps) {
    const { x, y, i } = pos.get(st.key);
    const errs = h.problemsAt(["steps", i]);
    const cls = ["fd-node"];
    if (i === selected) cls.push("selected");
    if (errs.length) cls.push("has-error");
    if (connect && connect.phase === "target" && connect.from === i) cls.push("fd-source");
    const g = svg("g", { class: cls.join(" "), "data-key": st.key, "data-index": i,
      "data-problems": errs.map((p) => p.code).join(" ") || null, tabindex: 0, role: "button" },
    svg("title", {}, errs.length ? errs.map((p) => p.message).join("\n") : stepLabel(types(), st, h.locale, h.lists())),
    svg("rect", { x, y, width: W, height: H, rx: 6 }),
    svg("text", { x: x + 8, y: y + 17, class: "fd-type" }, `${(typeOf(types(), st) || {}).icon || "•"} ${h.pick((typeOf(types(), st) || {}).title) || ""}`),
    svg("text", { x: x + 8, y: y + 34, class: "fd-key" }, clip(stepDetail(typeOf(types(), st), st, h.locale, h.lists()) || h.pick(st.title) || "")),
    svg("text", { x: x + 8, y: y + 50, class: errs.length ? "fd-err" : "fd-delay", "data-code": errs.length ? errs[0].code : null },
      errs.length ? `⚠ ${clip(errs[0].message)}` : delayWords(typeOf(types(), st), st, h.msg)));
    if (slots(st).length) {
      g.append(svg("circle", { cx: x + W / 2, cy: y + H, r: 6, class: "fd-port", "data-port": st.key },
        svg("title", {}, h.msg("builder.drag_to_connect"))));
    }
    const pickBox = () => { if (!suppressClick) clickBox(h, i); };
    g.addEventListener("click", pickBox);
    g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); pickBox(); } });
    nodeLayer.append(g);
  }
  const drawing = svg("svg", { id: "b-diagram-svg", class: "fd-svg", width, height,
    viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": h.msg("builder.diagram") },
  svg("defs", {}, marker), edgeLayer, nodeLayer);
  gestures(h, drawing);
  box.replaceChildren(toolbar(h, steps, selected), drawing);
}

// --- pointer gestures: drag from a port to connect, drag a box to move it ---------------------
function point(drawing, e) {
  const m = drawing.getScreenCTM();
  if (!m) return { x: e.clientX, y: e.clientY };
  const p = drawing.createSVGPoint();
  p.x = e.clientX; p.y = e.clientY;
  const q = p.matrixTransform(m.inverse());
  return { x: q.x, y: q.y };
}
function boxAt(e) {
  const hit = document.elementFromPoint(e.clientX, e.clientY);
  const g = hit && hit.closest ? hit.closest("#b-diagram-svg g.fd-node") : null;
  return g ? Number(g.dataset.index) : -1;
}
function hover(drawing, index) {
  for (const g of drawing.querySelectorAll("g.fd-node.fd-drop")) g.classList.remove("fd-drop");
  const g = index >= 0 ? drawing.querySelector(`g.fd-node[data-index="${index}"]`) : null;
  if (g && (!drag || Number(g.dataset.index) !== drag.from)) g.classList.add("fd-drop");
}
function endGesture(cancelled) {
  const d = drag;
  drag = null;
  if (!d) return;
  if (d.line) d.line.remove();
  if (d.g) { d.g.removeAttribute("transform"); d.g.classList.remove("fd-dragging"); }
  try { if (d.drawing.hasPointerCapture(d.pointerId)) d.drawing.releasePointerCapture(d.pointerId); } catch { /* gone */ }
  if (d.mode !== "press") {
    suppressClick = true;
    setTimeout(() => { suppressClick = false; }, 0);
  }
  if (cancelled || d.mode === "press") {
    if (deferred) { const h = deferred; deferred = null; render(h); }
    else if (cancelled && d.mode !== "press") render(d.h);
  }
}
function gestures(h, drawing) {
  drawing.addEventListener("pointerdown", (e) => {
    if (e.button !== 0 || (drag && drag.mode !== "press")) return;
    refused = "";
    const port = e.target.closest && e.target.closest(".fd-port");
    const g = e.target.closest && e.target.closest("g.fd-node");
    if (!g) return;
    const from = Number(g.dataset.index);
    const start = point(drawing, e);
    if (port) {
      e.preventDefault();
      e.stopPropagation();
      const x = Number(port.getAttribute("cx")), y = Number(port.getAttribute("cy"));
      const line = svg("line", { x1: x, y1: y, x2: start.x, y2: start.y, class: "fd-rubber",
        id: "fd-rubber", "marker-end": "url(#fd-arrow)" });
      drawing.append(line);
      drawing.setPointerCapture(e.pointerId);
      drag = { mode: "wire", from, line, drawing, h, pointerId: e.pointerId };
      connect = null;
      return;
    }
    drag = { mode: "press", from, g, start, drawing, h, pointerId: e.pointerId };
  });
  drawing.addEventListener("pointermove", (e) => {
    if (!drag || drag.drawing !== drawing) return;
    const p = point(drawing, e);
    if (drag.mode === "wire") {
      drag.line.setAttribute("x2", p.x);
      drag.line.setAttribute("y2", p.y);
      hover(drawing, boxAt(e));
      return;
    }
    const dx = p.x - drag.start.x, dy = p.y - drag.start.y;
    if (drag.mode === "press" && Math.hypot(dx, dy) < DRAG_MIN) return;
    if (drag.mode === "press") {
      drag.mode = "move";
      drag.g.classList.add("fd-dragging");
      drawing.setPointerCapture(drag.pointerId);
    }
    drag.g.setAttribute("transform", `translate(${dx} ${dy})`);
    hover(drawing, boxAt(e));
  });
  drawing.addEventListener("pointerup", (e) => {
    if (!drag || drag.drawing !== drawing) return;
    const d = drag;
    const target = d.mode === "press" ? -1 : boxAt(e);
    endGesture(false);
    if (d.mode === "wire") {
      if (target >= 0) dropWire(h, d.from, target);
      else render(deferred || h);
    } else if (d.mode === "move") {
      if (target >= 0 && target !== d.from) moveBefore(h, d.from, target);
      else render(deferred || h);
    }
    deferred = null;
  });
  drawing.addEventListener("pointercancel", () => endGesture(true));
}

// a wire dropped on box ``to``: one slot is set at once; several let the author choose first
function dropWire(h, from, to) {
  const source = h.model().steps[from];
  const choices = source ? slots(source) : [];
  if (!choices.length || !h.model().steps[to]) { h.rerender(); return; }
  if (choices.length === 1) { setConnection(h, from, choices[0][0], to); return; }
  connect = { phase: "drop", from, to };
  toolbar.lastSlot = null;
  h.select(from);
}
function setConnection(h, from, slot, to) {
  const steps = h.model().steps;
  if (!steps[from] || !steps[to]) { h.rerender(); return; }
  // the graph check, from the step types' edges and pauses: a loop no step in which pauses
  // is refused here, in words, before it is made (the server would flag it after)
  const loop = loopWithoutPause(types(), steps, from, slot, to);
  if (loop) {
    const names = loop.map((i) => stepName(h, steps[i]));
    refused = h.msg("builder.loop_refused", {
      steps: new Intl.ListFormat(h.locale || "zh-CN", { type: "conjunction" }).format(names) });
    h.status(refused);
    h.rerender();
    return;
  }
  refused = "";
  h.commit(() => {
    setSlot(h.model().steps[from], slot, h.model().steps[to].key);
    h.setSelected(from);
  });
}
// a step in words: its own title, else its type's title
function stepName(h, st) {
  const type = typeOf(types(), st);
  return `「${stepLabel(types(), st, h.locale, h.lists()) || (type ? h.pick(type.title) : "")}」`;
}
// the box dragged from ``from`` goes just before the box at ``to``
function moveBefore(h, from, to) {
  const at = from < to ? to - 1 : to;
  if (at === from) { h.rerender(); return; }
  h.commit(() => {
    const steps = h.model().steps;
    const [st] = steps.splice(from, 1);
    steps.splice(at, 0, st);
    h.setSelected(at);
  });
}
document.addEventListener("keydown", (e) => {
  if (e.key !== "Escape") return;
  if (drag) { endGesture(true); return; }
  if (connect && lastHooks) { connect = null; lastHooks.rerender(); }
});

function toolbar(h, steps, selected) {
  const typeSelect = html("select", { id: "b-diagram-type", "aria-label": h.msg("builder.step_type") },
    ...h.stepTypes().map((t) => (typeof t === "string" ? { name: t } : t)).map(({ name, title }) =>
      html("option", { value: name, text: title && h.pick ? h.pick(title) : name })));
  if (toolbar.lastType) typeSelect.value = toolbar.lastType;
  typeSelect.addEventListener("change", () => { toolbar.lastType = typeSelect.value; });
  const add = html("button", { type: "button", id: "b-diagram-add", text: h.msg("builder.add_after"),
    onclick: () => addAfter(h, typeSelect.value) });
  const del = html("button", { type: "button", id: "b-diagram-delete", text: h.msg("builder.delete_step"),
    disabled: selected < 0 || !steps[selected], onclick: () => deleteStep(h) });
  const source = connect && (connect.phase === "target" || connect.phase === "drop")
    ? steps[connect.from] : null;
  const dropTarget = connect && connect.phase === "drop" ? steps[connect.to] : null;
  const slotSelect = html("select", { id: "b-diagram-slot", "aria-label": h.msg("builder.slot") },
    ...(source ? slots(source) : []).map(([value, label]) => html("option", { value, text: label })));
  if (toolbar.lastSlot && [...slotSelect.options].some((o) => o.value === toolbar.lastSlot)) {
    slotSelect.value = toolbar.lastSlot;
  }
  slotSelect.addEventListener("change", () => { toolbar.lastSlot = slotSelect.value; });
  slotSelect.hidden = !source;
  const conn = html("button", { type: "button", id: "b-diagram-connect",
    class: connect ? "active" : null, "aria-pressed": connect ? "true" : "false",
    text: h.msg("builder.connect"), onclick: () => {
      connect = connect ? null : { phase: "source" };
      refused = "";
      toolbar.lastSlot = null;
      h.rerender();
    } });
  // after a wire was dropped on a box: choose the slot in #b-diagram-slot, then apply
  const apply = dropTarget ? html("button", { type: "button", id: "b-diagram-apply",
    text: h.msg("builder.connect_apply"), onclick: () => {
      const c = connect;
      connect = null;
      setConnection(h, c.from, slotSelect.value || "next", c.to);
    } }) : null;
  const hint = html("span", { id: "b-diagram-hint", role: "status",
    class: refused && !connect ? "fd-refused" : null, text: !connect ? refused
    : dropTarget ? h.msg("builder.connect_choose", { step: source ? stepLabel(types(), source, h.locale, h.lists()) : "", target: stepLabel(types(), dropTarget, h.locale, h.lists()) })
      : h.msg(connect.phase === "source" ? "builder.connect_source" : "builder.connect_target",
        { step: source ? stepLabel(types(), source, h.locale, h.lists()) : "" }) });
  return html("div", { class: "fd-tools" }, typeSelect, add, del, conn, slotSelect, apply, hint);
}

function clickBox(h, i) {
  if (connect && connect.phase === "drop") connect = null;
  if (connect && connect.phase === "source") {
    connect = { phase: "target", from: i };
    toolbar.lastSlot = null;
    h.select(i);
    return;
  }
  if (connect && connect.phase === "target") {
    const from = connect.from;
    const slotSelect = document.getElementById("b-diagram-slot");
    const slot = (slotSelect && slotSelect.value) || "next";
    connect = null;
    if (!slots(h.model().steps[from]).length) { h.rerender(); return; }
    setConnection(h, from, slot, i);
    return;
  }
  h.select(i);
}

function addAfter(h, type) {
  if (!type) return;
  h.commit(() => {
    const model = h.model();
    model.steps = Array.isArray(model.steps) ? model.steps : [];
    const at = h.selected();
    const step = h.newStep(type);
    const prev = model.steps[at];
    const index = prev ? at + 1 : model.steps.length;
    // keep an explicit "next" of the step it follows: prev → new → prev's old target
    if (prev && typeof prev.next === "string" && hasNext(typeOf(types(), prev))) {
      if (hasNext(typeOf(types(), step))) step.next = prev.next;
      prev.next = step.key;
    }
    model.steps.splice(index, 0, step);
    h.setSelected(index);
  });
}

function deleteStep(h) {
  const at = h.selected();
  if (at < 0 || !h.model().steps[at]) return;
  connect = null;
  h.commit(() => {
    h.model().steps.splice(at, 1);
    h.setSelected(-1);
  });
}

