"""Events in from the HIS: validate, authenticate, store once, acknowledge.

    {"event_id": "his-1", "type": "encounter.discharged", "occurred_at": "…",
     "payload": {"encounter_id": "E1", "patient_id": "P1", …}}

Every problem is reported with its JSON path (``$.payload.discharged_at``), never only the first.
The sender's ``event_id`` is the idempotency key: a duplicate gets the acknowledgement of the
original and changes nothing. ``patient.upserted`` and ``encounter.*`` update the domain tables in
the same transaction, before any engine reacts to the event.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import events
from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Encounter, Patient, PatientTag, User
from careloop.engine.models import DomainEventRow
from careloop.flows import documents
from careloop.flows.models import ApiKey

EVENT_TYPES = ("patient.upserted", "encounter.admitted", "encounter.discharged",
               "encounter.discharge_cancelled", "appointment.booked", "surgery.scheduled",
               "reading.recorded")

_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("a date-time needs a UTC offset")
    return True


@_formats.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if isinstance(value, str):
        date.fromisoformat(value)
    return True


@cache
def _validator(name: str) -> Draft202012Validator:
    text = resources.files("careloop.flows").joinpath("schema", "events", f"{name}.json")
    return Draft202012Validator(json.loads(text.read_text("utf-8")), format_checker=_formats)


def _path(prefix: str, parts: Any) -> str:
    out = prefix
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def problems(event: Any) -> list[dict[str, str]]:
    """Every structural problem of one event, each with its JSON path."""
    found = [{"path": _path("$", e.absolute_path), "message": e.message}
             for e in _validator("envelope").iter_errors(event)]
    if not isinstance(event, dict):
        return found
    kind, payload = event.get("type"), event.get("payload")
    if isinstance(kind, str) and kind not in EVENT_TYPES:
        found.append({"path": "$.type",
                      "message": f"unknown event type {kind!r}; one of: " + ", ".join(EVENT_TYPES)})
    elif isinstance(kind, str) and isinstance(payload, dict):
        found += [{"path": _path("$.payload", e.absolute_path), "message": e.message}
                  for e in _validator(kind).iter_errors(payload)]
    return sorted(found, key=lambda p: p["path"])


def _references(session: Session, kind: str, payload: dict[str, Any]) -> list[dict[str, str]]:
    """Problems only the database can see (an encounter for an unknown patient)."""
    if kind == "patient.upserted" or "patient_id" not in payload:
        return []
    if session.get(Patient, payload["patient_id"]) is None:
        return [{"path": "$.payload.patient_id",
                 "message": f"unknown patient {payload['patient_id']!r}; "
                            "send patient.upserted first"}]
    return []


def acknowledgement(row: DomainEventRow) -> dict[str, Any]:
    return {"status": "accepted", "event_id": row.event_id, "id": row.id, "type": row.type,
            "recorded_at": row.recorded_at.isoformat()}


def ingest(session: Session, event: Any, *, source: str = "his") -> tuple[int, dict[str, Any]]:
    """Validate and store one event; returns ``(http status, body)``: 200 with the
    acknowledgement (the original one for a duplicate) or 422 with every problem."""
    found = problems(event)
    if found:
        return 422, {"status": "rejected", "errors": found}
    existing = session.scalars(select(DomainEventRow).where(
        DomainEventRow.event_id == event["event_id"])).first()
    if existing is not None:
        return 200, acknowledgement(existing)
    payload = event["payload"]
    found = _references(session, event["type"], payload)
    if found:
        return 422, {"status": "rejected", "errors": found}
    upsert_domain(session, event["type"], payload)
    occurred = datetime.fromisoformat(event["occurred_at"]) if event.get("occurred_at") else None
    row, _ = events.record(session, event["type"], _stored_payload(event["type"], payload),
                           event_id=event["event_id"], source=source, occurred_at=occurred)
    return 200, acknowledgement(row)


def _stored_payload(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    # Personal data stays in ``patients``; the event log keeps the patient id only.
    if kind == "patient.upserted":
        return {k: v for k, v in payload.items() if k not in ("name", "phone", "id_number")}
    if kind == "encounter.discharged":  # the patient's documents live in discharge_documents
        return {k: v for k, v in payload.items() if k not in ("summary", "medications")}
    return payload


def _department(session: Session, department_id: str | None) -> None:
    if department_id and session.get(Department, department_id) is None:
        session.add(Department(id=department_id, name={"zh-CN": department_id,
                                                        "en": department_id}))
        session.flush()


def _user_id(session: Session, username: str | None) -> int | None:
    if not username:
        return None
    return session.scalars(select(User.id).where(User.username == username)).first()


def upsert_domain(session: Session, kind: str, payload: dict[str, Any]) -> None:
    if kind == "patient.upserted":
        _upsert_patient(session, payload)
    elif kind in ("encounter.admitted", "encounter.discharged"):
        _upsert_encounter(session, kind, payload)
        if kind == "encounter.discharged":
            documents.store_from_payload(session, payload)
    elif kind == "encounter.discharge_cancelled":
        encounter = session.get(Encounter, payload["encounter_id"])
        if encounter is not None:
            encounter.status, encounter.discharged_at = "admitted", None


def _upsert_patient(session: Session, payload: dict[str, Any]) -> None:
    patient = session.get(Patient, payload["patient_id"])
    if patient is None:
        patient = Patient(id=payload["patient_id"], mrn=payload["mrn"], name=payload["name"],
                          attributes={}, consents={}, created_at=now_utc())
        session.add(patient)
    patient.mrn, patient.name = payload["mrn"], payload["name"]
    for name in ("gender", "phone", "id_number", "locale"):
        if name in payload:
            setattr(patient, name, payload[name])
    if "birth_date" in payload:
        patient.birth_date = date.fromisoformat(payload["birth_date"])
    if "attributes" in payload:
        patient.attributes = {**patient.attributes, **payload["attributes"]}
    if "consents" in payload:
        patient.consents = {**patient.consents, **payload["consents"]}
    patient.updated_at = now_utc()
    session.flush()
    for tag in payload.get("tags", []):
        if session.scalars(select(PatientTag).where(PatientTag.patient_id == patient.id,
                                                    PatientTag.tag == tag)).first() is None:
            session.add(PatientTag(patient_id=patient.id, tag=tag, source="his"))
    session.flush()


def _upsert_encounter(session: Session, kind: str, payload: dict[str, Any]) -> None:
    _department(session, payload["department_id"])
    _department(session, payload.get("ward_id"))
    encounter = session.get(Encounter, payload["encounter_id"])
    if encounter is None:
        encounter = Encounter(id=payload["encounter_id"], patient_id=payload["patient_id"],
                              type=payload["type"], department_id=payload["department_id"],
                              diagnoses={}, procedures={}, created_at=now_utc())
        session.add(encounter)
    encounter.type, encounter.department_id = payload["type"], payload["department_id"]
    encounter.ward_id = payload.get("ward_id", encounter.ward_id)
    for relation in ("attending_doctor", "responsible_nurse"):
        if relation in payload:
            setattr(encounter, f"{relation}_id", _user_id(session, payload[relation]))
    if "admitted_at" in payload:
        encounter.admitted_at = datetime.fromisoformat(payload["admitted_at"])
    if "diagnoses" in payload:
        encounter.diagnoses = {"codes": list(payload["diagnoses"])}
    if "procedures" in payload:
        encounter.procedures = {"codes": list(payload["procedures"])}
    if kind == "encounter.discharged":
        encounter.status = "discharged"
        encounter.discharged_at = datetime.fromisoformat(payload["discharged_at"])
    session.flush()


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_api_key(session: Session, name: str) -> str:
    """Create a key; the plain key is returned once and never stored."""
    key = "clk_" + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, key_hash=hash_key(key), prefix=key[:8], created_at=now_utc()))
    session.flush()
    return key


def authenticate(session: Session, key: str | None) -> ApiKey | None:
    if not key:
        return None
    found = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key),
                                                 ApiKey.revoked_at.is_(None))).first()
    return found
