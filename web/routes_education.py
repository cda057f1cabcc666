"""The education library's pages (:mod:`careloop.flows.education`,
:mod:`careloop.flows.education_send`).

Patients (the link token is the only key, like ``/f/`` and ``/r/``; never cached):

* ``GET /e/{token}`` — the item as it was sent (Markdown rendered and sanitised, the video or the
  PDF link), zh-CN or en (``?lang=``), large text (``?large=1``); the first opening is recorded;
* ``POST /e/{token}/read`` — the page's own script (``/static/education.js``) posts once when the
  end of the page comes into view: read to the end;
* ``GET /e/{token}/media`` — the item's video or PDF.

Staff (signed in, scoped to their departments):

* ``GET /education`` — the library: every current item of the user's departments with how often
  it was sent, opened and read to the end, and the files uploaded;
* ``POST /education/media`` — upload a video or PDF for a department (audited); the page then
  shows the reference an item's ``media`` names;
* ``GET /education/media/{sha256}`` — preview an uploaded file;
* the patient 360 section ``健康宣教 / Health education``: what was sent, opened and read.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careloop.engine.db import transaction
from careloop.engine.domain import Department, Patient
from careloop.engine.errors import NotFound
from careloop.engine.i18n import normalise_locale, pick, t
from careloop.flows import education_send as edu
from careloop.flows.education import current
from careloop.flows.education_models import EducationSend
from careloop.flows.receipts import record_open
from careloop.web.deps import locale_of, record, require
from careloop.web.display import Display, local_time
from careloop.web.permissions import (
    BUILDER_EDIT,
    DEFINITIONS_VIEW,
    Principal,
    hidden_stays,
)
from careloop.web.render import environment, render

router = APIRouter(include_in_schema=False)
NEEDS_DEFINITIONS_VIEW = Depends(require(DEFINITIONS_VIEW))
NEEDS_BUILDER_EDIT = Depends(require(BUILDER_EDIT))
NO_STORE = {"Cache-Control": "no-store"}
UPLOAD = File()
TOKEN = PathParam(min_length=16, max_length=128)


# --- the patient's page ---------------------------------------------------------------------

def _unavailable(locale: str, key: str, status: int) -> Response:
    from careloop.forms.pages import render_message

    return HTMLResponse(render_message(t("edu.page.unavailable_title", locale), t(key, locale),
                                       locale, next_step=True),
                        status_code=status, headers=NO_STORE)


@router.get("/e/{token}", response_class=HTMLResponse)
def reading_page(token: str = TOKEN, lang: str | None = Query(None, max_length=8),
                 large: int = Query(0, ge=0, le=1)) -> Response:
    from careloop.forms.pages import hospital_context, render_markdown

    with transaction() as session:
        try:
            reading = edu.open_link(session, token)
            record_open(session, token)
        except NotFound:
            return _unavailable(normalise_locale(lang), "edu.page.not_found", 404)
        except edu.LinkExpired:
            return _unavailable(normalise_locale(lang), "edu.page.expired", 410)
        patient = session.get(Patient, reading.send.patient_id)
        locale = normalise_locale(lang or (patient.locale if patient is not None else None))
        owner = session.get(Department, reading.spec.department)
        department = pick(owner.name, locale) if owner is not None else ""
    spec = reading.spec
    bodies = dict(spec.body)
    body_locale = locale if locale in bodies else next(iter(bodies), locale)

    def translate(key: str, **params: object) -> str:
        return t(key, locale, **params)

    html = environment().get_template("education_article.html").render(
        _=translate, locale=locale, title=pick(dict(spec.title), locale), large=bool(large),
        department=department, minutes=spec.minutes, format=spec.format,
        body=render_markdown(spec.text(locale)) if bodies else "", body_locale=body_locale,
        media_url=f"/e/{token}/media" if spec.media else None, read_url=f"/e/{token}/read",
        path=f"/e/{token}", other_locale="en" if locale == "zh-CN" else "zh-CN",
        **hospital_context(locale))
    return HTMLResponse(html, headers=NO_STORE)


def _same_origin(request: Request) -> None:
    """The read mark comes from the page's own script: a browser posting from another site
    sends its ``Origin``, which must then be ours."""
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise HTTPException(status_code=403)


@router.post("/e/{token}/read")
def read_to_end(request: Request, token: str = TOKEN) -> Response:
    _same_origin(request)
    with transaction() as session:
        try:
            edu.mark_read(session, token)
        except NotFound:
            raise HTTPException(status_code=404) from None
        except edu.LinkExpired:
            raise HTTPException(status_code=410) from None
    return Response(status_code=204, headers=NO_STORE)


def _file(row: Any) -> Response:
    return Response(row.data, media_type=row.content_type, headers={
        **NO_STORE, "X-Content-Type-Options": "nosniff",
        "Content-Disposition": "inline"})


@router.get("/e/{token}/media")
def reading_media(token: str = TOKEN) -> Response:
    with transaction() as session:
        try:
            reading = edu.open_link(session, token)
            if reading.spec.media is None:
                raise NotFound("no file")
            return _file(edu.media(session, reading.spec.media))
        except NotFound:
            raise HTTPException(status_code=404) from None
        except edu.LinkExpired:
            raise HTTPException(status_code=410) from None


# --- staff: the library ---------------------------------------------------------------------

def _counts(session: Session) -> dict[str, dict[str, int]]:
    rows = session.execute(select(EducationSend.article_key, EducationSend.status,
                                  func.count()).group_by(EducationSend.article_key,
                                                         EducationSend.status)).all()
    out: dict[str, dict[str, int]] = {}
    for key, status, n in rows:
        seen = out.setdefault(key, {"sent": 0, "opened": 0, "read": 0})
        seen["sent"] += n
        if status in ("opened", "read"):
            seen["opened"] += n
        if status == "read":
            seen["read"] += n
    return out


def _mine(me: Principal, department: str) -> bool:
    return me.scope is None or department in me.scope


def _library(request: Request, me: Principal, *, error: str | None = None,
             uploaded: str | None = None, status: int = 200) -> Response:
    locale = locale_of(request)
    d = Display(locale)
    with transaction() as session:
        counts = _counts(session)
        items = [{"key": s.key, "title": pick(dict(s.title), locale), "version": v,
                  "department": d.label("department", s.department),
                  "format": t(f"edu.format.{s.format}", locale),
                  "stages": "、".join(t(f"edu.stage.{x}", locale) for x in s.stages),
                  "diseases": ", ".join(s.diseases) or t("edu.lib.any_disease", locale),
                  **counts.get(s.key, {"sent": 0, "opened": 0, "read": 0})}
                 for v, s in current(session) if _mine(me, s.department)]
        files = [{**f, "department": d.label("department", f["department_id"]),
                  "at": local_time(f["created_at"]), "kb": max(1, f["size"] // 1024)}
                 for f in edu.uploads(session, None if me.scope is None else sorted(me.scope))]
        departments = [(row.id, pick(row.name, locale)) for row in session.scalars(
            select(Department).order_by(Department.id)) if _mine(me, row.id)]
    return render(request, "education_library.html", status_code=status, items=items,
                  files=files, departments=departments, error=error, uploaded=uploaded,
                  can_upload=me.can(BUILDER_EDIT))


@router.get("/education")
def library(request: Request, uploaded: str | None = Query(None, pattern="^[0-9a-f]{64}$"),
            me: Principal = NEEDS_DEFINITIONS_VIEW) -> Response:
    return _library(request, me, uploaded=uploaded)


@router.post("/education/media")
def upload_media(request: Request, file: UploadFile = UPLOAD,
                 department: str = Form(..., max_length=64),
                 me: Principal = NEEDS_BUILDER_EDIT) -> Response:
    """Keep a video or PDF for ``department`` (one of the uploader's)."""
    locale = locale_of(request)
    if not _mine(me, department):
        return _library(request, me, error=t("edu.upload.not_yours", locale), status=403)
    data = file.file.read(edu.MAX_MEDIA_BYTES + 1)
    try:
        with transaction() as session:
            if session.get(Department, department) is None:
                raise edu.EducationError("edu.upload.no_department")
            row = edu.store_media(session, data, filename=file.filename or "upload",
                                  department=department, actor=me.username)
            digest = row.sha256
            record(request, me, "education.media_upload", session=session,
                   object_type="education_media", object_id=digest[:16],
                   details={"zh-CN": f"上传宣教文件（{row.size // 1024} KB）",
                            "en": f"Uploaded an education file ({row.size // 1024} KB)"})
    except edu.EducationError as exc:
        return _library(request, me, error=t(str(exc), locale), status=422)
    return RedirectResponse(f"/education?uploaded={digest}", status_code=303)


@router.get("/education/media/{sha256}")
def staff_media(sha256: str = PathParam(pattern="^[0-9a-f]{64}$"),
                me: Principal = NEEDS_DEFINITIONS_VIEW) -> Response:
    with transaction() as session:
        try:
            row = edu.media(session, sha256)
        except NotFound:
            raise HTTPException(status_code=404) from None
        if not _mine(me, row.department_id):
            raise HTTPException(status_code=403)
        return _file(row)


# --- patient 360 ----------------------------------------------------------------------------

def _when(value: Any, key: str, locale: str) -> str:
    return t(key, locale, at=local_time(value)) if value is not None else ""


def panel_education(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    """What the patient was sent, and whether and when they opened and read it, in words."""
    d = Display(locale, session)
    hidden = hidden_stays(session, me, patient_id)
    rows = [s for s in edu.sends_for(session, patient_id) if not hidden.hides(s.encounter_id)]
    if not rows:
        return Markup('<p class="empty">{}</p>').format(t("web.none", locale))
    items = []
    for s in rows:
        steps = [t("edu.p360.sent", locale, at=local_time(s.sent_at),
                   channel=d.label("channel", s.channel))]
        steps.append(_when(s.opened_at, "edu.p360.opened", locale)
                     or t("edu.p360.not_opened", locale))
        if s.opened_at is not None:
            steps.append(_when(s.read_at, "edu.p360.read", locale)
                         or t("edu.p360.not_read", locale))
        items.append(Markup('<li class="edu-send edu-{}">{}</li>').format(s.status, t(
            "edu.p360.item", locale, title=d.label("education", s.article_key),
            department=d.label("department", s.department_id),
            steps=("；" if locale == "zh-CN" else "; ").join(steps))))
    return Markup('<ul class="education-sends" id="education-sends">{}</ul>').format(
        Markup("").join(items))


def register(registry: Any) -> None:
    from careloop.web.permissions import DEFINITIONS_VIEW as VIEW
    from careloop.web.render import NavItem, PatientPanel

    registry.catalogue("patient_panel").register("education", PatientPanel(
        title={"zh-CN": "健康宣教", "en": "Health education"}, order=42,
        render=panel_education))
    registry.catalogue("csrf_exempt").register("education_read", "/e/")
    registry.catalogue("web_nav").register("education", NavItem(
        "edu.lib.title", "/education", VIEW, 83))
