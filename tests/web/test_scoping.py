"""Every patient-level route refuses a ward-A nurse asking for a ward-B patient.

The routes are found by walking the app, not listed here: a new route marked patient-level is
tested automatically, and a route whose path names a patient but is not marked fails the test.
"""

from __future__ import annotations

import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.models import AuditRow
from careloop.engine.registry import loaded_registry
from careloop.forms.models import Submission
from careloop.web.scoping import iter_routes

from .conftest import UserFactory, login

# a value for each resolver, for the ward-B patient (filled from the ``wards`` fixture)
PATIENT_PARAM = re.compile(r"\{(patient_id|task_id|encounter_id|submission_id|alert_id)\}")


def _submission_of(patient_id: str) -> str:
    """A stored submission of the patient (rows only: the scope check runs before the route)."""
    with transaction() as session:
        sub = Submission(form_key="complaint", form_version=1, content_hash="x" * 64,
                         patient_id=patient_id, encounter_id=f"E-{patient_id}",
                         department_id="cardio", channel="web", locale="zh-CN",
                         status="received", answers={}, scores={}, bands={},
                         submitted_at=now_utc())
        session.add(sub)
        session.flush()
        return str(sub.id)


def _alert_of(patient_id: str, department: str) -> str:
    """An alert a rule raised for the patient in ``department``."""
    from careloop.rules.models import RuleAlert

    with transaction() as session:
        alert = RuleAlert(idempotency_key=f"test:{patient_id}", ruleset_key="r", rule_key="r",
                          patient_id=patient_id, department_id=department, level="critical",
                          message="x", status="open", created_at=now_utc())
        session.add(alert)
        session.flush()
        return str(alert.id)


def _consult_of(patient_id: str, task_id: int) -> str:
    """A question the patient asked, carried by their task (rows only, as above)."""
    from careloop.flows.consult_models import Consult

    with transaction() as session:
        found = Consult(patient_id=patient_id, desk_key="d", department_id="ward_b",
                        question="x", locale="zh-CN", via="d", status="open", task_id=task_id,
                        asked_at=now_utc(), due_at=now_utc())
        session.add(found)
        session.flush()
        return str(found.id)


def _call_of(patient_id: str, task_id: int) -> str:
    """A phone call logged on the patient's task."""
    from careloop.flows.call_models import CallRecord

    with transaction() as session:
        call = CallRecord(task_id=task_id, patient_id=patient_id, started_at=now_utc(),
                          duration_seconds=60, outcome="reached_ok", caller="x",
                          source="console", created_at=now_utc())
        session.add(call)
        session.flush()
        return str(call.id)


def _url(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


def test_every_patient_level_route_refuses_an_out_of_scope_patient(
        app: FastAPI, client: TestClient, wards: dict[str, int],
        user_factory: UserFactory) -> None:
    user_factory("nurse_a", "doctor", "ward_a")  # doctor: may reveal, so reveal is tested too
    user_factory("px", "px_office", None)         # may export too
    routes = [r for r in iter_routes(app.routes) if r.patient is not None]
    assert len(routes) >= 20
    complaint = _submission_of("PB")  # a complaint about cardio: not in ward A's scope
    via_values = {"patient": "PB", "task": str(wards["PB"]), "encounter": "E-PB",
                  "submission": complaint, "complaint": complaint,
                  "alert": _alert_of("PB", "ward_b"),
                  "consult": _consult_of("PB", wards["PB"]),
                  "call": _call_of("PB", wards["PB"])}
    # the engines' patient-level routes are among them (forms: submission read-back and FHIR)
    assert {"/api/v1/submissions/{submission_id}", "/api/v1/submissions/{submission_id}/fhir",
            "/tasks/{task_id}/form", "/complaints/{submission_id}",
            "/api/v1/patients/{patient_id}/rule-traces"} <= {r.path for r in routes}
    missing = {r.patient.via for r in routes if r.patient} - set(via_values)
    assert not missing, f"add sample values for resolvers {missing}"
    assert set(loaded_registry().catalogue("patient_resolver").names()) >= set(via_values)
    token = login(client, "nurse_a")
    refused = []
    for route in routes:
        assert route.patient is not None
        values = {route.patient.param: via_values[route.patient.via]}
        for method in sorted(route.methods - {"HEAD"}):
            response = client.request(method, _url(route.path, values),
                                      headers={"X-CSRF-Token": token},
                                      follow_redirects=False)
            assert response.status_code == 403, (method, route.path, response.status_code)
            refused.append((method, route.path))
    with transaction() as session:
        denied = session.scalars(select(AuditRow).where(
            AuditRow.action == "patient.access", AuditRow.outcome == "denied")).all()
    assert len(denied) == len(refused)
    assert {d.patient_id for d in denied} == {"PB"}


def test_the_same_routes_serve_an_in_scope_patient(
        app: FastAPI, client: TestClient, wards: dict[str, int],
        user_factory: UserFactory) -> None:
    user_factory("nurse_a", "nurse", "ward_a")
    login(client, "nurse_a")
    assert client.get("/patients/PA").status_code == 200
    assert client.get(f"/tasks/{wards['PA']}").status_code == 200
    assert client.get("/api/v1/patients/PA").status_code == 200
    assert client.get(f"/api/v1/tasks/{wards['PA']}").status_code == 200
    # lists are scoped by query, not by the marker
    assert [p["id"] for p in client.get("/api/v1/patients").json()] == ["PA"]
    assert {t["patient_id"] for t in client.get("/api/v1/tasks?view=department").json()} == {"PA"}


def test_routes_with_a_patient_in_the_path_are_marked(app: FastAPI) -> None:
    """Every route of every module (web runtime and engines) whose path names a patient-level
    object must be marked, so a new route cannot forget its scope."""
    checked = 0
    for route in iter_routes(app.routes):
        if PATIENT_PARAM.search(route.path):
            checked += 1
            assert route.patient is not None, f"{route.path} names a patient but is not marked"
    assert checked >= 20
    modules = {r.endpoint.__module__ for r in iter_routes(app.routes) if r.patient is not None}
    assert {"careloop.web.routes_forms", "careloop.web.routes_console",
            "careloop.web.routes_api"} <= modules


@pytest.mark.parametrize("role", ["system_admin", "security_admin", "auditor"])
def test_administrators_see_no_patient_data(client: TestClient, wards: dict[str, int],
                                            user_factory: UserFactory, role: str) -> None:
    user_factory("boss", role, None)
    login(client, "boss")
    assert client.get("/api/v1/patients/PA").status_code == 403
    assert client.get("/patients/PA").status_code == 403
