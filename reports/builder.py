"""Builds one ``SELECT … GROUP BY`` for a dataset, adding only the joins its columns ask for.

    >>> # satisfaction_by_department (nps per department) on SQLite becomes, roughly:
    >>> # SELECT s.department_id AS department,
    >>> #        100.0 * (sum(CASE WHEN v >= 9 …) - sum(CASE WHEN v <= 6 …)) / nullif(count(v), 0)
    >>> # FROM submissions s LEFT JOIN submission_answers a
    >>> #      ON a.submission_id = s.id AND a.field_key IN ('nps')
    >>> # WHERE s.form_key IN (…) GROUP BY s.department_id ORDER BY s.department_id
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, case, func
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FromClause

from careloop.engine.models import UTCDateTime
from careloop.reports.dialect import ReportError
from careloop.reports.spec import MeasureSpec
from careloop.reports.tables import table

Expr = ColumnElement[Any]

_BASE = {"submissions": "submissions", "form_requests": "form_requests", "tasks": "tasks",
         "encounters": "encounters"}
_TIME = {"submissions": "submitted_at", "form_requests": "sent_at", "tasks": "created_at",
         "encounters": "discharged_at"}


class QueryBuilder:
    """Collects the FROM clause while dimension and measure functions ask for columns."""

    def __init__(self, source: str, dialect: str, *, fields: frozenset[str],
                 with_answers: bool, now: datetime) -> None:
        self.source = source
        self.dialect = dialect
        self.base: Table = table(_BASE[source])
        self.fields = fields
        self.with_answers = with_answers and source == "submissions"
        self.now = now
        self._joins: dict[str, tuple[FromClause, Expr]] = {}

    # -- columns --------------------------------------------------------------------------------
    def base_column(self, name: str) -> Expr:
        if name not in self.base.c:
            raise ReportError(f"source {self.source} has no column {name}")
        return self.base.c[name]

    def time_column(self) -> Expr:
        return self.base.c[_TIME[self.source]]

    def department_column(self) -> Expr:
        if "department_id" in self.base.c:
            return self.base.c.department_id
        return self.encounter().c.department_id

    def encounter(self) -> FromClause:
        if self.source == "encounters":
            return self.base
        enc = table("encounters").alias("enc")
        return self._join("enc", enc, enc.c.id == self.base.c.encounter_id)

    def patient(self) -> FromClause:
        pat = table("patients").alias("pat")
        return self._join("pat", pat, pat.c.id == self.base.c.patient_id)

    def answers(self) -> FromClause:
        if self.source != "submissions":
            raise ReportError("answers are only available on the submissions source")
        self.with_answers = True
        ans = table("submission_answers").alias("ans")
        on = ans.c.submission_id == self.base.c.id
        if self.fields:
            on = and_(on, ans.c.field_key.in_(sorted(self.fields)))
        return self._join("ans", ans, on)

    def answer_code(self, field_key: str) -> Expr:
        """The coded answer of one field (one row per submission), e.g. a complaint category."""
        name = f"code_{field_key}"
        alias = table("submission_answers").alias(name)
        joined = self._join(name, alias, and_(alias.c.submission_id == self.base.c.id,
                                              alias.c.field_key == field_key))
        return joined.c.value_code

    def classification(self) -> Expr:
        """The rule engine's category of this submission's free text (``rule_classifications``)."""
        cls = table("rule_classifications").alias("cls")
        joined = self._join("cls", cls, cls.c.submission_id == self.base.c.id)
        return joined.c.category

    def field_value(self, m: MeasureSpec) -> Expr:
        a = self.answers()
        cond = a.c.field_key == m.field
        if m.row is not None:
            cond = and_(cond, a.c.row_key == m.row)
        return case((cond, a.c.value_number))

    def row_count(self) -> Expr:
        if self.with_answers:
            return func.count(func.distinct(self.base.c.id))
        return func.count(self.base.c.id)

    def bind_now(self) -> Expr:
        return bindparam("report_now", self.now, type_=UTCDateTime())

    # -- FROM -----------------------------------------------------------------------------------
    def _join(self, name: str, target: FromClause, on: Expr) -> FromClause:
        if name not in self._joins:
            self._joins[name] = (target, on)
        return self._joins[name][0]

    def from_clause(self) -> FromClause:
        joined: FromClause = self.base
        for target, on in self._joins.values():
            joined = joined.outerjoin(target, on)
        return joined
