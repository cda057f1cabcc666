"""Phone follow-up outcomes recorded on a task (kind ``phone_followup``) through the shared
task engine.

    record_phone_outcome(session, task_id, "no_answer", notes="rang twice", actor="nurse_li")
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from careloop.engine.domain import Task
from careloop.engine.errors import CareloopError, did_you_mean
from careloop.engine.tasks import complete_task

PHONE_OUTCOMES = ("reached", "no_answer", "wrong_number", "refused")


class OutcomeError(CareloopError):
    """Raised for an unknown outcome, or a task that is not an open phone follow-up."""


def record_phone_outcome(session: Session, task_id: int, outcome: str, *, actor: str,
                         notes: str | None = None) -> Task:
    """Complete a phone follow-up task with one of :data:`PHONE_OUTCOMES` and notes."""
    if outcome not in PHONE_OUTCOMES:
        hint = did_you_mean(outcome, PHONE_OUTCOMES)
        raise OutcomeError(f"unknown phone outcome '{outcome}'" + (f" ({hint})" if hint else ""))
    task = session.get(Task, task_id)
    if task is None or task.kind != "phone_followup" or task.status not in ("open",
                                                                            "in_progress"):
        raise OutcomeError(f"task {task_id} is not an open phone follow-up")
    complete_task(session, task, actor=actor, outcome=outcome, notes=notes)
    return task
