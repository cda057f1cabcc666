"""The anonymous page behind a touchpoint's QR code: one short page, answered without a patient.

    GET  /t/outpatient_pharmacy.Xb3…  ──▶ the form's page, titled with the place
    POST (answers, device cookie)     ──▶ Submission(patient_id=None,
                                             touchpoint_key="outpatient_pharmacy", channel="qr")
                                          + TouchpointVisit(device, address, answers' hash)

Abuse is bounded per device, in the database (every app process counts the same rows):
at most ``per_hour`` answers an hour from one device cookie (a phone with cookies blocked counts
by its address, with ten times the allowance: a hospital Wi-Fi puts many phones behind one), and
a second answer from the same device at the same place within ``duplicate_minutes`` is thanked
but not counted again. Devices and addresses are stored only as keyed hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc
from careloop.engine.errors import NotFound
from careloop.engine.i18n import normalise_locale, pick, t
from careloop.engine.links import link_secret
from careloop.forms.logic import evaluate
from careloop.forms.models import TouchpointVisit
from careloop.forms.pages import read_page, render_message, render_page, step
from careloop.forms.patient import Reply
from careloop.forms.runtime import SubmissionInvalid, load_form, submit
from careloop.forms.touchpoints import TouchpointSpec, key_of, load

ADDRESS_FACTOR = 10  # answers an address may give per hour, per device's allowance
NOBODY: dict[str, Any] = {"patient": None, "encounter": None}  # an anonymous answer


def _keyed(session: Session, kind: str, value: str) -> str:
    return hmac.new(link_secret(session), f"{kind}:{value}".encode(),
                    hashlib.sha256).hexdigest()


def _touchpoint(session: Session, token: str) -> TouchpointSpec:
    return load(session, key_of(session, token))


def _unknown(locale: str) -> Reply:
    return Reply(404, render_message(t("tp.page.unknown_title", locale),
                                     t("tp.page.unknown", locale), locale))


def _page(session: Session, place: TouchpointSpec, *, answers: Mapping[str, Any], locale: str,
          url: str, large_text: bool, errors: list[dict[str, Any]] | None = None,
          status: int = 200) -> Reply:
    _, spec = load_form(session, place.form)
    evaluation = evaluate(spec, answers, locale=locale, context=NOBODY, pages=[])
    where = pick(dict(place.title), locale)
    return Reply(status, render_page(
        spec, answers=answers, page=0, locale=locale, errors=errors or [],
        evaluation=evaluation, action_url=url, large_text=large_text,
        message=t("tp.page.at", locale, place=where), saving=False))


def open_touchpoint(session: Session, token: str, *, lang: str | None, large_text: bool,
                    url: str) -> Reply:
    """GET /t/{token}: the touchpoint's short form."""
    locale = normalise_locale(lang)
    try:
        place = _touchpoint(session, token)
    except NotFound:
        return _unknown(locale)
    return _page(session, place, answers={}, locale=locale, url=url, large_text=large_text)


def post_touchpoint(session: Session, token: str, form: Mapping[str, Any], *, device: str,
                    address: str, url: str) -> Reply:
    """POST /t/{token}: check, then store the anonymous answer once per device and window."""
    locale = normalise_locale(_first(form, "_lang"))
    large_text = _first(form, "_lt") == "1"
    try:
        place = _touchpoint(session, token)
    except NotFound:
        return _unknown(locale)
    _, spec = load_form(session, place.form)
    if _first(form, "_action") == "visible":  # the page's script asks what to show: no answer
        shown = evaluate(spec, {k: v for k, v in read_page(spec, 0, form).items()
                                if v is not None}, locale=locale, context=NOBODY, pages=[])
        return Reply(200, data={"visible": shown.visible, "required": shown.required})
    draft: dict[str, Any] = {"answers": {}, "page": 0}
    outcome = step(spec, draft, 0, read_page(spec, 0, form), "submit", locale, NOBODY)
    if not outcome.done:
        return _page(session, place, answers=draft["answers"], locale=locale, url=url,
                     large_text=large_text, errors=outcome.errors, status=422)
    answers = draft["answers"]
    device_hash = _keyed(session, "device", device or address)
    address_hash = _keyed(session, "address", address)
    answers_hash = hashlib.sha256(json.dumps(answers, sort_keys=True,
                                             ensure_ascii=False).encode()).hexdigest()
    title = pick(dict(place.title), locale)
    now = now_utc()
    if place.duplicate_minutes and session.scalar(select(TouchpointVisit.id).where(
            TouchpointVisit.device == device_hash,
            TouchpointVisit.touchpoint_key == place.key,
            TouchpointVisit.created_at > now - timedelta(minutes=place.duplicate_minutes))
            .limit(1)) is not None:
        return Reply(200, render_message(title, t("tp.page.already", locale), locale,
                                         large_text))
    hour = now - timedelta(hours=1)
    by_device = session.scalar(select(func.count(TouchpointVisit.id)).where(
        TouchpointVisit.device == device_hash, TouchpointVisit.created_at > hour)) or 0
    by_address = session.scalar(select(func.count(TouchpointVisit.id)).where(
        TouchpointVisit.address == address_hash, TouchpointVisit.created_at > hour)) or 0
    allowance = place.per_hour if device else place.per_hour * ADDRESS_FACTOR
    if by_device >= allowance or by_address >= place.per_hour * ADDRESS_FACTOR:
        return Reply(429, render_message(title, t("tp.page.too_many", locale), locale,
                                         large_text))
    try:
        submission, _ = submit(
            session, form_key=place.form, answers=answers, patient_id=None, channel="qr",
            locale=locale, department_id=place.department,
            touchpoint={"key": place.key, "type": place.type, "owner": place.owner,
                        "title": dict(place.title)})
    except SubmissionInvalid as exc:
        return _page(session, place, answers=answers, locale=locale, url=url,
                     large_text=large_text, errors=exc.errors, status=422)
    session.add(TouchpointVisit(touchpoint_key=place.key, device=device_hash,
                                address=address_hash, answers_hash=answers_hash,
                                submission_id=submission.id, created_at=now))
    return Reply(200, render_message(title, t("tp.page.thanks", locale), locale, large_text))


def _first(form: Mapping[str, Any], name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None
