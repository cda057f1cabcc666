"""Events in from the HIS: validate, authenticate, store once, acknowledge.

    {"event_id": "his-1", "type": "encounter.discharged", "occurred_at": "…",
     "payload": {"encounter_id": "E1", "patient_id": "P1", …}}

Every problem is reported with its JSON path (``$.payload.discharged_at``), never only the first.
The sender's ``event_id`` is the idempotency key: a duplicate gets the acknowledgement of the
original and changes nothing. ``patient.upserted`` and ``encounter.*`` update the domain tables in
the same transaction, before any engine reacts to the event.

Departments, wards and staff are reference data the hospital sets up (admin pages, ``careloop
demo seed``); the HIS names them by code and an unknown code is refused with 422 at its path
(``$.payload.department_id: unknown department 'neurology'``) — never created from an event, so
no patient reads a raw code where a department's name belongs. A deployment that prefers to keep
such events sets ``CARELOOP_UNKNOWN_CODES=park``: the event is answered 202 and kept in the
integration queue (``integration_queue``, page ``/admin/integration``) until IT creates the code
and retries it (:func:`retry_parked`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from collections.abc import Sequence
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import events, logs
from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Encounter, Patient, PatientTag, User
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.models import DomainEventRow
from careloop.flows import documents
from careloop.flows.models import ApiKey, ParkedEvent

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


# Payload fields that name reference data, and what they name (the message says which).
DEPARTMENT_FIELDS = {"department_id": "department", "ward_id": "ward"}
STAFF_FIELDS = ("attending_doctor", "responsible_nurse")


UNKNOWN_CODES_ENV = "CARELOOP_UNKNOWN_CODES"


class ParkedEventError(CareloopError):
    """Raised when a parked event cannot be retried or dismissed (it is no longer parked)."""


def parks_unknown_codes() -> bool:
    """Whether this deployment parks events with unknown codes (``CARELOOP_UNKNOWN_CODES=park``)
    instead of refusing them (``refuse``, the default)."""
    mode = os.environ.get(UNKNOWN_CODES_ENV, "refuse").strip() or "refuse"
    if mode not in ("refuse", "park"):
        raise ValueError(f"{UNKNOWN_CODES_ENV} must be 'refuse' or 'park', not {mode!r}")
    return mode == "park"


def _unknown_patient(session: Session, kind: str,
                     payload: dict[str, Any]) -> list[dict[str, str]]:
    if kind != "patient.upserted" and "patient_id" in payload \
            and session.get(Patient, payload["patient_id"]) is None:
        return [{"path": "$.payload.patient_id",
                 "message": f"unknown patient {payload['patient_id']!r}; "
                            "send patient.upserted first"}]
    return []


def unknown_codes(session: Session, payload: dict[str, Any]) -> list[dict[str, str]]:
    """The department, ward and staff codes of an event the hospital has not set up.

    ``{"department_id": "neurology", …}`` → ``[{"path": "$.payload.department_id",
    "message": "unknown department 'neurology'"}]``
    """
    found: list[dict[str, str]] = []
    for name, what in DEPARTMENT_FIELDS.items():
        code = payload.get(name)
        if isinstance(code, str) and session.get(Department, code) is None:
            found.append({"path": f"$.payload.{name}", "message": f"unknown {what} {code!r}"})
    for name in STAFF_FIELDS:
        username = payload.get(name)
        if isinstance(username, str) and _user_id(session, username) is None:
            found.append({"path": f"$.payload.{name}",
                          "message": f"unknown staff member {username!r}"})
    return found


def acknowledgement(row: DomainEventRow) -> dict[str, Any]:
    return {"status": "accepted", "event_id": row.event_id, "id": row.id, "type": row.type,
            "recorded_at": row.recorded_at.isoformat()}


def ingest(session: Session, event: Any, *, source: str = "his",
           park: bool | None = None) -> tuple[int, dict[str, Any]]:
    """Validate and store one event; returns ``(http status, body)``: 200 with the
    acknowledgement (the original one for a duplicate), 422 with every problem, or — when
    ``park`` (default: :func:`parks_unknown_codes`) and the only problems are unknown codes —
    202 with the problems, the event kept in the integration queue."""
    found = problems(event)
    if found:
        return 422, {"status": "rejected", "errors": found}
    existing = session.scalars(select(DomainEventRow).where(
        DomainEventRow.event_id == event["event_id"])).first()
    if existing is not None:
        return 200, acknowledgement(existing)
    payload = event["payload"]
    missing = _unknown_patient(session, event["type"], payload)
    codes = unknown_codes(session, payload)
    if codes and not missing and (parks_unknown_codes() if park is None else park):
        return 202, _park(session, event, codes, source)
    if missing or codes:
        return 422, {"status": "rejected", "errors": missing + codes}
    taken = _mrn_taken(session, event["type"], payload)
    if taken:
        return 409, {"status": "rejected", "errors": taken}
    upsert_domain(session, event["type"], payload)  # other conflicts: see conflict()
    occurred = datetime.fromisoformat(event["occurred_at"]) if event.get("occurred_at") else None
    row, _ = events.record(session, event["type"], _stored_payload(event["type"], payload),
                           event_id=event["event_id"], source=source, occurred_at=occurred)
    _accepted(session, event["event_id"], "his")
    return 200, acknowledgement(row)


def _mrn_taken(session: Session, kind: str, payload: dict[str, Any]) -> list[dict[str, str]]:
    """An MRN is one patient's: the HIS sending it for another patient id is a conflict."""
    if kind != "patient.upserted":
        return []
    other = session.scalars(select(Patient.id).where(
        Patient.mrn == payload["mrn"], Patient.id != payload["patient_id"])).first()
    if other is None:
        return []
    return [{"path": "$.payload.mrn",
             "message": f"this MRN already belongs to another patient ({other}); "
                        "an MRN identifies one patient"}]


_COLUMN = re.compile(r"(?:failed: \w+\.(\w+)|Key \((\w+)[,)])")


def conflict(exc: IntegrityError, event: Any) -> dict[str, Any]:
    """The 409 body for an event the database refused (a unique value another record holds,
    found when the transaction was written): the field's path, never the values (the driver's
    message carries them)."""
    payload = event.get("payload") if isinstance(event, dict) else None
    found = _COLUMN.search(str(exc.orig))
    column = next((g for g in found.groups() if g), None) if found else None
    path = (f"$.payload.{column}" if column and isinstance(payload, dict) and column in payload
            else "$.payload")
    return {"status": "rejected", "errors": [{
        "path": path, "message": "conflicts with data already stored (a unique value belongs "
                                 "to another record)"}]}


def _park(session: Session, event: dict[str, Any], codes: list[dict[str, str]],
          source: str) -> dict[str, Any]:
    """Keep the event for IT (once per event id: a re-sent one keeps the first)."""
    item = session.scalars(select(ParkedEvent).where(
        ParkedEvent.event_id == event["event_id"])).first()
    if item is None:
        item = ParkedEvent(event_id=event["event_id"], type=event["type"], source=source,
                           event=event, problems={"errors": codes}, status="parked",
                           attempts=0, received_at=now_utc())
        session.add(item)
        session.flush()
    return {"status": "parked", "event_id": item.event_id, "id": item.id, "errors": codes}


def _accepted(session: Session, event_id: str, actor: str) -> None:
    """A parked event got through (the HIS re-sent it after IT created the code)."""
    item = session.scalars(select(ParkedEvent).where(ParkedEvent.event_id == event_id,
                                                     ParkedEvent.status == "parked")).first()
    if item is not None:
        item.status, item.resolved_at, item.resolved_by = "accepted", now_utc(), actor


def _parked(session: Session, item_id: int) -> ParkedEvent:
    item = session.get(ParkedEvent, item_id)
    if item is None:
        raise NotFound(f"no parked event {item_id}")
    if item.status != "parked":
        raise ParkedEventError(f"parked event {item_id} is already {item.status}")
    return item


def retry_parked(session: Session, item_id: int, actor: str) -> tuple[int, dict[str, Any]]:
    """Ingest a parked event again (after IT created the code): 200 when it got through (the
    item becomes ``accepted``), else the refusal, the item staying parked with its new problems.
    """
    item = _parked(session, item_id)
    item.attempts += 1
    status, body = ingest(session, dict(item.event), source=item.source, park=False)
    if status == 200:
        item.status, item.resolved_at, item.resolved_by = "accepted", now_utc(), actor
    else:
        item.problems = {"errors": body.get("errors", [])}
    return status, body


def dismiss_parked(session: Session, item_id: int, actor: str) -> None:
    """IT decided the event is not to be processed (sent by mistake, a test system)."""
    item = _parked(session, item_id)
    item.status, item.resolved_at, item.resolved_by = "dismissed", now_utc(), actor


def _stored_payload(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    # Personal data stays in ``patients``; the event log keeps the patient id only.
    if kind == "patient.upserted":
        return {k: v for k, v in payload.items() if k not in ("name", "phone", "id_number")}
    if kind == "encounter.discharged":  # the patient's documents live in discharge_documents
        return {k: v for k, v in payload.items() if k not in ("summary", "medications")}
    return payload


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
    logs.hide(payload.get("name"), payload.get("mrn"), payload.get("birth_date"))
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
    if "tags" in payload:
        _his_tags(session, patient.id, payload["tags"])


def _his_tags(session: Session, patient_id: str, tags: list[str]) -> None:
    """``tags`` is the HIS's whole list: its tags not listed any more are removed (the patient
    left the chronic-care path); tags other engines set (rules, staff) are left alone."""
    held = {row.tag: row for row in session.scalars(select(PatientTag).where(
        PatientTag.patient_id == patient_id)).all()}
    for tag in dict.fromkeys(tags):
        if tag not in held:
            session.add(PatientTag(patient_id=patient_id, tag=tag, source="his"))
    for tag, row in held.items():
        if row.source == "his" and tag not in tags:
            session.delete(row)
    session.flush()


def _upsert_encounter(session: Session, kind: str, payload: dict[str, Any]) -> None:
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


API_SCOPES = ("events:write", "readback:read", "incidents:write", "metrics:read")
DEFAULT_SCOPES = ("events:write",)


class ApiKeyError(ValueError):
    """An API key request that cannot be honoured (unknown scope, taken name, no such key)."""


def create_api_key(session: Session, name: str, *, scopes: Sequence[str] = DEFAULT_SCOPES,
                   expires_at: datetime | None = None, created_by: str | None = None) -> str:
    """Create a key with ``scopes`` (``events:write`` unless told); the plain key is returned
    once and never stored."""
    unknown = sorted(set(scopes) - set(API_SCOPES))
    if unknown or not scopes:
        raise ApiKeyError(f"unknown scope {', '.join(unknown) or '(none)'}; "
                          f"known: {', '.join(API_SCOPES)}")
    if session.scalars(select(ApiKey.id).where(ApiKey.name == name)).first() is not None:
        raise ApiKeyError(f"an API key named {name!r} exists")
    key = "clk_" + secrets.token_urlsafe(32)
    session.add(ApiKey(name=name, key_hash=hash_key(key), prefix=key[:8], created_at=now_utc(),
                       scopes=sorted(set(scopes)), expires_at=expires_at,
                       created_by=created_by))
    session.flush()
    return key


def scopes_of(key: ApiKey) -> tuple[str, ...]:
    """A key's scopes; a key made before scopes existed may only send events."""
    return tuple(key.scopes) if key.scopes is not None else DEFAULT_SCOPES


def key_state(key: ApiKey, now: datetime | None = None) -> str:
    """``active`` | ``revoked`` | ``expired``."""
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= (now or now_utc()):
        return "expired"
    return "active"


def authenticate(session: Session, key: str | None) -> ApiKey | None:
    """The live key (neither revoked nor expired) for a presented key, or None."""
    if not key:
        return None
    found = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_key(key),
                                                 ApiKey.revoked_at.is_(None))).first()
    if found is None or key_state(found) != "active":
        return None
    return found


def list_api_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.name)).all())


def revoke_api_key(session: Session, name_or_id: str | int) -> ApiKey:
    """Revoke a key by name or id (kept, with the time it was revoked)."""
    query = select(ApiKey).where(ApiKey.id == name_or_id) if isinstance(name_or_id, int) \
        else select(ApiKey).where(ApiKey.name == name_or_id)
    found = session.scalars(query).first()
    if found is None:
        raise ApiKeyError(f"no API key {name_or_id!r}")
    if found.revoked_at is None:
        found.revoked_at = now_utc()
        session.flush()
    return found
