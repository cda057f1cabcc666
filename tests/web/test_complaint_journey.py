"""A complaint's journey through the public paths, as the people in it live it: the HIS sends a
patient who only ever stayed in psychiatry; the PX office registers her complaint about
cardiology; cardiology's head nurse sees it (not the patient's record), lets it run overdue, the
director is escalated to and replies, the PX office rejects (驳回) the reply back to the
department, the department replies again, the PX office approves, the patient is asked, the
complaint is closed. A second complaint is resolved while escalated: its run ends and nothing
escalates months later. A third is resolved at first contact. The complaints centre and the
dashboard then report the same first-contact-resolution figure. Time is travelled, never read.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle, list_bundles
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department, Task, TaskHistory
from careloop.engine.models import AuditRow
from careloop.flows.ingest import create_api_key
from careloop.flows.models import FlowRun, FlowTimer, OutboxMessage
from careloop.flows.scheduler import run_due
from careloop.forms.models import Submission

from .conftest import UserFactory, csrf_from, login

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


class Person:
    """One signed-in member of staff with their own browser (cookies)."""

    def __init__(self, app: Any, username: str) -> None:
        self.client = TestClient(app, base_url="http://testserver")
        self.username = username
        self.token = ""

    def sign_in(self) -> Person:
        self.client.cookies.clear()
        self.token = login(self.client, self.username)
        return self

    def get(self, url: str) -> Any:
        return self.client.get(url, follow_redirects=False)

    def api(self, url: str, body: dict[str, Any]) -> Any:
        return self.client.post(url, json=body, headers={"X-CSRF-Token": self.token})

    def form(self, page: str, url: str, data: dict[str, str]) -> Any:
        csrf = csrf_from(self.get(page).text)
        return self.client.post(url, data={"csrf_token": csrf, **data}, follow_redirects=False)


BUNDLES = Path(__file__).resolve().parents[2] / "app_definitions"


@pytest.fixture
def hospital(engine: Engine, user_factory: UserFactory) -> dict[str, str]:
    """The shipped apps, reference data (departments, staff) and an API key for the HIS."""
    for path in list_bundles([BUNDLES]):
        import_bundle(path, actor="test")
    with transaction() as session:
        for code, zh, en in (("cardiology", "心内科", "Cardiology"),
                             ("psychiatry", "精神科", "Psychiatry"),
                             ("orthopedics", "骨科", "Orthopedics")):
            session.add(Department(id=code, name={"zh-CN": zh, "en": en}))
        session.flush()
        key = create_api_key(session, "his")
    for username, role, dept in (("px", "px_office", None),
                                 ("cardio_hn", "head_nurse", "cardiology"),
                                 ("cardio_dir", "dept_director", "cardiology"),
                                 ("ortho_hn", "head_nurse", "orthopedics"),
                                 ("psy_nurse", "nurse", "psychiatry")):
        user_factory(username, role, dept)
    return {"key": key}


def _his(app: Any, key: str) -> None:
    his = TestClient(app)
    for event_id, kind, payload in (
            ("his-p1", "patient.upserted", {"patient_id": "P1", "mrn": "M1", "name": "王芳",
                                            "gender": "female", "birth_date": "1968-03-02",
                                            "phone": "13800000001"}),
            ("his-e1", "encounter.admitted", {"encounter_id": "E1", "patient_id": "P1",
                                              "type": "inpatient",
                                              "department_id": "psychiatry",
                                              "admitted_at": "2026-11-20T02:00:00+00:00"})):
        answer = his.post("/api/v1/events", json={"event_id": event_id, "type": kind,
                                                  "payload": payload},
                          headers={"X-API-Key": key})
        assert answer.status_code == 200, answer.text
    drain()  # the serving process's dispatcher, right after the acknowledgements


def _register(px: Person, description: str) -> int:
    page = px.get("/patients/P1/complaint")
    assert page.status_code == 200
    posted = px.client.post("/patients/P1/complaint", data={
        "csrf_token": csrf_from(page.text), "_page": "0", "_action": "submit",
        "channel_of_complaint": "phone", "category": "attitude", "department": "cardiology",
        "description": description, "wants_contact": "no"}, follow_redirects=False)
    assert posted.status_code == 303, posted.text
    return int(posted.headers["location"].rsplit("/", 1)[1])


def _tasks(complaint_id: int) -> list[Task]:
    from careloop.web.complaints import handling

    with transaction() as session:
        found = handling(session, complaint_id).tasks
        for task in found:
            session.expunge(task)
        return found


def _open_response(complaint_id: int) -> Task:
    found = [t for t in _tasks(complaint_id)
             if t.kind == "complaint_response" and t.status == "open"]
    assert len(found) == 1, [(t.kind, t.status) for t in _tasks(complaint_id)]
    return found[0]


def _open_review(complaint_id: int) -> Task:
    found = [t for t in _tasks(complaint_id) if t.kind == "approval" and t.status == "open"]
    assert len(found) == 1
    return found[0]


def _run(complaint_id: int) -> FlowRun:
    with transaction() as session:
        run = session.scalars(select(FlowRun).where(
            FlowRun.idempotency_key == f"complaint_handling:complaint.created:{complaint_id}")
        ).one()
        session.expunge(run)
        return run


def _user_id(username: str) -> int:
    from careloop.engine.domain import User

    with transaction() as session:
        return session.scalars(select(User.id).where(User.username == username)).one()


def test_a_complaint_travels_from_intake_to_closure(app: Any, engine: Engine,
                                                    hospital: dict[str, str]) -> None:
    px, nurse = Person(app, "px"), Person(app, "cardio_hn")
    director, ortho = Person(app, "cardio_dir"), Person(app, "ortho_hn")
    with frozen_now(T0):
        _his(app, hospital["key"])
        px.sign_in()
        c1 = _register(px, "心内科护士态度生硬")

    # Cardiology sees the complaint about it, though the patient only stayed in psychiatry —
    # the complaint, not the patient's record; another department sees nothing.
    with frozen_now(at(1)):
        nurse.sign_in()
        first = _open_response(c1)
        assert first.department_id == "cardiology"
        assert first.assignee_user_id == _user_id("cardio_hn")
        assert first.due_at == at(0) + timedelta(hours=24)  # the flow step's due: 24h
        mine = nurse.get("/api/v1/tasks?view=mine").json()
        assert [t["id"] for t in mine] == [first.id]
        listing = nurse.get("/complaints")
        assert f'data-complaint="{c1}"' in listing.text and "心内科" in listing.text
        page = nurse.get(f"/complaints/{c1}")
        assert page.status_code == 200 and "心内科护士态度生硬" in page.text
        assert 'href="/patients/P1"' not in page.text
        assert nurse.get("/patients/P1").status_code == 403
        task_page = nurse.get(f"/tasks/{first.id}")
        assert task_page.status_code == 200 and 'id="decision-form"' in task_page.text
        # completing an approval would leave the flow waiting: refused, with a clear message
        refused = nurse.api(f"/api/v1/tasks/{first.id}/complete", {"outcome": "reached_ok"})
        assert refused.status_code == 409 and "decision" in refused.json()["detail"]
        console = nurse.form(f"/tasks/{first.id}", f"/tasks/{first.id}/complete",
                             {"outcome": "reached_ok"})
        assert console.status_code == 409 and "审批类待办" in console.text
        ortho.sign_in()
        assert f'data-complaint="{c1}"' not in ortho.get("/complaints").text
        assert ortho.get(f"/complaints/{c1}").status_code == 403
    with transaction() as session:
        seen = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.view", AuditRow.object_type == "complaint",
            AuditRow.actor == "cardio_hn").order_by(AuditRow.id)).all()
        assert seen and seen[-1].details == {"access": "department"}

    # Nobody replies within 24 h: the director is escalated to; the head nurse may no longer
    # decide.
    run_due(engine, now=at(25))
    with frozen_now(at(26)):
        escalated = _open_response(c1)
        assert escalated.id == first.id and escalated.escalation["level"] == 1
        assert escalated.assignee_user_id == _user_id("cardio_dir")
        nurse.sign_in()
        assert nurse.api(f"/api/v1/tasks/{first.id}/decision",
                         {"decision": "approve"}).status_code == 403
        director.sign_in()
        assert first.id in [t["id"] for t in director.get("/api/v1/tasks?view=mine").json()]
        replied = director.api(f"/api/v1/tasks/{first.id}/decision",
                               {"decision": "approve", "notes": "已致电患者并致歉"})
        assert replied.status_code == 200, replied.text
        assert replied.json()["result"] == "approved"
        assert replied.json()["task"]["outcome"] == "approved"

    # The PX office reviews the reply and sends it back to the department (驳回).
    with frozen_now(at(27)):
        px.sign_in()
        review = _open_review(c1)
        assert review.assignee_role == "px_office"
        page = px.get(f"/tasks/{review.id}").text
        assert 'value="department_reply"' in page and "投诉处理：请在24小时内回复" in page
        assert "同意" in page and "驳回" in page
        bad = px.api(f"/api/v1/tasks/{review.id}/decision",
                     {"decision": "reject", "back_to": "ask_satisfaction"})
        assert bad.status_code == 422
        rejected = px.form(f"/tasks/{review.id}", f"/tasks/{review.id}/decision",
                           {"decision": "reject", "back_to": "department_reply",
                            "notes": "回复未说明整改措施"})
        assert rejected.status_code == 303
        again = _open_response(c1)
        assert again.id != first.id and again.assignee_user_id == _user_id("cardio_hn")
        assert _run(c1).status == "running"

    # The department replies again from the task page; the PX office approves; the patient is
    # asked; the run completes.
    with frozen_now(at(28)):
        nurse.sign_in()
        answered = nurse.form(f"/tasks/{again.id}", f"/tasks/{again.id}/decision",
                              {"decision": "approve", "notes": "已补充整改措施"})
        assert answered.status_code == 303
        px.sign_in()
        second_review = _open_review(c1)
        assert px.api(f"/api/v1/tasks/{second_review.id}/decision",
                      {"decision": "approve"}).json()["result"] == "approved"
        assert _run(c1).status == "completed"
        with transaction() as session:
            asked = session.scalars(select(OutboxMessage).where(
                OutboxMessage.patient_id == "P1",
                OutboxMessage.template_key == "complaint_satisfaction")).all()
            assert len(asked) == 1
            decisions = session.scalars(select(AuditRow).where(
                AuditRow.action == "task.decision").order_by(AuditRow.id)).all()
            assert [(d.actor, d.details["decision"]) for d in decisions] == [
                ("cardio_dir", "approve"), ("px", "reject"), ("cardio_hn", "approve"),
                ("px", "approve")]
        closed = px.form(f"/complaints/{c1}", f"/complaints/{c1}/resolve", {"notes": "已结案"})
        assert closed.status_code == 303
        detail = px.get(f"/complaints/{c1}").text
        assert 'data-status="resolved"' in detail and 'id="complaint-fcr">✗' in detail

    # A second complaint is resolved while escalated: its run ends, months later nothing more.
    with frozen_now(at(30)):
        px.sign_in()
        c2 = _register(px, "检查预约一直打不通电话")
    run_due(engine, now=at(30 + 25))
    with frozen_now(at(30 + 26)):
        assert _open_response(c2).escalation["level"] == 1
        px.sign_in()
        assert px.form(f"/complaints/{c2}", f"/complaints/{c2}/resolve",
                       {"notes": "已协调预约"}).status_code == 303
    run2 = _run(c2)
    assert run2.status == "cancelled"
    run_due(engine, now=at(24 * 120))
    with transaction() as session:
        tasks = _tasks(c2)
        assert {(t.kind, t.status, t.outcome) for t in tasks} == {
            ("complaint_response", "done", "resolved_escalated")}
        escalations = session.scalars(select(TaskHistory).where(
            TaskHistory.task_id.in_([t.id for t in tasks]),
            TaskHistory.action == "escalated")).all()
        assert len(escalations) == 1
        assert not session.scalars(select(FlowTimer).where(
            FlowTimer.run_id == run2.id, FlowTimer.status == "pending")).all()
        assert len(session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "complaint_satisfaction")).all()) == 1
        # the first complaint stays resolved and untouched too
        sub = session.get(Submission, c1)
        assert sub is not None and sub.status == "resolved"

    # A third is resolved at first contact.
    with frozen_now(at(24 * 120 + 1)):
        px.sign_in()
        c3 = _register(px, "住院费用清单看不懂")
        assert px.form(f"/complaints/{c3}", f"/complaints/{c3}/resolve",
                       {"notes": "当场解释清楚"}).status_code == 303
        assert 'id="complaint-fcr">✓' in px.get(f"/complaints/{c3}").text
        assert _run(c3).status == "cancelled"

        # One FCR meaning: 1 of the 4 first responses (two replies to c1, c2's, c3's) resolved
        # the complaint at first contact — the centre and the dashboard both say 25 %.
        centre = px.get("/complaints").text
        match = re.search(r'id="fcr-rate">(\d+)%', centre)
        assert match and match.group(1) == "25"
        board = px.get("/api/v1/reports/dashboards/complaints_overview").json()
        tile = next(t for t in board["tiles"] if t["chart"] == "complaint_handling")
        assert tile["data"]["rows"] == [{"department": "心内科", "department__key": "cardiology",
                                         "first_contact_resolution": 25.0,
                                         "mean_response_hours": tile["data"]["rows"][0][
                                             "mean_response_hours"], "overdue": 0}]


def test_a_signer_is_added_and_decisions_need_the_session_token(
        app: Any, hospital: dict[str, str]) -> None:
    px, nurse, director = Person(app, "px"), Person(app, "cardio_hn"), Person(app, "cardio_dir")
    with frozen_now(T0):
        _his(app, hospital["key"])
        px.sign_in()
        complaint = _register(px, "出院带药说明不清楚")
        reply = _open_response(complaint)
        nurse.sign_in()
        url = f"/api/v1/tasks/{reply.id}/decision"
        assert nurse.client.post(url, json={"decision": "approve"}).status_code == 403  # CSRF
        assert nurse.api(url, {"decision": "add_signer"}).status_code == 422
        unknown = nurse.api(url, {"decision": "add_signer", "signer": {"user": "nobody"}})
        assert unknown.status_code == 422 and unknown.json()["code"] == "task.bad-decision"
        assert nurse.api(url, {"decision": "add_signer",
                               "signer": {"role": "astronaut"}}).status_code == 422
        added = nurse.api(url, {"decision": "add_signer", "signer": {"user": "cardio_dir"}})
        assert added.status_code == 200 and added.json()["result"] == "open"
        signer_task = added.json()["signer_task_id"]
        director.sign_in()
        assert director.get(f"/tasks/{signer_task}").status_code == 200
        decided = director.form(f"/tasks/{signer_task}", f"/tasks/{signer_task}/decision",
                                {"decision": "approve"})
        assert decided.status_code == 303
        # the approval is decided: the head nurse's task is closed, the PX review is open
        closed = nurse.api(url, {"decision": "approve"})
        assert closed.status_code == 409 and closed.json()["code"] == "task.closed"
        assert _open_review(complaint).assignee_role == "px_office"
    with transaction() as session:
        added_row = session.scalars(select(AuditRow).where(
            AuditRow.action == "task.decision", AuditRow.actor == "cardio_hn")).one()
        assert added_row.details["signer_task_id"] == signer_task
