"""What the task page shows beside the task: where it came from and the patient's recent history.

A task made by a rule on a submission shows the patient's answers, labelled by the form version
they answered, with a link to the submission (a complaint's to the complaint); one made on a
reading shows the reading; every task on a patient shows their latest answers and tasks. A nurse
who holds a phone follow-up task may reveal that patient's phone number from the task page.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.domain import Task
from careloop.engine.models import DomainEventRow
from careloop.web.display import Display, answers_view, local_time, number
from careloop.web.permissions import HiddenStays

PHONE_TASK_KINDS = ("phone_followup", "followup_call")
RECENT = 5


def task_source(session: Session, task: Task, display: Display, *,
                open_patient: bool = True) -> dict[str, Any] | None:
    """``{"kind": "submission" | "complaint" | "reading", …}`` for the task's origin, or
    ``None`` when it has none a person can read. ``href`` is ``None`` when the viewer may not
    open the patient's records (a task copied to them: the answers show here, no dead link)."""
    from careloop.forms.models import Submission

    details = task.details or {}
    submission_id = details.get("submission_id")
    if isinstance(submission_id, int):
        sub = session.get(Submission, submission_id)
        if sub is not None and sub.patient_id == task.patient_id:
            complaint = sub.form_key == "complaint"
            return {"kind": "complaint" if complaint else "submission", "id": sub.id,
                    "href": None if not open_patient
                    else f"/complaints/{sub.id}" if complaint else f"/submissions/{sub.id}",
                    "form": display.label("form", sub.form_key),
                    "version": sub.form_version,
                    "at": local_time(sub.submitted_at),
                    "answers": answers_view(display, sub.form_key, sub.form_version,
                                            sub.answers or {}),
                    "scores": scores_view(display, sub.form_key, sub.form_version,
                                          sub.scores or {}, sub.bands or {})}
    event_id = details.get("event_id")
    if isinstance(event_id, str) and event_id.startswith("reading.recorded"):
        row = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == event_id)).first()
        if row is not None and (row.payload or {}).get("patient_id") == task.patient_id:
            return {"kind": "reading", "text": reading_text(display, row.payload)}
    return None


def scores_view(display: Display, form: str, version: int | None, scores: dict[str, Any],
                bands: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(score label, value at its precision, band label)`` for each score."""
    return [(display.label("score", key, form=form, version=version),
             display.score(form, key, value, version),
             display.label("band", bands.get(key), form=form, version=version, score=key)
             if bands.get(key) else "")
            for key, value in scores.items()]


def reading_text(display: Display, payload: dict[str, Any]) -> str:
    """A reading as words: "血压 165/102 mmHg（医院信息系统，2026-12-08 20:00）"."""
    value = payload.get("value")
    if isinstance(value, dict) and "systolic" in value:
        shown = f"{number(value.get('systolic'))}/{number(value.get('diastolic'))} mmHg"
    elif isinstance(value, dict):
        shown = f"{number(value.get('value'))} {value.get('unit') or ''}".strip()
    else:
        shown = number(value) if isinstance(value, int | float) else str(value or "")
    from careloop.engine.i18n import t

    source = payload.get("source") or "his"
    return t("web.pages.reading_line", display.locale,
             type=display.label("reading", payload.get("type")), value=shown,
             source=display.label("reading_source", source),
             at=local_time(payload.get("measured_at")))


def recent_history(session: Session, task: Task, display: Display, *,
                   hidden: HiddenStays | None = None, open_patient: bool = True,
                   visible_tasks: frozenset[int] | None = None) -> dict[str, Any]:
    """The patient's latest answers and other tasks (newest first), leaving out ``hidden``
    (sensitive) stays; links only where the viewer may open them (``open_patient``, the task
    ids in ``visible_tasks`` — ``None``: all)."""
    from careloop.forms.models import Submission

    if task.patient_id is None:
        return {"submissions": [], "tasks": []}
    hide = hidden or HiddenStays()
    subs = [s for s in session.scalars(
        select(Submission).where(Submission.patient_id == task.patient_id)
        .order_by(Submission.submitted_at.desc(), Submission.id.desc()).limit(50)).all()
        if not hide.hides(s.encounter_id, s.department_id)][:RECENT]
    tasks = [t for t in session.scalars(
        select(Task).where(Task.patient_id == task.patient_id, Task.id != task.id)
        .order_by(Task.created_at.desc(), Task.id.desc()).limit(50)).all()
        if not hide.hides(t.encounter_id, t.department_id)][:RECENT]
    return {
        "submissions": [{"id": s.id, "form": display.label("form", s.form_key),
                         "at": local_time(s.submitted_at),
                         "status": display.label("status", s.status),
                         "href": None if not open_patient
                         else f"/complaints/{s.id}" if s.form_key == "complaint"
                         else f"/submissions/{s.id}",
                         "scores": scores_view(display, s.form_key, s.form_version,
                                               s.scores or {}, s.bands or {})}
                        for s in subs],
        "tasks": [{"id": t.id, "title": t.title, "status": display.label("task_status", t.status),
                   "at": local_time(t.created_at),
                   "href": f"/tasks/{t.id}" if visible_tasks is None or t.id in visible_tasks
                   else None} for t in tasks],
    }


def may_reveal_phone(task: Task, assigned: bool) -> bool:
    """The phone of the task's patient may be revealed by whoever holds this open phone
    follow-up task (the number is what the task needs)."""
    return (assigned and task.patient_id is not None and task.kind in PHONE_TASK_KINDS
            and task.status in ("open", "in_progress"))
