"""Run a dataset: compile its spec plus the caller's filters and scope into one SQL query.

Scope is not optional: every call names the departments the viewer may see (``None`` = all, an
empty set = none), and it is applied in SQL, so a tile, a drill-down, an export and a cached result
can never hold another department's rows.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, String, case, cast, exists, false, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from careloop.engine.clock import hospital_tz, now_utc
from careloop.engine.registry import loaded_registry
from careloop.reports.builder import QueryBuilder
from careloop.reports.dialect import DIALECT_NAMES, ReportError, prepare_connection
from careloop.reports.measures import MeasureType
from careloop.reports.metrics import DimensionInfo
from careloop.reports.spec import DatasetSpec
from careloop.reports.tables import table

Scope = frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Filters:
    """Global filters (a dashboard's, the CLI's ``--param``s) plus drill-down selections."""

    date_from: date | None = None  # inclusive, hospital-local
    date_to: date | None = None  # inclusive, hospital-local
    departments: tuple[str, ...] = ()
    forms: tuple[str, ...] = ()
    equals: tuple[tuple[str, str], ...] = ()  # (dimension, value) from drill-down clicks

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Filters:
        """``{"from": "2026-01-01", "to": …, "department": "a,b", "form": …}`` → filters.

        Raises:
            ReportError: for an unknown parameter or a malformed date.
        """
        known = {"from", "to", "department", "form"}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ReportError(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
        try:
            d_from = date.fromisoformat(params["from"]) if params.get("from") else None
            d_to = date.fromisoformat(params["to"]) if params.get("to") else None
        except ValueError as exc:
            raise ReportError(f"bad date parameter: {exc}") from exc
        return cls(d_from, d_to, _split(params.get("department")), _split(params.get("form")))

    def with_equal(self, dimension: str, value: str) -> Filters:
        return replace(self, equals=(*self.equals, (dimension, value)))

    def cache_key(self) -> str:
        return repr((self.date_from, self.date_to, self.departments, self.forms, self.equals))


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(x for x in (value or "").split(",") if x)


@dataclass(slots=True)
class ResultTable:
    """Aggregated rows (never raw patient rows) with their column names."""

    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)


def local_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=hospital_tz())


def _dimension(name: str) -> DimensionInfo:
    info: DimensionInfo | None = loaded_registry().catalogue("report_dimension").get(name)
    if info is None:
        raise ReportError(f"unknown dimension {name!r}")
    return info


def _measure(name: str, dialect: str) -> MeasureType:
    info: MeasureType | None = loaded_registry().catalogue("report_measure").get(name)
    if info is None:
        raise ReportError(f"unknown measure {name!r}")
    if not info.computes_on(dialect):
        # Validation refuses it on the configured database; this is a dataset validated
        # against another one (a database moved after import).
        raise ReportError(f"measure '{name}' cannot be computed on "
                          f"{DIALECT_NAMES.get(dialect, dialect)}")
    return info


def build_query(spec: DatasetSpec, dialect: str, filters: Filters, scope: Scope, *,
                dimensions: tuple[str, ...] | None = None,
                now: datetime | None = None) -> Select[Any]:
    """The SQLAlchemy Core ``SELECT`` for ``spec`` (``dimensions`` overrides the group-by, which
    is how drill-down and alerts regroup a dataset)."""
    dims = spec.dimensions if dimensions is None else dimensions
    fields = frozenset(m.field for m in spec.measures if m.field)
    needs_answers = bool(fields) or "question" in dims
    b = QueryBuilder(spec.source, dialect, fields=fields if "question" not in dims else
                     frozenset(), with_answers=needs_answers, now=now or now_utc())
    columns: list[ColumnElement[Any]] = [_dimension(d).column(b).label(d) for d in dims]
    for m in spec.measures:
        value, n = _measure(m.type, dialect).build(b, m)
        if m.min_sample > 0:
            value = case((n >= m.min_sample, value), else_=None)
        columns.append(value.label(m.key))
    conditions = _conditions(b, spec, filters, scope)
    query = select(*columns).select_from(b.from_clause()).where(*conditions)
    group = columns[:len(dims)]
    if group:
        query = query.group_by(*group).order_by(*group)
    return query


def _conditions(b: QueryBuilder, spec: DatasetSpec, filters: Filters,
                scope: Scope) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    dept = b.department_column()
    if scope is not None:
        # A ward's staff are scoped to the ward: their rows are the ward's encounters' (the
        # row's department is the ward's department), so both columns are compared.
        out.append(or_(dept.in_(sorted(scope)), b.encounter().c.ward_id.in_(sorted(scope)))
                   if scope else false())
    if filters.departments:
        out.append(dept.in_(filters.departments))
    if b.source == "encounters":  # discharges: an encounter still in hospital is not one yet
        out.append(b.base.c.discharged_at.is_not(None))
    forms = filters.forms or spec.forms
    if forms and "form_key" in b.base.c:
        out.append(b.base.c.form_key.in_(forms))
    when = b.time_column()
    if filters.date_from is not None:
        out.append(when >= local_start(filters.date_from))
    if filters.date_to is not None:
        out.append(when < local_start(filters.date_to + timedelta(days=1)))
    if spec.last_days:
        today = b.now.astimezone(hospital_tz()).date()
        out.append(when >= local_start(today - timedelta(days=spec.last_days - 1)))
    # Filter values are text (YAML, query strings); compare the column as text on every database.
    for name, values in spec.where:
        out.append(cast(_dimension(name).column(b), String).in_(values))
    for name, value in filters.equals:
        out.append(cast(_dimension(name).column(b), String) == value)
    if spec.answer_range is not None:
        out.append(_answer_in_range(b, spec.answer_range))
    return out


def _answer_in_range(b: QueryBuilder,
                     rng: tuple[str, float | None, float | None]) -> ColumnElement[bool]:
    field_key, low, high = rng
    a = table("submission_answers").alias("rng")
    conds = [a.c.submission_id == b.base.c.id, a.c.field_key == field_key]
    if low is not None:
        conds.append(a.c.value_number >= low)
    if high is not None:
        conds.append(a.c.value_number <= high)
    return exists().where(*conds)


def _plain(value: Any) -> Any:
    if isinstance(value, float | int | str) or value is None:
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def run_dataset(conn: Session | Connection, spec: DatasetSpec, *, filters: Filters | None = None,
                scope: Scope, dimensions: tuple[str, ...] | None = None,
                now: datetime | None = None) -> ResultTable:
    """Run ``spec`` in the database and return its aggregated rows."""
    connection = conn.connection() if isinstance(conn, Session) else conn
    dialect = connection.dialect.name
    prepare_connection(connection.connection.dbapi_connection, dialect)
    query = build_query(spec, dialect, filters or Filters(), scope, dimensions=dimensions, now=now)
    dims = spec.dimensions if dimensions is None else dimensions
    cols = [*dims, *(m.key for m in spec.measures)]
    rows = [{c: _plain(v) for c, v in zip(cols, row, strict=True)}
            for row in conn.execute(query)]
    return ResultTable(columns=cols, rows=rows)


def scope_of(allowed: Collection[str] | None) -> Scope:
    return None if allowed is None else frozenset(allowed)
