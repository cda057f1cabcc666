"""Flow engine benchmarks, peers measured in the same run.

(a) The discharge flow started by its HIS events and run to completion (travelling in time) N
    times with persistence, against SpiffWorkflow running the equivalent BPMN process
    (bench/discharge.bpmn) and saving it with its serializer to SQLite at each wait.
(b) Sweeping D due timers out of P pending (SQLite, and PostgreSQL when a URL is given), at two
    pending counts, to show the per-timer cost does not grow with the pending count.

    python bench/flows.py [--quick] [--json] [--pg postgresql+psycopg://postgres@127.0.0.1/test]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, insert, text

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _engine(url: str | None, folder: Path) -> tuple[Engine, str | None]:
    from careloop.engine.db import make_engine, schema_engine
    from careloop.engine.migrate import upgrade

    if url is None:
        engine = make_engine(f"sqlite:///{folder / 'bench.db'}")
        upgrade(engine)
        return engine, None
    engine, schema = schema_engine(url, "bench_flows")
    upgrade(engine)
    return engine, schema


def _drop(url: str | None, engine: Engine, schema: str | None) -> None:
    from careloop.engine.db import drop_schema

    engine.dispose()
    if url and schema:
        drop_schema(url, schema)


def careloop_discharge(n: int, folder: Path) -> float:
    """Seconds per discharge run: events in, run-due to day 8 (all timers and messages)."""
    from careloop.engine.bundles import import_bundle
    from careloop.engine.clock import frozen_now
    from careloop.engine.db import transaction
    from careloop.engine.domain import Department, User
    from careloop.flows.ingest import ingest
    from careloop.flows.scheduler import run_due

    engine, _ = _engine(None, folder)
    for app in ("common", "discharge"):
        import_bundle(ROOT / "app_definitions" / app, engine=engine)
    with transaction(engine) as session:
        session.add(User(username="nurse_li", display_name="Li", locale="zh-CN"))
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"}))
    began = time.perf_counter()
    with frozen_now(T0):
        for i in range(n):
            for event in _events(i):
                with transaction(engine) as session:
                    status, _ = ingest(session, event)
                    assert status == 200
    # One sweep a day to day 8, as the ticker would (it sweeps every minute): each message is
    # sent on its day. A single sweep at day 8 found every message past its one-day validity:
    # none was sent, each expired and the day-3 form's fallback made a task instead.
    # The outbox's real-time budget a pass (``CARELOOP_OUTBOX_BUDGET``) is for a ticker that
    # comes back a minute later; these sweeps come back a day later, so no pass may stop early.
    os.environ["CARELOOP_OUTBOX_BUDGET"] = "3600"
    fired, messages = 0, dict[str, int]()
    for day in range(9):
        report = run_due(engine, now=T0 + timedelta(days=day))
        fired += report.fired
        for outcome, count in report.messages.items():
            messages[outcome] = messages.get(outcome, 0) + count
    elapsed = time.perf_counter() - began
    assert fired >= 3 * n, fired
    assert messages == {"logged": 3 * n}, messages  # the log channel: every message sent
    _check_outcome(engine, n)
    engine.dispose()
    return elapsed / n


def _check_outcome(engine: Engine, n: int) -> None:
    """Every run ended, each with its three messages and its day-7 phone task."""
    from sqlalchemy import func, select

    from careloop.engine.db import transaction
    from careloop.engine.domain import Task
    from careloop.flows.models import FlowRun, OutboxMessage

    with transaction(engine) as session:
        runs = dict(session.execute(select(FlowRun.status, func.count())
                                    .group_by(FlowRun.status)).all())
        messages = session.scalar(select(func.count()).select_from(OutboxMessage))
        tasks = session.scalar(select(func.count()).select_from(Task))
    assert runs == {"completed": n} and messages == 3 * n and tasks == n, (runs, messages, tasks)


def _events(i: int) -> list[dict[str, Any]]:
    return [{"event_id": f"p{i}", "type": "patient.upserted",
             "payload": {"patient_id": f"P{i}", "mrn": f"M{i}", "name": "测试",
                         "birth_date": "1950-01-01"}},
            {"event_id": f"d{i}", "type": "encounter.discharged",
             "payload": {"encounter_id": f"E{i}", "patient_id": f"P{i}", "type": "inpatient",
                         "department_id": "cardiology", "responsible_nurse": "nurse_li",
                         "discharged_at": T0.isoformat()}}]


def spiff_discharge(n: int, folder: Path) -> float:
    """Seconds per run of the equivalent BPMN process, saved to SQLite at start and each wait."""
    from SpiffWorkflow.bpmn import BpmnWorkflow
    from SpiffWorkflow.bpmn.parser import BpmnParser
    from SpiffWorkflow.bpmn.serializer import BpmnWorkflowSerializer

    parser = BpmnParser()
    parser.add_bpmn_file(str(ROOT / "bench" / "discharge.bpmn"))
    spec = parser.get_spec("discharge")
    serializer = BpmnWorkflowSerializer()
    db = sqlite3.connect(folder / "spiff.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE workflows (id INTEGER PRIMARY KEY, state TEXT)")
    began = time.perf_counter()
    for i in range(n):
        workflow = BpmnWorkflow(spec)
        for task in workflow.get_tasks():
            task.data.update({"messages": [], "tasks": [], "age": 76})
        workflow.do_engine_steps()
        with db:
            db.execute("INSERT INTO workflows VALUES (?, ?)",
                       (i, serializer.serialize_json(workflow)))
        for _ in range(3):  # the three waits: day 3, form expiry, day 7
            (state,) = db.execute("SELECT state FROM workflows WHERE id = ?", (i,)).fetchone()
            workflow = serializer.deserialize_json(state)
            workflow.refresh_waiting_tasks()
            workflow.do_engine_steps()
            with db:
                db.execute("UPDATE workflows SET state = ? WHERE id = ?",
                           (serializer.serialize_json(workflow), i))
        assert workflow.is_completed()
    elapsed = time.perf_counter() - began
    db.close()
    return elapsed / n


def sweep(url: str | None, due: int, pending: int, folder: Path) -> dict[str, float]:
    """Per-timer seconds of sweeping ``due`` timers with ``pending`` more not yet due."""
    from careloop.flows.models import FlowTimer
    from careloop.flows.scheduler import run_due

    engine, schema = _engine(url, _fresh(folder))
    try:
        far = T0 + timedelta(days=365)
        rows = [{"purpose": "resume", "due_at": far, "status": "pending", "payload": {}}
                for _ in range(10_000)]
        with engine.begin() as conn:
            for start in range(0, pending, 10_000):
                conn.execute(insert(FlowTimer), rows[:min(10_000, pending - start)])
            conn.execute(insert(FlowTimer), [{"purpose": "resume", "due_at": T0,
                                              "status": "pending", "payload": {}}
                                             for _ in range(due)])
            if engine.dialect.name == "postgresql":
                conn.execute(text("ANALYZE flow_timers"))
        if engine.dialect.name == "sqlite":
            # the million rows just written sit in the write-ahead log: copy them into the
            # database now, or the sweep's first commits pay for that checkpoint
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        began = time.perf_counter()
        report = run_due(engine, now=T0 + timedelta(minutes=1), batch=100, dispatch=False)
        elapsed = time.perf_counter() - began
        assert report.fired == due, report
        return {"per_timer_ms": 1000 * elapsed / due, "total_s": elapsed}
    finally:
        _drop(url, engine, schema)


def _fresh(folder: Path) -> Path:
    path = folder / secrets.token_hex(4)
    path.mkdir()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--json", action="store_true", help="one machine-readable line")
    parser.add_argument("--pg", help="PostgreSQL URL for the sweep benchmark")
    parser.add_argument("--runs", type=int, help="discharge runs (default 200; quick 5)")
    parser.add_argument("--due", type=int, help="due timers (default 10000; quick 50)")
    parser.add_argument("--pending", type=int, help="pending timers (default 1000000; quick 2000)")
    args = parser.parse_args(argv)
    runs = args.runs or (5 if args.quick else 200)
    due = args.due or (50 if args.quick else 10_000)
    pending = args.pending or (2_000 if args.quick else 1_000_000)
    small = max(due, pending // 100)
    result: dict[str, Any] = {"runs": runs, "due": due, "pending": [small, pending]}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ours = careloop_discharge(runs, _fresh(folder))
        spiff = spiff_discharge(runs, _fresh(folder))
        result["discharge_ms"] = {"careloop": 1000 * ours, "spiffworkflow": 1000 * spiff,
                                  "ratio_careloop_over_spiff": ours / spiff}
        databases: list[tuple[str, str | None]] = [("sqlite", None)]
        if args.pg:
            databases.append(("postgresql", args.pg))
        for name, url in databases:
            low = sweep(url, due, small, folder)
            high = sweep(url, due, pending, folder)
            result[f"sweep_{name}"] = {
                "per_timer_ms_small": low["per_timer_ms"], "per_timer_ms_large":
                high["per_timer_ms"], "ratio_large_over_small":
                high["per_timer_ms"] / low["per_timer_ms"]}
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    d = result["discharge_ms"]
    print(f"(a) discharge flow, {runs} runs to completion with persistence:")
    print(f"    careloop {d['careloop']:.2f} ms/run, SpiffWorkflow+SQLite "
          f"{d['spiffworkflow']:.2f} ms/run, ratio careloop/spiff "
          f"{d['ratio_careloop_over_spiff']:.2f}")
    for name, _ in [("sqlite", None), ("postgresql", args.pg)]:
        if f"sweep_{name}" in result:
            s = result[f"sweep_{name}"]
            print(f"(b) {name}: sweeping {due} due timers: {s['per_timer_ms_small']:.3f} ms/timer "
                  f"with {small} pending, {s['per_timer_ms_large']:.3f} ms/timer with {pending} "
                  f"pending, ratio {s['ratio_large_over_small']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
