"""The inbox's sensitive-stay check reads the task's copy of its stay's department and ward.

``task_visibility`` used to look each task's stay up in ``encounters`` (two correlated ``NOT
EXISTS`` per task: seconds for a view of 100,000 open tasks). Tasks now carry
``stay_department_id`` / ``stay_ward_id``, kept by the database (``engine/task_stay.py``): the
condition names ``encounters`` only for tasks of no department (where the patient's stays say
who sees them), and what every principal sees is what the stay look-up said — after a task is
made, after its stay moves into or out of a sensitive department (an HIS transfer), after an
administrator marks a department sensitive or not, and for tasks written by plain SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Engine, and_, insert, or_, select, text, update
from sqlalchemy.orm import Session

from careloop.engine import task_stay
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, Task
from careloop.engine.tasks import Assignee, create_task
from careloop.flows.ingest import ingest
from careloop.web.permissions import (
    Grant,
    Principal,
    _hidden_departments,
    _own,
    task_visibility,
    visible_patient_filter,
)

WARD_NURSE = Principal(7, "nurse7", "护士7", (Grant("nurse", "cardio_w1"),),
                       frozenset({"cardio_w1"}))
HEAD = Principal(8, "head8", "护士长8", (Grant("head_nurse", "cardio"),),
                 frozenset({"cardio", "cardio_w1", "cardio_w2"}))
PSY_NURSE = Principal(9, "nurse9", "护士9", (Grant("nurse", "psy_w1"),), frozenset({"psy_w1"}))
PSY_DOCTOR = Principal(10, "doc10", "医生10", (Grant("doctor", "psychiatry"),),
                       frozenset({"psychiatry", "psy_w1"}))
PX = Principal(11, "px", "患者体验办", (Grant("px_office", None),), None)
PEOPLE = (WARD_NURSE, HEAD, PSY_NURSE, PSY_DOCTOR, PX)
WARDS = {"cardio": ("cardio_w1", "cardio_w2"), "psychiatry": ("psy_w1",), "ortho": ("ortho_w1",)}


def _old_condition(principal: Principal) -> ColumnElement[bool]:
    """``task_visibility`` as it was: the task's stay looked up in ``encounters`` (the oracle)."""
    hidden = _hidden_departments(principal)
    own = _own(principal)
    mine = [] if own is None else [
        Encounter.department_id.not_in(own),
        or_(Encounter.ward_id.is_(None), Encounter.ward_id.not_in(own))]
    stay_shown = [~select(Encounter.id).where(Encounter.id == Task.encounter_id,
                                              column.in_(hidden), *mine).exists()
                  for column in (Encounter.department_id, Encounter.ward_id)]
    not_sensitive = or_(
        and_(Task.encounter_id.is_not(None), *stay_shown),
        and_(Task.encounter_id.is_(None),
             or_(Task.department_id.is_(None), Task.department_id.not_in(hidden))))
    roles = [and_(Task.assignee_role == g.role, Task.department_id == g.department_id)
             if g.department_id else Task.assignee_role == g.role for g in principal.grants]
    if principal.scope is None:
        return or_(Task.assignee_user_id == principal.user_id, *roles, not_sensitive)
    visible = visible_patient_filter(principal)
    assert visible is not None
    return or_(Task.assignee_user_id == principal.user_id, *roles,
               and_(not_sensitive, or_(
                   Task.department_id.in_(principal.scope),
                   and_(Task.department_id.is_(None), Task.patient_id.in_(visible)))))


def _seen(session: Session, condition: ColumnElement[bool] | None) -> set[int]:
    query = select(Task.id)
    return set(session.scalars(query if condition is None else query.where(condition)))


def _agrees(session: Session) -> dict[str, set[int]]:
    """Every principal sees, through the new condition, what the stay look-up says."""
    seen = {}
    for principal in PEOPLE:
        new = _seen(session, task_visibility(principal))
        assert new == _seen(session, _old_condition(principal)), principal.username
        seen[principal.username] = new
    return seen


@pytest.fixture
def hospital(engine: Engine) -> Iterator[Engine]:
    """Cardiology (two wards), psychiatry (sensitive, one ward), orthopaedics; patients P0–P11
    with a stay each spread over them (one ward-less), tasks of every kind of assignment."""
    places = [(d, w) for d, wards in WARDS.items() for w in wards] + [("ortho", None)]
    with transaction(engine) as session:
        session.add_all(Department(id=d, name={"zh-CN": d, "en": d}, sensitive=d == "psychiatry")
                        for d in WARDS)
        session.flush()
        session.add_all(Department(id=w, name={"zh-CN": w, "en": w}, kind="ward", parent_id=d)
                        for d, wards in WARDS.items() for w in wards)
        session.add_all(Patient(id=f"P{i}", mrn=f"M{i}", name=f"患者{i}") for i in range(12))
        session.flush()
        session.add_all(Encounter(id=f"E{i}", patient_id=f"P{i}", type="inpatient",
                                  department_id=places[i % len(places)][0],
                                  ward_id=places[i % len(places)][1]) for i in range(12))
        session.flush()
        assignments = [Assignee(None, "doctor", "cardio_w1"), Assignee(None, "nurse", "psy_w1"),
                       Assignee(None, "head_nurse", "cardio"), Assignee(None, "nurse", "ortho"),
                       Assignee(None, "doctor", None), Assignee(None, "px_office", "ortho")]
        for i in range(12):
            for n, assignee in enumerate(assignments):
                create_task(session, title="随访", assignee=assignee, actor="test",
                            patient_id=f"P{i}", encounter_id=f"E{i}" if n != 4 or i % 2 else None,
                            due_at=now_utc() + timedelta(hours=n))
    yield engine


def test_the_condition_looks_up_no_stay_per_task(engine: Engine) -> None:
    """Hospital-wide staff: no ``encounters`` at all; scoped staff: only the patient's stays
    for a task of no department (an uncorrelated set, not a look-up per task)."""
    for principal in (PX, WARD_NURSE, HEAD, PSY_DOCTOR):
        condition = task_visibility(principal)
        assert condition is not None
        sql = str(condition.compile(engine, compile_kwargs={"literal_binds": True}))
        assert sql.count("FROM encounters") == (0 if principal.scope is None else 1), sql
        assert "tasks.encounter_id)" not in sql and "= tasks.encounter_id" not in sql


def test_every_view_sees_what_the_stay_lookup_says(hospital: Engine) -> None:
    with transaction(hospital) as session:
        seen = _agrees(session)
        psy_stay = Task.encounter_id.in_(select(Encounter.id).where(
            Encounter.department_id == "psychiatry"))
        # a psychiatry stay's task assigned within cardiology: hidden from cardiology and the
        # PX office, whose role queues it is not in
        in_cardio = set(session.scalars(select(Task.id).where(
            psy_stay, Task.department_id == "cardio_w1")))
        assert in_cardio and not in_cardio & (seen["px"] | seen["nurse7"] | seen["head8"])
        in_psy = set(session.scalars(select(Task.id).where(psy_stay,
                                                           Task.department_id == "psy_w1")))
        assert in_psy and in_psy <= seen["doc10"] & seen["nurse9"]
        copies = session.execute(select(Task.encounter_id, Task.stay_department_id,
                                        Task.stay_ward_id)).all()
        stays = {e.id: (e.department_id, e.ward_id) for e in session.scalars(select(Encounter))}
        assert all((dept, ward) == (stays[enc] if enc else (None, None))
                   for enc, dept, ward in copies)


def _his(session: Session, n: int, encounter: str, department: str, ward: str | None) -> None:
    payload: dict[str, Any] = {"encounter_id": encounter, "patient_id": f"P{encounter[1:]}",
                               "type": "inpatient", "department_id": department}
    if ward is not None:
        payload["ward_id"] = ward
    status, body = ingest(session, {"event_id": f"transfer-{n}", "type": "encounter.admitted",
                                    "occurred_at": now_utc().isoformat(), "payload": payload})
    assert status == 200, body


def test_a_stay_moved_into_or_out_of_psychiatry_moves_its_tasks(hospital: Engine) -> None:
    """Tasks made before the transfer follow the stay (the HIS's event, and a plain UPDATE)."""
    with transaction(hospital) as session:
        before = _agrees(session)
        cardio_task = session.scalars(select(Task.id).where(
            Task.encounter_id == "E0", Task.department_id == "cardio_w1")).one()
        assert cardio_task in before["px"] and cardio_task in before["nurse7"]
        _his(session, 1, "E0", "psychiatry", "psy_w1")  # cardiology → psychiatry
        _his(session, 2, "E2", "cardio", "cardio_w2")  # psychiatry → cardiology
    with transaction(hospital) as session:
        after = _agrees(session)
        assert cardio_task not in after["px"] and cardio_task not in after["nurse7"]
        assert after != before
        session.execute(update(Encounter).where(Encounter.id == "E0")
                        .values(department_id="cardio", ward_id=None))
        session.execute(update(Encounter).where(Encounter.id == "E5")
                        .values(ward_id="psy_w1"))  # orthopaedics, in psychiatry's ward
        back = _agrees(session)
        assert cardio_task in back["px"]


def test_a_department_marked_sensitive_or_not(hospital: Engine) -> None:
    """Nothing on the tasks changes: the condition reads ``departments`` when it runs."""
    with transaction(hospital) as session:
        before = _agrees(session)
        session.get(Department, "cardio").sensitive = True  # type: ignore[union-attr]
        session.get(Department, "psychiatry").sensitive = False  # type: ignore[union-attr]
        session.flush()
        swapped = _agrees(session)
        assert swapped["px"] != before["px"] and swapped["nurse7"] != before["nurse7"]
        session.execute(update(Department).values(sensitive=False))
        assert _agrees(session)["px"] == _seen(session, None)


def test_tasks_written_by_plain_sql_and_relinked_get_their_stay(hospital: Engine) -> None:
    with transaction(hospital) as session:
        session.execute(insert(Task), [
            {"title": "t", "kind": "todo", "patient_id": "P2", "encounter_id": "E2",
             "department_id": "ortho", "assignee_role": "nurse", "priority": "normal",
             "status": "open", "escalation": {}, "details": {}, "created_at": now_utc()}])
        row = session.execute(select(Task.id, Task.stay_department_id, Task.stay_ward_id)
                              .where(Task.title == "t")).one()
        assert (row.stay_department_id, row.stay_ward_id) == ("psychiatry", "psy_w1")
        session.execute(update(Task).where(Task.id == row.id).values(encounter_id="E0"))
        assert session.execute(select(Task.stay_department_id, Task.stay_ward_id)
                               .where(Task.id == row.id)).one() == ("cardio", "cardio_w1")
        session.execute(update(Task).where(Task.id == row.id).values(encounter_id=None))
        assert session.execute(select(Task.stay_department_id, Task.stay_ward_id)
                               .where(Task.id == row.id)).one() == (None, None)
        _agrees(session)


def test_the_migration_copies_the_stored_tasks(hospital: Engine) -> None:
    """Tasks stored before migration 0040 get their stay's copy when it installs the triggers."""
    with transaction(hospital) as session:
        connection = session.connection()
        task_stay.remove(connection)
        session.execute(update(Task).values(stay_department_id=None, stay_ward_id=None))
        task_stay.install(connection)
        assert session.scalar(text("SELECT count(*) FROM tasks WHERE encounter_id IS NOT NULL "
                                   "AND stay_department_id IS NULL")) == 0
        _agrees(session)
