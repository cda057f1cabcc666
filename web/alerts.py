"""The alert centre: what rules raised (``raise_alert``: PHQ-9 item 9, a hypertensive crisis, a
rule set that failed…), listed for the people they concern and acknowledged with a note.

An alert concerns the department it was raised in (the patient's encounter at the time): its
staff see it; hospital-wide roles (the patient-experience office) see every one; an alert without
a department is seen where its patient is. A rule set on ``alert.raised`` may also turn an alert
into a task (see ``docs/rules.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Patient, User
from careloop.rules.models import RuleAlert
from careloop.web.permissions import Principal, visible_patient_filter

STATUSES = ("open", "acknowledged")
LEVELS = ("critical", "warning", "info")


class AlertRefused(Exception):
    """Raised when an alert cannot be acknowledged (already acknowledged, no note)."""


def visibility(principal: Principal) -> ColumnElement[bool] | None:
    """A SQL condition on ``rule_alerts`` for what ``principal`` may see (None: everything)."""
    if principal.scope is None:
        return None
    visible = visible_patient_filter(principal)
    assert visible is not None
    return or_(RuleAlert.department_id.in_(principal.scope),
               and_(RuleAlert.department_id.is_(None), RuleAlert.patient_id.in_(visible)))


def _query(principal: Principal, status: str | None) -> Select[Any]:
    query = select(RuleAlert)
    condition = visibility(principal)
    if condition is not None:
        query = query.where(condition)
    if status in STATUSES:
        query = query.where(RuleAlert.status == status)
    return query


@dataclass(frozen=True, slots=True)
class AlertRow:
    """One alert as the centre shows it."""

    id: int
    level: str
    message: str
    patient_id: str | None
    department: dict[str, str] | None
    status: str
    created_at: Any
    acknowledged_at: Any
    acknowledged_by: str | None
    note: str | None
    patient_name: str | None = None  # for the page: people read names, not ids
    acknowledged_by_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "level": self.level, "message": self.message,
                "patient_id": self.patient_id, "department": self.department,
                "status": self.status, "created_at": self.created_at.isoformat(),
                "acknowledged_at": (self.acknowledged_at.isoformat()
                                    if self.acknowledged_at else None),
                "acknowledged_by": self.acknowledged_by, "note": self.note}


def list_alerts(session: Session, principal: Principal, status: str | None = "open",
                limit: int = 200) -> list[AlertRow]:
    """Critical first, then newest first."""
    order = {level: n for n, level in enumerate(LEVELS)}
    rows = session.scalars(_query(principal, status).order_by(
        RuleAlert.created_at.desc(), RuleAlert.id.desc()).limit(limit)).all()
    names = {d.id: d.name for d in session.scalars(select(Department)).all()}
    patient_ids = {r.patient_id for r in rows if r.patient_id}
    patients = dict(session.execute(select(Patient.id, Patient.name).where(
        Patient.id.in_(patient_ids))).all()) if patient_ids else {}
    usernames = {r.acknowledged_by for r in rows if r.acknowledged_by}
    people = dict(session.execute(select(User.username, User.display_name).where(
        User.username.in_(usernames))).all()) if usernames else {}
    found = [AlertRow(r.id, r.level, r.message, r.patient_id,
                      names.get(r.department_id) if r.department_id else None, r.status,
                      r.created_at, r.acknowledged_at, r.acknowledged_by, r.note,
                      patients.get(r.patient_id) if r.patient_id else None,
                      people.get(r.acknowledged_by) if r.acknowledged_by else None)
             for r in rows]
    return sorted(found, key=lambda a: (a.status != "open", order.get(a.level, 9)))


def open_count(session: Session, principal: Principal) -> int:
    sub = _query(principal, "open").subquery()
    return int(session.scalar(select(func.count()).select_from(sub)) or 0)


def can_see(session: Session, principal: Principal, alert_id: int) -> bool:
    query = _query(principal, None).where(RuleAlert.id == alert_id)
    return session.scalars(query.limit(1)).first() is not None


def acknowledge(session: Session, alert: RuleAlert, principal: Principal, note: str) -> None:
    """Mark the alert seen and handled, with what was done (required)."""
    if alert.status != "open":
        raise AlertRefused("already acknowledged")
    text = note.strip()
    if not text:
        raise AlertRefused("a note is required")
    alert.status, alert.note = "acknowledged", text[:2000]
    alert.acknowledged_at, alert.acknowledged_by = now_utc(), principal.username
    session.flush()
