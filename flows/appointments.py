"""An appointment moved or cancelled by the HIS: what was scheduled for it follows.

A run started by an ``appointment.booked`` event keeps that event as ``_event`` in its context;
its waits compute their time from it (``until: {base: "add_days(event.scheduled_at, -1)"}``)::

    appointment.booked       {appointment_id: A1, scheduled_at: 2026-12-10T09:00+08:00}
        → revisit_reminder run, its wait's timer at 2026-12-09 10:00
    appointment.rescheduled  {appointment_id: A1, scheduled_at: 2026-12-15T09:00+08:00}
        → the run's ``_event`` takes the new time (and department, when sent); the waiting
          step's pending timer is cancelled and one new timer set at 2026-12-14 10:00
    appointment.cancelled    {appointment_id: A1}
        → the run is cancelled: its timers, unsent messages and open tasks with it

A reschedule that finds no running run of the appointment but a completed one (the reminder of
the old time was already sent) starts that flow again from the booking with the new time, once
per event and flow, when the new time is still ahead: the reminder then comes for the new time.

Only runs of the same patient and the same ``appointment_id`` are touched; another appointment
of the patient keeps its reminders. A wait for a ``duration`` (counted from when the step began)
is left alone: only a wait ``until`` a time computed from the run's data is computed again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.clock import now_utc
from careloop.engine.models import DomainEventRow
from careloop.flows.models import FlowRun, FlowTimer, StepRun
from careloop.flows.runtime import Exec, complete_run, history, spec_of, start
from careloop.flows.spec import FlowSpec
from careloop.flows.steps import until_time

BOOKED = "appointment.booked"
RESCHEDULED = "appointment.rescheduled"
CANCELLED = "appointment.cancelled"
# What a reschedule may change in the booking the run started from.
MOVABLE = ("scheduled_at", "department_id", "kind")


def runs_of(session: Session, patient_id: str, appointment_id: str,
            status: str = "running") -> list[FlowRun]:
    """The runs in ``status`` a booking of this appointment started (oldest first)."""
    runs = session.scalars(select(FlowRun).where(
        FlowRun.status == status, FlowRun.patient_id == patient_id)
        .order_by(FlowRun.id)).all()
    return [run for run in runs
            if ((run.context or {}).get("_event") or {}).get("appointment_id") == appointment_id]


def handle(session: Session, event: DomainEventRow) -> None:
    """Move or cancel the runs of the event's appointment (called by the flows handler before
    any run resumes or starts on the event)."""
    payload = event.payload
    patient_id, appointment_id = payload.get("patient_id"), payload.get("appointment_id")
    if not isinstance(patient_id, str) or not isinstance(appointment_id, str):
        return
    if event.type == CANCELLED:
        for run in runs_of(session, patient_id, appointment_id):
            complete_run(session, run, "cancelled", CANCELLED)
    elif event.type == RESCHEDULED:
        running = runs_of(session, patient_id, appointment_id)
        for run in running:
            reschedule(session, run, payload)
        if not running:
            start_again(session, event, patient_id, appointment_id)


def reschedule(session: Session, run: FlowRun, payload: dict[str, Any]) -> None:
    """Give the run the appointment's new time and compute its pending waits again."""
    context = dict(run.context or {})
    before = dict(context.get("_event") or {})
    moved = _moved(run, payload)
    run.context = {**context, "_event": moved}  # a new dict: the JSON column sees the change
    history(session, run, None, "rescheduled", {"from": before.get("scheduled_at"),
                                                "to": moved.get("scheduled_at")})
    spec = spec_of(session, run)
    waiting = session.scalars(select(StepRun).where(
        StepRun.run_id == run.id, StepRun.status == "waiting",
        StepRun.waiting_for == "timer")).all()
    for step_run in waiting:
        step = spec.step(step_run.step_key)
        if not step.get("until"):
            continue
        x = Exec(session, run, spec, step, step_run)
        due = until_time(x)
        session.execute(update(FlowTimer).where(
            FlowTimer.step_run_id == step_run.id, FlowTimer.purpose == "resume",
            FlowTimer.status == "pending").values(status="cancelled"))
        x.timer("resume", due)
        x.history("waiting", {"until": due.isoformat(), "rescheduled": True})
    session.flush()


def _moved(run: FlowRun, payload: dict[str, Any]) -> dict[str, Any]:
    before = dict((run.context or {}).get("_event") or {})
    return {**before, **{k: payload[k] for k in MOVABLE if k in payload}}


def start_again(session: Session, event: DomainEventRow, patient_id: str,
                appointment_id: str) -> list[int]:
    """Start again the flows whose run for this appointment completed (the old time's reminder
    went out), from the booking with the new time; returns the new runs' ids."""
    new_time = datetime.fromisoformat(str(event.payload["scheduled_at"]))
    if new_time <= now_utc():
        return []
    latest = {run.flow_key: run for run in runs_of(session, patient_id, appointment_id,
                                                   status="completed")}
    started: list[int] = []
    for flow_key, run in latest.items():
        row = store.current(session, "flow", flow_key)
        if row is None or store.compile_row(row, FlowSpec).trigger.event != BOOKED:
            continue
        spec = store.compile_row(row, FlowSpec)
        try:
            with session.begin_nested():
                started.append(start(
                    session, flow_key=flow_key, patient_id=patient_id,
                    context={"_event": _moved(run, event.payload)},
                    idempotency_key=f"{flow_key}:{event.event_id}",
                    once_key=spec.trigger.once_key(flow_key, patient_id, None)))
        except IntegrityError:  # the flow's ``once`` is held by another run
            continue
    return started
