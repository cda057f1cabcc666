"""The department monthly report as a PDF (:mod:`careloop.reports.monthly`), for a department
head and anyone else with ``reports.view`` over that department.

* ``GET /reports/monthly`` — choose the department (only those the user may see) and the month;
* ``GET /reports/monthly.pdf?department=cardiology&month=2026-11`` — the PDF (audited
  ``report.export``); a department outside the user's scope is refused (403) with nothing read.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select

from careloop.engine.clock import now_utc
from careloop.engine.db import transaction
from careloop.engine.domain import Department
from careloop.engine.i18n import pick, t
from careloop.reports import monthly
from careloop.reports.dialect import ReportError
from careloop.reports.query import scope_of
from careloop.web.deps import locale_of, record, require
from careloop.web.display import local_time
from careloop.web.permissions import REPORTS_VIEW, Principal
from careloop.web.render import render

router = APIRouter(include_in_schema=False)
NEEDS_REPORTS = Depends(require(REPORTS_VIEW))


def _departments(me: Principal, locale: str) -> list[tuple[str, str]]:
    with transaction() as session:
        rows = session.execute(select(Department.id, Department.name).where(
            Department.kind == "department").order_by(Department.id)).all()
    return [(i, pick(name, locale) or i) for i, name in rows
            if me.scope is None or i in me.scope]


def _page(request: Request, me: Principal, *, department: str, month: str,
          status_code: int = 200, error: str | None = None) -> Response:
    locale = locale_of(request)
    return render(request, "department_monthly.html", status_code=status_code,
                  departments=_departments(me, locale), department=department, month=month,
                  error=error)


def _default_month() -> str:
    first = monthly.default_month()
    return f"{first.year}-{first.month:02d}"


@router.get("/reports/monthly")
def monthly_page(request: Request, department: str = Query("", max_length=64),
                 me: Principal = NEEDS_REPORTS) -> Response:
    return _page(request, me, department=department, month=_default_month())


@router.get("/reports/monthly.pdf")
def monthly_pdf(request: Request, department: str = Query("", max_length=64),
                month: str = Query("", max_length=7),
                me: Principal = NEEDS_REPORTS) -> Response:
    locale = locale_of(request)
    if not department:
        return _page(request, me, department="", month=month or _default_month(),
                     status_code=422, error=t("pdf.monthly.need_department", locale))
    try:
        first = monthly.parse_month(month or _default_month())
    except ReportError:
        return _page(request, me, department=department, month=month, status_code=422,
                     error=t("pdf.monthly.bad_month", locale))
    scope = scope_of(me.scope)
    if scope is not None and department not in scope:
        record(request, me, "report.export", object_type="department_monthly",
               object_id=department, outcome="denied", details={"month": month})
        return _page(request, me, department="", month=month, status_code=403,
                     error=t("pdf.monthly.out_of_scope", locale))
    with transaction() as session:
        name_row = session.get(Department, department)
        if name_row is None:
            return _page(request, me, department="", month=month, status_code=404,
                         error=t("pdf.monthly.unknown_department", locale))
        name = pick(name_row.name, locale) or department
        try:
            figures = monthly.figures(session, department, first, scope)
        except ReportError:
            return _page(request, me, department=department, month=month, status_code=409,
                         error=t("pdf.monthly.not_installed", locale))
    body = monthly.render(figures, locale, name, local_time(now_utc()))
    record(request, me, "report.export", object_type="department_monthly",
           object_id=department, details={"month": f"{first.year}-{first.month:02d}",
                                          "format": "pdf"})
    filename = f"department-monthly-{first.year}-{first.month:02d}.pdf"
    return Response(body, media_type="application/pdf", headers={
        "Cache-Control": "no-store", "Content-Disposition": f'inline; filename="{filename}"'})
