"""The example plugin's phone-robot step (tests/plugins/careloop_example/careloop_example/
phone_robot.py), through the public paths only: a flow using it validates (an unknown option or
a missing ``on_no_answer`` target is a located error), a run pauses at the call, the step's own
retry policy applies while the robot service is not configured, the robot's
``phone_robot.completed`` event at ``POST /api/v1/events`` resumes the run along the right edge,
and the builder's step-type endpoint describes it (panel schema, labels, edges)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from careloop_example import phone_robot  # type: ignore[import-not-found]
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine import schema as engine_schema
from careloop.engine.bundles import import_bundle
from careloop.engine.check import check_documents
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Patient, Task
from careloop.engine.registry import loaded_registry
from careloop.engine.sources import load_text
from careloop.flows.ingest import create_api_key
from careloop.flows.models import FlowRun, FlowTimer, StepRun, WebhookCall
from careloop.flows.runtime import start
from careloop.flows.scheduler import run_due
from careloop.web import admin
from careloop.web.app import create_app

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)

FLOW = """kind: flow
key: robot_followup
title: {zh-CN: 机器人随访, en: Robot follow-up}
trigger: {manual: true}
steps:
  - {key: robot, type: phone_robot, script: postop_day3, max_attempts: 2,
     on_no_answer: nurse_call}
  - {key: done, type: end}
  - key: nurse_call
    type: create_task
    task_title: {zh-CN: 人工回访, en: Call the patient}
    assignee: {user: nurse_r}
  - {key: closed, type: end}
"""


def _clear_schemas() -> None:
    engine_schema.kind_schema.cache_clear()
    engine_schema._validator.cache_clear()  # the flow schema's step-type enum


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    """The example module registered as its entry point would (idempotently: the package may
    be installed), and removed again after the test when this test added it."""
    steps = loaded_registry().catalogue("step_type")
    added = phone_robot.NAME not in steps
    phone_robot.register(loaded_registry())
    _clear_schemas()
    yield
    if added:
        steps.unregister(phone_robot.NAME)
        _clear_schemas()


def _check(text: str) -> list[str]:
    result = check_documents([load_text(text, "robot_followup.yaml")])
    return [f"{p.code} at {p.json_path}: {p.message}" for p in result.problems]


def test_a_flow_using_the_step_validates_and_its_mistakes_are_located() -> None:
    assert _check(FLOW) == []
    unknown = _check(FLOW.replace("max_attempts: 2", "max_attempts: 2, url: 'https://x'"))
    assert unknown == ["flow.unknown-option at $.steps[0].url: step 'robot' of type phone_robot "
                       "has no option 'url'"]
    missing = _check(FLOW.replace("on_no_answer: nurse_call", "on_no_answer: nurse_cal"))
    assert missing[0] == "flow.unknown-step at $.steps[0].on_no_answer: no step 'nurse_cal'"
    no_script = _check(FLOW.replace("script: postop_day3, ", ""))
    assert no_script == ["flow.missing-field at $.steps[0].type: step 'robot' of type "
                         "phone_robot needs 'script'"]
    # the edge counts for reachability: without it the nurse's call can never be reached
    cut = _check(FLOW.replace(",\n     on_no_answer: nurse_call}", "}"))
    assert "flow.unreachable at $.steps[2].key: step 'nurse_call' can never be reached" in cut


@pytest.fixture
def app(engine: Engine, tmp_path: Path) -> Engine:
    import_bundle(ROOT / "app_definitions" / "common", engine=engine)
    bundle = tmp_path / "robot"
    (bundle / "flows").mkdir(parents=True)
    (bundle / "app.yaml").write_text(
        "id: robot\nname: {zh-CN: 机器人, en: Robot}\nversion: 0.1.0\nformat: 1\n"
        "default_locale: zh-CN\nrequires: [common]\n", "utf-8")
    (bundle / "flows" / "robot_followup.yaml").write_text(FLOW, "utf-8")
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="测试", attributes={}, consents={}))
        # the nurse the no-answer task is for
        admin.create_user(session, username="nurse_r", display_name="Nurse R",
                          password="Robot-Follow-up-2026!")
    with frozen_now(T0):
        import_bundle(bundle, engine=engine)
    return engine


def _start(engine: Engine, key: str) -> int:
    with frozen_now(T0), transaction(engine) as session:
        return start(session, flow_key="robot_followup", patient_id="P1", idempotency_key=key)


def _robot(engine: Engine, run_id: int) -> StepRun:
    with transaction(engine) as session:
        found = session.scalars(select(StepRun).where(StepRun.run_id == run_id,
                                                      StepRun.step_key == "robot")).one()
        session.expunge(found)
        return found


def _post(engine: Engine, event_id: str, payload: dict[str, str]) -> tuple[int, dict[str, object]]:
    with transaction(engine) as session:
        key = create_api_key(session, f"robot-{event_id}", scopes=("events:write",))
    client = TestClient(create_app())
    with frozen_now(T0 + timedelta(hours=1)):
        answer = client.post("/api/v1/events", headers={"X-API-Key": key}, json={
            "event_id": event_id, "type": phone_robot.COMPLETED, "payload": payload})
        drain(engine)  # the flows run from the event queue, after the API acknowledged
    return answer.status_code, answer.json()


def test_the_call_retries_by_its_own_policy_then_pauses_and_the_robot_resumes_it(
        app: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(phone_robot.URL_ENV, raising=False)
    run_id = _start(app, "r1")
    step = _robot(app, run_id)
    assert (step.status, step.attempts) == ("retrying", 1)
    with transaction(app) as session:  # the type's policy: the first retry 10 minutes later
        due = session.scalars(select(FlowTimer.due_at).where(
            FlowTimer.step_run_id == step.id, FlowTimer.purpose == "retry")).one()
    assert due.replace(tzinfo=UTC) == T0 + timedelta(minutes=10)
    run_due(app, now=T0 + timedelta(minutes=10), dispatch=False)
    assert _robot(app, run_id).attempts == 2  # still unconfigured: retried again (4 attempts)

    monkeypatch.setenv(phone_robot.URL_ENV, "https://robot.example.org/calls")
    run_due(app, now=T0 + timedelta(minutes=30), dispatch=False)
    step = _robot(app, run_id)
    assert (step.status, step.waiting_for) == ("waiting", phone_robot.COMPLETED)
    call_id = step.state["call_id"]
    with transaction(app) as session:
        call = session.scalars(select(WebhookCall)).one()
        assert call.body == {"call_id": call_id, "patient_id": "P1", "script": "postop_day3",
                             "max_attempts": 2}

    # a result for another call resumes nothing; a malformed one is refused at its path
    assert _post(app, "e0", {"patient_id": "P1", "call_id": "other", "result": "answered"})[0] \
        == 200
    assert _robot(app, run_id).status == "waiting"
    status, body = _post(app, "e1", {"patient_id": "P1", "call_id": call_id, "result": "maybe"})
    assert status == 422 and body["errors"][0]["path"] == "$.payload.result"  # type: ignore[index]

    status, _ = _post(app, "e2", {"patient_id": "P1", "call_id": call_id, "result": "no_answer"})
    assert status == 200
    with transaction(app) as session:
        run = session.get(FlowRun, run_id)
        assert run is not None and run.context["robot_result"] == "no_answer"
        keys = [s.step_key for s in session.scalars(select(StepRun).where(
            StepRun.run_id == run_id).order_by(StepRun.id))]
        assert keys == ["robot", "nurse_call", "closed"]
        assert session.scalars(select(Task.title)).all() == ["人工回访"]


def test_an_answered_call_continues_at_next(app: Engine,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(phone_robot.URL_ENV, "https://robot.example.org/calls")
    run_id = _start(app, "r2")
    call_id = _robot(app, run_id).state["call_id"]
    assert _post(app, "a1", {"patient_id": "P1", "call_id": call_id, "result": "answered"})[0] \
        == 200
    with transaction(app) as session:
        run = session.get(FlowRun, run_id)
        assert run is not None and run.status == "completed"
        assert [s.step_key for s in session.scalars(select(StepRun).where(
            StepRun.run_id == run_id).order_by(StepRun.id))] == ["robot", "done"]
        assert session.scalars(select(Task)).all() == []


def test_the_builder_describes_the_step_from_the_server(engine: Engine) -> None:
    from careloop.web.builder import step_palette  # what GET /api/v1/builder/step-types returns

    with transaction(engine) as session:
        user = admin.create_user(session, username="px_robot", display_name="PX",
                                 password="Robot-Follow-up-2026!")
        admin.grant(session, user, "px_office", None)
    client = TestClient(create_app())
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    client.post("/login", data={"username": "px_robot", "password": "Robot-Follow-up-2026!",
                                "csrf_token": token, "next": "/"}, follow_redirects=False)
    answer = client.get("/api/v1/builder/step-types")
    assert answer.status_code == 200 and answer.json() == step_palette()
    entry = next(t for t in answer.json() if t["name"] == phone_robot.NAME)
    assert entry["title"] == {"zh-CN": "机器人电话", "en": "Phone-robot call"}
    assert list(entry["options"]) == ["title", "when", "script", "max_attempts", "timeout",
                                      "on_no_answer", "next", "retry"]
    assert entry["options"]["timeout"]["x-def"] == "duration"
    assert entry["required"] == ["script"] and entry["pauses"] is True
    assert [(e["option"], e["label"]["en"]) for e in entry["edges"]] == [
        ("next", "next"), ("on_no_answer", "no answer")]
    assert entry["labels"]["script"]["label"]["zh-CN"] == "话术脚本"
    assert entry["resumes"] == [phone_robot.COMPLETED]
    assert entry["retry"] == {"attempts": 4, "backoff": "10m"}
