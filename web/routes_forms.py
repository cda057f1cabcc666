"""HTTP routes of the form engine (thin: they call careloop.forms).

Staff routes (``/api/v1/…``) need a signed-in user; submissions and their reads also need
``patient.view`` and the patient in the user's scope, and a staff submission records the signed-in
user as ``entered_by`` (never a value from the request body). Patient pages are reached only by
their token.

* ``GET /api/v1/forms/{key}[?version=]`` — the definition (JSON)
* ``GET /api/v1/forms/{key}/fhir`` — as a FHIR Questionnaire
* ``POST /api/v1/forms/{key}/submissions`` — 201 with scores, or 422 with every error
* ``GET /api/v1/submissions/{id}/fhir`` — a submission as a QuestionnaireResponse
* ``GET|POST /f/{token}`` — the patient page (server-side page flow; works without JS)
* ``GET /forms/static/{name}`` — the page's CSS and script (no CDN)
* ``GET /forms/static/types/{name}.css`` — a field type's own stylesheet (``FieldType.css``)
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from careloop.engine import dispatcher
from careloop.engine.db import transaction
from careloop.engine.errors import CareloopError, NotFound
from careloop.engine.i18n import t
from careloop.flows.receipts import record_open
from careloop.forms.fhir import FhirExportError, export_questionnaire, export_response
from careloop.forms.models import Submission
from careloop.forms.pages import describe
from careloop.forms.patient import Reply, open_page, post_page
from careloop.forms.runtime import CHANNELS, SubmissionInvalid, load_form, submit
from careloop.web.api_models import (
    NOT_FOUND,
    ErrorBody,
    ErrorList,
    FhirResource,
    FormOut,
    SubmissionCreated,
    SubmissionOut,
    errors,
)
from careloop.web.deps import Forbidden, csrf_token_of, current, record, require, require_user
from careloop.web.permissions import PATIENT_VIEW, Principal, can_see_patient
from careloop.web.scoping import patient_level

router = APIRouter()
Viewer = Annotated[Principal, Depends(require(PATIENT_VIEW))]
SubmissionId = Annotated[int, Path(ge=1, le=2**31 - 1)]

NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                       "frame-ancestors 'none'"}
STATIC = {"forms.css": "text/css; charset=utf-8", "forms.js": "text/javascript; charset=utf-8"}


class SubmissionIn(BaseModel):
    """A submission entered by staff (e.g. during phone follow-up: ``channel=phone``)."""

    patient_id: str = Field(min_length=1, max_length=64)
    encounter_id: str | None = Field(default=None, max_length=64)
    answers: dict[str, Any]
    channel: str = "phone"
    locale: str = "zh-CN"
    version: int | None = Field(default=None, ge=1, le=2**31 - 1)


@router.get("/api/v1/forms/{key}", dependencies=[Depends(require_user)], response_model=FormOut,
            responses=errors(NOT_FOUND))
def get_form(key: str,
             version: int | None = Query(default=None, ge=1, le=2**31 - 1)) -> dict[str, Any]:
    with transaction() as session:
        try:
            row, spec = load_form(session, key, version)
        except NotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        return {"key": row.key, "version": row.version, "content_hash": row.content_hash,
                "title": row.title, "pages": spec.pages, "field_keys": sorted(spec.field_keys),
                "definition": row.body}


@router.get("/api/v1/forms/{key}/fhir", dependencies=[Depends(require_user)],
            response_model=FhirResource, responses=errors(NOT_FOUND, {
                422: {"model": ErrorBody, "description": "a field type with no FHIR mapping"}}))
def get_form_fhir(key: str, version: int | None = Query(default=None, ge=1, le=2**31 - 1),
                  locale: str = "zh-CN") -> dict[str, Any]:
    with transaction() as session:
        try:
            row, spec = load_form(session, key, version)
        except NotFound as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from exc
        try:
            return export_questionnaire(spec, version=row.version, locale=locale)
        except FhirExportError as exc:  # a field type with no FHIR mapping: refused, said why
            raise HTTPException(status_code=422, detail=str(exc)) from exc


@router.post("/api/v1/forms/{key}/submissions", status_code=201,
             response_model=SubmissionCreated, responses=errors(NOT_FOUND, {
                 400: {"model": ErrorBody, "description": "the form cannot take this post"},
                 422: {"model": ErrorList, "description": "every problem of the answers, with "
                                                          "its path"}}))
def post_submission(key: str, body: SubmissionIn, me: Viewer) -> Any:
    if body.channel not in CHANNELS:
        return JSONResponse(status_code=422, content={"errors": [
            {"path": "channel", "code": "forms.channel", "message": f"unknown channel "
             f"{body.channel!r}; expected one of {', '.join(CHANNELS)}"}]})
    try:
        with transaction() as session:
            if not can_see_patient(session, me, body.patient_id):
                raise Forbidden()
            sub, _result = submit(session, form_key=key, answers=body.answers,
                                  patient_id=body.patient_id, encounter_id=body.encounter_id,
                                  channel=body.channel, entered_by=me.username,
                                  locale=body.locale, version=body.version)
            out = {"submission_id": sub.id, "form": key, "form_version": sub.form_version,
                   "content_hash": sub.content_hash, "answers": sub.answers,
                   "scores": sub.scores, "bands": sub.bands, "status": sub.status}
    except SubmissionInvalid as exc:
        return JSONResponse(status_code=422, content={"errors": exc.errors})
    except NotFound as exc:
        raise HTTPException(status_code=404, detail=str(exc)) from exc
    except CareloopError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from exc
    return out


@router.get("/api/v1/submissions/{submission_id}", response_model=SubmissionOut,
            responses=errors(NOT_FOUND))
@patient_level("submission_id", via="submission")
def get_submission(request: Request, me: Viewer, submission_id: SubmissionId,
                   locale: str = "zh-CN") -> dict[str, Any]:
    """A submission with the labels of the form version it was made with (audited as
    ``patient.view``)."""
    with transaction() as session:
        sub = _visible_submission(session, submission_id, me)
        _, spec = load_form(session, sub.form_key, sub.form_version)
        record(request, me, "patient.view", session=session, object_type="submission",
               object_id=str(sub.id), patient_id=sub.patient_id, details={"via": "api"})
        return {"id": sub.id, "form": sub.form_key, "form_version": sub.form_version,
                "content_hash": sub.content_hash, "patient_id": sub.patient_id,
                "encounter_id": sub.encounter_id, "channel": sub.channel,
                "entered_by": sub.entered_by, "status": sub.status,
                "submitted_at": sub.submitted_at.isoformat(), "scores": sub.scores,
                "bands": sub.bands, "answers": describe(spec, sub.answers, locale),
                "touchpoint": sub.touchpoint_key, "proxy_relation": sub.proxy_relation,
                "answered_by": answered_by(sub.proxy_relation, locale)}


@router.get("/api/v1/submissions/{submission_id}/fhir", response_model=FhirResource,
            responses=errors(NOT_FOUND, {
                422: {"model": ErrorBody, "description": "a field type with no FHIR mapping"}}))
@patient_level("submission_id", via="submission")
def get_submission_fhir(request: Request, me: Viewer,
                        submission_id: SubmissionId) -> dict[str, Any]:
    """A submission as a FHIR QuestionnaireResponse (audited as ``patient.export``)."""
    with transaction() as session:
        sub = _visible_submission(session, submission_id, me)
        if sub.patient_id is None:
            raise HTTPException(status_code=422, detail="an anonymous answer at a touchpoint "
                                "has no patient: it is not a QuestionnaireResponse of one")
        _, spec = load_form(session, sub.form_key, sub.form_version)
        record(request, me, "patient.export", session=session, object_type="submission",
               object_id=str(sub.id), patient_id=sub.patient_id,
               details={"format": "fhir", "form": sub.form_key})
        try:
            return export_response(spec, sub.answers, patient_id=sub.patient_id,
                                   authored=sub.submitted_at.isoformat(), scores=sub.scores)
        except FhirExportError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc


def answered_by(relation: str | None, locale: str) -> str | None:
    """``由 女儿 代答`` for an answer a family member gave; None for the patient's own."""
    if relation is None:
        return None
    from careloop.web.display import label

    return t("tp.proxy.answered_by", locale, relation=label("proxy_relation", relation, locale))


def _visible_submission(session: Session, submission_id: int, me: Principal) -> Submission:
    sub = session.get(Submission, submission_id)
    if sub is None:
        raise HTTPException(status_code=404, detail=f"no submission {submission_id}")
    if not submission_visible(session, me, sub):
        raise Forbidden()
    return sub


def submission_visible(session: Session, me: Principal, sub: Submission) -> bool:
    """A patient's submission: the patient in scope; an anonymous one at a touchpoint: its
    department in scope (hospital-wide staff see every one)."""
    if sub.patient_id is not None:
        return can_see_patient(session, me, sub.patient_id)
    return me.can(PATIENT_VIEW) and (me.scope is None or sub.department_id in me.scope)


def _html(reply: Reply) -> Response:
    if reply.data is not None:
        return JSONResponse(reply.data, status_code=reply.status, headers=NO_STORE)
    return HTMLResponse(reply.html or "", status_code=reply.status, headers=NO_STORE)


@router.get("/f/{token}", response_class=HTMLResponse)
def patient_page(token: str, request: Request, page: int | None = None, lt: int | None = None,
                 lang: str | None = None, nps: int | None = None) -> Response:
    with transaction() as session:
        reply = open_page(session, token, page=page,
                          large_text=None if lt is None else bool(lt), lang=lang, nps=nps,
                          url=request.url.path, csrf=_staff_csrf(request))
        if reply.status < 500 and len(token) <= 128:
            record_open(session, token)  # the message that carried the link: opened
    return _html(reply)


PatientPost = tuple[dict[str, Any], dict[str, tuple[str, str, bytes]]]


async def _read_patient_post(request: Request) -> PatientPost:
    """Dependency, pure I/O (no database): the posted fields and uploaded files."""
    data = await request.form(max_files=10, max_fields=2000)
    fields: dict[str, Any] = {}
    uploads: dict[str, tuple[str, str, bytes]] = {}
    for name, value in data.multi_items():
        if isinstance(value, UploadFile):
            content = await value.read(50 * 1024 * 1024 + 1)
            await value.close()  # its spooled temporary file, now read
            if content:
                uploads[name] = (value.filename or "upload", value.content_type or "", content)
            continue
        fields.setdefault(name, []).append(value)
    return fields, uploads


PATIENT_POST = Depends(_read_patient_post)


@router.post("/f/{token}", response_class=HTMLResponse)
def patient_post(token: str, request: Request,
                 posted: PatientPost = PATIENT_POST) -> Response:
    fields, uploads = posted
    # a submission's rules and flows run from the event queue, after this commit; the page is
    # still a ``def`` route (validation, scores), in the thread pool
    with transaction() as session:
        reply = post_page(session, token, fields, uploads, request.url.path,
                          csrf=_staff_csrf(request))
    dispatcher.wake()
    return _html(reply)


def _staff_csrf(request: Request) -> str | None:
    """A signed-in staff member opening a patient link needs the session's CSRF token in the
    page (the app-wide CSRF check applies to requests with a session cookie)."""
    return csrf_token_of(request) if current(request) is not None else None


@router.get("/forms/static/types/{name}.css")
def field_type_css(name: str) -> Response:
    """A field type's own stylesheet (``FieldType.css``, a file in the type's package)."""
    from careloop.engine.registry import loaded_registry

    ftype = loaded_registry().catalogue("field_type").get(name) if re.fullmatch(
        r"[a-z][a-z0-9_]{0,63}", name) else None
    css = getattr(ftype, "css", None)
    if css is None or not css.is_file():
        raise HTTPException(status_code=404)
    return Response(css.read_text("utf-8"), media_type="text/css; charset=utf-8",
                    headers={"Cache-Control": "max-age=3600"})


@router.get("/forms/static/{name}")
def static_file(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(status_code=404)
    text = resources.files("careloop.forms").joinpath("static", name).read_text("utf-8")
    return Response(text, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})
