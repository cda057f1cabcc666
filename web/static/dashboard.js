// Draws a dashboard's tiles with the locally served Vega bundle (no inline script: CSP).
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var node = document.getElementById("payload");
  if (!node || !window.vegaEmbed) { return; }
  var payload = JSON.parse(node.textContent);
  payload.tiles.forEach(function (tile, i) {
    window.vegaEmbed("#tile-" + i, tile.spec, {actions: false, defaultStyle: false, ast: true,
      tooltip: {disableDefaultStyle: true}}).catch(function (error) {
      if (window.console) { console.error("tile " + tile.chart + ": " + error); }
      document.getElementById("tile-" + i).textContent = "—";
    });
  });
  payload.tiles.forEach(function (tile, i) { dataTable(tile, i); });
  document.body.setAttribute("data-dashboard-ready", "1");
});

// A text alternative for every chart: its numbers in a table under it (screen readers, print).
// Column headings are the chart's own axis and legend titles where it has them.
function chartTitles(spec) {
  var titles = {};
  function walk(node) {
    if (!node || typeof node !== "object") { return; }
    if (node.encoding) {
      Object.keys(node.encoding).forEach(function (channel) {
        var e = node.encoding[channel];
        if (e && e.field && e.title && !titles[e.field]) { titles[e.field] = e.title; }
      });
    }
    (node.layer || []).forEach(walk);
  }
  walk(spec);
  return titles;
}
function dataTable(tile, i) {
  var holder = document.getElementById("tile-" + i);
  var data = tile.data;
  if (!holder || !data || !data.rows || !data.rows.length || tile.sample) { return; }
  var label = (document.querySelector(".tiles") || {}).dataset;
  var details = document.createElement("details");
  details.className = "chart-data";
  var summary = document.createElement("summary");
  summary.textContent = (label && label.tableLabel) || "";
  details.appendChild(summary);
  var table = document.createElement("table");
  table.className = "list";
  var caption = document.createElement("caption");
  caption.textContent = tile.title;
  table.appendChild(caption);
  var titles = chartTitles(tile.spec);
  var head = table.createTHead().insertRow();
  data.columns.forEach(function (column) {
    var th = document.createElement("th");
    th.scope = "col";
    th.textContent = titles[column] || column;
    head.appendChild(th);
  });
  var body = table.createTBody();
  data.rows.forEach(function (row) {
    var tr = body.insertRow();
    data.columns.forEach(function (column) {
      var value = row[column];
      tr.insertCell().textContent = value === null || value === undefined ? "—"
        : (typeof value === "number" ? (Math.round(value * 100) / 100).toLocaleString() : String(value));
    });
  });
  details.appendChild(table);
  holder.parentNode.appendChild(details);
}
window.addEventListener("beforeprint", function () {
  document.querySelectorAll("details.chart-data").forEach(function (d) { d.open = true; });
});
