// The chart (dashboard tile) designer: dataset, chart type (each type's panel from the server:
// its label and the channels it reads), encodings, threshold, and a preview on real data.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { chartOptions, columnLabel, datasetColumns, labelOf } from "../core/datasets.js";
import { setOrDelete } from "../core/text.js";

let options = { datasets: [], types: [], channels: [], type_panels: [] };

function renderChart(b) {
  const model = b.model;
  const ds = b.$("b-chart-dataset"), type = b.$("b-chart-type");
  const dataset = typeof model.dataset === "string" ? model.dataset : "";
  ds.replaceChildren(el("option", { value: "", text: "" }), ...options.datasets.map((d) =>
    el("option", { value: d, text: labelOf("datasets", d), selected: d === dataset })));
  const panels = options.type_panels || [];
  const panel = panels.find((p) => p.name === model.type);
  type.replaceChildren(el("option", { value: "", text: "" }), ...panels.map((p) =>
    el("option", { value: p.name, text: p.title, selected: p.name === model.type })));
  b.$("b-chart-threshold").value = model.threshold ?? "";
  const enc = model.encoding || {};
  const columns = datasetColumns(b, dataset);
  const names = [...columns.dimensions, ...columns.measures];
  const channels = panel ? panel.channels : options.channels;
  // each channel picks one of the dataset's columns, by its title (科室, 净推荐值)
  b.$("b-chart-encoding").replaceChildren(...channels.map((ch) => {
    const current = enc[ch] || "";
    const select = el("select", { "data-channel": ch }, el("option", { value: "", text: "" }),
      ...names.map((c) => el("option", { value: c, text: columnLabel(columns, c), selected: c === current })));
    if (current && !names.includes(current)) select.append(el("option", { value: current, text: current, selected: true }));
    select.addEventListener("change", () => b.commit(() => {
      b.model.encoding = b.model.encoding || {};
      setOrDelete(b.model.encoding, ch, select.value || undefined);
    }));
    return el("label", { text: labelOf("channels", ch) }, select);
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
