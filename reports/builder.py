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

from sqlalchemy import Table, and_, bindparam, case, func, select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.expression import FromClause

from careloop.engine.models import Base, UTCDateTime
from careloop.reports.dialect import ReportError
from careloop.reports.spec import MeasureSpec
from careloop.reports.tables import table

Expr = ColumnElement[Any]

_BASE = {"submissions": "submissions", "form_requests": "form_requests", "tasks": "tasks",
         "encounters": "encounters", "education_sends": "education_sends"}
_TIME = {"submissions": "submitted_at", "form_requests": "sent_at", "tasks": "created_at",
         "encounters": "discharged_at", "education_sends": "sent_at"}


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
        """The row's department.

        Tasks and discharges have their own. A submission belongs to the department its
        answers name (a complaint's 涉及科室, when it is a known department — the one the
        complaint flow hands it to), else its own, else the department of the patient's latest
        encounter; a questionnaire sent without an encounter (home BP readings) to its
        encounter's, else the patient's latest encounter's — the same encounter the engines'
        expression context falls back to. No row is left without a department when the
        patient has had an encounter.
        """
        if self.source in ("tasks", "encounters", "education_sends"):
            return self.base.c.department_id  # an education item's: the department owning it
        if self.source == "submissions":
            return func.coalesce(self._answered_department(), self.base.c.department_id,
                                 self._latest_department())
        return func.coalesce(self.encounter().c.department_id, self._latest_department())

    def _answered_department(self) -> Expr:
        alias = table("submission_answers").alias("dept_answer")
        answer = self._join("dept_answer", alias, and_(alias.c.submission_id == self.base.c.id,
                                                        alias.c.field_key == "department"))
        named = table("departments").alias("dept_named")
        known = self._join("dept_named", named, named.c.id == answer.c.value_text)
        return known.c.id

    def _latest_department(self) -> Expr:
        """Department of the patient's latest encounter begun by the row's time, else of the
        patient's latest encounter (a request the HIS sent just before the admission)."""
        def latest(name: str, begun: bool) -> Expr:
            enc = table("encounters").alias(name)
            conds = [enc.c.patient_id == self.base.c.patient_id]
            if begun:
                conds.append(enc.c.admitted_at <= self.time_column())
            return (select(enc.c.department_id).where(*conds)
                    .order_by(enc.c.admitted_at.desc(), enc.c.id.desc())
                    .limit(1).correlate(self.base).scalar_subquery())
        return func.coalesce(latest("latest_enc", True), latest("any_enc", False))

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

    def category(self) -> Expr:
        """The row's category: the coded ``category`` answer the form asked for (a complaint's
        服务态度, 医疗质量 …), else the rule engine's text classification when installed."""
        coded = self.answer_code("category")
        if "rule_classifications" in Base.metadata.tables:
            return func.coalesce(coded, self.classification())
        return coded

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
