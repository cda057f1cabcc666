"""HTTP routes of the rule engine: the dry run the builder's "try it" calls."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from careloop.engine import store
from careloop.engine.db import transaction
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.limits import LimitExceeded, WorkTimeout, off_loop
from careloop.engine.sources import load_text, locate_limit
from careloop.web.api_models import NOT_FOUND, DryRunOut, ErrorBody, LimitErrorBody, errors
from careloop.web.deps import limit_response, record, require
from careloop.web.permissions import DEFINITIONS_VIEW, Principal

router = APIRouter(prefix="/api/v1")

PRIVATE = ("patient_id", "encounter_id", "task_id", "submission_id")

NEEDS_DEFINITIONS_VIEW = Depends(require(DEFINITIONS_VIEW))


@router.post("/rules/{key}/test", response_model=DryRunOut, responses=errors(NOT_FOUND, {
    422: {"model": ErrorBody | LimitErrorBody,
          "description": "not a JSON object, the rule set cannot run it, or over a limit"}}))
async def test_ruleset(key: str, request: Request,
                       principal: Principal = NEEDS_DEFINITIONS_VIEW) -> Any:
    """Which rules of rule set ``key`` match the posted event, and what they would do.

    Body: ``{"type": "form.submitted", "payload": {...}}``. Nothing is stored, and no stored
    patient data is read (ids in the payload are ignored).
    """
    from careloop.rules.runtime import dry_run

    try:
        event = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(status_code=422, detail=f"invalid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise HTTPException(status_code=422, detail="an event must be a JSON object")
    if "payload" not in event and "type" not in event:
        event = {"type": "form.submitted", "payload": event}
    if isinstance(event.get("payload"), dict):
        # Over HTTP the dry run sees only what was posted: no stored patient, encounter or task
        # is read (the caller may not be allowed to see them; department scoping is not applied
        # here).
        event["payload"] = {k: v for k, v in event["payload"].items() if k not in PRIVATE}
    def work() -> Any:
        with transaction() as session:
            try:
                outcome = dry_run(session, key, event)
            except LimitExceeded as exc:  # placed in the stored version's text
                row = store.get_version(session, "ruleset", key)
                raise locate_limit(exc, load_text(
                    row.source_text, f"ruleset/{key}@v{row.version}:{row.source_path}")) from None
            session.rollback()
            return outcome

    try:
        outcome = await off_loop(work)
        await run_in_threadpool(record, request, principal, "builder.try",
                                object_type="ruleset", object_id=key,
                                details={"data": "posted",
                                         "event_type": str(event.get("type", ""))[:64]})
    except (LimitExceeded, WorkTimeout) as exc:
        return limit_response(request, exc)
    except NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from None
    except CareloopError as exc:
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return outcome.to_json()
