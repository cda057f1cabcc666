"""Example measure: median days from a task's creation to the first action a staff member took
on it (a complaint's first response, a follow-up's first call).

One file, registered like a built-in. A staff action is a task-history row written by a person
(its actor is a user's username: completing, reassigning, noting) — not the engines' own rows
(``system``, escalations by the sweep). Tasks nobody has acted on yet are not counted.

Computed with PostgreSQL's ``percentile_cont``; it declares ``dialects={"postgresql"}``, so
``careloop validate`` and the builder's check refuse it on an installation running SQLite, at the
measure's ``type:`` — never a surprise when the dashboard first runs.

    measures:
      - {key: first_response_days, type: median_first_response, kind: complaint_response}
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Float, case, cast, func, select
from sqlalchemy.sql.elements import ColumnElement

from careloop.engine.registry import Registry
from careloop.reports import dialect as dl
from careloop.reports.builder import QueryBuilder
from careloop.reports.measures import MeasureType
from careloop.reports.spec import MeasureSpec
from careloop.reports.tables import table

NAME = "median_first_response"


def _first_action(b: QueryBuilder) -> ColumnElement[Any]:
    """The instant of the row's first staff action (a correlated scalar subquery)."""
    history = table("task_history").alias("first_act")
    users = table("users").alias("first_act_user")
    return (select(func.min(history.c.at))
            .where(history.c.task_id == b.base.c.id, history.c.action != "created",
                   history.c.actor.in_(select(users.c.username)))
            .correlate(b.base).scalar_subquery())


def build(b: QueryBuilder, m: MeasureSpec) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
    """(median days, tasks acted on); with ``kind:`` only tasks of that kind count."""
    days = dl.hours_between(b.dialect, b.base.c.created_at, _first_action(b)) / 24.0
    kind = m.option("kind")
    if kind is not None:
        days = case((b.base.c.kind == kind, days))
    value = cast(func.percentile_cont(0.5).within_group(days), Float)
    return value, func.count(days)


MEASURE = MeasureType(
    name=NAME,
    title={"zh-CN": "首次响应天数(中位数)", "en": "Median days to first response"},
    build=build,
    sources=frozenset({"tasks"}),
    options={"kind": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$",
                      "description": "only tasks of this kind (e.g. complaint_response)"}},
    dialects=frozenset({"postgresql"}),
    description={"zh-CN": "从待办创建到工作人员第一次处理的天数中位数",
                 "en": "median days from a task's creation to a staff member's first action"},
)


def register(registry: Registry) -> None:
    """Called once by the plugin loader (entry point group ``careloop.plugins``)."""
    registry.catalogue("report_measure").register(NAME, MEASURE)
