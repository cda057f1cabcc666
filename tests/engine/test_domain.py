from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from careloop.engine import events
from careloop.engine.clock import now_utc
from careloop.engine.domain import Department, Encounter, Patient, RoleGrant, TaskHistory, User
from careloop.engine.models import DomainEventRow
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import AssigneeError, create_task, resolve_assignee, sla_state


def seed(session: Session) -> None:
    session.add_all([
        Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}),
        User(id=1, username="hn_li", display_name="李护士长"),
        User(id=2, username="nurse_wang", display_name="王护士"),
        Patient(id="p1", mrn="M001", name="张三", phone="13812345678"),
    ])
    session.flush()
    session.add(RoleGrant(user_id=1, role="head_nurse", department_id="cardiology"))
    session.add(Encounter(id="e1", patient_id="p1", type="inpatient", department_id="cardiology",
                          responsible_nurse_id=2, status="discharged",
                          admitted_at=datetime(2026, 11, 1, tzinfo=UTC)))
    session.flush()


def test_assignee_rules(session: Session) -> None:
    seed(session)
    head = resolve_assignee(session, {"role": "head_nurse"}, patient_id="p1")
    assert (head.user_id, head.role, head.department_id) == (1, "head_nurse", "cardiology")
    nurse = resolve_assignee(session, {"relation": "responsible_nurse"}, patient_id="p1")
    assert nurse.user_id == 2
    queue = resolve_assignee(session, {"role": "pharmacist"}, patient_id="p1")
    assert (queue.user_id, queue.role) == (None, "pharmacist")
    with pytest.raises(AssigneeError):
        resolve_assignee(session, {"role": "head_nurse"}, patient_id=None)


def test_create_task_is_idempotent_and_has_history(session: Session) -> None:
    seed(session)
    who = resolve_assignee(session, {"role": "head_nurse"}, patient_id="p1")
    due = now_utc() + timedelta(hours=2)
    task, created = create_task(session, title="回访不满意患者", assignee=who, actor="rule",
                                patient_id="p1", priority="urgent", due_at=due,
                                idempotency_key="evt1:rule1")
    again, created_again = create_task(session, title="x", assignee=who, actor="rule",
                                       idempotency_key="evt1:rule1")
    assert created and not created_again and again.id == task.id
    assert sla_state(task) == "due_soon"
    history = session.scalars(select(TaskHistory).where(TaskHistory.task_id == task.id)).all()
    assert [h.action for h in history] == ["created"]


def test_events_are_stored_once_and_dispatched_once(engine: Engine) -> None:
    seen: list[str] = []
    handlers = loaded_registry().catalogue("event_handler")
    handlers.register("test_probe", lambda s, e: seen.append(e.event_id), replace=True)
    try:
        from careloop.engine.db import transaction

        with transaction(engine) as session:
            _, created = events.record(session, "reading.recorded", {"x": 1}, event_id="his-1")
            _, created_again = events.record(session, "reading.recorded", {"x": 2},
                                             event_id="his-1")
        with transaction(engine) as session:
            stored = session.scalars(select(DomainEventRow)).all()
    finally:
        handlers._items.pop("test_probe")
    assert created and not created_again
    assert seen == ["his-1"] and [e.payload for e in stored] == [{"x": 1}]
