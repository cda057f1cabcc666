// The dashboard designer: filters, drill-down levels, before/after split, and tiles (chart +
// width), each drawn by the report engine; tiles rearranged by dragging or Alt+↑/↓.

import { el } from "../dom.js";
import { register } from "../core/registry.js";
import { chartOptions, labelOf } from "../core/datasets.js";
import { setOrDelete } from "../core/text.js";

let options = { filters: [], drill_levels: [], charts: [] };
const tileImages = {};

async function tileImage(b, chart) {
  if (!(chart in tileImages)) {
    const { status: code, data } = await b.api("GET", `${b.base}/charts/${encodeURIComponent(chart)}/preview`);
    tileImages[chart] = code === 200 && data.image ? data.image : null;
  }
  return tileImages[chart];
}

function renderDashboard(b) {
  const model = b.model;
  const filters = new Set(model.filters || []), drill = model.drilldown || [];
  const toggle = (prop, value, on, order) => b.commit(() => {
    const now = (b.model[prop] || []).filter((v) => v !== value);
    if (on) now.push(value);
    if (order) now.sort((x, y) => order.indexOf(x) - order.indexOf(y));
    setOrDelete(b.model, prop, now.length ? now : undefined);
  });
  b.$("b-dash-filters").replaceChildren(...options.filters.map((f) => {
    const box = el("input", { type: "checkbox", "data-filter": f, checked: filters.has(f) });
    box.addEventListener("change", () => toggle("filters", f, box.checked, options.filters));
    return el("label", {}, box, b.msg(`builder.filter.${f}`));
  }));
  b.$("b-dash-drill").replaceChildren(...options.drill_levels.map((level) => {
    const box = el("input", { type: "checkbox", "data-drill": level, checked: drill.includes(level) });
    box.addEventListener("change", () => toggle("drilldown", level, box.checked, options.drill_levels));
    return el("label", {}, box, labelOf("drill_levels", level));
  }));
  const split = b.$("b-before-after");
  if (document.activeElement !== split) split.value = model.before_after || "";
  const errs = [...b.problemsAt(["filters"]), ...b.problemsAt(["drilldown"]), ...b.problemsAt(["before_after"])];
  b.$("b-dash-drill").parentElement.querySelectorAll(".b-err").forEach((n) => n.remove());
  b.$("b-dash-drill").after(...b.errorLines(errs));
}

function moveTile(b, from, to) {
  const tiles = b.model.tiles || [];
  if (to < 0 || to >= tiles.length || from === to) return;
  b.commit(() => { const [tile] = b.model.tiles.splice(from, 1); b.model.tiles.splice(to, 0, tile); });
  requestAnimationFrame(() => {
    const moved = b.$("b-tiles").children[to];
    if (moved) moved.focus();
  });
}

function renderTiles(b) {
  const tiles = b.model.tiles || [];
  b.$("b-tiles").replaceChildren(...tiles.map((tile, i) => {
    const chart = typeof tile.chart === "string" ? tile.chart : (tile.chart || {}).key;
    const width = el("input", { type: "number", min: 1, max: 12, value: tile.width ?? "",
      "data-tile": `${i}.width`, "aria-label": b.msg("builder.width") });
    width.addEventListener("change", () => b.commit(() => setOrDelete(b.model.tiles[i], "width",
      width.value === "" ? undefined : Number(width.value))));
    const img = el("img", { alt: labelOf("charts", chart || ""), "data-tile-image": chart });
    tileImage(b, chart).then((src) => {
      if (src) img.src = src;
      else img.replaceWith(el("p", { class: "b-empty", text: b.msg("builder.no_data") }));
    });
    const errs = b.problemsAt(["tiles", i]);
    const item = el("li", { "data-chart": chart, "data-index": i, class: errs.length ? "has-error" : "",
      draggable: "true", tabindex: "0" },
    el("div", { class: "b-head" }, el("span", { class: "b-name", text: labelOf("charts", chart || "") }), width,
      el("button", { type: "button", class: "b-up", text: "↑", "aria-label": b.msg("builder.move_up"),
        onclick: () => moveTile(b, i, i - 1) }),
      el("button", { type: "button", class: "b-down", text: "↓", "aria-label": b.msg("builder.move_down"),
        onclick: () => moveTile(b, i, i + 1) }),
      el("button", { type: "button", class: "b-remove", text: "×", "aria-label": b.msg("builder.remove"),
        onclick: () => b.commit(() => b.model.tiles.splice(i, 1)) })),
    img, ...b.errorLines(errs));
    item.style.gridColumn = `span ${Math.min(12, Math.max(1, Number(tile.width) || 6))}`;
    // rearrange: drag a tile onto another (it takes that place), or Alt+↑/↓ when focused
    item.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData("text/x-tile-index", String(i));
      e.dataTransfer.effectAllowed = "move";
    });
    item.addEventListener("dragover", (e) => { e.preventDefault(); item.classList.add("b-drop"); });
    item.addEventListener("dragleave", () => item.classList.remove("b-drop"));
    item.addEventListener("drop", (e) => {
      e.preventDefault();
      item.classList.remove("b-drop");
      const from = e.dataTransfer.getData("text/x-tile-index");
      if (from !== "") moveTile(b, Number(from), i);
    });
    item.addEventListener("keydown", (e) => {
      if (e.target !== item) return;
      if (e.altKey && e.key === "ArrowUp") { e.preventDefault(); moveTile(b, i, i - 1); }
      if (e.altKey && e.key === "ArrowDown") { e.preventDefault(); moveTile(b, i, i + 1); }
    });
    return item;
  }));
}

register("dashboard", {
  async start(b) {
    options = await chartOptions(b);
    b.$("b-tile-chart").replaceChildren(...options.charts.map((c) => el("option", { value: c, text: labelOf("charts", c) })));
    b.$("b-before-after").addEventListener("change", (e) => b.commit(() => setOrDelete(b.model, "before_after",
      e.target.value || undefined)));
    b.$("b-add-tile").addEventListener("click", () => b.commit(() => {
      b.model.tiles = b.model.tiles || [];
      b.model.tiles.push({ chart: b.$("b-tile-chart").value, width: 6 });
    }));
  },
  render(b) {
    renderDashboard(b);
    renderTiles(b);
  },
});
