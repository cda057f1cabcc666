"""Read-back of runs, incidents and the outbox as JSON (API and CLI); ids only, no names."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.flows.models import FlowRun, FlowTimer, Incident, OutboxMessage, RunHistory, StepRun


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def run_json(session: Session, run_id: int) -> dict[str, Any] | None:
    run = session.get(FlowRun, run_id)
    if run is None:
        return None
    steps = session.scalars(select(StepRun).where(StepRun.run_id == run_id)
                            .order_by(StepRun.id)).all()
    timers = session.scalars(select(FlowTimer).where(FlowTimer.run_id == run_id,
                                                     FlowTimer.status == "pending")
                             .order_by(FlowTimer.due_at)).all()
    hist = session.scalars(select(RunHistory).where(RunHistory.run_id == run_id)
                           .order_by(RunHistory.id)).all()
    return {
        "id": run.id, "flow": run.flow_key, "version": run.flow_version, "status": run.status,
        "patient_id": run.patient_id, "encounter_id": run.encounter_id,
        "started_at": _iso(run.started_at), "finished_at": _iso(run.finished_at),
        "steps": [{"id": s.id, "key": s.step_key, "type": s.step_type, "status": s.status,
                   "waiting_for": s.waiting_for, "attempts": s.attempts, "error": s.error}
                  for s in steps],
        "waiting": [{"step_run_id": t.step_run_id, "purpose": t.purpose,
                     "due_at": _iso(t.due_at)} for t in timers],
        "history": [{"at": _iso(h.at), "step": h.step_key, "action": h.action,
                     "details": h.details} for h in hist],
    }


def runs_json(session: Session, *, patient_id: str | None = None, status: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
    query = select(FlowRun).order_by(FlowRun.id.desc()).limit(limit)
    if patient_id:
        query = query.where(FlowRun.patient_id == patient_id)
    if status:
        query = query.where(FlowRun.status == status)
    return [{"id": r.id, "flow": r.flow_key, "version": r.flow_version, "status": r.status,
             "patient_id": r.patient_id, "encounter_id": r.encounter_id,
             "started_at": _iso(r.started_at)} for r in session.scalars(query).all()]


def incidents_json(session: Session, status: str = "open") -> list[dict[str, Any]]:
    rows = session.scalars(select(Incident).where(Incident.status == status)
                           .order_by(Incident.id)).all()
    return [{"id": i.id, "run_id": i.run_id, "step": i.step_key, "error": i.error,
             "status": i.status, "created_at": _iso(i.created_at)} for i in rows]


def outbox_json(session: Session, *, status: str | None = None,
                limit: int = 100) -> list[dict[str, Any]]:
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if status:
        query = query.where(OutboxMessage.status == status)
    return [{"id": m.id, "template": m.template_key, "channel": m.channel,
             "patient_id": m.patient_id, "status": m.status, "reason": m.reason,
             "attempts": m.attempts, "urgent": m.urgent, "created_at": _iso(m.created_at),
             "expires_at": _iso(m.expires_at),
             "next_attempt_at": _iso(m.next_attempt_at), "sent_at": _iso(m.sent_at)}
            for m in session.scalars(query).all()]
