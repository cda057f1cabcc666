"""Fixtures for the web runtime: the app, a client, users with roles, signing in."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, Task, User
from careloop.web import admin
from careloop.web.app import create_app

PASSWORD = "Correct-Horse-Battery-9"


@pytest.fixture
def app(engine: Engine) -> object:
    return create_app()


@pytest.fixture
def client(app: object) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:  # type: ignore[arg-type]
        yield c


def make_user(username: str, role: str, department: str | None) -> int:
    with transaction() as session:
        user = admin.create_user(session, username=username, display_name=username,
                                 password=PASSWORD)
        admin.grant(session, user, role, department)
        return user.id


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no csrf token in page"
    return match.group(1)


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    page = client.get("/login")
    response = client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": csrf_from(page.text), "next": "/"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    me = client.get("/api/v1/me")
    assert me.status_code == 200
    token: str = me.json()["csrf_token"]
    return token


def seed_wards(session: Session) -> None:
    """Cardiology with wards A and B; one patient in each ward; a task for each."""
    session.add(Department(id="cardio", name={"zh-CN": "心内科", "en": "Cardiology"}))
    session.flush()
    for ward in ("ward_a", "ward_b"):
        session.add(Department(id=ward, name={"zh-CN": ward, "en": ward}, kind="ward",
                               parent_id="cardio"))
    session.flush()
    now = datetime(2026, 11, 1, tzinfo=UTC)
    for pid, ward in (("PA", "ward_a"), ("PB", "ward_b")):
        session.add(Patient(id=pid, mrn=f"MRN-{pid}", name="测试患者", phone="13812345678",
                            id_number="110101199003071234"))
        session.flush()
        session.add(Encounter(id=f"E-{pid}", patient_id=pid, type="inpatient",
                              department_id="cardio", ward_id=ward, status="discharged",
                              admitted_at=now - timedelta(days=5), discharged_at=now))
        session.flush()
        session.add(Task(title=f"随访 {pid}", patient_id=pid, encounter_id=f"E-{pid}",
                         department_id=ward, assignee_role="nurse", priority="normal",
                         status="open", due_at=now + timedelta(days=3), created_at=now))
    session.flush()


@pytest.fixture
def wards(engine: Engine) -> dict[str, int]:
    """The two wards, their patients and tasks; returns task ids by patient."""
    with transaction() as session:
        seed_wards(session)
        from sqlalchemy import select

        return {t.patient_id or "": t.id for t in session.scalars(select(Task)).all()}


UserFactory = Callable[[str, str, str | None], int]


@pytest.fixture
def user_factory(engine: Engine) -> UserFactory:
    return make_user


def get_user(username: str) -> User:
    with transaction() as session:
        from sqlalchemy import select

        user = session.scalars(select(User).where(User.username == username)).one()
        session.expunge(user)
        return user
