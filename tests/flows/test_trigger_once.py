"""Trigger uniqueness (``trigger.once``) through ``POST /api/v1/events``: a repeated HIS event
starts nothing twice, and the unique ``flow_runs.once_key`` holds even when the check before the
insert misses a run another process has just started."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.models import DomainEventRow
from careloop.flows import handlers
from careloop.flows.ingest import create_api_key, ingest
from careloop.flows.models import FlowRun
from careloop.web.app import create_app

Post = Callable[..., dict[str, Any]]


@pytest.fixture
def post(bundles: Engine, departments: Engine, clock: Any) -> Post:
    """Send one event through the events API at the test's travelled time."""
    with transaction(bundles) as session:
        key = create_api_key(session, "his")
    client = TestClient(create_app())

    def _post(event_id: str, type: str, payload: dict[str, Any]) -> dict[str, Any]:
        with frozen_now(clock.now):
            answer = client.post("/api/v1/events", headers={"X-API-Key": key}, json={
                "event_id": event_id, "type": type, "payload": payload})
            drain()  # the serving process's dispatcher, right after the acknowledgement
        assert answer.status_code == 200, answer.json()
        body: dict[str, Any] = answer.json()
        return body
    return _post


def _patient(post: Post, event_id: str, tags: list[str]) -> None:
    post(event_id, "patient.upserted", {"patient_id": "P1", "mrn": "MRN-P1", "name": "张三",
                                        "birth_date": "1958-03-01", "tags": tags})


def _runs(engine: Engine, flow: str) -> list[tuple[str, str | None]]:
    with transaction(engine) as session:
        return [(r.status, r.encounter_id) for r in session.scalars(
            select(FlowRun).where(FlowRun.flow_key == flow).order_by(FlowRun.id)).all()]


def _templates(helpers: Any, engine: Engine) -> list[str]:
    return [m.template_key for m in helpers.messages(engine)]


def test_repeated_patient_upserts_start_monthly_chronic_once_while_enrolled(
        bundles: Engine, post: Post, sweep: Any, helpers: Any) -> None:
    _patient(post, "his-p1", ["chronic_path"])
    _patient(post, "his-p2", ["chronic_path"])  # a new phone number, say: the same patient
    _patient(post, "his-p3", ["chronic_path", "diabetes"])
    assert _runs(bundles, "monthly_chronic") == [("running", None)]
    assert _templates(helpers, bundles) == ["medication_reminder", "bp_upload"]
    # the next round comes 4 weeks after this one started, however late the form is answered
    sweep("2026-12-29T08:59:00+08:00")
    assert _templates(helpers, bundles).count("medication_reminder") == 1
    sweep("2026-12-29T09:01:00+08:00")
    assert _templates(helpers, bundles).count("medication_reminder") == 2
    assert _templates(helpers, bundles).count("bp_upload") == 2  # one questionnaire a month
    _patient(post, "his-p4", ["diabetes"])  # the HIS takes the patient off the path
    sweep("2027-01-26T09:01:00+08:00")  # the loop ends at its next round
    assert _runs(bundles, "monthly_chronic") == [("completed", None)]
    assert _templates(helpers, bundles).count("medication_reminder") == 2
    _patient(post, "his-p5", ["chronic_path"])  # back on the path: a new loop
    _patient(post, "his-p6", ["chronic_path"])
    assert _runs(bundles, "monthly_chronic") == [("completed", None), ("running", None)]
    assert _templates(helpers, bundles).count("medication_reminder") == 3


def _visit(post: Post, event_id: str, encounter_id: str) -> None:
    post(event_id, "encounter.admitted", {
        "encounter_id": encounter_id, "patient_id": "P1", "type": "outpatient",
        "department_id": "cardiology", "admitted_at": "2026-12-01T09:30:00+08:00",
        "diagnoses": ["I10"]})


def test_a_second_i10_visit_does_not_restart_the_hypertension_path(
        bundles: Engine, post: Post, sweep: Any, helpers: Any) -> None:
    _patient(post, "his-p1", [])
    _visit(post, "his-v1", "O1")
    _visit(post, "his-v1-again", "O1")  # the same visit re-sent with a new event id
    _visit(post, "his-v2", "O2")  # the next I10 visit
    assert _runs(bundles, "hypertension_first_visit") == [("running", "O1")]
    sweep("2026-12-16T09:01:00+08:00")  # the whole day 1/3/7/14 plan, once
    assert _runs(bundles, "hypertension_first_visit") == [("completed", "O1")]
    assert _templates(helpers, bundles).count("diet_advice") == 1
    _visit(post, "his-v3", "O3")  # once per patient, even after the path ended
    assert _runs(bundles, "hypertension_first_visit") == [("completed", "O1")]
    assert _templates(helpers, bundles).count("revisit_reminder") == 1


def _discharge(post: Post, event_id: str, encounter_id: str) -> None:
    post(event_id, "encounter.discharged", {
        "encounter_id": encounter_id, "patient_id": "P1", "type": "inpatient",
        "department_id": "cardiology", "discharged_at": "2026-12-01T10:00:00+08:00",
        "procedures": ["PCI"]})


def test_discharge_and_pci_start_once_per_encounter(bundles: Engine, post: Post,
                                                    helpers: Any) -> None:
    _patient(post, "his-p1", [])
    _discharge(post, "his-d1", "E1")
    _discharge(post, "his-d1-resent", "E1")
    assert _runs(bundles, "discharge") == [("running", "E1")]
    assert _runs(bundles, "pci_followup") == [("running", "E1")]
    assert _templates(helpers, bundles).count("discharge_settlement") == 1
    _discharge(post, "his-d2", "E2")  # another stay of the same patient: its own plan
    assert _runs(bundles, "discharge") == [("running", "E1"), ("running", "E2")]
    # a cancelled discharge does not count: the real one starts the plan again
    post("his-c1", "encounter.discharge_cancelled", {"encounter_id": "E1", "patient_id": "P1"})
    _discharge(post, "his-d1-real", "E1")
    assert _runs(bundles, "discharge") == [("cancelled", "E1"), ("running", "E2"),
                                           ("running", "E1")]
    assert _runs(bundles, "pci_followup") == [("cancelled", "E1"), ("running", "E2"),
                                              ("running", "E1")]
    _discharge(post, "his-d1-real-resent", "E1")
    assert len(_runs(bundles, "discharge")) == 3


def test_the_unique_once_key_holds_when_the_check_misses_a_concurrent_start(
        bundles: Engine, post: Post, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process committed its run between this process's check and its insert: the
    insert fails on ``uq_flow_runs_once_key`` inside its savepoint; the event is still stored."""
    _patient(post, "his-p1", [])
    _discharge(post, "his-d1", "E1")
    monkeypatch.setattr(handlers, "_held", lambda session, once_key: False)
    _discharge(post, "his-d1-other-process", "E1")
    assert _runs(bundles, "discharge") == [("running", "E1")]
    with transaction(bundles) as session:
        stored = session.scalars(select(DomainEventRow.event_id)).all()
        assert "his-d1-other-process" in stored
        run = session.scalars(select(FlowRun).where(FlowRun.flow_key == "discharge")).one()
        assert run.once_key == "discharge:per_encounter:E1"
    with pytest.raises(IntegrityError), transaction(bundles) as session:
        session.add(FlowRun(flow_key="discharge", flow_version=1, status="running",
                            patient_id="P1", encounter_id="E1", context={},
                            idempotency_key="another", once_key="discharge:per_encounter:E1"))
        session.flush()


def test_two_processes_receiving_two_first_visits_at_once_start_one_path(
        bundles: Engine, post: Post, clock: Any) -> None:
    """Two transactions (as two app processes would) each take an I10 visit of one patient; the
    first has started the path but not committed when the second reaches the trigger. The second
    waits for a lock the first holds (a row or the unique key on PostgreSQL, the write lock on
    SQLite) and then starts nothing."""
    _patient(post, "his-p1", [])
    visit = {"patient_id": "P1", "type": "outpatient", "department_id": "cardiology",
             "admitted_at": "2026-12-01T09:30:00+08:00", "diagnoses": ["I10"]}
    results: list[int] = []

    def other_process() -> None:
        with frozen_now(clock.now), transaction(bundles) as session:
            status, _ = ingest(session, {"event_id": "his-v2", "type": "encounter.admitted",
                                         "payload": {**visit, "encounter_id": "O2"}})
            results.append(status)

    with frozen_now(clock.now), transaction(bundles) as session:
        status, _ = ingest(session, {"event_id": "his-v1", "type": "encounter.admitted",
                                     "payload": {**visit, "encounter_id": "O1"}})
        assert status == 200
        thread = threading.Thread(target=contextvars.copy_context().run, args=(other_process,))
        thread.start()
        thread.join(timeout=1.0)  # it cannot finish while this transaction holds the key
        assert thread.is_alive()
    thread.join(timeout=30)
    assert results == [200]
    assert _runs(bundles, "hypertension_first_visit") == [("running", "O1")]
    with transaction(bundles) as session:
        assert sorted(session.scalars(select(DomainEventRow.event_id)).all()) == [
            "his-p1", "his-v1", "his-v2"]
