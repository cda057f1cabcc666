"""The measure contract and the built-in measures.

A :class:`MeasureType` owns everything about one measure type: the sources it applies to, the
JSON Schema of its options (checked per type at compile time, each problem located at the
option), the databases it can be computed on (checked at validate time against the configured
database, :func:`careloop.reports.dialect.target_dialect`), and its SQL: ``build`` turns a
:class:`QueryBuilder` and the compiled :class:`MeasureSpec` into SQLAlchemy Core expressions,
written per dialect where the databases differ (:mod:`careloop.reports.dialect`).

Built-ins register in the ``report_measure`` catalogue from :mod:`careloop.reports.plugin`, the
same way an extension does::

    def register(registry: Registry) -> None:
        registry.catalogue("report_measure").register("median_days", MeasureType(
            name="median_days", title={"zh-CN": "…", "en": "…"}, build=_build,
            sources=frozenset({"tasks"}), dialects=frozenset({"postgresql"})))

Nothing here reads rows: every value is computed by the database inside one ``GROUP BY`` query.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from jsonschema import Draft202012Validator
from sqlalchemy import Float, and_, case, cast, exists, func, or_
from sqlalchemy.sql.elements import ColumnElement

from careloop.reports import dialect as dl
from careloop.reports.builder import QueryBuilder
from careloop.reports.spec import MeasureSpec
from careloop.reports.tables import table

Expr = ColumnElement[Any]
MeasureBuild = Callable[[QueryBuilder, MeasureSpec], tuple[Expr, Expr]]
"""(builder, measure) → (value, sample size); the size is what ``min_sample`` compares with."""

ALL_SOURCES = frozenset({"submissions", "form_requests", "tasks", "encounters",
                         "education_sends"})

# Options every measure has, whatever its type (the dataset's column and its display).
COMMON_OPTIONS: Mapping[str, Any] = MappingProxyType({
    "key": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
    "type": {"type": "string"},
    "title": {"type": "object", "additionalProperties": {"type": "string"}},
    "min_sample": {"type": "integer", "minimum": 0},
})


@dataclass(frozen=True)
class MeasureType:
    """One measure type: what it computes, where, with which options.

    ``options`` maps each option name to its JSON Schema (``{"days": {"type": "integer"}}``);
    ``required`` names the options that must be given; ``dialects`` the databases it can be
    computed on (``None``: every one). ``build`` is only called for a dataset that passed the
    checks, so it may rely on its options' schema.
    """

    name: str
    title: Mapping[str, str]
    build: MeasureBuild
    sources: frozenset[str] = ALL_SOURCES
    options: Mapping[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    dialects: frozenset[str] | None = None
    description: Mapping[str, str] = field(default_factory=dict)

    @cached_property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema of one measure mapping of this type."""
        return {"type": "object", "properties": {**COMMON_OPTIONS, **self.options},
                "required": ["key", "type", *self.required], "additionalProperties": False}

    @cached_property
    def validator(self) -> Draft202012Validator:
        return Draft202012Validator(self.schema)

    def computes_on(self, dialect: str) -> bool:
        return self.dialects is None or dialect in self.dialects

    @property
    def needs_field(self) -> bool:
        return "field" in self.required

    def __hash__(self) -> int:  # cached_property needs a __dict__; identity is the name
        return hash(self.name)


def _pct(hits: Expr, n: Expr) -> Expr:
    return 100.0 * cast(hits, Float) / func.nullif(n, 0)


def _flag(cond: Any) -> Expr:
    return func.sum(case((cond, 1), else_=0))


# ---- option schemas ---------------------------------------------------------------------------

FIELD_OPTIONS: Mapping[str, Any] = MappingProxyType({
    "field": {"type": "string", "pattern": "^[a-z][a-z0-9_.]*$"},
    "row": {"type": "string"},
})
_DAYS = {"type": "integer", "minimum": 1, "maximum": 366}

# ---- builds -----------------------------------------------------------------------------------


def _count(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    n = b.row_count()
    return n, n


def _distinct(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    value = func.count(func.distinct(b.base_column("patient_id")))
    return value, value


def _field_stat(agg: Callable[[Expr], Expr]) -> MeasureBuild:
    def build(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
        value = b.field_value(m)
        return agg(value), func.count(value)
    return build


def _percentile(fixed: float | None) -> MeasureBuild:
    def build(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
        value = b.field_value(m)
        frac = fixed if fixed is not None else float(m.option("fraction", 0.5))
        return dl.percentile(b.dialect, frac, value), func.count(value)
    return build


def _nps(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    v = b.field_value(m)
    n = func.count(v)
    return _pct(_flag(v >= 9) - _flag(v <= 6), n), n


def _csat(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    v = b.field_value(m)
    n = func.count(v)
    return _pct(_flag(v >= 4), n), n


def _top_box(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    v = b.field_value(m)
    n = func.count(v)
    return _pct(_flag(v >= m.option("top", 5)), n), n


def _bottom_box(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    v = b.field_value(m)
    n = func.count(v)
    return _pct(_flag(v <= m.option("top", 2)), n), n


def _status_rate(hit: tuple[str, ...], of: tuple[str, ...] | None) -> MeasureBuild:
    def build(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
        status = b.base_column("status")
        n = b.row_count() if of is None else _flag(status.in_(of))
        return _pct(_flag(status.in_(hit)), n), n
    return build


def _complaint_rate(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    n = b.row_count()
    return _pct(_flag(b.base_column("form_key") == m.option("form", "complaint")), n), n


def _fcr(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    t = b.base
    done = t.c.status == "done"
    n = _flag(done)
    return _pct(_flag(and_(done, t.c.outcome == m.option("outcome", "resolved"))), n), n


def _response_time(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    t = b.base
    hours = dl.hours_between(b.dialect, t.c.created_at, t.c.completed_at)
    return func.avg(hours), func.count(t.c.completed_at)


def within(b: QueryBuilder, start: Any, end: Any, days: int) -> Any:
    """``end`` falls in the ``days`` after ``start`` (the same instant counts)."""
    return and_(end >= start, dl.hours_between(b.dialect, start, end) <= days * 24)


def _readmission(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    """Share of inpatient discharges followed by another inpatient admission of the same patient
    within ``days`` (default 30). Planned readmissions are not told apart (no such data)."""
    e = b.base
    again = table("encounters").alias("readm")
    back = exists().where(again.c.patient_id == e.c.patient_id, again.c.id != e.c.id,
                          again.c.type == "inpatient", again.c.admitted_at > e.c.discharged_at,
                          within(b, e.c.discharged_at, again.c.admitted_at,
                                 int(m.option("days", 30))))
    inpatient = e.c.type == "inpatient"
    n = _flag(inpatient)
    return _pct(_flag(and_(inpatient, back)), n), n


def _coverage(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    """Share of discharges followed up within ``days`` (default 30): a questionnaire sent for
    the encounter, or a task about it completed."""
    e = b.base
    days = int(m.option("days", 30))
    fr = table("form_requests").alias("cov_fr")
    task = table("tasks").alias("cov_task")
    sent = exists().where(fr.c.encounter_id == e.c.id,
                          within(b, e.c.discharged_at, fr.c.sent_at, days))
    done = exists().where(task.c.encounter_id == e.c.id, task.c.status == "done",
                          within(b, e.c.discharged_at, task.c.completed_at, days))
    n = b.row_count()
    return _pct(_flag(or_(sent, done)), n), n


def _overdue(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    t = b.base
    late = and_(t.c.status.in_(("open", "in_progress")), t.c.due_at.is_not(None),
                t.c.due_at < b.bind_now())
    value = _flag(late)
    return value, b.row_count()


def _on_time(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    """Share of tasks with a deadline that met it: done by ``due_at``, out of those done and
    those still open past it (an open task not yet due is not counted either way)."""
    t = b.base
    timed = t.c.due_at.is_not(None)
    done = and_(timed, t.c.status == "done", t.c.completed_at.is_not(None))
    late_open = and_(timed, t.c.status.in_(("open", "in_progress")), t.c.due_at < b.bind_now())
    n = _flag(or_(done, late_open))
    return _pct(_flag(and_(done, t.c.completed_at <= t.c.due_at)), n), n


# ---- the built-ins ----------------------------------------------------------------------------

_SUBMISSIONS = frozenset({"submissions"})
_TASKS = frozenset({"tasks"})
_ENCOUNTERS = frozenset({"encounters"})
_REQUESTS = frozenset({"form_requests"})
_EDUCATION = frozenset({"education_sends"})


def _m(name: str, zh: str, en: str, build: MeasureBuild, sources: frozenset[str] = ALL_SOURCES,
       options: Mapping[str, Any] | None = None) -> MeasureType:
    return MeasureType(name, {"zh-CN": zh, "en": en}, build, sources, dict(options or {}))


def _f(name: str, zh: str, en: str, build: MeasureBuild,
       extra: Mapping[str, Any] | None = None) -> MeasureType:
    """A measure of one answered field (``field:``, optionally a matrix ``row:``)."""
    return MeasureType(name, {"zh-CN": zh, "en": en}, build, _SUBMISSIONS,
                       {**FIELD_OPTIONS, **(extra or {})}, required=("field",))


MEASURES = (
    _m("count", "数量", "Count", _count),
    _m("distinct_patients", "患者数", "Distinct patients", _distinct),
    _f("sum", "合计", "Sum", _field_stat(func.sum)),
    _f("avg", "平均", "Average", _field_stat(func.avg)),
    _f("min", "最小", "Minimum", _field_stat(func.min)),
    _f("max", "最大", "Maximum", _field_stat(func.max)),
    _f("median", "中位数", "Median", _percentile(0.5)),
    _f("percentile", "百分位数", "Percentile", _percentile(None),
       {"fraction": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}}),
    _f("nps", "净推荐值", "NPS", _nps),
    _f("csat", "满意度(CSAT)", "CSAT", _csat),
    _f("top_box", "最高分占比", "Top box", _top_box, {"top": {"type": "number"}}),
    _f("bottom_box", "最低分占比", "Bottom box", _bottom_box, {"top": {"type": "number"}}),
    _m("response_rate", "应答率", "Response rate", _status_rate(("answered",), None), _REQUESTS),
    _m("completion_rate", "完成率", "Completion rate",
       _status_rate(("answered",), ("opened", "answered")), _REQUESTS),
    _m("complaint_rate", "投诉率", "Complaint rate", _complaint_rate, _SUBMISSIONS,
       {"form": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}}),
    _m("open_rate", "打开率(%)", "Opened (%)", _status_rate(("opened", "read"), None),
       _EDUCATION),
    _m("read_rate", "读完率(%)", "Read to the end (%)", _status_rate(("read",), None),
       _EDUCATION),
    _m("first_contact_resolution", "首次解决率", "First-contact resolution", _fcr, _TASKS,
       {"outcome": {"type": "string"}}),
    _m("mean_response_time", "平均响应时间(小时)", "Mean response time (h)", _response_time,
       _TASKS),
    _m("overdue_count", "超期数", "Overdue count", _overdue, _TASKS),
    _m("on_time_rate", "按时完成率", "On-time rate", _on_time, _TASKS),
    _m("readmission_rate", "再入院率(%)", "Readmission rate (%)", _readmission, _ENCOUNTERS,
       {"days": _DAYS}),
    _m("followup_coverage", "随访覆盖率(%)", "Follow-up coverage (%)", _coverage, _ENCOUNTERS,
       {"days": _DAYS}),
)
