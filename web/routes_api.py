"""The JSON API under ``/api/v1`` (described by ``/api/v1/openapi.json``).

Authentication is the same server-side session as the console (cookie), and state-changing calls
send the session's CSRF token in ``X-CSRF-Token`` (``GET /api/v1/me`` returns it).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from careloop.engine.db import transaction
from careloop.engine.domain import Patient, Task
from careloop.web import admin, console
from careloop.web.api_models import (
    COMMON_ERRORS,
    NOT_FOUND,
    AuditEntry,
    DecisionOut,
    ErrorBody,
    InboxTask,
    Me,
    PatientHit,
    PatientRecord,
    RevealedPatient,
    TaskOut,
    errors,
)
from careloop.web.deps import current, record, request_id, require, require_user
from careloop.web.permissions import (
    AUDIT_VIEW,
    MAX_ID,
    PATIENT_EXPORT,
    PATIENT_REVEAL,
    PATIENT_VIEW,
    TASK_WORK,
    Principal,
    can_see_task,
    hidden_stays,
)
from careloop.web.scoping import patient_level

router = APIRouter(prefix="/api/v1", tags=["console"], responses=COMMON_ERRORS)

NEEDS_AUDIT_VIEW = Depends(require(AUDIT_VIEW))
NEEDS_PATIENT_EXPORT = Depends(require(PATIENT_EXPORT))
NEEDS_PATIENT_REVEAL = Depends(require(PATIENT_REVEAL))
NEEDS_PATIENT_VIEW = Depends(require(PATIENT_VIEW))
NEEDS_TASK_WORK = Depends(require(TASK_WORK))
SIGNED_IN = Depends(require_user)

Outcome = Literal["reached_ok", "reached_problem", "not_reached", "wrong_number", "declined"]


class CompleteTask(BaseModel):
    outcome: Outcome
    notes: str | None = Field(default=None, max_length=2000)


class Signer(BaseModel):
    """Who to add (加签): a user by username, or a role (within a department)."""

    user: str | None = Field(default=None, min_length=1, max_length=64)
    role: str | None = Field(default=None, min_length=1, max_length=32)
    department: str | None = Field(default=None, min_length=1, max_length=64)

    def rule(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class Decision(BaseModel):
    """An approval decision: ``approve``; ``reject`` (optionally ``back_to`` a step: 驳回);
    ``add_signer`` with a ``signer`` (加签)."""

    decision: Literal["approve", "reject", "add_signer"]
    notes: str | None = Field(default=None, max_length=2000)
    back_to: str | None = Field(default=None, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")
    signer: Signer | None = None


class Reveal(BaseModel):
    reason: str = Field(min_length=1, max_length=200, pattern=r"\S")


@router.get("/me", response_model=Me)
def me(request: Request, principal: Principal = SIGNED_IN) -> dict[str, Any]:
    cur = current(request)
    return {"username": principal.username, "display_name": principal.display_name,
            "roles": [{"role": g.role, "department": g.department_id} for g in principal.grants],
            "permissions": sorted(principal.permissions),
            "csrf_token": cur.csrf_token if cur else None}


@router.get("/tasks", response_model=list[InboxTask])
def tasks(view: Literal["mine", "department", "overdue", "done"] = "mine",
          priority: Literal["urgent", "high", "normal", "low"] | None = None,
          principal: Principal = NEEDS_TASK_WORK) -> list[dict[str, Any]]:
    with transaction() as session:
        return console.inbox(session, principal, view, priority)


def _task(session: Any, task_id: int, principal: Principal) -> Task:
    task = session.get(Task, task_id)
    if task is None:
        raise HTTPException(status_code=404)
    if task.patient_id is None and not can_see_task(session, principal, task_id):
        raise HTTPException(status_code=403)
    return task  # type: ignore[no-any-return]


@router.get("/tasks/{task_id}", response_model=TaskOut, responses=NOT_FOUND)
@patient_level("task_id", via="task")
def task(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
         principal: Principal = NEEDS_TASK_WORK) -> dict[str, Any]:
    """One task (a patient's task is audited as ``patient.view``, like the task page)."""
    with transaction() as session:
        item = _task(session, task_id, principal)
        if item.patient_id is not None:
            record(request, principal, "patient.view", session=session, object_type="task",
                   object_id=str(task_id), patient_id=item.patient_id, details={"via": "api"})
        return console.task_json(item)


@router.post("/tasks/{task_id}/complete", response_model=TaskOut, responses=errors(NOT_FOUND, {
    409: {"model": ErrorBody, "description": "the task is closed, or an approval (decide it "
                                             "instead; code ``task.decide-instead``)"}}))
@patient_level("task_id", via="task")
def task_complete(request: Request, body: CompleteTask,
                  task_id: int = Path(ge=1, le=MAX_ID),
                  principal: Principal = NEEDS_TASK_WORK) -> dict[str, Any] | JSONResponse:
    with transaction() as session:
        item = _task(session, task_id, principal)
        try:
            console.complete(session, item, principal, body.outcome, body.notes)
        except console.DecideInstead:
            return _refused(request, 409, "task.decide-instead",
                            f"task {task_id} is an approval: decide it with POST "
                            f"/api/v1/tasks/{task_id}/decision (approve or reject)")
        except console.ActionRefused as exc:
            raise HTTPException(status_code=409, detail="task is closed") from exc
        record(request, principal, "task.complete", session=session, object_type="task",
               object_id=str(task_id), patient_id=item.patient_id,
               details={"outcome": body.outcome})
        return console.task_json(item)


def _refused(request: Request, status: int, code: str, message: str) -> JSONResponse:
    """A refusal that says why (the generic 403/409 pages say only "forbidden"/"conflict")."""
    return JSONResponse({"detail": message, "code": code, "request_id": request_id(request)},
                        status_code=status)


@router.post("/tasks/{task_id}/decision", response_model=DecisionOut, responses=errors(NOT_FOUND, {
    403: {"model": ErrorBody, "description": "not the task's assignee (nor a holder of its "
                                             "role); code ``task.not-yours``"},
    409: {"model": ErrorBody, "description": "the task is closed, or no open approval"},
    422: {"model": ErrorBody, "description": "an unknown step to go back to, or an unknown or "
                                             "missing signer; code ``task.bad-decision``"}}))
@patient_level("task_id", via="task")
def task_decision(request: Request, body: Decision, task_id: int = Path(ge=1, le=MAX_ID),
                  principal: Principal = NEEDS_TASK_WORK) -> dict[str, Any] | JSONResponse:
    """Decide an approval task; the flow resumes (approve → next step, reject → ``back_to`` or
    the step's ``on_reject``; add_signer → one more approver)."""
    with transaction() as session:
        item = _task(session, task_id, principal)
        try:
            done = console.decide(session, item, principal, body.decision, notes=body.notes,
                                  back_to=body.back_to,
                                  signer=body.signer.rule() if body.signer else None)
        except console.NotYours:
            return _refused(request, 403, "task.not-yours",
                            "only the task's assignee (or a holder of its role in its "
                            "department) may decide it")
        except console.DecisionInvalid as exc:
            return _refused(request, 422, "task.bad-decision", str(exc))
        except console.ActionRefused as exc:
            return _refused(request, 409, "task.closed", str(exc))
        record(request, principal, "task.decision", session=session, object_type="task",
               object_id=str(task_id), patient_id=item.patient_id,
               details={"decision": body.decision, "back_to": body.back_to,
                        "result": done["result"], "signer_task_id": done["signer_task_id"]})
        return {"task": console.task_json(item), **done}


@router.get("/patients", response_model=list[PatientHit])
def patients(q: str = Query("", max_length=64),
             principal: Principal = NEEDS_PATIENT_VIEW) -> list[dict[str, Any]]:
    with transaction() as session:
        return [{"id": p.id, "mrn": p.mrn} for p in
                console.search_patients(session, principal, q.strip())]


def _patient_json(request: Request, principal: Principal, patient_id: str, action: str,
                  reveal: tuple[str, ...] = (), details: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    with transaction() as session:
        patient = session.get(Patient, patient_id)
        if patient is None:
            raise HTTPException(status_code=404)
        view = console.patient_view(session, patient, reveal=reveal,
                                    hidden=hidden_stays(session, principal, patient_id))
        record(request, principal, action, session=session, object_type="patient",
               object_id=patient_id, patient_id=patient_id, details=details)
    return {"patient": view.data, "encounters": view.encounters, "tags": view.tags,
            "tasks": view.tasks}


@router.get("/patients/{patient_id}", response_model=PatientRecord, responses=NOT_FOUND)
@patient_level("patient_id")
def patient(request: Request, patient_id: str,
            principal: Principal = NEEDS_PATIENT_VIEW) -> dict[str, Any]:
    return _patient_json(request, principal, patient_id, "patient.view")


@router.post("/patients/{patient_id}/reveal", response_model=RevealedPatient,
             responses=NOT_FOUND)
@patient_level("patient_id")
def patient_reveal(request: Request, patient_id: str, body: Reveal,
                   principal: Principal = NEEDS_PATIENT_REVEAL) -> dict[str, Any]:
    data = _patient_json(request, principal, patient_id, "patient.reveal",
                         reveal=console.REVEALABLE,
                         details={"fields": list(console.REVEALABLE),
                                  "reason": body.reason.strip()})
    return {"id": patient_id, **{k: data["patient"][k] for k in console.REVEALABLE}}


@router.get("/patients/{patient_id}/export", response_model=None, responses=errors(NOT_FOUND, {
    200: {"model": PatientRecord, "description": "the record as a JSON file download"}}))
@patient_level("patient_id")
def patient_export(request: Request, patient_id: str,
                   principal: Principal = NEEDS_PATIENT_EXPORT) -> Response:
    """The patient's record as a JSON download (phone and ID stay masked)."""
    data = _patient_json(request, principal, patient_id, "patient.export")
    return Response(json.dumps(data, ensure_ascii=False, indent=2),
                    media_type="application/json", headers={
                        "content-disposition": f'attachment; filename="patient-{patient_id}.json"'
                    })


@router.get("/audit", response_model=list[AuditEntry])
def audit(request: Request, actor: str = Query("", max_length=128),
          action: str = Query("", max_length=64), patient_id: str = Query("", max_length=64),
          outcome: str = Query("", max_length=16),
          before: int | None = Query(None, ge=1, le=MAX_ID),
          principal: Principal = NEEDS_AUDIT_VIEW) -> list[dict[str, Any]]:
    filters = {"actor": actor, "action": action, "patient_id": patient_id, "outcome": outcome}
    with transaction() as session:
        rows = session.scalars(admin.audit_query(filters, before_id=before)).all()
        record(request, principal, "audit.view", session=session,
               details={k: v for k, v in filters.items() if v})
        return [admin.audit_json(r) for r in rows]


# --- the engines' rows of one patient (the same reads as the patient 360 page) ---------------

_READS = {"submissions": "submissions_json", "messages": "messages_json",
          "flow-runs": "flow_runs_json", "rule-traces": "rule_traces_json",
          "bp-readings": "bp_readings"}


def _patient_rows(request: Request, principal: Principal, patient_id: str,
                  what: str) -> list[dict[str, Any]]:
    from careloop.web import patient360

    with transaction() as session:
        if session.get(Patient, patient_id) is None:
            raise HTTPException(status_code=404)
        rows: list[dict[str, Any]] = getattr(patient360, _READS[what])(
            session, patient_id, hidden_stays(session, principal, patient_id))
        record(request, principal, "patient.view", session=session, object_type=what,
               object_id=patient_id, patient_id=patient_id)
    return rows


@router.get("/patients/{patient_id}/submissions", responses=NOT_FOUND)
@patient_level("patient_id")
def patient_submissions(request: Request, patient_id: str = Path(max_length=64),
                        principal: Principal = NEEDS_PATIENT_VIEW) -> list[dict[str, Any]]:
    """The patient's submissions with scores and bands, newest first."""
    return _patient_rows(request, principal, patient_id, "submissions")


@router.get("/patients/{patient_id}/messages", responses=NOT_FOUND)
@patient_level("patient_id")
def patient_messages(request: Request, patient_id: str = Path(max_length=64),
                     principal: Principal = NEEDS_PATIENT_VIEW) -> list[dict[str, Any]]:
    """Messages sent to the patient (flow outbox) and their delivery status."""
    return _patient_rows(request, principal, patient_id, "messages")


@router.get("/patients/{patient_id}/flow-runs", responses=NOT_FOUND)
@patient_level("patient_id")
def patient_flow_runs(request: Request, patient_id: str = Path(max_length=64),
                      principal: Principal = NEEDS_PATIENT_VIEW) -> list[dict[str, Any]]:
    return _patient_rows(request, principal, patient_id, "flow-runs")


@router.get("/patients/{patient_id}/rule-traces", responses=NOT_FOUND)
@patient_level("patient_id")
def patient_rule_traces(request: Request, patient_id: str = Path(max_length=64),
                        principal: Principal = NEEDS_PATIENT_VIEW) -> list[dict[str, Any]]:
    return _patient_rows(request, principal, patient_id, "rule-traces")


@router.get("/patients/{patient_id}/bp-readings", responses=NOT_FOUND)
@patient_level("patient_id")
def patient_bp(request: Request, patient_id: str = Path(max_length=64),
               principal: Principal = NEEDS_PATIENT_VIEW) -> list[dict[str, Any]]:
    return _patient_rows(request, principal, patient_id, "bp-readings")
