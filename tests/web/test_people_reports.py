"""People reports through their pages: who may read which department's people, the minimum
sample hiding a person's figures, the setting refused with its field path, the own report only
after opting in, and the monthly PDF made once per department and month (the cardiology journey
itself is the shipped scenario ``cardiology_monthly_people_report``)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient
from careloop.flows.models import OutboxMessage
from careloop.forms.runtime import submit
from careloop.reports import people
from careloop.reports.people_models import PeopleReportFile
from careloop.reports.people_monthly import run_monthly
from careloop.web.scenarios.expectations import pdf_text

from .conftest import UserFactory, csrf_from, get_user, login

APPS = Path(__file__).resolve().parents[2] / "app_definitions"
DECEMBER = datetime(2026, 12, 10, 2, 0, tzinfo=UTC)


@pytest.fixture
def ward(engine: Engine, user_factory: UserFactory) -> dict[str, int]:
    """Cardiology and neurology; Dr Zhao with 3 answers (5, 5, 4), Dr Sun with 1 (5)."""
    for app in ("common", "cardiology", "discharge", "satisfaction", "complaints",
                "people_reports"):
        import_bundle(APPS / app, actor="test")
    with transaction(engine) as session:
        for dept, name in (("cardiology", "心内科"), ("neurology", "神经内科")):
            session.add(Department(id=dept, name={"zh-CN": name, "en": dept}))
    ids = {name: user_factory(name, role, dept) for name, role, dept in (
        ("dir_cardio", "dept_director", "cardiology"), ("dir_neuro", "dept_director", "neurology"),
        ("dr_zhao", "doctor", "cardiology"), ("dr_sun", "doctor", "cardiology"),
        ("px_wang", "px_office", None))}
    with frozen_now(DECEMBER), transaction(engine) as session:
        for n, (doctor, overall) in enumerate((("dr_zhao", 5), ("dr_zhao", 5), ("dr_zhao", 4),
                                               ("dr_sun", 5)), start=1):
            session.add(Patient(id=f"P{n}", mrn=f"M{n}", name=f"患者{n}"))
            session.flush()
            session.add(Encounter(id=f"E{n}", patient_id=f"P{n}", type="inpatient",
                                  department_id="cardiology", attending_doctor_id=ids[doctor],
                                  status="discharged", discharged_at=DECEMBER))
            session.flush()
            submit(session, form_key="discharge_day3",
                   answers={"recovery": "good", "medication_clear": "yes", "overall": overall},
                   patient_id=f"P{n}", encounter_id=f"E{n}")
        people.set_min_sample(session, 3, "test")
    return ids


def test_who_reads_which_people_the_minimum_sample_and_the_own_report(
        client: TestClient, ward: dict[str, int]) -> None:
    # one setup for the pages (importing the bundles is what takes the time)
    login(client, "dir_cardio")
    page = client.get("/people-reports?month=2026-12")
    assert page.status_code == 200
    assert "4.67" in page.text and "100%" in page.text  # Dr Zhao: (5 + 5 + 4) / 3
    assert "dr_sun" in page.text and "样本不足" in page.text
    assert "5.00" not in page.text  # Dr Sun's single answer
    assert client.get("/people-reports?department=neurology").status_code == 403
    csrf = csrf_from(page.text)
    assert client.post("/people-reports/settings", data={"min_sample": "1",
                                                         "csrf_token": csrf}).status_code == 403

    neuro = TestClient(client.app)
    login(neuro, "dir_neuro")
    assert neuro.get("/people-reports?department=cardiology&month=2026-12").status_code == 403
    assert "dr_zhao" not in neuro.get("/people-reports?month=2026-12").text

    doctor = TestClient(client.app)
    login(doctor, "dr_zhao")
    redirected = doctor.get("/people-reports?department=cardiology&month=2026-12")
    assert redirected.url.path == "/people-reports/me" and "4.67" not in redirected.text
    doctor.post("/people-reports/me", data={"opt_in": "1",
                                            "csrf_token": csrf_from(redirected.text)})
    own = doctor.get("/people-reports/me?month=2026-12")
    assert "4.67" in own.text and "dr_sun" not in own.text

    office = TestClient(client.app)
    office_csrf = login(office, "px_wang")
    refused = office.post("/people-reports/settings", data={"min_sample": "abc",
                                                            "csrf_token": office_csrf})
    assert refused.status_code == 422 and "$.min_sample" in refused.text
    office.post("/people-reports/settings", data={"min_sample": "1", "csrf_token": office_csrf})
    assert "5.00" in office.get("/people-reports?department=cardiology&month=2026-12").text


def test_the_monthly_pdf_is_made_once_and_sent_to_the_director(
        engine: Engine, client: TestClient, ward: dict[str, int]) -> None:
    with frozen_now(datetime(2027, 1, 1, 1, 0, tzinfo=UTC)):  # 09:00 in Shanghai
        assert run_monthly(engine) == 2  # cardiology and neurology have a director
        assert run_monthly(engine) == 0
    with transaction(engine) as session:
        row = session.scalars(select(PeopleReportFile).where(
            PeopleReportFile.department_id == "cardiology")).one()
        assert row.month == "2026-12"
        text = pdf_text(row.pdf)
        sent = session.scalar(select(func.count(OutboxMessage.id)).where(
            OutboxMessage.template_key == "people_report_monthly",
            OutboxMessage.user_id == get_user("dir_cardio").id))
        file_id = row.id
    flat = "".join(text.split())
    assert "心内科2026-12医护服务质量报告" in flat and "4.67" in flat and "样本不足" in flat
    assert "5.00" not in flat and sent == 1
    login(client, "dir_neuro")
    assert client.get(f"/people-reports/files/{file_id}").status_code == 403


def test_ranking_ties_share_a_rank_and_small_samples_come_last() -> None:
    ranked = people.rank([people.PersonFigures("1", "甲", 12, 4.0, 80.0),
                          people.PersonFigures("2", "乙", 3, shown=False),
                          people.PersonFigures("3", "丙", 20, 4.5, 90.0),
                          people.PersonFigures("4", "丁", 15, 4.0, 80.0)])
    assert [(p.name, p.rank) for p in ranked] == [("丙", 1), ("丁", 2), ("甲", 2), ("乙", None)]
    assert people.month_bounds("2026-12") == (date(2026, 12, 1), date(2026, 12, 31))
