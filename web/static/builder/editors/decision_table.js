// The decision table as a grid: one column per input and output (by its title), one row per
// rule. A column whose values have words (``labels``; yes/no) is a select of those words; any
// other cell is typed, with comparisons shown as signs ("≥ 70").

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { cellValue, setOrDelete } from "../core/text.js";
import { cellChoices, cellCode, cellWords, columnTitle } from "../core/words.js";

function cellInput(b, column, part, i, value, choices) {
  const prop = `${i}.${part}.${column.key}`;
  const commit = (v) => b.commit(() => {
    const target = b.model.rows[i][part] = b.model.rows[i][part] || {};
    setOrDelete(target, column.key, v);
  });
  if (choices) {
    const select = el("select", { "data-cell": prop }, el("option", { value: "", text: "" }),
      ...choices.map((c) => el("option", { value: String(c.value), text: c.text, selected: c.value === value })));
    if (value !== undefined && !choices.some((c) => c.value === value)) {
      select.append(el("option", { value: String(value), text: cellWords(value), selected: true }));
    }
    select.addEventListener("change", () => {
      const chosen = choices.find((c) => String(c.value) === select.value);
      if (select.value === "" || chosen) commit(chosen ? chosen.value : undefined);
    });
    return select;
  }
  const input = el("input", { type: "text", value: cellWords(value), "data-cell": prop, size: 10 });
  input.addEventListener("change", () => commit(cellValue(cellCode(input.value))));
  return input;
}

function renderGrid(b) {
  const model = b.model;
  const rows = model.rows || [];
  const inputs = model.inputs || [], outputs = model.outputs || [];
  const choices = (column, part) => cellChoices(column, rows, part, b.msg, b.locale);
  const grid = b.$("b-grid");
  grid.querySelector("thead").replaceChildren(el("tr", {}, el("th", { text: "#" }),
    ...inputs.map((c) => el("th", { class: "b-in", "data-column": c.key, text: columnTitle(c, b.locale) })),
    ...outputs.map((c) => el("th", { class: "b-out", "data-column": c.key, text: `→ ${columnTitle(c, b.locale)}` })),
    el("th")));
  const picks = { when: inputs.map((c) => choices(c, "when")), then: outputs.map((c) => choices(c, "then")) };
  grid.querySelector("tbody").replaceChildren(...rows.map((row, i) => {
    const cell = (part, column, n) => el("td", {},
      cellInput(b, column, part, i, (row[part] || {})[column.key], picks[part][n]));
    const errs = b.problemsAt(["rows", i]);
    return el("tr", { class: errs.length ? "has-error" : "", "data-row": i }, el("td", { text: String(i + 1) }),
      ...inputs.map((c, n) => cell("when", c, n)), ...outputs.map((c, n) => cell("then", c, n)),
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
