"""The inbox and the patient 360 page cost few round trips (issue 18, the inbox target): every
SQL statement one page sends is counted with SQLAlchemy's ``before_cursor_execute`` event (as
tests/flows/test_flow_statements.py does), not timed.

Inbox (a ward nurse, tasks of two departments, some held by a colleague): the session with its
user and password age (one read), the grants with their wards (one), the list with its patients,
assignees and their departments' names (one, the names the page's labels read), the three counts
(one): 4, the same for 5 tasks or 30. Before: 13 (the user, the credential and the wards read
apart, the idle timer written on every page, the patients by a second query, a department's
label by a transaction of its own), then 5 (every department's name read by a statement of its
own).

Patient 360: 31 (47 before: the sensitive stays read again by each of the 9 panels, the patient
read again for its tasks' names, the session as above). What remains: docs/performance-web.md.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from careloop.engine import tasks as task_engine
from careloop.engine.clock import frozen_now, now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient

from ..statements import counted
from .conftest import login, make_user

INBOX_LIMIT = 4
PATIENT_LIMIT = 27


def _ward(tasks: int) -> None:
    """Cardiology and its ward A; ``tasks`` discharged patients with a follow-up task each,
    every third held by the colleague ``nurse_b``, the others in the nurses' queue of the ward
    or of cardiology."""
    with transaction() as session:
        session.add(Department(id="cardio", name={"zh-CN": "心内科", "en": "Cardiology"}))
        session.flush()
        session.add(Department(id="ward_a", name={"zh-CN": "心内一病区", "en": "Ward A"},
                               kind="ward", parent_id="cardio"))
    colleague = make_user("nurse_b", "nurse", "cardio")
    with transaction() as session:
        for n in range(tasks):
            session.add(Patient(id=f"p{n}", mrn=f"MRN{n:05d}", name=f"患者{n}",
                                phone="13800138000"))
            session.flush()
            session.add(Encounter(id=f"e{n}", patient_id=f"p{n}", type="inpatient",
                                  department_id="cardio", ward_id="ward_a",
                                  status="discharged", discharged_at=now_utc()))
            session.flush()
            held = task_engine.Assignee(colleague, None, "cardio") if n % 3 == 0 else \
                task_engine.Assignee(None, "nurse", "ward_a" if n % 2 else "cardio")
            task_engine.create_task(session, title=f"出院随访电话 {n}", patient_id=f"p{n}",
                                    encounter_id=f"e{n}", actor="test", assignee=held,
                                    due_at=now_utc() + timedelta(hours=n + 1))


def _pages(client: TestClient, engine: Engine) -> dict[str, list[str]]:
    make_user("nurse_a", "nurse", "cardio")
    seen: dict[str, list[str]] = {}
    with frozen_now(now_utc()):
        login(client, "nurse_a")
        for path in ("/inbox?view=department", "/patients/p1"):
            assert client.get(path).status_code == 200  # warm: the first page compiles
            with counted(engine) as counter:
                page = client.get(path)
            assert page.status_code == 200, page.text[:300]
            seen[path] = counter.statements
            seen[path + " html"] = [page.text]
    return seen


def test_inbox_statements_few_and_flat(client: TestClient, engine: Engine) -> None:
    _ward(30)
    seen = _pages(client, engine)
    inbox = seen["/inbox?view=department"]
    assert len(inbox) <= INBOX_LIMIT, "\n".join(inbox)
    html = seen["/inbox?view=department html"][0]
    # what a person reads is unchanged: names, the colleague, departments in words, local time
    assert "患者4" in html and "MRN00004" in html and "nurse_b" in html
    assert "心内一病区" in html and "心内科" in html
    assert '<time datetime="' in html and "+08:00" in html


def test_inbox_statements_do_not_grow_with_the_list(client: TestClient,
                                                    engine: Engine) -> None:
    _ward(5)
    small = len(_pages(client, engine)["/inbox?view=department"])
    assert small <= INBOX_LIMIT


def test_patient_360_statements(client: TestClient, engine: Engine) -> None:
    _ward(6)
    seen = _pages(client, engine)
    patient = seen["/patients/p1"]
    assert len(patient) <= PATIENT_LIMIT, "\n".join(patient)
    html = seen["/patients/p1 html"][0]
    assert "患者1" in html and "出院随访电话 1" in html and "心内一病区" in html
