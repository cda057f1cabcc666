"""The example measure ``median_first_response`` (tests/plugins/careloop_example): one file that
adds a measure through the report engine's measure contract, with no edit to a core file.

On PostgreSQL a dataset using it validates and runs with the right median over tasks created and
acted on through the engines' public functions; on SQLite ``careloop validate`` refuses it at the
measure's ``type:`` (line and column), so it never fails when a dashboard first runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from careloop_example import median_first_response  # type: ignore[import-not-found]
from click.testing import CliRunner
from sqlalchemy import Engine

from careloop.engine import schema
from careloop.engine.cli import cli
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Task
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import Assignee, add_history, complete_task, create_task
from careloop.reports.compiler import dataset_from_body
from careloop.reports.query import run_dataset
from careloop.web import admin

DATASET = """\
kind: dataset
key: first_response
title: {zh-CN: 首次响应, en: First response}
source: tasks
dimensions: [department]
measures:
  - {key: tasks, type: count}
  - {key: median_days, type: median_first_response, kind: complaint_response}
"""
T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


@pytest.fixture
def measure() -> Iterator[None]:
    """The example registered on the loaded registry (already there when the package is
    installed: then nothing is added, and nothing removed afterwards)."""
    catalogue = loaded_registry().catalogue("report_measure")
    added = median_first_response.NAME not in catalogue
    if added:
        median_first_response.register(loaded_registry())
    # the kind schemas' enums are filled from the registry once; a late plugin refills them
    schema.kind_schema.cache_clear()
    schema._validator.cache_clear()
    yield
    if added:
        catalogue.unregister(median_first_response.NAME)
        schema.kind_schema.cache_clear()
        schema._validator.cache_clear()


def _validate(tmp_path: Path) -> tuple[int, str]:
    path = tmp_path / "first_response.yaml"
    path.write_text(DATASET, "utf-8")
    result = CliRunner().invoke(cli, ["validate", str(path)])
    return result.exit_code, result.output


def test_options_are_checked_per_type(measure: None, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(DATASET.replace("kind: complaint_response", "knd: complaint_response"),
                    "utf-8")
    output = CliRunner().invoke(cli, ["validate", str(path)]).output
    assert ("dataset.bad-measure-option at $.measures[1].knd — measure "
            "'median_first_response' has no option 'knd' (did you mean 'kind'?)") in output


def _act(engine: Engine) -> None:
    """Four complaint tasks and one other, acted on as staff and as the engines would."""
    with transaction(engine) as session:
        session.add(Department(id="cardiology", name={"zh-CN": "心内科", "en": "Cardiology"},
                               kind="department", active=True))
        admin.create_user(session, username="nurse_li", display_name="李护士",
                          password="x", check=False)
    who = Assignee(user_id=None, role="nurse", department_id="cardiology")
    tasks = []
    with frozen_now(T0), transaction(engine) as session:
        for i in range(5):
            task, _ = create_task(session, title=f"t{i}", assignee=who, actor="rule:complaints",
                                  kind="complaint_response" if i < 4 else "todo")
            tasks.append(task.id)

    def at(days: float) -> Iterator[None]:
        return frozen_now(T0 + timedelta(days=days))

    with at(0.5), transaction(engine) as session:  # the engines' own row: not a staff action
        add_history(session, session.get_one(Task, tasks[1]), "system", "escalated", {})
    with at(1), transaction(engine) as session:
        complete_task(session, session.get_one(Task, tasks[0]), actor="nurse_li")
    with at(2), transaction(engine) as session:
        add_history(session, session.get_one(Task, tasks[2]), "nurse_li", "reassigned", {})
    with at(4), transaction(engine) as session:
        complete_task(session, session.get_one(Task, tasks[1]), actor="nurse_li")
        complete_task(session, session.get_one(Task, tasks[4]), actor="nurse_li")  # not counted
    # tasks[3]: nobody has acted on it yet, so it is not counted


def test_refused_on_sqlite_computed_on_postgresql(measure: None, engine: Engine,
                                                   tmp_path: Path, dialect: str) -> None:
    code, output = _validate(tmp_path)
    if dialect == "sqlite":
        assert code == 1
        assert ("first_response.yaml:8:30: dataset.measure-needs-database at "
                "$.measures[1].type — measure 'median_first_response' cannot be computed on "
                "SQLite, this installation's database; it needs PostgreSQL") in output
        return
    assert code == 0, output
    _act(engine)
    spec = dataset_from_body("first_response", yaml.safe_load(DATASET))
    with transaction(engine) as session:
        rows = run_dataset(session, spec, scope=None).rows
    # first staff actions after 1, 2 and 4 days (the escalation at half a day is not one)
    assert rows == [{"department": "cardiology", "tasks": 5, "median_days": 2.0}]
