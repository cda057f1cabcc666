"""Timers fire in batches (issue 18 point 2): one transaction per claimed batch, one savepoint for
the batch; when a timer's firing fails, the batch runs again with a savepoint per timer, the
failing one rolls back alone and is fired on its own afterwards, so the rest of its batch is not
lost and its own error is handled as before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, event, insert, select

from careloop.engine.db import transaction
from careloop.flows import scheduler
from careloop.flows.models import FlowTimer

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _timers(engine: Engine, count: int) -> list[int]:
    with transaction(engine) as session:
        session.execute(insert(FlowTimer), [{"purpose": "resume", "due_at": T0,
                                             "status": "pending", "payload": {}}
                                            for _ in range(count)])
        return list(session.scalars(select(FlowTimer.id).order_by(FlowTimer.id)).all())


def test_a_batch_commits_in_one_transaction(engine: Engine) -> None:
    ids = _timers(engine, 30)
    commits: list[int] = []
    listener = lambda conn: commits.append(1)  # noqa: E731
    event.listen(engine, "commit", listener)
    try:
        report = scheduler.run_due(engine, now=T0 + timedelta(minutes=1), batch=30,
                                   dispatch=False)
    finally:
        event.remove(engine, "commit", listener)
    assert report.fired == 30
    # cron start, claim, the batch, an empty claim, overdue: never one commit per timer
    assert len(commits) < 10, len(commits)
    with transaction(engine) as session:
        assert set(session.scalars(select(FlowTimer.status).where(
            FlowTimer.id.in_(ids))).all()) == {"fired"}


def test_a_failing_timer_rolls_back_alone_and_is_fired_on_its_own(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _timers(engine, 5)
    bad = ids[2]
    calls: list[int] = []
    original = scheduler._dispatch_timer

    def dispatch(session: object, timer: FlowTimer) -> None:
        calls.append(timer.id)
        if timer.id == bad:
            raise RuntimeError("the step's code failed")
        original(session, timer)

    monkeypatch.setattr(scheduler, "_dispatch_timer", dispatch)
    # these timers stand for waiting steps of running flows (a timer whose run ended is
    # marked fired without running anything)
    monkeypatch.setattr(scheduler, "_has_work", lambda session, timer: True)
    with pytest.raises(RuntimeError, match="the step's code failed"):
        scheduler.run_due(engine, now=T0 + timedelta(minutes=1), batch=5, dispatch=False)
    # the batch in one savepoint up to the failure, then timer by timer in savepoints of their
    # own, then the failing one alone (its error surfaces)
    assert calls == [*ids[:3], *ids, bad]
    with transaction(engine) as session:
        states = {i: s for i, s in session.execute(select(FlowTimer.id, FlowTimer.status))}
    assert states == {i: ("pending" if i == bad else "fired") for i in ids}
