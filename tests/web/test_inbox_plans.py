"""The inbox and patient search stay index lookups at volume (issue 18 point 5).

A generated hospital (20,000 patients, stays and tasks on PostgreSQL; 5,000 on SQLite, whose
planner needs fewer rows to prefer an index) is analysed, then every inbox view and the patient
search are planned. PostgreSQL's ``EXPLAIN`` must show no sequential scan over ``tasks`` or
``patients`` (for the search with sequential scans priced out: at this size a scan is cheaper,
and the check is that the trigram indexes can serve it). SQLite's ``EXPLAIN QUERY PLAN`` must
search ``tasks`` through an index for the personal views (mine, overdue). The rows are written
in bulk (a test fixture, not demo data).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, Select, insert, text
from sqlalchemy.orm import Session

from careloop.engine.db import transaction
from careloop.engine.domain import Department, Encounter, Patient, Task, User
from careloop.web import console
from careloop.web.permissions import Grant, Principal

T0 = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
DEPARTMENTS = [f"dept{i:02d}" for i in range(20)]
BIG = ("tasks", "patients")


@pytest.fixture
def hospital(engine: Engine) -> Iterator[Engine]:
    n = 20_000 if engine.dialect.name == "postgresql" else 5_000
    rnd = random.Random(18)
    with engine.begin() as conn:
        conn.execute(insert(Department), [{"id": d, "name": {"zh-CN": d, "en": d}}
                                          for d in DEPARTMENTS])
        conn.execute(insert(User), [{"id": i, "username": f"nurse{i}", "display_name": f"护士{i}",
                                     "locale": "zh-CN"} for i in range(1, 401)])
        conn.execute(insert(Patient), [{
            "id": f"P{i:07d}", "mrn": f"M{i:08d}", "name": f"患者{i}", "locale": "zh-CN",
            "attributes": {}, "consents": {}, "created_at": T0, "updated_at": T0}
            for i in range(n)])
        conn.execute(insert(Encounter), [{
            "id": f"E{i:07d}", "patient_id": f"P{i:07d}", "type": "inpatient",
            "department_id": rnd.choice(DEPARTMENTS), "status": "discharged",
            "diagnoses": {}, "procedures": {}, "created_at": T0} for i in range(n)])
        conn.execute(insert(Task), [{
            "title": "出院第7天电话随访", "kind": "phone_followup", "patient_id": f"P{i:07d}",
            "encounter_id": f"E{i:07d}", "department_id": rnd.choice(DEPARTMENTS),
            "assignee_user_id": rnd.randint(1, 400) if rnd.random() < 0.4 else None,
            "assignee_role": "nurse", "priority": "normal",
            "status": "open" if rnd.random() < 0.2 else "done",
            "due_at": T0 + timedelta(minutes=rnd.randint(-20_000, 20_000)),
            "escalation": {}, "details": {}, "created_at": T0} for i in range(n)])
        conn.execute(text("ANALYZE"))
    yield engine
    with engine.begin() as conn:  # 20,000 rows: without each row's foreign-key checks
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL session_replication_role = replica"))
        for table in ("tasks", "encounters", "patients", "users", "departments"):
            conn.execute(text(f"DELETE FROM {table}"))


NURSE = Principal(user_id=7, username="nurse7", display_name="护士7",
                  grants=(Grant(role="nurse", department_id="dept03"),),
                  scope=frozenset({"dept03"}))
PX_OFFICE = Principal(user_id=8, username="px", display_name="患者体验办",
                      grants=(Grant(role="px_office", department_id=None),), scope=None)


def _sql(engine: Engine, query: Select[Any]) -> str:
    return str(query.compile(engine, compile_kwargs={"literal_binds": True}))


def _explain(session: Session, query: Select[Any]) -> dict[str, Any]:
    """PostgreSQL's plan of ``query`` with its parameters bound by the driver, as it runs."""
    compiled = query.compile(session.get_bind(), compile_kwargs={"render_postcompile": True})
    result = session.connection().exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled),
                                                  compiled.params)
    root = result.scalar()
    plan: dict[str, Any] = (json.loads(root) if isinstance(root, str) else root)[0]["Plan"]
    return plan


def _seq_scans(node: dict[str, Any]) -> list[str]:
    found = [f"{node['Relation Name']}: {node.get('Filter')}"] \
        if node.get("Node Type") == "Seq Scan" and node.get("Relation Name") in BIG else []
    for child in node.get("Plans", []):
        found += _seq_scans(child)
    return found


def _plans(engine: Engine) -> dict[str, Select[Any]]:
    queries = {f"{who}:{view}": console.task_query(principal, view)
               for who, principal in (("nurse", NURSE), ("px", PX_OFFICE))
               for view in ("mine", "department", "overdue", "done")}
    for text_ in ("M00001234", "患者4321", "P00012"):
        search = console.patient_search_query(NURSE, text_)
        assert search is not None
        queries[f"search:{text_}"] = search
    return queries


def test_inbox_views_and_patient_search_use_indexes(hospital: Engine) -> None:
    engine = hospital
    with transaction(engine) as session:
        if engine.dialect.name == "postgresql":
            for name, query in _plans(engine).items():
                if name.startswith("search:"):
                    # at 20,000 rows a scan is cheaper than three trigram lookups, so the
                    # planner is asked for its best plan without one: a plan that still scans
                    # would mean no index can serve the search
                    session.execute(text("SET LOCAL enable_seqscan = off"))
                assert _seq_scans(_explain(session, query)) == [], name
        else:
            failures: list[tuple[str, list[str]]] = []
            for name, query in _plans(engine).items():
                if not name.endswith((":mine", ":overdue")):
                    # a department's whole list and containment search scan on SQLite, the
                    # single-hospital database (docs/performance.md); PostgreSQL is checked above
                    continue
                details = [row[-1] for row in session.execute(
                    text("EXPLAIN QUERY PLAN " + _sql(engine, query))).all()]
                tasks = [d for d in details if " tasks" in d]
                if not (tasks and all("INDEX" in d for d in tasks)):
                    failures.append((name, details))
            assert not failures, [(n, d[0]) for n, d in failures]
