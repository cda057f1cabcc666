"""Consult / Q&A pages (thin: they call careloop.flows.consult_runtime).

The patient, without signing in (the link's token is the key, as on ``/d/`` and ``/r/``):

* ``GET|POST /q/ask/{kind}/{token}`` — 咨询: ask a question from a patient page (``kind``: ``d``
  a discharge paper, ``r`` lab results, ``q`` an earlier question's thread); the desk of the
  latest stay's department is chosen first;
* ``GET /q/{token}`` — the thread: the question, when it will be answered, the answer, who gave
  it and when (hospital local time); the first reading of the answer is recorded and audited.

Staff (signed in, scoped like tasks: the consult's task must be in their lists):

* ``GET /consults`` — the consult inbox: open questions first, with answer time and overdue;
* ``GET /consults/{id}`` — the thread with the patient's name (phone numbers typed into the
  question masked) and the answer form (free text, or a canned answer chosen by title);
* ``POST /consults/{id}/answer`` and ``POST /tasks/{task_id}/consult`` (the same, from the
  consult's task) — answer; the patient gets the ``consult_answer`` message on their channel.

Every staff reading and every answer is audited; the patient 360 page shows the threads.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Patient, Task, User
from careloop.engine.errors import NotFound
from careloop.engine.i18n import normalise_locale, pick, t
from careloop.engine.privacy import mask_in_text, mask_phone
from careloop.flows import consult as desks
from careloop.flows import consult_runtime as consult
from careloop.flows.consult_models import Consult
from careloop.web.deps import locale_of, record, require
from careloop.web.display import local_time
from careloop.web.permissions import (
    PATIENT_VIEW,
    TASK_WORK,
    Principal,
    can_see_task,
    task_visibility,
)
from careloop.web.render import environment, render
from careloop.web.routes_console import FORM_FIELDS
from careloop.web.scoping import patient_level

router = APIRouter(include_in_schema=False)
NEEDS_PATIENT_VIEW = Depends(require(PATIENT_VIEW))
NEEDS_TASK_WORK = Depends(require(TASK_WORK))
NO_STORE = {"Cache-Control": "no-store"}


# --- the patient -------------------------------------------------------------------------------

def _patient_page(template: str, locale: str, status: int = 200, **context: Any) -> Response:
    from careloop.forms.pages import hospital_context

    def translate(key: str, **params: object) -> str:
        return t(key, locale, **params)

    html = environment().get_template(template).render(
        _=translate, locale=locale, other_locale="en" if locale == "zh-CN" else "zh-CN",
        **hospital_context(locale), **context)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def _unavailable(locale: str, expired: bool) -> Response:
    from careloop.forms.pages import render_message

    key = "consult.page.expired" if expired else "consult.page.not_found"
    return HTMLResponse(render_message(t("consult.page.title", locale), t(key, locale), locale,
                                       next_step=True),
                        status_code=410 if expired else 404, headers=NO_STORE)


def _entry(session: Session, kind: str, token: str) -> str:
    """The patient of a patient link; raises NotFound, or a link module's LinkExpired."""
    if kind not in consult.ENTRY_KINDS:
        raise NotFound("no such patient link")
    return consult.patient_of_link(session, kind, token)


def _expired(exc: Exception) -> bool:
    return type(exc).__name__ == "LinkExpired"


def _ask_page(session: Session, patient_id: str, locale: str, path: str, *,
              desk: str | None = None, question: str = "",
              errors: dict[str, str] | None = None, status: int = 200) -> Response:
    found = desks.all_desks(session)
    chosen = desk or consult.suggested_desk(session, patient_id, found)
    options = [{"key": d.key, "title": d.title_in(locale), "hours": f"{d.working_hours:g}",
                "selected": d.key == chosen} for d in found]
    return _patient_page("consult_ask.html", locale, status, path=path, desks=options,
                         question=question, errors=errors or {},
                         max_question=consult.MAX_QUESTION)


@router.get("/q/ask/{kind}/{token}", response_class=HTMLResponse)
def ask_page(kind: str, token: str, request: Request,
             lang: str | None = Query(None, max_length=8)) -> Response:
    with transaction() as session:
        try:
            patient_id = _entry(session, kind, token)
        except Exception as exc:  # NotFound, LinkExpired of the link's own module
            if isinstance(exc, NotFound) or _expired(exc):
                return _unavailable(normalise_locale(lang), _expired(exc))
            raise
        patient = session.get(Patient, patient_id)
        locale = normalise_locale(lang or (patient.locale if patient is not None else None))
        return _ask_page(session, patient_id, locale, request.url.path)


@router.post("/q/ask/{kind}/{token}", response_class=HTMLResponse)
def ask_post(kind: str, token: str, request: Request,
             fields: dict[str, list[str]] = FORM_FIELDS) -> Response:
    locale = normalise_locale(_one(fields, "_lang"))
    desk, question = _one(fields, "desk"), _one(fields, "question") or ""
    with transaction() as session:
        try:
            patient_id = _entry(session, kind, token)
        except Exception as exc:
            if isinstance(exc, NotFound) or _expired(exc):
                return _unavailable(locale, _expired(exc))
            raise
        try:
            _, thread_token = consult.ask(session, patient_id=patient_id, desk_key=desk or "",
                                          question=question, via=kind, locale=locale)
        except consult.ConsultError as exc:
            return _ask_page(session, patient_id, locale, request.url.path, desk=desk,
                             question=question[:consult.MAX_QUESTION * 2],
                             errors={exc.field: t(exc.key, locale)}, status=422)
    return RedirectResponse(f"/q/{thread_token}?lang={locale}&asked=1", status_code=303)


@router.get("/q/{token}", response_class=HTMLResponse)
def thread_page(token: str, lang: str | None = Query(None, max_length=8),
                asked: int = Query(0, ge=0, le=1)) -> Response:
    with transaction() as session:
        try:
            found = consult.open_thread(session, token)
        except NotFound:
            return _unavailable(normalise_locale(lang), False)
        except consult.LinkExpired:
            return _unavailable(normalise_locale(lang), True)
        locale = normalise_locale(lang or found.locale)
        view = consult.thread(session, found, locale)
    return _patient_page("consult_thread.html", locale, path=f"/q/{token}", thread=view,
                         asked=bool(asked), asked_at=local_time(view.asked_at),
                         due_at=local_time(view.due_at),
                         answered_at=local_time(view.answered_at),
                         ask_again=f"/q/ask/q/{token}")


def _one(fields: dict[str, list[str]], name: str) -> str | None:
    values = fields.get(name) or []
    return values[0] if values else None


# --- staff -------------------------------------------------------------------------------------

def _visible_consults(session: Session, me: Principal) -> list[tuple[Consult, Task]]:
    query = select(Consult, Task).join(Task, Task.id == Consult.task_id)
    condition = task_visibility(me)
    if condition is not None:
        query = query.where(condition)
    rows = session.execute(query.order_by(Consult.status.desc(), Consult.due_at,
                                          Consult.id).limit(500)).all()
    return [(row[0], row[1]) for row in rows]


def _row(session: Session, item: Consult, task: Task, locale: str) -> dict[str, Any]:
    patient = session.get(Patient, item.patient_id)
    department = session.get(Department, item.department_id) if item.department_id else None
    holder = session.get(User, task.assignee_user_id) if task.assignee_user_id else None
    view = consult.thread(session, item, locale)
    return {"id": item.id, "patient": patient.name if patient else "",
            "patient_id": item.patient_id,
            "phone": mask_phone(patient.phone) if patient else "",
            "desk": view.desk,
            "department": pick(department.name, locale) if department else "",
            "question": mask_in_text(item.question)[0],
            "asked_at": local_time(item.asked_at), "due_at": local_time(item.due_at),
            "overdue": item.status == "open" and item.due_at <= now_utc(),
            "answered": item.status == "answered",
            "status": t(f"consult.status.{item.status}", locale),
            "holder": holder.display_name if holder else "",
            "escalated": int((task.escalation or {}).get("level", 0)) > 0,
            "answer": view.answer, "answered_by": view.answered_by or "",
            "answered_at": local_time(view.answered_at), "read_at": local_time(view.read_at),
            "canned_title": view.canned_title or "", "task_id": item.task_id}


@router.get("/consults", response_class=HTMLResponse)
def consult_inbox(request: Request, me: Principal = NEEDS_TASK_WORK) -> Response:
    locale = locale_of(request)
    with transaction() as session:
        rows = [_row(session, c, task, locale) for c, task in _visible_consults(session, me)]
        record(request, me, "consult.list", session=session, object_type="consult",
               details={"count": len(rows)})
    return render(request, "consults.html", consults=rows)


def _consult(session: Session, me: Principal, consult_id: int) -> Consult:
    found = session.get(Consult, consult_id)
    if found is None or found.task_id is None or not can_see_task(session, me, found.task_id):
        raise HTTPException(status_code=404)
    return found


def _detail(request: Request, me: Principal, consult_id: int, *, status_code: int = 200,
            error: str | None = None, answer: str = "") -> Response:
    locale = locale_of(request)
    with transaction() as session:
        found = _consult(session, me, consult_id)
        task = session.get(Task, found.task_id)
        assert task is not None  # _consult checked it
        row = _row(session, found, task, locale)
        desk = desks.load(session, found.desk_key)
        canned = [{"key": c.key, "title": c.title_in(locale),
                   "text": c.text_in(found.locale)} for c in desk.canned]
        record(request, me, "consult.view", session=session, object_type="consult",
               object_id=str(found.id), patient_id=found.patient_id)
    return render(request, "consult.html", status_code=status_code, c=row, canned=canned,
                  error=error, answer=answer, may_answer=me.can(TASK_WORK))


@router.get("/consults/{consult_id}", response_class=HTMLResponse)
@patient_level("consult_id", via="consult")
def consult_page(request: Request, consult_id: int,
                 me: Principal = NEEDS_TASK_WORK) -> Response:
    return _detail(request, me, consult_id)


def _answer(request: Request, me: Principal, consult_id: int,
            fields: dict[str, list[str]]) -> Response:
    text, canned_key = _one(fields, "answer"), _one(fields, "canned")
    try:
        with transaction() as session:
            found = _consult(session, me, consult_id)
            user = session.get(User, me.user_id)
            assert user is not None  # the signed-in user
            message_id = consult.answer(session, found, user=user, text=text,
                                        canned_key=canned_key)
            record(request, me, "consult.answer", session=session, object_type="consult",
                   object_id=str(found.id), patient_id=found.patient_id,
                   details={"message": message_id, "canned": canned_key or None})
    except consult.ConsultError as exc:
        return _detail(request, me, consult_id, status_code=422,
                       error=t(exc.key, locale_of(request)), answer=text or "")
    return RedirectResponse(f"/consults/{consult_id}?answered=1", status_code=303)


@router.post("/consults/{consult_id}/answer")
@patient_level("consult_id", via="consult")
def answer_consult(request: Request, consult_id: int,
                   fields: dict[str, list[str]] = FORM_FIELDS,
                   me: Principal = NEEDS_TASK_WORK) -> Response:
    return _answer(request, me, consult_id, fields)


def _of_task(task_id: int) -> int:
    with transaction() as session:
        found = session.scalars(select(Consult.id).where(Consult.task_id == task_id)).first()
    if found is None:
        raise HTTPException(status_code=404)
    return found


@router.get("/tasks/{task_id}/consult")
@patient_level("task_id", via="task")
def task_consult(request: Request, task_id: int, me: Principal = NEEDS_TASK_WORK) -> Response:
    return RedirectResponse(f"/consults/{_of_task(task_id)}", status_code=303)


@router.post("/tasks/{task_id}/consult")
@patient_level("task_id", via="task")
def answer_task_consult(request: Request, task_id: int,
                        fields: dict[str, list[str]] = FORM_FIELDS,
                        me: Principal = NEEDS_TASK_WORK) -> Response:
    return _answer(request, me, _of_task(task_id), fields)


# --- patient 360 and registration --------------------------------------------------------------

def panel_consults(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    """The patient 360 section: each thread, question and answer, who answered and when."""
    from careloop.web.permissions import hidden_stays

    hidden = hidden_stays(session, me, patient_id).departments
    threads = [consult.thread(session, c, locale)
               for c in consult.of_patient(session, patient_id)
               if c.department_id not in hidden]
    if not threads:
        return Markup('<p class="empty">{}</p>').format(t("web.none", locale))
    items = Markup("").join(Markup(
        '<li class="consult-thread"><p><strong>{}</strong> · {} · {}</p>'
        '<p class="question">{}</p>{}</li>').format(
            v.desk, t("consult.asked_at", locale, at=local_time(v.asked_at)),
            t(f"consult.status.{v.status}", locale), mask_in_text(v.question)[0],
            Markup('<p class="answer">{}</p><p class="meta">{}</p>').format(
                v.answer, t("consult.answered_line", locale, who=v.answered_by or "",
                            at=local_time(v.answered_at)))
            if v.answer else Markup('<p class="meta">{}</p>').format(
                t("consult.due_line", locale, at=local_time(v.due_at))))
        for v in threads)
    return Markup('<ul class="consult-threads" id="consult-threads">{}</ul>').format(items)


def _consult_patient(session: Session, value: str) -> str | None:
    found = session.get(Consult, int(value)) if value.isdigit() and len(value) < 10 else None
    return found.patient_id if found is not None else None


def _may_open(session: Session, principal: Principal, value: str) -> bool:
    found = session.get(Consult, int(value)) if value.isdigit() and len(value) < 10 else None
    return (found is not None and found.task_id is not None
            and can_see_task(session, principal, found.task_id))


def register(registry: Any) -> None:
    from careloop.web.render import NavItem, PatientPanel

    registry.catalogue("patient_panel").register("consults", PatientPanel(
        title={"zh-CN": "在线咨询", "en": "Questions"}, order=27, render=panel_consults))
    registry.catalogue("patient_resolver").register("consult", _consult_patient)
    registry.catalogue("object_access").register("consult", _may_open)
    registry.catalogue("csrf_exempt").register("consult_ask", "/q/")
    registry.catalogue("web_nav").register("consults", NavItem(
        "consult.nav", "/consults", TASK_WORK, 12))
