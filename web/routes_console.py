"""Staff console pages: home, to-do inbox, task, patient 360 (with reveal), definitions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine import store
from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Patient, RoleGrant, Task, User
from careloop.engine.i18n import t
from careloop.engine.privacy import mask_in_text
from careloop.engine.registry import loaded_registry
from careloop.engine.tasks import OUTCOMES
from careloop.web import console
from careloop.web.deps import csrf_token_of, locale_of, record, require, require_user
from careloop.web.display import Display
from careloop.web.permissions import (
    COMPLAINTS_MANAGE,
    DEFINITIONS_VIEW,
    MAX_ID,
    PATIENT_REVEAL,
    PATIENT_VIEW,
    REPORTS_VIEW,
    TASK_REASSIGN,
    TASK_WORK,
    Principal,
    can_see_patient,
    can_see_task,
    hidden_stays,
    task_visibility,
)
from careloop.web.render import render
from careloop.web.scoping import patient_level

router = APIRouter(include_in_schema=False)

NEEDS_COMPLAINTS_MANAGE = Depends(require(COMPLAINTS_MANAGE))
NEEDS_DEFINITIONS_VIEW = Depends(require(DEFINITIONS_VIEW))
NEEDS_PATIENT_REVEAL = Depends(require(PATIENT_REVEAL))
NEEDS_PATIENT_VIEW = Depends(require(PATIENT_VIEW))
NEEDS_REPORTS_VIEW = Depends(require(REPORTS_VIEW))
NEEDS_TASK_REASSIGN = Depends(require(TASK_REASSIGN))
NEEDS_TASK_WORK = Depends(require(TASK_WORK))
SIGNED_IN = Depends(require_user)


@router.get("/")
def home(request: Request, me: Principal = SIGNED_IN) -> Response:
    with transaction() as session:
        counts = console.counts(session, me) if me.can(TASK_WORK) else {}
        mine = console.inbox(session, me, "mine")[:10] if me.can(TASK_WORK) else []
        urgent = [t for t in mine if t["priority"] == "urgent"]
    return render(request, "home.html", counts=counts, tasks=mine, alerts=urgent)


PRIORITIES = ("urgent", "high", "normal", "low")
TASK_STATUSES = ("open", "in_progress", "done", "cancelled")


@router.get("/inbox")
def inbox(request: Request, view: str = "mine", priority: str = "", status: str = "",
          assignee: str = "", due: str = "", sort: str = "due",
          me: Principal = NEEDS_TASK_WORK) -> Response:
    """The to-do inbox: a view (mine, department, overdue, done), filters (status, priority,
    assignee, due) and a sort (due, priority, newest)."""
    view = view if view in console.VIEWS else "mine"
    chosen = console.InboxFilter(
        priority=priority if priority in PRIORITIES else None,
        status=status if status in TASK_STATUSES else None,
        assignee=assignee if assignee in console.ASSIGNEE_FILTERS or (
            assignee.isdigit() and len(assignee) < 10) else None,
        due=due if due in console.DUE_FILTERS else None,
        sort=sort if sort in console.SORTS else "due")
    with transaction() as session:  # two statements: the rows (with their departments'
        page = console.inbox_page(session, me, view, filters=chosen)  # names), the counts
        counts = console.counts(session, me)
    return render(request, "inbox.html", tasks=page.tasks, view=view, views=console.VIEWS,
                  priority=chosen.priority or "", counts=counts,
                  display=Display(locale_of(request), departments=page.departments),
                  filters=chosen, priorities=PRIORITIES, statuses=TASK_STATUSES,
                  due_filters=console.DUE_FILTERS, sorts=console.SORTS)


def _task_or_404(session: object, task_id: int) -> Task:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    task = session.get(Task, task_id)
    if task is None:
        raise HTTPException(status_code=404)
    return task


def _check_department_task(session: Session, me: Principal, task: Task) -> None:
    """Tasks without a patient are scoped by their assignment (user, role queue, department)."""
    if task.patient_id is None and not can_see_task(session, me, task.id):
        raise HTTPException(status_code=403)


@router.get("/tasks/{task_id}")
@patient_level("task_id", via="task")
def task_page(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
              me: Principal = NEEDS_TASK_WORK) -> Response:
    return _task_response(request, me, task_id, reveal=False)


@router.post("/tasks/{task_id}/reveal-phone")
@patient_level("task_id", via="task")
def task_reveal_phone(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
                      me: Principal = NEEDS_TASK_WORK) -> Response:
    """The holder of an open phone follow-up task sees the patient's number (audited as a
    reveal, the task as the reason)."""
    return _task_response(request, me, task_id, reveal=True)


def _task_response(request: Request, me: Principal, task_id: int, *,
                   reveal: bool) -> Response:
    from careloop.web import worksurface
    from careloop.web.display import Display

    locale = locale_of(request)
    with transaction() as session:
        task = _task_or_404(session, task_id)
        _check_department_task(session, me, task)
        may_reveal = worksurface.may_reveal_phone(task, console.assigned_to(me, task))
        if reveal and not may_reveal:
            record(request, me, "patient.reveal", object_type="task", object_id=str(task_id),
                   patient_id=task.patient_id, outcome="denied", details={"fields": ["phone"]})
            raise HTTPException(status_code=403)
        patient = session.get(Patient, task.patient_id) if task.patient_id else None
        view = console.patient_view(
            session, patient, hidden=hidden_stays(session, me, patient.id),
            reveal=("phone",) if reveal else ()) if patient else None
        hist = console.history(session, task_id)
        users = _colleagues(session, task.department_id) if me.can(TASK_REASSIGN) else []
        if patient is not None and reveal:
            record(request, me, "patient.reveal", session=session, object_type="task",
                   object_id=str(task_id), patient_id=patient.id,
                   details={"fields": ["phone"], "task_id": task_id,
                            "reason": t("web.pages.reveal_reason", "zh-CN",
                                        title=task.title)})
        elif patient is not None:
            record(request, me, "patient.view", session=session, object_type="task",
                   object_id=str(task_id), patient_id=patient.id)
        data = console.with_people(session, [console.task_json(task)])[0]
        entered = _entered_submission(session, task)
        approval = console.approval_view(session, task, me)
        display = Display(locale, session)
        open_patient = patient is not None and can_see_patient(session, me, patient.id)
        hidden = hidden_stays(session, me, patient.id) if patient is not None else None
        seen = task_visibility(me)
        query = select(Task.id).where(Task.patient_id == task.patient_id)
        others = session.scalars(query if seen is None else query.where(seen)).all()
        source = worksurface.task_source(session, task, display, open_patient=open_patient)
        recent = worksurface.recent_history(session, task, display, hidden=hidden,
                                            open_patient=open_patient,
                                            visible_tasks=frozenset(others))
        history_rows = [{"at": h.at, "actor": display.label("actor", h.actor),
                         "action": display.label("action", h.action),
                         "details": _history_details(display, h.details or {})}
                        for h in hist]
        if entered is not None:
            entered["form_label"] = display.label("form", entered["form"])
            scores, bands = entered["scores"], entered["bands"]
            entered["scores_view"] = worksurface.scores_view(
                display, str(entered["form"]), None,
                scores if isinstance(scores, dict) else {},
                bands if isinstance(bands, dict) else {})
        panels = []
        for _, panel in sorted(loaded_registry().catalogue("task_panel").items(),
                               key=lambda item: item[1].order):
            html = panel.render(session, task, me, locale, csrf_token_of(request))
            if html is not None:
                panels.append((panel, html))
    return render(request, "task.html", task=data, patient=view, history=history_rows,
                  panels=panels,
                  outcomes=OUTCOMES, users=users, entered=entered, approval=approval,
                  source=source, recent=recent, may_reveal_phone=may_reveal and not reveal,
                  open_patient=open_patient)


def _history_details(display: object, details: dict[str, object]) -> str:
    """A history row's details in words (the outcome recorded, who it went to)."""
    from careloop.web.display import Display

    assert isinstance(display, Display)
    parts = []
    if details.get("outcome"):
        parts.append(display.label("outcome", details["outcome"]))
    if details.get("role"):
        parts.append(display.label("role", details["role"]))
    if details.get("to") is not None:
        parts.append(display.label("user", details["to"]))
    if details.get("priority"):
        parts.append(display.label("priority", details["priority"]))
    return " · ".join(p for p in parts if p)


def _entered_submission(session: object, task: Task) -> dict[str, object] | None:
    """The submission the task's staff-entry form produced, if any."""
    from sqlalchemy.orm import Session

    from careloop.web.staffentry import latest_for

    assert isinstance(session, Session)
    if not task.form_key:
        return None
    sub = latest_for(session, f"task:{task.id}")
    if sub is None:
        return None
    return {"id": sub.id, "form": sub.form_key, "scores": sub.scores, "bands": sub.bands,
            "status": sub.status}


def _colleagues(session: object, department_id: str | None) -> list[User]:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    query = select(User).join(RoleGrant, RoleGrant.user_id == User.id).where(User.active)
    if department_id:
        query = query.where(RoleGrant.department_id == department_id)
    return list(session.scalars(query.distinct().order_by(User.username).limit(100)).all())


@router.post("/tasks/{task_id}/complete")
@patient_level("task_id", via="task")
def task_complete(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
                  outcome: str = Form(max_length=32),
                  notes: str = Form("", max_length=2000),
                  me: Principal = NEEDS_TASK_WORK) -> Response:
    return _task_action(request, me, task_id, "task.complete",
                        lambda s, task: console.complete(s, task, me, outcome, notes),
                        {"outcome": outcome})


@router.post("/tasks/{task_id}/decision")
@patient_level("task_id", via="task")
def task_decision(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
                  decision: str = Form(pattern="^(approve|reject|add_signer)$"),
                  notes: str = Form("", max_length=2000),
                  back_to: str = Form("", max_length=64),
                  signer_user: str = Form("", max_length=64),
                  me: Principal = NEEDS_TASK_WORK) -> Response:
    """Approve, reject back to a step (驳回) or add a signer (加签) from the task page."""
    locale = locale_of(request)
    with transaction() as session:
        task = _task_or_404(session, task_id)
        _check_department_task(session, me, task)
        try:
            done = console.decide(session, task, me, decision, notes=notes,
                                  back_to=back_to or None,
                                  signer={"user": signer_user.strip()}
                                  if signer_user.strip() else None)
        except console.NotYours:
            return render(request, "error.html", status_code=403,
                          message=t("web.approval.not_yours", locale))
        except console.DecisionInvalid:
            return render(request, "error.html", status_code=422,
                          message=t("web.approval.invalid", locale))
        except console.ActionRefused:
            return render(request, "error.html", status_code=409,
                          message=t("web.approval.closed", locale))
        record(request, me, "task.decision", session=session, object_type="task",
               object_id=str(task_id), patient_id=task.patient_id,
               details={"decision": decision, "back_to": back_to or None,
                        "result": done["result"], "signer_task_id": done["signer_task_id"]})
    return RedirectResponse(f"/tasks/{task_id}", status_code=303)


@router.post("/tasks/{task_id}/reassign")
@patient_level("task_id", via="task")
def task_reassign(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
                  user_id: int = Form(ge=1, le=MAX_ID),
                  me: Principal = NEEDS_TASK_REASSIGN) -> Response:
    return _task_action(request, me, task_id, "task.reassign",
                        lambda s, task: console.reassign(s, task, me, user_id),
                        {"to_user_id": user_id})


@router.post("/tasks/{task_id}/escalate")
@patient_level("task_id", via="task")
def task_escalate(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
                  me: Principal = NEEDS_TASK_WORK) -> Response:
    return _task_action(request, me, task_id, "task.escalate",
                        lambda s, task: console.escalate(s, task, me), {})


def _task_action(request: Request, me: Principal, task_id: int, action: str,
                 apply: object, details: dict[str, object]) -> Response:
    with transaction() as session:
        task = _task_or_404(session, task_id)
        _check_department_task(session, me, task)
        try:
            assert callable(apply)
            apply(session, task)
        except console.DecideInstead:
            return render(request, "error.html", status_code=409,
                          message=t("web.approval.decide_instead", locale_of(request)))
        except console.ActionRefused:
            return render(request, "error.html", status_code=409,
                          message=t("web.task.refused", locale_of(request)))
        record(request, me, action, session=session, object_type="task",
               object_id=str(task_id), patient_id=task.patient_id, details=details)
    return RedirectResponse(f"/tasks/{task_id}", status_code=303)


@router.get("/patients")
def patients(request: Request, q: str = "", tag: str = "",
             me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    """Search by name or MRN (part of either) and by tag. A phone or ID number is searched
    with POST so that it never lands in an access log."""
    search = console.PatientSearch(q=q.strip()[:64],
                                   tags=(tag.strip()[:64],) if tag.strip() else ())
    return _patients_response(request, me, search)


@router.post("/patients")
def patients_search(request: Request, q: str = Form("", max_length=64),
                    tag: str = Form("", max_length=64),
                    phone: str = Form("", max_length=32),
                    id_number: str = Form("", max_length=32),
                    me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    """The same search with a full phone number or ID number (exact, normalised); audited
    without the number (only which fields were searched)."""
    search = console.PatientSearch(q=q.strip(), phone=phone.strip(),
                                   id_number=id_number.strip(),
                                   tags=(tag.strip(),) if tag.strip() else ())
    if search.phone or search.id_number:
        record(request, me, "patient.search", details={
            "fields": [f for f in ("phone", "id_number") if getattr(search, f)]})
    return _patients_response(request, me, search)


def _patients_response(request: Request, me: Principal,
                       search: console.PatientSearch) -> Response:
    with transaction() as session:
        rows = console.search_patients(session, me, search) if not search.empty else \
            console.search_patients(session, me, "")
        tags = console.tags_of(session, [p.id for p in rows])
        found = [{"id": p.id, "mrn": p.mrn, "name": p.name, "gender": p.gender,
                  "tags": tags.get(p.id, [])} for p in rows]
        known = console.known_tags(session)
    return render(request, "patients.html", patients=found, q=search.q,
                  tag=search.tags[0] if search.tags else "", known_tags=known,
                  searched_number=bool(search.phone or search.id_number))


@router.get("/patients/{patient_id}")
@patient_level("patient_id")
def patient_page(request: Request, patient_id: str,
                 me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    return _patient_response(request, me, patient_id, reveal=(), reason=None)


@router.post("/patients/{patient_id}/reveal")
@patient_level("patient_id")
def patient_reveal(request: Request, patient_id: str, reason: str = Form(max_length=200),
                   me: Principal = NEEDS_PATIENT_REVEAL) -> Response:
    reason = reason.strip()
    if not reason:
        return _patient_response(request, me, patient_id, reveal=(), reason=None,
                                 error=t("web.reveal.reason_required", locale_of(request)))
    return _patient_response(request, me, patient_id, reveal=console.REVEALABLE, reason=reason)


@router.post("/patients/{patient_id}/break-glass")
@patient_level("patient_id")
def patient_break_glass(request: Request, patient_id: str,
                        reason: str = Form(max_length=200),
                        me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    """Break the glass: open this patient's sensitive stays (psychiatry…) for a few hours,
    giving a reason; audited ``patient.break_glass`` and listed for the security
    administrator on ``/admin/break-glass``."""
    reason = reason.strip()
    if not reason:
        return _patient_response(request, me, patient_id, reveal=(), reason=None,
                                 error=t("web.sod.break_glass_reason", locale_of(request)))
    with transaction() as session:
        hidden = hidden_stays(session, me, patient_id)
        record(request, me, "patient.break_glass", session=session, object_type="patient",
               object_id=patient_id, patient_id=patient_id,
               details={"reason": reason, "encounters": sorted(hidden.encounters)})
    return RedirectResponse(f"/patients/{patient_id}", status_code=303)


def _mark_openable(session: Session, me: Principal, tasks: list[dict[str, Any]]) -> None:
    """Mark each task (``openable``) the principal may open: a patient's or a complaint's page
    lists every task on it, and links only those in the principal's lists (no dead links)."""
    ids = [row["id"] for row in tasks if isinstance(row.get("id"), int)]
    if not ids or not me.can(TASK_WORK):  # the task page needs task.work
        for row in tasks:
            row["openable"] = False
        return
    seen = task_visibility(me)
    query = select(Task.id).where(Task.id.in_(ids))
    openable = set(session.scalars(query if seen is None else query.where(seen)).all())
    for row in tasks:
        row["openable"] = row.get("id") in openable


def _patient_response(request: Request, me: Principal, patient_id: str, *,
                      reveal: tuple[str, ...], reason: str | None,
                      error: str | None = None) -> Response:
    locale = locale_of(request)
    with transaction() as session:
        patient = session.get(Patient, patient_id)
        if patient is None:
            raise HTTPException(status_code=404)
        view = console.patient_view(session, patient, reveal=reveal,
                                    hidden=hidden_stays(session, me, patient_id))
        _mark_openable(session, me, view.tasks)
        panels = []
        for _, panel in sorted(loaded_registry().catalogue("patient_panel").items(),
                               key=lambda item: item[1].order):
            panels.append((panel, panel.render(session, patient_id, me, locale)))
        names = console.department_names(session)
        # the audit row last: in the same transaction (it commits with the page's reads or not
        # at all), holding the audit chain's lock for the end of the transaction only
        if reveal:
            record(request, me, "patient.reveal", session=session, object_type="patient",
                   object_id=patient_id, patient_id=patient_id,
                   details={"fields": list(reveal), "reason": reason})
        else:
            record(request, me, "patient.view", session=session, object_type="patient",
                   object_id=patient_id, patient_id=patient_id)
    return render(request, "patient.html", patient=view, panels=panels, departments=names,
                  now=now_utc(), display=Display(locale, departments=names),
                  can_reveal=me.can(PATIENT_REVEAL), can_work=me.can(TASK_WORK), error=error)


@router.get("/definitions")
def definitions(request: Request, kind: str | None = None,
                me: Principal = NEEDS_DEFINITIONS_VIEW) -> Response:
    with transaction() as session:
        rows = [{"kind": r.kind, "key": r.key, "version": r.version, "title": r.title,
                 "app": r.app_id, "created_at": r.created_at}
                for r in store.list_current(session, kind=kind or None)]
    return render(request, "definitions.html", rows=rows)


# --- the engines in the console: staff-entry forms, submissions, complaints, dashboards ------

STAFF_FORM_HEADERS = {"Cache-Control": "no-store"}


async def _form_fields(request: Request) -> dict[str, list[str]]:
    """Dependency, pure I/O (no database): the posted text fields."""
    data = await request.form(max_files=0, max_fields=2000)
    fields: dict[str, list[str]] = {}
    for name, value in data.multi_items():
        if isinstance(value, str):
            fields.setdefault(name, []).append(value)
    return fields


FORM_FIELDS = Depends(_form_fields)


def _task_entry(session: object, task: Task) -> object:
    from sqlalchemy.orm import Session

    from careloop.web.staffentry import draft_request

    assert isinstance(session, Session)
    if not task.form_key or task.patient_id is None:
        raise HTTPException(status_code=404)
    return draft_request(session, form_key=task.form_key, patient_id=task.patient_id,
                         encounter_id=task.encounter_id, source_ref=f"task:{task.id}")


@router.get("/tasks/{task_id}/form")
@patient_level("task_id", via="task")
def task_form(request: Request, task_id: int = Path(ge=1, le=MAX_ID), page: int | None = None,
              me: Principal = NEEDS_TASK_WORK) -> Response:
    """A phone follow-up task's form in staff-entry mode (channel ``phone``)."""
    from careloop.forms.models import FormRequest
    from careloop.web.deps import csrf_token_of
    from careloop.web.staffentry import open_entry

    with transaction() as session:
        task = _task_or_404(session, task_id)
        if task.status not in ("open", "in_progress"):
            return RedirectResponse(f"/tasks/{task_id}", status_code=303)
        entry = _task_entry(session, task)
        assert isinstance(entry, FormRequest)
        html = open_entry(session, entry, url=f"/tasks/{task_id}/form",
                          csrf=csrf_token_of(request) or "", locale=locale_of(request),
                          page=page)
        record(request, me, "patient.view", session=session, object_type="task_form",
               object_id=str(task_id), patient_id=task.patient_id)
    return Response(html, media_type="text/html; charset=utf-8", headers=STAFF_FORM_HEADERS)


@router.post("/tasks/{task_id}/form")
@patient_level("task_id", via="task")
def task_form_post(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
                   me: Principal = NEEDS_TASK_WORK,
                   fields: dict[str, list[str]] = FORM_FIELDS) -> Response:
    from careloop.forms.models import FormRequest
    from careloop.forms.runtime import SubmissionInvalid
    from careloop.web.deps import csrf_token_of
    from careloop.web.staffentry import post_entry

    with transaction() as session:
        task = _task_or_404(session, task_id)
        if task.status not in ("open", "in_progress"):
            return RedirectResponse(f"/tasks/{task_id}", status_code=303)
        entry = _task_entry(session, task)
        assert isinstance(entry, FormRequest)
        try:
            result = post_entry(session, entry, fields, url=f"/tasks/{task_id}/form",
                                csrf=csrf_token_of(request) or "", locale=locale_of(request),
                                username=me.username)
        except SubmissionInvalid:
            raise HTTPException(status_code=422) from None
        if result.submission is not None:
            record(request, me, "task.form_submitted", session=session, object_type="task",
                   object_id=str(task_id), patient_id=task.patient_id,
                   details={"submission_id": result.submission.id})
            return RedirectResponse(f"/tasks/{task_id}?submitted={result.submission.id}",
                                    status_code=303)
    return _entry_response(result)


def _entry_response(result: object) -> Response:
    from fastapi.responses import JSONResponse

    from careloop.web.staffentry import EntryResult

    assert isinstance(result, EntryResult)
    if result.data is not None:
        return JSONResponse(result.data, headers=STAFF_FORM_HEADERS)
    return Response(result.html or "", status_code=result.status,
                    media_type="text/html; charset=utf-8", headers=STAFF_FORM_HEADERS)


@router.get("/submissions/{submission_id}")
@patient_level("submission_id", via="submission")
def submission_page(request: Request, submission_id: int = Path(ge=1, le=MAX_ID),
                    me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    """One submission with the labels of its own form version, and its rule trace; phone and
    ID numbers the patient typed are masked."""
    return _submission_response(request, me, submission_id, reason=None)


@router.post("/submissions/{submission_id}/reveal")
@patient_level("submission_id", via="submission")
def submission_reveal(request: Request, submission_id: int = Path(ge=1, le=MAX_ID),
                      reason: str = Form(max_length=200),
                      me: Principal = NEEDS_PATIENT_REVEAL) -> Response:
    """The same page with the typed identifiers shown, for a reason; audited as
    ``patient.reveal`` (the answers' keys and the reason) like the patient card's reveal."""
    reason = reason.strip()
    if not reason:
        return _submission_response(request, me, submission_id, reason=None,
                                    error=t("web.reveal.reason_required", locale_of(request)))
    return _submission_response(request, me, submission_id, reason=reason)


def _submission_response(request: Request, me: Principal, submission_id: int, *,
                         reason: str | None, error: str | None = None) -> Response:
    from careloop.forms.models import Submission
    from careloop.forms.pages import describe
    from careloop.forms.runtime import load_form
    from careloop.rules.runtime import classifications_for, trace_for_submission
    from careloop.web.routes_forms import submission_visible

    locale = locale_of(request)
    with transaction() as session:
        sub = session.get(Submission, submission_id)
        if sub is None:
            raise HTTPException(status_code=404)
        if sub.patient_id is None and not submission_visible(session, me, sub):
            raise HTTPException(status_code=403)  # a touchpoint's answer: its department
        row, spec = load_form(session, sub.form_key, sub.form_version)
        data = {"id": sub.id, "form": sub.form_key, "version": sub.form_version,
                "title": row.title, "patient_id": sub.patient_id, "channel": sub.channel,
                "entered_by": sub.entered_by, "status": sub.status,
                "submitted_at": sub.submitted_at, "scores": sub.scores, "bands": sub.bands,
                "proxy_relation": sub.proxy_relation, "touchpoint": sub.touchpoint_key}
        masked = [a["key"] for a in describe(spec, sub.answers, locale) if a.get("masked")]
        answers = describe(spec, sub.answers, locale, reveal=reason is not None)
        traces = trace_for_submission(session, submission_id)
        classes = classifications_for(session, submission_id)
        if reason is not None:
            record(request, me, "patient.reveal", session=session, object_type="submission",
                   object_id=str(submission_id), patient_id=sub.patient_id,
                   details={"fields": masked, "reason": reason})
        else:
            record(request, me, "patient.view", session=session, object_type="submission",
                   object_id=str(submission_id), patient_id=sub.patient_id)
    return render(request, "submission.html", sub=data, answers=answers, traces=traces,
                  classifications=classes, revealed=reason is not None,
                  can_reveal=bool(masked) and me.can(PATIENT_REVEAL), error=error)


@router.get("/complaints")
def complaints_page(request: Request, status: str = "",
                    me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    from careloop.web import complaints

    status = status if status in ("received", "in_review", "resolved") else ""
    with transaction() as session:
        rows = complaints.list_complaints(session, me, status or None)
        summary = complaints.summary(session, me, rows)
        names = console.department_names(session)
    return render(request, "complaints.html", rows=rows, summary=summary, status=status,
                  departments=names)


@router.get("/complaints/{submission_id}")
@patient_level("submission_id", via="complaint")
def complaint_page(request: Request, submission_id: int = Path(ge=1, le=MAX_ID),
                   me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    from careloop.web import complaints

    with transaction() as session:
        try:
            sub = complaints.get_complaint(session, submission_id)
        except complaints.NotAComplaint:
            raise HTTPException(status_code=404) from None
        data = complaints.complaint_json(session, sub)
        _mark_openable(session, me, data["tasks"])
        description = (sub.answers or {}).get("description")
        # phone and ID numbers typed into the text are masked (shown on the submission page's
        # audited reveal)
        data["description"] = (mask_in_text(description)[0] if isinstance(description, str)
                               else description)
        # Seen as the department's complaint (not as one of their patients): no patient link.
        data["patient_link"] = (sub.patient_id is not None
                                and can_see_patient(session, me, sub.patient_id))
        about_me = complaints.names_staff(sub, me)
        record(request, me, "patient.view", session=session, object_type="complaint",
               object_id=str(submission_id), patient_id=sub.patient_id,
               details=None if data["patient_link"] else {"access": "department"})
        names = console.department_names(session)
    return render(request, "complaint.html", c=data, departments=names,
                  can_manage=me.can(COMPLAINTS_MANAGE) and not about_me)


@router.post("/complaints/{submission_id}/resolve")
@patient_level("submission_id", via="complaint")
def complaint_resolve(request: Request, submission_id: int = Path(ge=1, le=MAX_ID),
                      notes: str = Form("", max_length=2000),
                      me: Principal = NEEDS_COMPLAINTS_MANAGE) -> Response:
    """Resolve a complaint: needs ``complaints.manage``; nobody resolves one naming them."""
    from careloop.web import complaints

    with transaction() as session:
        try:
            sub = complaints.get_complaint(session, submission_id)
        except complaints.NotAComplaint:
            raise HTTPException(status_code=404) from None
        try:
            complaints.resolve(session, sub, me, notes=notes)
        except complaints.AlreadyResolved:
            return render(request, "error.html", status_code=409,
                          message=t("web.complaint.already_resolved", locale_of(request)))
        except complaints.AboutYourself:
            record(request, me, "complaint.resolve", outcome="denied",
                   object_type="submission", object_id=str(submission_id),
                   patient_id=sub.patient_id, details={"reason": "about_yourself"})
            return render(request, "error.html", status_code=403,
                          message=t("web.sod.complaint_about_you", locale_of(request)))
    return RedirectResponse(f"/complaints/{submission_id}", status_code=303)


def _intake_entry(session: object, patient_id: str, me: Principal) -> object:
    from sqlalchemy.orm import Session

    from careloop.web.staffentry import draft_request

    assert isinstance(session, Session)
    if session.get(Patient, patient_id) is None:
        raise HTTPException(status_code=404)
    return draft_request(session, form_key="complaint", patient_id=patient_id,
                         encounter_id=None, source_ref=f"intake:{me.user_id}:{patient_id}")


@router.get("/patients/{patient_id}/complaint")
@patient_level("patient_id")
def complaint_intake(request: Request, patient_id: str, page: int | None = None,
                     me: Principal = NEEDS_TASK_WORK) -> Response:
    """Staff enter a complaint received by phone, at the desk, by letter…: the complaint form
    in staff-entry mode."""
    from careloop.forms.models import FormRequest
    from careloop.web.deps import csrf_token_of
    from careloop.web.staffentry import open_entry

    with transaction() as session:
        entry = _intake_entry(session, patient_id, me)
        assert isinstance(entry, FormRequest)
        html = open_entry(session, entry, url=f"/patients/{patient_id}/complaint",
                          csrf=csrf_token_of(request) or "", locale=locale_of(request),
                          page=page)
    return Response(html, media_type="text/html; charset=utf-8", headers=STAFF_FORM_HEADERS)


@router.post("/patients/{patient_id}/complaint")
@patient_level("patient_id")
def complaint_intake_post(request: Request, patient_id: str,
                          me: Principal = NEEDS_TASK_WORK,
                          fields: dict[str, list[str]] = FORM_FIELDS) -> Response:
    from careloop.forms.models import FormRequest
    from careloop.web.deps import csrf_token_of
    from careloop.web.staffentry import post_entry

    with transaction() as session:
        entry = _intake_entry(session, patient_id, me)
        assert isinstance(entry, FormRequest)
        result = post_entry(session, entry, fields, url=f"/patients/{patient_id}/complaint",
                            csrf=csrf_token_of(request) or "", locale=locale_of(request),
                            username=me.username)
        if result.submission is not None:
            return RedirectResponse(f"/complaints/{result.submission.id}", status_code=303)
    return _entry_response(result)


@router.get("/dashboards")
def dashboards(request: Request, me: Principal = NEEDS_REPORTS_VIEW) -> Response:
    with transaction() as session:
        rows = [{"key": r.key, "title": r.title, "app": r.app_id, "version": r.version}
                for r in store.list_current(session, kind="dashboard")]
    return render(request, "dashboards.html", rows=rows)


@router.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for /favicon.ico on pages without an icon link (e.g. form pages)."""
    return RedirectResponse("/static/favicon.svg", status_code=301)
