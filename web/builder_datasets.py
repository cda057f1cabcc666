"""The dataset designer's server side: what it offers (sources, dimensions, measure types and
forms, each by its title in the page's language) and the preview of a draft dataset's rows, run
on the viewer's scoped data with every value in words (a ward's name, never its id).

The designer (``web/static/builder/editors/dataset.js``) writes an ordinary ``kind: dataset``
body: ``source``, ``forms``, ``dimensions``, ``measures`` and ``last_days``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.i18n import pick, t
from careloop.engine.registry import loaded_registry

PREVIEW_ROWS = 50


def options(session: Session, locale: str) -> dict[str, Any]:
    """``GET /api/v1/builder/dataset-options``: every registered source (with the dimensions it
    offers), dimension, measure type (with the sources it applies to and whether it reads an
    answered field) and current form, each by its title."""
    registry = loaded_registry()
    sources = [{"name": name, "title": pick(info.title, locale) or name,
                "dimensions": sorted(info.dimensions)}
               for name, info in registry.catalogue("report_source").items()]
    dimensions = [{"name": name, "title": pick(info.title, locale) or name}
                  for name, info in registry.catalogue("report_dimension").items()]
    measures = [{"name": name, "title": pick(info.title, locale) or name,
                 "sources": sorted(info.sources), "needs_field": info.needs_field}
                for name, info in registry.catalogue("report_measure").items()]
    forms = [{"key": row.key, "title": pick(row.title or {}, locale) or row.key}
             for row in store.list_current(session, kind="form")]
    return {"sources": sources, "dimensions": dimensions, "measures": measures, "forms": forms}


def preview(session: Session, spec: Any, scope: frozenset[str] | None,
            locale: str) -> dict[str, Any]:
    """The first rows of a (checked) draft dataset on the viewer's scoped data: column titles
    and, per row, each cell as a person reads it (coded dimension values by their labels)."""
    from careloop.reports.labels import column_titles, labelled
    from careloop.reports.query import run_dataset

    result = labelled(session, spec, run_dataset(session, spec, scope=scope), locale)
    titles = column_titles(spec, locale)
    columns = list(spec.columns)

    def cell(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return f"{value:.1f}".rstrip("0").rstrip(".")
        return str(value)

    rows = [[cell(row.get(c)) for c in columns] for row in result.rows[:PREVIEW_ROWS]]
    return {"columns": [{"key": c, "title": titles.get(c, c)} for c in columns],
            "rows": rows, "total": len(result.rows),
            "message": t("builder.dataset.rows", locale, n=len(result.rows))}
