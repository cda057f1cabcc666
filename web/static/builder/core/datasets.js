// What the report designers (chart, dashboard, alert) choose from: the chart options (datasets,
// chart types and their panels, filters, drill levels, alert operators and severities), loaded
// once, and a stored dataset's dimensions and measures, fetched once (then the page re-renders).

let options = null;
const columnsCache = {};

export async function chartOptions(b) {
  if (!options) options = (await b.api("GET", `${b.base}/charts`)).data;
  return options;
}

// what a person reads for a code the designers offer: ``group`` is a list of GET charts
// (datasets, charts, dimensions, drill_levels, filters, ops, severities, channels)
export function labelOf(group, code) {
  const words = ((options && options.labels) || {})[group] || {};
  return words[code] || code;
}

// a dataset column (dimension or measure) by its title
export function columnLabel(columns, code) {
  return ((columns && columns.labels) || {})[code] || code;
}

export function datasetColumns(b, key) {
  if (!key) return { dimensions: [], measures: [], labels: {} };
  if (!(key in columnsCache)) {
    columnsCache[key] = { dimensions: [], measures: [], labels: {} };
    b.api("GET", `${b.base}/datasets/${encodeURIComponent(key)}`).then(({ status: code, data }) => {
      if (code === 200) { columnsCache[key] = data; b.render(); }
    });
  }
  return columnsCache[key];
}
