"""Runtime behaviour on small flows: retries → incidents (retry/skip), pinned versions,
parallel join first, waiting for an event with a timeout, task.overdue, cron triggers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select

from careloop.engine import events
from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Patient, Task
from careloop.engine.models import DomainEventRow
from careloop.flows import egress
from careloop.flows.cli import flows as flows_cli
from careloop.flows.models import FlowRun, Incident, StepRun
from careloop.flows.runtime import start
from careloop.flows.scheduler import run_due

from .conftest import APPS  # type: ignore[import-not-found]

T0 = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
Bundle = Callable[..., None]


@pytest.fixture
def bundle(engine: Engine, tmp_path: Path) -> Bundle:
    import_bundle(APPS / "common", engine=engine)
    with transaction(engine) as session:
        session.add(Patient(id="P1", mrn="M1", name="测试", attributes={}, consents={}))

    def _bundle(version: str = "0.1.0", **flows: str) -> None:
        app = tmp_path / f"app_{version}"
        (app / "flows").mkdir(parents=True)
        (app / "app.yaml").write_text(
            f"id: rt\nname: {{zh-CN: 测试, en: Test}}\nversion: {version}\nformat: 1\n"
            "default_locale: zh-CN\nrequires: [common]\n", "utf-8")
        for key, steps in flows.items():
            head = f"kind: flow\nkey: {key}\ntitle: {{zh-CN: 测试, en: Test}}\n"
            (app / "flows" / f"{key}.yaml").write_text(head + steps, "utf-8")
        with frozen_now(T0):
            import_bundle(app, engine=engine)
    return _bundle


def _start(engine: Engine, flow: str, key: str = "r1") -> int:
    with frozen_now(T0), transaction(engine) as session:
        return start(session, flow_key=flow, patient_id="P1", idempotency_key=key)


def _steps(engine: Engine, run_id: int) -> list[tuple[str, str]]:
    with transaction(engine) as session:
        return [(s.step_key, s.status) for s in session.scalars(
            select(StepRun).where(StepRun.run_id == run_id).order_by(StepRun.id)).all()]


# A step that fails every time: a role's task for a patient with no encounter (no department).
HOOK = """trigger: {manual: true}
steps:
  - key: call
    type: create_task
    task_title: {zh-CN: 测试, en: Test}
    assignee: {role: nurse}
    retry: {attempts: 2, backoff: 1m}
  - {key: after, type: set, set: {called: "True"}}
  - {key: done, type: end}
"""


def test_failing_step_is_retried_then_an_incident_that_can_be_skipped(
        engine: Engine, bundle: Bundle) -> None:
    bundle(hook=HOOK)
    run_id = _start(engine, "hook")
    assert _steps(engine, run_id) == [("call", "retrying")]
    run_due(engine, now=T0 + timedelta(minutes=2))
    assert _steps(engine, run_id) == [("call", "failed")]
    with transaction(engine) as session:
        incident = session.scalars(select(Incident)).one()
        assert incident.status == "open" and "department" in incident.error
    runner = CliRunner()
    with frozen_now(T0 + timedelta(minutes=5)):  # the administrator retries five minutes in
        retried = runner.invoke(flows_cli, ["incident", "retry", str(incident.id)])
    assert retried.exit_code == 0
    with transaction(engine) as session:
        assert session.scalars(select(Incident.status)).all() == ["retried"]
    run_due(engine, now=T0 + timedelta(minutes=10))
    with transaction(engine) as session:
        second = session.scalars(select(Incident).where(Incident.status == "open")).one()
    assert runner.invoke(flows_cli, ["incident", "skip", str(second.id)]).exit_code == 0
    assert _steps(engine, run_id)[-2:] == [("after", "done"), ("done", "done")]
    again = runner.invoke(flows_cli, ["incident", "skip", str(second.id)])
    assert again.exit_code == 1 and "already skipped" in again.output


def test_runs_are_pinned_to_their_version(engine: Engine, bundle: Bundle) -> None:
    bundle(pin="trigger: {manual: true}\nsteps:\n  - {key: a, type: wait, duration: 1d}\n"
               "  - {key: b, type: end}\n")
    old = _start(engine, "pin", "old")
    bundle("0.2.0", pin="trigger: {manual: true}\nsteps:\n"
                        "  - {key: a, type: wait, duration: 1d}\n"
                        "  - {key: c, type: set, set: {v: '2'}}\n  - {key: b, type: end}\n")
    new = _start(engine, "pin", "new")
    run_due(engine, now=T0 + timedelta(days=2))
    assert [k for k, _ in _steps(engine, old)] == ["a", "b"]
    assert [k for k, _ in _steps(engine, new)] == ["a", "c", "b"]
    with transaction(engine) as session:
        versions = {r.idempotency_key: r.flow_version for r in session.scalars(select(FlowRun))}
    assert versions == {"old": 1, "new": 2}


def test_parallel_join_first_and_wait_for_event_with_timeout(engine: Engine,
                                                             bundle: Bundle) -> None:
    bundle(race="""trigger: {manual: true}
steps:
  - {key: fork, type: parallel, branches: [reading, timeout], join: first, next: done}
  - {key: reading, type: wait, event: reading.recorded, timeout: 3d, on_timeout: late}
  - {key: got, type: set, set: {bp: "reading.value.systolic"}, next: join}
  - {key: late, type: set, set: {late: "True"}, next: join}
  - {key: timeout, type: wait, duration: 1d, next: join}
  - {key: done, type: end}
""")
    first = _start(engine, "race", "one")
    with frozen_now(T0 + timedelta(hours=2)), transaction(engine) as session:
        events.record(session, "reading.recorded", {"patient_id": "P1", "type":
                                                    "blood_pressure",
                                                    "value": {"systolic": 150}})
    with transaction(engine) as session:
        run = session.get(FlowRun, first)
        assert run is not None and run.status == "completed" and run.context["bp"] == 150
    second = _start(engine, "race", "two")
    run_due(engine, now=T0 + timedelta(days=5))
    steps = dict(_steps(engine, second))
    assert steps["timeout"] == "done" and steps["reading"] == "cancelled"


def test_task_overdue_is_emitted_once_per_due_time(engine: Engine, bundle: Bundle) -> None:
    bundle(todo="""trigger: {manual: true}
steps:
  - key: call
    type: create_task
    task_title: {zh-CN: 电话随访, en: Phone call}
    assignee: {role: nurse, department: ward1}
    due: 2h
""")
    with transaction(engine) as session:
        from careloop.engine.domain import Department

        session.add(Department(id="ward1", name={"zh-CN": "一病区", "en": "Ward 1"}))
    _start(engine, "todo")
    run_due(engine, now=T0 + timedelta(hours=1))
    run_due(engine, now=T0 + timedelta(hours=3))
    run_due(engine, now=T0 + timedelta(hours=4))

    def overdue() -> list[DomainEventRow]:
        with transaction(engine) as session:
            return list(session.scalars(select(DomainEventRow).where(
                DomainEventRow.type == "task.overdue")).all())

    assert len(overdue()) == 1 and overdue()[0].payload["assignee_role"] == "nurse"
    with transaction(engine) as session:
        task = session.scalars(select(Task)).one()
        task.due_at = T0 + timedelta(hours=5)  # a new due time may be overdue again
    run_due(engine, now=T0 + timedelta(hours=6))
    assert len(overdue()) == 2


def test_cron_flow_starts_once_per_fire_time(engine: Engine, bundle: Bundle) -> None:
    bundle(daily="trigger: {cron: '0 9 * * *'}\nsteps:\n  - {key: a, type: end}\n")
    run_due(engine, now=T0 + timedelta(hours=2))   # 11:00 local: today's 09:00 passed
    run_due(engine, now=T0 + timedelta(hours=3))
    run_due(engine, now=T0 + timedelta(days=1, hours=2))
    with transaction(engine) as session:
        keys = sorted(session.scalars(select(FlowRun.idempotency_key)).all())
    assert keys == ["cron:daily:2026-12-01T09:00:00+08:00", "cron:daily:2026-12-02T09:00:00+08:00"]


def test_cli_run_due_and_run_read_back(engine: Engine, bundle: Bundle) -> None:
    from careloop.flows.cli import scheduler

    bundle(pin="trigger: {manual: true}\nsteps:\n  - {key: a, type: wait, duration: 1d}\n"
               "  - {key: b, type: end}\n")
    run_id = _start(engine, "pin")
    result = CliRunner().invoke(scheduler, ["run-due", "--now", "2026-12-03T09:00:00"])
    assert result.exit_code == 0 and '"fired": 1' in result.output
    shown = CliRunner().invoke(flows_cli, ["run", str(run_id)])
    assert '"status": "completed"' in shown.output
    assert CliRunner().invoke(flows_cli, ["run", "999"]).exit_code == 1




def test_start_subflow_and_webhook_success(engine: Engine, bundle: Bundle) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    bodies: list[bytes] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with transaction(engine) as session:  # the HIS on this machine, listed by the administrator
        egress.allow(session, "127.0.0.1", allow_private=True)
    try:
        bundle(parent="trigger: {manual: true}\nsteps:\n"
                      "  - {key: mark, type: set, set: {origin: \"'parent'\"}}\n"
                      "  - {key: child, type: start_subflow, flow: child}\n"
                      "  - {key: done, type: end}\n",
               child="trigger: {manual: true}\nsteps:\n"
                     f"  - {{key: tell, type: call_webhook, url: 'http://127.0.0.1:"
                     f"{server.server_port}/his', body: {{origin: context.origin}}}}\n"
                     "  - {key: done, type: end}\n")
        parent = _start(engine, "parent")
        assert bodies == []  # queued in the step's transaction, sent by the sweep
        run_due(engine, now=T0 + timedelta(seconds=1))
    finally:
        server.shutdown()
        server.server_close()
    with transaction(engine) as session:
        runs = {r.flow_key: r for r in session.scalars(select(FlowRun)).all()}
    assert runs["child"].context["_parent_run"] == parent
    assert runs["child"].status == runs["parent"].status == "completed"
    assert bodies == [b'{"origin":"parent"}']
