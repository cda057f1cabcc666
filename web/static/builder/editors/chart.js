// The chart (dashboard tile) designer: dataset, chart type (each type's panel from the server:
// its label and the channels it reads), encodings, threshold, and a preview on real data.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { chartOptions, datasetColumns } from "../core/datasets.js";
import { setOrDelete } from "../core/text.js";

let options = { datasets: [], types: [], channels: [], type_panels: [] };

function renderChart(b) {
  const model = b.model;
  const ds = b.$("b-chart-dataset"), type = b.$("b-chart-type");
  const dataset = typeof model.dataset === "string" ? model.dataset : "";
  ds.replaceChildren(el("option", { value: "", text: "" }), ...options.datasets.map((d) =>
    el("option", { value: d, text: d, selected: d === dataset })));
  const panels = options.type_panels || [];
  const panel = panels.find((p) => p.name === model.type);
  type.replaceChildren(el("option", { value: "", text: "" }), ...panels.map((p) =>
    el("option", { value: p.name, text: p.title, selected: p.name === model.type })));
  b.$("b-chart-threshold").value = model.threshold ?? "";
  const enc = model.encoding || {};
  const columns = datasetColumns(b, dataset);
  const choices = el("datalist", { id: "b-chart-columns" },
    ...[...columns.dimensions, ...columns.measures].map((c) => el("option", { value: c })));
  const channels = panel ? panel.channels : options.channels;
  b.$("b-chart-encoding").replaceChildren(choices, ...channels.map((ch) => {
    const input = el("input", { type: "text", value: enc[ch] || "", "data-channel": ch,
      list: "b-chart-columns" });
    input.addEventListener("change", () => b.commit(() => {
      b.model.encoding = b.model.encoding || {};
      setOrDelete(b.model.encoding, ch, input.value.trim() || undefined);
    }));
    return el("label", { text: ch }, input);
  }));
}

async function previewChart(b) {
  if (!b.model) return;
  const { status: code, data } = await b.api("POST", `${b.base}/preview/chart/${b.key}`, { body: b.model });
  if (code !== 200) return;
  const image = b.$("b-chart-image");
  image.hidden = !data.image;
  if (data.image) image.src = data.image; else image.removeAttribute("src");
  b.$("b-chart-note").textContent = data.image ? b.msg("builder.real_data", { n: data.rows }) : data.message;
}

register("chart", {
  async start(b) {
    options = await chartOptions(b);
    b.$("b-chart-dataset").addEventListener("change", (e) => b.commit(() => { b.model.dataset = e.target.value; }));
    b.$("b-chart-type").addEventListener("change", (e) => b.commit(() => { b.model.type = e.target.value; }));
    b.$("b-chart-threshold").addEventListener("change", (e) => b.commit(() => setOrDelete(b.model, "threshold",
      e.target.value === "" ? undefined : Number(e.target.value))));
  },
  render: renderChart,
  ready: previewChart,
  saved: previewChart,
});
