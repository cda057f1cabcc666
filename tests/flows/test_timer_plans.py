"""The sweep's statements that pick timers by id, step run or run stay on those indexes on
SQLite. Given bound parameters, SQLite preferred the ``(status, due_at)`` index for their
``status = 'pending'`` and read every pending timer: a sweep with a million pending timers was
20× slower per timer than with ten thousand (``python bench/flows.py``). Checked on a SQLite
file of its own, whatever database the suite runs on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import event, insert

from careloop.engine import db as dbmod
from careloop.engine.migrate import upgrade
from careloop.flows.models import FlowTimer
from careloop.flows.runtime import _cancel_pending
from careloop.flows.scheduler import run_due

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _plans_of_timer_updates(engine: Any, run: Any) -> list[str]:
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("UPDATE flow_timers SET status"):
            rows = cursor.connection.execute("EXPLAIN QUERY PLAN " + statement, params)
            plans.append(" / ".join(str(row[-1]) for row in rows))

    event.listen(engine, "before_cursor_execute", explain)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", explain)
    return plans


def test_firing_and_cancelling_read_timers_by_their_own_indexes(tmp_path: Path) -> None:
    engine = dbmod.make_engine(f"sqlite:///{tmp_path / 'timers.db'}")
    upgrade(engine)
    with engine.begin() as conn:
        conn.execute(insert(FlowTimer), [
            {"purpose": "resume", "due_at": T0 + timedelta(days=d), "status": "pending",
             "payload": {}} for d in (0, 0, 400, 400)])

    fired = _plans_of_timer_updates(
        engine, lambda: run_due(engine, now=T0 + timedelta(minutes=1), dispatch=False))

    def cancel() -> None:
        with dbmod.transaction(engine) as session:
            _cancel_pending(session, [("step", SimpleNamespace(id=7)), ("run", 3)])
    cancelled = _plans_of_timer_updates(engine, cancel)

    assert fired and cancelled
    for plan in fired + cancelled:
        assert "ix_flow_timers_status_due" not in plan, plan
    assert all("PRIMARY KEY" in plan for plan in fired), fired
    assert "ix_flow_timers_step_run" in cancelled[0] and "ix_flow_timers_run_id" in cancelled[0]
    engine.dispose()
