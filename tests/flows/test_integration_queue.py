"""``CARELOOP_UNKNOWN_CODES=park``: an HIS event naming an unknown department is answered 202 and
kept in the integration queue (nothing else stored); IT sees it on ``/admin/integration`` in
hospital time, creates the department and retries: the event goes through and its flows start."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter
from careloop.engine.models import DomainEventRow
from careloop.flows.ingest import create_api_key
from careloop.flows.models import FlowRun, ParkedEvent
from careloop.web import admin
from careloop.web.app import create_app

PASSWORD = "Correct-Horse-Battery-9"
DISCHARGE = {"event_id": "his-d1", "type": "encounter.discharged", "payload": {
    "encounter_id": "E1", "patient_id": "P1", "type": "inpatient", "department_id": "neurology",
    "discharged_at": "2026-12-01T10:00:00+08:00"}}


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def _sign_in(client: TestClient, username: str) -> None:
    with transaction() as session:
        user = admin.create_user(session, username=username, display_name=username,
                                 password=PASSWORD)
        admin.grant(session, user, "system_admin", None)
    page = client.get("/login")
    answer = client.post("/login", data={"username": username, "password": PASSWORD,
                                         "csrf_token": _csrf(page.text), "next": "/"},
                         follow_redirects=False)
    assert answer.status_code == 303


def test_parked_event_is_kept_shown_to_it_and_retried_once_the_code_exists(
        bundles: Engine, send: Any, helpers: Any, clock: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARELOOP_UNKNOWN_CODES", "park")
    helpers.patient(send)
    with transaction(bundles) as session:
        key = create_api_key(session, "his")
    client = TestClient(create_app())
    with frozen_now(clock.now):
        first = client.post("/api/v1/events", json=DISCHARGE, headers={"X-API-Key": key})
        again = client.post("/api/v1/events", json=DISCHARGE, headers={"X-API-Key": key})
    assert first.status_code == again.status_code == 202
    assert first.json()["status"] == "parked" and first.json()["errors"] == [
        {"path": "$.payload.department_id", "message": "unknown department 'neurology'"}]
    with transaction(bundles) as session:
        assert session.get(Department, "neurology") is None
        assert session.get(Encounter, "E1") is None
        assert "his-d1" not in session.scalars(select(DomainEventRow.event_id)).all()
        (item,) = session.scalars(select(ParkedEvent)).all()
        assert (item.status, item.event_id) == ("parked", "his-d1")

    with frozen_now(clock.now):
        _sign_in(client, "it_wang")
        page = client.get("/admin/integration")
    assert page.status_code == 200
    assert "集成队列" in page.text and "unknown department &#39;neurology&#39;" in page.text
    assert "2026-12-01 10:05" in page.text  # received, in hospital time (02:05 UTC)
    with frozen_now(clock.now):  # retried too early: still parked, one more attempt
        client.post(f"/admin/integration/{item.id}/retry", data={"csrf_token": _csrf(page.text)})
    with transaction(bundles) as session:
        assert session.get(ParkedEvent, item.id).attempts == 1  # type: ignore[union-attr]
        session.add(Department(id="neurology", name={"zh-CN": "神经内科", "en": "Neurology"}))
    with frozen_now(clock.now):
        done = client.post(f"/admin/integration/{item.id}/retry",
                           data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
    assert done.status_code == 303
    with transaction(bundles) as session:
        parked = session.get(ParkedEvent, item.id)
        assert parked is not None and (parked.status, parked.resolved_by) == ("accepted",
                                                                              "it_wang")
        encounter = session.get(Encounter, "E1")
        assert encounter is not None and encounter.department_id == "neurology"
        assert session.scalars(select(FlowRun.flow_key)).all() == ["discharge"]
    settlement = [m for m in helpers.messages(bundles) if m.template_key == "discharge_settlement"]
    assert "您在神经内科的出院结算已完成" in settlement[0].body
    with frozen_now(clock.now):  # an accepted event cannot be dismissed any more
        late = client.post(f"/admin/integration/{item.id}/dismiss",
                           data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
    assert late.status_code == 409


def test_refusing_is_the_default_and_a_wrong_setting_is_named(
        departments: Engine, send: Any, helpers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    helpers.patient(send)
    send("his-d1", DISCHARGE["type"], DISCHARGE["payload"], expect=422)
    monkeypatch.setenv("CARELOOP_UNKNOWN_CODES", "queue")
    with pytest.raises(ValueError) as exc:
        send("his-d1", DISCHARGE["type"], DISCHARGE["payload"])
    assert "CARELOOP_UNKNOWN_CODES must be 'refuse' or 'park', not 'queue'" in str(exc.value)
    with transaction(departments) as session:
        assert session.scalars(select(ParkedEvent)).all() == []


def test_an_event_whose_handlers_fail_is_shown_to_it_and_retried_from_the_page(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued event whose handlers raise every time is parked on /admin/integration — its
    kind in words, when it was stored in hospital time, why — and IT's retry puts it back."""
    from careloop.engine import dispatcher, events
    from careloop.engine.registry import loaded_registry

    monkeypatch.setenv("CARELOOP_EVENT_ATTEMPTS", "1")
    handlers = loaded_registry().catalogue("event_handler")
    broken = {"yes": True}

    def handler(_session: Any, event: DomainEventRow) -> None:
        if event.event_id == "his-c1" and broken["yes"]:
            raise LookupError("a handler bug")

    handlers.register("test_failing", handler, replace=True)
    try:
        with frozen_now(datetime.fromisoformat("2026-12-01T10:05:00+08:00")), \
                transaction(engine) as session:
            events.record(session, "his.corrected", {"patient_id": "P1", "fields": []},
                          event_id="his-c1", defer=True)
        assert dispatcher.drain(engine).failed == 1
        client = TestClient(create_app())
        _sign_in(client, "it_li")
        page = client.get("/admin/integration")
        assert page.status_code == 200 and 'data-failed-event="' in page.text
        assert "HIS 更正" in page.text and "2026-12-01 10:05" in page.text
        assert "LookupError" in page.text and "his.corrected" not in page.text
        (event_id,) = re.findall(r'data-failed-event="(\d+)"', page.text)
        broken["yes"] = False  # the bug fixed: IT retries it
        done = client.post(f"/admin/integration/events/{event_id}/retry",
                           data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
        again = client.post(f"/admin/integration/events/{event_id}/retry",
                            data={"csrf_token": _csrf(page.text)}, follow_redirects=False)
        assert done.status_code == 303 and again.status_code == 409
        assert dispatcher.drain(engine).handled == 1
        with transaction(engine) as session:
            row = session.get(DomainEventRow, int(event_id))
            assert row is not None and row.state == "handled"
    finally:
        handlers.unregister("test_failing")
