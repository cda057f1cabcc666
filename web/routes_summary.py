"""The patient's stage summary as a PDF (:mod:`careloop.web.stage_summary`): printed by staff
from patient 360, sent to the patient as a link.

* ``GET /patients/{id}/summary`` — the period to summarise, the print action and (with
  ``task.work``) the "send to the patient" action;
* ``GET /patients/{id}/summary.pdf?months=6`` — the staff copy (audited ``patient.summary_print``);
* ``POST /patients/{id}/summary/send`` — the patient's copy (name masked, in the patient's
  language) kept behind an expiring link and messaged on the patient's channel (audited
  ``patient.summary_send``);
* ``GET /s/{token}`` — what the message's link opens: exactly that PDF, never cached; an
  unknown token 404, an expired one 410.

All patient routes are ``@patient_level``: a user without the patient in scope is refused (403,
audited) before anything is read, and a sensitive stay that is not the user's stays out of both
copies.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.errors import NotFound
from careloop.engine.i18n import normalise_locale, t
from careloop.flows import summaries
from careloop.flows.receipts import record_open
from careloop.flows.results import patient_channel
from careloop.web import stage_summary
from careloop.web.deps import locale_of, record, require
from careloop.web.display import Display, local_time
from careloop.web.permissions import PATIENT_VIEW, TASK_WORK, Principal, hidden_stays
from careloop.web.render import render
from careloop.web.routes_console import FORM_FIELDS
from careloop.web.scoping import patient_level

router = APIRouter(include_in_schema=False)
NEEDS_PATIENT_VIEW = Depends(require(PATIENT_VIEW))
NEEDS_TASK_WORK = Depends(require(TASK_WORK))
NO_STORE = {"Cache-Control": "no-store"}
PERIODS = (3, 6, 12, 0)  # months; 0 = everything on record


def _months(value: str | int | None) -> int:
    try:
        months = int(value if value is not None else stage_summary.DEFAULT_MONTHS)
    except ValueError:
        return -1
    return months if months in PERIODS else -1


def _patient(session: Session, patient_id: str) -> Patient:
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise HTTPException(status_code=404)
    return patient


def _page(request: Request, me: Principal, patient_id: str, *, months: int, status_code: int = 200,
          error: str | None = None, sent: bool = False) -> Response:
    with transaction() as session:
        patient = _patient(session, patient_id)
        channel = Display(locale_of(request), session).label("channel", patient_channel(patient))
    return render(request, "stage_summary.html", status_code=status_code, patient_id=patient_id,
                  periods=PERIODS, months=months if months in PERIODS else
                  stage_summary.DEFAULT_MONTHS, channel=channel, error=error, sent=sent,
                  can_send=me.can(TASK_WORK))


@router.get("/patients/{patient_id}/summary")
@patient_level("patient_id")
def summary_page(request: Request, patient_id: str, sent: int = Query(0, ge=0, le=1),
                 me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    return _page(request, me, patient_id, months=stage_summary.DEFAULT_MONTHS, sent=bool(sent))


@router.get("/patients/{patient_id}/summary.pdf")
@patient_level("patient_id")
def summary_pdf(request: Request, patient_id: str, months: str = Query("6", max_length=4),
                me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    """The staff copy: what this user may see of the patient over the chosen months."""
    period = _months(months)
    if period < 0:
        return _page(request, me, patient_id, months=period, status_code=422,
                     error=t("pdf.summary.bad_months", locale_of(request)))
    locale = locale_of(request)
    with transaction() as session:
        patient = _patient(session, patient_id)
        until = now_utc()
        found = stage_summary.gather(session, patient, hidden_stays(session, me, patient_id),
                                     since=stage_summary.period_start(until, period),
                                     until=until)
        body = stage_summary.render(session, found, locale)
        record(request, me, "patient.summary_print", session=session, object_type="patient",
               object_id=patient_id, patient_id=patient_id, details={"months": period})
    return Response(body, media_type="application/pdf", headers={
        **NO_STORE, "Content-Disposition": 'inline; filename="stage-summary.pdf"'})


@router.post("/patients/{patient_id}/summary/send")
@patient_level("patient_id")
def summary_send(request: Request, patient_id: str,
                 fields: dict[str, list[str]] = FORM_FIELDS,
                 me: Principal = NEEDS_TASK_WORK) -> Response:
    """The patient's copy, in the patient's language with the name masked, sent as a link."""
    period = _months((fields.get("months") or [str(stage_summary.DEFAULT_MONTHS)])[0][:4])
    if period < 0:
        return _page(request, me, patient_id, months=period, status_code=422,
                     error=t("pdf.summary.bad_months", locale_of(request)))
    with transaction() as session:
        patient = _patient(session, patient_id)
        locale = normalise_locale(patient.locale)
        until = now_utc()
        since = stage_summary.period_start(until, period)
        found = stage_summary.gather(session, patient, hidden_stays(session, me, patient_id),
                                     since=since, until=until)
        body = stage_summary.render(session, found, locale, for_patient=True)
        message_id = summaries.send(session, patient_id, body, me.username, start=since,
                                    end=until, start_text=local_time(found.since, "date"),
                                    end_text=local_time(until, "date"))
        record(request, me, "patient.summary_send", session=session,
               object_type="outbox_message", object_id=str(message_id), patient_id=patient_id,
               details={"zh-CN": "向患者发送了阶段健康总结",
                        "en": "Sent the patient a stage health summary", "months": period})
    return RedirectResponse(f"/patients/{patient_id}/summary?sent=1", status_code=303)


@router.get("/s/{token}", response_class=HTMLResponse)
def patient_summary(token: str, lang: str | None = Query(None, max_length=8)) -> Response:
    """The patient opens the summary staff sent: the PDF as it was sent."""
    from careloop.forms.pages import render_message

    locale = normalise_locale(lang)
    with transaction() as session:
        try:
            link = summaries.open_link(session, token)
            record_open(session, token)
        except NotFound:
            return HTMLResponse(render_message(t("pdf.summary.title", locale),
                                               t("pdf.summary.link_unknown", locale), locale,
                                               next_step=True), status_code=404,
                                headers=NO_STORE)
        except summaries.LinkExpired:
            return HTMLResponse(render_message(t("pdf.summary.title", locale),
                                               t("pdf.summary.link_expired", locale), locale,
                                               next_step=True), status_code=410,
                                headers=NO_STORE)
        body = bytes(link.pdf)
    return Response(body, media_type="application/pdf", headers={
        **NO_STORE, "Content-Disposition": 'inline; filename="stage-summary.pdf"'})
