"""``/api/v1/openapi.json`` describes every response the HIS integrator gets.

Every operation under ``/api/v1`` declares a schema for its 2xx answers, every route under
``/api/v1`` is in the document, and real answers of the main endpoints validate against the
schemas the document declares (jsonschema on the component schemas): a key added to a route's
output without its model, or a model that drifts from the output, fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from sqlalchemy import Engine

from careloop.engine.bundles import import_bundle
from careloop.engine.db import transaction
from careloop.flows.ingest import create_api_key
from careloop.web.app import create_app
from careloop.web.scoping import iter_routes

from .conftest import UserFactory, login

ROOT = Path(__file__).resolve().parents[2]
PATIENT = {"event_id": "oa-1", "type": "patient.upserted",
           "payload": {"patient_id": "P-OA", "mrn": "MRN-OA", "name": "张三", "gender": "male",
                       "birth_date": "1950-01-02", "phone": "13800000000"}}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = TestClient(create_app()).get("/api/v1/openapi.json").json()
    return document


def _has_schema(content: dict[str, Any]) -> bool:
    """A media type whose schema says something (not ``{}`` nor only a title)."""
    return any(set(media.get("schema", {})) - {"title", "description"}
               for media in content.values())


def test_every_api_route_is_described(spec: dict[str, Any]) -> None:
    app = create_app()
    described = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    routes = [(method, info.path) for info in iter_routes(app.routes)
              if info.path.startswith("/api/v1/") and info.path != "/api/v1/openapi.json"
              for method in info.methods if method != "HEAD"]
    assert len(routes) > 50
    missing = sorted(r for r in routes if r not in described)
    assert missing == []


def test_every_2xx_answer_has_a_schema(spec: dict[str, Any]) -> None:
    bare = []
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, op in ops.items():
            ok = {c: r for c, r in op["responses"].items() if c.startswith("2")}
            assert ok, f"{method.upper()} {path} declares no 2xx answer"
            bare += [f"{method.upper()} {path} {code}" for code, answer in ok.items()
                     if not _has_schema(answer.get("content", {}))]
    assert bare == []


def test_error_answers_are_documented_with_their_shapes(spec: dict[str, Any]) -> None:
    events = spec["paths"]["/api/v1/events"]["post"]["responses"]
    assert {"200", "202", "401", "403", "409", "422"} <= set(events)
    decision = spec["paths"]["/api/v1/tasks/{task_id}/decision"]["post"]["responses"]
    for code in ("401", "403", "404", "409", "422"):
        assert _has_schema(decision[code]["content"]), code
    # the default FastAPI 422 (HTTPValidationError) is not what the API answers: not declared
    declared = [f"{method} {path}" for path, ops in spec["paths"].items()
                if path.startswith("/api/v1/") for method, op in ops.items()
                if "HTTPValidationError" in json.dumps(op)]
    assert declared == []


class Checker:
    """Validates an answer against the schema the document declares for it."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def schema(self, method: str, path: str, status: int) -> dict[str, Any]:
        answer = self.spec["paths"][path][method.lower()]["responses"][str(status)]
        found: dict[str, Any] = answer["content"]["application/json"]["schema"]
        return found

    def __call__(self, response: Any, method: str, path: str) -> Any:
        schema = self.schema(method, path, response.status_code)
        body = response.json()
        validator = Draft202012Validator({**schema, "components": self.spec["components"]})
        problems = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                    for e in validator.iter_errors(body)]
        assert problems == [], f"{method} {path} {response.status_code}: {problems}"
        return body


def test_real_answers_fit_their_schemas(engine: Engine, spec: dict[str, Any],
                                        wards: dict[str, int], user_factory: UserFactory,
                                        tmp_path: Path) -> None:
    check = Checker(spec)
    target = tmp_path / "common"
    shutil.copytree(ROOT / "app_definitions" / "common", target)
    import_bundle(target)
    with transaction() as session:
        key = create_api_key(session, "his-oa",
                             scopes=("events:write", "readback:read", "incidents:write"))
    his = TestClient(create_app())
    headers = {"X-API-Key": key}

    # events: accepted, the same again (the original ack), conflicting, rejected
    first = his.post("/api/v1/events", json=PATIENT, headers=headers)
    assert first.status_code == 200
    assert check(first, "POST", "/api/v1/events")["status"] == "accepted"
    assert his.post("/api/v1/events", json=PATIENT, headers=headers).json() == first.json()
    changed = {**PATIENT, "payload": {**PATIENT["payload"], "name": "李四"}}
    conflict = his.post("/api/v1/events", json=changed, headers=headers)
    assert conflict.status_code == 409
    assert check(conflict, "POST", "/api/v1/events")["differing"] == ["$.payload.name"]
    bad = his.post("/api/v1/events", json={"event_id": "oa-2", "type": "patient.upserted",
                                            "payload": {}}, headers=headers)
    assert bad.status_code == 422
    assert all(e["path"].startswith("$") for e in check(bad, "POST", "/api/v1/events")["errors"])
    for path in ("/api/v1/flows/runs", "/api/v1/flows/incidents", "/api/v1/outbox"):
        check(his.get(path, headers=headers), "GET", path)
    refused = his.get("/api/v1/outbox")
    assert refused.status_code == 401
    check(refused, "GET", "/api/v1/outbox")

    # the console API, as a ward nurse
    user_factory("oa_nurse", "nurse", "ward_a")
    nurse = TestClient(create_app())
    token = login(nurse, "oa_nurse")
    assert check(nurse.get("/api/v1/me"), "GET", "/api/v1/me")["csrf_token"] == token
    tasks = check(nurse.get("/api/v1/tasks?view=department"), "GET", "/api/v1/tasks")
    assert [t["id"] for t in tasks] == [wards["PA"]]
    one = nurse.get(f"/api/v1/tasks/{wards['PA']}")
    assert check(one, "GET", "/api/v1/tasks/{task_id}")["patient_id"] == "PA"
    done = nurse.post(f"/api/v1/tasks/{wards['PA']}/complete", json={"outcome": "reached_ok"},
                      headers={"X-CSRF-Token": token})
    assert check(done, "POST", "/api/v1/tasks/{task_id}/complete")["status"] == "done"
    again = nurse.post(f"/api/v1/tasks/{wards['PA']}/complete", json={"outcome": "reached_ok"},
                       headers={"X-CSRF-Token": token})
    assert again.status_code == 409
    check(again, "POST", "/api/v1/tasks/{task_id}/complete")
    invalid = nurse.post(f"/api/v1/tasks/{wards['PA']}/complete", json={"outcome": "maybe"},
                         headers={"X-CSRF-Token": token})
    assert invalid.status_code == 422
    check(invalid, "POST", "/api/v1/tasks/{task_id}/complete")
    check(nurse.get("/api/v1/patients/PA"), "GET", "/api/v1/patients/{patient_id}")
    forbidden = nurse.get("/api/v1/audit")
    assert forbidden.status_code == 403
    check(forbidden, "GET", "/api/v1/audit")

    # the builder, as the patient-experience office
    user_factory("oa_px", "px_office", None)
    px = TestClient(create_app())
    login(px, "oa_px")
    steps = check(px.get("/api/v1/builder/step-types"), "GET", "/api/v1/builder/step-types")
    assert {"send_form", "wait"} <= {s["name"] for s in steps}
    fields = check(px.get("/api/v1/builder/field-types"), "GET", "/api/v1/builder/field-types")
    assert fields and all("widget" in f for f in fields)
    templates = check(px.get("/api/v1/builder/definitions/template"), "GET",
                      "/api/v1/builder/definitions/{kind}")
    assert templates
    draft_path = "/api/v1/builder/drafts/{kind}/{key}"
    draft = check(px.get(f"/api/v1/builder/drafts/template/{templates[0]['key']}"), "GET",
                  draft_path)
    assert draft["ok"] is True and draft["current_version"] == 1
    for path in ("/api/v1/builder/functions", "/api/v1/builder/charts",
                 "/api/v1/builder/score-method-panels", "/api/v1/builder/i18n"):
        check(px.get(path), "GET", path)

    # definitions and audit, as the system administrator and the auditor
    user_factory("oa_admin", "system_admin", None)
    admin = TestClient(create_app())
    login(admin, "oa_admin")
    listed = check(admin.get("/api/v1/definitions"), "GET", "/api/v1/definitions")
    first_def = listed[0]
    check(admin.get(f"/api/v1/definitions/{first_def['kind']}/{first_def['key']}"), "GET",
          "/api/v1/definitions/{kind}/{key}")
    check(admin.get("/api/v1/bundles"), "GET", "/api/v1/bundles")
    user_factory("oa_auditor", "auditor", None)
    auditor = TestClient(create_app())
    login(auditor, "oa_auditor")
    entries = check(auditor.get("/api/v1/audit"), "GET", "/api/v1/audit")
    assert any(e["action"] == "task.complete" for e in entries)


def test_a_model_that_drifts_from_the_output_fails(spec: dict[str, Any]) -> None:
    """The check above is not vacuous: a task answer with one key more does not fit."""
    check = Checker(spec)
    schema = check.schema("GET", "/api/v1/tasks/{task_id}", 200)
    validator = Draft202012Validator({**schema, "components": spec["components"]})
    resolved = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    sample = {name: None for name in resolved["properties"]}
    assert any("surprise" in e.message for e in validator.iter_errors({**sample, "surprise": 1}))


def test_app_routes_walked_include_the_builder(app: FastAPI) -> None:
    paths = {info.path for info in iter_routes(app.routes)}
    assert "/api/v1/builder/step-types" in paths and "/api/v1/events" in paths
