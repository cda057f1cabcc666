"""HTTP routes of the flow engine: events in, runs / incidents / outbox read-back — for systems
with an API key (``X-API-Key``) holding the route's scope: ``events:write`` for events,
``readback:read`` for runs, incidents and the outbox, ``incidents:write`` to retry or skip an
incident. Every call is audited (``api.*``), refusals too."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from careloop.engine import audit, dispatcher
from careloop.engine.db import transaction
from careloop.engine.errors import CareloopError
from careloop.flows import views
from careloop.flows.ingest import conflict, ingest
from careloop.web.api_models import (
    COMMON_ERRORS,
    NOT_FOUND,
    ErrorBody,
    EventAccepted,
    EventConflict,
    EventParked,
    EventRejected,
    IncidentOut,
    OutboxMessage,
    RunDetail,
    RunSummary,
    StatusOk,
    errors,
)
from careloop.web.auth import (
    ApiCaller,
    ApiKeyRefused,
    api_key_caller,
    api_key_check,
    api_key_used,
    audit_refusal,
)
from careloop.web.deps import client_ip, request_body, request_id

router = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)
T = TypeVar("T")


def _require_key(request: Request, key: str | None, scope: str, action: str,
                 object_id: str | None = None) -> ApiCaller:
    ip, rid = client_ip(request), request_id(request)
    try:
        with transaction() as session:
            return api_key_caller(session, key, scope, action=action, ip=ip, request_id=rid,
                                  object_id=object_id)
    except ApiKeyRefused as exc:
        with transaction() as session:
            audit_refusal(session, exc, action=action, ip=ip, request_id=rid,
                          object_id=object_id)
        raise HTTPException(status_code=exc.status, detail=str(exc)) from None


Work = Callable[[Session, ApiCaller], T]


def _with_key(key: str | None, scope: str, action: str, ip: str | None, rid: str | None,
              work: Work[T]) -> T:
    """``work`` in the transaction that checks ``key`` (one indexed read) and writes the call's
    audit row after the work (the audit chain's lock is held only until the commit). A refused
    key: 401/403, audited in a transaction of its own."""
    try:
        with transaction() as session:
            caller, found = api_key_check(session, key, scope)
            result = work(session, caller)
            api_key_used(session, caller, found, scope, action=action, ip=ip, request_id=rid)
            return result
    except ApiKeyRefused as exc:
        with transaction() as session:
            audit_refusal(session, exc, action=action, ip=ip, request_id=rid)
        raise HTTPException(status_code=exc.status, detail=str(exc)) from None


def _audit_failed(key: str | None, scope: str, action: str, ip: str | None,
                  rid: str | None) -> None:
    """The audit row of a call whose transaction was rolled back (the database refused it)."""
    with transaction() as session:
        try:
            caller, _found = api_key_check(session, key, scope)
        except ApiKeyRefused:  # revoked meanwhile: its refusal is the next call's
            return
        audit.append(session, actor=caller.actor, action=action, object_type="api_key",
                     outcome="failure", ip=ip, request_id=rid, details={"scope": scope})


@router.post("/events", response_model=None, responses=errors({
    200: {"model": EventAccepted, "description": "stored (or an identical re-send: the original "
                                                 "acknowledgement)"},
    202: {"model": EventParked, "description": "kept until its patient or code is known"},
    409: {"model": EventConflict | EventRejected,
          "description": "the event id is known with another body (``conflict``), or a unique "
                         "value belongs to another record (``rejected``)"},
    422: {"model": EventRejected, "description": "every problem of the event, with its path"}}))
def post_event(request: Request, x_api_key: str | None = Header(default=None),
               raw: bytes = Depends(request_body)) -> JSONResponse:
    """Ingest one HIS event; 422 lists every problem; a duplicate gets the original ack.

    Acknowledged once the event (and the patient and encounter rows it carries) is stored; its
    handlers — flows, rules — run from the event queue (``careloop.engine.dispatcher``)."""
    ip, rid = client_ip(request), request_id(request)
    try:
        event: Any = json.loads(raw)
        invalid = None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        event, invalid = None, {"status": "rejected",
                                "errors": [{"path": "$", "message": f"invalid JSON: {exc}"}]}

    def accept(session: Session, caller: ApiCaller) -> tuple[int, dict[str, Any]]:
        if invalid is not None:
            return 422, invalid
        return ingest(session, event, source=f"api:{caller.name}", defer=True)

    try:
        # One transaction: the key, the event and the call's audit row commit together
        status, body = _with_key(x_api_key, "events:write", "api.event", ip, rid, accept)
    except IntegrityError:
        # The same event id (or the same MRN) arrived concurrently and the other request stored
        # it first: the second attempt sees it (a duplicate's ack, or a located 409).
        try:
            status, body = _with_key(x_api_key, "events:write", "api.event", ip, rid, accept)
        except IntegrityError as exc:  # another unique value: located, no values, no 500
            status, body = 409, conflict(exc, event)
            _audit_failed(x_api_key, "events:write", "api.event", ip, rid)
    if status == 200:
        dispatcher.wake()  # committed: this process's dispatcher runs its handlers now
    return JSONResponse(body, status_code=status)


@router.get("/flows/runs", response_model=list[RunSummary])
def list_runs(request: Request, patient_id: str | None = None, status: str | None = None,
              x_api_key: str | None = Header(default=None)) -> list[dict[str, Any]]:
    _require_key(request, x_api_key, "readback:read", "api.flow_runs", patient_id)
    with transaction() as session:
        return views.runs_json(session, patient_id=patient_id, status=status)


@router.get("/flows/runs/{run_id}", response_model=RunDetail, responses=NOT_FOUND)
def get_run(request: Request, run_id: int,
            x_api_key: str | None = Header(default=None)) -> dict[str, Any]:
    _require_key(request, x_api_key, "readback:read", "api.flow_run", str(run_id))
    with transaction() as session:
        data = views.run_json(session, run_id)
    if data is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id}")
    return data


@router.get("/flows/incidents", response_model=list[IncidentOut])
def list_incidents(request: Request, status: str = "open",
                   x_api_key: str | None = Header(default=None)) -> list[dict[str, Any]]:
    _require_key(request, x_api_key, "readback:read", "api.incidents")
    with transaction() as session:
        return views.incidents_json(session, status)


@router.post("/flows/incidents/{incident_id}/{action}", response_model=StatusOk, responses={
    409: {"model": ErrorBody, "description": "no such open incident, or an unknown action"}})
def act_on_incident(request: Request, incident_id: int, action: str,
                    x_api_key: str | None = Header(default=None)) -> dict[str, str]:
    name = _require_key(request, x_api_key, "incidents:write", f"api.incident_{action}"[:64],
                        str(incident_id)).name
    from careloop.flows.runtime import resolve_incident

    try:
        with transaction() as session:
            resolve_incident(session, incident_id, action, f"api:{name}")
    except CareloopError as exc:
        raise HTTPException(status_code=409, detail=str(exc)) from exc
    return {"status": "ok"}


@router.get("/outbox", response_model=list[OutboxMessage])
def list_outbox(request: Request, status: str | None = None,
                x_api_key: str | None = Header(default=None)) -> list[dict[str, Any]]:
    _require_key(request, x_api_key, "readback:read", "api.outbox")
    with transaction() as session:
        return views.outbox_json(session, status=status)
