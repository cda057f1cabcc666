"""Approvals: any (或签), all (会签), N of M, reject back (驳回), add a signer (加签)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.flows.approvals import add_signer, decide
from careloop.flows.models import FlowRun, StepRun
from careloop.flows.runtime import FlowError, start


def _setup(bundles: Engine, send: Any, helpers: Any) -> None:
    for n, (role, dept) in enumerate([("dept_director", "cardiology"), ("dept_director", "icu"),
                                      ("pharmacist", "pharmacy"), ("pharmacy_head", "pharmacy"),
                                      ("pharmacist", "icu"), ("nurse", "cardiology")]):
        helpers.grant(bundles, f"user{n}", role, dept)
    helpers.patient(send)
    send("enc-1", "encounter.admitted", {"encounter_id": "E1", "patient_id": "P1",
                                         "type": "inpatient", "department_id": "cardiology"})


def _start(bundles: Engine, urgent: bool) -> int:
    with transaction(bundles) as session:
        return start(session, flow_key="cross_department_approval", patient_id="P1",
                     encounter_id="E1", context={"urgent": urgent}, idempotency_key=f"x{urgent}")


def _open(bundles: Engine, helpers: Any) -> list[Any]:
    return [t for t in helpers.tasks(bundles) if t.kind == "approval" and t.status == "open"]


def _step(bundles: Engine, run_id: int) -> str:
    with transaction(bundles) as session:
        return session.scalars(select(StepRun.step_key).where(
            StepRun.run_id == run_id, StepRun.status == "waiting")).one()


def test_any_one_director_then_two_of_three_pharmacists(bundles: Engine, send: Any,
                                                        helpers: Any) -> None:
    _setup(bundles, send, helpers)
    run_id = _start(bundles, urgent=True)
    assert _step(bundles, run_id) == "any_director" and len(_open(bundles, helpers)) == 2
    with transaction(bundles) as session:
        assert decide(session, _open(bundles, helpers)[1].id, "approve", actor="u") == "approved"
    assert _step(bundles, run_id) == "pharmacy" and len(_open(bundles, helpers)) == 3
    first, second, _third = _open(bundles, helpers)
    with transaction(bundles) as session:
        assert decide(session, first.id, "approve", actor="u") == "open"
    with transaction(bundles) as session:
        assert decide(session, second.id, "approve", actor="u") == "approved"
    assert _open(bundles, helpers) == []
    with transaction(bundles) as session:
        assert session.get(FlowRun, run_id).status == "completed"  # type: ignore[union-attr]


def test_all_directors_with_an_added_signer_and_reject_back(bundles: Engine, send: Any,
                                                            helpers: Any) -> None:
    _setup(bundles, send, helpers)
    run_id = _start(bundles, urgent=False)
    assert _step(bundles, run_id) == "all_directors"
    with transaction(bundles) as session:
        step_run = session.scalars(select(StepRun).where(StepRun.run_id == run_id,
                                                         StepRun.status == "waiting")).one()
        add_signer(session, step_run.id, {"role": "nurse"}, actor="admin")
    tasks = _open(bundles, helpers)
    assert len(tasks) == 3
    for task in tasks[:2]:
        with transaction(bundles) as session:
            assert decide(session, task.id, "approve", actor="u") == "open"  # 加签 must sign
    with transaction(bundles) as session:
        assert decide(session, tasks[2].id, "approve", actor="u") == "approved"
    pharmacy = _open(bundles, helpers)
    for task in pharmacy[:2]:
        with transaction(bundles) as session:
            result = decide(session, task.id, "reject", actor="u")
    assert result == "rejected"
    assert _step(bundles, run_id) == "all_directors"  # 驳回 → request → route → approval again
    with pytest.raises(FlowError) as exc, transaction(bundles) as session:
        decide(session, pharmacy[0].id, "approve", actor="u")
    assert "not open" in str(exc.value)
