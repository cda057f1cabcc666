"""Built-in sources and dimensions; each is registered in a registry catalogue
(``report_source``, ``report_dimension``) the same way a plugin adds its own. Measures are
typed in :mod:`careloop.reports.measures` (each declares the sources it applies to).

A dimension is a small function from a :class:`QueryBuilder` (which adds the joins it
asks for) to a SQLAlchemy Core expression. Nothing here reads rows: every value is computed by the
database inside one ``GROUP BY`` query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, literal
from sqlalchemy.sql.elements import ColumnElement

from careloop.reports import dialect as dl
from careloop.reports.builder import QueryBuilder

Expr = ColumnElement[Any]


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Where a dataset's rows come from."""

    name: str
    title: dict[str, str]
    dimensions: frozenset[str]


@dataclass(frozen=True, slots=True)
class DimensionInfo:
    """A way to group rows; ``column`` returns ``None`` for a source it does not apply to."""

    name: str
    title: dict[str, str]
    column: Callable[[QueryBuilder], Expr]


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
    DimensionInfo("touchpoint", {"zh-CN": "服务触点", "en": "Touchpoint"},
                  lambda b: b.base_column("touchpoint_key")),
    DimensionInfo("article", {"zh-CN": "宣教内容", "en": "Education item"},
                  lambda b: b.base_column("article_key")),
    DimensionInfo("task_kind", {"zh-CN": "待办类型", "en": "Task kind"},
                  lambda b: b.base_column("kind")),
    DimensionInfo("outcome", {"zh-CN": "处理结果", "en": "Outcome"},
                  lambda b: b.base_column("outcome")),
    *(DimensionInfo(g, {"zh-CN": z, "en": g.capitalize()}, _time(g))
      for g, z in zip(dl.GRAINS, ("日", "周", "月", "季度", "年"), strict=True)),
)


_SUB_DIMS = frozenset({"department", "ward", "doctor", "nursing_group", "form", "question",
                       "channel", "category", "age_band", "status", "touchpoint", *dl.GRAINS})
SOURCES = (
    SourceInfo("submissions", {"zh-CN": "问卷提交", "en": "Submissions"}, _SUB_DIMS),
    SourceInfo("form_requests", {"zh-CN": "问卷发送", "en": "Form requests"},
               frozenset({"department", "ward", "doctor", "nursing_group", "form", "channel",
                          "age_band", "status", *dl.GRAINS})),
    SourceInfo("encounters", {"zh-CN": "出院/就诊", "en": "Discharges"},
               frozenset({"department", "ward", "doctor", "nursing_group", "age_band",
                          "encounter_type", *dl.GRAINS})),
    SourceInfo("education_sends", {"zh-CN": "健康宣教推送", "en": "Education sent"},
               frozenset({"department", "article", "channel", "status", "age_band",
                          *dl.GRAINS})),
    SourceInfo("tasks", {"zh-CN": "待办任务", "en": "Tasks"},
               frozenset({"department", "form", "status", "task_kind", "outcome", "age_band",
                          *dl.GRAINS})),
)

