// Which input an option gets, decided from its JSON Schema alone (the server's answer: a field
// type's options, a score method's options, a step type's options with $refs inlined and marked
// "x-def", references marked "x-reference"). Pure (no DOM): unit-tested with node --test
// (web/frontend/test/schemaform.test.js); steppanel.js and core/schemainput.js build the inputs.

// The step panel's input for the option at ``path`` (["next"], ["branches", 0],
// ["cases", 1, "next"], …): "step" (a select of step keys), "definition", "text-pair", "enum",
// "boolean", "number", "ticks" (one tick per enum value), "list", "group" (an object's properties),
// "map" (name → expression rows) or "text".
export function stepInputKind(schema, path, refs) {
  if (schema["x-def"] === "text") return "text-pair";
  const last = path[path.length - 1];
  const isRef = (path.length === 1 && refs.single.has(last))
    || (path.length === 2 && typeof last === "number" && refs.many.has(path[0]))
    || (path.length === 3 && refs.items.get(path[0]) === last);
  if (isRef) return "step";
  if (schema["x-reference"] && typeof last === "string" && schema.type === "string") return "definition";
  if (Array.isArray(schema.enum)) return "enum";
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "array") return Array.isArray((schema.items || {}).enum) ? "ticks" : "list";
  if (schema.type === "object" && schema.properties) return "group";
  if (schema.type === "object" && schema.additionalProperties !== null
    && typeof schema.additionalProperties === "object") return "map";
  return "text";
}

// The form designer's input for a field type's (or score method's) option: "text-pair",
// "enum", "boolean", "number", "pairs" ("q1: 2, q2: 1"), "list" ("a, b") or "text".
export function optionInputKind(schema) {
  if (schema.$ref === "#/$defs/text") return "text-pair";
  if (schema.enum) return "enum";
  if (schema.type === "boolean") return "boolean";
  if (schema.type === "integer" || schema.type === "number") return "number";
  if (schema.type === "object") return "pairs";
  if (schema.type === "array") return "list";
  return "text";
}

// What the step panel shows for ``st``: its mode (the one present, else the author's pick, else
// the first), the options in order (a mode not chosen left out) and which are required (the
// chosen mode alone among the modes).
export function panelPlan(type, st, chosenMode) {
  const modes = (type && type.modes) || [];
  const present = modes.filter((m) => st && m in st);
  const mode = present[0] ?? chosenMode ?? modes[0];
  const required = new Set(((type && type.required) || []).filter((r) => !Array.isArray(r)));
  if (mode) required.add(mode);
  const options = Object.keys((type && type.options) || {})
    .filter((name) => !(modes.includes(name) && name !== mode));
  return { modes, mode, required, options };
}

// The required options ``st`` lacks: name → true (a list inside ``required`` is "one of").
export function missingOptions(type, st) {
  const out = new Set();
  for (const need of (type && type.required) || []) {
    const options = Array.isArray(need) ? need : [need];
    if (options.some((o) => st && o in st)) continue;
    for (const o of options) out.add(o);
  }
  return out;
}
