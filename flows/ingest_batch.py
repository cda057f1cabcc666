"""HIS events in by the batch: :func:`ingest_many` answers as :func:`careloop.flows.ingest.ingest`
called on each event in order would, in the caller's transaction, with set-based reads and
writes for the common case (a patient import: 500 ``patient.upserted`` a batch).

    ingest_many(session, [{"event_id": "import-P1-…", "type": "patient.upserted",
                           "payload": {"patient_id": "P1", "mrn": "M1", "name": "张三"}}, …])
    → [(200, {"status": "accepted", "event_id": "import-P1-…", …}), …]

A *wave* is a run of new ``patient.upserted`` events naming distinct event ids, patients and
MRNs: its MRN owners are read in one query, its patients in one, the patient rows written in
one flush, its events stored by :func:`careloop.engine.events.record_many` (one insert, then each
event dispatched to every handler, in order), its fingerprints in one insert, and the events
parked for its patients looked up in one query. Everything else — a re-sent or parked event id,
a correction, another type, a payload naming reference data — ends the wave and goes through
``ingest`` itself, so validation, conflicts, parking and the handlers are the events API's own.
Within a wave every patient row is written before the first event is dispatched; a handler
reads its own event's patient, which is the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import events
from careloop.engine.domain import Patient
from careloop.engine.models import DomainEventRow
from careloop.flows import parking, resend
from careloop.flows.ingest import (
    DEPARTMENT_FIELDS,
    STAFF_FIELDS,
    _stored_payload,
    acknowledgement,
    his_tags,
    ingest,
    problems,
    set_patient,
)
from careloop.flows.models import ParkedEvent

Answer = tuple[int, dict[str, Any]]
_CHUNK = 500  # values per IN (…) list
_FAST = "patient.upserted"


def ingest_many(session: Session, batch: Sequence[Any], *, source: str = "his",
                park: bool | None = None) -> list[Answer]:
    """Validate and store a batch of events; one ``(http status, body)`` per event, in order,
    as :func:`careloop.flows.ingest.ingest` gives them. The caller's transaction holds them all
    (a refused event refuses nothing else: the caller decides whether the batch commits)."""
    found = [problems(event) for event in batch]
    valid = [event for event, errors in zip(batch, found, strict=True) if not errors]
    ids = [event["event_id"] for event in valid]
    taken = _existing(session, ids)
    answers: list[Answer | None] = [None] * len(batch)
    wave: list[int] = []
    held: set[str] = set()  # the wave's event ids, patient ids and MRNs
    seen: set[str] = set()  # every event id handled before in this call
    for index, event in enumerate(batch):
        if found[index]:
            answers[index] = (422, {"status": "rejected", "errors": found[index]})
            continue
        keys = _keys(event)
        fast = keys is not None and event["event_id"] not in taken and \
            event["event_id"] not in seen
        if fast and keys is not None and not keys & held:
            wave.append(index)
            held |= keys
        else:
            _run_wave(session, batch, wave, answers, source)
            wave, held = [], set()
            if fast and keys is not None:
                wave.append(index)
                held |= keys
            else:
                answers[index] = ingest(session, event, source=source, park=park)
        seen.add(event["event_id"])
    _run_wave(session, batch, wave, answers, source)
    return [answer for answer in answers if answer is not None]


def _keys(event: dict[str, Any]) -> set[str] | None:
    """What a wave may hold once (None: the event is not one for a wave)."""
    payload = event["payload"]
    if event["type"] != _FAST or event.get("corrects") or \
            any(name in payload for name in (*DEPARTMENT_FIELDS, *STAFF_FIELDS)):
        return None
    return {f"e:{event['event_id']}", f"p:{payload['patient_id']}", f"m:{payload['mrn']}"}


def _existing(session: Session, ids: list[str]) -> set[str]:
    """The event ids already stored or waiting parked (``ingest`` answers those itself)."""
    found: set[str] = set()
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        found.update(session.scalars(select(DomainEventRow.event_id).where(
            DomainEventRow.event_id.in_(chunk))))
        found.update(session.scalars(select(ParkedEvent.event_id).where(
            ParkedEvent.event_id.in_(chunk), ParkedEvent.status == "parked")))
    return found


def _run_wave(session: Session, batch: Sequence[Any], wave: list[int],
              answers: list[Answer | None], source: str) -> None:
    """Store one wave of new ``patient.upserted`` events (see the module's docstring)."""
    if not wave:
        return
    payloads = {index: batch[index]["payload"] for index in wave}
    owners = _mrn_owners(session, [p["mrn"] for p in payloads.values()])
    kept: list[int] = []
    for index, payload in payloads.items():
        other = owners.get(payload["mrn"])
        if other is not None and other != payload["patient_id"]:
            answers[index] = (409, {"status": "rejected", "errors": [{
                "path": "$.payload.mrn",
                "message": f"this MRN already belongs to another patient ({other}); "
                           "an MRN identifies one patient"}]})
        else:
            kept.append(index)
    if not kept:
        return
    ids = [payloads[index]["patient_id"] for index in kept]
    patients = {p.id: p for start in range(0, len(ids), _CHUNK)
                for p in session.scalars(select(Patient).where(
                    Patient.id.in_(ids[start:start + _CHUNK])))}
    for index in kept:
        payload = payloads[index]
        set_patient(session, patients.get(payload["patient_id"]), payload)
    session.flush()
    for index in kept:
        if "tags" in payloads[index]:
            his_tags(session, payloads[index]["patient_id"], payloads[index]["tags"])
    items = [events.NewEvent(type=_FAST, payload=_stored_payload(_FAST, payloads[index]),
                             event_id=batch[index]["event_id"],
                             occurred_at=_occurred(batch[index])) for index in kept]
    rows = events.record_many(session, items, source=source)
    resend.remember_many(session, [batch[index] for index in kept])
    for index, (row, _) in zip(kept, rows, strict=True):
        answers[index] = (200, acknowledgement(row))
    for patient_id in _waiting(session, ids):
        parking.replay_waiting(session, patient_id)


def _occurred(event: dict[str, Any]) -> datetime | None:
    return datetime.fromisoformat(event["occurred_at"]) if event.get("occurred_at") else None


def _mrn_owners(session: Session, mrns: list[str]) -> dict[str, str]:
    owners: dict[str, str] = {}
    for start in range(0, len(mrns), _CHUNK):
        owners.update((mrn, pid) for mrn, pid in session.execute(
            select(Patient.mrn, Patient.id).where(Patient.mrn.in_(mrns[start:start + _CHUNK]))))
    return owners


def _waiting(session: Session, patient_ids: list[str]) -> list[str]:
    """The patients among ``patient_ids`` with events parked until they arrive, in order."""
    found: set[str] = set()
    for start in range(0, len(patient_ids), _CHUNK):
        found.update(p for p in session.scalars(select(ParkedEvent.patient_id).where(
            ParkedEvent.status == "parked", ParkedEvent.reason == parking.UNKNOWN_PATIENT,
            ParkedEvent.patient_id.in_(patient_ids[start:start + _CHUNK]))) if p)
    return [p for p in patient_ids if p in found]
