// What the report designers (chart, dashboard, alert) choose from: the chart options (datasets,
// chart types and their panels, filters, drill levels, alert operators and severities), loaded
// once, and a stored dataset's dimensions and measures, fetched once (then the page re-renders).

let options = null;
const columnsCache = {};

export async function chartOptions(b) {
  if (!options) options = (await b.api("GET", `${b.base}/charts`)).data;
  return options;
}

export function datasetColumns(b, key) {
  if (!key) return { dimensions: [], measures: [] };
  if (!(key in columnsCache)) {
    columnsCache[key] = { dimensions: [], measures: [] };
    b.api("GET", `${b.base}/datasets/${encodeURIComponent(key)}`).then(({ status: code, data }) => {
      if (code === 200) { columnsCache[key] = data; b.render(); }
    });
  }
  return columnsCache[key];
}
