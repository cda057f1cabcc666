"""``ingest_many`` answers as ``ingest`` one event at a time would: a batch mixing new patients,
the same patient twice, an identical re-send, another patient's MRN, an invalid event, a
discharge for a patient the batch brings and one parked before it — each answered and stored as
the events API would, in one transaction, with the handlers run."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.models import DomainEventRow
from careloop.flows.ingest import ingest
from careloop.flows.ingest_batch import ingest_many
from careloop.flows.models import HisEventFingerprint, ParkedEvent


def _patient(event_id: str, pid: str, mrn: str, name: str = "张三") -> dict[str, Any]:
    return {"event_id": event_id, "type": "patient.upserted",
            "payload": {"patient_id": pid, "mrn": mrn, "name": name}}


def _discharge(event_id: str, pid: str, encounter: str) -> dict[str, Any]:
    return {"event_id": event_id, "type": "encounter.discharged",
            "payload": {"encounter_id": encounter, "patient_id": pid, "type": "inpatient",
                        "department_id": "cardiology",
                        "discharged_at": "2026-11-30T09:00:00+08:00"}}


def test_a_mixed_batch_is_answered_as_one_event_at_a_time(engine: Engine) -> None:
    with transaction(engine) as session:
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
        assert ingest(session, _patient("p0", "P0", "M0"))[0] == 200
        assert ingest(session, _discharge("d-early", "P2", "E2"))[0] == 202  # parked
    batch = [
        _patient("p1", "P1", "M1"),
        _patient("p0", "P0", "M0"),  # an identical re-send: the original acknowledgement
        _patient("p1b", "P1", "M1", name="张三丰"),  # the same patient again, later
        _patient("p2", "P2", "M2"),  # brings the patient the parked discharge waits for
        _patient("p3", "P3", "M0"),  # another patient's MRN
        {"event_id": "bad", "type": "patient.upserted", "payload": {"patient_id": "P4"}},
        _discharge("d1", "P1", "E1"),  # a patient this batch brought
        _patient("p5", "P5", "M5"),
    ]
    with transaction(engine) as session:
        answers = ingest_many(session, batch, source="test")
    assert [status for status, _ in answers] == [200, 200, 200, 200, 409, 422, 200, 200]
    assert answers[4][1]["errors"][0]["path"] == "$.payload.mrn"
    assert {e["path"] for e in answers[5][1]["errors"]} == {"$.payload"}
    with transaction(engine) as session:
        first = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == "p0")).one()
        assert answers[1][1]["id"] == first.id  # the original, not a new event
        for index in (0, 2, 3, 7):  # each acknowledgement names its own stored row
            row = session.get(DomainEventRow, answers[index][1]["id"])
            assert row is not None and row.event_id == batch[index]["event_id"]
        patient = session.get(Patient, "P1")
        assert patient is not None and patient.name == "张三丰"  # the later row wins
        assert session.get(Patient, "P3") is None
        assert {e.id: e.status for e in session.scalars(select(Encounter))} == {
            "E1": "discharged", "E2": "discharged"}  # the parked one applied once
        parked = session.scalars(select(ParkedEvent)).one()
        assert parked.status == "accepted"
        assert session.scalar(select(func.count()).select_from(DomainEventRow)) == 7
        assert session.scalar(select(func.count()).select_from(HisEventFingerprint)) == 7
