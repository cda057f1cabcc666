"""Tasks (to-do items) and the assignee rules that rules and flows share.

An assignee is written the same way in a rule's ``create_task`` and a flow's ``create_task`` step::

    {"role": "head_nurse"}                 # that role within the patient's department
    {"role": "dept_director", "department": "cardiology"}
    {"relation": "responsible_nurse"}      # a person related to the encounter
    {"user": "zhang_wei"}                  # one user by username
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.context import latest_encounter as latest_encounter  # re-exported
from careloop.engine.context import pick_encounter
from careloop.engine.domain import RoleGrant, Task, TaskHistory, User
from careloop.engine.errors import CareloopError

RELATIONS = ("responsible_nurse", "attending_doctor")
PRIORITIES = ("urgent", "high", "normal", "low")


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
        raise AssigneeError(f"role '{role}' needs the patient's department")
    holders = session.scalars(select(RoleGrant.user_id).where(
        RoleGrant.role == role, RoleGrant.department_id == department)).all()
    # One holder: assign to them directly; several or none: the role's queue in that department.
    return Assignee(holders[0] if len(holders) == 1 else None, role, department)


def create_task(session: Session, *, title: str, assignee: Assignee, actor: str,
                patient_id: str | None = None, encounter_id: str | None = None,
                priority: str = "normal", due_at: datetime | None = None, kind: str = "todo",
                source_type: str | None = None, source_ref: str | None = None,
                idempotency_key: str | None = None, form_key: str | None = None,
                escalation: dict[str, Any] | None = None,
                details: dict[str, Any] | None = None) -> tuple[Task, bool]:
    """Create a task unless its idempotency key exists already; returns ``(task, created)``."""
    if idempotency_key is not None:
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
    session.flush()
    add_history(session, task, actor, "created", {"priority": priority})
    return task, True


def add_history(session: Session, task: Task, actor: str, action: str,
                details: dict[str, Any] | None = None) -> None:
    session.add(TaskHistory(task_id=task.id, at=now_utc(), actor=actor, action=action,
                            details=details or {}))


def complete_task(session: Session, task: Task, *, actor: str, outcome: str | None = None,
                  notes: str | None = None) -> None:
    task.status, task.outcome, task.notes = "done", outcome, notes
    task.completed_at = now_utc()
    add_history(session, task, actor, "completed", {"outcome": outcome})


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
