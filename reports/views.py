"""What the web layer asks of reports: a dashboard's tiles, a drill-down step, a tile export.

Every function takes the viewer's ``scope`` (the department ids their role allows; ``None`` =
hospital-wide) and passes it down to SQL; routes stay thin and only translate HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.clock import to_local
from careloop.engine.db import home
from careloop.engine.i18n import pick, t
from careloop.reports.chart_types import chart_type
from careloop.reports.charts import before_after_vega_lite, vega_lite
from careloop.reports.dialect import ReportError
from careloop.reports.export import (
    IMAGE_FORMATS,
    csv_bytes,
    javascript_bundle,
    render,
    to_csv,
    to_xlsx,
)
from careloop.reports.labels import (
    KEY_SUFFIX,
    column_titles,
    filter_words,
    labelled,
    scope_label,
    scoped_title,
)
from careloop.reports.query import Filters, ResultTable, Scope
from careloop.reports.runtime import (
    DRILL_DIMENSION,
    before_after,
    chart_of,
    dashboard_tiles,
    dataset_of,
    drill,
    load_spec,
    run_cached,
    tile_filters,
)
from careloop.reports.spec import ChartSpec, DashboardSpec, DatasetSpec

MEDIA = {"csv": "text/csv; charset=utf-8", "png": "image/png", "svg": "image/svg+xml",
         "pdf": "application/pdf",
         "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}
Equals = tuple[tuple[str, str], ...]


def _table_json(result: ResultTable | None) -> dict[str, Any] | None:
    return None if result is None else {"columns": result.columns, "rows": result.rows}


def is_empty(result: ResultTable, dataset: DatasetSpec | None) -> bool:
    """No rows — or, for an ungrouped tile (a KPI), one row with nothing counted in it."""
    if not result.rows:
        return True
    dims = set(dataset.dimensions) if dataset is not None else set()
    if dims & set(result.columns):
        return False
    return all(value in (None, 0) for row in result.rows for value in row.values())


def empty_reason(session: Session, dataset: DatasetSpec | None, chart: ChartSpec,
                 scope_words: str | None, locale: str) -> str:
    """Why a tile has nothing to draw, in words: 本期暂无数据：尚无满意度问卷提交（心内科）."""
    what = chart_type(chart.type).empty_topic or (dataset.source if dataset else "")
    forms = ""
    if dataset is not None and dataset.forms:
        titles = []
        for key in dataset.forms:
            row = store.current(session, "form", key)
            titles.append(pick(row.title, locale) if row is not None else key)
        forms = ("、" if locale == "zh-CN" else ", ").join(titles)
    text = t(f"reports.empty.{what}", locale,
             forms=forms or t("reports.empty.any-form", locale))
    if text == f"reports.empty.{what}":
        text = t("reports.empty.any", locale)
    if scope_words:
        text += t("reports.empty.scope", locale, scope=scope_words)
    return text


def _click_dimension(chart: ChartSpec, dataset: DatasetSpec | None) -> str | None:
    """The dataset dimension a click on a mark selects (the bar's x, a slice's colour)."""
    if dataset is None or not chart_type(chart.type).clickable:
        return None
    for channel in ("x", "color", "row", "column", "y"):
        column = chart.encoding.get(channel)
        if column in dataset.dimensions:
            return column
    return None


def _period_labels(split: date, locale: str) -> tuple[str, str]:
    day = split.isoformat()
    return t("reports.before", locale, date=day), t("reports.after", locale, date=day)


def dashboard_payload(session: Session, key: str, params: Mapping[str, str], scope: Scope,
                      locale: str, equals: Equals = ()) -> dict[str, Any]:
    """Everything the dashboard page draws: per tile its Vega(-Lite) spec with aggregated,
    labelled rows (or why it is empty), what a click selects, and the before/after view."""
    dashboard = load_spec(session, "dashboard", key, DashboardSpec)
    filters = Filters.from_params(params)
    scope_words = scope_label(session, scope, locale)
    compare = comparison(session, dashboard, filters, scope, equals) \
        if dashboard.before_after else None
    split = date.fromisoformat(dashboard.before_after) if dashboard.before_after else None
    tiles = []
    for tile in dashboard_tiles(session, dashboard, filters, scope, equals):
        dataset = tile.dataset
        title = scoped_title(pick(dict(tile.chart.title), locale), scope_words, locale)
        entry: dict[str, Any] = {
            "chart": tile.chart.key, "type": tile.chart.type, "width": tile.width,
            "title": title, "spec": None, "empty": None, "dimension": None,
            "data": _table_json(tile.data), "previous": _table_json(tile.previous),
            "before_after": None}
        if is_empty(tile.data, dataset):
            entry["empty"] = empty_reason(session, dataset, tile.chart, scope_words, locale)
            tiles.append(entry)
            continue
        titles = column_titles(dataset, locale) if dataset is not None else {}
        data = labelled(session, dataset, tile.data, locale) if dataset else tile.data
        entry["data"] = _table_json(data)
        entry["spec"] = vega_lite(tile.chart, data, locale=locale, previous=tile.previous,
                                  titles=titles, title=title, responsive=True)
        entry["dimension"] = _click_dimension(tile.chart, dataset)
        entry["titles"] = titles  # every column's title (the chart data table's headings)
        if compare is not None and split is not None and tile.chart.key in compare["tiles"]:
            pair = compare["tiles"][tile.chart.key]
            labels = _period_labels(split, locale)
            before = labelled(session, dataset, _result(pair["before"]), locale) \
                if dataset else _result(pair["before"])
            after = labelled(session, dataset, _result(pair["after"]), locale) \
                if dataset else _result(pair["after"])
            entry["before_after"] = before_after_vega_lite(
                tile.chart, before, after, labels=labels,
                titles={**titles, "period": t("reports.period", locale)},
                title=t("reports.before-after-title", locale, title=title), responsive=True)
        tiles.append(entry)
    title = scoped_title(pick(dict(dashboard.title), locale), scope_words, locale)
    payload: dict[str, Any] = {
        "key": dashboard.key, "title": title, "scope": scope_words,
        "filters": list(dashboard.filters), "drilldown": list(dashboard.drilldown),
        "drill_titles": [t(f"reports.level.{level}", locale) for level in dashboard.drilldown],
        "hospital": t("reports.level.hospital", locale),
        "equals": [list(pair) for pair in equals],
        "equals_labels": filter_words(session, equals, locale), "tiles": tiles}
    if compare is not None:
        payload["before_after"] = compare
    return payload


def _result(table: dict[str, Any]) -> ResultTable:
    return ResultTable(columns=list(table["columns"]), rows=list(table["rows"]))


def comparison(session: Session, dashboard: DashboardSpec, filters: Filters,
               scope: Scope, equals: Equals = ()) -> dict[str, Any]:
    """Before/after the dashboard's split date, for every tile that is not a word cloud."""
    split = date.fromisoformat(dashboard.before_after or "")
    out: dict[str, Any] = {"split": split.isoformat(), "tiles": {}}
    for tile in dashboard.tiles:
        chart = chart_of(session, dashboard, tile.chart)
        if not chart_type(chart.type).comparable:
            continue
        dataset = dataset_of(session, chart)
        before, after = before_after(tile_filters(dataset, filters, equals), split)
        out["tiles"][tile.chart] = {
            "before": _table_json(run_cached(session, dataset, filters=before, scope=scope)),
            "after": _table_json(run_cached(session, dataset, filters=after, scope=scope))}
    return out


def drill_payload(session: Session, key: str, chart_key: str, selections: list[str],
                  params: Mapping[str, str], scope: Scope,
                  locale: str = "zh-CN") -> dict[str, Any]:
    """One drill-down step: the rows of the next level, labelled, and a chart (or, at the
    ``responses`` level, a table with times in hospital time)."""
    dashboard = load_spec(session, "dashboard", key, DashboardSpec)
    result = drill(session, dashboard, chart_key, selections, Filters.from_params(params), scope)
    level = dashboard.drilldown[len(selections)]
    chart = chart_of(session, dashboard, chart_key)
    dataset = dataset_of(session, chart)
    payload: dict[str, Any] = {"level": level, "title": t(f"reports.level.{level}", locale),
                               **(_table_json(result) or {}), "spec": None,
                               "dimension": None, "empty": None, "last": False}
    if len(selections) + 1 >= len(dashboard.drilldown):
        payload["last"] = True
    if not result.rows:
        payload["empty"] = t("reports.empty.drill", locale)
        return payload
    titles = column_titles(dataset, locale)
    if level == "responses":
        payload["responses"] = _responses_table(session, dataset, result, locale)
        return payload
    dims = DRILL_DIMENSION[level]
    measure = (chart.encoding.get("y") or chart.encoding.get("value")
               or chart.encoding.get("theta") or dataset.measures[0].key)
    regrouped = replace(dataset, dimensions=dims)
    data = labelled(session, regrouped, result, locale)
    payload["rows"] = data.rows
    payload["columns"] = data.columns
    if dims:
        titles = {**titles, **column_titles(regrouped, locale)}
        bar = ChartSpec(key=f"{chart.key}__{level}", title=chart.title, dataset=dataset.key,
                        type="bar", encoding={"x": dims[0], "y": measure})
        payload["spec"] = vega_lite(bar, data, locale=locale, titles=titles,
                                    title=t(f"reports.level.{level}", locale), responsive=True)
        payload["dimension"] = dims[0]
    return payload


def _responses_table(session: Session, dataset: DatasetSpec, result: ResultTable,
                     locale: str) -> dict[str, Any]:
    """The responses level as a person reads it: local time, department and form names."""
    listing = replace(dataset, dimensions=("department", "channel", "form"))
    data = labelled(session, listing, result, locale)
    heads = [t(f"reports.column.{c}", locale) for c in
             ("submission_id", "submitted_at", "department", "channel", "form")]
    rows = []
    for row in data.rows:
        when = row.get("submitted_at")
        local = to_local(datetime.fromisoformat(when)).strftime("%Y-%m-%d %H:%M") \
            if when else ""
        rows.append([row["submission_id"], local, row["department"], row["channel"],
                     row["form"]])
    return {"headers": heads, "rows": rows}


def export_tile(session: Session, key: str, chart_key: str, fmt: str,
                params: Mapping[str, str], scope: Scope, locale: str,
                equals: Equals = ()) -> bytes:
    """One tile as CSV / XLSX (its aggregated rows, labelled, with column titles; CSV with a
    UTF-8 BOM for Excel) or PNG / SVG / PDF (its chart, drawn server-side)."""
    dashboard = load_spec(session, "dashboard", key, DashboardSpec)
    filters = Filters.from_params(params)
    scope_words = scope_label(session, scope, locale)
    for tile in dashboard_tiles(session, dashboard, filters, scope, equals):
        if tile.chart.key != chart_key:
            continue
        dataset = tile.dataset
        titles = column_titles(dataset, locale) if dataset is not None else {}
        data = labelled(session, dataset, tile.data, locale) if dataset else tile.data
        title = scoped_title(pick(dict(tile.chart.title), locale), scope_words, locale)
        shown = ResultTable(columns=[c for c in data.columns if not c.endswith(KEY_SUFFIX)],
                            rows=data.rows)
        na = t("reports.na", locale)
        if fmt == "csv":
            return csv_bytes(to_csv(shown, titles, na=na, newline="\r\n"))
        if fmt == "xlsx":
            return to_xlsx(shown, sheet=chart_key, headers=titles, na=na)
        if fmt in IMAGE_FORMATS:
            spec = vega_lite(tile.chart, data, locale=locale, previous=tile.previous,
                             titles=titles, title=title)
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
