"""The report designers (chart, dashboard, alert) in words: every code they offer — datasets,
charts, dimensions, a dataset's measures, drill-down levels, dashboard filters, alert operators
and severities, encoding channels — with the label a person reads, in the request's language.

    >>> op_word("<=", "zh-CN")
    '≤'
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.i18n import catalogue, pick, t
from careloop.engine.registry import loaded_registry

OPS = {"<": "<", "<=": "≤", ">": ">", ">=": "≥", "==": "=", "!=": "≠"}


def op_word(op: str, locale: str) -> str:
    """An alert operator as a sign a person reads (``<=`` → ``≤``)."""
    return OPS.get(op, op)


def _message(key: str, locale: str, fallback: str) -> str:
    return t(key, locale) if key in catalogue(locale) else fallback


def chart_labels(session: Session, options: dict[str, list[Any]],
                 locale: str) -> dict[str, dict[str, str]]:
    """``group → code → label`` for the lists of ``GET /api/v1/builder/charts``."""
    registry = loaded_registry()
    dims = registry.catalogue("report_dimension")
    titles = {kind: {row.key: pick(row.title or {}, locale) or row.key
                     for row in store.list_current(session, kind=kind)}
              for kind in ("dataset", "chart")}
    return {
        "datasets": titles["dataset"], "charts": titles["chart"],
        "dimensions": {n: pick(dims[n].title, locale) for n in options["dimensions"] if n in dims},
        "drill_levels": {n: _message(f"reports.level.{n}", locale, n)
                         for n in options["drill_levels"]},
        "filters": {n: _message(f"builder.filter.{n}", locale, n) for n in options["filters"]},
        "ops": {n: op_word(n, locale) for n in options["ops"]},
        "severities": {n: _message(f"builder.severity.{n}", locale, n)
                       for n in options["severities"]},
        "channels": {n: _message(f"builder.channel.{n}", locale, n) for n in options["channels"]},
    }


def column_labels(session: Session, key: str, locale: str) -> dict[str, str]:
    """A stored dataset's dimensions and measures by their titles (科室, 净推荐值)."""
    from careloop.reports.labels import column_titles
    from careloop.reports.spec import DatasetSpec

    row = store.current(session, "dataset", key)
    if row is None:
        return {}
    return column_titles(store.compile_row(row, DatasetSpec), locale)
