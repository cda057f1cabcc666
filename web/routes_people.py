"""People reports (thin: :mod:`careloop.reports.people` does the work).

* ``GET /people-reports`` — a department's doctors and nursing groups, ranked within the
  department, and the department comparison; for the department's heads (科主任, 护士长) and
  hospital-wide for the patient-experience office and leadership; its monthly PDFs
* ``GET /people-reports/files/{id}`` — one monthly PDF (the link the heads' message carries)
* ``POST /people-reports/settings`` — the minimum sample (patient-experience office)
* ``GET|POST /people-reports/me`` — a staff member's own figures, once they opted in (nobody
  else's)

Every view is audited (``people_report.view``, ``people_report.pdf``); settings and opt-ins too.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from careloop.engine.clock import now_utc, to_local
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.engine.i18n import pick, t
from careloop.engine.registry import Registry
from careloop.reports import people
from careloop.reports.people_models import PeopleReportFile
from careloop.reports.people_pdf import number
from careloop.web.deps import Forbidden, locale_of, record, require, require_user
from careloop.web.permissions import MAX_ID, REPORTS_VIEW, Principal
from careloop.web.render import NavItem, render

router = APIRouter()
NEEDS_REPORTS = Depends(require(REPORTS_VIEW))
SIGNED_IN = Depends(require_user)
HOSPITAL_ROLES = ("px_office", "leadership")
HEAD_ROLES = ("dept_director", "head_nurse")


def viewable(principal: Principal) -> frozenset[str] | None:
    """Departments whose people ``principal`` may read: ``None`` = every one (a hospital-wide
    patient-experience office or leadership grant), else those they head."""
    if any(g.role in HOSPITAL_ROLES and g.department_id is None for g in principal.grants):
        return None
    return frozenset(g.department_id for g in principal.grants
                     if g.role in HEAD_ROLES and g.department_id)


def _departments(session: Session, allowed: frozenset[str] | None,
                 locale: str) -> list[dict[str, str]]:
    query = select(Department.id, Department.name).where(Department.kind == "department",
                                                         Department.active.is_(True))
    if allowed is not None:
        query = query.where(Department.id.in_(sorted(allowed)))
    return [{"id": i, "name": pick(name, locale) or i}
            for i, name in session.execute(query.order_by(Department.id))]


def _month(value: str | None) -> tuple[str, date, date]:
    month = value or people.previous_month(to_local(now_utc()).date())
    start, end = people.month_bounds(month)
    return month, start, end


def _cells(p: people.PersonFigures) -> dict[str, Any]:
    return {"name": p.name, "shown": p.shown, "rank": p.rank, "responses": p.responses,
            "mean": number(p.satisfaction_mean, "mean"), "top_box": number(p.top_box, "percent"),
            "nps": number(p.nps, "int"), "complaints": number(p.complaints, "int")}


def _refuse(request: Request, me: Principal, what: str) -> Forbidden:
    record(request, me, "access.denied", outcome="denied", object_type="people_report",
           object_id=what)
    return Forbidden()


@router.get("/people-reports", include_in_schema=False)
def people_page(request: Request, department: str | None = Query(None, max_length=64),
                month: str | None = Query(None, max_length=7),
                me: Principal = NEEDS_REPORTS) -> Response:
    locale = locale_of(request)
    allowed = viewable(me)
    if allowed is not None and not allowed:
        return RedirectResponse("/people-reports/me", status_code=303)
    try:
        month_key, start, end = _month(month)
    except people.PeopleReportError as exc:
        return render(request, "error.html", status_code=422,
                      message=f"{exc.path}: {t('people.bad_month', locale)}")
    with transaction() as session:
        choices = _departments(session, allowed, locale)
        chosen = department or (choices[0]["id"] if choices else None)
        if chosen is not None and allowed is not None and chosen not in allowed:
            raise _refuse(request, me, chosen)
        context: dict[str, Any] = {"departments": choices, "department": chosen,
                                   "month": month_key, "installed": people.installed(session),
                                   "can_set": viewable(me) is None,
                                   "min_sample": people.min_sample(session)}
        if chosen is not None and context["installed"]:
            report = people.people_report(session, chosen, start, end, locale, me.scope)
            context.update(
                report=report, doctors=[_cells(p) for p in report.doctors],
                nursing=[_cells(p) for p in report.nursing],
                comparison=[_cells(p) for p in report.departments],
                hospital=_cells(report.hospital) if report.hospital else None,
                files=list(session.execute(
                    select(PeopleReportFile.id, PeopleReportFile.month)
                    .where(PeopleReportFile.department_id == chosen)
                    .order_by(PeopleReportFile.month.desc()))))
            record(request, me, "people_report.view", session=session,
                   object_type="department", object_id=chosen, details={"month": month_key})
    return render(request, "people_reports.html", **context)


@router.get("/people-reports/files/{file_id}", include_in_schema=False)
def people_pdf(request: Request, file_id: int = Path(ge=1, le=MAX_ID),
               me: Principal = NEEDS_REPORTS) -> Response:
    with transaction() as session:
        row = session.get(PeopleReportFile, file_id)
        allowed = viewable(me)
        if row is None or (allowed is not None and row.department_id not in allowed):
            raise _refuse(request, me, f"file/{file_id}")
        record(request, me, "people_report.pdf", session=session, object_type="department",
               object_id=row.department_id, details={"month": row.month})
        content, name = row.pdf, f"people-report-{row.department_id}-{row.month}.pdf"
    return Response(content, media_type="application/pdf",
                    headers={"Content-Disposition": f'inline; filename="{name}"',
                             "Cache-Control": "no-store"})


@router.post("/people-reports/settings", include_in_schema=False)
def people_settings(request: Request, min_sample: str = Form("", max_length=12),
                    me: Principal = NEEDS_REPORTS) -> Response:
    locale = locale_of(request)
    if viewable(me) is not None:
        raise _refuse(request, me, "settings")
    try:
        with transaction() as session:
            value = people.set_min_sample(session, min_sample, me.username)
            record(request, me, "people_report.settings", session=session,
                   object_type="people_report_settings", object_id="min_sample",
                   details={"min_sample": value})
    except people.PeopleReportError as exc:
        return render(request, "error.html", status_code=422,
                      message=f"{exc.path}: {t('people.bad_min_sample', locale)}")
    return RedirectResponse("/people-reports", status_code=303)


@router.get("/people-reports/me", include_in_schema=False)
def people_me(request: Request, month: str | None = Query(None, max_length=7),
              me: Principal = SIGNED_IN) -> Response:
    locale = locale_of(request)
    try:
        month_key, start, end = _month(month)
    except people.PeopleReportError as exc:
        return render(request, "error.html", status_code=422,
                      message=f"{exc.path}: {t('people.bad_month', locale)}")
    with transaction() as session:
        on = people.opted_in(session, me.user_id)
        own: dict[str, Any] = {}
        if on and people.installed(session):
            figures = people.own_figures(session, me.user_id, start, end, locale)
            own = {who: _cells(p) if p is not None else None for who, p in figures.items()}
            record(request, me, "people_report.own", session=session, object_type="user",
                   object_id=str(me.user_id), details={"month": month_key})
        minimum = people.min_sample(session)
    return render(request, "people_me.html", opted_in=on, own=own, month=month_key,
                  min_sample=minimum)


@router.post("/people-reports/me", include_in_schema=False)
def people_me_opt_in(request: Request, opt_in: str = Form("", max_length=1),
                     me: Principal = SIGNED_IN) -> Response:
    with transaction() as session:
        people.set_opt_in(session, me.user_id, opt_in == "1")
        record(request, me, "people_report.opt_in", session=session, object_type="user",
               object_id=str(me.user_id), details={"opted_in": opt_in == "1"})
    return RedirectResponse("/people-reports/me", status_code=303)


def register(registry: Registry) -> None:
    """The console's navigation entries (the own report for everyone signed in)."""
    nav = registry.catalogue("web_nav")
    nav.register("people_reports", NavItem("people.nav", "/people-reports", REPORTS_VIEW, 52))
    nav.register("people_me", NavItem("people.nav_me", "/people-reports/me", None, 53))
