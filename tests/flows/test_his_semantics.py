"""Issue 20 parts 5–6, through ``POST /api/v1/events`` with an API key and the patient's link:
a cancelled discharge closes its links, tasks and timers; the same event id with another body is
a 409 naming the differing paths (a correction is a new id with ``corrects``); an event for a
patient not known yet is parked (202) and applied once when the patient arrives; one parked too
long raises an incident on the integration page."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Encounter, Patient, Task, TaskHistory
from careloop.engine.models import AuditRow, DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import create_task, resolve_assignee
from careloop.flows.ingest import create_api_key
from careloop.flows.models import FlowRun, FlowTimer, OutboxMessage, ParkedEvent
from careloop.forms.models import FormRequest, Submission
from careloop.web import admin
from careloop.web.app import create_app

PATIENT = {"patient_id": "P1", "mrn": "MRN-P1", "name": "张三", "birth_date": "1950-03-01",
           "phone": "13800000000", "locale": "zh-CN"}
DISCHARGE = {"encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
             "department_id": "cardiology", "responsible_nurse": "nurse_li",
             "discharged_at": "2026-12-01T10:00:00+08:00"}
PASSWORD = "Correct-Horse-Battery-9"


class His:
    """The HIS: posts events with its API key at the test's clock."""

    def __init__(self, engine: Engine, clock: Any) -> None:
        with transaction(engine) as session:
            self.key = create_api_key(session, "his")
        self.client = TestClient(create_app())
        self.clock = clock

    def send(self, event_id: str, type: str, payload: dict[str, Any],
             **envelope: Any) -> Any:
        with frozen_now(self.clock.now):
            answer = self.client.post("/api/v1/events", headers={"X-API-Key": self.key},
                                      json={"event_id": event_id, "type": type,
                                            "payload": payload, **envelope})
            drain()  # the serving process's dispatcher, right after the acknowledgement
            return answer


@pytest.fixture
def his(bundles: Engine, departments: Engine, nurse: int, clock: Any) -> His:
    return His(bundles, clock)


def _count(engine: Engine, model: Any, *where: Any) -> int:
    with transaction(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_cancelled_discharge_closes_its_link_tasks_and_timers(
        his: His, bundles: Engine, sweep: Any, helpers: Any, clock: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_HOSPITAL_PHONE", "010-12345678")
    assert his.send("p1", "patient.upserted", PATIENT).status_code == 200
    assert his.send("d1", "encounter.discharged", DISCHARGE).status_code == 200
    with frozen_now(clock.now), transaction(bundles) as session:  # a nurse's own to-do
        assignee = resolve_assignee(session, {"relation": "responsible_nurse"},
                                    patient_id="P1", encounter_id="E1")
        manual, _ = create_task(session, title="出院带药核对", assignee=assignee, actor="nurse_li",
                                patient_id="P1", encounter_id="E1", kind="todo")
        manual_id = manual.id

    sweep("2026-12-04T01:31:00+00:00")  # day 3, 09:31 in Shanghai: the form link goes out
    (sent,) = [m for m in helpers.messages(bundles) if m.template_key == "discharge_care_day3"]
    link = re.search(r"/f/[A-Za-z0-9_\-]+", helpers.text(bundles, sent))
    assert link is not None
    patient = TestClient(his.client.app)
    with frozen_now(clock.now):
        assert patient.get(link.group(0)).status_code == 200
    with transaction(bundles) as session:  # the 70+ patient's day-7 call is still planned
        assert session.scalars(select(FlowTimer).where(FlowTimer.status == "pending")).all()

    clock.now += timedelta(hours=5)
    cancelled = his.send("d1-x", "encounter.discharge_cancelled",
                         {"encounter_id": "E1", "patient_id": "P1"})
    assert cancelled.status_code == 200, cancelled.text

    with frozen_now(clock.now):
        page = patient.get(link.group(0))
        english = patient.get(link.group(0) + "?lang=en")
        posted = patient.post(link.group(0), data={
            "_page": "0", "_action": "submit", "recovery": "good", "medication_clear": "yes",
            "overall": "5"})
    assert page.status_code == 410 and "本次随访已取消，无需填写" in page.text
    assert "010-12345678" in page.text  # the hospital's phone, to call with a question
    assert "nothing to fill in" in english.text and english.status_code == 410
    for shown in (page.text, english.text, posted.text):
        assert "not_needed" not in shown and "encounter_cancelled" not in shown
        assert "hissem." not in shown
    assert posted.status_code == 410 and "本次随访已取消" in posted.text
    assert _count(bundles, Submission) == 0
    with transaction(bundles) as session:
        request = session.scalars(select(FormRequest)).one()
        assert (request.status, request.closed_reason) == ("cancelled", "encounter_cancelled")
        task = session.get(Task, manual_id)
        assert task is not None and task.status == "cancelled"
        (history,) = session.scalars(select(TaskHistory).where(
            TaskHistory.task_id == manual_id, TaskHistory.action == "cancelled")).all()
        assert "HIS 已撤销本次出院" in history.details["why"]
        audits = session.scalars(select(AuditRow).where(
            AuditRow.action == "task.cancelled", AuditRow.object_id == str(manual_id))).all()
        assert len(audits) == 1 and "撤销" in audits[0].details["why"]
        assert session.scalars(select(AuditRow).where(
            AuditRow.action == "form_request.closed")).one().object_id == request.id
        assert session.scalars(select(FlowRun)).one().status == "cancelled"
        assert not session.scalars(select(FlowTimer).where(FlowTimer.status == "pending")).all()

    before = len(helpers.messages(bundles))
    sweep("2026-12-31T01:31:00+00:00")  # day 30: nothing planned for the stay fires
    assert len(helpers.messages(bundles)) == before
    assert [t.kind for t in helpers.tasks(bundles) if t.status != "cancelled"] == []
    assert _count(bundles, OutboxMessage, OutboxMessage.status == "pending") == 0


def test_resend_with_another_body_is_409_and_a_correction_applies_once(
        his: His, bundles: Engine) -> None:
    assert his.send("p1", "patient.upserted", PATIENT).status_code == 200
    first = his.send("d1", "encounter.discharged", DISCHARGE)
    assert first.status_code == 200
    again = his.send("d1", "encounter.discharged", dict(DISCHARGE))
    assert again.status_code == 200 and again.json() == first.json()

    moved = {**DISCHARGE, "discharged_at": "2026-12-01T16:00:00+08:00"}
    conflict = his.send("d1", "encounter.discharged", moved)
    assert conflict.status_code == 409
    assert conflict.json()["differing"] == ["$.payload.discharged_at"]
    assert [e["path"] for e in conflict.json()["errors"]] == ["$.payload.discharged_at"]
    assert "corrects" in conflict.json()["errors"][0]["message"]
    renamed = his.send("p1", "patient.upserted", {**PATIENT, "name": "李四"})
    assert renamed.status_code == 409 and renamed.json()["differing"] == ["$.payload.name"]
    assert "李四" not in renamed.text and "张三" not in renamed.text
    with transaction(bundles) as session:
        encounter = session.get(Encounter, "E1")
        assert encounter is not None and encounter.discharged_at is not None
        assert encounter.discharged_at.hour == 2  # 10:00 in Shanghai, unchanged
        assert session.get(Patient, "P1").name == "张三"  # type: ignore[union-attr]

    fix = his.send("d1-fix", "encounter.discharged", moved, corrects="d1")
    assert fix.status_code == 200, fix.text
    assert fix.json()["corrected"] == ["$.payload.discharged_at"]
    assert his.send("d1-fix", "encounter.discharged", moved, corrects="d1").json() == fix.json()
    with transaction(bundles) as session:
        encounter = session.get(Encounter, "E1")
        assert encounter is not None and encounter.discharged_at is not None
        assert encounter.discharged_at.hour == 8  # 16:00 in Shanghai
        assert session.scalars(select(DomainEventRow.type).where(
            DomainEventRow.event_id == "d1-fix")).one() == "his.corrected"
    assert _count(bundles, FlowRun) == 1  # the correction did not start the flow again

    elsewhere = his.send("d1-fix2", "encounter.discharged", {**moved, "patient_id": "P2"},
                         corrects="d1")
    assert elsewhere.status_code == 422
    assert [e["path"] for e in elsewhere.json()["errors"]] == ["$.payload.patient_id"]
    renamed_fix = his.send("p1-fix", "patient.upserted", {**PATIENT, "name": "张珊"},
                           corrects="p1")
    assert renamed_fix.status_code == 200 and renamed_fix.json()["corrected"] == [
        "$.payload.name"]
    with transaction(bundles) as session:
        assert session.get(Patient, "P1").name == "张珊"  # type: ignore[union-attr]
    unknown = his.send("d1-fix3", "encounter.discharged", moved, corrects="nope")
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["path"] == "$.corrects"


def test_discharge_before_its_patient_is_parked_and_applied_once_when_the_patient_arrives(
        his: His, bundles: Engine) -> None:
    parked = his.send("d1", "encounter.discharged", DISCHARGE)
    assert parked.status_code == 202, parked.text
    assert parked.json()["status"] == "parked" and parked.json()["reason"] == "unknown_patient"
    assert "parked until patient 'P1' arrives" in parked.json()["message"]
    assert his.send("d1", "encounter.discharged", DISCHARGE).json()["id"] == parked.json()["id"]
    differs = his.send("d1", "encounter.discharged", {**DISCHARGE, "type": "outpatient"})
    assert differs.status_code == 409 and differs.json()["differing"] == ["$.payload.type"]
    with transaction(bundles) as session:
        assert session.get(Encounter, "E1") is None
    assert _count(bundles, FlowRun) == 0 and _count(bundles, DomainEventRow) == 0

    assert his.send("p1", "patient.upserted", PATIENT).status_code == 200
    with transaction(bundles) as session:
        encounter = session.get(Encounter, "E1")
        assert encounter is not None and encounter.status == "discharged"
        item = session.scalars(select(ParkedEvent)).one()
        assert (item.status, item.resolved_by) == ("accepted", "replay")
    assert _count(bundles, FlowRun, FlowRun.flow_key == "discharge") == 1
    resent = his.send("d1", "encounter.discharged", DISCHARGE)
    assert resent.status_code == 200 and resent.json()["status"] == "accepted"
    assert _count(bundles, FlowRun, FlowRun.flow_key == "discharge") == 1
    assert _count(bundles, DomainEventRow, DomainEventRow.event_id == "d1") == 1


def _sign_in(client: TestClient) -> None:
    with transaction() as session:
        user = admin.create_user(session, username="it_wang", display_name="王工",
                                 password=PASSWORD)
        admin.grant(session, user, "system_admin", None)
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    answer = client.post("/login", data={"username": "it_wang", "password": PASSWORD,
                                         "csrf_token": token.group(1), "next": "/"},
                         follow_redirects=False)
    assert answer.status_code == 303


def test_event_parked_beyond_the_horizon_raises_an_incident_for_it(
        his: His, bundles: Engine, clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_PARKED_HORIZON_HOURS", "48")
    tick = loaded_registry().catalogue("tick")["integration.parked"]
    assert his.send("d9", "encounter.discharged",
                    {**DISCHARGE, "patient_id": "P9"}).status_code == 202
    assert his.send("d1", "encounter.discharged", DISCHARGE).status_code == 202
    with frozen_now(clock.now + timedelta(hours=25)):
        tick(bundles)
    assert _count(bundles, ParkedEvent, ParkedEvent.incident_at.is_not(None)) == 0

    with transaction(bundles) as session:  # P1 created another way (not by an HIS event)
        session.add(Patient(id="P1", mrn="MRN-P1", name="张三", attributes={}, consents={}))
    with frozen_now(clock.now + timedelta(hours=49)):
        tick(bundles)
    with transaction(bundles) as session:
        items = {i.event_id: i for i in session.scalars(select(ParkedEvent)).all()}
        assert items["d1"].status == "accepted" and items["d1"].incident_at is None
        assert items["d9"].status == "parked" and items["d9"].incident_at is not None
        (audit,) = session.scalars(select(AuditRow).where(
            AuditRow.action == "integration.parked_overdue")).all()
        assert audit.object_id == str(items["d9"].id)
    assert _count(bundles, FlowRun, FlowRun.flow_key == "discharge") == 1

    client = TestClient(his.client.app)
    with frozen_now(clock.now + timedelta(hours=50)):
        _sign_in(client)
        page = client.get("/admin/integration")
    assert page.status_code == 200
    assert "滞留告警" in page.text and 'data-incident="' in page.text
    assert "等待患者资料" in page.text and "hissem." not in page.text
    assert "2026-12-03 11:05" in page.text  # the incident, in hospital time


def test_cancelled_admission_closes_the_stays_links_and_tasks(
        his: His, bundles: Engine, clock: Any) -> None:
    from careloop.forms.requests import create_request

    assert his.send("p1", "patient.upserted", PATIENT).status_code == 200
    admitted = {k: v for k, v in DISCHARGE.items() if k != "discharged_at"}
    assert his.send("a1", "encounter.admitted", admitted).status_code == 200
    with frozen_now(clock.now), transaction(bundles) as session:
        link = create_request(session, form_key="discharge_day3", patient_id="P1",
                              encounter_id="E1", channel="sms",
                              expires_at=clock.now + timedelta(days=3))
        assignee = resolve_assignee(session, {"relation": "responsible_nurse"},
                                    patient_id="P1", encounter_id="E1")
        task, _ = create_task(session, title="入院宣教", assignee=assignee, actor="nurse_li",
                              patient_id="P1", encounter_id="E1")
        task_id = task.id
    answer = his.send("a1-x", "encounter.admission_cancelled",
                      {"encounter_id": "E1", "patient_id": "P1"})
    assert answer.status_code == 200, answer.text
    with frozen_now(clock.now):
        page = TestClient(his.client.app).get(link["url"])
    assert page.status_code == 410 and "本次随访已取消" in page.text
    with transaction(bundles) as session:
        encounter = session.get(Encounter, "E1")
        assert encounter is not None and encounter.status == "cancelled"
        closed = session.get(Task, task_id)
        assert closed is not None and closed.status == "cancelled"
        (history,) = session.scalars(select(TaskHistory).where(
            TaskHistory.task_id == task_id, TaskHistory.action == "cancelled")).all()
        assert "HIS 已撤销本次入院" in history.details["why"]
