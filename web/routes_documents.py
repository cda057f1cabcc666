"""The patient's document pages: ``GET /d/{token}`` opens the discharge summary or the medication
guidance a message linked to (:mod:`careloop.flows.documents`). A discharge summary of a patient
who has not bound WeChat carries the binding QR code (:func:`careloop.flows.wechat.binding.
paper_binding`): printed with the paper, or scanned from another screen.

Like ``/f/{token}``, the token is the only key (no staff session, nothing guessable such as an
encounter id); an unknown or tampered token answers 404, an expired one 410, both with a page in
the patient's words. Pages are mobile-first (390 px), zh-CN or en (``?lang=``), never cached.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup

from careloop.engine.clock import to_local
from careloop.engine.db import transaction
from careloop.engine.domain import Department, Patient
from careloop.engine.errors import NotFound
from careloop.engine.i18n import normalise_locale, pick, t
from careloop.engine.links import link_secret
from careloop.flows.documents import Document, LinkExpired, open_link
from careloop.flows.receipts import record_open
from careloop.forms.pages import hospital_context
from careloop.web.render import environment

log = logging.getLogger("careloop.web.documents")
router = APIRouter(include_in_schema=False)
NO_STORE = {"Cache-Control": "no-store"}


def _page(template: str, locale: str, status: int, **context: Any) -> Response:
    def translate(key: str, **params: object) -> str:
        return t(key, locale, **params)

    html = environment().get_template(template).render(_=translate, locale=locale, **context)
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def _unavailable(locale: str, key: str, status: int) -> Response:
    from careloop.forms.pages import render_message

    return HTMLResponse(render_message(t("docs.unavailable_title", locale), t(key, locale),
                                       locale, next_step=True),
                        status_code=status, headers=NO_STORE)


def _context(session: Any, document: Document, locale: str) -> dict[str, Any]:
    department = (session.get(Department, document.department_id)
                  if document.department_id else None)
    return {
        "document": document, "title": t(f"docs.{document.kind}", locale),
        **hospital_context(locale),
        "department": pick(department.name, locale) if department is not None else "",
        "discharged": (to_local(document.discharged_at).strftime("%Y-%m-%d")
                       if document.discharged_at is not None else ""),
        "paragraphs": [p.strip() for p in (document.summary or "").split("\n\n") if p.strip()],
        "other_locale": "en" if locale == "zh-CN" else "zh-CN",
    }


@router.get("/d/{token}", response_class=HTMLResponse)
def document_page(token: str, request: Request, lang: str | None = None) -> Response:
    with transaction() as session:
        try:
            document = open_link(session, token)
            record_open(session, token)
            if document.kind == "discharge_summary":
                # the binding QR below is signed with the installation's link secret: made (once)
                # here, so that its own transaction writes nothing before the account is asked
                link_secret(session)
        except NotFound:
            return _unavailable(normalise_locale(lang), "docs.not_found", 404)
        except LinkExpired:
            return _unavailable(normalise_locale(lang), "docs.expired", 410)
        patient = session.get(Patient, document.patient_id)
        locale = normalise_locale(lang or (patient.locale if patient is not None else None))
        context = _context(session, document, locale)
    qr = _binding_qr(document, token) if document.kind == "discharge_summary" else None
    return _page("patient_document.html", locale, 200, path=request.url.path, wechat_qr=qr,
                 **context)


def _binding_qr(document: Document, token: str) -> Markup | None:
    """The WeChat binding QR of a discharge paper, for a patient not bound yet; nothing when
    the account cannot make one just now (the paper still shows)."""
    from careloop.flows.channel import ChannelError
    from careloop.flows.documents import hash_token
    from careloop.flows.wechat.binding import paper_binding
    from careloop.web.routes_wechat import qr_svg

    try:
        with transaction() as session:
            sheet = paper_binding(session, document.patient_id, hash_token(token))
    except ChannelError as exc:
        log.warning("discharge paper: no WeChat binding QR (%s)", exc.reason)
        return None
    return qr_svg(sheet.qr_content) if sheet is not None else None
