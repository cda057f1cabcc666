"""The engines in the staff console: a phone follow-up task's form in staff-entry mode, the
submission page, the patient 360 panels and read-backs, the complaints centre, dashboards and
the flow operations page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle, list_bundles
from careloop.engine.db import transaction
from careloop.engine.domain import Task
from careloop.engine.models import AuditRow
from careloop.forms.models import FormRequest, Submission
from careloop.web.complaints import sla_of

from .conftest import UserFactory, csrf_from, login

BUNDLES = Path(__file__).resolve().parents[2] / "app_definitions"


@pytest.fixture
def bundles(engine: Engine) -> None:
    for path in list_bundles([BUNDLES]):
        import_bundle(path, actor="test")


@pytest.fixture
def phone_task(wards: dict[str, int], bundles: None) -> int:
    with transaction() as session:
        task = session.get(Task, wards["PA"])
        assert task is not None
        task.kind, task.form_key = "phone_followup", "discharge_day3"
        return task.id


def _fill_day3(client: TestClient, task_id: int, overall: str) -> int:
    page = client.get(f"/tasks/{task_id}/form")
    assert page.status_code == 200
    assert "careloop-form" in page.text and 'name="recovery"' in page.text
    assert 'value="save"' not in page.text  # staff mode: no save-and-resume button
    token = csrf_from(page.text)
    answers = {"csrf_token": token, "_page": "0", "_action": "submit", "recovery": "good",
               "medication_clear": "no", "overall": overall, "comment": "用药指导不清楚"}
    # forms.js asks which fields are visible: answered with JSON, nothing submitted
    asked = client.post(f"/tasks/{task_id}/form", data={"csrf_token": token, "_page": "0",
                                                       "_action": "visible", "overall": "5"})
    assert asked.status_code == 200 and "overall" in asked.json()["visible"]
    # the first try misses a required answer: the page comes back with the error, nothing stored
    missing = client.post(f"/tasks/{task_id}/form",
                          data={k: v for k, v in answers.items() if k != "recovery"})
    assert missing.status_code == 422 and "error-summary" in missing.text
    done = client.post(f"/tasks/{task_id}/form", data=answers, follow_redirects=False)
    assert done.status_code == 303, done.text
    match = re.search(r"submitted=(\d+)", done.headers["location"])
    assert match
    return int(match.group(1))


def test_phone_followup_opens_the_form_in_staff_mode_and_completes_the_task(
        client: TestClient, phone_task: int, user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", "ward_a")
    token = login(client, "nurse_a")
    task_page = client.get(f"/tasks/{phone_task}")
    assert f'href="/tasks/{phone_task}/form"' in task_page.text
    sub_id = _fill_day3(client, phone_task, "2")
    with transaction() as session:
        sub = session.get(Submission, sub_id)
        assert sub is not None
        assert (sub.channel, sub.entered_by, sub.patient_id) == ("phone", "nurse_a", "PA")
        request = session.scalars(select(FormRequest).where(
            FormRequest.source_ref == f"task:{phone_task}")).one()
        assert request.status == "answered" and request.channel == "phone"
        on_behalf = session.scalars(select(AuditRow).where(
            AuditRow.action == "forms.submit_on_behalf")).all()
        assert [a.actor for a in on_behalf] == ["nurse_a"]
    shown = client.get(f"/tasks/{phone_task}")
    assert f'href="/submissions/{sub_id}"' in shown.text
    assert f'href="/tasks/{phone_task}/form"' not in shown.text
    done = client.post(f"/tasks/{phone_task}/complete", data={
        "csrf_token": token, "outcome": "reached_problem", "notes": "已解释用药"},
        follow_redirects=False)
    assert done.status_code == 303
    with transaction() as session:
        task = session.get(Task, phone_task)
        assert task is not None and (task.status, task.outcome) == ("done", "reached_problem")
    # a closed task's form is not offered again
    assert client.get(f"/tasks/{phone_task}/form", follow_redirects=False).status_code == 303
    # the submission page shows the answers with its version's labels; the patient page the score
    page = client.get(f"/submissions/{sub_id}")
    assert page.status_code == 200 and "出院带药的用法您清楚吗" in page.text
    patient = client.get("/patients/PA")
    assert f'href="/submissions/{sub_id}"' in patient.text
    api = client.get("/api/v1/patients/PA/submissions").json()
    assert [s["id"] for s in api] == [sub_id] and api[0]["entered_by"] == "nurse_a"
    for what in ("messages", "flow-runs", "rule-traces", "bp-readings"):
        assert client.get(f"/api/v1/patients/PA/{what}").status_code == 200


def test_a_task_without_a_form_has_no_form_page(client: TestClient, wards: dict[str, int],
                                                 bundles: None,
                                                 user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", "ward_a")
    login(client, "nurse_a")
    assert client.get(f"/tasks/{wards['PA']}/form").status_code == 404


def test_complaint_intake_list_and_resolution(client: TestClient, wards: dict[str, int],
                                              bundles: None,
                                              user_factory: UserFactory) -> None:
    user_factory("px", "px_office", None)
    login(client, "px")
    form = client.get("/patients/PA/complaint")
    assert form.status_code == 200 and 'name="category"' in form.text
    posted = client.post("/patients/PA/complaint", data={
        "csrf_token": csrf_from(form.text), "_page": "0", "_action": "submit",
        "channel_of_complaint": "phone", "category": "waiting", "department": "cardio",
        "description": "等候时间太长", "wants_contact": "no"}, follow_redirects=False)
    assert posted.status_code == 303, posted.text
    complaint_id = int(posted.headers["location"].rsplit("/", 1)[1])
    listing = client.get("/complaints")
    assert f'data-complaint="{complaint_id}"' in listing.text
    assert "csla-on_track" in listing.text
    with transaction() as session:  # the complaint_handling flow gave the department a task
        tasks = session.scalars(select(Task).where(
            Task.patient_id == "PA", Task.kind == "complaint_response")).all()
        assert tasks and all(t.due_at is not None for t in tasks)
        assert {t.department_id for t in tasks} == {"cardio"}
    detail = client.get(f"/complaints/{complaint_id}")
    assert detail.status_code == 200 and "等候时间太长" in detail.text
    assert f'href="/tasks/{tasks[0].id}"' in detail.text
    resolved = client.post(f"/complaints/{complaint_id}/resolve", data={
        "csrf_token": csrf_from(detail.text), "notes": "已致歉"},
        follow_redirects=False)
    assert resolved.status_code == 303
    with transaction() as session:
        sub = session.get(Submission, complaint_id)
        assert sub is not None and sub.status == "resolved" and sub.entered_by == "px"
    after = client.get("/complaints?status=resolved")
    assert f'data-complaint="{complaint_id}"' in after.text and "csla-met" in after.text
    assert client.get("/complaints/999999").status_code == 404


@pytest.mark.parametrize(("hours_since", "responded_after", "expected"), [
    (2, None, "on_track"), (21, None, "due_soon"), (30, None, "breached"),
    (30, 5, "met"), (40, 26, "breached")])
def test_complaint_first_response_sla(hours_since: int, responded_after: int | None,
                                      expected: str) -> None:
    at = datetime(2026, 11, 1, 8, tzinfo=UTC)
    due = at + timedelta(hours=24)
    responded = [at + timedelta(hours=responded_after)] if responded_after is not None else []
    assert sla_of(due, responded, now=at + timedelta(hours=hours_since)) == expected
    assert sla_of(None, responded, now=at) == "no_due"


def test_dashboards_and_flow_operations(client: TestClient, wards: dict[str, int],
                                        bundles: None, user_factory: UserFactory) -> None:
    user_factory("px", "px_office", None)
    user_factory("it", "system_admin", None)
    login(client, "px")
    page = client.get("/dashboards")
    assert page.status_code == 200 and 'href="/reports/dashboards/' in page.text
    # each dashboard with its app's name, not the app's id or the definition's version
    listed = page.text[page.text.index('<ul class="dashboards">'):]
    assert " · 满意度调查" in listed and " · satisfaction" not in listed and " · v1" not in listed
    # the definitions catalogue: each kind and app in words, the key kept for authors
    catalogue = client.get("/definitions").text
    assert "<td>图表</td>" in catalogue and "<td>满意度调查</td>" in catalogue
    assert "<td>chart</td>" not in catalogue and "<td>satisfaction</td>" not in catalogue
    assert client.get("/admin/flows").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_from(page.text)})
    login(client, "it")
    ops = client.get("/admin/flows")
    assert ops.status_code == 200
    missing = client.post("/admin/flows/incidents/999/retry",
                          data={"csrf_token": csrf_from(ops.text)})
    assert missing.status_code == 409


def test_demo_data_fills_every_engine_and_page(client: TestClient, bundles: None) -> None:
    from sqlalchemy import func

    from careloop.flows.models import FlowRun, OutboxMessage
    from careloop.rules.models import RuleEvaluation
    from careloop.web.demo import DEMO_PASSWORD, seed

    context = seed(patients=30)
    assert context["problems"] == [] and context["his_events"] > 90
    with transaction() as session:
        forms = {str(k): int(n) for k, n in session.execute(
            select(Submission.form_key, func.count()).group_by(Submission.form_key)).all()}
        assert {"discharge_day3", "home_bp"} <= set(forms)
        statuses = set(session.scalars(select(FormRequest.status)).all())
        assert "answered" in statuses and statuses & {"sent", "expired", "opened"}
        assert session.scalar(select(func.count()).select_from(RuleEvaluation))
        assert session.scalar(select(func.count()).select_from(FlowRun))
        assert session.scalar(select(func.count()).select_from(OutboxMessage))
        bp_patient = session.scalars(select(Submission.patient_id).where(
            Submission.form_key == "home_bp")).first()
        comments = [s.answers.get("comment") for s in session.scalars(select(Submission).where(
            Submission.form_key == "discharge_day3")).all()]
    assert any(c for c in comments)
    login(client, "px", DEMO_PASSWORD)
    assert "data-complaint=" in client.get("/complaints").text or forms.get("complaint") is None
    if bp_patient:
        assert 'class="bp-chart"' in client.get(f"/patients/{bp_patient}").text
    page = client.get("/reports/dashboards/service_quality_overview",
                      params={"department": "cardiology"})
    assert page.status_code == 200
    assert 'id="filter-department"' in page.text and 'id="active-filter"' in page.text
    assert '<script src="/reports/static/vega-bundle.js">' in page.text
    inbox = client.get("/inbox?view=department")
    assert inbox.status_code == 200 and "data-task=" in inbox.text
