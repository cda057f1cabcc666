"""Issue 19, printable summaries: the department monthly report as a PDF, downloaded by the
department head from the dashboard's report link, with figures from the report engine's
datasets (follow-up reach, satisfaction KPIs and monthly trend, complaint deadlines), scoped to
the head's department. The PDF text is read back with PDFium (pypdfium2).

The rows are the engines' stored rows for two departments over two months (the reports read
tables; the engines that write them have their own journeys)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Encounter, Patient, Task
from careloop.engine.models import AuditRow
from careloop.forms.models import FormRequest, Submission, SubmissionAnswer
from careloop.web import admin
from careloop.web.scenarios.expectations import pdf_text

from .conftest import UserFactory, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
NOW = datetime.fromisoformat("2026-12-07T10:00:00+08:00")
NOV = datetime.fromisoformat("2026-11-05T09:00:00+08:00")
OCT = datetime.fromisoformat("2026-10-08T09:00:00+08:00")



def _satisfaction(session: Session, dept: str, at: datetime, overall: int, nps: int) -> None:
    sub = Submission(form_key="inpatient_satisfaction", form_version=1, content_hash="h",
                     patient_id=f"P-{dept}", encounter_id=f"E-{dept}", department_id=dept,
                     channel="web", locale="zh-CN", status="received",
                     answers={"overall": overall, "nps": nps}, scores={}, bands={},
                     submitted_at=at)
    session.add(sub)
    session.flush()
    for key, value in (("overall", overall), ("nps", nps)):
        session.add(SubmissionAnswer(submission_id=sub.id, form_key=sub.form_key, field_key=key,
                                     value_number=value))


def _complaint(session: Session, dept: str, created: datetime, replied_after: timedelta | None,
               ) -> None:
    session.add(Task(title="投诉首次回复", kind="complaint_response", patient_id=f"P-{dept}",
                     department_id=dept, assignee_role="dept_director", status="done"
                     if replied_after is not None else "open", created_at=created,
                     due_at=created + timedelta(hours=24),
                     completed_at=created + replied_after if replied_after else None,
                     outcome="resolved" if replied_after else None))


@pytest.fixture
def hospital(engine: Engine, user_factory: UserFactory) -> Iterator[None]:
    with frozen_now(OCT - timedelta(days=3)):
        for app in ("common", "discharge", "cardiology", "satisfaction", "complaints"):
            import_bundle(APPS / app, actor="test")
    with transaction(engine) as session:
        admin.create_department(session, id="cardio", name_zh="心内科", name_en="Cardiology",
                                parent_id=None)
        admin.create_department(session, id="ortho", name_zh="骨科", name_en="Orthopaedics",
                                parent_id=None)
        for dept in ("cardio", "ortho"):
            session.add(Patient(id=f"P-{dept}", mrn=f"M-{dept}", name="测试患者"))
            session.flush()
            session.add(Encounter(id=f"E-{dept}", patient_id=f"P-{dept}", type="inpatient",
                                  department_id=dept, status="discharged",
                                  admitted_at=OCT - timedelta(days=9),
                                  discharged_at=OCT - timedelta(days=2)))
        session.flush()
        # cardiology, November: 4 questionnaires sent, 3 answered; 6 satisfaction answers
        for n in range(4):
            session.add(FormRequest(id=f"R-{n}", token_hash=f"{n:064d}",
                                    form_key="inpatient_satisfaction", patient_id="P-cardio",
                                    encounter_id="E-cardio", channel="sms",
                                    status="answered" if n < 3 else "sent",
                                    sent_at=NOV + timedelta(days=n),
                                    expires_at=NOV + timedelta(days=30)))
        for overall, nps in ((5, 10), (5, 9), (4, 9), (4, 8), (3, 6), (5, 10)):
            _satisfaction(session, "cardio", NOV + timedelta(days=2), overall, nps)
        for _ in range(5):  # October: a poorer month (mean 3.00)
            _satisfaction(session, "cardio", OCT, 3, 7)
        # complaints: two replied within the 24 hours, one a day late
        _complaint(session, "cardio", NOV, timedelta(hours=5))
        _complaint(session, "cardio", NOV + timedelta(days=5), timedelta(hours=48))
        _complaint(session, "cardio", NOV + timedelta(days=15), timedelta(hours=20))
        # orthopaedics: five complaints, none answered (must never reach cardiology's report)
        for n in range(5):
            _complaint(session, "ortho", NOV + timedelta(days=n), None)
    user_factory("dir_c", "dept_director", "cardio")
    yield


def test_department_head_downloads_the_monthly_report(hospital: None,
                                                      client: TestClient) -> None:
    login(client, "dir_c")
    with frozen_now(NOW):
        dashboard = client.get("/reports/dashboards/service_quality_overview?department=cardio")
        assert 'href="/reports/monthly?department=cardio"' in dashboard.text
        page = client.get("/reports/monthly?department=cardio")
        assert page.status_code == 200 and "心内科" in page.text and "骨科" not in page.text
        assert 'value="2026-11"' in page.text  # the last whole month by default
        got = client.get("/reports/monthly.pdf?department=cardio&month=2026-11")
    assert got.status_code == 200, got.text
    assert got.headers["content-type"] == "application/pdf"
    text = pdf_text(got.content)
    assert "心内科 2026-11 月报" in text and "2026-11-01 至 2026-11-30" in text
    assert "发出的问卷 4" in text and "应答率 75.0%" in text
    assert "满意度答卷 6" in text and "净推荐值（NPS） 50.0" in text
    assert "2026-10 3.00" in text and "2026-11 4.33" in text  # the trend, month by month
    assert "投诉件数 3" in text and "按时回复率 66.7%" in text
    assert "目前已超期未回复 0" in text
    assert "打印时间：2026-12-07 10:00" in text  # hospital local time
    assert "骨科" not in text and "测试患者" not in text and "None" not in text
    with transaction() as session:
        audit = session.scalars(select(AuditRow).where(
            AuditRow.action == "report.export",
            AuditRow.object_type == "department_monthly")).one()
        assert audit.object_id == "cardio" and audit.actor == "dir_c"


def test_another_department_is_refused(hospital: None, client: TestClient) -> None:
    login(client, "dir_c")
    with frozen_now(NOW):
        other = client.get("/reports/monthly.pdf?department=ortho&month=2026-11")
        bad = client.get("/reports/monthly.pdf?department=cardio&month=11/2026")
    assert other.status_code == 403 and not other.content.startswith(b"%PDF")
    assert "您无权查看这个科室的月报" in other.text and "骨科" not in other.text
    assert bad.status_code == 422 and "月份（month）" in bad.text
    with transaction() as session:
        denied = session.scalars(select(AuditRow).where(
            AuditRow.action == "report.export", AuditRow.outcome == "denied")).one()
        assert denied.object_id == "ortho"
