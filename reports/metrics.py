"""Built-in sources, dimensions and measures; each is registered in a registry catalogue
(``report_source``, ``report_dimension``, ``report_measure``) the same way a plugin adds its own.

A dimension or measure is a small function from a :class:`QueryBuilder` (which adds the joins it
asks for) to a SQLAlchemy Core expression. Nothing here reads rows: every value is computed by the
database inside one ``GROUP BY`` query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Float, and_, case, cast, exists, func, literal, or_
from sqlalchemy.sql.elements import ColumnElement

from careloop.reports import dialect as dl
from careloop.reports.builder import QueryBuilder
from careloop.reports.spec import MeasureSpec
from careloop.reports.tables import table

Expr = ColumnElement[Any]


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where a dataset's rows come from."""

    name: str
    title: dict[str, str]
    dimensions: frozenset[str]
    measures: frozenset[str]


@dataclass(frozen=True, slots=True)
class DimensionInfo:
    """A way to group rows; ``column`` returns ``None`` for a source it does not apply to."""

    name: str
    title: dict[str, str]
    column: Callable[[QueryBuilder], Expr]


@dataclass(frozen=True, slots=True)
class MeasureInfo:
    """An aggregate. ``build`` returns (value, sample size) — the size is what ``min_sample``
    compares with; ``needs_field`` measures read one answered field (``field:``)."""

    name: str
    title: dict[str, str]
    build: Callable[[QueryBuilder, MeasureSpec], tuple[Expr, Expr]]
    needs_field: bool = False
    params: tuple[str, ...] = field(default_factory=tuple)


def _pct(hits: Expr, n: Expr) -> Expr:
    return 100.0 * cast(hits, Float) / func.nullif(n, 0)


def _flag(cond: Any) -> Expr:
    return func.sum(case((cond, 1), else_=0))


# ---- dimensions -------------------------------------------------------------------------------

def _department(b: QueryBuilder) -> Expr:
    return b.department_column()


def _time(grain: str) -> Callable[[QueryBuilder], Expr]:
    def column(b: QueryBuilder) -> Expr:
        return dl.time_bucket(b.dialect, b.time_column(), grain)
    return column


def _age_band(b: QueryBuilder) -> Expr:
    age = dl.age_years(b.dialect, b.time_column(), b.patient().c.birth_date)
    return case((age < 18, "0-17"), (age < 45, "18-44"), (age < 65, "45-64"),
                (age < 80, "65-79"), (age >= 80, "80+"), else_="unknown")


def _question(b: QueryBuilder) -> Expr:
    a = b.answers()
    return case((a.c.row_key.is_(None), a.c.field_key),
                else_=a.c.field_key + literal(".") + a.c.row_key)


def _category(b: QueryBuilder) -> Expr:
    # A complaint's category is the answer to its form's ``category`` question; free-text
    # feedback has the rule engine's classification instead (see QueryBuilder.category).
    return b.category()


DIMENSIONS = (
    DimensionInfo("department", {"zh-CN": "科室", "en": "Department"}, _department),
    DimensionInfo("ward", {"zh-CN": "病区", "en": "Ward"}, lambda b: b.encounter().c.ward_id),
    DimensionInfo("doctor", {"zh-CN": "主管医生", "en": "Attending doctor"},
                  lambda b: b.encounter().c.attending_doctor_id),
    DimensionInfo("nursing_group", {"zh-CN": "护理组", "en": "Nursing group"},
                  lambda b: b.encounter().c.responsible_nurse_id),
    DimensionInfo("form", {"zh-CN": "表单", "en": "Form"}, lambda b: b.base_column("form_key")),
    DimensionInfo("question", {"zh-CN": "题目", "en": "Question"}, _question),
    DimensionInfo("channel", {"zh-CN": "渠道", "en": "Channel"},
                  lambda b: b.base_column("channel")),
    DimensionInfo("category", {"zh-CN": "类别", "en": "Category"}, _category),
    DimensionInfo("age_band", {"zh-CN": "年龄段", "en": "Age band"}, _age_band),
    DimensionInfo("status", {"zh-CN": "状态", "en": "Status"}, lambda b: b.base_column("status")),
    DimensionInfo("encounter_type", {"zh-CN": "就诊类型", "en": "Encounter type"},
                  lambda b: b.encounter().c.type),
    DimensionInfo("task_kind", {"zh-CN": "待办类型", "en": "Task kind"},
                  lambda b: b.base_column("kind")),
    *(DimensionInfo(g, {"zh-CN": z, "en": g.capitalize()}, _time(g))
      for g, z in zip(dl.GRAINS, ("日", "周", "月", "季度", "年"), strict=True)),
)


# ---- measures ---------------------------------------------------------------------------------

def _count(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    n = b.row_count()
    return n, n


def _distinct(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    value = func.count(func.distinct(b.base_column("patient_id")))
    return value, value


def _field_stat(agg: Callable[[Expr], Expr]) -> Callable[[QueryBuilder, MeasureSpec],
                                                          tuple[Expr, Expr]]:
    def build(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
        value = b.field_value(m)
        return agg(value), func.count(value)
    return build


def _percentile(fraction: float | None) -> Callable[[QueryBuilder, MeasureSpec],
                                                     tuple[Expr, Expr]]:
    def build(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
        value = b.field_value(m)
        frac = fraction if fraction is not None else (m.fraction or 0.5)
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
    return _pct(_flag(v >= (m.top if m.top is not None else 5)), n), n


def _bottom_box(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    v = b.field_value(m)
    n = func.count(v)
    return _pct(_flag(v <= (m.top if m.top is not None else 2)), n), n


def _status_rate(hit: tuple[str, ...], of: tuple[str, ...] | None) -> Callable[
        [QueryBuilder, MeasureSpec], tuple[Expr, Expr]]:
    def build(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
        status = b.base_column("status")
        n = b.row_count() if of is None else _flag(status.in_(of))
        return _pct(_flag(status.in_(hit)), n), n
    return build


def _complaint_rate(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    n = b.row_count()
    return _pct(_flag(b.base_column("form_key") == (m.form or "complaint")), n), n


def _fcr(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    t = b.base
    done = t.c.status == "done"
    n = _flag(done)
    return _pct(_flag(and_(done, t.c.outcome == (m.outcome or "resolved"))), n), n


def _response_time(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    t = b.base
    hours = dl.hours_between(b.dialect, t.c.created_at, t.c.completed_at)
    return func.avg(hours), func.count(t.c.completed_at)


def _within(b: QueryBuilder, start: Any, end: Any, days: int) -> Any:
    """``end`` falls in the ``days`` after ``start`` (the same instant counts)."""
    return and_(end >= start, dl.hours_between(b.dialect, start, end) <= days * 24)


def _readmission(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    """Share of inpatient discharges followed by another inpatient admission of the same patient
    within ``days`` (default 30). Planned readmissions are not told apart (no such data)."""
    e = b.base
    again = table("encounters").alias("readm")
    back = exists().where(again.c.patient_id == e.c.patient_id, again.c.id != e.c.id,
                          again.c.type == "inpatient", again.c.admitted_at > e.c.discharged_at,
                          _within(b, e.c.discharged_at, again.c.admitted_at, m.days or 30))
    inpatient = e.c.type == "inpatient"
    n = _flag(inpatient)
    return _pct(_flag(and_(inpatient, back)), n), n


def _coverage(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    """Share of discharges followed up within ``days`` (default 30): a questionnaire sent for
    the encounter, or a task about it completed."""
    e = b.base
    days = m.days or 30
    fr = table("form_requests").alias("cov_fr")
    task = table("tasks").alias("cov_task")
    sent = exists().where(fr.c.encounter_id == e.c.id,
                          _within(b, e.c.discharged_at, fr.c.sent_at, days))
    done = exists().where(task.c.encounter_id == e.c.id, task.c.status == "done",
                          _within(b, e.c.discharged_at, task.c.completed_at, days))
    n = b.row_count()
    return _pct(_flag(or_(sent, done)), n), n


def _overdue(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    t = b.base
    late = and_(t.c.status.in_(("open", "in_progress")), t.c.due_at.is_not(None),
                t.c.due_at < b.bind_now())
    value = _flag(late)
    return value, b.row_count()


def _m(name: str, zh: str, en: str, build: Callable[[QueryBuilder, MeasureSpec],
                                                    tuple[Expr, Expr]],
       needs_field: bool = False, params: tuple[str, ...] = ()) -> MeasureInfo:
    return MeasureInfo(name, {"zh-CN": zh, "en": en}, build, needs_field, params)


MEASURES = (
    _m("count", "数量", "Count", _count),
    _m("distinct_patients", "患者数", "Distinct patients", _distinct),
    _m("sum", "合计", "Sum", _field_stat(func.sum), True),
    _m("avg", "平均", "Average", _field_stat(func.avg), True),
    _m("min", "最小", "Minimum", _field_stat(func.min), True),
    _m("max", "最大", "Maximum", _field_stat(func.max), True),
    _m("median", "中位数", "Median", _percentile(0.5), True),
    _m("percentile", "百分位数", "Percentile", _percentile(None), True, ("fraction",)),
    _m("nps", "净推荐值", "NPS", _nps, True),
    _m("csat", "满意度(CSAT)", "CSAT", _csat, True),
    _m("top_box", "最高分占比", "Top box", _top_box, True, ("top",)),
    _m("bottom_box", "最低分占比", "Bottom box", _bottom_box, True, ("top",)),
    _m("response_rate", "应答率", "Response rate", _status_rate(("answered",), None)),
    _m("completion_rate", "完成率", "Completion rate",
       _status_rate(("answered",), ("opened", "answered"))),
    _m("complaint_rate", "投诉率", "Complaint rate", _complaint_rate, params=("form",)),
    _m("first_contact_resolution", "首次解决率", "First-contact resolution", _fcr,
       params=("outcome",)),
    _m("mean_response_time", "平均响应时间(小时)", "Mean response time (h)", _response_time),
    _m("overdue_count", "超期数", "Overdue count", _overdue),
    _m("readmission_rate", "再入院率(%)", "Readmission rate (%)", _readmission,
       params=("days",)),
    _m("followup_coverage", "随访覆盖率(%)", "Follow-up coverage (%)", _coverage,
       params=("days",)),
)

_SUB_DIMS = frozenset({"department", "ward", "doctor", "nursing_group", "form", "question",
                       "channel", "category", "age_band", "status", *dl.GRAINS})
_SUB_MEASURES = frozenset({"count", "distinct_patients", "sum", "avg", "min", "max", "median",
                           "percentile", "nps", "csat", "top_box", "bottom_box",
                           "complaint_rate"})
SOURCES = (
    SourceInfo("submissions", {"zh-CN": "问卷提交", "en": "Submissions"}, _SUB_DIMS,
               _SUB_MEASURES),
    SourceInfo("form_requests", {"zh-CN": "问卷发送", "en": "Form requests"},
               frozenset({"department", "ward", "doctor", "nursing_group", "form", "channel",
                          "age_band", "status", *dl.GRAINS}),
               frozenset({"count", "distinct_patients", "response_rate", "completion_rate"})),
    SourceInfo("encounters", {"zh-CN": "出院/就诊", "en": "Discharges"},
               frozenset({"department", "ward", "doctor", "nursing_group", "age_band",
                          "encounter_type", *dl.GRAINS}),
               frozenset({"count", "distinct_patients", "readmission_rate",
                          "followup_coverage"})),
    SourceInfo("tasks", {"zh-CN": "待办任务", "en": "Tasks"},
               frozenset({"department", "form", "status", "task_kind", "age_band",
                          *dl.GRAINS}),
               frozenset({"count", "distinct_patients", "first_contact_resolution",
                          "mean_response_time", "overdue_count"})),
)

