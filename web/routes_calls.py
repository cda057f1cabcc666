"""Call records of phone follow-up tasks (thin: they call :mod:`careloop.flows.calls`).

* ``POST /tasks/{id}/calls`` — the nurse logs a call from the task page: start (hospital local
  time), duration, outcome, notes and optionally the recording file; "close the task" completes
  it with the call's outcome (audited ``call.logged``)
* ``GET /calls/{id}/recording`` — the recording, for a user whose scope holds the patient (and
  the call's stay); every play (``patient.recording_play``) and download
  (``?download=1``, ``patient.recording_download``) is audited like patient data; a recording the
  call system keeps is reached through a redirect written to the audit first
* ``POST /api/v1/calls`` — the hospital's call system reports a call (``X-API-Key`` with
  ``events:write``, like the other integration endpoints): the task id, or the patient id and
  their open phone follow-up; a ``recording_url`` on the hospital network; ``call_id`` makes a
  re-send answer the original
* ``PUT /api/v1/calls/{id}/recording`` — the call system uploads the audio itself (the body)
* the task page's and patient 360's section "电话记录 / Call records", in words
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from markupsafe import Markup
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from careloop.engine.db import transaction
from careloop.engine.domain import Task
from careloop.engine.i18n import t
from careloop.flows import calls
from careloop.flows.call_models import CallRecord
from careloop.web.api_models import (
    COMMON_ERRORS,
    NOT_FOUND,
    Closed,
    EventRejected,
    errors,
)
from careloop.web.deps import client_ip, locale_of, record, request_body, request_id, require
from careloop.web.display import Display, local_time
from careloop.web.permissions import (
    MAX_ID,
    PATIENT_VIEW,
    TASK_WORK,
    HiddenStays,
    Principal,
    can_see_task,
    hidden_stays,
)
from careloop.web.render import render
from careloop.web.routes_flows import _require_key
from careloop.web.scoping import patient_level

router = APIRouter()  # pages (left out of the API document) and the call system's API
api = APIRouter(prefix="/api/v1", responses=COMMON_ERRORS)


class CallStored(Closed):
    """A call stored (201), or a re-send of a known ``call_id`` (200, ``duplicate``)."""

    status: Literal["stored", "duplicate"]
    call: int
    task_id: int


class RecordingStored(Closed):
    status: Literal["stored"]
    call: int
    size: int


_REJECTED = {"model": EventRejected, "description": "every problem, with its path"}
NEEDS_TASK_WORK = Depends(require(TASK_WORK))
NEEDS_PATIENT_VIEW = Depends(require(PATIENT_VIEW))
NO_STORE = {"Cache-Control": "no-store"}

CallForm = tuple[dict[str, str], tuple[str, bytes] | None]


async def _read_call_form(request: Request) -> CallForm:
    """Dependency, pure I/O: the posted fields and the recording (read up to the limit + 1)."""
    data = await request.form(max_files=1, max_fields=50)
    fields: dict[str, str] = {}
    upload: tuple[str, bytes] | None = None
    for name, value in data.multi_items():
        if isinstance(value, UploadFile):
            content = await value.read(calls.max_recording_bytes() + 1)
            await value.close()
            if name == "recording" and (content or value.filename):
                upload = (value.filename or "", content)
            continue
        fields[name] = value[:4000]
    return fields, upload


CALL_FORM = Depends(_read_call_form)


async def _read_audio(request: Request) -> bytes:
    """Dependency, pure I/O: a raw body no longer than the limit + 1 byte."""
    limit = calls.max_recording_bytes() + 1
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk[:limit - len(body)])
        if len(body) >= limit:
            break
    return bytes(body)


AUDIO_BODY = Depends(_read_audio)


def _field_label(path: str, locale: str) -> str:
    return t(f"calls.field.{path}", locale)


def problems_text(problems: list[calls.Problem], locale: str) -> list[str]:
    """Each problem as the person reads it: "录音文件：…"."""
    return [f"{_field_label(p.path, locale)}{t('calls.colon', locale)}"
            f"{t(p.key, locale, **p.params)}" for p in problems]


# --- the task page -------------------------------------------------------------------------


@router.post("/tasks/{task_id}/calls", include_in_schema=False)
@patient_level("task_id", via="task")
def log_call_page(request: Request, task_id: int = Path(ge=1, le=MAX_ID),
                  posted: CallForm = CALL_FORM, me: Principal = NEEDS_TASK_WORK) -> Response:
    fields, upload = posted
    locale = locale_of(request)
    try:
        with transaction() as session:
            task = _task(session, me, task_id)
            call, problems = calls.parse_call(fields)
            audio = None
            if upload is not None:
                try:
                    audio = calls.check_recording(upload[0], upload[1])
                except calls.CallRefused as refused:
                    problems.extend(refused.problems)
            if problems or call is None:
                raise calls.CallRefused(problems)
            saved = calls.log_call(session, task, call, caller=me.username, audio=audio,
                                   complete=fields.get("complete") == "1")
            record(request, me, "call.logged", session=session, object_type="call",
                   object_id=str(saved.id), patient_id=task.patient_id,
                   details={"task_id": task_id, "outcome": call.outcome,
                            "duration_seconds": call.duration_seconds,
                            "recording": audio is not None})
    except calls.CallRefused as refused:
        return render(request, "error.html", status_code=422,
                      message=" ".join(problems_text(refused.problems, locale)))
    except calls.NotAPhoneTask:
        return render(request, "error.html", status_code=409,
                      message=t("calls.error.not_phone", locale))
    return RedirectResponse(f"/tasks/{task_id}#calls", status_code=303)


def _task(session: Session, me: Principal, task_id: int) -> Task:
    found = session.get(Task, task_id)
    if found is None:
        raise HTTPException(status_code=404)
    if found.patient_id is None and not can_see_task(session, me, task_id):
        raise HTTPException(status_code=403)
    return calls.phone_task(session, task_id)


# --- the recording -------------------------------------------------------------------------


@router.get("/calls/{call_id}/recording", include_in_schema=False)
@patient_level("call_id", via="call")
def recording(request: Request, call_id: int = Path(ge=1, le=MAX_ID),
              download: int = Query(0, ge=0, le=1),
              me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    """The call's audio (never cached); the patient scope was checked before this runs."""
    action = "patient.recording_download" if download else "patient.recording_play"
    with transaction() as session:
        call = session.get(CallRecord, call_id)
        if call is None:
            raise HTTPException(status_code=404)
        kept = calls.recording_of(session, call_id)
        if kept is None and not call.recording_url:
            raise HTTPException(status_code=404)
        record(request, me, action, session=session, object_type="call",
               object_id=str(call_id), patient_id=call.patient_id,
               details={"task_id": call.task_id,
                        "where": "careloop" if kept is not None else "call_system"})
        if kept is None:
            return RedirectResponse(str(call.recording_url), status_code=303, headers=NO_STORE)
        content, ctype, name = kept.content, kept.content_type, kept.filename
    disposition = "attachment" if download else "inline"
    ascii_name = name.encode("ascii", "ignore").decode() or "recording"
    return Response(content, media_type=ctype, headers={
        **NO_STORE, "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'{disposition}; filename="{ascii_name}"'})


# --- the call system -----------------------------------------------------------------------


def _api_problems(problems: list[calls.Problem]) -> JSONResponse:
    return JSONResponse({"status": "rejected", "errors": [
        {"path": f"$.{p.path}", "message": t(p.key, "en", **p.params)} for p in problems]},
        status_code=422)


def _find_task(session: Session, body: dict[str, Any]) -> Task | None:
    if isinstance(body.get("task_id"), int) and 0 < body["task_id"] <= MAX_ID:
        return session.get(Task, body["task_id"])
    patient = body.get("patient_id")
    if isinstance(patient, str) and patient:
        return session.scalars(select(Task).where(
            Task.patient_id == patient, Task.kind == "phone_followup",
            Task.status.in_(("open", "in_progress"))).order_by(Task.due_at, Task.id)).first()
    return None


def _url_problem(url: Any) -> calls.Problem | None:
    if url is None:
        return None
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.netloc or len(str(url)) > 1000:
        return calls.Problem("recording_url", "calls.error.recording_url")
    return None


@api.post("/calls", status_code=201, response_model=None, responses=errors({
    201: {"model": CallStored, "description": "stored on the task"},
    200: {"model": CallStored, "description": "a re-send of a known call_id: the original"},
    422: _REJECTED}))
def post_call(request: Request, x_api_key: str | None = Header(default=None),
              raw: bytes = Depends(request_body)) -> JSONResponse:
    """A call the hospital's call system made or connected: stored on the phone follow-up task
    (``task_id``, or the ``patient_id``'s open one); 422 lists every problem with its path."""
    caller = _require_key(request, x_api_key, "events:write", "api.call")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return JSONResponse({"status": "rejected", "errors": [
            {"path": "$", "message": "the body is not a JSON object"}]}, status_code=422)
    external = str(body["call_id"])[:128] if body.get("call_id") not in (None, "") else None
    with transaction() as session:
        if external is not None:
            known = session.scalars(select(CallRecord).where(
                CallRecord.external_id == external)).first()
            if known is not None:
                return JSONResponse({"status": "duplicate", "call": known.id,
                                     "task_id": known.task_id}, status_code=200)
        task = _find_task(session, body)
        call, problems = calls.parse_call(body)
        if (found := _url_problem(body.get("recording_url"))) is not None:
            problems.append(found)
        if task is None or task.kind != "phone_followup" or task.status == "cancelled":
            problems.insert(0, calls.Problem("task_id" if "task_id" in body else "patient_id",
                                             "calls.error.no_task"))
        if problems or call is None or task is None:
            return _api_problems(problems)
        agent = str(body.get("agent") or "").strip()[:100]
        saved = calls.log_call(session, task, call, caller=f"{caller.actor}"
                               + (f"/{agent}" if agent else ""), source="integration",
                               recording_url=body.get("recording_url"), external_id=external,
                               complete=bool(body.get("complete")))
        from careloop.engine import audit

        audit.append(session, actor=caller.actor, action="call.logged", object_type="call",
                     object_id=str(saved.id), patient_id=task.patient_id,
                     ip=client_ip(request), request_id=request_id(request),
                     details={"task_id": task.id, "outcome": call.outcome,
                              "duration_seconds": call.duration_seconds})
        return JSONResponse({"status": "stored", "call": saved.id, "task_id": task.id},
                            status_code=201)


@api.put("/calls/{call_id}/recording", response_model=None, responses=errors(NOT_FOUND, {
    200: {"model": RecordingStored, "description": "kept by the app"},
    413: {**_REJECTED, "description": "larger than CARELOOP_RECORDING_MAX_MB"},
    415: {**_REJECTED, "description": "not mp3, wav, m4a, amr or ogg audio"},
    422: {**_REJECTED, "description": "an empty body"}}))
def put_recording(request: Request, call_id: int = Path(ge=1, le=MAX_ID),
                  x_api_key: str | None = Header(default=None),
                  x_filename: str | None = Header(default=None),
                  audio: bytes = AUDIO_BODY) -> JSONResponse:
    """The call's audio as the body (mp3, wav, m4a, amr, ogg; at most the configured size)."""
    caller = _require_key(request, x_api_key, "events:write", "api.call_recording",
                          str(call_id))
    try:
        checked = calls.check_recording(x_filename or "", audio)
    except calls.CallRefused as refused:
        status = 413 if refused.problems[0].key.endswith("too_big") else (
            415 if refused.problems[0].key.endswith("_type") else 422)
        answer = _api_problems(refused.problems)
        answer.status_code = status
        return answer
    with transaction() as session:
        call = session.get(CallRecord, call_id)
        if call is None:
            raise HTTPException(status_code=404)
        calls.attach_recording(session, call, checked)
        from careloop.engine import audit

        audit.append(session, actor=caller.actor, action="call.recording", object_type="call",
                     object_id=str(call_id), patient_id=call.patient_id,
                     ip=client_ip(request), request_id=request_id(request),
                     details={"size": len(checked.data), "type": checked.content_type})
    return JSONResponse({"status": "stored", "call": call_id, "size": len(checked.data)})


# --- in words: the task page's and patient 360's section ------------------------------------


def _minutes(seconds: int, locale: str) -> str:
    minutes, rest = divmod(int(seconds), 60)
    if minutes and rest:
        return t("calls.duration_ms", locale, m=minutes, s=rest)
    return (t("calls.duration_m", locale, m=minutes) if minutes
            else t("calls.duration_s", locale, s=rest))


def call_sentences(session: Session, found: list[CallRecord], locale: str,
                   *, hidden: HiddenStays | None = None) -> list[dict[str, Any]]:
    """Each call as a sentence (who called, when, how long, outcome) and its recording link."""
    display = Display(locale, session)
    kept = calls.recorded_calls(session, [c.id for c in found])
    out = []
    for call in found:
        if hidden is not None and hidden:
            task = session.get(Task, call.task_id)
            if task is not None and hidden.hides(task.encounter_id, task.department_id):
                continue
        who = call.caller.split("/", 1)
        name = (display.label("actor", who[0]) if not who[0].startswith("apikey:")
                else t("calls.call_system", locale))
        if len(who) > 1:
            name = f"{name}（{who[1]}）" if locale == "zh-CN" else f"{name} ({who[1]})"
        out.append({"id": call.id, "task_id": call.task_id,
                    "text": t("calls.sentence", locale, who=name,
                              when=local_time(call.started_at),
                              duration=_minutes(call.duration_seconds, locale),
                              outcome=display.label("outcome", call.outcome)),
                    "notes": call.notes or "",
                    "recording": call.id in kept or bool(call.recording_url)})
    return out


def _list_html(rows: list[dict[str, Any]], locale: str, *, link_task: bool) -> Markup:
    if not rows:
        return Markup('<p class="empty">{}</p>').format(t("calls.none", locale))
    items = []
    for row in rows:
        parts = [Markup("{}").format(row["text"])]
        if row["notes"]:
            parts.append(Markup(' <span class="hint">{}{}</span>').format(
                t("calls.notes_prefix", locale), row["notes"]))
        if row["recording"]:
            parts.append(Markup(
                ' <audio controls preload="none" src="/calls/{0}/recording"></audio>'
                ' <a href="/calls/{0}/recording" class="call-recording">{1}</a>'
                ' · <a href="/calls/{0}/recording?download=1">{2}</a>').format(
                    row["id"], t("calls.play", locale), t("calls.download", locale)))
        if link_task:
            parts.append(Markup(' · <a href="/tasks/{}">{}</a>').format(
                row["task_id"], t("calls.open_task", locale)))
        items.append(Markup('<li id="call-{}">{}</li>').format(row["id"],
                                                               Markup("").join(parts)))
    return Markup('<ul class="calls">{}</ul>').format(Markup("").join(items))


def panel_patient(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    """Patient 360: the patient's calls, newest first (stays the user may not see left out)."""
    rows = call_sentences(session, calls.calls_of_patient(session, patient_id), locale,
                          hidden=hidden_stays(session, me, patient_id))
    return Markup('<div id="patient-calls">{}</div>').format(
        _list_html(rows, locale, link_task=True))


def panel_task(session: Session, task: Task, me: Principal, locale: str,
               csrf_token: str) -> Markup | None:
    """The task page: its calls and, while the task is open, the form to log one."""
    if task.kind != "phone_followup":
        return None
    rows = call_sentences(session, calls.calls_of_task(session, task.id), locale)
    listing = _list_html(rows, locale, link_task=False)
    if task.status not in ("open", "in_progress") or not me.can(TASK_WORK):
        return Markup('<div id="calls">{}</div>').format(listing)
    options = Markup("").join(Markup('<option value="{}">{}</option>').format(
        o, Display(locale, session).label("outcome", o)) for o in calls.CALL_OUTCOMES)
    form = Markup(
        '<form method="post" action="/tasks/{id}/calls" enctype="multipart/form-data"'
        ' id="call-form"><input type="hidden" name="csrf_token" value="{csrf}">'
        '<label>{l_start} <input type="datetime-local" name="started_at" required'
        ' id="call-started"></label>'
        '<label>{l_min} <input type="number" name="duration_minutes" min="0" max="{max}"'
        ' value="0" id="call-minutes"></label>'
        '<label>{l_sec} <input type="number" name="duration_extra_seconds" min="0" max="59"'
        ' value="0" id="call-seconds"></label>'
        '<label>{l_outcome} <select name="outcome" required id="call-outcome">'
        '<option value="" selected disabled>{choose}</option>{options}</select></label>'
        '<label>{l_notes} <textarea name="notes" maxlength="2000" id="call-notes"></textarea>'
        '</label><label>{l_rec} <input type="file" name="recording" id="call-recording"'
        ' accept="audio/*"></label><p class="hint">{rec_hint}</p>'
        '<label><input type="checkbox" name="complete" value="1" checked> {l_complete}'
        '</label> <button type="submit" id="call-submit">{submit}</button></form>').format(
        id=task.id, csrf=csrf_token, l_start=t("calls.field.started_at", locale),
        l_min=t("calls.field.duration_minutes", locale),
        l_sec=t("calls.field.duration_extra_seconds", locale), max=calls.MAX_MINUTES,
        l_outcome=t("calls.field.outcome", locale), choose=t("web.pages.choose", locale),
        options=options, l_notes=t("calls.field.notes", locale),
        l_rec=t("calls.field.recording", locale),
        rec_hint=t("calls.recording_hint", locale,
                   max_mb=calls.limit_mb()),
        l_complete=t("calls.complete", locale), submit=t("calls.submit", locale))
    return Markup('<div id="calls">{}<h3>{}</h3>{}</div>').format(
        listing, t("calls.log", locale), form)


router.include_router(api)


def register(registry: Any) -> None:
    from careloop.web.render import PatientPanel, TaskPanel

    registry.catalogue("patient_panel").register("calls", PatientPanel(
        title={"zh-CN": "电话随访记录", "en": "Call records"}, order=24, render=panel_patient))
    registry.catalogue("task_panel").register("calls", TaskPanel(
        title={"zh-CN": "电话记录", "en": "Call records"}, order=10, render=panel_task))
    registry.catalogue("patient_resolver").register("call", calls.call_patient)
    registry.catalogue("object_stay").register("call", calls.call_stay)
    registry.catalogue("object_access").register("call", _can_open_call)


def _can_open_call(session: Session, principal: Principal, value: str) -> bool:
    """A call of a task in the user's lists (the nurse the phone task is assigned to)."""
    call = session.get(CallRecord, int(value)) if value.isdigit() and len(value) < 12 else None
    return call is not None and can_see_task(session, principal, call.task_id)
