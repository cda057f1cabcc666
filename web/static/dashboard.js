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
  document.body.setAttribute("data-dashboard-ready", "1");
});
