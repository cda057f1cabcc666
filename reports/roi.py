"""Measures of what automatic follow-up saves (the ROI dashboard of ``followup_ops``).

* ``staff_hours_saved`` (form requests): each request the patient answered through the link is
  one manual call not made — answered × minutes per call ÷ 60. The minutes are the hospital's
  setting (``CARELOOP_MINUTES_PER_CALL``, :func:`careloop.engine.hospital.minutes_per_manual_call`)
  unless the dataset says ``minutes_per_call``.
* ``mean_answer_hours`` (form requests): hours from sending the link to the answer, over the
  answered ones — how quickly patients respond.
* ``call_minutes`` (tasks): minutes of the calls logged on the tasks (``call_records``).

Registered in ``registry.catalogue("report_measure")`` like every built-in measure.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, Numeric, case, cast, func, literal, select

from careloop.engine.hospital import minutes_per_manual_call
from careloop.reports import dialect as dl
from careloop.reports.builder import QueryBuilder
from careloop.reports.measures import MeasureType
from careloop.reports.spec import MeasureSpec
from careloop.reports.tables import table

Expr = Any
_REQUESTS = frozenset({"form_requests"})
_TASKS = frozenset({"tasks"})


def _round(value: Expr, places: int) -> Expr:
    """Rounded on both databases (PostgreSQL rounds numerics only), read back as a float."""
    return cast(func.round(cast(value, Numeric), places), Float)


def _hours_saved(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    minutes = float(m.option("minutes_per_call", 0) or minutes_per_manual_call())
    answered = func.sum(case((b.base_column("status") == "answered", 1), else_=0))
    return _round(answered * literal(minutes) / 60.0, 2), answered


def _answer_hours(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    t = b.base
    hours = case((t.c.answered_at.is_not(None),
                  dl.hours_between(b.dialect, t.c.sent_at, t.c.answered_at)))
    return _round(func.avg(hours), 1), func.count(t.c.answered_at)


def _call_minutes(b: QueryBuilder, m: MeasureSpec) -> tuple[Expr, Expr]:
    calls = table("call_records").alias("roi_calls")
    seconds = (select(func.coalesce(func.sum(calls.c.duration_seconds), 0))
               .where(calls.c.task_id == b.base.c.id).correlate(b.base).scalar_subquery())
    return _round(func.sum(seconds) / 60.0, 1), b.row_count()


MEASURES = (
    MeasureType("staff_hours_saved", {"zh-CN": "节省人工工时(小时)", "en": "Staff hours saved"},
                _hours_saved, _REQUESTS,
                {"minutes_per_call": {"type": "number", "minimum": 0.5, "maximum": 120}},
                description={"zh-CN": "患者经链接作答的随访数 × 每通人工电话分钟数 ÷ 60",
                             "en": "follow-ups answered through the link × minutes per manual "
                                   "call ÷ 60"}),
    MeasureType("mean_answer_hours", {"zh-CN": "平均应答用时(小时)",
                                      "en": "Mean time to answer (h)"},
                _answer_hours, _REQUESTS),
    MeasureType("call_minutes", {"zh-CN": "通话分钟数", "en": "Call minutes"},
                _call_minutes, _TASKS),
)
