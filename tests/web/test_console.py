"""Home, inbox views, task actions (audited), patient 360, definitions catalogue."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from careloop.engine.db import transaction
from careloop.engine.domain import Task, TaskHistory
from careloop.engine.models import AuditRow

from .conftest import UserFactory, csrf_from, get_user, login


def test_inbox_views_are_scoped(client: TestClient, wards: dict[str, int],
                                user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", "ward_a")
    login(client, "nurse_a")
    mine = client.get("/api/v1/tasks?view=mine").json()
    assert [t["patient_id"] for t in mine] == ["PA"]  # role queue of ward A
    page = client.get("/inbox?view=department")
    assert f"/tasks/{wards['PA']}" in page.text and f"/tasks/{wards['PB']}" not in page.text
    assert client.get("/inbox?view=overdue").status_code == 200
    assert client.get("/").status_code == 200


def test_complete_a_task_with_an_outcome(client: TestClient, wards: dict[str, int],
                                         user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", "ward_a")
    login(client, "nurse_a")
    task_id = wards["PA"]
    page = client.get(f"/tasks/{task_id}")
    assert page.status_code == 200 and "138****5678" in page.text
    response = client.post(f"/tasks/{task_id}/complete",
                           data={"outcome": "reached_problem", "notes": "头晕",
                                 "csrf_token": csrf_from(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    with transaction() as session:
        task = session.get(Task, task_id)
        assert task is not None
        assert (task.status, task.outcome, task.notes) == ("done", "reached_problem", "头晕")
        actions = session.scalars(select(TaskHistory.action).where(
            TaskHistory.task_id == task_id)).all()
        audit_rows = session.scalars(select(AuditRow).where(
            AuditRow.action == "task.complete").order_by(AuditRow.id)).all()
    assert "completed" in actions
    assert [(a.patient_id, a.details["outcome"]) for a in audit_rows] == \
        [("PA", "reached_problem")]
    again = client.post(f"/tasks/{task_id}/complete",
                        data={"outcome": "reached_ok", "csrf_token": csrf_from(page.text)})
    assert again.status_code == 409
    assert client.get("/api/v1/tasks?view=done").json()[0]["id"] == task_id


def test_api_complete_rejects_unknown_outcomes(client: TestClient, wards: dict[str, int],
                                               user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", "ward_a")
    token = login(client, "nurse_a")
    url = f"/api/v1/tasks/{wards['PA']}/complete"
    bad = client.post(url, json={"outcome": "made_up"}, headers={"X-CSRF-Token": token})
    assert bad.status_code == 422
    ok = client.post(url, json={"outcome": "not_reached"}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200 and ok.json()["status"] == "done"


def test_escalate_and_reassign(client: TestClient, wards: dict[str, int],
                               user_factory: UserFactory) -> None:
    user_factory("head", "head_nurse", "cardio")
    other = user_factory("nurse_b", "nurse", "ward_b")
    login(client, "head")
    task_id = wards["PB"]
    page = client.get(f"/tasks/{task_id}")
    token = csrf_from(page.text)
    assert client.post(f"/tasks/{task_id}/reassign", data={"user_id": str(other),
                                                            "csrf_token": token},
                       follow_redirects=False).status_code == 303
    assert client.post(f"/tasks/{task_id}/escalate", data={"csrf_token": token},
                       follow_redirects=False).status_code == 303
    with transaction() as session:
        task = session.get(Task, task_id)
        assert task is not None and task.priority == "urgent"
        assert task.escalation["level"] == 1
        assert {a for a in session.scalars(select(AuditRow.action)).all()} >= {
            "task.reassign", "task.escalate"}


def test_patient_360_and_definitions(client: TestClient, wards: dict[str, int],
                                     user_factory: UserFactory) -> None:
    user_factory("doc", "doctor", "cardio")
    assert get_user("doc").username == "doc"
    login(client, "doc")
    page = client.get("/patients/PA")
    assert "MRN-PA" in page.text and "I25" not in page.text
    assert "E-PA" not in page.text  # encounter ids are internal
    assert client.get("/patients?q=MRN").text.count("/patients/P") == 2
    assert client.get("/definitions").status_code == 200
