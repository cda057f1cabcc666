"""Health-management pages (thin: they call careloop.flows.health).

* ``GET|POST /registration`` — staff register a patient by hand (客户开卡): name, sex,
  birth date, phone, resident ID, card number, department, consent per channel; the patient
  goes through the events path (source ``manual``), audited; then the printable sheet
* ``GET /patients/{id}/card`` — the printable consent and card sheet (hospital local time, the
  QR code of the patient's own page), audited
* ``GET|POST /admin/booking-links`` — each department's booking-link template
* ``GET /hm/{token}`` and ``POST /hm/{token}/book`` — the patient's page: the card, the booking
  link, the health-check packages, and a booking request (a task for the centre's staff)
* the patient 360 section ``健康管理 / Health management``
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
from careloop.engine.domain import Department, Encounter, Patient
from careloop.engine.errors import NotFound
from careloop.engine.i18n import normalise_locale, pick, t
from careloop.engine.links import absolute
from careloop.flows.health import booking_links, cards, packages
from careloop.flows.health.models import BookingLink, HealthCard
from careloop.web.deps import locale_of, record, require
from careloop.web.display import Display, local_time
from careloop.web.permissions import ADMIN_DEPARTMENTS, TASK_WORK, Principal, hidden_stays
from careloop.web.render import environment, render
from careloop.web.routes_console import FORM_FIELDS
from careloop.web.scoping import patient_level

router = APIRouter(include_in_schema=False)
NEEDS_TASK_WORK = Depends(require(TASK_WORK))
NEEDS_ADMIN = Depends(require(ADMIN_DEPARTMENTS))
NO_STORE = {"Cache-Control": "no-store"}
FORM_NAMES = ("name", "gender", "birth_date", "phone", "id_number", "card_no", "department",
              "locale")


def _departments(session: Session, scope: frozenset[str] | None) -> list[str]:
    rows = session.scalars(select(Department.id).where(Department.parent_id.is_(None))
                           .order_by(Department.id)).all()
    return [d for d in rows if scope is None or d in scope]


def _words(problems: list[dict[str, Any]], locale: str) -> dict[str, str]:
    """Each problem in words, by field (``card_no`` → "此卡号已被使用…")."""
    out: dict[str, str] = {}
    for p in problems:
        name = p["path"].removeprefix("$.")
        out.setdefault(name, t(f"booking.error.{p['code']}", locale, **p.get("params", {})))
    return out


def _register_page(request: Request, me: Principal, *, form: dict[str, Any] | None = None,
                   problems: list[dict[str, Any]] | None = None,
                   status: int = 200) -> Response:
    with transaction() as session:
        departments = _departments(session, me.scope)
    return render(request, "health/register.html", status_code=status, form=form or {},
                  departments=departments, errors=_words(problems or [], locale_of(request)),
                  paths=[p["path"] for p in problems or []])


@router.get("/registration")
def register_page(request: Request, me: Principal = NEEDS_TASK_WORK) -> Response:
    return _register_page(request, me)


@router.post("/registration")
def register_post(request: Request, fields: dict[str, list[str]] = FORM_FIELDS,
                  me: Principal = NEEDS_TASK_WORK) -> Response:
    """Register; 422 with every problem next to its field (nothing written), else the sheet."""
    form: dict[str, Any] = {n: (fields.get(n) or [""])[0][:200] for n in FORM_NAMES}
    for channel in cards.CHANNELS:
        form[f"consent_{channel}"] = bool(fields.get(f"consent_{channel}"))
    try:
        with transaction() as session:
            done = cards.register(session, form, actor=me.username, departments=me.scope)
            record(request, me, "patient.registered", session=session, object_type="patient",
                   object_id=done.patient_id, patient_id=done.patient_id,
                   details={"source": cards.SOURCE, "department": form["department"],
                            "consents": {c: form[f"consent_{c}"] for c in cards.CHANNELS}})
    except cards.Refused as exc:
        return _register_page(request, me, form=form, problems=exc.problems, status=422)
    return RedirectResponse(f"/patients/{done.patient_id}/card", status_code=303)


def _sheet(session: Session, patient: Patient, card: HealthCard, locale: str) -> dict[str, Any]:
    from careloop.forms.touchpoints import qr_svg

    url = absolute(f"/hm/{card.page_token}")
    return {"name": patient.name, "card_no": card.card_no,
            "gender": t(f"booking.gender.{patient.gender or 'unknown'}", locale),
            "birth_date": patient.birth_date.isoformat() if patient.birth_date else "",
            "phone": patient.phone or "", "department": card.department_id,
            "registered_at": local_time(card.registered_at),
            "printed_at": local_time(now_utc()),
            "consents": [(c, bool((patient.consents or {}).get(c))) for c in cards.CHANNELS],
            "booking_link": booking_links.link_for(session, card.department_id, patient),
            "url": url, "svg": Markup(qr_svg(url))}


@router.get("/patients/{patient_id}/card", response_class=HTMLResponse)
@patient_level("patient_id")
def card_sheet(request: Request, patient_id: str, me: Principal = NEEDS_TASK_WORK) -> Response:
    """The printable consent and card sheet of a patient registered by hand."""
    with transaction() as session:
        patient = session.get(Patient, patient_id)
        card = cards.card_of(session, patient_id)
        if patient is None or card is None:
            raise HTTPException(status_code=404)
        sheet = _sheet(session, patient, card, locale_of(request))
        record(request, me, "patient.card_printed", session=session, object_type="patient",
               object_id=patient_id, patient_id=patient_id)
    return render(request, "health/card_sheet.html", sheet=sheet, patient_id=patient_id)


# --- booking links -------------------------------------------------------------------------------

def _links_page(request: Request, *, status: int = 200, department: str = "",
                template: str = "", problems: list[dict[str, Any]] | None = None,
                saved: bool = False) -> Response:
    with transaction() as session:
        rows = {r.department_id: r.template for r in session.scalars(select(BookingLink))}
        departments = [(d, rows.get(d, "")) for d in _departments(session, None)]
    return render(request, "health/booking_links.html", status_code=status,
                  departments=departments, department=department, link_template=template,
                  errors=_words(problems or [], locale_of(request)),
                  paths=[p["path"] for p in problems or []], saved=saved,
                  placeholders=", ".join(f"{{{p}}}" for p in booking_links.PLACEHOLDERS))


@router.get("/admin/booking-links")
def links_page(request: Request, saved: int = Query(0, ge=0, le=1),
               me: Principal = NEEDS_ADMIN) -> Response:
    return _links_page(request, saved=bool(saved))


@router.post("/admin/booking-links")
def links_post(request: Request, fields: dict[str, list[str]] = FORM_FIELDS,
               me: Principal = NEEDS_ADMIN) -> Response:
    department = (fields.get("department") or [""])[0][:64]
    template = (fields.get("template") or [""])[0][:1000]
    try:
        with transaction() as session:
            booking_links.set_template(session, department, template, me.username)
            record(request, me, "booking_link.set", session=session, object_type="department",
                   object_id=department, details={"template": template.strip()})
    except booking_links.BookingLinkRefused as exc:
        return _links_page(request, status=422, department=department, template=template,
                           problems=exc.problems)
    return RedirectResponse("/admin/booking-links?saved=1", status_code=303)


# --- the patient's page -------------------------------------------------------------------------

def _patient_page(token: str, lang: str | None, requested: str | None) -> Response:
    from careloop.forms.pages import hospital_context, render_message

    with transaction() as session:
        card = cards.by_token(session, token)
        patient = session.get(Patient, card.patient_id) if card is not None else None
        if card is None or patient is None:
            locale = normalise_locale(lang)
            return HTMLResponse(render_message(t("booking.page.title", locale),
                                               t("booking.page.not_found", locale), locale,
                                               next_step=True), status_code=404,
                                headers=NO_STORE)
        locale = normalise_locale(lang or patient.locale)
        department = session.get(Department, card.department_id)
        offered = [p.words(locale) for p in packages.catalogue(session, card.department_id)]
        link = booking_links.link_for(session, card.department_id, patient)
        name = patient.name

    def translate(key: str, **params: object) -> str:
        return t(key, locale, **params)

    html = environment().get_template("health/patient_page.html").render(
        _=translate, locale=locale, name=name, card_no=card.card_no,
        department=pick(department.name, locale) if department is not None else "",
        booking_link=link, packages=offered, token=token, requested=requested or "",
        path=f"/hm/{token}", other_locale="en" if locale == "zh-CN" else "zh-CN",
        **hospital_context(locale))
    return HTMLResponse(html, headers=NO_STORE)


@router.get("/hm/{token}", response_class=HTMLResponse)
def patient_page(token: str, lang: str | None = Query(None, max_length=8),
                 requested: str | None = Query(None, max_length=64)) -> Response:
    return _patient_page(token, lang, requested)


@router.post("/hm/{token}/book")
def book_package(token: str, fields: dict[str, list[str]] = FORM_FIELDS) -> Response:
    """The patient asks to book a package: a task for the centre's staff."""
    key = (fields.get("package") or [""])[0][:64]
    with transaction() as session:
        card = cards.by_token(session, token)
        if card is None:
            raise HTTPException(status_code=404)
        try:
            packages.request_booking(session, card, key)
        except NotFound:
            raise HTTPException(status_code=404) from None
    return RedirectResponse(f"/hm/{token}?requested={key}", status_code=303)


def panel_health(session: Session, patient_id: str, me: Principal, locale: str) -> Markup:
    """The patient 360 section: the card, the booking link and the sheet (or "none")."""
    card = cards.card_of(session, patient_id)
    patient = session.get(Patient, patient_id)
    if patient is not None and card is None:
        return _his_links(session, patient, me, locale)
    if card is None or patient is None:
        return Markup('<p class="empty">{}</p>').format(t("web.none", locale))
    link = booking_links.link_for(session, card.department_id, patient)
    booking = (Markup('<a href="{}" id="booking-link" rel="noopener">{}</a>').format(
        link, t("booking.link", locale)) if link else t("booking.no_link", locale))
    return Markup(
        '<dl id="health-card"><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd>'
        '</dl><p><a href="/patients/{}/card" id="health-card-sheet">{}</a></p>').format(
        t("booking.card_no", locale), card.card_no, t("booking.registered_at", locale),
        local_time(card.registered_at), t("booking.booking", locale), booking, patient_id,
        t("booking.sheet.open", locale))


def _his_links(session: Session, patient: Patient, me: Principal, locale: str) -> Markup:
    """A HIS patient: the booking link of each department of their stays the user may see."""
    hidden = hidden_stays(session, me, patient.id)
    seen = list(dict.fromkeys(e.department_id for e in session.scalars(
        select(Encounter).where(Encounter.patient_id == patient.id)
        .order_by(Encounter.admitted_at.desc())) if not hidden.hides(e.id)))
    links = [(d, booking_links.link_for(session, d, patient)) for d in seen]
    links = [(d, link) for d, link in links if link]
    if not links:
        return Markup('<p class="empty">{}</p>').format(t("booking.no_link", locale))
    display = Display(locale, session)
    return Markup('<ul id="booking-links">{}</ul>').format(Markup("").join(
        Markup('<li>{}：<a href="{}" rel="noopener">{}</a></li>').format(
            display.label("department", d), link, t("booking.link", locale))
        for d, link in links))


def register(registry: Any) -> None:
    from careloop.web import permissions as p
    from careloop.web.render import NavItem, PatientPanel

    registry.catalogue("patient_panel").register("health_management", PatientPanel(
        title={"zh-CN": "健康管理", "en": "Health management"}, order=27, render=panel_health))
    registry.catalogue("csrf_exempt").register("health_patient_page", "/hm/")
    nav = registry.catalogue("web_nav")
    nav.register("patient_register", NavItem("booking.register.nav", "/registration",
                                             p.TASK_WORK, 16))
    nav.register("booking_links", NavItem("booking.links.nav", "/admin/booking-links",
                                          p.ADMIN_DEPARTMENTS, 21, "admin"))
