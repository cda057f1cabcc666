"""Fixtures of the flow tests: imported bundles, an API-less event sender, time travel."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from careloop.engine.bundles import import_bundle
from careloop.engine.clock import frozen_now
from careloop.engine.db import transaction
from careloop.engine.domain import Department, RoleGrant, Task, User
from careloop.flows.ingest import ingest
from careloop.flows.models import OutboxMessage
from careloop.flows.scheduler import SweepReport, run_due

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "app_definitions"
BUNDLES = ("common", "discharge", "cardiology", "satisfaction", "complaints", "chronic_care",
           "orthopedics")


#: parts of a shipped app these engine tests leave out: the satisfaction surveys' flows (day 14
#: after a discharge, the day after a visit) would add a run and a message to every discharge
#: these tests count; their journeys are the app's own scenarios
#: (app_definitions/satisfaction/scenarios, run by tests/scenarios/test_shipped.py)
WITHOUT = {"satisfaction": ("flows", "inpatient_survey_*", "outpatient_survey_*")}


@pytest.fixture
def bundles(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    for name in BUNDLES:
        source = APPS / name
        if name in WITHOUT:
            source = tmp_path_factory.mktemp("apps") / name
            shutil.copytree(APPS / name, source, ignore=shutil.ignore_patterns(*WITHOUT[name]))
        import_bundle(source, engine=engine)
    return engine


Send = Callable[..., dict[str, Any]]


class TravelClock:
    """The test's own time: it starts at :data:`START` and only moves when a test sweeps to a
    later instant, so events are received at the travelled time, never at the real date."""

    def __init__(self) -> None:
        self.now = START


START = datetime(2026, 12, 1, 2, 5, tzinfo=UTC)  # 10:05 in Shanghai, just after the discharges


@pytest.fixture
def clock() -> TravelClock:
    return TravelClock()


# Reference data a hospital sets up before its HIS sends events (an unknown code is refused).
DEPARTMENTS = {"cardiology": ("心内科", "Cardiology"), "orthopedics": ("骨科", "Orthopedics")}


@pytest.fixture
def departments(engine: Engine) -> Engine:
    with transaction(engine) as session:
        for code, (zh, en) in DEPARTMENTS.items():
            session.add(Department(id=code, name={"zh-CN": zh, "en": en}))
    return engine


@pytest.fixture
def send(departments: Engine, clock: TravelClock) -> Send:
    engine = departments

    def _send(event_id: str, type: str, payload: dict[str, Any],
              expect: int = 200) -> dict[str, Any]:
        with frozen_now(clock.now), transaction(engine) as session:
            status, body = ingest(session, {"event_id": event_id, "type": type,
                                            "payload": payload})
        assert status == expect, body
        return body
    return _send


@pytest.fixture
def sweep(engine: Engine, clock: TravelClock) -> Callable[[str], SweepReport]:
    def _sweep(now: str) -> SweepReport:
        at = datetime.fromisoformat(now)
        clock.now = max(clock.now, at)
        with frozen_now(at):
            return run_due(engine, now=at)
    return _sweep


@pytest.fixture
def nurse(engine: Engine) -> Iterator[int]:
    with transaction(engine) as session:
        user = User(username="nurse_li", display_name="Li", locale="zh-CN")
        session.add(user)
        session.flush()
        user_id = user.id
    yield user_id


def patient(send: Send, pid: str = "P1", *, birth: str = "1950-03-01",
            consents: dict[str, bool] | None = None, tags: list[str] | None = None,
            event_id: str | None = None) -> None:
    payload: dict[str, Any] = {"patient_id": pid, "mrn": f"MRN-{pid}", "name": "张三",
                               "birth_date": birth, "phone": "13800000000", "locale": "zh-CN",
                               "consents": consents or {}}
    if tags is not None:
        payload["tags"] = tags
    send(event_id or f"pat-{pid}", "patient.upserted", payload)


def messages(engine: Engine) -> list[OutboxMessage]:
    with transaction(engine) as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)).all())


def text(engine: Engine, message: OutboxMessage) -> str:
    """The body as the patient receives it (the stored one holds sealed link placeholders)."""
    from careloop.flows.outbox import message_text

    with transaction(engine) as session:
        return message_text(session, message)[1]


def tasks(engine: Engine) -> list[Task]:
    with transaction(engine) as session:
        return list(session.scalars(select(Task).order_by(Task.id)).all())


def grant(engine: Engine, username: str, role: str, department: str | None) -> int:
    with transaction(engine) as session:
        if department and session.get(Department, department) is None:
            session.add(Department(id=department, name={"zh-CN": department, "en": department}))
            session.flush()
        user = User(username=username, display_name=username, locale="zh-CN")
        session.add(user)
        session.flush()
        session.add(RoleGrant(user_id=user.id, role=role, department_id=department))
        return user.id


@pytest.fixture
def helpers() -> Any:
    class H:
        patient = staticmethod(patient)
        messages = staticmethod(messages)
        text = staticmethod(text)
        tasks = staticmethod(tasks)
        grant = staticmethod(grant)
    return H
