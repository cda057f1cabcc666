"""Approvals: single, all (会签), any (或签), N of M; reject back to an earlier step (驳回);
add a signer (加签).

Each approver gets a task (kind ``approval`` unless the step names a ``task_kind``,
``source_ref = flow_step:<step run id>``); the step run's ``state`` counts decisions::

    {"mode": "n_of_m", "required": 2, "tasks": [11, 12, 13], "approved": [11], "rejected": []}

An approver without a ``department`` is looked for in the run's ``department`` (a flow sets it,
e.g. the complaint's department), else in the patient's encounter; an escalation chain entry
without one stays in the task's department.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from careloop.engine.domain import Department, Task
from careloop.engine.i18n import pick
from careloop.engine.tasks import add_history, complete_task, create_task, resolve_assignee
from careloop.flows.models import FlowRun, StepRun
from careloop.flows.runtime import Exec, FlowError, after, history, resume, spec_of

DECISIONS = {"approve": "approved", "reject": "rejected"}  # decision → the task's outcome
OPEN = ("open", "in_progress")


def _rule_in_department(rule: dict[str, Any], department: Any) -> dict[str, Any]:
    if "role" in rule and not rule.get("department") and isinstance(department, str) \
            and department:
        return {**rule, "department": department}
    return rule


def _run_department(session: Session, run: FlowRun) -> str | None:
    """The run's ``department`` when it names a known department (a complaint may name one in
    free text: then the patient's encounter decides, as for any approver)."""
    value = (run.context or {}).get("department")
    if isinstance(value, str) and value and session.get(Department, value) is not None:
        return value
    return None


def _task(session: Session, run: FlowRun, step_run: StepRun, title: dict[str, str],
          rule: dict[str, Any], n: int) -> int:
    state = step_run.state or {}
    rule = _rule_in_department(rule, _run_department(session, run))
    assignee = resolve_assignee(session, rule, patient_id=run.patient_id,
                                encounter_id=run.encounter_id)
    chain = [_rule_in_department(dict(r), assignee.department_id)
             for r in state.get("escalate_to", [])]
    task, _ = create_task(session, title=pick(title, "zh-CN")[:255], assignee=assignee,
                          actor="flows", patient_id=run.patient_id,
                          encounter_id=run.encounter_id, kind=state.get("kind") or "approval",
                          source_type="flow", source_ref=f"flow_step:{step_run.id}",
                          idempotency_key=f"flow_step:{step_run.id}:approver:{n}",
                          due_at=after(state["due"]) if state.get("due") else None,
                          escalation={"chain": chain, "level": 0},
                          details={"title": title, "run_id": run.id, "step": step_run.step_key,
                                   "flow": run.flow_key})
    return task.id


def open_approval(x: Exec) -> None:
    title = dict(x.step.get("task_title") or x.step.get("title") or x.spec.title)
    mode = x.step.get("mode", "single")
    # Set before the tasks are created: they read ``due``, ``kind`` and ``escalate_to`` from it.
    x.step_run.state = {"due": x.step.get("due"), "kind": x.step.get("task_kind"),
                        "escalate_to": [dict(r) for r in x.step.get("escalate_to") or []]}
    approvers = list(x.step.get("approvers"))
    if mode == "single":
        approvers = approvers[:1]
    tasks = [_task(x.session, x.run, x.step_run, title, dict(rule), n)
             for n, rule in enumerate(approvers)]
    required = {"single": 1, "any": 1, "all": len(tasks)}.get(mode, x.step.get("required", 1))
    x.step_run.status, x.step_run.waiting_for = "waiting", "approval"
    x.step_run.state = {**x.step_run.state, "mode": mode, "required": required,
                        "tasks": tasks, "approved": [], "rejected": [], "title": title}
    x.history("approval_opened", {"tasks": tasks, "mode": mode})


def approval_of(session: Session, task: Task) -> StepRun | None:
    """The open approval step a task decides, or ``None`` when the task is no approval (or its
    approval is closed)."""
    ref = task.source_ref or ""
    if not ref.startswith("flow_step:") or not ref.split(":")[1].isdigit():
        return None
    step_run = session.get(StepRun, int(ref.split(":")[1]))
    if step_run is None or step_run.waiting_for != "approval" or step_run.status != "waiting":
        return None
    return step_run


def is_approval(session: Session, task: Task) -> bool:
    """True for a task an approval step created (open or not)."""
    ref = task.source_ref or ""
    if not ref.startswith("flow_step:") or not ref.split(":")[1].isdigit():
        return False
    step_run = session.get(StepRun, int(ref.split(":")[1]))
    return step_run is not None and step_run.step_type == "approval"


def _step_run_of(session: Session, task: Task) -> StepRun:
    if not is_approval(session, task):
        raise FlowError(f"task {task.id} is not a flow approval")
    step_run = approval_of(session, task)
    if step_run is None:
        raise FlowError(f"task {task.id}: its approval is no longer open")
    return step_run


def reject_targets(session: Session, task: Task) -> list[str]:
    """The steps a rejection of this approval task may go back to (驳回): every step of the
    flow before the approval, and the approval itself (its ``on_reject`` first)."""
    step_run = _step_run_of(session, task)
    run = session.get(FlowRun, step_run.run_id)
    assert run is not None  # a step run always has its run (foreign key)
    spec = spec_of(session, run)
    step = spec.step(step_run.step_key)
    keys = [s.key for s in spec.steps[:step.index + 1]]
    first = step.get("on_reject")
    return ([first] if first in keys else []) + [k for k in keys if k != first]


def step_labels(session: Session, task: Task) -> dict[str, dict[str, str]]:
    """Each step's label (its ``title``, else its ``task_title``) in the task's flow version."""
    step_run = _step_run_of(session, task)
    run = session.get(FlowRun, step_run.run_id)
    assert run is not None  # foreign key
    return {s.key: dict(s.get("title") or s.get("task_title") or {})
            for s in spec_of(session, run).steps}


def decide(session: Session, task_id: int, decision: str, *, actor: str,
           notes: str | None = None, back_to: str | None = None) -> str:
    """Record ``approve`` or ``reject`` on an approval task; returns the approval's state:
    ``open``, ``approved`` or ``rejected``. A rejection goes back to ``back_to`` when given (a
    step at or before the approval), else to the step's ``on_reject`` (else its ``next``)."""
    if decision not in DECISIONS:
        raise FlowError(f"unknown decision '{decision}' (approve or reject)")
    task = session.get(Task, task_id)
    if task is None or task.status not in OPEN:
        raise FlowError(f"task {task_id} is not open")
    step_run = _step_run_of(session, task)
    if back_to is not None and (decision != "reject"
                                or back_to not in reject_targets(session, task)):
        raise FlowError(f"task {task_id}: cannot go back to step '{back_to}'")
    complete_task(session, task, actor=actor, outcome=DECISIONS[decision], notes=notes)
    field = "approved" if decision == "approve" else "rejected"
    state = dict(step_run.state)
    state[field] = [*state[field], task.id]
    step_run.state = state
    total, required = len(state["tasks"]), int(state["required"])
    approved, rejected = len(state["approved"]), len(state["rejected"])
    result = ("approved" if approved >= required
              else "rejected" if rejected > total - required else "open")
    run = session.get(FlowRun, step_run.run_id)
    assert run is not None  # a step run always has its run (foreign key)
    history(session, run, step_run.step_key, f"approval_{decision}",
            {"task_id": task.id, "actor": actor, "result": result, "back_to": back_to})
    if result == "open":
        return result
    for other in state["tasks"]:
        open_task = session.get(Task, other)
        if open_task is not None and open_task.status in OPEN:
            open_task.status = "cancelled"
            add_history(session, open_task, "flows", "cancelled", {"reason": result})
    step = spec_of(session, run).step(step_run.step_key)
    target = (step.next if result == "approved"
              else back_to or step.get("on_reject", step.next))
    resume(session, step_run, target, {f"{step.key}_result": result})
    return result


def add_signer(session: Session, step_run_id: int, rule: dict[str, Any], *, actor: str) -> int:
    """加签: one more approver on an open approval; with ``all`` they must approve too."""
    step_run = session.get(StepRun, step_run_id)
    if step_run is None or step_run.status != "waiting" or step_run.waiting_for != "approval":
        raise FlowError(f"step run {step_run_id} is not an open approval")
    run = session.get(FlowRun, step_run.run_id)
    assert run is not None  # foreign key
    state = dict(step_run.state)
    task_id = _task(session, run, step_run, state["title"], rule, len(state["tasks"]))
    state["tasks"] = [*state["tasks"], task_id]
    if state["mode"] == "all":
        state["required"] = len(state["tasks"])
    step_run.state = state
    history(session, run, step_run.step_key, "signer_added", {"task_id": task_id, "actor": actor})
    return task_id
