"""Events in from the HIS: validate, authenticate, store once, acknowledge.

    {"event_id": "his-1", "type": "encounter.discharged", "occurred_at": "…",
     "payload": {"encounter_id": "E1", "patient_id": "P1", …}}

Every problem is reported with its JSON path (``$.payload.discharged_at``), never only the first.
The sender's ``event_id`` is the idempotency key: an identical re-send gets the acknowledgement
of the original and changes nothing; the same id with another body is a 409 naming the differing
paths (:mod:`careloop.flows.resend`). A correction is a new event id with ``"corrects":
"<original id>"`` and the original's type: it updates the domain tables and is recorded as
``his.corrected`` (flows do not start again). An event for a patient not known yet is parked
(202) and applied when the patient arrives (:mod:`careloop.flows.parking`).
``patient.upserted`` and ``encounter.*`` update the domain tables in the same transaction, before
any engine reacts to the event; ``encounter.admission_cancelled`` (HL7 A11) and
``encounter.discharge_cancelled`` (A13) cancel the encounter: its links, tasks, runs and timers.

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
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from sqlalchemy import (
    Integer,
    String,
    bindparam,
    cast,
    insert,
    literal_column,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import events, logs, txcache
from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Encounter, Patient, PatientTag, User
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.models import DomainEventRow
from careloop.engine.plugins import derived, inbound_event_types
from careloop.flows import documents, parking, resend
from careloop.flows.models import ApiKey, HisEventFingerprint, ParkedEvent
from careloop.flows.step_types import inbound_events

EVENT_TYPES = ("patient.upserted", "encounter.admitted", "encounter.discharged",
               "encounter.discharge_cancelled", "encounter.admission_cancelled",
               "appointment.booked", "appointment.rescheduled", "appointment.cancelled",
               "surgery.scheduled", "reading.recorded", "result.recorded")
# What an accepted correction is recorded as (its payload names what it corrected).
CORRECTED = "his.corrected"

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
    if name == "envelope":
        text = resources.files("careloop.flows").joinpath("schema", "events", "envelope.json")
        return Draft202012Validator(json.loads(text.read_text("utf-8")), format_checker=_formats)
    return Draft202012Validator(accepted_event_types()[name], format_checker=_formats)


@cache
def accepted_event_types() -> dict[str, Any]:
    """Every event type the events API accepts and its payload schema: the built-in HIS events
    (:data:`EVENT_TYPES`) and those extensions add (the ``inbound_event_types`` hook)."""
    return dict(inbound_event_types())


derived(accepted_event_types.cache_clear)
derived(_validator.cache_clear)


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
    accepted = accepted_event_types()
    resuming = inbound_events()  # the events registered step types wait for (phone_robot.*)
    if isinstance(kind, str) and kind not in accepted and kind not in resuming:
        known = (*accepted, *sorted(resuming))
        found.append({"path": "$.type",
                      "message": f"unknown event type {kind!r}; one of: " + ", ".join(known)})
    elif isinstance(kind, str) and isinstance(payload, dict):
        validator = (_validator(kind) if kind in accepted
                     else Draft202012Validator(resuming[kind], format_checker=_formats))
        found += [{"path": _path("$.payload", e.absolute_path), "message": e.message}
                  for e in validator.iter_errors(payload)]
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


def _unknown_patient(session: Session, kind: str, payload: dict[str, Any],
                     probe: Probe | None = None) -> list[dict[str, str]]:
    if kind == "patient.upserted" or "patient_id" not in payload:
        return []
    known = (payload["patient_id"] in probe.patients if probe is not None and probe.asked
             else session.get(Patient, payload["patient_id"]) is not None)
    if not known:
        return [{"path": "$.payload.patient_id",
                 "message": f"unknown patient {payload['patient_id']!r}: no "
                            "patient.upserted received for it yet"}]
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


def acknowledgement(row: DomainEventRow | events.StoredEvent) -> dict[str, Any]:
    ack = {"status": "accepted", "event_id": row.event_id, "id": row.id, "type": row.type,
           "recorded_at": row.recorded_at.isoformat()}
    if row.type == CORRECTED:  # what it corrected, the same on a re-send
        ack.update(corrects=row.payload.get("corrects"), corrected=row.payload.get("fields"))
    return ack


def ingest(session: Session, event: Any, *, source: str = "his",
           park: bool | None = None, defer: bool = False) -> tuple[int, dict[str, Any]]:
    """Validate and store one event; returns ``(http status, body)``: 200 with the
    acknowledgement (the original one for an identical re-send), 409 naming the differing paths
    for a known event id with another body, 422 with every problem, or 202 with the event kept in
    the integration queue: for a patient not known yet (replayed when the patient arrives), or —
    when ``park`` (default: :func:`parks_unknown_codes`) and the only problems are unknown codes —
    until IT creates them. ``park=False`` (IT's retry) parks nothing. ``defer=True`` (the events
    API) stores the event for :mod:`careloop.engine.dispatcher` instead of running its handlers
    now: the domain rows are written and the event is stored before the acknowledgement; flows
    and rules react after it."""
    found = problems(event)
    if found:
        return 422, {"status": "rejected", "errors": found}
    probe = _probe(session, event)
    if probe.known is not None:
        existing, kept = session.execute(_KNOWN, {"id": probe.known}).one()
        differing = resend.differing(session, existing, event,
                                     _stored_payload(event["type"], event["payload"]), kept)
        if differing:
            return 409, resend.conflict_body(event["event_id"], differing)
        return 200, acknowledgement(existing)
    waiting, replays = _parked_for(session, event, probe.parked)
    if waiting is not None:
        differing = resend.paths_differ(dict(waiting.event), event)
        if differing:
            return 409, resend.conflict_body(event["event_id"], differing)
    if event.get("corrects"):
        return _correct(session, event, source, defer)
    payload = event["payload"]
    missing = _unknown_patient(session, event["type"], payload, probe)
    codes = unknown_codes(session, payload)
    if missing and park is not False:
        return 202, _park(session, event, missing + codes, source, reason=parking.UNKNOWN_PATIENT,
                          patient_id=payload["patient_id"])
    if codes and not missing and (parks_unknown_codes() if park is None else park):
        return 202, _park(session, event, codes, source, reason="unknown_code")
    if missing or codes:
        return 422, {"status": "rejected", "errors": missing + codes}
    patient, taken = _patient_and_mrn(session, event["type"], payload, probe)
    if taken:
        return 409, {"status": "rejected", "errors": taken}
    upsert_domain(session, event["type"], payload, patient=patient)  # others: see conflict()
    occurred = datetime.fromisoformat(event["occurred_at"]) if event.get("occurred_at") else None
    stored = _stored_payload(event["type"], payload)
    row: DomainEventRow | events.StoredEvent
    if defer:  # the events API: one INSERT, no ORM row (nothing here reads it back)
        row = events.store(session, event["type"], stored, event_id=event["event_id"],
                           source=source, occurred_at=occurred)
    else:
        row, _ = events.record(session, event["type"], stored, event_id=event["event_id"],
                               source=source, occurred_at=occurred,
                               checked=True)  # its id was read above
    resend.remember(session, event)
    _accepted(waiting, "his")
    if replays:
        parking.replay_waiting(session, payload["patient_id"],
                               items=[item for item in replays if item.status == "parked"])
    return 200, acknowledgement(row)


class Probe:
    """What :func:`_probe` found for one event: the id of the stored event with its event id
    (``known``), the ids of the parked rows it concerns (``parked``: its own, and for a
    ``patient.upserted`` those waiting for its patient) and the patients with its patient id
    or MRN (``patients``; ``asked``: whether the patient id was asked about)."""

    __slots__ = ("asked", "known", "parked", "patients")

    def __init__(self, asked: bool) -> None:
        self.known: int | None = None
        self.parked: list[int] = []
        self.patients: set[str] = set()
        self.asked = asked


def _probe_statement() -> Any:
    """Whether an event id is stored, which parked rows an event concerns and which patients
    hold its patient id or MRN: one statement, three indexed branches (built once)."""
    event_id, patient_id = bindparam("event_id", type_=String), bindparam("patient_id",
                                                                          type_=String)
    no_text, no_number = cast(null(), String), cast(null(), Integer)
    known: Any = select(literal_column("'e'"), DomainEventRow.id, no_text).where(
        DomainEventRow.event_id == event_id)
    parked: Any = select(literal_column("'q'"), ParkedEvent.id, no_text).where(
        ParkedEvent.status == "parked", or_(
            ParkedEvent.event_id == event_id,
            (ParkedEvent.reason == parking.UNKNOWN_PATIENT)
            & (ParkedEvent.patient_id == bindparam("waiting_for", type_=String))))
    patients: Any = select(literal_column("'p'"), no_number, Patient.id).where(
        or_(Patient.id == patient_id, Patient.mrn == bindparam("mrn", type_=String)))
    return union_all(known, parked, patients)


_PROBE = _probe_statement()
# A known event id: the stored event and its fingerprint (None: stored before fingerprints).
_KNOWN = (select(DomainEventRow, HisEventFingerprint.fingerprint)
          .outerjoin(HisEventFingerprint, HisEventFingerprint.event_id == DomainEventRow.event_id)
          .where(DomainEventRow.id == bindparam("id")))


def _probe(session: Session, event: dict[str, Any]) -> Probe:
    payload = event["payload"]
    patient_id = payload.get("patient_id")
    asked = isinstance(patient_id, str)
    upsert = event["type"] == "patient.upserted" and asked
    mrn = payload.get("mrn") if upsert else None
    found = Probe(asked)
    # Core, on the session's connection: the ORM's autoflush first (pending rows are read)
    session.flush()
    for what, number, text in session.connection().execute(_PROBE, {
            "event_id": event["event_id"], "patient_id": patient_id if asked else None,
            "waiting_for": patient_id if upsert else None,
            "mrn": mrn if isinstance(mrn, str) else None}):
        if what == "e":
            found.known = number
        elif what == "q":
            found.parked.append(number)
        else:
            found.patients.add(text)
    return found


def _parked_for(session: Session, event: dict[str, Any], ids: list[int] | None = None
                ) -> tuple[ParkedEvent | None, list[ParkedEvent] | None]:
    """This event's id if it is parked, and — for a ``patient.upserted`` — the events parked
    until its patient arrives (:func:`careloop.flows.parking.replay_waiting`), in one read.
    The second is None for other kinds. ``ids``: the parked rows :func:`_probe` found (none:
    nothing is read)."""
    parked = ParkedEvent.status == "parked"
    upsert = event["type"] == "patient.upserted" and isinstance(event.get("payload"), dict)
    if ids is not None and not ids:
        return None, ([] if upsert else None)
    if ids is not None:
        rows = session.scalars(select(ParkedEvent).where(ParkedEvent.id.in_(ids), parked)
                               .order_by(ParkedEvent.received_at, ParkedEvent.id)).all()
        if not upsert:
            return next((row for row in rows if row.event_id == event["event_id"]), None), None
    elif not upsert:
        return session.scalars(select(ParkedEvent).where(
            ParkedEvent.event_id == event["event_id"], parked)).first(), None
    else:
        rows = session.scalars(select(ParkedEvent).where(parked, or_(
            ParkedEvent.event_id == event["event_id"],
            (ParkedEvent.reason == parking.UNKNOWN_PATIENT)
            & (ParkedEvent.patient_id == event["payload"]["patient_id"])))
            .order_by(ParkedEvent.received_at, ParkedEvent.id)).all()
    patient_id = event["payload"]["patient_id"]
    waiting = next((row for row in rows if row.event_id == event["event_id"]), None)
    return waiting, [row for row in rows if row.reason == parking.UNKNOWN_PATIENT
                     and row.patient_id == patient_id]


# --- corrections: a new event id naming the one it corrects ------------------------------------

IDENTITY_FIELDS = ("patient_id", "encounter_id")


def _correct(session: Session, event: dict[str, Any], source: str,
             defer: bool = False) -> tuple[int, dict[str, Any]]:
    """Apply a correction of an accepted event (or of one still parked: its body is replaced)."""
    original_id, payload = event["corrects"], event["payload"]
    original = session.scalars(select(DomainEventRow).where(
        DomainEventRow.event_id == original_id)).first()
    parked = None if original is not None else session.scalars(select(ParkedEvent).where(
        ParkedEvent.event_id == original_id, ParkedEvent.status == "parked")).first()
    if original is not None:
        kind, before = original.type, dict(original.payload)
    elif parked is not None:
        kind, before = parked.type, dict(parked.event.get("payload") or {})
    else:
        return 422, {"status": "rejected", "errors": [{
            "path": "$.corrects", "message": f"unknown event {original_id!r}: a correction "
                                             "names an event already sent"}]}
    errors = [] if event["type"] == kind else [{
        "path": "$.type", "message": f"a correction has the type of the event it corrects "
                                     f"({kind!r})"}]
    errors += [{"path": f"$.payload.{name}",
                "message": f"a correction cannot change {name}; cancel the event and send a "
                           "new one"}
               for name in IDENTITY_FIELDS if before.get(name) != payload.get(name)]
    if errors:
        return 422, {"status": "rejected", "errors": errors}
    corrected = {**{k: v for k, v in event.items() if k != "corrects"}, "event_id": original_id}
    if parked is not None:
        parked.event = corrected
        return 202, parking.parked_body(parked)
    assert original is not None
    differing = resend.differing(session, original, corrected, _stored_payload(kind, payload))
    taken = _mrn_taken(session, kind, payload)
    codes = unknown_codes(session, payload)
    if taken or codes:
        return (409 if taken else 422), {"status": "rejected", "errors": taken + codes}
    upsert_domain(session, kind, payload)
    row, _ = events.record(session, CORRECTED, {
        "corrects": original_id, "type": kind, "fields": differing,
        **{name: payload[name] for name in IDENTITY_FIELDS if name in payload}},
        event_id=event["event_id"], source=source, defer=defer, checked=True)
    resend.remember(session, event)
    return 200, acknowledgement(row)


def _mrn_taken(session: Session, kind: str, payload: dict[str, Any]) -> list[dict[str, str]]:
    """An MRN is one patient's: the HIS sending it for another patient id is a conflict."""
    return _patient_and_mrn(session, kind, payload)[1]


def _patient_and_mrn(session: Session, kind: str, payload: dict[str, Any],
                     probe: Probe | None = None
                     ) -> tuple[Patient | object | None, list[dict[str, str]]]:
    """For a ``patient.upserted``: the patient row of its id (None: a new patient) and the
    conflict of its MRN held by another patient (:func:`_mrn_taken`), in one read (none for a
    new patient when :func:`_probe` asked already). Other kinds: :data:`LOOK_UP` (nothing
    read) and no conflict."""
    if kind != "patient.upserted":
        return LOOK_UP, []
    if probe is not None and probe.asked:
        own = (session.get(Patient, payload["patient_id"])
               if payload["patient_id"] in probe.patients else None)
        other = next((found for found in probe.patients if found != payload["patient_id"]),
                     None)
    else:
        rows = session.scalars(select(Patient).where(
            or_(Patient.id == payload["patient_id"], Patient.mrn == payload["mrn"]))).all()
        own = next((row for row in rows if row.id == payload["patient_id"]), None)
        other = next((row.id for row in rows if row.id != payload["patient_id"]), None)
    if other is None:
        return own, []
    return own, [{"path": "$.payload.mrn",
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
          source: str, *, reason: str, patient_id: str | None = None) -> dict[str, Any]:
    """Keep the event (once per event id: a re-sent one keeps the first): until its patient
    arrives (``unknown_patient``), or for IT (``unknown_code``)."""
    item = session.scalars(select(ParkedEvent).where(
        ParkedEvent.event_id == event["event_id"])).first()
    if item is None:
        item = ParkedEvent(event_id=event["event_id"], type=event["type"], source=source,
                           event=event, problems={"errors": codes}, status="parked",
                           attempts=0, received_at=now_utc(), reason=reason,
                           patient_id=patient_id)
        session.add(item)
        session.flush()
    elif item.status in ("parked", "replaced"):  # replaced: an HL7 replay parks it again
        item.reason, item.patient_id, item.problems = reason, patient_id, {"errors": codes}
        item.status, item.event, item.resolved_at, item.resolved_by = "parked", event, None, None
    return parking.parked_body(item)


def _accepted(item: ParkedEvent | None, actor: str) -> None:
    """A parked event got through (the HIS re-sent it after IT created the code): ``item`` is
    its row, read at the start of :func:`ingest` (None: it was never parked)."""
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
        from careloop.flows.inbound.hl7 import settle_parked

        item.status, item.resolved_at, item.resolved_by = "accepted", now_utc(), actor
        session.flush()
        settle_parked(session, item.event_id)  # the HL7 message it came in is processed
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


# ``upsert_domain(patient=LOOK_UP)``: the patient row is not known yet (read it by its id).
LOOK_UP = object()


def upsert_domain(session: Session, kind: str, payload: dict[str, Any], *,
                  patient: Patient | object | None = LOOK_UP) -> None:
    """The domain rows an event carries. ``patient``: for a ``patient.upserted``, its row as
    already read (None: none yet), so it is not read again."""
    if kind == "patient.upserted":
        _upsert_patient(session, payload, patient)
    elif kind in ("encounter.admitted", "encounter.discharged"):
        _upsert_encounter(session, kind, payload)
        if kind == "encounter.discharged":
            documents.store_from_payload(session, payload)
    elif kind == "encounter.discharge_cancelled":
        encounter = session.get(Encounter, payload["encounter_id"])
        if encounter is not None:
            encounter.status, encounter.discharged_at = "admitted", None
    elif kind == "encounter.admission_cancelled":  # HL7 A11: the stay never happened
        encounter = session.get(Encounter, payload["encounter_id"])
        if encounter is not None:
            encounter.status = "cancelled"


def _upsert_patient(session: Session, payload: dict[str, Any],
                    known: Patient | object | None = LOOK_UP) -> None:
    row = session.get(Patient, payload["patient_id"]) if known is LOOK_UP else known
    assert row is None or isinstance(row, Patient)
    if row is None:
        _insert_patient(session, payload)
    else:  # flushed with what the event writes next (no unit of work of its own)
        set_patient(session, row, payload)
    if "tags" in payload:
        his_tags(session, payload["patient_id"], payload["tags"])


# Built once: a new patient's insert (Core, at once: no unit of work for the new row).
_INSERT_PATIENT = insert(Patient.__table__)  # type: ignore[arg-type]


def _insert_patient(session: Session, payload: dict[str, Any]) -> None:
    """A new patient's row from a ``patient.upserted`` payload: what :func:`set_patient` gives
    a new patient, in one ``INSERT``."""
    logs.hide(payload.get("name"), payload.get("mrn"), payload.get("birth_date"))
    now = now_utc()
    values: dict[str, Any] = {
        "id": payload["patient_id"], "mrn": payload["mrn"], "name": payload["name"],
        "attributes": dict(payload.get("attributes") or {}),
        "consents": dict(payload.get("consents") or {}), "created_at": now, "updated_at": now}
    for name in ("gender", "phone", "id_number", "locale"):
        if name in payload:
            values[name] = payload[name]
    if "birth_date" in payload:
        values["birth_date"] = date.fromisoformat(payload["birth_date"])
    session.connection().execute(_INSERT_PATIENT, values)
    txcache.forget(session, Patient)  # answers read before this row existed


def set_patient(session: Session, patient: Patient | None,
                payload: dict[str, Any]) -> Patient:
    """The patient row of a ``patient.upserted`` payload (added when ``patient`` is None),
    not flushed; the HIS's tags are for the caller (:func:`his_tags`, after the flush)."""
    logs.hide(payload.get("name"), payload.get("mrn"), payload.get("birth_date"))
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
    return patient


def his_tags(session: Session, patient_id: str, tags: list[str]) -> None:
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


API_SCOPES = ("events:write", "readback:read", "incidents:write", "metrics:read", "fhir:write",
              "fhir:read")
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


@dataclass(frozen=True, slots=True)
class LiveKey:
    """A live key as :func:`live_key` read it: what a request's check and its use need."""

    id: int
    name: str
    scopes: tuple[str, ...]
    last_used_at: datetime | None


# Built once: a presented key's live row (Core: the columns a request reads, no ORM row).
_LIVE_KEY = select(ApiKey.id, ApiKey.name, ApiKey.scopes, ApiKey.expires_at,
                   ApiKey.last_used_at).where(ApiKey.key_hash == bindparam("key_hash"),
                                              ApiKey.revoked_at.is_(None)).limit(1)


def live_key(session: Session, key: str | None) -> LiveKey | None:
    """:func:`authenticate` in one prebuilt statement, without an ORM row."""
    if not key:
        return None
    found = session.connection().execute(_LIVE_KEY, {"key_hash": hash_key(key)}).first()
    if found is None or (found.expires_at is not None and found.expires_at <= now_utc()):
        return None
    scopes = tuple(found.scopes) if found.scopes is not None else DEFAULT_SCOPES
    return LiveKey(found.id, found.name, scopes, found.last_used_at)


def key_used(session: Session, key_id: int, at: datetime) -> None:
    """Record a key's last use (one ``UPDATE``; the caller writes it at most once a minute)."""
    session.connection().execute(_KEY_USED, {"key_id": key_id, "at": at})


_KEYS = ApiKey.__table__
_KEY_USED = (update(_KEYS).where(_KEYS.c.id == bindparam("key_id"))  # type: ignore[arg-type]
             .values(last_used_at=bindparam("at", type_=_KEYS.c.last_used_at.type)))


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
