// The flow graph as the server's step types describe it (GET /api/v1/builder/step-types): each
// type's edges (option, many/item/fallback/mode/fork), modes, whether it pauses, the ``join``
// word of a forking type, its icon, a new step's defaults and which options move the timeline
// on. No rule about a step type is written here, so a plugin's type (phone_robot and its
// on_no_answer) is drawn, connected and checked like a built-in one. Pure (no DOM): unit-tested
// with node --test (web/frontend/test/graph.test.js).

import { days, freshKey } from "./core/text.js";

export function typeOf(types, st) {
  if (!st || typeof st !== "object") return null;
  return (types || []).find((t) => t.name === st.type) || null;
}

// The word a branch's ``next`` ends with (from a forking type); null while no type forks.
export function joinWord(types) {
  const t = (types || []).find((x) => x.join);
  return t ? t.join : null;
}

export function hasNext(type) {
  return !!type && type.edges.some((e) => e.option === "next");
}

// The step's mode: the first of the type's modes it carries, else the first mode.
export function modeOf(type, st) {
  const modes = (type && type.modes) || [];
  return modes.find((m) => st && m in st) ?? modes[0] ?? null;
}

// The edges of the step's current mode (decision: if/then/else or cases).
export function activeEdges(type, st) {
  if (!type) return [];
  const mode = modeOf(type, st);
  return type.edges.filter((e) => e.mode === null || e.mode === undefined || e.mode === mode);
}

// Every edge of a step: [slot, target key, label]; the same targets as flows/steps_graph.py.
// ``label(edge)`` gives an edge's words (the page's language).
export function edges(types, st, defaultNext, label = (e) => e.option) {
  const type = typeOf(types, st);
  const join = joinWord(types);
  const out = [];
  const add = (slot, target, text) => {
    if (typeof target === "string" && target !== join) out.push([slot, target, text]);
  };
  for (const e of activeEdges(type, st)) {
    const value = st[e.option];
    const text = label(e) || e.option;
    if (e.item) {
      (Array.isArray(value) ? value : []).forEach((c, i) =>
        add(`${e.option}.${i}.${e.item}`, c && c[e.item], `${text} ${i + 1}`));
    } else if (e.many) {
      (Array.isArray(value) ? value : []).forEach((b, i) => add(`${e.option}.${i}`, b, `${text} ${i + 1}`));
    } else {
      const plain = e.option === "next" && !type.forks;
      add(e.option, value ?? (e.fallback ? defaultNext : undefined), plain ? "" : text);
    }
  }
  return out;
}

// The slots a connection from ``st`` may set: [slot, label].
export function slots(types, st, label = (e) => e.option) {
  const out = [];
  for (const e of activeEdges(typeOf(types, st), st)) {
    const value = st[e.option];
    const text = label(e) || e.option;
    if (e.item) {
      (Array.isArray(value) ? value : []).forEach((_, i) => out.push([`${e.option}.${i}.${e.item}`, `${text} ${i + 1}`]));
    } else if (e.many) {
      (Array.isArray(value) ? value : []).forEach((_, i) => out.push([`${e.option}.${i}`, `${text} ${i + 1}`]));
      out.push([`${e.option}.add`, `+ ${text}`]);
    } else {
      out.push([e.option, text]);
    }
  }
  return out;
}

export function setSlot(st, slot, target) {
  const parts = slot.split(".");
  if (parts.length === 2 && parts[1] === "add") {
    st[parts[0]] = [...(Array.isArray(st[parts[0]]) ? st[parts[0]] : []), target];
  } else if (parts.length === 3) {
    st[parts[0]][Number(parts[1])][parts[2]] = target;
  } else if (parts.length === 2) {
    st[parts[0]][Number(parts[1])] = target;
  } else {
    st[slot] = target;
  }
}

// key → [[slot, target, label]] for every step (a missing ``next`` falls to the step after).
export function graphOf(types, steps, label) {
  return new Map(steps.map((st, i) =>
    [st.key, edges(types, st, i + 1 < steps.length ? steps[i + 1].key : null, label)]));
}

// Layers: the longest path from the first step (back edges of loops ignored); steps nothing
// reaches go on one extra layer at the bottom.
export function layers(steps, graph) {
  const index = new Map(steps.map((st, i) => [st.key, i]));
  const order = [], state = new Map(), back = new Set();
  const visit = (key) => {
    state.set(key, 1);
    for (const [, t] of graph.get(key) || []) {
      if (!index.has(t)) continue;
      if (state.get(t) === 1) back.add(`${key}>${t}`);
      else if (!state.has(t)) visit(t);
    }
    state.set(key, 2);
    order.push(key);
  };
  if (steps.length) visit(steps[0].key);
  const layer = new Map();
  if (steps.length) layer.set(steps[0].key, 0);
  for (const key of order.reverse()) {
    if (!layer.has(key)) continue;
    for (const [, t] of graph.get(key) || []) {
      if (!index.has(t) || back.has(`${key}>${t}`)) continue;
      layer.set(t, Math.max(layer.get(t) ?? 0, layer.get(key) + 1));
    }
  }
  const deepest = Math.max(-1, ...layer.values());
  for (const st of steps) if (!layer.has(st.key)) layer.set(st.key, deepest + 1);
  return { layer, back };
}

function reach(graph, start, forward) {
  const seen = new Set([start]);
  const todo = [start];
  while (todo.length) {
    const key = todo.pop();
    const next = forward ? (graph.get(key) || []).map(([, t]) => t)
      : [...graph.keys()].filter((k) => (graph.get(k) || []).some(([, t]) => t === key));
    for (const t of next) if (graph.has(t) && !seen.has(t)) { seen.add(t); todo.push(t); }
  }
  return seen;
}

// The graph check of one new connection, before it is made: the server refuses a loop in which
// no step pauses (flow.loop-without-wait, read from each type's ``pauses``). Setting ``slot`` of
// steps[from] to steps[to]'s key would close such a loop: its steps' indices (definition order),
// else null.
export function loopWithoutPause(types, steps, from, slot, to) {
  if (!steps[from] || !steps[to]) return null;
  const trial = steps.map((st) => JSON.parse(JSON.stringify(st)));
  setSlot(trial[from], slot, trial[to].key);
  const graph = graphOf(types, trial);
  const key = trial[from].key;
  const down = reach(graph, key, true), up = reach(graph, key, false);
  const loop = [...down].filter((k) => up.has(k));
  const closes = loop.length > 1 || (graph.get(key) || []).some(([, t]) => t === key);
  if (!closes) return null;
  const pausing = loop.some((k) => { const t = typeOf(types, trial.find((s) => s.key === k)); return !!(t && t.pauses); });
  if (pausing) return null;
  return trial.map((st, i) => (loop.includes(st.key) ? i : -1)).filter((i) => i >= 0);
}

// A renamed step: every target naming the old key follows (the diagram's arrows stay).
export function rename(steps, from, to, types) {
  for (const st of steps) {
    const type = typeOf(types, st);
    for (const e of (type && type.edges) || []) {
      const value = st[e.option];
      if (e.item && Array.isArray(value)) {
        for (const c of value) if (c && c[e.item] === from) c[e.item] = to;
      } else if (e.many && Array.isArray(value)) {
        st[e.option] = value.map((b) => (b === from ? to : b));
      } else if (value === from) {
        st[e.option] = to;
      }
    }
  }
}

// The options that hold step keys: single targets, lists of them, items of a list.
export function refsOf(type) {
  const single = new Set(), many = new Set(), items = new Map();
  for (const e of (type && type.edges) || []) {
    if (e.item) items.set(e.option, e.item);
    else if (e.many) many.add(e.option);
    else single.add(e.option);
  }
  return { single, many, items };
}

// A new step of ``type``: a fresh key and the type's own starting options.
export function newStep(types, steps, type) {
  const t = (types || []).find((x) => x.name === type);
  return { key: freshKey((steps || []).map((st) => st.key), type),
    type, ...JSON.parse(JSON.stringify((t && t.defaults) || {})) };
}

// The delay shown on a step's box: "+3d", "→ discharge +30d", "◷ form.submitted", else "".
export function delayText(type, st) {
  const d = type && type.delay;
  if (!d || !st) return "";
  if (d.duration && st[d.duration]) return `+${st[d.duration]}`;
  const until = d.until && st[d.until];
  if (until && typeof until === "object") return `→ ${until.base || ""} +${until.days ?? 0}d`;
  if (d.event && st[d.event]) return `◷ ${st[d.event]}`;
  return "";
}

// The schedule: steps that move the day on (a type's ``delay``) are not listed; every other
// step happens on the current day: [{key, type, day}].
export function timeline(types, steps) {
  let day = 0;
  const out = [];
  for (const st of steps) {
    const d = (typeOf(types, st) || {}).delay;
    if (d) {
      if (d.duration && st[d.duration]) day += days(st[d.duration]);
      else if (d.until && st[d.until] && typeof st[d.until] === "object") day = Number(st[d.until].days || 0);
      continue;
    }
    out.push({ key: st.key, type: st.type, day: Math.round(day * 10) / 10 });
  }
  return out;
}
