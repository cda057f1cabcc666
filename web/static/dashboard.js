// Draws a dashboard's tiles with the locally served Vega bundle (no inline script: CSP).
// Clicking a mark either goes down the dashboard's declared drill levels (a panel under the
// tile with a breadcrumb back) or, past the last level / for other dimensions, filters the
// whole dashboard by the clicked value (?department= or ?f.<dimension>=).
"use strict";
(function () {
  var OPTIONS = {actions: false, defaultStyle: false, ast: true, renderer: "svg",
    tooltip: {disableDefaultStyle: true}};

  // An empty mark container (a layer with nothing to draw, e.g. one side of before/after) says
  // nothing to a screen reader: hide it rather than announce an unnamed graphic.
  function hideEmptyMarks(target) {
    var node = document.querySelector(target);
    if (!node) { return; }
    node.querySelectorAll("g.role-mark").forEach(function (group) {
      if (!group.children.length) { group.setAttribute("aria-hidden", "true"); }
    });
  }

  function embed(target, spec, onClick) {
    return window.vegaEmbed(target, spec, OPTIONS).then(function (result) {
      hideEmptyMarks(target);
      if (onClick) {
        result.view.addEventListener("click", function (event, item) {
          if (item && item.datum) { onClick(item.datum); }
        });
      }
      return result;
    }).catch(function (error) {
      if (window.console) { console.error(target + ": " + error); }
      var node = document.querySelector(target);
      if (node) { node.textContent = "—"; }
    });
  }

  function keyOf(datum, dimension) {
    var key = datum[dimension + "__key"];
    return key === undefined || key === null ? "" : String(key);
  }

  function currentParams() {
    var params = new URLSearchParams(window.location.search);
    var out = new URLSearchParams();
    params.forEach(function (value, name) {
      if (value && (name === "from" || name === "to" || name === "department" ||
                    name === "form")) { out.append(name, value); }
    });
    return out;
  }

  function crossFilter(payload, dimension, key) {
    var params = new URLSearchParams(window.location.search);
    if (dimension === "department" && payload.filters.indexOf("department") >= 0) {
      params.set("department", key);
    } else {
      params.set("f." + dimension, key);
    }
    window.location.search = params.toString();
  }

  function responsesTable(listing) {
    var table = document.createElement("table");
    table.className = "responses";
    var head = table.insertRow();
    listing.headers.forEach(function (text) {
      var th = document.createElement("th");
      th.textContent = text;
      head.appendChild(th);
    });
    listing.rows.forEach(function (row) {
      var tr = table.insertRow();
      row.forEach(function (cell) { tr.insertCell().textContent = cell === null ? "" : cell; });
    });
    return table;
  }

  function Drill(payload, tile, index) {
    this.payload = payload;
    this.tile = tile;
    this.panel = document.getElementById("drill-" + index);
    this.index = index;
    this.crumbs = [];
  }

  Drill.prototype.open = function (selections, label) {
    var self = this;
    var params = currentParams();
    params.set("path", selections.join("/"));
    var url = "/api/v1/reports/dashboards/" + encodeURIComponent(self.payload.key) +
      "/drill/" + encodeURIComponent(self.tile.chart) + "?" + params.toString();
    return fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.json(); })
      .then(function (step) {
        if (label !== null) {
          var at = -1;
          self.crumbs.forEach(function (c, i) {
            if (c.selections.length === selections.length) { at = i; }
          });
          if (at >= 0) { self.crumbs = self.crumbs.slice(0, at); }
          self.crumbs.push({label: label, selections: selections});
        }
        self.show(selections, step);
      });
  };

  Drill.prototype.renderCrumbs = function () {
    var self = this;
    var nav = self.panel.querySelector(".crumbs");
    nav.textContent = "";
    var back = document.createElement("button");
    back.type = "button";
    back.className = "crumb";
    back.setAttribute("data-crumb", "0");
    back.textContent = self.payload.hospital;
    back.addEventListener("click", function () { self.close(); });
    nav.appendChild(back);
    self.crumbs.forEach(function (crumb, i) {
      var sep = document.createElement("span");
      sep.className = "sep";
      sep.textContent = "›";
      nav.appendChild(sep);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "crumb";
      button.setAttribute("data-crumb", String(i + 1));
      button.textContent = crumb.label;
      button.addEventListener("click", function () {
        self.crumbs = self.crumbs.slice(0, i + 1);
        self.open(crumb.selections, null);
      });
      nav.appendChild(button);
    });
  };

  Drill.prototype.show = function (selections, step) {
    var self = this;
    self.panel.hidden = false;
    self.panel.setAttribute("data-level", step.level || "");
    self.renderCrumbs();
    var body = self.panel.querySelector(".drill-body");
    body.textContent = "";
    var heading = document.createElement("h3");
    heading.textContent = step.title || "";
    body.appendChild(heading);
    if (step.empty) {
      var empty = document.createElement("p");
      empty.className = "empty-state";
      empty.textContent = step.empty;
      body.appendChild(empty);
    } else if (step.responses) {
      body.appendChild(responsesTable(step.responses));
    } else if (step.spec) {
      var holder = document.createElement("div");
      holder.className = "chart";
      holder.id = "drill-chart-" + self.index;
      body.appendChild(holder);
      embed("#" + holder.id, step.spec, function (datum) {
        var key = keyOf(datum, step.dimension);
        if (!key) { return; }
        if (step.last) { crossFilter(self.payload, step.dimension, key); return; }
        self.open(selections.concat([key]), String(datum[step.dimension]));
      });
    }
    document.body.setAttribute("data-drill-level", step.level || "");
  };

  Drill.prototype.close = function () {
    this.crumbs = [];
    this.panel.hidden = true;
    document.body.setAttribute("data-drill-level", "");
  };

  function onTileClick(payload, tile, drill, datum) {
    var dimension = tile.dimension;
    var key = keyOf(datum, dimension);
    if (!key) { return; }
    var path = payload.drilldown;
    var at = path.indexOf(dimension);
    if (at >= 0 && at + 1 < path.length) {
      var selections = path.slice(0, at).map(function (level) {
        return level === "hospital" ? "*" : (keyOf(datum, level) || "*");
      });
      selections.push(key);
      drill.crumbs = [];
      drill.open(selections, String(datum[dimension]));
      return;
    }
    crossFilter(payload, dimension, key);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var node = document.getElementById("payload");
    if (!node || !window.vegaEmbed) { return; }
    var payload = JSON.parse(node.textContent);
    var pending = [];
    payload.tiles.forEach(function (tile, i) {
      if (tile.spec) {
        var drill = new Drill(payload, tile, i);
        pending.push(embed("#tile-" + i, tile.spec, tile.dimension ? function (datum) {
          onTileClick(payload, tile, drill, datum);
        } : null));
      }
      if (tile.before_after) { pending.push(embed("#compare-" + i, tile.before_after, null)); }
    });
    payload.tiles.forEach(function (tile, i) { dataTable(tile, i); });
    Promise.all(pending).then(function () {
      document.body.setAttribute("data-dashboard-ready", "1");
    });
  });
}());

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
  if (!holder || !data || !data.rows || !data.rows.length || tile.empty) { return; }
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
  var words = tile.titles || {};
  // the raw value a click filters by (ward__key) is a code: never a column a person reads
  var columns = data.columns.filter(function (column) { return !/__key$/.test(column); });
  var head = table.createTHead().insertRow();
  columns.forEach(function (column) {
    var th = document.createElement("th");
    th.scope = "col";
    th.textContent = titles[column] || words[column] || column;
    head.appendChild(th);
  });
  var body = table.createTBody();
  data.rows.forEach(function (row) {
    var tr = body.insertRow();
    columns.forEach(function (column) {
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
