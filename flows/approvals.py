"""Approvals: single, all (会签), any (或签), N of M; reject back to an earlier step (驳回);
add a signer (加签).

Each approver gets a task (kind ``approval``, ``source_ref = flow_step:<step run id>``); the
step run's ``state`` counts decisions::

    {"mode": "n_of_m", "required": 2, "tasks": [11, 12, 13], "approved": [11], "rejected": []}
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from careloop.engine.domain import Task
from careloop.engine.i18n import pick
from careloop.engine.tasks import add_history, complete_task, create_task, resolve_assignee
from careloop.flows.models import FlowRun, StepRun
from careloop.flows.runtime import Exec, FlowError, after, history, resume, spec_of


def _task(session: Session, run: FlowRun, step_run: StepRun, title: dict[str, str],
          rule: dict[str, Any], n: int) -> int:
    state = step_run.state or {}
    assignee = resolve_assignee(session, rule, patient_id=run.patient_id,
                                encounter_id=run.encounter_id)
    task, _ = create_task(session, title=pick(title, "zh-CN")[:255], assignee=assignee,
                          actor="flows", patient_id=run.patient_id,
                          encounter_id=run.encounter_id, kind="approval", source_type="flow",
                          source_ref=f"flow_step:{step_run.id}",
                          idempotency_key=f"flow_step:{step_run.id}:approver:{n}",
                          due_at=after(state["due"]) if state.get("due") else None,
                          escalation={"chain": list(state.get("escalate_to", [])), "level": 0},
                          details={"title": title, "run_id": run.id, "step": step_run.step_key})
    return task.id


def open_approval(x: Exec) -> None:
    title = dict(x.step.get("task_title") or x.step.get("title") or x.spec.title)
    mode = x.step.get("mode", "single")
    # Set before the tasks are created: they read ``due`` and ``escalate_to`` from it.
    x.step_run.state = {"due": x.step.get("due"),
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


def _step_run_of(session: Session, task: Task) -> StepRun:
    if task.kind != "approval" or not (task.source_ref or "").startswith("flow_step:"):
        raise FlowError(f"task {task.id} is not a flow approval")
    step_run = session.get(StepRun, int(str(task.source_ref).split(":")[1]))
    if step_run is None or step_run.status != "waiting":
        raise FlowError(f"task {task.id}: its approval is no longer open")
    return step_run


def decide(session: Session, task_id: int, decision: str, *, actor: str,
           notes: str | None = None) -> str:
    """Record ``approve`` or ``reject`` on an approval task; returns the approval's state:
    ``open``, ``approved`` or ``rejected``."""
    if decision not in ("approve", "reject"):
        raise FlowError(f"unknown decision '{decision}' (approve or reject)")
    task = session.get(Task, task_id)
    if task is None or task.status not in ("open", "in_progress"):
        raise FlowError(f"task {task_id} is not open")
    step_run = _step_run_of(session, task)
    field = "approved" if decision == "approve" else "rejected"
    complete_task(session, task, actor=actor, outcome=field, notes=notes)
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
            {"task_id": task.id, "actor": actor, "result": result})
    if result == "open":
        return result
    for other in state["tasks"]:
        open_task = session.get(Task, other)
        if open_task is not None and open_task.status in ("open", "in_progress"):
            open_task.status = "cancelled"
            add_history(session, open_task, "flows", "cancelled", {"reason": result})
    step = spec_of(session, run).step(step_run.step_key)
    target = step.next if result == "approved" else step.get("on_reject", step.next)
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
