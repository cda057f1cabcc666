"""docs/walkthrough.md, executed: its commands (the CLI the IT team types) and the patient's and
staff's steps through the web app, with the shipped apps."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundles, list_bundles
from careloop.engine.cli import _add_engine_commands, cli
from careloop.engine.clock import OFFSET_ENV, frozen_now
from careloop.engine.db import transaction
from careloop.engine.dispatcher import drain
from careloop.engine.domain import Department, Task, TaskHistory
from careloop.forms.models import Submission
from careloop.web import admin
from careloop.web.app import create_app

from .conftest import PASSWORD, login

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "walkthrough.md"
SAMPLE = ROOT / "docs" / "samples" / "discharge_dissatisfied.jsonl"


def _careloop(*args: str) -> str:
    _add_engine_commands()
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def demo_hospital(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``careloop up --demo`` sets up that the walkthrough relies on: the apps, departments
    and the staff accounts it names (made as the admin pages make them)."""
    monkeypatch.setenv(OFFSET_ENV, "")  # `careloop --now` sets it; restored after the test
    import_bundles(list_bundles([ROOT / "app_definitions"]), actor="test")
    with transaction(engine) as session:
        for dept, zh in (("cardiology", "心内科"), ("pharmacy", "药剂科")):
            session.add(Department(id=dept, name={"zh-CN": zh, "en": dept}))
        session.flush()
        session.add(Department(id="cardio_w1", name={"zh-CN": "心内科1病区", "en": "W1"},
                               kind="ward", parent_id="cardiology"))
        for username, role, dept in (("cardiology_head_nurse", "head_nurse", "cardiology"),
                                     ("cardiology_director", "dept_director", "cardiology"),
                                     ("pharmacy_head", "pharmacy_head", "pharmacy"),
                                     ("px", "px_office", None)):
            user = admin.create_user(session, username=username, display_name=username,
                                     password=PASSWORD, check=False)
            admin.grant(session, user, role, dept)


def _commands() -> list[list[str]]:
    """The ``careloop …`` lines of the walkthrough's code blocks, in order."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text("utf-8"), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    return [line.split()[1:] for line in lines if line.startswith("careloop ")]


def _inbox(app: object, username: str) -> list[dict[str, object]]:
    client = TestClient(app)  # type: ignore[arg-type]
    login(client, username)
    items: list[dict[str, object]] = client.get("/api/v1/tasks").json()
    return items


def test_the_walkthrough_works_as_written(engine: Engine, demo_hospital: None) -> None:
    commands = _commands()
    assert [c[:3] for c in commands] == [
        ["--now", "2026-12-01T10:05", "events"], ["scheduler", "run-due", "--now"],
        ["--now", "2026-12-04T09:31", "flows"], ["scheduler", "run-due", "--now"],
        ["scheduler", "run-due", "--now"]]
    sent, day3, messages, director, office = commands
    assert "accepted wt-d1" in _careloop(*[a if a != SAMPLE.relative_to(ROOT).as_posix()
                                          else str(SAMPLE) for a in sent])
    _careloop(*day3)
    printed = _careloop(*messages)
    assert "discharge_care_day3" in printed and "logged" in printed
    link = re.search(r"https?://\S+(/f/[A-Za-z0-9_\-]+)", printed)
    assert link is not None, printed

    app = create_app()
    with frozen_now(datetime.fromisoformat("2026-12-04T09:40:00+08:00")):
        patient = TestClient(app)
        assert patient.get(link.group(1)).status_code == 200
        answered = patient.post(link.group(1), data={
            "_page": "0", "_action": "submit", "recovery": "poor", "symptoms": "头晕",
            "medication_clear": "no", "overall": "2", "comment": "用药指导不清楚"})
        assert answered.status_code == 200
        drain()  # what `careloop serve`'s dispatcher thread does right after the page returned
        nurse = _inbox(app, "cardiology_head_nurse")
        assert [t["title"] for t in nurse if t["priority"] == "urgent"] == [
            "不满意回访：总体满意度 2 分"]
        pharmacy = _inbox(app, "pharmacy_head")
        assert [t["title"] for t in pharmacy] == ["抄送：患者反映用药指导不清楚"]
    with transaction(engine) as session:
        assert session.scalars(select(Submission.status)).one() == "pending_dissatisfied"

    _careloop(*director)
    _careloop(*office)
    with transaction(engine) as session:
        task = session.scalars(select(Task).where(Task.priority == "urgent")).one()
        steps = session.scalars(select(TaskHistory.details).where(
            TaskHistory.task_id == task.id, TaskHistory.action == "escalated")
            .order_by(TaskHistory.id)).all()
        assert [s["role"] for s in steps] == ["dept_director", "px_office"]
