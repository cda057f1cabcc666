"""What the web layer asks of reports: a dashboard's tiles, a drill-down step, a tile export.

Every function takes the viewer's ``scope`` (the department ids their role allows; ``None`` =
hospital-wide) and passes it down to SQL; routes stay thin and only translate HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from careloop.engine.db import home
from careloop.engine.i18n import pick
from careloop.reports.charts import sample_preview, vega_lite
from careloop.reports.dialect import ReportError
from careloop.reports.export import IMAGE_FORMATS, javascript_bundle, render, to_csv, to_xlsx
from careloop.reports.query import Filters, ResultTable, Scope
from careloop.reports.runtime import (
    before_after,
    chart_of,
    dashboard_tiles,
    dataset_of,
    drill,
    load_spec,
    run_cached,
)
from careloop.reports.spec import DashboardSpec

MEDIA = {"csv": "text/csv; charset=utf-8", "png": "image/png", "svg": "image/svg+xml",
         "pdf": "application/pdf",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


def _table_json(result: ResultTable | None) -> dict[str, Any] | None:
    return None if result is None else {"columns": result.columns, "rows": result.rows}


def dashboard_payload(session: Session, key: str, params: Mapping[str, str], scope: Scope,
                      locale: str) -> dict[str, Any]:
    """Everything the dashboard page draws: per tile its Vega(-Lite) spec with aggregated rows."""
    dashboard: DashboardSpec = load_spec(session, "dashboard", key)
    filters = Filters.from_params(params)
    tiles = []
    for tile in dashboard_tiles(session, dashboard, filters, scope):
        empty = not tile.data.rows
        spec = (sample_preview(tile.chart, locale) if empty
                else vega_lite(tile.chart, tile.data, locale=locale, previous=tile.previous))
        tiles.append({"chart": tile.chart.key, "type": tile.chart.type, "width": tile.width,
                      "title": pick(dict(tile.chart.title), locale), "spec": spec,
                      "sample": empty,
                      "data": _table_json(tile.data), "previous": _table_json(tile.previous)})
    payload: dict[str, Any] = {"key": dashboard.key, "title": pick(dict(dashboard.title), locale),
                               "filters": list(dashboard.filters),
                               "drilldown": list(dashboard.drilldown), "tiles": tiles}
    if dashboard.before_after:
        payload["before_after"] = comparison(session, dashboard, filters, scope)
    return payload


def comparison(session: Session, dashboard: DashboardSpec, filters: Filters,
               scope: Scope) -> dict[str, Any]:
    """Before/after the dashboard's split date, for every tile that is not a word cloud."""
    split = date.fromisoformat(dashboard.before_after or "")
    before, after = before_after(filters, split)
    out: dict[str, Any] = {"split": split.isoformat(), "tiles": {}}
    for tile in dashboard.tiles:
        chart = chart_of(session, dashboard, tile.chart)
        if chart.type == "wordcloud":
            continue
        dataset = dataset_of(session, chart)
        out["tiles"][tile.chart] = {
            "before": _table_json(run_cached(session, dataset, filters=before, scope=scope)),
            "after": _table_json(run_cached(session, dataset, filters=after, scope=scope))}
    return out


def drill_payload(session: Session, key: str, chart_key: str, selections: list[str],
                  params: Mapping[str, str], scope: Scope) -> dict[str, Any]:
    dashboard: DashboardSpec = load_spec(session, "dashboard", key)
    result = drill(session, dashboard, chart_key, selections, Filters.from_params(params), scope)
    level = dashboard.drilldown[len(selections)]
    return {"level": level, **(_table_json(result) or {})}


def export_tile(session: Session, key: str, chart_key: str, fmt: str,
                params: Mapping[str, str], scope: Scope, locale: str) -> bytes:
    """One tile as CSV / XLSX (its aggregated rows) or PNG / SVG / PDF (its chart)."""
    dashboard: DashboardSpec = load_spec(session, "dashboard", key)
    filters = Filters.from_params(params)
    for tile in dashboard_tiles(session, dashboard, filters, scope):
        if tile.chart.key != chart_key:
            continue
        if fmt == "csv":
            return to_csv(tile.data).encode("utf-8")
        if fmt == "xlsx":
            return to_xlsx(tile.data, sheet=chart_key)
        if fmt in IMAGE_FORMATS:
            spec = vega_lite(tile.chart, tile.data, locale=locale, previous=tile.previous)
            return render(spec, fmt)
        raise ReportError(f"unknown export format {fmt!r}; use csv, xlsx, png, svg or pdf")
    raise ReportError(f"dashboard {key} has no tile {chart_key!r}")


def bundle_path() -> Path:
    """The Vega/Vega-Lite/vega-embed bundle, generated once and cached on disk under var/."""
    path = home() / "var" / "reports" / "vega-bundle.js"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(javascript_bundle(), "utf-8")
        tmp.replace(path)  # atomic: another process never reads half a file
    return path
