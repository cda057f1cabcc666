// The decision table as a grid: one column per input and output, one row per rule.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { cellValue, setOrDelete } from "../core/text.js";

function renderGrid(b) {
  const model = b.model;
  const inputs = (model.inputs || []).map((x) => x.key), outputs = (model.outputs || []).map((x) => x.key);
  const grid = b.$("b-grid");
  grid.querySelector("thead").replaceChildren(el("tr", {}, el("th", { text: "#" }),
    ...inputs.map((k) => el("th", { class: "b-in", text: k })),
    ...outputs.map((k) => el("th", { class: "b-out", text: `→ ${k}` })), el("th")));
  grid.querySelector("tbody").replaceChildren(...(model.rows || []).map((row, i) => {
    const cell = (part, k) => {
      const value = (row[part] || {})[k];
      const input = el("input", { type: "text", value: value === undefined ? "" : String(value),
        "data-cell": `${i}.${part}.${k}`, size: 10 });
      input.addEventListener("change", () => b.commit(() => {
        const target = b.model.rows[i][part] = b.model.rows[i][part] || {};
        setOrDelete(target, k, cellValue(input.value));
      }));
      return el("td", {}, input);
    };
    const errs = b.problemsAt(["rows", i]);
    return el("tr", { class: errs.length ? "has-error" : "", "data-row": i }, el("td", { text: String(i + 1) }),
      ...inputs.map((k) => cell("when", k)), ...outputs.map((k) => cell("then", k)),
      el("td", {}, el("button", { type: "button", text: "×", "aria-label": b.msg("builder.remove"),
        onclick: () => b.commit(() => b.model.rows.splice(i, 1)) }),
      ...b.errorLines(errs)));
  }));
}

register("decision_table", {
  async start(b) {
    b.$("b-add-row").addEventListener("click", () => b.commit(() => {
      b.model.rows = b.model.rows || [];
      b.model.rows.push({ when: {}, then: {} });
    }));
  },
  render: renderGrid,
});
