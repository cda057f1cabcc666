"""New rows of one flush share one ``INSERT … RETURNING`` on SQLite too (engine/db.py), and
each row gets its own id back: the ids SQLite gives a multi-row VALUES, sorted, are in VALUES
order (issue 18: a flow batch's step runs, timers, messages and tasks, one statement a table)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event, select

from careloop.engine import txcache
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.flows.models import FlowRun, FlowTimer, RunHistory, StepRun


def test_one_flush_one_insert_per_table_and_every_row_its_own_id(engine: Engine) -> None:
    with transaction(engine) as session:
        run = FlowRun(flow_key="f", flow_version=1, status="running", context={},
                      idempotency_key="batch-ids", started_at=now_utc())
        session.add(run)
        session.flush()
        # a gap in the ids, as rows deleted or rolled back leave
        gone = StepRun(run_id=run.id, step_key="gone", step_type="wait", started_at=now_utc())
        session.add(gone)
        session.flush()
        session.delete(gone)
        session.flush()
        statements: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement.split("(")[0].strip())

        event.listen(engine, "before_cursor_execute", count)
        try:
            steps = [StepRun(run_id=run.id, step_key=f"s{i}", step_type="wait",
                             status="waiting", started_at=now_utc(), state={"n": i})
                     for i in range(7)]
            session.add_all(steps)
            for step in steps:  # each timer names its step run, whose id the flush fills in
                session.add(FlowTimer(run_id=run.id, step_run=step, purpose=step.step_key,
                                      due_at=now_utc(), status="pending", payload={}))
            txcache.defer(session, RunHistory, {"run_id": run.id, "step_key": "s0",
                                                "at": now_utc(), "action": "x",
                                                "details": {"step": txcache.Later(steps[3])}})
            session.flush()
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert statements == ["INSERT INTO flow_step_runs", "INSERT INTO flow_timers"]
        ids = {step.step_key: step.id for step in steps}
    with transaction(engine) as session:
        stored = dict(session.execute(select(StepRun.step_key, StepRun.id).where(
            StepRun.run_id == run.id)).all())
        assert stored == ids
        assert {k: n["n"] for k, n in session.execute(select(StepRun.step_key, StepRun.state)
                .where(StepRun.run_id == run.id)).all()} == {f"s{i}": i for i in range(7)}
        timers = dict(session.execute(select(FlowTimer.purpose, FlowTimer.step_run_id)).all())
        assert timers == ids
        details = session.scalars(select(RunHistory.details)).one()
        assert details == {"step": ids["s3"]}
