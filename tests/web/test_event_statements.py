"""One HIS event through ``POST /api/v1/events`` costs few statements (counted, not timed).

A new patient's ``patient.upserted`` reads the key, then asks in one statement whether its event
id is stored, parked or waited for and who holds its patient id or MRN; it writes the patient,
the event and its fingerprint in one ``INSERT`` each (no ORM unit of work), then the call's audit
row (on PostgreSQL after the chain's lock). Before: 10 statements on PostgreSQL, 9 on SQLite (the
event id, the parked rows and the patient read apart). An identical re-send reads the stored
event with its fingerprint in one statement; a patient already known is read by its id.
"""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine import audit
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Patient
from careloop.engine.models import AuditRow, DomainEventRow
from careloop.flows.ingest import create_api_key
from careloop.flows.models import ApiKey, HisEventFingerprint
from careloop.web.app import create_app

from ..statements import counted

NEW_PATIENT = {"sqlite": 7, "postgresql": 8}  # before: 9 and 10
RESENT = {"sqlite": 6, "postgresql": 6}  # key, probe, event + fingerprint, lock, head, audit
KNOWN_PATIENT = {"sqlite": 8, "postgresql": 9}  # the patient read, then updated


def _event(n: int, patient: str | None = None, **payload: Any) -> dict[str, Any]:
    patient_id = patient or f"P{n}"
    return {"event_id": f"his-{n}", "type": "patient.upserted",
            "payload": {"patient_id": patient_id, "mrn": f"M-{patient_id}", "name": "测试",
                        **payload}}


def _post(client: TestClient, key: str, engine: Engine, event: dict[str, Any]
          ) -> tuple[Any, list[str]]:
    with counted(engine) as counter:
        answer = client.post("/api/v1/events", json=event, headers={"X-API-Key": key})
    assert counter.transactions == 1, counter.statements
    return answer, counter.statements


def test_a_new_patient_event_costs_few_statements(engine: Engine, dialect: str) -> None:
    with transaction(engine) as session:
        key = create_api_key(session, "his")
    client = TestClient(create_app())
    assert client.post("/api/v1/events", json=_event(0),
                       headers={"X-API-Key": key}).status_code == 200  # the key's last use
    answer, statements = _post(client, key, engine, _event(1, gender="female",
                                                           birth_date="1950-02-03",
                                                           attributes={"ward_bed": "12"}))
    assert answer.status_code == 200, answer.text
    assert len(statements) <= NEW_PATIENT[dialect], "\n".join(statements)
    assert sum(s.startswith("INSERT") for s in statements) == 4, "\n".join(statements)
    ack = answer.json()
    with transaction(engine) as session:  # what the Core inserts wrote
        row = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == "his-1")).one()
        assert (row.id, row.state, row.patient_id, row.type) == (
            ack["id"], "pending", "P1", "patient.upserted")
        assert row.recorded_at.isoformat() == ack["recorded_at"]
        assert "name" not in row.payload  # personal data stays in patients
        patient = session.get(Patient, "P1")
        assert patient is not None
        assert (patient.mrn, patient.name, patient.gender, str(patient.birth_date),
                patient.locale, patient.attributes, patient.consents) == (
            "M-P1", "测试", "female", "1950-02-03", "zh-CN", {"ward_bed": "12"}, {})
        assert session.get(HisEventFingerprint, "his-1") is not None
        assert session.scalars(select(ApiKey.last_used_at)).one() is not None

    # the same event again: the original acknowledgement, nothing written but the audit row
    again, statements = _post(client, key, engine, _event(1, gender="female",
                                                          birth_date="1950-02-03",
                                                          attributes={"ward_bed": "12"}))
    assert again.json() == ack
    assert len(statements) <= RESENT[dialect], "\n".join(statements)
    # the same id with another body: 409 naming the path, found from the fingerprint
    other = _event(1, gender="male", birth_date="1950-02-03", attributes={"ward_bed": "12"})
    conflict, _ = _post(client, key, engine, other)
    assert conflict.status_code == 409
    assert conflict.json()["differing"] == ["$.payload.gender"]

    # a known patient: read once by its id, updated
    update, statements = _post(client, key, engine, _event(2, patient="P1",
                                                           name="改名"))
    assert update.status_code == 200, update.text
    assert len(statements) <= KNOWN_PATIENT[dialect], "\n".join(statements)
    # an MRN another patient holds: 409 at its path
    taken, _ = _post(client, key, engine, {**_event(3, patient="P9"),
                                           "payload": {"patient_id": "P9", "mrn": "M-P1",
                                                       "name": "另一人"}})
    assert taken.status_code == 409
    assert taken.json()["errors"][0]["path"] == "$.payload.mrn"

    drain()
    with transaction(engine) as session:
        patient = session.get(Patient, "P1")
        assert patient is not None and patient.name == "改名"
        assert list(audit.verify(session)) == []
        calls = session.scalars(select(AuditRow.outcome).where(
            AuditRow.action == "api.event").order_by(AuditRow.id)).all()
        assert calls == ["success"] * 6  # every call audited, in one chain
