"""The bundled discharge flow, travelling in time; and the cancelled-discharge case."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.flows.models import FlowRun, FlowTimer

DISCHARGE = {"encounter_id": "E1", "patient_id": "P1", "type": "inpatient",
             "department_id": "cardiology", "responsible_nurse": "nurse_li",
             "discharged_at": "2026-12-01T10:00:00+08:00", "procedures": [],
             "summary": "出院诊断：高血压。", "medications": [{"name": "氨氯地平", "dose": "5 mg"}]}


def test_discharge_plan_for_a_patient_aged_70_plus(bundles: Engine, send: Any, sweep: Any,
                                                   nurse: int, helpers: Any) -> None:
    helpers.patient(send, birth="1950-03-01")
    send("enc-1", "encounter.discharged", DISCHARGE)
    first = helpers.messages(bundles)
    assert [m.template_key for m in first] == ["discharge_settlement", "medication_guidance"]
    assert first[0].channel == "wechat" and "http://127.0.0.1:8000/d/" in first[0].body
    assert "E1" not in first[0].body  # the link is a token, not the encounter id
    sweep("2026-12-01T10:06:00+08:00")
    sweep("2026-12-04T09:29:00+08:00")
    assert len(helpers.messages(bundles)) == 2  # day 3 is not due before 09:30
    sweep("2026-12-04T09:31:00+08:00")
    day3 = helpers.messages(bundles)[2]
    assert day3.template_key == "discharge_care_day3" and "/f/" in day3.body
    assert day3.created_at.isoformat() == "2026-12-04T01:30:00+00:00"
    assert helpers.tasks(bundles) == []
    sweep("2026-12-08T09:31:00+08:00")
    (task,) = helpers.tasks(bundles)
    assert task.kind == "phone_followup" and task.assignee_user_id == nurse
    assert task.created_at.isoformat() == "2026-12-08T01:30:00+00:00"
    with transaction(bundles) as session:
        run = session.scalars(select(FlowRun).where(FlowRun.flow_key == "discharge")).one()
        assert run.status == "completed"
    # the log channel delivers nothing: "logged", never "sent"
    assert [(m.status, m.reason) for m in helpers.messages(bundles)] == [
        ("logged", "log_channel")] * 3


def test_young_patient_gets_no_phone_task(bundles: Engine, send: Any, sweep: Any,
                                          nurse: int, helpers: Any) -> None:
    helpers.patient(send, birth="1990-03-01")
    send("enc-1", "encounter.discharged", DISCHARGE)
    sweep("2026-12-20T12:00:00+08:00")
    assert helpers.tasks(bundles) == []
    assert len(helpers.messages(bundles)) == 3


def test_discharge_cancelled_stops_every_message_and_task(bundles: Engine, send: Any,
                                                          sweep: Any, nurse: int,
                                                          helpers: Any) -> None:
    helpers.patient(send, birth="1950-03-01")
    send("enc-1", "encounter.discharged", DISCHARGE)
    sweep("2026-12-01T12:00:00+08:00")
    sent = len(helpers.messages(bundles))
    send("enc-2", "encounter.discharge_cancelled", {"encounter_id": "E1", "patient_id": "P1"})
    sweep("2027-04-01T12:00:00+08:00")
    assert len(helpers.messages(bundles)) == sent
    assert helpers.tasks(bundles) == []
    with transaction(bundles) as session:
        run = session.scalars(select(FlowRun)).one()
        assert run.status == "cancelled"
        assert {t.status for t in session.scalars(select(FlowTimer)).all()} == {"cancelled"}


def test_phone_follow_up_outcome_is_recorded_on_the_task(bundles: Engine, send: Any,
                                                         sweep: Any, nurse: int,
                                                         helpers: Any) -> None:
    import pytest

    from careloop.engine.domain import TaskHistory
    from careloop.flows.followup import OutcomeError, record_phone_outcome

    helpers.patient(send, birth="1950-03-01")
    send("enc-1", "encounter.discharged", DISCHARGE)
    sweep("2026-12-08T10:00:00+08:00")
    (task,) = helpers.tasks(bundles)
    with pytest.raises(OutcomeError) as exc, transaction(bundles) as session:
        record_phone_outcome(session, task.id, "not_reachd", actor="nurse_li")
    assert "did you mean 'not_reached'" in str(exc.value)
    with transaction(bundles) as session:
        record_phone_outcome(session, task.id, "reached_ok", actor="nurse_li",
                             notes="恢复良好")
    with transaction(bundles) as session:
        history = session.scalars(select(TaskHistory).where(
            TaskHistory.task_id == task.id).order_by(TaskHistory.id)).all()
        assert [h.action for h in history] == ["created", "completed"]
        assert history[-1].details == {"outcome": "reached_ok"}
    (done,) = helpers.tasks(bundles)
    assert done.status == "done" and done.notes == "恢复良好"


def test_not_reached_calls_again_the_next_day_three_calls_in_all(
        bundles: Engine, send: Any, sweep: Any, nurse: int, helpers: Any) -> None:
    from careloop.engine.clock import frozen_now
    from careloop.flows.followup import record_phone_outcome

    helpers.patient(send, birth="1950-03-01")
    send("enc-1", "encounter.discharged", DISCHARGE)
    sweep("2026-12-08T10:00:00+08:00")
    calls = []
    for day in (8, 9, 10):
        open_tasks = [t for t in helpers.tasks(bundles) if t.status == "open"]
        assert len(open_tasks) == 1, [(t.id, t.status) for t in helpers.tasks(bundles)]
        calls.append(open_tasks[0])
        with frozen_now(datetime.fromisoformat(f"2026-12-{day:02d}T15:00:00+08:00")), \
                transaction(bundles) as session:
            record_phone_outcome(session, open_tasks[0].id, "not_reached", actor="nurse_li")
    assert [t.assignee_user_id for t in calls] == [nurse] * 3
    assert [t.due_at.isoformat() for t in calls[1:]] == [  # type: ignore[union-attr]
        "2026-12-09T07:00:00+00:00", "2026-12-10T07:00:00+00:00"]
    assert [t.details.get("attempt", 1) for t in calls] == [1, 2, 3]
    assert all(t.status == "done" for t in helpers.tasks(bundles))  # three calls, then stop
