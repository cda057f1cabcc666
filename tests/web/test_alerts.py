"""The alert centre: a PHQ-9 item-9 alert reaches the department's doctors (not another
department's), is acknowledged with a note (audited), and a rule set on ``alert.raised`` can turn
an alert into a task."""

from __future__ import annotations

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
from careloop.rules.models import RuleAlert
from careloop.web.app import create_app

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime.fromisoformat("2026-12-03T10:00:00+08:00")
PHQ9 = {f"q{n}": "1" for n in range(1, 9)} | {"q9": "2"}


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    """Everything in these tests happens on one morning (sessions included)."""
    with frozen_now(NOW):
        yield


@pytest.fixture
def psychiatry(engine: Engine, user_factory: UserFactory) -> None:
    for app in ("common", "mental_health"):
        import_bundle(APPS / app, actor="test")
    with transaction(engine) as session:
        for dept in ("psychiatry", "cardiology"):
            session.add(Department(id=dept, name={"zh-CN": {"psychiatry": "精神科",
                                                            "cardiology": "心内科"}[dept],
                                                  "en": dept}))
        session.add(Patient(id="P9", mrn="M9", name="测试", gender="female"))
        session.flush()
        session.add(Encounter(id="E9", patient_id="P9", type="outpatient",
                              department_id="psychiatry", status="open", admitted_at=NOW))
    for username, role, dept in (("psy_doc", "doctor", "psychiatry"),
                                 ("cardio_doc", "doctor", "cardiology"),
                                 ("px", "px_office", None)):
        user_factory(username, role, dept)


def _signed_in(username: str) -> tuple[TestClient, str]:
    client = TestClient(create_app())
    return client, login(client, username)


def test_phq9_item9_alert_is_seen_by_the_departments_doctor_and_acknowledged(
        engine: Engine, psychiatry: None) -> None:
    doctor, token = _signed_in("psy_doc")
    entered = doctor.post("/api/v1/forms/phq9/submissions", headers={"X-CSRF-Token": token},
                          json={"patient_id": "P9", "encounter_id": "E9",
                                "channel": "phone", "answers": PHQ9})
    assert entered.status_code == 201, entered.text
    listed = doctor.get("/api/v1/alerts").json()
    assert len(listed) == 1, listed
    (alert,) = listed
    assert (alert["level"], alert["patient_id"], alert["status"]) == ("critical", "P9", "open")
    assert alert["department"]["zh-CN"] == "精神科"
    other, _ = _signed_in("cardio_doc")
    assert other.get("/api/v1/alerts").json() == []
    assert other.post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "x"},
                      headers={"X-CSRF-Token": _}).status_code in (403, 404)
    px, _px_token = _signed_in("px")
    assert [a["id"] for a in px.get("/api/v1/alerts").json()] == [alert["id"]]

    page = doctor.get("/alerts")
    assert page.status_code == 200 and "危急" in page.text and "PHQ-9 第9题阳性" in page.text
    blank = doctor.post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "  "},
                        headers={"X-CSRF-Token": token})
    assert blank.status_code == 422
    done = doctor.post(f"/alerts/{alert['id']}/acknowledge", follow_redirects=False,
                       data={"note": "已电话联系，安排今日复诊",
                             "csrf_token": csrf_from(page.text)})
    assert done.status_code == 303
    assert doctor.get("/api/v1/alerts").json() == []
    (acked,) = doctor.get("/api/v1/alerts?status=acknowledged").json()
    assert (acked["acknowledged_by"], acked["note"]) == ("psy_doc", "已电话联系，安排今日复诊")
    again = doctor.post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "再次"},
                        headers={"X-CSRF-Token": token})
    assert again.status_code == 409
    with transaction(engine) as session:
        audit = session.scalars(select(AuditRow).where(
            AuditRow.action == "alert.acknowledge")).all()
        assert [(a.object_id, a.patient_id) for a in audit] == [(str(alert["id"]), "P9")]


ALERT_TO_TASK = """kind: ruleset
key: critical_alert_task
title: {zh-CN: 危急预警转待办, en: Critical alert to a task}
on: [alert.raised]
rules:
  - key: critical
    when: "event.level == 'critical'"
    then:
      - do: create_task
        title: {zh-CN: "确认危急预警：{{ event.message }}", en: "Confirm: {{ event.message }}"}
        assignee: {role: dept_director}
        priority: urgent
        due: {hours: 1}
"""


def test_a_rule_set_on_alert_raised_turns_the_alert_into_a_task(
        engine: Engine, psychiatry: None, tmp_path: Path, user_factory: UserFactory) -> None:
    user_factory("psy_director", "dept_director", "psychiatry")
    app = tmp_path / "alert_tasks"
    (app / "rules").mkdir(parents=True)
    (app / "app.yaml").write_text(
        "id: alert_tasks\nname: {zh-CN: 预警转待办, en: Alert tasks}\nversion: 0.1.0\n"
        "format: 1\ndefault_locale: zh-CN\nrequires: [common]\n", "utf-8")
    (app / "rules" / "critical_alert_task.yaml").write_text(ALERT_TO_TASK, "utf-8")
    import_bundle(app, actor="test")
    doctor, token = _signed_in("psy_doc")
    entered = doctor.post("/api/v1/forms/phq9/submissions", headers={"X-CSRF-Token": token},
                          json={"patient_id": "P9", "encounter_id": "E9",
                                "channel": "phone", "answers": PHQ9})
    assert entered.status_code == 201
    with transaction(engine) as session:
        alert = session.scalars(select(RuleAlert)).one()
        task = session.scalars(select(Task).where(Task.title.like("确认危急预警%"))).one()
        assert task.assignee_role == "dept_director" and task.department_id == "psychiatry"
        assert task.details["event_id"] == f"alert.raised:{alert.id}"
