"""Datasets and dashboards at run time: stored specs, the database cache, drill-down, comparisons.

The cache lives in the database (``report_cache``), keyed by the dataset's content hash, the
filters, the viewer's department scope and a fingerprint of the source data (largest id of the
append-only tables), so a new submission or a different scope is never answered from a stale
entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, TypeVar, overload

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.clock import hospital_tz, now_utc
from careloop.reports.chart_types import chart_type
from careloop.reports.dialect import ReportError
from careloop.reports.models import ReportCache
from careloop.reports.query import Filters, ResultTable, Scope, run_dataset
from careloop.reports.spec import ChartSpec, DashboardSpec, DatasetSpec
from careloop.reports.tables import table

# Drill-down levels and the dimension each one groups by ("hospital" is one total row).
DRILL_DIMENSION = {"hospital": (), "department": ("department",), "ward": ("ward",),
                   "doctor": ("doctor",), "nursing_group": ("nursing_group",)}
_CACHEABLE = {"submissions": ("submissions", "submission_answers")}
# Bumped whenever the SQL a dataset compiles to changes meaning (e.g. how a row's department or
# category is found), so results cached by an older release are not served again.
QUERY_VERSION = "2"
SpecT = TypeVar("SpecT")


@overload
def load_spec(session: Session, kind: str, key: str) -> Any: ...


@overload
def load_spec(session: Session, kind: str, key: str, spec_type: type[SpecT]) -> SpecT: ...


def load_spec(session: Session, kind: str, key: str, spec_type: type[Any] | None = None) -> Any:
    """The compiled current version of a stored report definition (checked to be a
    ``spec_type`` when given, see :func:`careloop.engine.store.compile_row`).

    Raises:
        ReportError: when no such definition is stored.
    """
    row = store.current(session, kind, key)
    if row is None:
        raise ReportError(f"no {kind} '{key}' is stored (import its bundle first)")
    return store.compile_row(row) if spec_type is None else store.compile_row(row, spec_type)


def _fingerprint(session: Session, spec: DatasetSpec) -> str | None:
    """A cheap stamp of the source data: the largest id of each table (an index lookup).

    Submissions and their answers are append-only, so a new largest id is exactly "new data".
    Rows deleted by a retention purge must call :func:`clear_cache`. Datasets that read a column
    changed in place (``status``), and task / request datasets, are never cached.
    """
    names = _CACHEABLE.get(spec.source)
    uses_status = "status" in spec.dimensions or any(d == "status" for d, _ in spec.where)
    if names is None or uses_status:
        return None
    parts = []
    for name in names:
        t = table(name)
        top = session.execute(select(func.max(t.c.id))).scalar()
        parts.append(f"{name}:{top}")
    if spec.last_days:  # "the last N days" moves with the hospital's calendar day
        parts.append(f"day:{now_utc().astimezone(hospital_tz()).date()}")
    return ";".join(parts)


def clear_cache(session: Session, dataset_key: str | None = None) -> int:
    """Drop cached results (all, or one dataset's); returns how many rows were removed."""
    query = delete(ReportCache)
    if dataset_key is not None:
        query = query.where(ReportCache.dataset_key == dataset_key)
    return session.execute(query).rowcount or 0  # type: ignore[attr-defined]


def _cache_key(spec: DatasetSpec, filters: Filters, scope: Scope,
               dims: tuple[str, ...] | None) -> str:
    scope_text = "*" if scope is None else ",".join(sorted(scope))
    raw = "|".join((QUERY_VERSION, spec.key, spec.content_hash, filters.cache_key(),
                    scope_text, repr(dims)))
    return hashlib.sha256(raw.encode()).hexdigest()


def run_cached(session: Session, spec: DatasetSpec, *, filters: Filters | None = None,
               scope: Scope, dimensions: tuple[str, ...] | None = None) -> ResultTable:
    """:func:`run_dataset` through the database cache (a miss computes and stores)."""
    filters = filters or Filters()
    fingerprint = _fingerprint(session, spec)
    if fingerprint is None:
        return run_dataset(session, spec, filters=filters, scope=scope, dimensions=dimensions)
    key = _cache_key(spec, filters, scope, dimensions)
    hit = session.get(ReportCache, key)
    if hit is not None and hit.fingerprint == fingerprint:
        return ResultTable(columns=list(hit.result["columns"]), rows=list(hit.result["rows"]))
    result = run_dataset(session, spec, filters=filters, scope=scope, dimensions=dimensions)
    payload = {"columns": result.columns, "rows": result.rows}
    try:
        with session.begin_nested():
            if hit is None:
                session.add(ReportCache(cache_key=key, dataset_key=spec.key,
                                        fingerprint=fingerprint, result=payload))
            else:
                hit.fingerprint, hit.result = fingerprint, payload
            session.flush()
    except IntegrityError:
        pass  # another process stored the same key meanwhile; its result is as good as ours
    return result


def chart_of(session: Session, dashboard: DashboardSpec, chart_key: str) -> ChartSpec:
    """A tile's chart: embedded in the dashboard, or stored."""
    for tile in dashboard.tiles:
        if tile.chart == chart_key and tile.inline is not None:
            return tile.inline
    if chart_key not in {t.chart for t in dashboard.tiles}:
        raise ReportError(f"dashboard {dashboard.key} has no tile {chart_key!r}")
    spec = load_spec(session, "chart", chart_key, ChartSpec)
    return spec


def dataset_of(session: Session, chart: ChartSpec) -> DatasetSpec:
    if chart.inline_dataset is not None:
        return chart.inline_dataset
    spec = load_spec(session, "dataset", chart.dataset, DatasetSpec)
    return spec


def previous_period(filters: Filters) -> Filters | None:
    """The same-length period just before ``filters``' date range (None if it is open)."""
    if filters.date_from is None or filters.date_to is None:
        return None
    days = (filters.date_to - filters.date_from).days + 1
    return replace(filters, date_from=filters.date_from - timedelta(days=days),
                   date_to=filters.date_from - timedelta(days=1))


def before_after(filters: Filters, split: date) -> tuple[Filters, Filters]:
    """Filters for "before" (up to the day before ``split``) and "after" (from ``split``)."""
    before = replace(filters, date_to=split - timedelta(days=1))
    if filters.date_to is not None and filters.date_to < split:
        before = filters
    return before, replace(filters, date_from=max(split, filters.date_from or split))


@dataclass(slots=True)
class Tile:
    """One dashboard tile as the browser receives it: aggregated rows and its chart."""

    chart: ChartSpec
    data: ResultTable
    previous: ResultTable | None
    width: int
    dataset: DatasetSpec | None = None


def tile_filters(dataset: DatasetSpec, filters: Filters,
                 equals: tuple[tuple[str, str], ...]) -> Filters:
    """``filters`` plus the clicked cross-filters that apply to this tile's source (a click on a
    complaint category does not empty the tasks tile, which has no category)."""
    from careloop.engine.registry import loaded_registry

    source = loaded_registry().catalogue("report_source").get(dataset.source)
    for dimension, value in equals:
        if source is not None and dimension in source.dimensions:
            filters = filters.with_equal(dimension, value)
    return filters


def dashboard_tiles(session: Session, dashboard: DashboardSpec, filters: Filters,
                    scope: Scope, equals: tuple[tuple[str, str], ...] = ()) -> list[Tile]:
    """Every tile of ``dashboard`` under the global ``filters`` and the viewer's ``scope``."""
    tiles = []
    base_filters = filters
    for tile in dashboard.tiles:
        chart = tile.inline or load_spec(session, "chart", tile.chart, ChartSpec)
        dataset = dataset_of(session, chart)
        filters = tile_filters(dataset, base_filters, equals)
        own_rows = chart_type(chart.type).rows
        if own_rows is not None:  # a word cloud counts the words of a text field
            data = own_rows(session, dataset, chart, filters, scope)
            tiles.append(Tile(chart=chart, data=data, previous=None, width=tile.width,
                              dataset=dataset))
            continue
        data = run_cached(session, dataset, filters=filters, scope=scope)
        prev = None
        if chart.compare_previous:
            before = previous_period(filters)
            if before is not None:
                prev = run_cached(session, dataset, filters=before, scope=scope)
        tiles.append(Tile(chart=chart, data=data, previous=prev, width=tile.width,
                          dataset=dataset))
    return tiles


def drill(session: Session, dashboard: DashboardSpec, chart_key: str,
          selections: list[str], filters: Filters, scope: Scope) -> ResultTable:
    """Follow the dashboard's drill-down path: ``selections`` are the values clicked so far.

    With path ``[hospital, department, doctor, responses]``: ``[]`` gives the hospital total,
    ``["*"]`` one row per department, ``["*", "cardio"]`` doctors of cardio,
    ``["*", "cardio", "17"]`` the responses of doctor 17 (ids and times only, no personal data).
    """
    path = dashboard.drilldown
    if len(selections) >= len(path):
        raise ReportError(f"drill-down of {dashboard.key} has {len(path)} levels")
    chart = chart_of(session, dashboard, chart_key)
    dataset = dataset_of(session, chart)
    for level, value in zip(path, selections, strict=False):
        # the hospital level has one row, and "*" stands for "any" (a click on a doctor's bar
        # drills into that doctor without naming a department): nothing to filter
        if DRILL_DIMENSION.get(level) and value != "*":
            filters = filters.with_equal(DRILL_DIMENSION[level][0], value)
    level = path[len(selections)]
    if level == "responses":
        return _responses(session, dataset, filters, scope)
    return run_dataset(session, dataset, filters=filters, scope=scope,
                       dimensions=DRILL_DIMENSION[level])


def _responses(session: Session, dataset: DatasetSpec, filters: Filters,
               scope: Scope) -> ResultTable:
    # The last drill level lists submissions (id, time, department, channel): no personal data,
    # and the same scope and filters as the aggregate above it.
    from careloop.reports.builder import QueryBuilder
    from careloop.reports.query import _conditions

    if dataset.source != "submissions":
        raise ReportError("responses can only be listed for the submissions source")
    dialect = session.get_bind().dialect.name
    b = QueryBuilder("submissions", dialect, fields=frozenset(), with_answers=False,
                     now=_now())
    conds = _conditions(b, dataset, filters, scope)
    s = b.base
    query = (select(s.c.id, s.c.submitted_at, s.c.department_id, s.c.channel, s.c.form_key)
             .select_from(b.from_clause()).where(*conds).order_by(s.c.id).limit(500))
    cols = ["submission_id", "submitted_at", "department", "channel", "form"]
    rows = [dict(zip(cols, (r[0], r[1].isoformat() if r[1] else None, *r[2:]), strict=True))
            for r in session.execute(query)]
    return ResultTable(columns=cols, rows=rows)


def comment_words(session: Session, dataset: DatasetSpec, field_key: str, filters: Filters,
                  scope: Scope, limit: int = 5000) -> ResultTable:
    """Word counts of one text field over the dataset's rows (same filters and scope).

    Segmentation (jieba) cannot run in SQL, so the newest ``limit`` texts are read and only the
    word counts leave this function — the browser never receives a comment.
    """
    from careloop.engine.domain import User
    from careloop.reports.builder import QueryBuilder
    from careloop.reports.charts import names_pattern, word_counts
    from careloop.reports.query import _conditions

    dialect = session.get_bind().dialect.name
    b = QueryBuilder("submissions", dialect, fields=frozenset(), with_answers=False, now=_now())
    conds = _conditions(b, dataset, filters, scope)
    a = table("submission_answers").alias("txt")
    who = table("patients").alias("who")
    query = (select(a.c.value_text, who.c.name).select_from(b.from_clause().join(
        a, (a.c.submission_id == b.base.c.id) & (a.c.field_key == field_key))
        .outerjoin(who, who.c.id == b.base.c.patient_id))
        .where(*conds, a.c.value_text.is_not(None)).order_by(b.base.c.id.desc()).limit(limit))
    staff = names_pattern(session.scalars(select(User.display_name)))
    words = word_counts(((text, (name,)) for text, name in session.execute(query)),
                        names=staff)
    return ResultTable(columns=["word", "count"], rows=words)


def _now() -> Any:
    from careloop.engine.clock import now_utc

    return now_utc()
