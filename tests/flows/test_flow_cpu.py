"""Work a discharge run no longer repeats (issue 18, flowcpu2): counted, not timed.

- a run's flow version is looked up once per transaction and version, not once per step
  (each look-up of the process's specs scans the session's changed rows);
- a message is read for sending with its patient in one statement;
- the overdue marks of a sweep are written in one ``INSERT``, not one savepoint and flush each.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from careloop.engine import links, store
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import User
from careloop.engine.models import DomainEventRow
from careloop.flows import handlers, outbox
from careloop.flows.models import FlowRun, OutboxMessage, TaskOverdueMark
from careloop.flows.runtime import spec_of
from careloop.flows.scheduler import emit_overdue, run_due

from ..statements import counted
from .conftest import START, Send
from .test_flow_statements import RUNS, _discharged


def _started(engine: Engine, send: Send) -> None:
    with transaction(engine) as session:
        session.add(User(username="nurse_li", display_name="李护士", locale="zh-CN"))
    for n in range(RUNS):
        _discharged(engine, send, n)
    with transaction(engine) as session:
        links.link_secret(session)
    for n in range(RUNS):
        with frozen_now(START), transaction(engine) as session:
            row = session.scalars(select(DomainEventRow).where(
                DomainEventRow.event_id == f"d{n}")).one()
            handlers.handle_event(session, row)


def test_a_flow_version_is_looked_up_once_per_transaction(
        bundles: Engine, send: Send, monkeypatch: pytest.MonkeyPatch) -> None:
    _started(bundles, send)
    asked: list[str] = []
    shared_current = store.shared_current

    def counting(session: Any, kind: str, name: str, build: Any) -> Any:
        if kind == "flow" and name == "by version":
            asked.append(name)
        return shared_current(session, kind, name, build)

    monkeypatch.setattr(store, "shared_current", counting)
    with transaction(bundles) as session:
        runs = session.scalars(select(FlowRun)).all()
        specs = {id(spec_of(session, run)) for run in runs for _ in range(3)}
    assert len(runs) == RUNS and len(specs) == 1
    assert len(asked) == 1  # was 3 a run
    asked.clear()
    # the sweep to day 7: 12 timers (form, expiry, day-7 call) in its batches; each timer's
    # step asked two or three times before
    report = run_due(bundles, now=START + timedelta(days=7), dispatch=False)
    assert report.fired == 3 * RUNS
    assert len(asked) <= 3, asked


def test_a_message_is_read_for_sending_with_its_patient(bundles: Engine, send: Send) -> None:
    _started(bundles, send)
    with transaction(bundles) as session:
        pending = session.scalar(select(func.count()).select_from(OutboxMessage)
                                 .where(OutboxMessage.status == "pending"))
    assert pending == 2 * RUNS  # the settlement notice and the medication guidance
    with counted(bundles) as counter:
        counts = outbox.dispatch_due(bundles, worker="w", now=START)
    assert counts == {"logged": 2 * RUNS}, counts
    patients = [s for s in counter.statements if s.startswith("SELECT patients")]
    assert not patients, "\n".join(counter.statements)
    # per message: the locked read with its patient, the rate count, the send-once record,
    # the outcome (five before); the claims (two a pass: recovering, pending) are shared
    assert len(counter.statements) <= 4 * 2 * RUNS + 4, "\n".join(counter.statements)


def test_overdue_marks_are_written_in_one_insert(bundles: Engine, send: Send) -> None:
    _started(bundles, send)
    run_due(bundles, now=START + timedelta(days=7), dispatch=False)  # the day-7 phone tasks
    with counted(bundles) as counter:
        emitted = emit_overdue(bundles, START + timedelta(days=9))
    assert emitted == RUNS
    marks = [s for s in counter.statements if "flow_task_overdue" in s and "INSERT" in s]
    assert len(marks) == 1, "\n".join(counter.statements)
    # no savepoint of its own a task (the event's handlers take theirs)
    assert not [s for s in counter.statements
                if s.startswith("SAVEPOINT") and "<- flows/scheduler.py" in s], \
        "\n".join(counter.statements)
    assert emit_overdue(bundles, START + timedelta(days=9)) == 0  # once per task and due time
    with transaction(bundles) as session:
        assert session.scalar(select(func.count()).select_from(TaskOverdueMark)) == RUNS
