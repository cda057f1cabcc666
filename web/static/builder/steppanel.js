// The flow designer's property panel (vanilla JS, no dependencies; CSP: no inline scripts/styles).
// editors/flow.js calls render(panel, hooks) (this ES module's export) whenever a flow draft
// re-renders. The panel is generated from data, not from code per step type: GET
// /api/v1/builder/step-types gives every registered step type's options (property name → JSON
// Schema the StepType declares, $refs inlined and marked "x-def", references marked
// "x-reference"), what it requires, its modes, edges and labels; a plugin's step type gets its
// panel the same way. Every change goes through hooks.commit (undo,
// draft save, live validation); problems under $.steps[i].<prop> are shown at that input.
// Which options name steps (and how) comes from each step type's declared edges, which option
// names another definition from its schema's "x-reference", which input an option gets from its
// schema (schemaform.js): nothing here is per step type.

import { el } from "./dom.js";
import { joinWord, refsOf, rename, typeOf } from "./graph.js";
import { missingOptions, panelPlan, stepInputKind } from "./schemaform.js";
import { advanced } from "./core/advanced.js";
import { durationParts, durationUnits, durationValue, enumLabel, isAdvancedOption, stepLabel } from "./core/words.js";

const modeChoice = new Map();  // step index → the mode the author picked before filling it in

const isEmpty = (v) => v === undefined || v === null || v === ""
  || (typeof v === "number" && Number.isNaN(v));
const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

export function getAt(root, path) {
  let node = root;
  for (const part of path) {
    if (node === null || typeof node !== "object") return undefined;
    node = node[part];
  }
  return node;
}

// Set (or, for an empty value, delete) root[path…]; objects emptied by a delete are removed.
export function setAt(root, path, value) {
  const chain = [root];
  let node = root;
  for (let k = 0; k < path.length - 1; k += 1) {
    if (node[path[k]] === null || typeof node[path[k]] !== "object") {
      node[path[k]] = typeof path[k + 1] === "number" ? [] : {};
    }
    node = node[path[k]];
    chain.push(node);
  }
  const last = path[path.length - 1];
  if (Array.isArray(node)) { node[last] = isEmpty(value) ? "" : value; return; }
  if (isEmpty(value)) delete node[last];
  else node[last] = value;
  for (let k = path.length - 2; k >= 0; k -= 1) {
    const child = chain[k + 1];
    if (Array.isArray(chain[k]) || !isObject(child) || Object.keys(child).length) break;
    delete chain[k][path[k]];
  }
}

export function render(panel, h) {
  const model = h.model();
  const steps = Array.isArray(model.steps) ? model.steps : [];
  const i = h.selected();
  const st = steps[i];
  const focus = remember(panel);
  if (!st || typeof st !== "object") { panel.replaceChildren(); return; }
  const type = h.stepTypes().find((t) => t.name === st.type);
  const label = (name) => {
    const own = type && type.labels && type.labels[name] && type.labels[name].label;
    if (own) return h.pick(own);
    const key = `builder.prop.${name}`;
    const text = h.msg(key);
    return text === key ? name : text;
  };
  // flow.missing-field is located at the step's type; show it at each property that is missing
  const missing = new Map();
  const typeProblems = h.problemsAt(["steps", i, "type"]);
  for (const o of missingOptions(type, st)) {
    missing.set(o, typeProblems.filter((p) => p.code === "flow.missing-field"
      && String(p.message).includes(`'${o}'`)));
  }
  // a type with alternative modes (wait: duration, until or event) shows a mode picker and
  // only the chosen mode's input, which alone is marked required
  const plan = panelPlan(type, st, modeChoice.get(i));
  const { modes, mode } = plan;
  const types = h.stepTypes();
  const ctx = { h, i, steps, label, missing, requiredNames: plan.required, refs: refsOf(type),
    join: joinWord(types), forks: steps.some((s) => !!(typeOf(types, s) || {}).forks),
    hidden: [] };  // inputs for the advanced view: expressions, codes, name → expression maps

  const key = el("input", { type: "text", value: st.key, "data-prop": "key", required: true });
  key.addEventListener("change", () => {
    const value = key.value.trim();
    if (!value || value === st.key) return;
    h.commit(() => {
      const all = h.model().steps;
      rename(all, all[i].key, value, h.stepTypes());
      all[i].key = value;
    });
  });
  const head = el("p", { class: "b-step-head", "data-prop": "type" },
    el("strong", { text: type ? h.pick(type.title) : h.msg("builder.unknown_step_type", { type: "" }) }),
    ...typeProblems.map((p) => el("span", { class: "b-err", title: p.code, "data-code": p.code, text: ` ${p.message}` })));
  const parts = [head];
  ctx.hidden.push(withProblems(ctx, el("label", { text: h.msg("builder.key") }, key), key, ["key"]));
  if (modes.length) {
    const picker = el("select", { "data-prop": "mode-picker" },
      ...modes.map((m) => el("option", { value: m, text: label(m), selected: m === mode })));
    picker.addEventListener("change", () => {
      modeChoice.set(i, picker.value);
      h.commit(() => { for (const m of modes) if (m !== picker.value) delete h.model().steps[i][m]; });
    });
    parts.push(el("label", { class: "b-mode", text: h.msg("builder.step_mode") }, picker));
  }
  for (const name of plan.options) {
    const input = field(ctx, [name], type.options[name] || {});
    if (input) parts.push(input);
  }
  if (!type) parts.push(el("p", { class: "b-err", text: h.msg("builder.unknown_step_type", { type: st.type }) }));

  // the advanced view: every property as JSON (anything the generated inputs do not cover)
  const rest = Object.fromEntries(Object.entries(st).filter(([k]) => k !== "key" && k !== "type"));
  const json = el("textarea", { rows: 8, "data-prop": "json", spellcheck: "false" });
  json.value = JSON.stringify(rest, null, 2);
  json.addEventListener("change", () => {
    let parsed;
    try { parsed = JSON.parse(json.value); } catch (e) { h.status(String(e)); return; }
    if (!isObject(parsed)) { h.status(h.msg("builder.json_object")); return; }
    h.commit(() => { h.model().steps[i] = { key: st.key, type: st.type, ...parsed }; });
  });
  ctx.hidden.push(el("label", { text: h.msg("builder.step_json") }, json));
  // keys, expressions, codes and the JSON: in the closed "Advanced" disclosure
  parts.push(advanced({ msg: h.msg }, `step:${st.key}`, h.msg("builder.step_advanced"), ...ctx.hidden));
  panel.replaceChildren(...parts);
  if (h.complete) panel.querySelectorAll("input.b-expression").forEach((input) => h.complete(input));
  restore(panel, focus);
}

// the focused input survives a re-render that happens while the author is typing in it
function remember(panel) {
  const a = document.activeElement;
  if (!a || !panel.contains(a) || !a.dataset || !a.dataset.prop) return null;
  return { prop: a.dataset.prop, value: a.value, tag: a.tagName, type: a.type };
}
function restore(panel, f) {
  if (!f || f.type === "checkbox" || f.tag === "SELECT") return;
  const node = [...panel.querySelectorAll("[data-prop]")].find((n) => n.dataset.prop === f.prop);
  if (!node || node.value === f.value) return;
  node.value = f.value;
  node.focus();
}

const pathText = (path) => path.join(".");

function problemsOf(ctx, path, exact) {
  const at = ["steps", ctx.i, ...path];
  const found = ctx.h.problemsAt(at).filter((p) => !exact || (p.path_parts || []).length === at.length);
  return path.length === 1 ? [...found, ...(ctx.missing.get(path[0]) || [])] : found;
}

// the problems at ``path`` shown inside ``wrapper`` (after the input), the input marked
function withProblems(ctx, wrapper, input, path, exact = false) {
  const found = problemsOf(ctx, path, exact);
  if (found.length && input) {
    input.classList.add("has-error");
    input.setAttribute("aria-invalid", "true");
  }
  if (found.length) wrapper.classList.add("has-error");
  for (const p of found) {
    wrapper.append(el("span", { class: "b-err", "data-problem-for": pathText(path),
      "data-code": p.code, title: p.code, text: p.message }));
  }
  return wrapper;
}

function setter(ctx, path) {
  return (value) => ctx.h.commit(() => setAt(ctx.h.model().steps[ctx.i], path, value));
}

function caption(ctx, path, schema) {
  const name = [...path].reverse().find((p) => typeof p === "string");
  let text = ctx.label(name);
  if (path.length === 1 && ctx.requiredNames.has(name)) text += " *";
  const type = ctx.h.stepTypes().find((t) => t.name === ctx.steps[ctx.i].type);
  const help = path.length === 1 && type && type.labels && type.labels[name] && type.labels[name].help;
  return { text, title: help ? ctx.h.pick(help) : schema.description || null };
}

function field(ctx, path, schema) {
  const st = ctx.h.model().steps[ctx.i];
  const value = getAt(st, path);
  const name = [...path].reverse().find((p) => typeof p === "string");
  const set = setter(ctx, path);
  const prop = pathText(path);
  const cap = caption(ctx, path, schema);
  const leaf = (input) => withProblems(ctx, el("label", { text: cap.text, title: cap.title }, input), input, path);

  const kind = stepInputKind(schema, path, ctx.refs);
  const mustGive = path.length === 1 && ctx.requiredNames.has(name) && schema["x-def"] !== "expression";
  if (isAdvancedOption(schema, kind) && !mustGive) {
    // an expression or a code (one the step does not require): under "Advanced"
    const input = kind === "map" ? mapField(ctx, path, value, cap) : leaf(textInput(ctx, prop, value, set, schema));
    ctx.hidden.push(input);
    return null;
  }
  if (schema["x-def"] === "duration") return leaf(durationInput(ctx, prop, value, set));
  if (kind === "text-pair") return textPair(ctx, path, value, cap);
  if (kind === "step") return leaf(stepSelect(ctx, prop, value, set, name === "next"));
  if (kind === "definition") return leaf(definitionSelect(ctx, schema["x-reference"], prop, value, set));
  if (kind === "enum") {
    const select = el("select", { "data-prop": prop }, el("option", { value: "", text: "" }),
      ...schema.enum.map((v) => el("option", { value: v, text: enumLabel(schema, v, ctx.h.locale), selected: value === v })));
    if (value !== undefined && !schema.enum.includes(value)) {
      select.append(el("option", { value: String(value), text: String(value), selected: true }));
    }
    select.addEventListener("change", () => set(select.value || undefined));
    return leaf(select);
  }
  if (kind === "boolean") {
    const box = el("input", { type: "checkbox", "data-prop": prop, checked: value === true });
    box.addEventListener("change", () => set(box.checked || undefined));
    return withProblems(ctx, el("label", { class: "b-check", title: cap.title }, box, cap.text), box, path);
  }
  if (kind === "number") {
    const input = el("input", { type: "number", "data-prop": prop, value: value ?? "",
      min: schema.minimum, max: schema.maximum, step: schema.type === "integer" ? 1 : "any" });
    input.addEventListener("change", () => set(input.value === "" ? undefined : Number(input.value)));
    return leaf(input);
  }
  if (kind === "ticks" || kind === "list") return arrayField(ctx, path, schema, value, cap);
  if (kind === "group") {
    const box = el("fieldset", { "data-prop": prop }, el("legend", { text: cap.text, title: cap.title }),
      ...Object.entries(schema.properties).map(([sub, s]) => field(ctx, [...path, sub], s || {})).filter(Boolean));
    return withProblems(ctx, box, null, path, true);
  }
  if (kind === "map") return mapField(ctx, path, value, cap);
  return leaf(textInput(ctx, prop, value, set, schema));
}

// text with the schema's pattern: a value that does not match is flagged here and not saved
function textInput(ctx, prop, value, set, schema) {
  const duration = schema["x-def"] === "duration";
  const input = el("input", { type: "text", "data-prop": prop,
    value: value === undefined || value === null ? "" : String(value),
    pattern: schema.pattern ? schema.pattern.replace(/^\^/, "").replace(/\$$/, "") : null,
    placeholder: duration ? "3d" : null,
    class: schema["x-def"] === "expression" ? "b-expression" : null });
  const pattern = schema.pattern ? new RegExp(schema.pattern, "u") : null;
  const note = el("span", { class: "b-invalid-note", role: "status", "data-invalid-for": prop });
  const valid = () => !pattern || input.value === "" || pattern.test(input.value.trim());
  const check = () => {
    const ok = valid();
    input.classList.toggle("b-invalid", !ok);
    input.setAttribute("aria-invalid", ok ? "false" : "true");
    note.textContent = ok ? "" : ctx.h.msg(duration ? "builder.bad_duration" : "builder.bad_pattern",
      { pattern: schema.pattern });
  };
  input.addEventListener("input", check);
  input.addEventListener("change", () => {
    check();
    if (!valid()) return;
    set(input.value.trim() === "" ? undefined : input.value.trim());
  });
  return pattern ? el("span", { class: "b-input" }, input, note) : input;
}

function stepSelect(ctx, prop, value, set, mayJoin) {
  const keys = ctx.steps.map((s) => s && s.key).filter((k) => typeof k === "string");
  const options = [el("option", { value: "", text: ctx.h.msg("builder.no_target") })];
  ctx.steps.forEach((s, n) => {
    if (!s || typeof s.key !== "string") return;
    options.push(el("option", { value: s.key, selected: value === s.key,
      text: ctx.h.msg("builder.step_n", { n: n + 1, title: stepLabel(ctx.h.stepTypes(), s, ctx.h.locale, ctx.h.lists()) }) }));
  });
  if (mayJoin && ctx.forks && ctx.join) {
    options.push(el("option", { value: ctx.join, text: ctx.h.msg("builder.join"), selected: value === ctx.join }));
  }
  if (typeof value === "string" && value && value !== ctx.join && !keys.includes(value)) {
    options.push(el("option", { value, text: value, selected: true }));
  }
  const select = el("select", { "data-prop": prop }, ...options);
  select.addEventListener("change", () => set(select.value || undefined));
  return select;
}

function definitionSelect(ctx, kind, prop, value, set) {
  const rows = (ctx.h.lists()[kind]) || [];
  const select = el("select", { "data-prop": prop, "data-kind": kind },
    el("option", { value: "", text: "" }),
    ...rows.map((r) => el("option", { value: r.key, selected: value === r.key,
      title: r.key, text: ctx.h.pick(r.title) || r.key })));
  if (typeof value === "string" && value && !rows.some((r) => r.key === value)) {
    select.append(el("option", { value, text: value, selected: true }));
  }
  select.addEventListener("change", () => set(select.value || undefined));
  return select;
}

function textPair(ctx, path, value, cap) {
  const prop = pathText(path);
  const obj = isObject(value) ? value : {};
  const zh = el("input", { type: "text", "data-prop": `${prop}.zh-CN`, value: obj["zh-CN"] || "" });
  const en = el("input", { type: "text", "data-prop": `${prop}.en`, value: obj.en || "" });
  const apply = () => setter(ctx, path)(zh.value.trim() || en.value.trim()
    ? { "zh-CN": zh.value.trim() || en.value.trim(), en: en.value.trim() || zh.value.trim() } : undefined);
  zh.addEventListener("change", apply);
  en.addEventListener("change", apply);
  const box = el("fieldset", { "data-prop": prop }, el("legend", { text: cap.text, title: cap.title }),
    el("label", { text: ctx.h.msg("builder.label_zh") }, zh),
    el("label", { text: ctx.h.msg("builder.label_en") }, en));
  return withProblems(ctx, box, null, path);
}

function rowButtons(ctx, prop, onRemove) {
  return el("button", { type: "button", class: "b-remove", "data-prop": `${prop}.remove`,
    "aria-label": ctx.h.msg("builder.remove"), text: "×", onclick: onRemove });
}

function arrayField(ctx, path, schema, value, cap) {
  const prop = pathText(path);
  const items = Array.isArray(value) ? value : [];
  const itemSchema = schema.items || {};
  const commitList = (mutate) => ctx.h.commit(() => {
    const st = ctx.h.model().steps[ctx.i];
    const list = Array.isArray(getAt(st, path)) ? getAt(st, path) : [];
    mutate(list);
    setAt(st, path, list.length ? list : undefined);
  });
  const box = el("fieldset", { "data-prop": prop }, el("legend", { text: cap.text, title: cap.title }));
  if (Array.isArray(itemSchema.enum)) {
    // a set of names from a registry (channels): one checkbox each, in the registry's order
    for (const name of itemSchema.enum) {
      const tick = el("input", { type: "checkbox", "data-prop": `${prop}.${name}`, value: name,
        checked: items.includes(name) });
      tick.addEventListener("change", () => commitList((list) => {
        const chosen = new Set(list);
        if (tick.checked) chosen.add(name); else chosen.delete(name);
        list.splice(0, list.length, ...itemSchema.enum.filter((n) => chosen.has(n)),
          ...[...chosen].filter((n) => !itemSchema.enum.includes(n)));
      }));
      box.append(el("label", { class: "b-check" }, tick, enumLabel(itemSchema, name, ctx.h.locale)));
    }
    return withProblems(ctx, box, null, path);
  }
  items.forEach((_, j) => {
    const row = el("div", { class: "b-row", "data-row": `${prop}.${j}` },
      field(ctx, [...path, j], itemSchema) || "",
      rowButtons(ctx, `${prop}.${j}`, () => commitList((list) => list.splice(j, 1))));
    box.append(row);
  });
  const isBranches = path.length === 1 && ctx.refs.many.has(path[0]);
  box.append(el("button", { type: "button", class: "b-add", "data-prop": `${prop}.add`,
    text: ctx.h.msg("builder.add_item"), onclick: () => commitList((list) => {
      if (isBranches) {
        const own = ctx.steps[ctx.i] && ctx.steps[ctx.i].key;
        const other = ctx.steps.find((s) => s && s.key !== own && !list.includes(s.key));
        list.push(other ? other.key : "");
      } else if (itemSchema.type === "object") {
        list.push(Object.fromEntries((itemSchema.required || []).map((k) => [k, ""])));
      } else {
        list.push("");
      }
    }) }));
  return withProblems(ctx, box, null, path, true);
}

// name → expression maps (values, set, body): rows of name + expression
function mapField(ctx, path, value, cap) {
  const prop = pathText(path);
  const entries = Object.entries(isObject(value) ? value : {});
  const commitMap = (mutate) => ctx.h.commit(() => {
    const st = ctx.h.model().steps[ctx.i];
    const list = Object.entries(isObject(getAt(st, path)) ? getAt(st, path) : {});
    mutate(list);
    setAt(st, path, list.length ? Object.fromEntries(list) : undefined);
  });
  const box = el("fieldset", { "data-prop": prop }, el("legend", { text: cap.text, title: cap.title }));
  entries.forEach(([name, expression], j) => {
    const nameInput = el("input", { type: "text", "data-prop": `${prop}.${j}.name`, value: name,
      "aria-label": ctx.h.msg("builder.prop.name") });
    nameInput.addEventListener("change", () => {
      const renamed = nameInput.value.trim();
      if (!renamed || renamed === name) return;
      commitMap((list) => { list[j] = [renamed, list[j][1]]; });
    });
    const exprInput = el("input", { type: "text", class: "b-expression", "data-prop": `${prop}.${j}.expression`,
      value: expression === undefined || expression === null ? "" : String(expression),
      "aria-label": ctx.h.msg("builder.prop.expression") });
    exprInput.addEventListener("change", () => commitMap((list) => { list[j] = [list[j][0], exprInput.value]; }));
    const row = el("div", { class: "b-row", "data-row": `${prop}.${j}` }, nameInput, el("span", { text: "=" }),
      exprInput, rowButtons(ctx, `${prop}.${j}`, () => commitMap((list) => list.splice(j, 1))));
    box.append(withProblems(ctx, row, exprInput, [...path, name]));
  });
  box.append(el("button", { type: "button", class: "b-add", "data-prop": `${prop}.add`,
    text: ctx.h.msg("builder.add_item"), onclick: () => commitMap((list) => {
      const names = new Set(list.map(([k]) => k));
      let n = 1;
      while (names.has(`value_${n}`)) n += 1;
      list.push([`value_${n}`, ""]);
    }) }));
  return withProblems(ctx, box, null, path, true);
}


// a duration as a number and a unit (分钟, 小时, 天, 周): "2 天" writes "2d"
function durationInput(ctx, prop, value, set) {
  const { amount, unit } = durationParts(value);
  const number = el("input", { type: "number", min: 0, step: 1, "data-prop": prop, value: amount ?? "",
    "aria-label": ctx.h.msg("builder.duration_amount") });
  const units = el("select", { "data-prop": `${prop}.unit`, "aria-label": ctx.h.msg("builder.duration_unit") },
    ...durationUnits().map((u) => el("option", { value: u, text: ctx.h.msg(`builder.unit.${u}`), selected: u === unit })));
  if (value !== undefined && value !== null && value !== "" && amount === null) {
    number.value = "";
    number.setAttribute("aria-invalid", "true");
  }
  const apply = () => set(durationValue(number.value, units.value));
  number.addEventListener("change", apply);
  units.addEventListener("change", () => { if (number.value !== "") apply(); });
  return el("span", { class: "b-input b-duration" }, number, units);
}
