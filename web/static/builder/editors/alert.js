// The alert designer: a threshold on a dataset's measure per group, tried on current data.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { chartOptions, columnLabel, datasetColumns, labelOf } from "../core/datasets.js";
import { setOrDelete } from "../core/text.js";

let options = { datasets: [], dimensions: [], ops: [], severities: [] };

function renderAlert(b) {
  const model = b.model;
  const dataset = typeof model.dataset === "string" ? model.dataset : "";
  const columns = datasetColumns(b, dataset);
  const cond = model.condition || {};
  const fill = (select, values, current, blankFirst, words) => {
    select.replaceChildren(...(blankFirst ? [el("option", { value: "", text: "" })] : []),
      ...values.map((v) => el("option", { value: v, text: words(v), selected: v === current })));
    if (!values.includes(current) && current) select.append(el("option", { value: current, text: current, selected: true }));
  };
  fill(b.$("b-alert-dataset"), options.datasets, dataset, true, (v) => labelOf("datasets", v));
  fill(b.$("b-alert-measure"), columns.measures, model.measure || "", true, (v) => columnLabel(columns, v));
  fill(b.$("b-alert-group"), options.dimensions, model.group_by || "", true, (v) => labelOf("dimensions", v));
  fill(b.$("b-alert-op"), options.ops, cond.op || "", false, (v) => labelOf("ops", v));
  fill(b.$("b-alert-severity"), options.severities, model.severity || "", false, (v) => labelOf("severities", v));
  for (const [id, value] of [["b-alert-value", cond.value], ["b-alert-window", model.window_days],
    ["b-alert-pending", model.pending_minutes]]) {
    if (document.activeElement !== b.$(id)) b.$(id).value = value ?? "";
  }
  for (const [id, prefix] of [["b-alert-dataset", ["dataset"]], ["b-alert-measure", ["measure"]],
    ["b-alert-group", ["group_by"]], ["b-alert-value", ["condition"]], ["b-alert-window", ["window_days"]],
    ["b-alert-pending", ["pending_minutes"]], ["b-alert-severity", ["severity"]]]) {
    const label = b.$(id).closest("label, fieldset");
    label.querySelectorAll(".b-err").forEach((n) => n.remove());
    const errs = b.problemsAt(prefix);
    label.classList.toggle("has-error", errs.length > 0);
    label.append(...b.errorLines(errs));
  }
}

function wireAlert(b) {
  const number = (v) => (v === "" ? undefined : Number(v));
  const on = (id, apply) => b.$(id).addEventListener("change", (e) => b.commit(() => apply(e.target.value)));
  on("b-alert-dataset", (v) => { b.model.dataset = v; });
  on("b-alert-measure", (v) => { b.model.measure = v; });
  on("b-alert-group", (v) => { b.model.group_by = v; });
  on("b-alert-op", (v) => { b.model.condition = { ...(b.model.condition || {}), op: v }; });
  on("b-alert-value", (v) => { b.model.condition = { ...(b.model.condition || {}), value: number(v) }; });
  on("b-alert-window", (v) => setOrDelete(b.model, "window_days", number(v)));
  on("b-alert-pending", (v) => setOrDelete(b.model, "pending_minutes", number(v)));
  on("b-alert-severity", (v) => setOrDelete(b.model, "severity", v || undefined));
  b.$("b-alert-try").addEventListener("click", async () => {
    await b.save();
    const { status: code, data } = await b.api("POST", `${b.base}/alerts/${b.key}/try`, { body: b.model });
    if (code !== 200) { b.$("b-alert-summary").textContent = data.detail || String(code); return; }
    b.$("b-alert-summary").textContent = b.msg("builder.alert_summary", { from: data.date_from,
      to: data.date_to, n: data.breaching, total: data.rows.length, op: data.op, threshold: data.threshold });
    b.$("b-alert-result").querySelector("tbody").replaceChildren(...data.rows.map((r) => el("tr", {
      "data-group": r.group, class: r.breach ? "b-try-hit" : "b-try-miss" },
    el("td", { text: r.group }), el("td", { text: r.value === null ? b.msg("builder.too_few")
      : String(Math.round(r.value * 100) / 100) }),
    el("td", { text: r.breach ? b.msg("builder.breach") : "" }))));
  });
}

register("alert", {
  async start(b) {
    options = await chartOptions(b);
    wireAlert(b);
  },
  render: renderAlert,
});
