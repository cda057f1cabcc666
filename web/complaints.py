"""The complaints centre: complaints are submissions of ``complaints/complaint`` (entered by the
patient on any channel, or by staff in staff-entry mode); the ``complaint_sla`` rule set gives
each a first-response task due in 24 hours, the ``complaint_handling`` flow routes it.

Status: ``received`` → ``in_review`` → ``resolved``. First-contact resolution (FCR): resolved
by the person who took it, within 24 hours, with no escalation — recorded at resolution by the
staff member and shown as a flag.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from careloop.engine.audit import append as audit_append
from careloop.engine.clock import now_utc
from careloop.engine.domain import Task
from careloop.engine.models import AuditRow
from careloop.forms.models import Submission
from careloop.forms.runtime import set_status
from careloop.web.permissions import Principal, visible_patient_filter

FORM = "complaint"
FIRST_RESPONSE = timedelta(hours=24)


class NotAComplaint(Exception):
    """The submission is not a complaint (or does not exist)."""


def _tasks_of(session: Session, submission_id: int) -> list[Task]:
    """The complaint's tasks: those of flow runs started by its ``complaint.created`` event
    (e.g. the department's 24-hour reply) and those rules created for it."""
    from careloop.flows.models import FlowRun, StepRun

    event_id = f"complaint.created:{submission_id}"
    runs = session.scalars(select(FlowRun.id).where(
        FlowRun.idempotency_key.like(f"%:{event_id}"))).all()
    conditions = [Task.idempotency_key.like(f"%:{event_id}:%")]
    conditions += [Task.source_ref.like(f"flow_run:{run_id}:%") for run_id in runs]
    if runs:
        steps = session.scalars(select(StepRun.id).where(StepRun.run_id.in_(runs))).all()
        conditions.append(Task.source_ref.in_([f"flow_step:{step}" for step in steps]))
    return list(session.scalars(select(Task).where(or_(*conditions))
                                .order_by(Task.id)).all())


def sla_of(sub: Submission, tasks: list[Task], resolved_at: Any = None, now: Any = None) -> str:
    """``met`` / ``breached`` (responded or not within 24 h), ``due_soon``, ``on_track``."""
    now = now or now_utc()
    due = sub.submitted_at + FIRST_RESPONSE
    responded = [t.completed_at for t in tasks if t.completed_at is not None]
    if resolved_at is not None:
        responded.append(resolved_at)
    if responded:
        return "met" if min(responded) <= due else "breached"
    if now >= due:
        return "breached"
    return "due_soon" if (due - now) <= timedelta(hours=4) else "on_track"


def _resolution(session: Session, submission_id: int) -> dict[str, Any] | None:
    row = session.scalars(select(AuditRow).where(
        AuditRow.action == "complaint.resolve", AuditRow.object_type == "submission",
        AuditRow.object_id == str(submission_id)).order_by(AuditRow.id.desc())).first()
    if row is None:
        return None
    details = dict(row.details or {})
    return {"at": row.at, "by": row.actor, "fcr": bool(details.get("fcr")),
            "notes": details.get("notes")}


def complaint_json(session: Session, sub: Submission) -> dict[str, Any]:
    tasks = _tasks_of(session, sub.id)
    answers = sub.answers or {}
    resolution = _resolution(session, sub.id)
    resolved_at = resolution["at"] if resolution else None
    return {"id": sub.id, "patient_id": sub.patient_id, "submitted_at": sub.submitted_at,
            "due_at": sub.submitted_at + FIRST_RESPONSE, "channel": sub.channel,
            "channel_of_complaint": answers.get("channel_of_complaint"),
            "category": answers.get("category"),
            "department": answers.get("department") or sub.department_id,
            "status": sub.status, "sla": sla_of(sub, tasks, resolved_at),
            "entered_by": sub.entered_by,
            "tasks": [{"id": t.id, "status": t.status, "title": t.title} for t in tasks],
            "resolution": resolution, "fcr": bool(resolution and resolution["fcr"])}


def list_complaints(session: Session, me: Principal, status: str | None = None,
                    limit: int = 200) -> list[dict[str, Any]]:
    query = select(Submission).where(Submission.form_key == FORM)
    visible = visible_patient_filter(me)
    if visible is not None:
        query = query.where(Submission.patient_id.in_(visible))
    if status:
        query = query.where(Submission.status == status)
    rows = session.scalars(query.order_by(Submission.submitted_at.desc(), Submission.id.desc())
                           .limit(limit)).all()
    return [complaint_json(session, s) for s in rows]


def get_complaint(session: Session, submission_id: int) -> Submission:
    sub = session.get(Submission, submission_id)
    if sub is None or sub.form_key != FORM:
        raise NotAComplaint(str(submission_id))
    return sub


def resolve(session: Session, sub: Submission, me: Principal, *, fcr: bool, notes: str) -> None:
    """Close a complaint: status ``resolved`` (audited by the forms engine) and the resolution
    (FCR flag, notes) in the audit trail."""
    set_status(session, sub.id, "resolved", actor=me.username)
    audit_append(session, actor=me.username, action="complaint.resolve",
                 object_type="submission", object_id=str(sub.id), patient_id=sub.patient_id,
                 details={"fcr": fcr, "notes": notes[:2000]})


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    resolved = [r for r in rows if r["status"] == "resolved"]
    return {"total": len(rows), "open": len(rows) - len(resolved), "resolved": len(resolved),
            "breached": sum(1 for r in rows if r["sla"] == "breached"),
            "fcr_rate": round(100 * sum(1 for r in resolved if r["fcr"]) / len(resolved))
            if resolved else None}
