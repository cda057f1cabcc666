"""WeChat pages and endpoints (``careloop.flows.wechat``).

* ``GET /channels/wechat_mp/events`` — the official account's server check (``echostr`` echoed
  when the signature matches the account's token);
* ``POST /channels/wechat_mp/events`` — the account's event pushes, verified by signature:
  a binding scan binds the patient's openid, a send report is a delivery receipt;
* ``GET /wechat/bind/{token}`` — what a binding QR code opens when no account API is set up;
* ``GET /patients/{id}/wechat`` and ``POST /patients/{id}/wechat/sheet`` — staff: the patient's
  WeChat state and the printable binding sheet (patient 360 links here).
"""

from __future__ import annotations

import logging
from typing import Any

import segno
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from markupsafe import Markup, escape
from sqlalchemy.orm import Session

from careloop.engine.db import transaction
from careloop.engine.domain import Patient
from careloop.engine.i18n import normalise_locale, t
from careloop.flows.channel import ChannelError
from careloop.flows.wechat import binding
from careloop.flows.wechat.channels import WECHAT_MP
from careloop.web.deps import locale_of, record, request_body, require
from careloop.web.permissions import PATIENT_VIEW, Principal
from careloop.web.render import render
from careloop.web.scoping import patient_level

log = logging.getLogger("careloop.web.wechat")
router = APIRouter(include_in_schema=False)
NEEDS_PATIENT_VIEW = Depends(require(PATIENT_VIEW))
NO_STORE = {"Cache-Control": "no-store"}
READ_BODY = Depends(request_body)


def _account_token() -> str | None:
    try:
        return str(WECHAT_MP.options()["token"])
    except ChannelError:
        return None


@router.get("/channels/wechat_mp/events")
def wechat_echo(signature: str = Query("", max_length=64),
                timestamp: str = Query("", max_length=16),
                nonce: str = Query("", max_length=64),
                echostr: str = Query("", max_length=128)) -> Response:
    token = _account_token()
    if token is None:
        return PlainTextResponse("the WeChat official account is not configured", 503)
    try:
        binding.verify(token, signature, timestamp, nonce)
    except binding.BadPush:
        log.warning("wechat server check refused: bad signature")
        return PlainTextResponse("signature refused", 403)
    return PlainTextResponse(echostr)


@router.post("/channels/wechat_mp/events")
def wechat_events(signature: str = Query("", max_length=64),
                  timestamp: str = Query("", max_length=16),
                  nonce: str = Query("", max_length=64),
                  body: bytes = READ_BODY) -> Response:
    token = _account_token()
    if token is None:
        return PlainTextResponse("the WeChat official account is not configured", 503)
    try:
        binding.verify(token, signature, timestamp, nonce)
    except binding.BadPush:
        log.warning("wechat push refused: bad signature")
        return PlainTextResponse("signature refused", 403)
    try:
        fields = binding.parse(body)
    except binding.BadPush as exc:
        return PlainTextResponse(str(exc), 400)
    answer = _handle(fields)
    media = "application/xml" if answer.startswith("<xml>") else "text/plain"
    return Response(answer, media_type=media)


def _handle(fields: dict[str, str]) -> str:
    with transaction() as session:
        outcome = binding.handle(session, fields)
    log.info("wechat push %s: %s", fields.get("Event", "message")[:40], outcome)
    return binding.reply(fields, outcome)


@router.get("/wechat/bind/{token}", response_class=HTMLResponse)
def bind_page(token: str, lang: str = Query("zh-CN", max_length=8)) -> Response:
    """What the QR code opens when it is not the official account's own (no API configured),
    or when a phone's camera, not WeChat, scanned it."""
    from careloop.forms.pages import render_message

    locale = normalise_locale(lang)
    with transaction() as session:
        state = binding.binding_state(session, token[:64])
    key = {"open": "wechat.bind.not_in_wechat", "used": "wechat.bind.used",
           "expired": "wechat.bind.expired"}.get(state, "wechat.bind.unknown")
    status = 200 if state in ("open", "used") else 404 if state == "unknown" else 410
    return HTMLResponse(render_message(t("wechat.bind.title", locale), t(key, locale), locale,
                                       next_step=state != "open"),
                        status_code=status, headers=NO_STORE)


def _patient(session: Session, patient_id: str) -> Patient:
    patient = session.get(Patient, patient_id)
    if patient is None:
        raise HTTPException(status_code=404)
    return patient


@router.get("/patients/{patient_id}/wechat")
@patient_level("patient_id")
def wechat_page(request: Request, patient_id: str,
                me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    with transaction() as session:
        patient = _patient(session, patient_id)
        bound = bool(patient.attributes.get("wechat_openid"))
        record(request, me, "patient.view", session=session, object_type="patient",
               object_id=patient_id, patient_id=patient_id)
    return render(request, "wechat_binding.html", patient_id=patient_id, bound=bound,
                  sheet=None, qr=None, error=None)


@router.post("/patients/{patient_id}/wechat/sheet")
@patient_level("patient_id")
def wechat_sheet(request: Request, patient_id: str,
                 me: Principal = NEEDS_PATIENT_VIEW) -> Response:
    locale = locale_of(request)
    try:
        with transaction() as session:
            patient = _patient(session, patient_id)
            bound = bool(patient.attributes.get("wechat_openid"))
            sheet = binding.new_binding(session, patient_id, me.username)
            record(request, me, "patient.wechat_sheet", session=session, object_type="patient",
                   object_id=patient_id, patient_id=patient_id,
                   details={"zh-CN": "打印了微信绑定二维码",
                            "en": "Printed the WeChat binding QR code"})
    except ChannelError:
        return render(request, "wechat_binding.html", status_code=502, patient_id=patient_id,
                      bound=bound, sheet=None, qr=None,
                      error=t("wechat.sheet.account_failed", locale))
    return render(request, "wechat_binding.html", patient_id=patient_id, bound=bound,
                  sheet=sheet, qr=qr_svg(sheet.qr_content), error=None)


def qr_svg(content: str) -> Markup:
    """The QR code as inline SVG, drawn locally (segno; no network)."""
    svg: str = segno.make(content, error="m").svg_inline(scale=5, border=2, dark="#000",
                                                         light="#fff")
    return Markup(svg)


def panel_wechat(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    """The patient 360 section: bound or not, and the link to print the binding sheet."""
    patient = session.get(Patient, patient_id)
    bound = patient is not None and bool(patient.attributes.get("wechat_openid"))
    state = t("wechat.state.bound" if bound else "wechat.state.unbound", locale)
    action = t("wechat.sheet.print", locale)
    return Markup('<p id="wechat-state">{}</p><p><a href="/patients/{}/wechat" '
                  'id="wechat-sheet-link">{}</a></p>').format(
        escape(state), escape(patient_id), escape(action))


def register(registry: Any) -> None:
    from careloop.web.render import PatientPanel

    # the account's pushes carry no staff session and act on none (verified by signature)
    registry.catalogue("csrf_exempt").register("wechat_events", "/channels/wechat_mp/")
    registry.catalogue("patient_panel").register("wechat", PatientPanel(
        title={"zh-CN": "微信绑定", "en": "WeChat"}, order=42, render=panel_wechat))
