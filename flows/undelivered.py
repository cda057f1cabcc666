"""What a flow does when a message it sent does not arrive.

The outbox calls :func:`fall_back` when a message written by a flow step ends without reaching
the patient (a dead letter, expired, suppressed by withdrawn consent). The run's history records
``message_undelivered``; a step that declares a fallback takes it::

    - key: day3_form
      type: send_form
      ...
      on_undelivered:
        create_task:
          task_title: {zh-CN: 问卷链接未送达，请电话随访, en: Phone the patient}
          assignee: {relation: responsible_nurse}
          due: 1d

One task per step of a run, however many of its messages (the link, its reminder) failed. The
step keeps waiting for the form: the nurse may read the link out or fill the form on the phone.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.orm import Session

from careloop.engine.i18n import pick
from careloop.engine.tasks import create_task, resolve_assignee
from careloop.flows.models import FlowRun, OutboxMessage
from careloop.flows.runtime import after, history, source_ref, spec_of

log = logging.getLogger("careloop.flows.undelivered")

OPTION = "on_undelivered"


def fall_back(session: Session, message: OutboxMessage) -> None:
    """Tell the run that wrote ``message`` that it was not delivered; take the step's
    declared ``on_undelivered`` fallback."""
    parts = (message.source_ref or "").split(":", 2)
    if len(parts) != 3 or parts[0] != "flow_run" or not parts[1].isdigit() or not parts[2]:
        return
    run = session.get(FlowRun, int(parts[1]))
    if run is None:
        return
    step_key = parts[2]
    history(session, run, step_key, "message_undelivered",
            {"message_id": message.id, "status": message.status, "reason": message.reason})
    if run.status != "running":
        return
    try:
        step = spec_of(session, run).step(step_key)
    except KeyError:
        return
    fallback: dict[str, Any] = dict(step.get(OPTION) or {})
    task = fallback.get("create_task")
    if not task:
        return
    assignee = resolve_assignee(session, dict(task["assignee"]), patient_id=run.patient_id,
                                encounter_id=run.encounter_id)
    title = task["task_title"]
    created, new = create_task(
        session, title=pick(title, "zh-CN")[:255], assignee=assignee, actor="flows",
        patient_id=run.patient_id, encounter_id=run.encounter_id,
        priority=task.get("priority", "high"),
        due_at=after(task["due"]) if task.get("due") else None,
        kind=task.get("task_kind", "phone_followup"), source_type="flow",
        source_ref=source_ref(run, step_key),
        idempotency_key=f"{source_ref(run, step_key)}:undelivered",
        escalation={"chain": list(task.get("escalate_to") or []), "level": 0},
        details={"title": dict(title), "flow": run.flow_key, "run_id": run.id,
                 "undelivered_message_id": message.id})
    if new:
        history(session, run, step_key, "undelivered_fallback", {"task_id": created.id})
