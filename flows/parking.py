"""HIS events parked until their patient arrives, and the incident for one parked too long.

The HIS's interfaces are not ordered: a discharge may arrive before the patient's record. Such an
event is kept in the integration queue (``integration_queue``, ``reason = unknown_patient``) and
answered 202; :func:`replay_waiting` applies it, once, in the transaction that brings the patient
(``patient.upserted``), and the ``integration.parked`` tick (:func:`sweep_parked`) applies those
whose patient arrived another way (created by an administrator, or committed while the event was
being parked). One still parked after ``CARELOOP_PARKED_HORIZON_HOURS`` (default 24) raises an
incident: audited ``integration.parked_overdue``, logged, listed first on ``/admin/integration``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import audit
from careloop.engine.clock import now_utc
from careloop.engine.domain import Patient
from careloop.flows.models import ParkedEvent

log = logging.getLogger("careloop.flows")

UNKNOWN_PATIENT = "unknown_patient"


def parked_body(item: ParkedEvent) -> dict[str, Any]:
    """The 202 answer: what the event waits for, in words."""
    body = {"status": "parked", "event_id": item.event_id, "id": item.id,
            "reason": item.reason or "unknown_code", "errors": item.problems.get("errors", [])}
    if item.reason == UNKNOWN_PATIENT:
        body["message"] = (f"parked until patient {item.patient_id!r} arrives "
                           "(patient.upserted); it is applied then, once — no need to resend")
    else:
        body["message"] = "parked until IT sets up the unknown codes and retries it"
    return body


def replay_waiting(session: Session, patient_id: str, actor: str = "replay", *,
                   items: Sequence[ParkedEvent] | None = None) -> int:
    """Ingest the events parked for ``patient_id`` (in the order received), now the patient
    exists; returns how many got through. One that fails otherwise stays parked, its new
    problems shown to IT. ``items``: those events, when the caller read them already (the
    events API reads them with the event's own parked row)."""
    from careloop.flows.ingest import ingest  # ingest replays through here: imported late

    if items is None:
        items = session.scalars(select(ParkedEvent).where(
            ParkedEvent.status == "parked", ParkedEvent.reason == UNKNOWN_PATIENT,
            ParkedEvent.patient_id == patient_id)
            .order_by(ParkedEvent.received_at, ParkedEvent.id)).all()
    done = 0
    for item in items:
        item.attempts += 1
        try:
            with session.begin_nested():
                status, body = ingest(session, dict(item.event), source=item.source)
        except IntegrityError:
            status, body = 409, {"errors": [{"path": "$.payload", "message": "conflicts with "
                                             "data already stored"}]}
        if status == 200:
            item.status, item.resolved_at, item.resolved_by = "accepted", now_utc(), actor
            done += 1
        elif status != 202:
            item.reason, item.problems = "refused", {"errors": body.get("errors", [])}
    session.flush()
    return done


PARKED_HORIZON_ENV = "CARELOOP_PARKED_HORIZON_HOURS"


def parked_horizon() -> timedelta:
    """How long an event may wait parked before the integration page shows an incident
    (``CARELOOP_PARKED_HORIZON_HOURS``, default 24)."""
    text = os.environ.get(PARKED_HORIZON_ENV, "").strip() or "24"
    try:
        hours = float(text)
    except ValueError:
        raise ValueError(f"{PARKED_HORIZON_ENV} must be a number of hours, not {text!r}") from None
    if hours <= 0:
        raise ValueError(f"{PARKED_HORIZON_ENV} must be more than 0 hours, not {text!r}")
    return timedelta(hours=hours)


def sweep_parked(session: Session, now: datetime | None = None) -> dict[str, int]:
    """The ``integration.parked`` tick's work: replay what waits for a patient who now exists
    (created by another path), and raise an incident (audited, shown on ``/admin/integration``)
    for each event parked longer than :func:`parked_horizon`."""
    now = now or now_utc()
    arrived = session.scalars(select(ParkedEvent.patient_id).distinct().join(
        Patient, Patient.id == ParkedEvent.patient_id).where(
        ParkedEvent.status == "parked", ParkedEvent.reason == UNKNOWN_PATIENT)).all()
    replayed = sum(replay_waiting(session, pid, actor="sweep") for pid in arrived if pid)
    stale = session.scalars(select(ParkedEvent).where(
        ParkedEvent.status == "parked", ParkedEvent.incident_at.is_(None),
        ParkedEvent.received_at <= now - parked_horizon()).order_by(ParkedEvent.id)).all()
    for item in stale:
        item.incident_at = now
        audit.append(session, actor="system", action="integration.parked_overdue",
                     object_type="parked_event", object_id=str(item.id),
                     details={"event_id": item.event_id, "type": item.type,
                              "reason": item.reason or "unknown_code"})
        log.warning("integration queue: parked event %s (%s) has waited longer than %s",
                    item.id, item.type, parked_horizon())
    session.flush()
    return {"replayed": replayed, "incidents": len(stale)}


def parked_tick(engine: Engine) -> None:
    """The ``integration.parked`` tick."""
    from careloop.engine.db import transaction

    with transaction(engine) as session:
        sweep_parked(session)
