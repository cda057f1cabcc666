"""Tables of the rule engine: evaluations (the trace), text classifications and alerts.

``rule_evaluations`` holds one row per (rule set, version, event): the unique constraint is what
makes a re-delivered event change nothing. Effects (tasks, tags, statuses…) are written in the
same transaction as this row, so either all of them are stored or none.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from careloop.engine.models import Base, JSONType, utcnow


class RuleEvaluation(Base):
    """One rule set evaluated against one event: what matched, the values seen, actions taken."""

    __tablename__ = "rule_evaluations"
    __table_args__ = (UniqueConstraint("ruleset_key", "ruleset_version", "event_id",
                                       name="uq_rule_evaluations_ruleset_version_event"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    ruleset_key: Mapped[str] = mapped_column(String(64), index=True)
    ruleset_version: Mapped[int]
    event_id: Mapped[str] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    submission_id: Mapped[int | None] = mapped_column(index=True)
    task_id: Mapped[int | None] = mapped_column(index=True)
    # [{"rule", "priority", "values"}] and [{"rule", "do", "result"}]
    matched: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    actions: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    # Set when an action failed: none of the effects were stored (see runtime.evaluate).
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Classification(Base):
    """A free-text answer mapped to a category by a keyword dictionary, with the words matched."""

    __tablename__ = "rule_classifications"
    __table_args__ = (UniqueConstraint("dictionary_key", "source_ref", "field_key", "category",
                                       name="uq_rule_classifications_source_category"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    dictionary_key: Mapped[str] = mapped_column(String(64))
    dictionary_version: Mapped[int]
    source_ref: Mapped[str] = mapped_column(String(128), index=True)  # e.g. "submission:12"
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    submission_id: Mapped[int | None] = mapped_column(index=True)
    field_key: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(64), index=True)
    negative: Mapped[bool] = mapped_column(default=False)
    words: Mapped[list[Any]] = mapped_column(JSONType, default=list)  # [{word, term, negated}]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RuleAlert(Base):
    """An alert raised by a rule (shown on dashboards and the alert list)."""

    __tablename__ = "rule_alerts"
    __table_args__ = (Index("ix_rule_alerts_status_level", "status", "level"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True)
    ruleset_key: Mapped[str] = mapped_column(String(64))
    rule_key: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str | None] = mapped_column(ForeignKey("patients.id"), index=True)
    department_id: Mapped[str | None] = mapped_column(String(64))
    level: Mapped[str] = mapped_column(String(16))  # info | warning | critical
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | acknowledged
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(Text)
