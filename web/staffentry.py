"""Staff-entry mode of a form: a follow-up agent fills a form for the patient (phone follow-up,
complaint intake), rendered server-side by the forms engine's own templates and logic.

The draft between pages lives in a ``form_requests`` row (channel ``phone``, ``source_ref`` the
task or intake it belongs to), never in process memory, so any app process can serve the next
page. The final submit goes through :func:`careloop.forms.runtime.submit` with
``entered_by`` = the signed-in user, so the rules fire exactly as for a patient's own answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.forms.logic import evaluate
from careloop.forms.models import FormRequest, Submission
from careloop.forms.pages import read_page, render_page, step
from careloop.forms.requests import create_request
from careloop.forms.runtime import expression_context, load_form, submit

OPEN = ("sent", "opened")


@dataclass(frozen=True, slots=True)
class EntryResult:
    """The page to show (``html``, with ``status``) or the stored ``submission``."""

    status: int = 200
    html: str | None = None
    submission: Submission | None = None
    data: dict[str, Any] | None = None


def draft_request(session: Session, *, form_key: str, patient_id: str,
                  encounter_id: str | None, source_ref: str, channel: str = "phone"
                  ) -> FormRequest:
    """The open staff-entry request for ``source_ref`` (created on first use)."""
    found = session.scalars(select(FormRequest).where(
        FormRequest.source_ref == source_ref, FormRequest.status.in_(OPEN))
        .order_by(FormRequest.created_at.desc())).first()
    if found is not None:
        return found
    made = create_request(session, form_key=form_key, patient_id=patient_id,
                          encounter_id=encounter_id, channel=channel,
                          expires_at=now_utc() + timedelta(days=7), source_ref=source_ref)
    request = session.get(FormRequest, made["request_id"])
    assert request is not None  # just flushed
    return request


def open_entry(session: Session, request: FormRequest, *, url: str, csrf: str, locale: str,
               page: int | None = None) -> str:
    _, spec = load_form(session, request.form_key, request.form_version)
    draft = dict(request.draft or {})
    answers = dict(draft.get("answers") or {})
    context = expression_context(session, request.patient_id, request.encounter_id)
    evaluation = evaluate(spec, answers, locale=locale, context=context, pages=[])
    current = page if page is not None and 0 <= page < spec.pages else int(draft.get("page", 0))
    return render_page(spec, answers=answers, page=current, locale=locale, errors=[],
                       evaluation=evaluation, action_url=url, large_text=False, staff=True,
                       csrf=csrf)


def post_entry(session: Session, request: FormRequest, form: Mapping[str, Any], *, url: str,
               csrf: str, locale: str, username: str, channel: str = "phone") -> EntryResult:
    """Merge one posted page; on the last page submit it on the patient's behalf."""
    _, spec = load_form(session, request.form_key, request.form_version)
    draft = dict(request.draft or {})
    try:
        first = form.get("_page")
        raw = first[0] if isinstance(first, list) and first else first
        page = max(0, min(int(raw or 0), spec.pages - 1))
    except (TypeError, ValueError):
        page = 0
    posted = read_page(spec, page, form)
    action_value = form.get("_action")
    action = (action_value[0] if isinstance(action_value, list) and action_value
              else action_value) or "next"
    context = expression_context(session, request.patient_id, request.encounter_id)
    if action == "visible":  # forms.js asks which fields to show; nothing is stored
        answers = {**(draft.get("answers") or {}),
                   **{k: v for k, v in posted.items() if v is not None}}
        shown = evaluate(spec, answers, locale=locale, context=context, pages=[])
        return EntryResult(data={"visible": shown.visible})
    action = action if action in ("next", "back", "submit") else "next"
    outcome = step(spec, draft, page, posted, action, locale, context)
    request.draft = draft
    if outcome.done:
        submission, _ = submit(session, form_key=request.form_key, answers=draft["answers"],
                               patient_id=request.patient_id, encounter_id=request.encounter_id,
                               channel=channel, entered_by=username, locale=locale,
                               request_id=request.id, version=request.form_version)
        return EntryResult(submission=submission)
    assert outcome.evaluation is not None  # step always evaluates
    html = render_page(spec, answers=draft["answers"], page=outcome.page, locale=locale,
                       errors=outcome.errors, evaluation=outcome.evaluation, action_url=url,
                       large_text=False, staff=True, csrf=csrf)
    return EntryResult(status=422 if outcome.errors else 200, html=html)


def latest_for(session: Session, source_ref: str) -> Submission | None:
    """The submission a staff entry produced (its request answered)."""
    request = session.scalars(select(FormRequest).where(
        FormRequest.source_ref == source_ref, FormRequest.status == "answered")
        .order_by(FormRequest.answered_at.desc())).first()
    if request is None:
        return None
    return session.scalars(select(Submission).where(Submission.request_id == request.id)).first()
