"""Laboratory results on patient 360, the staff action that pushes them to the patient, and the
patient's page (:mod:`careloop.flows.results`).

* the patient 360 section ``检验结果 / Lab results``: each result's name, value and unit,
  reference range, flag in words and time in hospital local time;
* ``GET /patients/{id}/results`` and ``POST /patients/{id}/results/notice`` — staff tick results
  and send the patient a notice through the outbox on the patient's channel (audited);
* ``GET /r/{token}`` — what the notice's link opens: exactly the results of that notice, in the
  patient's language, never cached; an unknown token 404, an expired one 410.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy.orm import Session

from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.errors import NotFound
from careloop.engine.i18n import normalise_locale, t
from careloop.flows import results as lab
from careloop.flows.receipts import record_open
from careloop.web.deps import locale_of, record, require
from careloop.web.display import Display, local_time
from careloop.web.permissions import PATIENT_VIEW, TASK_WORK, HiddenStays, Principal, hidden_stays
from careloop.web.render import environment, render
from careloop.web.routes_console import FORM_FIELDS
from careloop.web.scoping import patient_level

router = APIRouter(include_in_schema=False)
NEEDS_PATIENT_VIEW = Depends(require(PATIENT_VIEW))
NEEDS_TASK_WORK = Depends(require(TASK_WORK))
NO_STORE = {"Cache-Control": "no-store"}


def rows(results: list[lab.Result], locale: str) -> list[dict[str, Any]]:
    """Each result as a person reads it (no code, no UTC)."""
    return [{"id": r.event_id, "at": local_time(r.observed_at), "label": lab.label(r, locale),
             "value": lab.value_text(r), "range": r.reference_range or "",
             "flag": lab.flag_words(r.flag, locale), "abnormal": lab.abnormal(r),
             "status": t(f"lis.status.{r.status}", locale)} for r in results]


def _visible(session: Session, patient_id: str, hidden: HiddenStays) -> list[lab.Result]:
    return [r for r in lab.results_for(session, patient_id)
            if not hidden.hides(r.encounter_id)]


def panel_results(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    """The patient 360 section; nothing but "none" when there are no results."""
    found = rows(_visible(session, patient_id, hidden_stays(session, me, patient_id))[:50],
                 locale)
    if not found:
        return Markup('<p class="empty">{}</p>').format(t("web.none", locale))
    head = Markup("").join(Markup("<th>{}</th>").format(t(k, locale)) for k in (
        "lis.when", "lis.item", "lis.value", "lis.range", "lis.flag", "lis.status"))
    body = Markup("").join(Markup(
        '<tr class="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>'
    ).format("abnormal" if r["abnormal"] else "", r["at"], r["label"], r["value"], r["range"],
             Markup('<span class="badge flag">{}</span>').format(r["flag"]) if r["flag"] else "",
             r["status"]) for r in found)
    return Markup('<table class="list" id="lab-results"><thead><tr>{}</tr></thead><tbody>{}'
                  '</tbody></table><p><a href="/patients/{}/results" id="lab-results-push">{}'
                  '</a></p>').format(head, body, patient_id, t("lis.push", locale))


def _patient(session: Session, patient_id: str) -> Patient:
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise HTTPException(status_code=404)
    return patient


def _page(request: Request, me: Principal, patient_id: str, *, status_code: int = 200,
          error: str | None = None, sent: bool = False) -> Response:
    locale = locale_of(request)
    with transaction() as session:
        patient = _patient(session, patient_id)
        found = rows(_visible(session, patient_id, hidden_stays(session, me, patient_id)),
                     locale)
        channel = Display(locale, session).label("channel", lab.patient_channel(patient))
    return render(request, "lab_results_push.html", status_code=status_code,
                  patient_id=patient_id, results=found, channel=channel, error=error, sent=sent)


@router.get("/patients/{patient_id}/results")
@patient_level("patient_id")
def results_page(request: Request, patient_id: str, sent: int = Query(0, ge=0, le=1),
                 me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    return _page(request, me, patient_id, sent=bool(sent))


@router.post("/patients/{patient_id}/results/notice")
@patient_level("patient_id")
def push_results(request: Request, patient_id: str,
                 fields: dict[str, list[str]] = FORM_FIELDS,
                 me: Principal = NEEDS_TASK_WORK) -> Response:
    """Send the ticked results; a result of a hidden stay or another patient is refused."""
    chosen = [v[:64] for v in fields.get("result", [])][:200]
    try:
        with transaction() as session:
            hidden = hidden_stays(session, me, patient_id)
            visible = {r.event_id for r in _visible(session, patient_id, hidden)}
            if any(c not in visible for c in chosen):
                raise lab.ResultsError("a chosen result is not one of this patient's")
            message_id = lab.push_notice(session, patient_id, chosen, me.username)
            record(request, me, "patient.results_notice", session=session,
                   object_type="outbox_message", object_id=str(message_id),
                   patient_id=patient_id,
                   details={"zh-CN": f"向患者推送了{len(set(chosen))}项检验结果",
                            "en": f"Sent the patient {len(set(chosen))} lab result(s)"})
    except lab.ResultsError:
        return _page(request, me, patient_id, status_code=422,
                     error=t("lis.push_none", locale_of(request)))
    return RedirectResponse(f"/patients/{patient_id}/results?sent=1", status_code=303)


@router.get("/r/{token}", response_class=HTMLResponse)
def patient_results(token: str, lang: str | None = Query(None, max_length=8)) -> Response:
    from careloop.forms.pages import hospital_context, render_message

    with transaction() as session:
        try:
            patient_id, found = lab.open_link(session, token)
            record_open(session, token)
        except NotFound:
            locale = normalise_locale(lang)
            return HTMLResponse(render_message(t("lis.page_title", locale),
                                               t("lis.page_not_found", locale), locale,
                                               next_step=True), status_code=404,
                                headers=NO_STORE)
        except lab.LinkExpired:
            locale = normalise_locale(lang)
            return HTMLResponse(render_message(t("lis.page_title", locale),
                                               t("lis.page_expired", locale), locale,
                                               next_step=True), status_code=410,
                                headers=NO_STORE)
        patient = session.get(Patient, patient_id)
        locale = normalise_locale(lang or (patient.locale if patient is not None else None))

    def translate(key: str, **params: object) -> str:
        return t(key, locale, **params)

    html = environment().get_template("lab_results_patient.html").render(
        _=translate, locale=locale, results=rows(found, locale), path=f"/r/{token}",
        other_locale="en" if locale == "zh-CN" else "zh-CN", **hospital_context(locale))
    return HTMLResponse(html, headers=NO_STORE)


def register(registry: Any) -> None:
    from careloop.web.render import PatientPanel

    registry.catalogue("patient_panel").register("lab_results", PatientPanel(
        title={"zh-CN": "检验结果", "en": "Lab results"}, order=26, render=panel_results))

