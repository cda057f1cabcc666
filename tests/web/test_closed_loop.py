"""The first seed journey through public paths, with the shipped apps: the HIS discharges a
cardiology patient, the day-3 form is sent, the patient answers it dissatisfied with unclear
medication guidance, and the answer reaches named people who act — the head nurse (urgent,
escalated to the director and then the patient-experience office while untouched), the pharmacy
head (a copy in the pharmacy's list, not cardiology's) — and recording the outcome resolves the
answer and stops the escalation."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle, list_bundles
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department, Task, TaskHistory
from careloop.flows.ingest import create_api_key
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import message_text
from careloop.flows.scheduler import run_due
from careloop.forms.models import Submission
from careloop.web.app import create_app

from .conftest import UserFactory, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
START = datetime.fromisoformat("2026-12-01T10:00:00+08:00")


@pytest.fixture
def hospital(engine: Engine, user_factory: UserFactory) -> Iterator[dict[str, str]]:
    with frozen_now(START):
        for path in list_bundles([APPS]):
            import_bundle(path, actor="test")
        with transaction(engine) as session:
            for dept, zh in (("cardiology", "心内科"), ("pharmacy", "药剂科")):
                session.add(Department(id=dept, name={"zh-CN": zh, "en": dept}))
            session.flush()
            session.add(Department(id="cardio_w1", name={"zh-CN": "心内科1病区", "en": "W1"},
                                   kind="ward", parent_id="cardiology"))
            key = create_api_key(session, "his")
    for username, role, dept in (("hn", "head_nurse", "cardiology"),
                                 ("director", "dept_director", "cardiology"),
                                 ("px", "px_office", None),
                                 ("pharm", "pharmacy_head", "pharmacy")):
        user_factory(username, role, dept)
    yield {"key": key}


def _his(client: TestClient, key: str, at: datetime, event_id: str, type: str,
         payload: dict[str, object]) -> None:
    with frozen_now(at):
        answer = client.post("/api/v1/events", headers={"X-API-Key": key},
                             json={"event_id": event_id, "type": type, "payload": payload})
    assert answer.status_code == 200, answer.text


def _travel(engine: Engine, to: datetime) -> None:
    with frozen_now(to):
        run_due(engine, now=to)


def _signed_in(client: TestClient, username: str) -> tuple[TestClient, str]:
    staff = TestClient(client.app)
    return staff, login(staff, username)


def _inbox(client: TestClient, username: str, view: str) -> list[dict[str, object]]:
    staff, _ = _signed_in(client, username)
    listed = staff.get(f"/api/v1/tasks?view={view}")
    assert listed.status_code == 200, listed.text
    items: list[dict[str, object]] = listed.json()
    return items


def test_dissatisfied_day3_answer_reaches_the_head_nurse_and_the_pharmacy(
        engine: Engine, hospital: dict[str, str]) -> None:
    client = TestClient(create_app())
    key = hospital["key"]
    _his(client, key, START - timedelta(days=6), "p1", "patient.upserted", {
        "patient_id": "P1", "mrn": "M1", "name": "王建国", "gender": "male",
        "birth_date": "1958-04-02", "phone": "13800000001"})
    _his(client, key, START - timedelta(days=5), "a1", "encounter.admitted", {
        "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
        "department_id": "cardiology", "ward_id": "cardio_w1",
        "admitted_at": (START - timedelta(days=5)).isoformat(), "diagnoses": ["I10"]})
    _his(client, key, START, "d1", "encounter.discharged", {
        "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
        "department_id": "cardiology", "ward_id": "cardio_w1",
        "discharged_at": START.isoformat(), "diagnoses": ["I10"]})

    day3 = datetime.fromisoformat("2026-12-04T09:31:00+08:00")
    _travel(engine, day3)
    with transaction(engine) as session:
        sent = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "discharge_care_day3")).one()
        text = message_text(session, sent)[1]
        link = re.search(r"/f/[A-Za-z0-9_\-]+", text)
    assert link is not None, text

    # The patient opens the link that was sent, on the day, and answers.
    at = day3 + timedelta(hours=2)
    with frozen_now(at):
        assert client.get(link.group(0)).status_code == 200
        answered = client.post(link.group(0), data={
            "_page": "0", "_action": "submit", "recovery": "poor", "symptoms": "头晕",
            "medication_clear": "no", "overall": "2", "comment": "用药指导不清楚"})
    assert answered.status_code == 200, answered.text
    with transaction(engine) as session:  # the page did not wait for the rules
        assert session.scalars(select(Submission.status)).one() == "received"
    with frozen_now(at):
        assert drain(engine).handled >= 1  # the serving process's dispatcher, right after
    with transaction(engine) as session:
        submission = session.scalars(select(Submission)).one()
        assert submission.status == "pending_dissatisfied"
        submission_id = submission.id

    with frozen_now(at + timedelta(minutes=5)):
        mine = _inbox(client, "hn", "mine")
        urgent = [t for t in mine if t["priority"] == "urgent"]
        assert len(urgent) == 1 and "总体满意度 2 分" in str(urgent[0]["title"])
        pharmacy = _inbox(client, "pharm", "mine")
        assert [t["kind"] for t in pharmacy] == ["cc"]
        # the copy is the pharmacy's: not in cardiology's department list
        cardiology = _inbox(client, "hn", "department")
        assert pharmacy[0]["id"] not in [t["id"] for t in cardiology]
        pharm, _ = _signed_in(client, "pharm")
        page = pharm.get(f"/tasks/{pharmacy[0]['id']}")
        assert page.status_code == 200
        # the HIS's gender code reads as a word on the patient card
        assert "<dd>男</dd>" in page.text and "web.gender" not in page.text
        assert pharm.get(f"/api/v1/tasks/{pharmacy[0]['id']}").status_code == 200

    # Untouched: the director after 24 h, the patient-experience office 24 h later.
    task_id = int(str(urgent[0]["id"]))
    _travel(engine, at + timedelta(hours=25))
    assert [t["id"] for t in _inbox(client, "director", "mine")] == [task_id]
    _travel(engine, at + timedelta(hours=50))
    assert task_id in [t["id"] for t in _inbox(client, "px", "mine")]

    # The office records the outcome: the answer is resolved and nothing escalates any more.
    with frozen_now(at + timedelta(hours=51)):
        px, token = _signed_in(client, "px")
        done = px.post(f"/api/v1/tasks/{task_id}/complete",
                       json={"outcome": "reached_problem", "notes": "已电话解释用药"},
                       headers={"X-CSRF-Token": token})
    assert done.status_code == 200, done.text
    _travel(engine, at + timedelta(days=10))
    with transaction(engine) as session:
        assert session.get(Submission, submission_id).status == "resolved"  # type: ignore[union-attr]
        escalations = session.scalars(select(TaskHistory.action).where(
            TaskHistory.task_id == task_id, TaskHistory.action == "escalated")).all()
        assert len(escalations) == 2
        assert session.get(Task, task_id).status == "done"  # type: ignore[union-attr]


def test_home_bp_crisis_from_the_patients_form_reaches_the_attending_doctor(
        engine: Engine, hospital: dict[str, str], user_factory: UserFactory) -> None:
    """Hypertension first visit → the day-7 home-BP form → the patient reports 195/118 with
    chest pain → within the same request an urgent task for the attending doctor and a critical
    alert, as for a reading the HIS sends."""
    user_factory("dr_wang", "doctor", "cardiology")
    client = TestClient(create_app())
    key = hospital["key"]
    visit = datetime.fromisoformat("2026-12-01T09:30:00+08:00")
    _his(client, key, visit, "p2", "patient.upserted", {
        "patient_id": "P2", "mrn": "M2", "name": "李秀英", "gender": "female",
        "birth_date": "1961-07-09", "phone": "13800000002"})
    _his(client, key, visit, "o2", "encounter.admitted", {
        "encounter_id": "O2", "patient_id": "P2", "type": "outpatient",
        "department_id": "cardiology", "attending_doctor": "dr_wang",
        "admitted_at": visit.isoformat(), "diagnoses": ["I10"]})
    day7 = datetime.fromisoformat("2026-12-08T09:01:00+08:00")
    _travel(engine, day7)
    with transaction(engine) as session:
        sent = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "bp_upload")).one()
        text = message_text(session, sent)[1]
        link = re.search(r"/f/[A-Za-z0-9_\-]+", text)
    assert link is not None, text
    reported = day7 + timedelta(hours=11)
    with frozen_now(reported):
        answered = client.post(link.group(0), data={
            "_page": "0", "_action": "submit", "bp.systolic": "195", "bp.diastolic": "118",
            "measured_at": "2026-12-08T20:00", "took_medicine": "yes",
            "symptoms": "chest_pain"})
        assert answered.status_code == 200, answered.text
        drain(engine)  # the serving process's dispatcher, right after the page returned
        doctor = _inbox(client, "dr_wang", "mine")
    urgent = [t for t in doctor if t["priority"] == "urgent"]
    assert len(urgent) == 1 and "195/118" in str(urgent[0]["title"])
    assert urgent[0]["due_at"] == "2026-12-08T14:01:00+00:00"  # two hours after the report
    with transaction(engine) as session:
        from careloop.rules.models import RuleAlert

        (alert,) = session.scalars(select(RuleAlert)).all()
        assert (alert.level, alert.department_id, alert.patient_id) == (
            "critical", "cardiology", "P2")
