"""The complaints centre: complaints are submissions of ``complaints/complaint`` (entered by the
patient on any channel, or by staff in staff-entry mode). What a complaint *means* is read from
the complaints app's definitions, never restated here:

- its **department** is the one its ``complaint_handling`` run set (the flow's ``register`` step:
  the department concerned, else where it was received); the department's staff see it;
- its **first-response task** is the run's task of the kind the ``complaint_handling`` dataset
  selects (``where: {task_kind: [complaint_response]}``), and its **SLA** is the ``due`` of the
  flow step that creates that task;
- **first-contact resolution** is the dataset's ``first_contact_resolution`` measure: a first
  response closed with the measure's ``outcome`` (``resolved``). Resolving a complaint while its
  first response is still open (never escalated) records exactly that; the centre's FCR figure is
  the same measure run over the same rows as the dashboard.

Status: ``received`` → ``resolved``. Resolution records ``complaint.resolved``; the flow declares
``cancel_on: [complaint.resolved]``, so its run, timers and escalations end there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from careloop.engine import events, store
from careloop.engine.audit import append as audit_append
from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Task
from careloop.engine.tasks import complete_task
from careloop.forms.models import Submission
from careloop.forms.runtime import set_status
from careloop.web.permissions import PATIENT_VIEW, Principal, can_see_patient

FORM = "complaint"
DATASET = "complaint_handling"
CREATED = "complaint.created"
RESOLVED = "complaint.resolved"
DUE_SOON = timedelta(hours=4)
OPEN = ("open", "in_progress")
LIST_WINDOW = 2000  # newest complaints considered for one (scoped) list


class NotAComplaint(Exception):
    """The submission is not a complaint (or does not exist)."""


class AlreadyResolved(Exception):
    """Raised when resolving a complaint that is resolved already."""


class AboutYourself(Exception):
    """Raised when the complaint names the person trying to handle it."""


STAFF_FIELD = "staff_concerned"


def names_staff(sub: Submission, me: Principal) -> bool:
    """True when the complaint names ``me`` as the staff member concerned (by username or
    display name): nobody handles a complaint about themselves."""
    named = (sub.answers or {}).get(STAFF_FIELD)
    if not isinstance(named, str) or not named.strip():
        return False
    value = named.strip().casefold()
    return value in {me.username.casefold(), me.display_name.strip().casefold()}


@dataclass(frozen=True, slots=True)
class Policy:
    """What the complaints app's definitions say a complaint's first response and FCR are."""

    kinds: tuple[str, ...]   # first-response task kinds (the dataset's ``task_kind`` filter)
    fcr_outcome: str         # the outcome that counts as first-contact resolution
    fcr_measure: str | None  # the measure's key in the dataset
    dataset: Any             # the compiled DatasetSpec, or None when the app is not imported


def policy(session: Session) -> Policy:
    """Read the ``complaint_handling`` dataset (see the module docstring)."""
    from careloop.reports.spec import DatasetSpec

    row = store.current(session, "dataset", DATASET)
    if row is None:
        return Policy((), "resolved", None, None)
    spec = store.compile_row(row, DatasetSpec)
    kinds = dict(spec.where).get("task_kind", ())
    measure = next((m for m in spec.measures if m.type == "first_contact_resolution"), None)
    outcome = (measure.option("outcome", "resolved") if measure is not None else None) or "resolved"
    return Policy(tuple(kinds), outcome, measure.key if measure is not None else None, spec)


@dataclass(slots=True)
class Handling:
    """A complaint's handling runs and tasks."""

    runs: list[Any]
    tasks: list[Task]

    def department(self, session: Session) -> str | None:
        """The department the run set, when it names a known one; else where the run's tasks
        went (a department named in free text leaves them with the patient's encounter)."""
        for run in self.runs:
            value = (run.context or {}).get("department")
            if isinstance(value, str) and value and session.get(Department, value) is not None:
                return value
        return next((t.department_id for t in self.tasks if t.department_id), None)


def handling(session: Session, submission_id: int) -> Handling:
    """The runs the complaint's ``complaint.created`` event started and their tasks."""
    from careloop.flows.models import FlowRun, StepRun

    suffix = f":{CREATED}:{submission_id}"
    runs = list(session.scalars(select(FlowRun).where(
        FlowRun.idempotency_key.like(f"%{suffix}")).order_by(FlowRun.id)).all())
    runs = [r for r in runs if (r.idempotency_key or "").endswith(suffix)]
    if not runs:
        return Handling([], [])
    ids = [r.id for r in runs]
    steps = session.scalars(select(StepRun.id).where(StepRun.run_id.in_(ids))).all()
    conditions = [Task.source_ref.like(f"flow_run:{i}:%") for i in ids]
    if steps:
        conditions.append(Task.source_ref.in_([f"flow_step:{s}" for s in steps]))
    tasks = list(session.scalars(select(Task).where(or_(*conditions)).order_by(Task.id)).all())
    return Handling(runs, tasks)


def first_response_sla(session: Session, pol: Policy, runs: Iterable[Any]) -> timedelta | None:
    """The ``due`` of the flow step creating the first-response task (in the run's own flow
    version), e.g. ``24h`` in ``complaint_handling``."""
    from careloop.flows.runtime import spec_of
    from careloop.flows.spec import FlowSpec, parse_duration

    specs = [spec_of(session, run) for run in runs]
    if not specs:
        specs = [store.compile_row(row, FlowSpec) for row in store.list_current(session, "flow")]
        specs = [s for s in specs if s.trigger.event == CREATED]
    for spec in specs:
        for step in spec.steps:
            if step.get("task_kind") in pol.kinds and step.get("due"):
                return parse_duration(step.get("due"))
    return None


def sla_of(due: datetime | None, responded: list[datetime], now: datetime | None = None) -> str:
    """``met`` / ``breached`` (first response within the due time or not), ``due_soon``,
    ``on_track``, or ``no_due`` when the definitions set none."""
    if due is None:
        return "no_due"
    now = now or now_utc()
    if responded:
        return "met" if min(responded) <= due else "breached"
    if now >= due:
        return "breached"
    return "due_soon" if (due - now) <= DUE_SOON else "on_track"


def department_of(session: Session, sub: Submission, found: Handling) -> str | None:
    answered = (sub.answers or {}).get("department")
    return found.department(session) or (answered if isinstance(answered, str) and answered
                                         else None) or sub.department_id


def _resolution_audit(session: Session, submission_id: int) -> dict[str, Any] | None:
    from careloop.engine.models import AuditRow

    row = session.scalars(select(AuditRow).where(
        AuditRow.action == "complaint.resolve", AuditRow.object_type == "submission",
        AuditRow.object_id == str(submission_id)).order_by(AuditRow.id.desc())).first()
    if row is None:
        return None
    return {"at": row.at, "by": row.actor, "notes": (row.details or {}).get("notes")}


def complaint_json(session: Session, sub: Submission, pol: Policy | None = None
                   ) -> dict[str, Any]:
    pol = pol or policy(session)
    found = handling(session, sub.id)
    answers = sub.answers or {}
    first = [t for t in found.tasks if t.kind in pol.kinds]
    sla = first_response_sla(session, pol, found.runs)
    due = sub.submitted_at + sla if sla is not None else None
    resolution = _resolution_audit(session, sub.id)
    responded = [t.completed_at for t in first if t.completed_at is not None]
    if resolution is not None:
        responded.append(resolution["at"])
    fcr = any(t.status == "done" and t.outcome == pol.fcr_outcome for t in first)
    return {"id": sub.id, "patient_id": sub.patient_id, "submitted_at": sub.submitted_at,
            "due_at": due, "channel": sub.channel,
            "channel_of_complaint": answers.get("channel_of_complaint"),
            "category": answers.get("category"), "department": department_of(session, sub, found),
            "status": sub.status, "sla": sla_of(due, responded), "entered_by": sub.entered_by,
            "tasks": [{"id": t.id, "status": t.status, "title": t.title, "kind": t.kind}
                      for t in found.tasks],
            "runs": [{"id": r.id, "status": r.status} for r in found.runs],
            "resolution": resolution, "fcr": fcr}


def visible(session: Session, me: Principal, sub: Submission, department: str | None) -> bool:
    """A complaint is seen by whoever may see its patient, and by the staff of the department it
    is about (whatever the patient's encounters)."""
    if not me.can(PATIENT_VIEW):
        return False
    if me.scope is None or (department is not None and department in me.scope):
        return True
    return sub.patient_id is not None and can_see_patient(session, me, sub.patient_id)


def may_open(session: Session, me: Principal, value: str) -> bool:
    """``object_access`` for ``via="complaint"`` routes: the department's staff may open a
    complaint about their department although the patient never stayed there."""
    sub = session.get(Submission, int(value)) if value.isdigit() else None
    if sub is None or sub.form_key != FORM:
        return False
    return visible(session, me, sub, department_of(session, sub, handling(session, sub.id)))


def complaint_patient(session: Session, value: str) -> str | None:
    """``patient_resolver`` for ``via="complaint"``: the complaint's patient."""
    sub = session.get(Submission, int(value)) if value.isdigit() and len(value) < 10 else None
    return sub.patient_id if sub is not None and sub.form_key == FORM else None


def list_complaints(session: Session, me: Principal, status: str | None = None,
                    limit: int = 200) -> list[dict[str, Any]]:
    query = select(Submission).where(Submission.form_key == FORM)
    if status:
        query = query.where(Submission.status == status)
    rows = session.scalars(query.order_by(Submission.submitted_at.desc(), Submission.id.desc())
                           .limit(LIST_WINDOW)).all()
    pol = policy(session)
    out: list[dict[str, Any]] = []
    for sub in rows:
        data = complaint_json(session, sub, pol)
        if visible(session, me, sub, data["department"]):
            out.append(data)
            if len(out) >= limit:
                break
    return out


def get_complaint(session: Session, submission_id: int) -> Submission:
    sub = session.get(Submission, submission_id)
    if sub is None or sub.form_key != FORM:
        raise NotAComplaint(str(submission_id))
    return sub


def resolve(session: Session, sub: Submission, me: Principal, *, notes: str) -> bool:
    """Close a complaint; returns whether it was resolved at first contact.

    An open first-response task is closed with the FCR outcome when it was never escalated
    (``resolved_escalated`` otherwise); the status becomes ``resolved`` (audited by the forms
    engine); ``complaint.resolved`` is recorded, which ends the handling run (the flow's
    ``cancel_on``) with its open tasks, timers and escalations.

    Raises:
        AlreadyResolved: when the complaint is resolved already.
        AboutYourself: when the complaint names ``me`` as the staff member concerned.
    """
    if sub.status == "resolved":
        raise AlreadyResolved(str(sub.id))
    if names_staff(sub, me):
        raise AboutYourself(str(sub.id))
    pol = policy(session)
    found = handling(session, sub.id)
    fcr = False
    for task in found.tasks:
        if task.kind in pol.kinds and task.status in OPEN:
            first = int((task.escalation or {}).get("level", 0)) == 0
            complete_task(session, task, actor=me.username,
                          outcome=pol.fcr_outcome if first else "resolved_escalated",
                          notes=notes.strip()[:2000] or None)
            fcr = fcr or first
    set_status(session, sub.id, "resolved", actor=me.username)
    audit_append(session, actor=me.username, action="complaint.resolve",
                 object_type="submission", object_id=str(sub.id), patient_id=sub.patient_id,
                 details={"fcr": fcr, "notes": notes[:2000]})
    events.record(session, RESOLVED, {
        "submission_id": sub.id, "patient_id": sub.patient_id,
        "department_id": department_of(session, sub, found), "form": sub.form_key},
        event_id=f"{RESOLVED}:{sub.id}")
    return fcr


def fcr_rate(session: Session, me: Principal, pol: Policy | None = None) -> float | None:
    """The dashboard's first-contact-resolution figure (percent) for this viewer's scope."""
    from careloop.reports.query import run_dataset, scope_of

    pol = pol or policy(session)
    if pol.dataset is None or pol.fcr_measure is None:
        return None
    table = run_dataset(session, pol.dataset, scope=scope_of(me.scope), dimensions=())
    value = table.rows[0].get(pol.fcr_measure) if table.rows else None
    return float(value) if isinstance(value, int | float) else None


def summary(session: Session, me: Principal, rows: list[dict[str, Any]]) -> dict[str, Any]:
    resolved = [r for r in rows if r["status"] == "resolved"]
    rate = fcr_rate(session, me)
    return {"total": len(rows), "open": len(rows) - len(resolved), "resolved": len(resolved),
            "breached": sum(1 for r in rows if r["sla"] == "breached"),
            "fcr_rate": round(rate) if rate is not None else None}
