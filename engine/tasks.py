"""Tasks (to-do items) and the assignee rules that rules and flows share.

An assignee is written the same way in a rule's ``create_task`` and a flow's ``create_task`` step::

    {"role": "head_nurse"}                 # that role within the patient's department
    {"role": "dept_director", "department": "cardiology"}
    {"relation": "responsible_nurse"}      # a person related to the encounter
    {"user": "zhang_wei"}                  # one user by username
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import txcache
from careloop.engine.clock import now_utc
from careloop.engine.context import latest_encounter as latest_encounter  # re-exported
from careloop.engine.context import pick_encounter
from careloop.engine.domain import RoleGrant, Task, TaskHistory, User
from careloop.engine.errors import CareloopError
from careloop.engine.registry import loaded_registry
from careloop.engine.services import ADD_WORKING_DAYS, SET_SUBMISSION_STATUS, find_service

RELATIONS = ("responsible_nurse", "attending_doctor")
PRIORITIES = ("urgent", "high", "normal", "low")
# What staff record when they close a task (the console's outcome list, phone follow-ups too).
OUTCOMES = ("reached_ok", "reached_problem", "not_reached", "wrong_number", "declined")


class AssigneeError(CareloopError):
    """Raised when an assignee rule cannot be resolved for a patient (e.g. no department)."""


@dataclass(frozen=True, slots=True)
class Assignee:
    """Who a task goes to: a user, or a role within a department (anyone holding it may take it)."""

    user_id: int | None
    role: str | None
    department_id: str | None


def resolve_assignee(session: Session, rule: dict[str, Any], *, patient_id: str | None,
                     encounter_id: str | None = None) -> Assignee:
    """Turn an assignee rule into a concrete :class:`Assignee`."""
    encounter = pick_encounter(session, patient_id, encounter_id)
    department = rule.get("department") or (encounter.department_id if encounter else None)
    if "user" in rule:
        user = session.scalars(select(User).where(User.username == rule["user"])).first()
        if user is None:
            raise AssigneeError(f"no user '{rule['user']}'")
        return Assignee(user.id, None, department)
    if "relation" in rule:
        if encounter is None:
            raise AssigneeError(f"relation '{rule['relation']}' needs an encounter")
        user_id = getattr(encounter, f"{rule['relation']}_id", None)
        if user_id is not None:
            return Assignee(user_id, None, encounter.department_id)
        fallback = {"responsible_nurse": "head_nurse", "attending_doctor": "dept_director"}
        return Assignee(None, fallback[rule["relation"]], encounter.department_id)
    role = rule["role"]
    if department is None:
        # no department to look in: the role's hospital-wide holders (the patient-experience
        # office deciding a definition's publication), else nobody
        wide = session.scalars(select(RoleGrant.user_id).where(
            RoleGrant.role == role, RoleGrant.department_id.is_(None))).all()
        if not wide:
            raise AssigneeError(f"role '{role}' needs the patient's department")
        return Assignee(wide[0] if len(wide) == 1 else None, role, None)
    holders = session.scalars(select(RoleGrant.user_id).where(
        RoleGrant.role == role, RoleGrant.department_id == department)).all()
    if not holders:  # a hospital-wide role (the patient-experience office): its holders
        holders = session.scalars(select(RoleGrant.user_id).where(
            RoleGrant.role == role, RoleGrant.department_id.is_(None))).all()
    # One holder: assign to them directly; several or none: the role's queue in that department.
    return Assignee(holders[0] if len(holders) == 1 else None, role, department)


def due_at(due: Mapping[str, Any] | None, start: datetime | None = None,
           session: Session | None = None) -> datetime | None:
    """When something is due: ``{"hours": 2}`` or ``{"working_days": 1}``.

    Working days come from the hospital calendar (service ``calendar.add_working_days``, holidays
    and make-up days included) — the one working-days implementation there is.

    >>> from datetime import datetime, timezone
    >>> friday = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)  # Friday 10:00 in Shanghai
    >>> due_at({"working_days": 1}, friday).isoformat()
    '2026-11-30T02:00:00+00:00'

    Raises:
        CareloopError: for working days when no calendar service is registered (the flows
            engine registers it): Monday-to-Friday would silently ignore the holidays.
    """
    if not due:
        return None
    start = start or now_utc()
    if "hours" in due:
        return start + timedelta(hours=float(due["hours"]))
    days = int(due["working_days"])
    calendar = find_service(loaded_registry(), ADD_WORKING_DAYS)
    if calendar is None:
        raise CareloopError("working days need the hospital calendar: the service "
                            "'calendar.add_working_days' is not registered")
    return calendar(session, start, days, due.get("calendar")).astimezone(start.tzinfo)


def create_task(session: Session, *, title: str, assignee: Assignee, actor: str,
                patient_id: str | None = None, encounter_id: str | None = None,
                priority: str = "normal", due_at: datetime | None = None, kind: str = "todo",
                source_type: str | None = None, source_ref: str | None = None,
                idempotency_key: str | None = None, form_key: str | None = None,
                escalation: dict[str, Any] | None = None,
                details: dict[str, Any] | None = None,
                new_key: bool = False, flush: bool = True) -> tuple[Task, bool]:
    """Create a task unless its idempotency key exists already; returns ``(task, created)``.
    ``new_key``: the caller knows no task can hold the key yet (not looked up; the unique
    index still guards it). ``flush=False``: the task is written with the session's next flush
    (its id unknown until then) and its ``created`` history row at commit, with the
    transaction's other deferred rows (a flow batch's tasks: one ``INSERT`` each table)."""
    if idempotency_key is not None and not new_key:
        existing = session.scalars(select(Task).where(
            Task.idempotency_key == idempotency_key)).first()
        if existing is not None:
            return existing, False
    task = Task(title=title, kind=kind, patient_id=patient_id, encounter_id=encounter_id,
                department_id=assignee.department_id, assignee_user_id=assignee.user_id,
                assignee_role=assignee.role, priority=priority, status="open", due_at=due_at,
                escalation=escalation or {}, source_type=source_type, source_ref=source_ref,
                idempotency_key=idempotency_key, form_key=form_key, details=details or {},
                created_at=now_utc())
    session.add(task)
    if not flush:
        txcache.defer(session, TaskHistory, {
            "task_id": txcache.Later(task), "at": now_utc(), "actor": actor,
            "action": "created", "details": {"priority": priority}})
        return task, True
    session.flush()
    add_history(session, task, actor, "created", {"priority": priority})
    return task, True


def add_history(session: Session, task: Task, actor: str, action: str,
                details: dict[str, Any] | None = None) -> None:
    session.add(TaskHistory(task_id=task.id, at=now_utc(), actor=actor, action=action,
                            details=details or {}))


DEFAULT_ESCALATION_DUE = {"hours": 24}
# A task escalated by hand that declares no chain goes to these, in order.
MANUAL_ESCALATION = ({"role": "dept_director"}, {"role": "px_office"})


def escalate_task(session: Session, task: Task, *, actor: str,
                  due: Mapping[str, Any] | None = None, priority: str | None = "urgent",
                  event_id: str | None = None,
                  chain: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
    """Move an open task one level up the escalation chain it was created with.

    The chain is data in the definition that created the task (a rule's ``create_task
    escalation:``, a flow step's ``escalate_to:``): each level names a role (within the task's
    department unless it names one) and may say when that level is due (else ``due``, else 24
    hours). Returns the chain level moved to, or None when the chain is exhausted or the task is
    closed. The sweep calls this for every overdue task (:func:`escalate_overdue`).
    """
    if task.status not in ("open", "in_progress"):
        return None
    declared = list((task.escalation or {}).get("chain", []))
    steps = declared or list(chain or [])
    level = int((task.escalation or {}).get("level", 0))
    if level >= len(steps):
        return None
    step = dict(steps[level])
    rule = {k: v for k, v in step.items() if k != "due"}
    if "role" in rule and not rule.get("department") and task.department_id:
        rule["department"] = task.department_id
    assignee = resolve_assignee(session, rule, patient_id=task.patient_id,
                                encounter_id=task.encounter_id)
    before = {"user": task.assignee_user_id, "role": task.assignee_role}
    task.assignee_user_id, task.assignee_role = assignee.user_id, assignee.role
    task.department_id = assignee.department_id or task.department_id
    task.escalation = {"chain": steps, "level": level + 1}
    task.due_at = due_at(step.get("due") or due or DEFAULT_ESCALATION_DUE, session=session)
    if priority:
        task.priority = priority
    add_history(session, task, actor, "escalated",
                {"level": level + 1, "role": assignee.role, "from": before,
                 **({"event_id": event_id} if event_id else {})})
    session.flush()
    return step


def escalate_overdue(session: Session, task: Task, *, event_id: str | None = None) -> bool:
    """The sweep's part: an overdue task that declares a chain moves one level up it."""
    if not (task.escalation or {}).get("chain"):
        return False
    return escalate_task(session, task, actor="system", event_id=event_id) is not None


def complete_task(session: Session, task: Task, *, actor: str, outcome: str | None = None,
                  notes: str | None = None) -> Task | None:
    """Close a task and do what its definition declared for completion (``on_complete``).

    ``on_complete`` is copied into ``task.details`` by whatever created the task::

        on_complete:
          status: resolved                   # the submission that caused the task → this status
          retry:                             # these outcomes schedule the same task again
            outcomes: [not_reached]
            after: {working_days: 1}
            attempts: 3                      # in all, the first one included

    Returns the retry task when one was scheduled.
    """
    if task.status in ("done", "cancelled"):
        raise CareloopError(f"task {task.id} is already {task.status}")
    task.status, task.outcome, task.notes = "done", outcome, notes
    task.completed_at = now_utc()
    add_history(session, task, actor, "completed", {"outcome": outcome})
    declared = (task.details or {}).get("on_complete") or {}
    retry = declared.get("retry") or {}
    attempt = int((task.details or {}).get("attempt", 1))
    if outcome is not None and outcome in retry.get("outcomes", ()):
        if attempt < int(retry.get("attempts", 3)):
            return _retry(session, task, actor, retry, attempt)
        add_history(session, task, "system", "retries_exhausted", {"attempts": attempt})
    status = declared.get("status")
    submission_id = (task.details or {}).get("submission_id")
    if status and submission_id is not None:
        setter = find_service(loaded_registry(), SET_SUBMISSION_STATUS)
        if setter is not None:
            setter(session, int(submission_id), str(status), actor=actor)
    return None


def _retry(session: Session, task: Task, actor: str, retry: Mapping[str, Any],
           attempt: int) -> Task:
    after = retry.get("after") or {"working_days": 1}
    if isinstance(after, str):  # a flow's duration: "30m", "4h", "1d", "1w"
        unit = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[after[-1]]
        due: datetime | None = now_utc() + timedelta(**{unit: int(after[:-1])})
    else:
        due = due_at(after, session=session)
    key = f"{task.idempotency_key or f'task:{task.id}'}:attempt{attempt + 1}"[:255]
    chain = list((task.escalation or {}).get("chain", []))
    again, _ = create_task(
        session, title=task.title, kind=task.kind, actor="system", patient_id=task.patient_id,
        encounter_id=task.encounter_id, priority=task.priority, due_at=due,
        assignee=Assignee(task.assignee_user_id, task.assignee_role, task.department_id),
        source_type=task.source_type, source_ref=task.source_ref, idempotency_key=key,
        form_key=task.form_key, escalation={"chain": chain, "level": 0} if chain else {},
        details={**(task.details or {}), "attempt": attempt + 1, "retry_of": task.id})
    add_history(session, task, actor, "retry_scheduled",
                {"task_id": again.id, "attempt": attempt + 1,
                 "due_at": due.isoformat() if due else None})
    return again


def sla_state(task: Task, now: datetime | None = None) -> str:
    """``done``, ``overdue``, ``due_soon`` (within 4 hours), ``on_track`` or ``no_due``."""
    if task.status in ("done", "cancelled"):
        return "done"
    if task.due_at is None:
        return "no_due"
    now = now or now_utc()
    if task.due_at <= now:
        return "overdue"
    return "due_soon" if (task.due_at - now).total_seconds() <= 4 * 3600 else "on_track"


# The HIS events that cancel an encounter (HL7 A11 cancel admit, A13 cancel discharge): whatever
# was planned for the stay or the discharge is no longer needed.
ENCOUNTER_CANCELLED = ("encounter.admission_cancelled", "encounter.discharge_cancelled")


def cancel_encounter_tasks(session: Session, encounter_id: str, *, reason: str, why: str,
                           event_id: str | None = None, actor: str = "his") -> list[Task]:
    """Cancel the open tasks of a cancelled encounter (any source: rule, flow, staff); each gets
    a history entry and an audit row saying ``why`` in words. Returns the tasks cancelled."""
    from careloop.engine import audit

    cancelled = list(session.scalars(select(Task).where(
        Task.encounter_id == encounter_id, Task.status.in_(("open", "in_progress")))
        .order_by(Task.id)).all())
    for task in cancelled:
        task.status = "cancelled"
        add_history(session, task, actor, "cancelled", {"reason": reason, "why": why})
        audit.append(session, actor=actor, action="task.cancelled", object_type="task",
                     object_id=str(task.id), patient_id=task.patient_id,
                     details={"reason": reason, "why": why, "event_id": event_id})
    session.flush()
    return cancelled
