"""Issue 19, registration and booking, through the public pages and the events API: a patient
registered by hand goes through the events path (``patient.upserted``, source ``manual``,
audited) with consent per channel; bad input is refused at its field path with nothing written;
a department's booking link is checked (an unknown placeholder named) and shown on patient 360;
the patient's page lists the health-check packages and a booking request becomes one task for the
centre's nurses; ``appointment.rescheduled``/``appointment.cancelled`` are validated like other
HIS events and touch only their own appointment's reminders."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department, Patient, Task
from careloop.engine.models import AuditRow, DomainEventRow
from careloop.flows.health.models import HealthCard
from careloop.flows.ingest import create_api_key
from careloop.flows.models import FlowRun, FlowTimer, OutboxMessage
from careloop.flows.outbox import message_text
from careloop.flows.scheduler import run_due

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime.fromisoformat("2026-12-01T09:00:00+08:00")
ID_NUMBER = "110105197504120028"  # female, born 1975-04-12 (valid check digit)
LINK = "https://yy.example-hospital.cn/book?card={card_no}&dept={department}"


@pytest.fixture
def centre(engine: Engine, user_factory: UserFactory) -> None:
    for app in ("common", "health_management"):
        import_bundle(APPS / app, actor="test")
    with transaction(engine) as session:
        session.add(Department(id="health_management",
                               name={"zh-CN": "健康管理中心", "en": "Health Management Centre"}))
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
    user_factory("hm_nurse", "nurse", "health_management")
    user_factory("it_admin", "system_admin", None)


def _form(**changes: str) -> dict[str, str]:
    form = {"name": "李梅", "gender": "female", "birth_date": "1975-04-12",
            "phone": "139 0000 1111", "id_number": ID_NUMBER, "card_no": "HM0001",
            "department": "health_management", "consent_sms": "1"}
    form.update(changes)
    return {k: v for k, v in form.items() if v != ""}


def _register(client: TestClient, **changes: str) -> Any:
    page = client.get("/registration")
    assert page.status_code == 200
    return client.post("/registration", data={**_form(**changes),
                                              "csrf_token": csrf_from(page.text)},
                       follow_redirects=False)


def _paths(html: str) -> set[str]:
    return set(re.findall(r'data-path="([^"]+)"', html))


def _count(engine: Engine, model: Any) -> int:
    with transaction(engine) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_patient_registered_by_hand_goes_through_the_events_path(
        client: TestClient, engine: Engine, centre: None) -> None:
    with frozen_now(NOW):
        login(client, "hm_nurse")
        answer = _register(client)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/patients/hm-HM0001/card"
        sheet = client.get("/patients/hm-HM0001/card")
        page = client.get("/patients/hm-HM0001")  # patient 360, with the card
    assert sheet.status_code == 200
    text = sheet.text
    for words in ("健康管理卡与联系方式同意书", "李梅", "HM0001", "短信：同意", "微信：不同意",
                  "电话：不同意", "2026-12-01 09:00", "<svg"):
        assert words in text, words
    assert "01:00" not in re.sub(r"<svg.*?</svg>", "", text, flags=re.S)  # never UTC
    assert not re.search(r"<script(?![^>]*\bsrc=)", text) and " style=" not in text
    with transaction(engine) as session:
        patient = session.get(Patient, "hm-HM0001")
        assert patient is not None
        assert patient.consents == {"sms": True, "wechat": False, "phone": False}
        assert patient.phone == "13900001111" and patient.id_number == ID_NUMBER
        sources = {(e.type, e.source) for e in session.scalars(select(DomainEventRow))}
        assert ("patient.upserted", "manual") in sources
        assert ("encounter.admitted", "manual") in sources
        actions = [a.action for a in session.scalars(select(AuditRow).where(
            AuditRow.patient_id == "hm-HM0001"))]
        assert "patient.registered" in actions and "patient.card_printed" in actions
    assert page.status_code == 200 and 'id="health-card"' in page.text
    assert "HM0001" in page.text and "未设置预约链接" in page.text


def test_bad_input_is_refused_at_its_field_and_nothing_is_written(
        client: TestClient, engine: Engine, centre: None) -> None:
    login(client, "hm_nurse")
    assert _register(client).status_code == 303
    patients = _count(engine, Patient)
    duplicate = _register(client, name="王芳", id_number="", phone="13900002222")
    assert duplicate.status_code == 422
    assert _paths(duplicate.text) == {"$.card_no"}
    assert "此卡号已被使用" in duplicate.text
    bad_id = _register(client, card_no="HM0002", id_number=ID_NUMBER[:-1] + "9")
    assert bad_id.status_code == 422 and _paths(bad_id.text) == {"$.id_number"}
    assert "身份证号校验位不正确" in bad_id.text
    several = _register(client, card_no="x", phone="123", gender="", id_number="",
                        department="cardiology")
    assert _paths(several.text) == {"$.card_no", "$.phone", "$.gender", "$.department"}
    assert _count(engine, Patient) == patients and _count(engine, HealthCard) == 1


def test_a_booking_link_template_is_checked_and_replaces_the_placeholder(
        client: TestClient, engine: Engine, centre: None) -> None:
    login(client, "it_admin")
    csrf = csrf_from(client.get("/admin/booking-links").text)
    bad = client.post("/admin/booking-links", data={
        "department": "health_management", "csrf_token": csrf,
        "template": "https://yy.example-hospital.cn/book?card={card}"})
    assert bad.status_code == 422 and _paths(bad.text) == {"$.template"}
    assert "未知的占位符 {card}" in bad.text and "{card_no}" in bad.text
    not_url = client.post("/admin/booking-links", data={
        "department": "health_management", "csrf_token": csrf, "template": "yy/{card_no}"})
    assert not_url.status_code == 422 and "http://" in not_url.text
    good = client.post("/admin/booking-links", data={
        "department": "health_management", "csrf_token": csrf, "template": LINK},
        follow_redirects=False)
    assert good.status_code == 303
    client.post("/logout", data={"csrf_token": csrf})
    nurse = TestClient(client.app)
    login(nurse, "hm_nurse")
    assert _register(nurse).status_code == 303
    page = nurse.get("/patients/hm-HM0001")
    assert ('href="https://yy.example-hospital.cn/book?card=HM0001&amp;'
            'dept=health_management"') in page.text


def _patient_page(engine: Engine) -> str:
    with transaction(engine) as session:
        card = session.scalars(select(HealthCard)).one()
        return f"/hm/{card.page_token}"


def test_the_patient_page_offers_packages_and_a_request_becomes_one_task(
        client: TestClient, engine: Engine, centre: None) -> None:
    login(client, "hm_nurse")
    assert _register(client).status_code == 303
    path = _patient_page(engine)
    phone = TestClient(client.app)  # the patient's phone: no staff session
    page = phone.get(path)
    assert page.status_code == 200
    for words in ("李梅您好", "基础体检套餐", "中老年体检套餐", "¥480（自费）", "血常规"):
        assert words in page.text, words
    assert "Full blood count" in phone.get(f"{path}?lang=en").text
    for _ in range(2):  # a second tap adds nothing
        asked = phone.post(f"{path}/book", data={"package": "basic_checkup"},
                           follow_redirects=False)
        assert asked.status_code == 303
    assert "已收到您的预约申请" in phone.get(asked.headers["location"]).text
    with transaction(engine) as session:
        tasks = session.scalars(select(Task).where(Task.kind == "checkup_booking")).all()
        assert [(t.patient_id, t.assignee_role, t.department_id, t.title) for t in tasks] == [
            ("hm-HM0001", "nurse", "health_management", "体检套餐预约：基础体检套餐")]
    inbox = client.get("/api/v1/tasks?view=department").json()
    assert any("基础体检套餐" in str(item) for item in inbox)
    assert phone.post(f"{path}/book", data={"package": "nope"}).status_code == 404
    assert phone.get("/hm/not-a-token").status_code == 404


def _send(client: TestClient, key: str, event_id: str, kind: str,
          payload: dict[str, Any]) -> Any:
    his = TestClient(client.app)  # the HIS: an API key, no staff session
    return his.post("/api/v1/events", headers={"X-API-Key": key},
                       json={"event_id": event_id, "type": kind, "payload": payload})


def test_appointment_events_are_validated_and_touch_only_their_appointment(
        client: TestClient, engine: Engine, centre: None) -> None:
    with frozen_now(NOW):
        login(client, "hm_nurse")
        assert _register(client).status_code == 303
        with transaction(engine) as session:
            key = create_api_key(session, "his")
        for n, when in (("A1", "2026-12-08T08:00:00+08:00"), ("A2", "2026-12-10T08:00:00+08:00")):
            assert _send(client, key, f"b-{n}", "appointment.booked", {
                "appointment_id": n, "patient_id": "hm-HM0001", "scheduled_at": when,
                "department_id": "health_management", "kind": "health_check"}).status_code == 200
        refused = _send(client, key, "r-bad", "appointment.rescheduled",
                        {"appointment_id": "A1", "patient_id": "hm-HM0001",
                         "scheduled_at": "2026-12-15 08:00"})
        assert refused.status_code == 422
        assert [e["path"] for e in refused.json()["errors"]] == ["$.payload.scheduled_at"]
        missing = _send(client, key, "c-bad", "appointment.cancelled", {"patient_id": "hm-HM0001"})
        assert missing.status_code == 422
        assert "appointment_id" in missing.json()["errors"][0]["message"]
        assert _send(client, key, "r-1", "appointment.rescheduled", {
            "appointment_id": "A1", "patient_id": "hm-HM0001",
            "scheduled_at": "2026-12-15T08:00:00+08:00"}).status_code == 200
        drain(engine)  # the flows run from the event queue, after the API acknowledged
    with transaction(engine) as session:
        runs = {r.context["_event"]["appointment_id"]: r
                for r in session.scalars(select(FlowRun).where(
                    FlowRun.flow_key == "checkup_reminder"))}
        assert runs["A1"].context["_event"]["scheduled_at"] == "2026-12-15T08:00:00+08:00"
        pending = {t.run_id: t.due_at for t in session.scalars(select(FlowTimer).where(
            FlowTimer.status == "pending"))}
        # one pending timer each: A1's moved to 14 Dec 16:00, A2's untouched on 9 Dec 16:00
        assert pending == {
            runs["A1"].id: datetime.fromisoformat("2026-12-14T16:00:00+08:00"),
            runs["A2"].id: datetime.fromisoformat("2026-12-09T16:00:00+08:00")}
        assert runs["A2"].status == "running"


def _reminders(engine: Engine) -> list[str]:
    with transaction(engine) as session:
        return [message_text(session, m)[1] for m in session.scalars(
            select(OutboxMessage).where(OutboxMessage.template_key == "checkup_reminder")
            .order_by(OutboxMessage.id))]


def test_a_reschedule_after_the_reminder_went_reminds_once_for_the_new_time(
        client: TestClient, engine: Engine, centre: None) -> None:
    with frozen_now(NOW):
        login(client, "hm_nurse")
        assert _register(client).status_code == 303
        with transaction(engine) as session:
            key = create_api_key(session, "his")
        assert _send(client, key, "b-A3", "appointment.booked", {
            "appointment_id": "A3", "patient_id": "hm-HM0001",
            "scheduled_at": "2026-12-03T08:00:00+08:00",
            "department_id": "health_management", "kind": "health_check"}).status_code == 200
    sent = datetime.fromisoformat("2026-12-02T16:05:00+08:00")
    with frozen_now(sent):
        run_due(engine, now=sent)
        assert len(_reminders(engine)) == 1  # the old time's reminder went out, by SMS
        assert _send(client, key, "r-A3", "appointment.rescheduled", {
            "appointment_id": "A3", "patient_id": "hm-HM0001",
            "scheduled_at": "2026-12-10T08:00:00+08:00"}).status_code == 200
        assert _send(client, key, "r-A3", "appointment.rescheduled", {  # sent twice by the HIS
            "appointment_id": "A3", "patient_id": "hm-HM0001",
            "scheduled_at": "2026-12-10T08:00:00+08:00"}).status_code == 200
    before = datetime.fromisoformat("2026-12-09T15:59:00+08:00")
    with frozen_now(before):
        run_due(engine, now=before)
    assert len(_reminders(engine)) == 1
    due = datetime.fromisoformat("2026-12-09T16:01:00+08:00")
    with frozen_now(due):
        run_due(engine, now=due)
        later = due + timedelta(days=7)
        run_due(engine, now=later)
    texts = _reminders(engine)
    assert len(texts) == 2 and "2026-12-10 08:00" in texts[1] and "2026-12-03 08:00" in texts[0]
    with transaction(engine) as session:
        channels = set(session.scalars(select(OutboxMessage.channel).where(
            OutboxMessage.template_key == "checkup_reminder")))
    assert channels == {"sms"}


def test_a_his_patients_revisit_reminder_and_page_carry_the_departments_link(
        client: TestClient, engine: Engine, centre: None, user_factory: UserFactory) -> None:
    import_bundle(APPS / "orthopedics", actor="test")
    with transaction(engine) as session:
        session.add(Department(id="orthopedics", name={"zh-CN": "骨科", "en": "Orthopaedics"}))
    user_factory("ortho_nurse", "nurse", "orthopedics")
    with frozen_now(NOW):
        login(client, "it_admin")
        csrf = csrf_from(client.get("/admin/booking-links").text)
        assert client.post("/admin/booking-links", data={
            "department": "orthopedics", "csrf_token": csrf, "template": LINK},
            follow_redirects=False).status_code == 303
        with transaction(engine) as session:
            key = create_api_key(session, "his")
        for n, (kind, payload) in enumerate((
                ("patient.upserted", {"patient_id": "P5", "mrn": "MRN5", "name": "钱女士",
                                      "phone": "13800000005"}),
                ("encounter.admitted", {"encounter_id": "E5", "patient_id": "P5",
                                        "type": "inpatient", "department_id": "orthopedics",
                                        "admitted_at": "2026-11-20T09:00:00+08:00"}),
                ("appointment.booked", {"appointment_id": "A5", "patient_id": "P5",
                                        "department_id": "orthopedics", "kind": "revisit",
                                        "scheduled_at": "2026-12-20T09:00:00+08:00"}))):
            assert _send(client, key, f"his-{n}", kind, payload).status_code == 200
        nurse = TestClient(client.app)
        login(nurse, "ortho_nurse")
        page = nurse.get("/patients/P5")
    assert 'href="https://yy.example-hospital.cn/book?card=MRN5&amp;dept=orthopedics"' in page.text
    due = datetime.fromisoformat("2026-12-19T10:01:00+08:00")
    with frozen_now(due):
        run_due(engine, now=due)
    with transaction(engine) as session:
        sent = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "revisit_reminder")).one()
        text = message_text(session, sent)[1]
    assert "一键预约" in text
    assert "https://yy.example-hospital.cn/book?card=MRN5&dept=orthopedics" in text
    assert "/booking/" not in text
