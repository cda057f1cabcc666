"""Sensitive stays: a patient shared by cardiology ward A and psychiatry. The ward-A nurse sees
the ward-A stay but not the psychiatry stay, its PHQ-9 (score, item-9 answer) or its tasks — in
patient 360, the submission pages and APIs, the read-backs, the task lists and the export —
until she breaks the glass with a reason (audited, listed for the security administrator).
Psychiatry's own doctor sees everything. Uses the shipped mental_health app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, Task
from careloop.engine.models import AuditRow
from careloop.forms.models import Submission
from careloop.web import admin
from careloop.web.app import create_app

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime.fromisoformat("2026-12-02T09:00:00+08:00")
PHQ9 = {f"q{n}": "1" for n in range(1, 9)} | {"q9": "2"}


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    with frozen_now(NOW):
        yield


@pytest.fixture
def shared(engine: Engine, user_factory: UserFactory) -> int:
    """P1 stayed in cardiology ward A and is seen in psychiatry; psychiatry enters a PHQ-9 with
    item 9 positive. Returns the submission id."""
    for app in ("common", "mental_health"):
        import_bundle(APPS / app, actor="test")
    with transaction(engine) as session:
        admin.create_department(session, id="cardio", name_zh="心内科", name_en="Cardiology",
                                parent_id=None)
        admin.create_department(session, id="ward_a", name_zh="心内一病区",
                                name_en="Cardiology ward A", parent_id="cardio")
        psy = admin.create_department(session, id="psychiatry", name_zh="精神心理科",
                                      name_en="Psychiatry", parent_id=None)
        assert psy.sensitive  # psychiatry is sensitive by default
        session.add(Patient(id="P1", mrn="M1", name="测试患者", gender="female",
                            phone="13812345678"))
        session.flush()
        session.add(Encounter(id="E-A", patient_id="P1", type="inpatient",
                              department_id="cardio", ward_id="ward_a", status="discharged",
                              admitted_at=NOW, discharged_at=NOW))
        session.add(Encounter(id="E-PSY", patient_id="P1", type="outpatient",
                              department_id="psychiatry", status="open", admitted_at=NOW))
    for username, role, dept in (("nurse_a", "nurse", "ward_a"),
                                 ("dir_cardio", "dept_director", "cardio"),
                                 ("psy_doc", "doctor", "psychiatry"),
                                 ("sec", "security_admin", None),
                                 ("sysadmin", "system_admin", None)):
        user_factory(username, role, dept)
    doctor = TestClient(create_app())
    token = login(doctor, "psy_doc")
    entered = doctor.post("/api/v1/forms/phq9/submissions", headers={"X-CSRF-Token": token},
                          json={"patient_id": "P1", "encounter_id": "E-PSY",
                                "channel": "phone", "answers": PHQ9})
    assert entered.status_code == 201, entered.text
    with transaction(engine) as session:
        sub = session.scalars(select(Submission).where(Submission.form_key == "phq9")).one()
        assert sub.encounter_id == "E-PSY"
        return sub.id


def _as(username: str) -> tuple[TestClient, str]:
    client = TestClient(create_app())
    return client, login(client, username)


def _psychiatry_tasks(engine: Engine) -> set[int]:
    with transaction(engine) as session:
        return {t.id for t in session.scalars(select(Task).where(
            (Task.encounter_id == "E-PSY") | (Task.department_id == "psychiatry"))).all()}


def test_ward_nurse_sees_her_stay_but_not_the_psychiatry_stay(engine: Engine,
                                                              shared: int) -> None:
    nurse, _ = _as("nurse_a")
    page = nurse.get("/patients/P1")
    assert page.status_code == 200
    assert "心内科" in page.text and "心内一病区" in page.text
    assert "精神心理科" not in page.text and "phq9" not in page.text.lower()
    assert f"/submissions/{shared}" not in page.text
    assert 'id="break-glass-form"' in page.text  # told there is more, and how to open it

    record = nurse.get("/api/v1/patients/P1").json()
    assert [e["id"] for e in record["encounters"]] == ["E-A"]
    psy_tasks = _psychiatry_tasks(engine)
    assert psy_tasks, "the PHQ-9 item-9 rule creates a task"
    assert not {t["id"] for t in record["tasks"]} & psy_tasks
    assert nurse.get("/api/v1/patients/P1/submissions").json() == []
    traces = json.dumps(nurse.get("/api/v1/patients/P1/rule-traces").json())
    assert "phq9" not in traces.lower()
    runs = nurse.get("/api/v1/patients/P1/flow-runs").json()
    assert all(r["encounter_id"] != "E-PSY" for r in runs)
    director, _ = _as("dir_cardio")  # the export (a director's right) leaves it out too
    export = director.get("/api/v1/patients/P1/export")
    assert export.status_code == 200 and "E-A" in export.text and "E-PSY" not in export.text

    # the submission itself: page, API and FHIR export are refused, and audited as such
    assert nurse.get(f"/submissions/{shared}").status_code == 403
    assert nurse.get(f"/api/v1/submissions/{shared}").status_code == 403
    assert nurse.get(f"/api/v1/submissions/{shared}/fhir").status_code == 403
    for view in ("mine", "department", "overdue"):
        listed = {t["id"] for t in nurse.get(f"/api/v1/tasks?view={view}").json()}
        assert not listed & psy_tasks
    for task_id in psy_tasks:
        assert nurse.get(f"/api/v1/tasks/{task_id}").status_code == 403
    with transaction(engine) as session:
        denied = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.access", AuditRow.outcome == "denied",
            AuditRow.actor == "nurse_a").order_by(AuditRow.id)).all()
    assert denied and all(r.details.get("sensitive_stay") for r in denied)


def test_psychiatry_sees_its_own_stay(engine: Engine, shared: int) -> None:
    doctor, _ = _as("psy_doc")
    assert [s["id"] for s in doctor.get("/api/v1/patients/P1/submissions").json()] == [shared]
    answer = doctor.get(f"/api/v1/submissions/{shared}")
    assert answer.status_code == 200
    page = doctor.get("/patients/P1")
    assert "精神心理科" in page.text and 'id="break-glass-form"' not in page.text


def test_break_the_glass_opens_the_stay_with_a_reason_and_is_reported(engine: Engine,
                                                                     shared: int) -> None:
    nurse, _ = _as("nurse_a")
    page = nurse.get("/patients/P1")
    token = csrf_from(page.text)
    blank = nurse.post("/patients/P1/break-glass", data={"reason": "  ", "csrf_token": token})
    assert blank.status_code == 200 and "请填写紧急查看的原因" in blank.text
    assert nurse.get(f"/api/v1/submissions/{shared}").status_code == 403
    opened = nurse.post("/patients/P1/break-glass", follow_redirects=False,
                        data={"reason": "患者夜间自伤风险，值班评估", "csrf_token": token})
    assert opened.status_code == 303
    assert nurse.get(f"/api/v1/submissions/{shared}").status_code == 200
    assert [s["id"] for s in nurse.get("/api/v1/patients/P1/submissions").json()] == [shared]
    assert "精神心理科" in nurse.get("/patients/P1").text
    with transaction(engine) as session:
        rows = session.scalars(select(AuditRow).where(AuditRow.action == "patient.break_glass")
                               .order_by(AuditRow.id)).all()
    assert [(r.actor, r.patient_id, r.details["reason"]) for r in rows] == [
        ("nurse_a", "P1", "患者夜间自伤风险，值班评估")]
    assert rows[0].details["encounters"] == ["E-PSY"]

    security, _ = _as("sec")
    listed = security.get("/admin/break-glass")
    assert listed.status_code == 200
    assert "nurse_a" in listed.text and "患者夜间自伤风险，值班评估" in listed.text
    assert "2026-12-02 09:00" in listed.text  # hospital time
    assert nurse.get("/admin/break-glass").status_code == 403


def test_system_admin_marks_a_department_sensitive(engine: Engine, shared: int) -> None:
    admin_client, _ = _as("sysadmin")
    page = admin_client.get("/admin/departments")
    assert page.status_code == 200 and "取消敏感" in page.text
    marked = admin_client.post("/admin/departments/cardio/sensitive", follow_redirects=False,
                               data={"sensitive": "1", "csrf_token": csrf_from(page.text)})
    assert marked.status_code == 303
    with transaction(engine) as session:
        cardio = session.get(Department, "cardio")
        assert cardio is not None and cardio.sensitive
        row = session.scalars(select(AuditRow).where(
            AuditRow.action == "department.sensitive")).one()
        assert row.object_id == "cardio" and row.details == {"sensitive": True}
    # the ward-A nurse belongs to cardiology (her ward): she still sees her own stay
    nurse, _ = _as("nurse_a")
    assert [e["id"] for e in nurse.get("/api/v1/patients/P1").json()["encounters"]] == ["E-A"]
