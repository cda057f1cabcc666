"""The patient's side of a form request: open a token link, post a page, save, resume, submit.

Everything the page flow needs lives in ``form_requests.draft`` (``{"answers", "page", "lt",
"lang"}``), so any app process can serve the next page.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from careloop.engine.domain import Patient
from careloop.engine.errors import NotFound
from careloop.engine.i18n import normalise_locale, pick, t
from careloop.forms.logic import evaluate, initial_answers
from careloop.forms.pages import (
    computed_fields,
    field_type,
    read_page,
    render_message,
    render_page,
    render_thanks,
    step,
    store_upload,
)
from careloop.forms.requests import RequestUnavailable, by_token
from careloop.forms.runtime import (
    CHANNELS,
    PROXY_RELATIONS,
    expression_context,
    load_form,
    submit,
)


@dataclass(slots=True)
class Reply:
    status: int
    html: str | None = None
    data: dict[str, Any] | None = None


def _locale(request_lang: str | None, patient: Patient | None) -> str:
    if request_lang:
        return normalise_locale(request_lang)
    return normalise_locale(patient.locale if patient is not None else None)


def _unavailable(exc: Exception, locale: str) -> Reply:
    """The used, expired or unknown link: what happened, who to call, what to do next."""
    if isinstance(exc, RequestUnavailable) and exc.status == "not_needed":
        # the HIS cancelled the stay or the discharge: nothing to answer, nothing went wrong
        return Reply(410, render_message(t("hissem.link.not_needed_title", locale),
                                         t("hissem.link.not_needed", locale), locale))
    if isinstance(exc, RequestUnavailable):
        reason = exc.status if exc.status in ("answered", "expired", "cancelled") else "expired"
        return Reply(410, render_message(t("forms.page.unavailable", locale),
                                         t(f"web.devices.link_{reason}", locale), locale,
                                         next_step=True))
    return Reply(404, render_message(t("forms.page.not_found", locale),
                                     t("web.devices.link_unknown", locale), locale,
                                     next_step=True))


def open_page(session: Session, token: str, *, page: int | None, large_text: bool | None,
              lang: str | None, nps: int | None, url: str, csrf: str | None = None) -> Reply:
    """GET /f/{token}: the current page of the draft (or ``page``); ``nps`` pre-fills a score."""
    try:
        request = by_token(session, token)
    except (NotFound, RequestUnavailable) as exc:
        return _unavailable(exc, normalise_locale(lang))
    patient = session.get(Patient, request.patient_id)
    draft = dict(request.draft or {})
    locale = _locale(lang or draft.get("lang"), patient)
    if large_text is not None:
        draft["lt"] = large_text
    draft["lang"] = locale
    _, spec = load_form(session, request.form_key, request.form_version)
    # First opening: the page starts with the form's defaults (FHIR ``initial``)
    answers = dict(draft["answers"] if "answers" in draft else initial_answers(spec))
    if nps is not None:
        target = next((f for f in spec.fields if f.type == "nps"), None)
        if target is not None and 0 <= nps <= 10:
            answers[target.key] = nps
    draft["answers"] = answers
    context = expression_context(session, request.patient_id, request.encounter_id, spec)
    evaluation = evaluate(spec, answers, locale=locale, context=context, pages=[])
    current = page if page is not None and 0 <= page < spec.pages else int(draft.get("page", 0))
    request.draft = draft
    return Reply(200, render_page(spec, answers=answers, page=current, locale=locale, errors=[],
                                  evaluation=evaluation, action_url=url,
                                  large_text=bool(draft.get("lt")),
                                  message=t("forms.page.saved", locale) if draft.get("saved")
                                  else None, csrf=csrf, proxy_offered=True,
                                  proxy=draft.get("proxy")))


def post_page(session: Session, token: str, form: Mapping[str, Any],
              uploads: Mapping[str, tuple[str, str, bytes]], url: str,
              csrf: str | None = None) -> Reply:
    """POST /f/{token}: read the page, then next / back / save / submit (or ``visible``).

    The request row is written once, with everything the post changed (opened, draft,
    answered): no read before that flushes it (``no_autoflush``)."""
    with session.no_autoflush:
        return _post_page(session, token, form, uploads, url, csrf)


def _post_page(session: Session, token: str, form: Mapping[str, Any],
               uploads: Mapping[str, tuple[str, str, bytes]], url: str,
               csrf: str | None) -> Reply:
    try:
        request = by_token(session, token, for_update=True)
    except (NotFound, RequestUnavailable) as exc:
        return _unavailable(exc, normalise_locale(_first(form, "_lang")))
    patient = session.get(Patient, request.patient_id)
    draft = dict(request.draft or {})
    locale = _locale(_first(form, "_lang") or draft.get("lang"), patient)
    draft["lang"], draft["lt"] = locale, _first(form, "_lt") == "1"
    if "_proxy" in form:  # who is answering: the patient ("") or a relation
        proxy = _first(form, "_proxy") or None
        draft["proxy"] = proxy if proxy in PROXY_RELATIONS else None
    _, spec = load_form(session, request.form_key, request.form_version)
    try:
        page = max(0, min(int(_first(form, "_page") or 0), spec.pages - 1))
    except ValueError:
        page = 0
    posted = read_page(spec, page, form)
    for key, (filename, content_type, data) in uploads.items():
        target = spec.field(key)
        if (target is not None and field_type(target.type).widget == "file"
                and target.page == page and data):
            posted[key] = store_upload(target, filename, content_type, data)
    action = _first(form, "_action") or "next"
    context = expression_context(session, request.patient_id, request.encounter_id, spec)
    if action == "visible":
        answers = {**(draft.get("answers") or {}), **{k: v for k, v in posted.items()
                                                      if v is not None}}
        result = evaluate(spec, answers, locale=locale, context=context, pages=[])
        return Reply(200, data={"visible": result.visible, "required": result.required,
                                "fields": computed_fields(spec, answers=answers, page=page,
                                                          locale=locale, evaluation=result)})
    outcome = step(spec, draft, page, posted, action, locale, context)
    draft["saved"] = outcome.saved
    request.draft = draft
    if outcome.done:
        channel = request.channel if request.channel in CHANNELS else "web"
        submit(session, form_key=request.form_key, answers=draft["answers"],
               patient_id=request.patient_id, encounter_id=request.encounter_id,
               channel=channel, locale=locale, request_id=request.id,
               version=request.form_version, proxy_relation=draft.get("proxy"),
               defer=True, context=context)  # rules and flows: the queue
        return Reply(200, render_thanks(pick(dict(spec.title), locale), locale,
                                        bool(draft.get("lt"))))
    assert outcome.evaluation is not None  # step always evaluates
    return Reply(200 if not outcome.errors else 422, render_page(
        spec, answers=draft["answers"], page=outcome.page, locale=locale, errors=outcome.errors,
        evaluation=outcome.evaluation, action_url=url, large_text=bool(draft.get("lt")),
        message=t("forms.page.saved", locale) if outcome.saved else None, csrf=csrf,
        proxy_offered=True, proxy=draft.get("proxy")))


def _first(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None
