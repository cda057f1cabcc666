"""Phone follow-up outcomes recorded on a task (kind ``phone_followup``) through the shared
task engine.

    record_phone_outcome(session, task_id, "not_reached", notes="rang twice", actor="nurse_li")

The outcomes are the console's (:data:`careloop.engine.tasks.OUTCOMES`); what an outcome does next
(call again tomorrow, resolve the answer) is declared by the definition that made the task.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from careloop.engine.domain import Task
from careloop.engine.errors import CareloopError, did_you_mean
from careloop.engine.tasks import OUTCOMES, complete_task

PHONE_OUTCOMES = OUTCOMES


class OutcomeError(CareloopError):
    """Raised for an unknown outcome, or a task that is not an open phone follow-up."""


def record_phone_outcome(session: Session, task_id: int, outcome: str, *, actor: str,
                         notes: str | None = None) -> Task | None:
    """Complete a phone follow-up task with one of :data:`PHONE_OUTCOMES` and notes; returns
    the retry task its definition scheduled for this outcome, if any."""
    if outcome not in PHONE_OUTCOMES:
        hint = did_you_mean(outcome, PHONE_OUTCOMES)
        raise OutcomeError(f"unknown phone outcome '{outcome}'" + (f" ({hint})" if hint else ""))
    task = session.get(Task, task_id)
    if task is None or task.kind != "phone_followup" or task.status not in ("open",
                                                                            "in_progress"):
        raise OutcomeError(f"task {task_id} is not an open phone follow-up")
    return complete_task(session, task, actor=actor, outcome=outcome, notes=notes)
