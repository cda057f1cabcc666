"""Issue 19, printable summaries (seed 001: 打印健康报告, 健康阶段总结, 历年指标趋势): the patient's
stage summary as a PDF, printed from patient 360 and sent to the patient.

A cardiology patient is discharged by the HIS, answers PHQ-9 twice by phone (moderate, then
mild), sends blood-pressure and glucose readings; the attending doctor completes the review the
PHQ-9 rule asked for with advice. The summary the doctor prints reads as a clinician reads it:
band words, hospital local times, labels from the definitions, phone masked, the psychiatry stay
(sensitive, not hers) left out. A nurse of another department is refused and sees nothing. The
doctor sends the summary; the patient's message carries an absolute link that opens the PDF (name
masked). The PDF text is read back with PDFium (pypdfium2)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Task
from careloop.engine.models import AuditRow
from careloop.flows.ingest import create_api_key
from careloop.flows.models import OutboxMessage, SummaryLink
from careloop.flows.outbox import message_text
from careloop.web import admin
from careloop.web.scenarios.expectations import pdf_text
from careloop.web.stage_summary import mask_name

from .conftest import UserFactory, csrf_from, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
FIRST = datetime.fromisoformat("2026-11-02T09:00:00+08:00")
SECOND = datetime.fromisoformat("2026-11-20T10:30:00+08:00")
NOW = datetime.fromisoformat("2026-12-07T10:00:00+08:00")
BASE = "https://fu.example-hospital.cn"
MODERATE = {f"q{n}": "2" for n in range(1, 6)} | {f"q{n}": "1" for n in range(6, 9)} | {"q9": "0"}
ADVICE = "建议两周后心内科复诊，继续规律服药；有事请拨13900001111"
MILD = {f"q{n}": "1" for n in range(1, 7)} | {f"q{n}": "0" for n in range(7, 10)}



@pytest.fixture
def hospital(engine: Engine, user_factory: UserFactory) -> Iterator[str]:
    with frozen_now(FIRST - timedelta(days=1)):
        for app in ("common", "mental_health"):
            import_bundle(APPS / app, actor="test")
        with transaction(engine) as session:
            admin.create_department(session, id="cardio", name_zh="心内科",
                                    name_en="Cardiology", parent_id=None)
            admin.create_department(session, id="ortho", name_zh="骨科", name_en="Orthopaedics",
                                    parent_id=None)
            admin.create_department(session, id="psychiatry", name_zh="精神心理科",
                                    name_en="Psychiatry", parent_id=None)
            key = create_api_key(session, "his")
    for username, role, dept in (("doc_c", "doctor", "cardio"), ("nurse_o", "nurse", "ortho"),
                                 ("psy_doc", "doctor", "psychiatry")):
        user_factory(username, role, dept)
    yield key


def _his(client: TestClient, key: str, at: datetime, event_id: str, kind: str,
         payload: dict[str, object]) -> None:
    with frozen_now(at):
        answer = client.post("/api/v1/events", headers={"X-API-Key": key}, json={
            "event_id": event_id, "type": kind, "payload": payload})
        drain()  # the rules and flows run from the event queue, after the API acknowledged
    assert answer.status_code == 200, answer.text


def _enter(client: TestClient, username: str, form: str, encounter: str,
           answers: dict[str, str], at: datetime) -> None:
    staff = TestClient(client.app)
    with frozen_now(at):
        token = login(staff, username)
        entered = staff.post(f"/api/v1/forms/{form}/submissions",
                             headers={"X-CSRF-Token": token},
                             json={"patient_id": "P1", "encounter_id": encounter,
                                   "channel": "phone", "answers": answers})
    assert entered.status_code == 201, entered.text


def _journey(client: TestClient, key: str, *, full: bool = True) -> None:
    """The HIS, the patient and the care team, through the public paths (``full=False``: the
    patient, the stay and one PHQ-9)."""
    _his(client, key, FIRST - timedelta(days=2), "p1", "patient.upserted", {
        "patient_id": "P1", "mrn": "M-0001", "name": "王秀英", "phone": "13812345678",
        "gender": "female", "birth_date": "1958-03-04"})
    _his(client, key, FIRST - timedelta(days=1), "e1", "encounter.discharged", {
        "encounter_id": "E-C1", "patient_id": "P1", "type": "inpatient",
        "department_id": "cardio", "attending_doctor": "doc_c",
        "admitted_at": (FIRST - timedelta(days=6)).isoformat(),
        "discharged_at": (FIRST - timedelta(days=1)).isoformat()})
    _his(client, key, FIRST, "e2", "encounter.admitted", {
        "encounter_id": "E-PSY", "patient_id": "P1", "type": "outpatient",
        "department_id": "psychiatry", "admitted_at": FIRST.isoformat()})
    _enter(client, "doc_c", "phq9", "E-C1", MODERATE, FIRST)
    if not full:
        return
    _enter(client, "doc_c", "phq9", "E-C1", MILD, SECOND)
    _enter(client, "psy_doc", "gad7", "E-PSY", {f"q{n}": "2" for n in range(1, 8)}, SECOND)
    for n, (at, sys_, dia, glu) in enumerate(((FIRST, 152, 94, 8.6), (SECOND, 136, 84, 6.4))):
        _his(client, key, at + timedelta(hours=1), f"bp{n}", "reading.recorded", {
            "reading_id": f"BP-{n}", "patient_id": "P1", "type": "blood_pressure",
            "value": {"systolic": sys_, "diastolic": dia},
            "measured_at": (at + timedelta(hours=1)).isoformat()})
        _his(client, key, at + timedelta(hours=1), f"glu{n}", "reading.recorded", {
            "reading_id": f"GLU-{n}", "patient_id": "P1", "type": "glucose",
            "value": {"value": glu, "unit": "mmol/L"},
            "measured_at": (at + timedelta(hours=1)).isoformat()})
    with transaction() as session:
        review = session.scalars(select(Task).where(
            Task.patient_id == "P1", Task.encounter_id == "E-C1")).one()
    doctor = TestClient(client.app)
    with frozen_now(FIRST + timedelta(hours=3)):
        token = login(doctor, "doc_c")
        done = doctor.post(f"/api/v1/tasks/{review.id}/complete",
                           headers={"X-CSRF-Token": token},
                           json={"outcome": "reached_ok", "notes": ADVICE})
    assert done.status_code == 200, done.text


def test_stage_summary_printed_sent_and_opened(
        hospital: str, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_BASE_URL", BASE)
    _journey(client, hospital)
    login(client, "doc_c")
    with frozen_now(NOW):
        page = client.get("/patients/P1")
        assert 'href="/patients/P1/summary"' in page.text and "打印阶段总结" in page.text
        form = client.get("/patients/P1/summary")
        assert form.status_code == 200 and "发送阶段总结给患者" in form.text
        printed = client.get("/patients/P1/summary.pdf?months=6")
    assert printed.status_code == 200, printed.text
    assert printed.headers["content-type"] == "application/pdf"
    assert printed.headers["cache-control"] == "no-store"
    text = pdf_text(printed.content)
    # who: the name as patient 360 shows it to staff, phone and ID masked as the app masks them
    assert "阶段健康总结" in text and "王秀英" in text and "M-0001" in text
    assert "138****5678" in text and "13812345678" not in text and "女" in text
    # scores over time with their bands in words, labels from the definition, local times
    assert "患者健康问卷（PHQ-9）" in text and "中度" in text and "轻度" in text
    assert "2026-11-02 09:00" in text and "2026-11-20 10:30" in text
    assert "2026-11-02 01:00" not in text  # never UTC
    # blood pressure and glucose, with the trend charts' legends and tables
    assert "152/94 mmHg" in text and "136/84 mmHg" in text and "收缩压" in text
    assert "6.4 mmol/L" in text and "目标范围" in text
    # follow-ups done and the advice given (a phone number in a note masked)
    assert "PHQ-9 总分 13，请安排复诊" in text and "已联系，情况良好" in text
    flat = text.replace("\r\n", "")  # a long note wraps inside its table cell
    assert "建议两周后心内科复诊" in flat and "139****1111" in flat
    assert "13900001111" not in text
    # the sensitive psychiatry stay is not the doctor's: nothing of it prints
    assert "GAD-7" not in text and "精神心理科" not in text
    for code in ("phq9", "reached_ok", "blood_pressure", "moderate", "None", "+00:00"):
        assert code not in text, code
    with transaction() as session:
        audit = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.summary_print")).one()
        assert audit.patient_id == "P1" and audit.actor == "doc_c"

    with frozen_now(NOW):
        sent = client.post("/patients/P1/summary/send",
                           data={"csrf_token": csrf_from(form.text), "months": "6"},
                           follow_redirects=False)
        assert sent.status_code == 303
        assert "已发送" in client.get(sent.headers["location"]).text
    with transaction() as session:
        message = session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "stage_summary_notice")).one()
        body = message_text(session, message)[1]
        assert message.patient_id == "P1" and message.channel == "sms"
        assert session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.summary_send")).one().object_id == str(message.id)
    assert "{{link:s:" in message.body  # the token is sealed in the stored message
    assert "2026-06-10至2026-12-07的阶段健康总结" in body
    link = re.search(rf"{re.escape(BASE)}/s/[A-Za-z0-9_\-]{{20,}}", body)
    assert link is not None

    patient = TestClient(client.app)
    with frozen_now(NOW + timedelta(hours=2)):
        opened = patient.get(link.group(0).removeprefix(BASE))
        assert patient.get("/s/" + "x" * 32).status_code == 404
    assert opened.status_code == 200 and opened.headers["content-type"] == "application/pdf"
    mine = pdf_text(opened.content)
    assert "王**" in mine and "王秀英" not in mine and "中度" in mine and "轻度" in mine
    assert "138****5678" in mine and "GAD-7" not in mine
    with transaction() as session:
        assert session.get(OutboxMessage, message.id).opened_at is not None  # type: ignore[union-attr]
    with frozen_now(NOW + timedelta(days=31)):
        assert patient.get(link.group(0).removeprefix(BASE)).status_code == 410


def test_no_scope_no_summary(hospital: str, client: TestClient) -> None:
    """A nurse of orthopaedics never had the patient: refused (audited), nothing leaks, nothing
    is sent."""
    _journey(client, hospital, full=False)
    login(client, "nurse_o")
    with frozen_now(NOW):
        page = client.get("/patients/P1/summary")
        printed = client.get("/patients/P1/summary.pdf")
        sent = client.post("/patients/P1/summary/send",
                           data={"csrf_token": csrf_from(client.get("/").text), "months": "6"},
                           follow_redirects=False)
    for refused in (page, printed, sent):
        assert refused.status_code == 403
        assert not refused.content.startswith(b"%PDF")
        assert "王秀英" not in refused.text and "中度" not in refused.text
    with transaction() as session:
        assert session.scalars(select(SummaryLink)).first() is None
        assert session.scalars(select(OutboxMessage).where(
            OutboxMessage.template_key == "stage_summary_notice")).first() is None
        assert session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.summary_print")).first() is None
        denied = session.scalars(select(AuditRow).where(
            AuditRow.actor == "nurse_o", AuditRow.outcome == "denied")).all()
        assert len(denied) >= 3 and {a.patient_id for a in denied} == {"P1"}


def test_masked_name() -> None:
    assert mask_name("王秀英") == "王**" and mask_name("Eve") == "E**" and mask_name(None) == ""
