"""The expression context of a run (contract 5): ``patient``, ``encounter``, ``event``, ``context``…

Only derived, non-identifying patient data goes in (age, gender, tags, attributes): expressions
never see names, phone numbers or ID numbers.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc, to_local
from careloop.engine.domain import Encounter, Patient, PatientTag


def _age(birth: date | None, today: date) -> int | None:
    if birth is None:
        return None
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def patient_context(session: Session, patient_id: str | None) -> dict[str, Any]:
    patient = session.get(Patient, patient_id) if patient_id else None
    if patient is None:
        return {}
    tags = session.scalars(select(PatientTag.tag).where(PatientTag.patient_id == patient.id)).all()
    return {"id": patient.id, "age": _age(patient.birth_date, to_local(now_utc()).date()),
            "gender": patient.gender, "tags": sorted(tags), "attributes": patient.attributes,
            "locale": patient.locale}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def encounter_context(session: Session, encounter_id: str | None) -> dict[str, Any]:
    encounter = session.get(Encounter, encounter_id) if encounter_id else None
    if encounter is None:
        return {}
    return {"id": encounter.id, "type": encounter.type, "department": encounter.department_id,
            "ward": encounter.ward_id, "status": encounter.status,
            "diagnoses": list(encounter.diagnoses.get("codes", [])),
            "procedures": list(encounter.procedures.get("codes", [])),
            "admitted_at": _iso(encounter.admitted_at),
            "discharged_at": _iso(encounter.discharged_at)}


def build(session: Session, *, patient_id: str | None, encounter_id: str | None,
          context: dict[str, Any], event: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything an expression in a flow may read."""
    last = context.get("_last_answers") or {}
    return {"patient": patient_context(session, patient_id),
            "encounter": encounter_context(session, encounter_id),
            "event": event if event is not None else context.get("_event", {}),
            "context": context, "answers": last.get("answers", {}),
            "scores": last.get("scores", {}), "bands": last.get("bands", {}),
            "reading": context.get("_reading", {}), "task": context.get("_task", {})}
