"""The alert centre's page and API: ``/alerts`` and ``/api/v1/alerts``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from careloop.engine.db import transaction
from careloop.engine.i18n import t
from careloop.rules.models import RuleAlert
from careloop.web import alerts
from careloop.web.api_models import COMMON_ERRORS, NOT_FOUND, AlertAcknowledged, AlertOut, errors
from careloop.web.deps import locale_of, record, require
from careloop.web.permissions import MAX_ID, PATIENT_VIEW, Principal
from careloop.web.render import render
from careloop.web.scoping import patient_level

router = APIRouter()
NEEDS_PATIENT_VIEW = Depends(require(PATIENT_VIEW))


class Acknowledge(BaseModel):
    note: str = Field(min_length=1, max_length=2000, pattern=r"\S")


def _ack(request: Request, me: Principal, alert_id: int, note: str) -> RuleAlert:
    with transaction() as session:
        alert = session.get(RuleAlert, alert_id)
        if alert is None or not alerts.can_see(session, me, alert_id):
            raise HTTPException(status_code=404)
        try:
            alerts.acknowledge(session, alert, me, note)
        except alerts.AlertRefused as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc
        record(request, me, "alert.acknowledge", session=session, object_type="alert",
               object_id=str(alert_id), patient_id=alert.patient_id,
               details={"level": alert.level})
        session.expunge(alert)
        return alert


@router.get("/alerts", include_in_schema=False)
def alerts_page(request: Request, status: str = "open",
                me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    status = status if status in (*alerts.STATUSES, "all") else "open"
    with transaction() as session:
        rows = alerts.list_alerts(session, me, None if status == "all" else status)
    return render(request, "alerts.html", rows=rows, status=status,
                  statuses=(*alerts.STATUSES, "all"))


@router.post("/alerts/{alert_id}/acknowledge", include_in_schema=False)
@patient_level("alert_id", via="alert")
def alerts_acknowledge(request: Request, alert_id: int = Path(ge=1, le=MAX_ID),
                       note: str = Form("", max_length=2000),
                       me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    if not note.strip():
        return render(request, "error.html", status_code=422,
                      message=t("web.alert.note_required", locale_of(request)))
    _ack(request, me, alert_id, note)
    return RedirectResponse("/alerts", status_code=303)


@router.get("/api/v1/alerts", tags=["console"], response_model=list[AlertOut],
            responses=COMMON_ERRORS)
def alerts_api(status: Literal["open", "acknowledged", "all"] = "open",
               me: Principal = NEEDS_PATIENT_VIEW) -> list[dict[str, Any]]:
    with transaction() as session:
        return [a.to_json() for a in alerts.list_alerts(
            session, me, None if status == "all" else status)]


@router.post("/api/v1/alerts/{alert_id}/acknowledge", tags=["console"],
             response_model=AlertAcknowledged, responses=errors(NOT_FOUND))
@patient_level("alert_id", via="alert")
def alerts_acknowledge_api(request: Request, body: Acknowledge,
                           alert_id: int = Path(ge=1, le=MAX_ID),
                           me: Principal = NEEDS_PATIENT_VIEW) -> dict[str, Any]:
    alert = _ack(request, me, alert_id, body.note)
    return {"id": alert.id, "status": alert.status, "acknowledged_by": alert.acknowledged_by}
