// The field / operator / value picker that writes a condition (form show-when, rule "when").
// What the author picked but has not set yet survives re-renders (kept per ``id``).

import { el } from "../dom.js";
import { OPERATORS, condition } from "./text.js";

const picking = {};

function remember(id, ...inputs) {
  const saved = picking[id] || [];
  inputs.forEach((input, n) => {
    if (saved[n] !== undefined) input.value = saved[n];
    const keep = () => { picking[id] = inputs.map((x) => x.value); };
    input.addEventListener("change", keep);
    input.addEventListener("input", keep);
  });
}

// {pickField, op, value, set}: ``choices`` are [value, text]; ``attr`` names the inputs
// (data-logic / data-rule) with ``prefix``; ``apply(text)`` commits the written condition.
export function conditionPicker(b, { id, attr, prefix, choices, size, apply }) {
  const pickField = el("select", { [attr]: `${prefix}.field` },
    el("option", { value: "", text: b.msg("builder.pick_field") }),
    ...choices.map(([value, text]) => el("option", { value, text })));
  const op = el("select", { [attr]: `${prefix}.op` },
    ...OPERATORS.map((o) => el("option", { value: o, text: o })));
  const value = el("input", { type: "text", [attr]: `${prefix}.value`, size,
    placeholder: b.msg("builder.value") });
  remember(id, pickField, op, value);
  const set = el("button", { type: "button", [attr]: `${prefix}.set`, text: b.msg("builder.set_condition"),
    onclick: () => {
      delete picking[id];
      if (!pickField.value) return;
      apply(condition(pickField.value, op.value, value.value));
    } });
  return { pickField, op, value, set };
}
