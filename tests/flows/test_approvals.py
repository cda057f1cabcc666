"""Approvals: any (或签), all (会签), N of M, reject back (驳回), add a signer (加签)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select

from careloop.engine.db import transaction
from careloop.engine.domain import Task
from careloop.flows.approvals import add_signer, approval_of, decide, is_approval, reject_targets
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


def test_reject_back_to_a_named_step_and_only_to_an_earlier_one(bundles: Engine, send: Any,
                                                                 helpers: Any) -> None:
    _setup(bundles, send, helpers)
    run_id = _start(bundles, urgent=True)
    with transaction(bundles) as session:
        decide(session, _open(bundles, helpers)[0].id, "approve", actor="u")
    pharmacy = _open(bundles, helpers)
    with transaction(bundles) as session:
        targets = reject_targets(session, session.get(Task, pharmacy[0].id))  # type: ignore[arg-type]
    # on_reject first, then every step up to the approval itself
    assert targets == ["request", "route", "any_director", "all_directors", "pharmacy"]
    with pytest.raises(FlowError) as exc, transaction(bundles) as session:
        decide(session, pharmacy[0].id, "reject", actor="u", back_to="done")
    assert "cannot go back to step 'done'" in str(exc.value)
    with pytest.raises(FlowError) as exc, transaction(bundles) as session:
        decide(session, pharmacy[0].id, "approve", actor="u", back_to="request")
    assert "cannot go back" in str(exc.value)
    for task in pharmacy[:2]:
        with transaction(bundles) as session:
            result = decide(session, task.id, "reject", actor="u", back_to="any_director")
    # 驳回 to the named step (not on_reject's "request"): the directors are asked again at once
    assert result == "rejected" and _step(bundles, run_id) == "any_director"
    with transaction(bundles) as session:
        task = session.get(Task, pharmacy[1].id)
        assert task is not None and task.outcome == "rejected"
        assert approval_of(session, task) is None and is_approval(session, task)


def test_an_approval_goes_to_the_runs_department_with_its_own_task_kind(
        bundles: Engine, send: Any, helpers: Any) -> None:
    """The complaint flow sets ``department`` (the complaint's): the reply goes to that
    department's head nurse although the patient stayed elsewhere, as a ``complaint_response``;
    the escalation chain stays in that department; the PX review goes to the PX office."""
    helpers.grant(bundles, "hn_cardio", "head_nurse", "cardiology")
    helpers.grant(bundles, "hn_psy", "head_nurse", "psychiatry")
    helpers.grant(bundles, "px", "px_office", None)
    helpers.patient(send)
    send("enc-1", "encounter.admitted", {"encounter_id": "E1", "patient_id": "P1",
                                         "type": "inpatient", "department_id": "psychiatry"})
    with transaction(bundles) as session:
        run_id = start(session, flow_key="complaint_handling", patient_id="P1",
                       context={"_event": {"submission_id": 7, "department_id": "psychiatry",
                                           "answers": {"department": "cardiology"}}},
                       idempotency_key="c7")
    [reply] = [t for t in helpers.tasks(bundles) if t.status == "open"]
    assert (reply.kind, reply.department_id) == ("complaint_response", "cardiology")
    assert [r.get("department") for r in reply.escalation["chain"]] == ["cardiology"] * 2
    with transaction(bundles) as session:
        assert decide(session, reply.id, "approve", actor="hn_cardio") == "approved"
    [review] = [t for t in helpers.tasks(bundles) if t.status == "open"]
    assert (review.kind, review.assignee_role) == ("approval", "px_office")
    with transaction(bundles) as session:
        assert decide(session, review.id, "reject", actor="px") == "rejected"
        run = session.get(FlowRun, run_id)
        assert run is not None and run.status == "running"
    [again] = [t for t in helpers.tasks(bundles) if t.status == "open"]
    assert again.kind == "complaint_response" and again.id != reply.id


def test_a_department_named_in_free_text_falls_back_to_the_encounter(
        bundles: Engine, send: Any, helpers: Any) -> None:
    helpers.grant(bundles, "hn_psy", "head_nurse", "psychiatry")
    helpers.patient(send)
    send("enc-1", "encounter.admitted", {"encounter_id": "E1", "patient_id": "P1",
                                         "type": "inpatient", "department_id": "psychiatry"})
    with transaction(bundles) as session:
        start(session, flow_key="complaint_handling", patient_id="P1",
              context={"_event": {"submission_id": 8, "answers": {"department": "心内科"}}},
              idempotency_key="c8")
    [reply] = [t for t in helpers.tasks(bundles) if t.status == "open"]
    assert (reply.kind, reply.department_id) == ("complaint_response", "psychiatry")
