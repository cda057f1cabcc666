"""POST /api/v1/events: API key, 422 with every problem (unknown reference codes included),
duplicates get the original ack; ``careloop events send`` and ``careloop apikey create``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.models import DomainEventRow
from careloop.flows.cli import apikey, events
from careloop.flows.ingest import create_api_key
from careloop.flows.models import ApiKey, FlowRun, OutboxMessage
from careloop.web.app import create_app

PATIENT = {"event_id": "his-1", "type": "patient.upserted",
           "payload": {"patient_id": "P1", "mrn": "M1", "name": "张三",
                       "birth_date": "1950-01-02", "phone": "13800000000"}}


def _client(engine: Engine, *scopes: str) -> tuple[TestClient, dict[str, str]]:
    with transaction(engine) as session:
        key = create_api_key(session, "his", scopes=("events:write", *scopes))
    return TestClient(create_app()), {"X-API-Key": key}


def _count(engine: Engine) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(DomainEventRow)) or 0)


def test_event_needs_a_valid_api_key(engine: Engine) -> None:
    client, _ = _client(engine)
    assert client.post("/api/v1/events", json=PATIENT).status_code == 401
    answer = client.post("/api/v1/events", json=PATIENT, headers={"X-API-Key": "clk_wrong"})
    assert answer.status_code == 401 and _count(engine) == 0


def test_event_is_stored_once_and_a_duplicate_gets_the_original_ack(engine: Engine) -> None:
    client, headers = _client(engine)
    first = client.post("/api/v1/events", json=PATIENT, headers=headers)
    second = client.post("/api/v1/events", json=json.loads(json.dumps(PATIENT)),
                         headers=headers)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() and first.json()["event_id"] == "his-1"
    changed = json.loads(json.dumps(PATIENT))
    changed["payload"]["name"] = "李四"  # the same id with another body: 409, nothing changed
    third = client.post("/api/v1/events", json=changed, headers=headers)
    assert third.status_code == 409 and third.json()["differing"] == ["$.payload.name"]
    assert "李四" not in third.text and "张三" not in third.text
    assert _count(engine) == 1
    with transaction(engine) as session:
        patient = session.get(Patient, "P1")
        assert patient is not None and patient.name == "张三"
        stored = session.scalars(select(DomainEventRow)).one()
        assert "name" not in stored.payload and "phone" not in stored.payload


def test_malformed_event_gets_422_listing_every_problem(engine: Engine) -> None:
    client, headers = _client(engine)
    bad = {"event_id": "his-2", "type": "encounter.discharged", "extra": 1,
           "payload": {"encounter_id": "E1", "patient_id": 5, "type": "ward",
                       "discharged_at": "yesterday"}}
    answer = client.post("/api/v1/events", json=bad, headers=headers)
    assert answer.status_code == 422
    paths = [e["path"] for e in answer.json()["errors"]]
    assert paths == ["$", "$.payload", "$.payload.discharged_at", "$.payload.patient_id",
                     "$.payload.type"]
    assert _count(engine) == 0
    unknown = client.post("/api/v1/events", content=b"{not json", headers=headers)
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["path"] == "$"
    typo = client.post("/api/v1/events", headers=headers, json={
        "event_id": "x", "type": "encounter.discharge", "payload": {}})
    assert typo.json()["errors"][0]["message"].startswith("unknown event type")


def test_encounter_for_an_unknown_patient_is_parked_not_refused(engine: Engine) -> None:
    client, headers = _client(engine)
    answer = client.post("/api/v1/events", headers=headers, json={
        "event_id": "e1", "type": "encounter.admitted",
        "payload": {"encounter_id": "E1", "patient_id": "NOPE", "type": "inpatient",
                    "department_id": "cardiology"}})
    assert answer.status_code == 202 and answer.json()["reason"] == "unknown_patient"
    assert answer.json()["errors"][0]["path"] == "$.payload.patient_id"
    with transaction(engine) as session:
        assert session.get(Encounter, "E1") is None


def test_run_read_back_endpoints(bundles: Engine, send: Any, helpers: Any) -> None:
    client, headers = _client(bundles, "readback:read")
    helpers.patient(send)
    send("enc-1", "encounter.discharged", {
        "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
        "department_id": "cardiology", "discharged_at": "2026-12-01T10:00:00+08:00"})
    runs = client.get("/api/v1/flows/runs?patient_id=P1", headers=headers).json()
    assert [r["flow"] for r in runs] == ["discharge"]
    detail = client.get(f"/api/v1/flows/runs/{runs[0]['id']}", headers=headers).json()
    assert detail["waiting"][0]["purpose"] == "resume"
    assert detail["waiting"][0]["due_at"].startswith("2026-12-04T01:30")
    assert [h["action"] for h in detail["history"]][:2] == ["started", "message"]
    outbox = client.get("/api/v1/outbox", headers=headers).json()
    assert {m["template"] for m in outbox} == {"discharge_settlement", "medication_guidance"}
    assert client.get("/api/v1/flows/runs/999", headers=headers).status_code == 404
    assert client.get("/api/v1/flows/incidents", headers=headers).json() == []


def test_cli_events_send_and_apikey_create(engine: Engine, tmp_path: Path) -> None:
    runner = CliRunner()
    created = runner.invoke(apikey, ["create", "his"])
    assert created.exit_code == 0 and created.output.startswith("clk_")
    with transaction(engine) as session:
        row = session.scalars(select(ApiKey)).one()
        assert row.key_hash != created.output.strip()
    file = tmp_path / "events.jsonl"
    file.write_text(json.dumps(PATIENT) + "\n" + json.dumps(PATIENT) + "\n{oops\n"
                    + json.dumps({"event_id": "z", "type": "patient.upserted",
                                  "payload": {}}) + "\n", "utf-8")
    result = runner.invoke(events, ["send", str(file)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].endswith(":1: accepted his-1") and lines[1].endswith(":2: accepted his-1")
    assert "invalid JSON" in lines[2] and "'mrn' is a required property" in result.output
    assert _count(engine) == 1


def test_unknown_reference_codes_are_refused_and_never_created(bundles: Engine,
                                                               clock: Any) -> None:
    """The HIS names a department, ward and nurse the hospital never set up: 422 naming each
    code at its path; no department, encounter, event or run is stored. Once IT creates the
    department (and the HIS sends known codes), the same event id is accepted."""
    client, headers = _client(bundles)
    with frozen_now(clock.now):
        assert client.post("/api/v1/events", json=PATIENT, headers=headers).status_code == 200
        discharge = {"event_id": "his-d1", "type": "encounter.discharged", "payload": {
            "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
            "department_id": "neurology", "ward_id": "neuro_w9", "responsible_nurse": "nobody",
            "discharged_at": "2026-12-01T10:00:00+08:00"}}
        answer = client.post("/api/v1/events", json=discharge, headers=headers)
    assert answer.status_code == 422
    assert answer.json() == {"status": "rejected", "errors": [
        {"path": "$.payload.department_id", "message": "unknown department 'neurology'"},
        {"path": "$.payload.ward_id", "message": "unknown ward 'neuro_w9'"},
        {"path": "$.payload.responsible_nurse", "message": "unknown staff member 'nobody'"}]}
    with transaction(bundles) as session:
        assert session.scalars(select(Department.id)).all() == []
        assert session.get(Encounter, "E1") is None
        assert session.scalars(select(DomainEventRow.event_id)).all() == ["his-1"]
        assert session.scalars(select(FlowRun.id)).all() == []
        session.add(Department(id="neurology", name={"zh-CN": "神经内科", "en": "Neurology"}))
    del discharge["payload"]["ward_id"], discharge["payload"]["responsible_nurse"]
    with frozen_now(clock.now):
        again = client.post("/api/v1/events", json=discharge, headers=headers)
    assert again.status_code == 200 and again.json()["event_id"] == "his-d1"
    with transaction(bundles) as session:  # acknowledged once stored; flows run from the queue
        stored = session.scalars(select(DomainEventRow).where(
            DomainEventRow.event_id == "his-d1")).one()
        assert stored.state == "pending" and session.get(Encounter, "E1") is not None
        assert session.scalars(select(OutboxMessage.id)).all() == []
    with frozen_now(clock.now):
        assert drain().handled == 2  # P1's upsert, then the discharge: in order
    with transaction(bundles) as session:
        settlement = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "discharge_settlement")).one()
    assert "您在神经内科的出院结算已完成" in settlement.body and "neurology" not in settlement.body
