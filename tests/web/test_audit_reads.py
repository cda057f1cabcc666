"""Every read of patient data through the API is audited (submission, its FHIR export, a task),
and so are the builder's try-its on real data and refused bundle imports; the rows chain and
verify. Runs with the shipped apps (app_definitions/)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine import audit, store
from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow
from careloop.forms.runtime import submit

from ..conftest import ROOT
from .conftest import UserFactory, login


def _rows(action: str) -> list[dict[str, Any]]:
    with transaction() as session:
        return [{"actor": r.actor, "object_type": r.object_type, "object_id": r.object_id,
                 "patient_id": r.patient_id, "outcome": r.outcome, "details": r.details}
                for r in session.scalars(select(AuditRow).where(AuditRow.action == action)
                                         .order_by(AuditRow.id)).all()]


@pytest.fixture
def apps(engine: Engine) -> None:
    for name in ("common", "discharge", "cardiology", "satisfaction"):
        import_bundle(ROOT / "app_definitions" / name, engine=engine, actor="test")


def test_submission_fhir_and_task_reads_are_audited(
        client: TestClient, wards: dict[str, int], user_factory: UserFactory,
        apps: None) -> None:
    with transaction() as session:
        sub, _ = submit(session, form_key="inpatient_satisfaction",
                        answers={"overall": 4, "nps": 9}, patient_id="PA", channel="phone",
                        entered_by="nurse_a")
        sub_id = sub.id
    user_factory("nurse_a", "nurse", "ward_a")
    login(client, "nurse_a")
    assert client.get(f"/api/v1/submissions/{sub_id}").status_code == 200
    assert client.get(f"/api/v1/submissions/{sub_id}/fhir").status_code == 200
    assert client.get(f"/api/v1/tasks/{wards['PA']}").status_code == 200
    assert client.get(f"/tasks/{wards['PA']}").status_code == 200  # the task page
    views = [r for r in _rows("patient.view") if r["actor"] == "nurse_a"]
    assert [(r["object_type"], r["object_id"], r["patient_id"]) for r in views] == [
        ("submission", str(sub_id), "PA"), ("task", str(wards["PA"]), "PA"),
        ("task", str(wards["PA"]), "PA")]
    assert _rows("patient.export") == [{
        "actor": "nurse_a", "object_type": "submission", "object_id": str(sub_id),
        "patient_id": "PA", "outcome": "success",
        "details": {"format": "fhir", "form": "inpatient_satisfaction"}}]
    # out of scope: refused, audited as such, and nothing of the patient is read
    assert client.get(f"/api/v1/tasks/{wards['PB']}").status_code == 403
    assert _rows("patient.access")[-1]["outcome"] == "denied"
    with transaction() as session:
        assert list(audit.verify(session)) == []


def test_builder_try_its_on_real_data_are_audited(
        client: TestClient, wards: dict[str, int], user_factory: UserFactory,
        apps: None) -> None:
    user_factory("px_a", "px_office", None)
    token = login(client, "px_a")
    client.headers["X-CSRF-Token"] = token
    with transaction() as session:
        alert = store.current(session, "alert", "department_nps_low")
        rules = store.current(session, "ruleset", "followup_routing")
        assert alert is not None and rules is not None
        alert_body, rules_body = dict(alert.body), dict(rules.body)
    tried = client.post("/api/v1/builder/alerts/department_nps_low/try",
                        json={"body": alert_body})
    assert tried.status_code == 200, tried.text
    assert client.get("/api/v1/builder/charts/kpi_nps/preview").status_code == 200
    chart = {"kind": "chart", "key": "nps_tile", "title": {"zh-CN": "净推荐值", "en": "NPS"},
             "dataset": "satisfaction_by_department", "type": "bar",
             "encoding": {"x": "department", "y": "nps"}}
    assert client.post("/api/v1/builder/preview/chart/nps_tile",
                       json={"body": chart}).status_code == 200
    event = {"form": "inpatient_satisfaction", "answers": {"overall": 3, "nps": 9}}
    assert client.post("/api/v1/builder/rules/followup_routing/try",
                       json={"body": rules_body, "event": event}).status_code == 200
    assert client.post("/api/v1/rules/followup_routing/test",
                       json={"type": "form.submitted", "payload": event}).status_code == 200
    tries = _rows("builder.try")
    assert [(r["object_type"], r["object_id"], r["details"]["data"]) for r in tries] == [
        ("alert", "department_nps_low", "scoped"), ("chart", "kpi_nps", "scoped"),
        ("chart", "nps_tile", "scoped"), ("ruleset", "followup_routing", "posted"),
        ("ruleset", "followup_routing", "posted")]
    assert {r["actor"] for r in tries} == {"px_a"}


def test_a_refused_bundle_import_is_audited(client: TestClient, wards: dict[str, int],
                                           user_factory: UserFactory) -> None:
    user_factory("admin_a", "system_admin", None)
    client.headers["X-CSRF-Token"] = login(client, "admin_a")
    refused = client.post("/api/v1/builder/import?apply=true", content=b"not a zip")
    assert refused.status_code == 422
    assert [(r["actor"], r["outcome"], r["details"]) for r in _rows("builder.import")] == [
        ("admin_a", "failure", {"apply": True, "reason": "not a bundle"})]
