"""Issue 19, Consult / Q&A through the public pages: the patient asks from the discharge paper's
link (bad input refused with the field named, nothing written), the question goes to the
cardiology doctor (not to another department's staff), the answer is audited and goes back as a
message whose absolute link opens the thread."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department
from careloop.engine.models import AuditRow
from careloop.flows.consult_models import Consult
from careloop.flows.ingest import create_api_key
from careloop.flows.models import OutboxMessage
from careloop.flows.outbox import message_text

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime.fromisoformat("2026-12-07T21:00:00+08:00")  # a Monday night


@pytest.fixture
def hospital(engine: Engine, user_factory: UserFactory) -> str:
    with frozen_now(NOW):
        for app in ("common", "discharge", "consult"):
            import_bundle(APPS / app, actor="test")
        with transaction(engine) as session:
            for key, zh, en in (("cardiology", "心内科", "Cardiology"),
                                ("orthopedics", "骨科", "Orthopedics")):
                session.add(Department(id=key, name={"zh-CN": zh, "en": en}))
            key = create_api_key(session, "his")
    user_factory("dr_li", "doctor", "cardiology")
    user_factory("hm_ortho", "health_manager", "orthopedics")
    return key


def _paper_link(client: TestClient, his: str) -> str:
    events = [
        {"type": "patient.upserted", "payload": {"patient_id": "P1", "mrn": "M1", "name": "张三",
                                                 "phone": "13800000000", "locale": "zh-CN"}},
        {"type": "encounter.discharged", "payload": {
            "encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
            "department_id": "cardiology", "discharged_at": "2026-12-07T10:00:00+08:00",
            "medications": [{"name": "氨氯地平片", "dose": "5mg"}]}}]
    for n, event in enumerate(events):
        answer = client.post("/api/v1/events", json={"event_id": f"e{n}", **event},
                             headers={"X-API-Key": his})
        assert answer.status_code == 200, answer.text
    drain()  # the flows run from the event queue, after the API acknowledged
    with transaction() as session:
        message = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "medication_guidance")).one()
        found = re.search(r"/d/[A-Za-z0-9_\-]+", message_text(session, message)[1])
    assert found
    return found.group(0)


def test_ask_route_answer_read(hospital: str, client: TestClient) -> None:
    with frozen_now(NOW):
        paper = _paper_link(client, hospital)
        patient = TestClient(client.app)
        page = patient.get(paper)
        ask = re.search(r'href="(/q/ask/d/[^"]+)" id="consult-ask"', page.text)
        assert page.status_code == 200 and ask, page.text
        assert patient.get("/q/ask/d/not-a-real-token-000000").status_code == 404
        form = patient.get(ask.group(1))
        assert 'value="cardiology" selected' in form.text and "在线咨询" in form.text
        assert "Ask a question" in patient.get(ask.group(1) + "?lang=en").text
        empty = patient.post(ask.group(1), data={"desk": "cardiology", "question": "  ",
                                                 "_lang": "zh-CN"})
        assert empty.status_code == 422 and "请填写您想咨询的问题" in empty.text
        with transaction() as session:
            assert session.scalar(select(func.count(Consult.id))) == 0
        sent = patient.post(ask.group(1), data={
            "desk": "cardiology", "question": "降压药饭前吃吗？电话13912345678",
            "_lang": "zh-CN"}, follow_redirects=False)
        assert sent.status_code == 303
        thread = patient.get(sent.headers["location"])
        assert "2026-12-08 12:00" in thread.text  # 4 working hours: the night does not count

        login(client, "hm_ortho")
        assert "降压药" not in client.get("/consults").text
        assert client.get("/consults/1").status_code in (403, 404)
        client.post("/logout", data={"csrf_token": csrf_from(client.get("/").text)})

        csrf = login(client, "dr_li")
        inbox = client.get("/consults")
        assert "张三" in inbox.text and "139****5678" in inbox.text
        detail = client.get("/consults/1")
        assert "继续按医嘱服药" in detail.text  # a canned answer, by its title
        none = client.post("/consults/1/answer", data={"answer": "", "csrf_token": csrf})
        assert none.status_code == 422 and "请填写回复内容" in none.text
        done = client.post("/consults/1/answer", data={"answer": "饭后服用即可。",
                                                       "csrf_token": csrf},
                           follow_redirects=False)
        assert done.status_code == 303
        again = client.post("/consults/1/answer", data={"answer": "再答", "csrf_token": csrf})
        assert again.status_code == 422
    with transaction() as session:
        actions = set(session.scalars(select(AuditRow.action).where(
            AuditRow.object_type == "consult")).all())
        message = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "consult_answer")).one()
        text = message_text(session, message)[1]
    assert {"consult.asked", "consult.view", "consult.answer"} <= actions
    link = re.search(r"https?://[^\s/]+(/q/[A-Za-z0-9_\-]+)", text)
    assert link, text
    with frozen_now(NOW + timedelta(hours=13)):  # the patient reads it the next morning
        read = patient.get(link.group(1))
    assert "饭后服用即可。" in read.text and 'id="consult-answered-by"' in read.text
    with transaction() as session:
        assert "consult.answer_read" in set(session.scalars(select(AuditRow.action)).all())
        assert session.scalars(select(Consult)).one().read_at is not None
